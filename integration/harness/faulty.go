package harness

import (
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"testing"
)

// FaultyFront starts a reverse proxy to upstream (an http:// URL) that
// injects failures, and returns its URL. before(r) returns a status to
// answer instead of forwarding (0: forward); after(r), asked when before
// passed, returns a status to answer after forwarding, the real answer
// being dropped (0: pass it on): the request took effect and its client
// never heard.
func FaultyFront(t testing.TB, upstream string, before, after func(r *http.Request) int) string {
	t.Helper()
	u, err := url.Parse(upstream)
	if err != nil {
		t.Fatalf("harness: faulty front for %s: %v", upstream, err)
	}
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: u.Scheme, Host: u.Host})
	return serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if code := before(r); code != 0 {
			http.Error(w, "injected", code)
			return
		}
		if code := after(r); code != 0 {
			ServeThen(rp, discard{http.Header{}}, r, func() {})
			http.Error(w, "injected after forwarding", code)
			return
		}
		rp.ServeHTTP(w, r)
	}))
}

// serve serves h on a free loopback port until the test ends and returns
// its http:// URL.
func serve(t testing.TB, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("harness: listen: %v", err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

// discard is a ResponseWriter that drops the answer.
type discard struct{ h http.Header }

func (d discard) Header() http.Header         { return d.h }
func (d discard) Write(p []byte) (int, error) { return len(p), nil }
func (d discard) WriteHeader(int)             {}
