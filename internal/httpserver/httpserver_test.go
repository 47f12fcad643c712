package httpserver

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestEndpoints(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "understudy_test_total", Help: "test"})
	reg.MustRegister(c)
	c.Add(3)
	var healthErr error
	s, err := Start(Options{
		Addr:     "127.0.0.1:0",
		Gatherer: reg,
		Healthy:  func() error { return healthErr },
		Ready:    func() error { return errors.New("catching up") },
		Status:   func() any { return map[string]any{"role": "primary", "txid": "0000000000000007"} },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	base := "http://" + s.Addr()

	tests := []struct {
		path     string
		wantCode int
		want     string
	}{
		{"/metrics", 200, "understudy_test_total 3"},
		{"/healthz", 200, "ok"},
		{"/readyz", 503, "unhealthy: catching up"},
		{"/status", 200, `"txid": "0000000000000007"`},
	}
	for _, tt := range tests {
		code, body := get(t, base+tt.path)
		if code != tt.wantCode || !strings.Contains(body, tt.want) {
			t.Errorf("GET %s = %d %q, want %d containing %q", tt.path, code, body, tt.wantCode, tt.want)
		}
	}
	healthErr = errors.New("fenced: another writer owns the history")
	if code, body := get(t, base+"/healthz"); code != 503 || !strings.Contains(body, "fenced") {
		t.Errorf("unhealthy /healthz = %d %q", code, body)
	}
}

func TestStartErrors(t *testing.T) {
	if _, err := Start(Options{}); err == nil || !strings.Contains(err.Error(), "addr is empty") {
		t.Fatalf("empty addr: %v", err)
	}
	s, err := Start(Options{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := Start(Options{Addr: s.Addr()}); err == nil || !strings.Contains(err.Error(), s.Addr()) {
		t.Fatalf("busy addr: %v", err)
	}
}

func TestRoutes(t *testing.T) {
	s, err := Start(Options{
		Addr: "127.0.0.1:0",
		Routes: func(mux *http.ServeMux) {
			mux.HandleFunc("/promote", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "promoting\n") })
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if code, body := get(t, "http://"+s.Addr()+"/promote"); code != 200 || body != "promoting\n" {
		t.Errorf("/promote = %d %q, want the role's own handler", code, body)
	}
	if code, body := get(t, "http://"+s.Addr()+"/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz = %d %q beside the role's routes", code, body)
	}
}
