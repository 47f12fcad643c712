package follower

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Handler serves the followers' health, status and metrics:
//
//	/healthz  200 while every follower is applying (or retrying a store
//	          error); 503 with the errors once one stopped on something
//	          that does not verify.
//	/readyz   200 once every local database is open at a verified position.
//	/status   JSON Status (an object for one follower, {"role","dbs":[...]}
//	          for several).
//	/metrics  Prometheus metrics from gatherer (omitted when nil).
func Handler(gatherer prometheus.Gatherer, followers ...*Follower) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		var bad []string
		for _, f := range followers {
			if st := f.Status(); !st.Healthy {
				bad = append(bad, fmt.Sprintf("%s: %s", st.Name, st.Error))
			}
		}
		if len(bad) > 0 {
			http.Error(w, "unhealthy\n"+strings.Join(bad, "\n"), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		var waiting []string
		for _, f := range followers {
			if st := f.Status(); !st.Ready {
				waiting = append(waiting, fmt.Sprintf("%s: %s", st.Name, st.State))
			}
		}
		if len(waiting) > 0 {
			http.Error(w, "not ready\n"+strings.Join(waiting, "\n"), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.HandleFunc("/status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if len(followers) == 1 {
			_ = enc.Encode(followers[0].Status())
			return
		}
		all := struct {
			Role string   `json:"role"`
			DBs  []Status `json:"dbs"`
		}{Role: "follower", DBs: []Status{}}
		for _, f := range followers {
			all.DBs = append(all.DBs, f.Status())
		}
		_ = enc.Encode(all)
	})
	if gatherer != nil {
		mux.Handle("/metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	}
	return mux
}
