// Package httpserver serves the endpoints every role exposes on `addr`:
// Prometheus metrics, liveness, readiness and a JSON status document.
package httpserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// DefaultShutdownTimeout bounds how long Close waits for open requests.
const DefaultShutdownTimeout = 5 * time.Second

// Options wires the endpoints to the role serving them.
type Options struct {
	Addr     string
	Gatherer prometheus.Gatherer // /metrics; nil = the default registry
	// Healthy reports liveness for /healthz: nil error = 200.
	Healthy func() error
	// HealthyDB, if set, answers /healthz?db=NAME: the liveness of that
	// database alone (a Consul check or a follower's probe of the holder
	// is about one database; another's failure must not fail it).
	HealthyDB func(db string) error
	// Ready reports readiness for /readyz; nil = same as Healthy.
	Ready func() error
	// Status returns the /status document (marshalled as JSON).
	Status func() any
	// Routes, if set, adds a role's own endpoints (the lease nodes'
	// POST /promote) to the mux.
	Routes func(mux *http.ServeMux)
}

// Server is a running endpoint server.
type Server struct {
	srv *http.Server
	ln  net.Listener
}

// Start listens on opts.Addr and serves in the background.
func Start(opts Options) (*Server, error) {
	if opts.Addr == "" {
		return nil, errors.New("http server: addr is empty")
	}
	if opts.Healthy == nil {
		opts.Healthy = func() error { return nil }
	}
	if opts.Ready == nil {
		opts.Ready = opts.Healthy
	}
	if opts.Gatherer == nil {
		opts.Gatherer = prometheus.DefaultGatherer
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(opts.Gatherer, promhttp.HandlerOpts{}))
	healthz := checkHandler(opts.Healthy)
	if opts.HealthyDB != nil {
		all := healthz
		healthz = func(w http.ResponseWriter, r *http.Request) {
			db := r.URL.Query().Get("db")
			if db == "" {
				all(w, r)
				return
			}
			checkHandler(func() error { return opts.HealthyDB(db) })(w, r)
		}
	}
	mux.HandleFunc("/healthz", healthz)
	mux.HandleFunc("/readyz", checkHandler(opts.Ready))
	mux.HandleFunc("/status", func(w http.ResponseWriter, r *http.Request) {
		var doc any = struct{}{}
		if opts.Status != nil {
			doc = opts.Status()
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(doc)
	})
	if opts.Routes != nil {
		opts.Routes(mux)
	}
	ln, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen on addr %s: %w (is another process using it?)", opts.Addr, err)
	}
	s := &Server{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}, ln: ln}
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

// Addr is the address actually listened on (useful with port 0).
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Close stops the server, waiting up to DefaultShutdownTimeout for requests.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), DefaultShutdownTimeout)
	defer cancel()
	return s.srv.Shutdown(ctx)
}

func checkHandler(check func() error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := check(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "unhealthy: %v\n", err)
			return
		}
		fmt.Fprintln(w, "ok")
	}
}
