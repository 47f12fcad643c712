package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"
)

// Toxiproxy is a running toxiproxy server with a small client for its REST
// API (no client library needed: a handful of JSON calls).
type Toxiproxy struct {
	APIAddr string // 127.0.0.1:PORT
	URL     string // http://127.0.0.1:PORT
}

// Proxy is one TCP proxy of a Toxiproxy server.
type Proxy struct {
	tp       *Toxiproxy
	Name     string
	Listen   string // 127.0.0.1:PORT that clients dial
	Upstream string // the real server
}

// Toxic describes a fault. Type is one of toxiproxy's (latency, timeout,
// reset_peer, bandwidth, slow_close, slicer, limit_data); Stream is
// "upstream" (client to server) or "downstream"; Toxicity 0 means 1 (always).
type Toxic struct {
	Name       string         `json:"name"`
	Type       string         `json:"type"`
	Stream     string         `json:"stream,omitempty"`
	Toxicity   float64        `json:"toxicity"`
	Attributes map[string]any `json:"attributes,omitempty"`
}

// StartToxiproxy starts toxiproxy-server on a free loopback port and stops it
// at test end.
func StartToxiproxy(t testing.TB) *Toxiproxy {
	t.Helper()
	bin := Tool(t, "toxiproxy-server")
	port := freePorts(t, 1)[0]
	tp := &Toxiproxy{APIAddr: "127.0.0.1:" + itoa(port)}
	tp.URL = "http://" + tp.APIAddr
	p := start(t, "toxiproxy", bin, "-host", "127.0.0.1", "-port", itoa(port))
	p.waitReady(t, func(ctx context.Context) error {
		code, body, err := httpGet(ctx, tp.URL+"/version")
		if err == nil && code != http.StatusOK {
			err = fmt.Errorf("/version: %d %s", code, body)
		}
		return err
	})
	return tp
}

// NewProxy creates an enabled proxy to upstream on a free loopback port and
// fails the test on error.
func (tp *Toxiproxy) NewProxy(t testing.TB, name, upstream string) *Proxy {
	t.Helper()
	p, err := tp.CreateProxy(name, "127.0.0.1:"+itoa(freePorts(t, 1)[0]), upstream)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// CreateProxy creates an enabled proxy listening on listen.
func (tp *Toxiproxy) CreateProxy(name, listen, upstream string) (*Proxy, error) {
	in := map[string]any{"name": name, "listen": listen, "upstream": upstream, "enabled": true}
	var out struct {
		Name, Listen, Upstream string
	}
	if err := tp.call(http.MethodPost, "/proxies", in, &out); err != nil {
		return nil, fmt.Errorf("toxiproxy: create proxy %s (%s -> %s): %w", name, listen, upstream, err)
	}
	return &Proxy{tp: tp, Name: out.Name, Listen: out.Listen, Upstream: out.Upstream}, nil
}

// AddToxic adds a fault to the proxy.
func (p *Proxy) AddToxic(tx Toxic) error {
	if tx.Toxicity == 0 {
		tx.Toxicity = 1
	}
	if tx.Stream == "" {
		tx.Stream = "downstream"
	}
	if tx.Name == "" {
		tx.Name = tx.Type + "_" + tx.Stream
	}
	if err := p.tp.call(http.MethodPost, "/proxies/"+p.Name+"/toxics", tx, nil); err != nil {
		return fmt.Errorf("toxiproxy: add toxic %s to %s: %w", tx.Name, p.Name, err)
	}
	return nil
}

// RemoveToxic removes a fault by name.
func (p *Proxy) RemoveToxic(name string) error {
	if err := p.tp.call(http.MethodDelete, "/proxies/"+p.Name+"/toxics/"+name, nil, nil); err != nil {
		return fmt.Errorf("toxiproxy: remove toxic %s from %s: %w", name, p.Name, err)
	}
	return nil
}

// SetEnabled enables or disables the proxy. Disabling closes every
// connection and refuses new ones, as a dead network would.
func (p *Proxy) SetEnabled(enabled bool) error {
	if err := p.tp.call(http.MethodPost, "/proxies/"+p.Name, map[string]any{"enabled": enabled}, nil); err != nil {
		return fmt.Errorf("toxiproxy: set %s enabled=%v: %w", p.Name, enabled, err)
	}
	return nil
}

// Delete removes the proxy.
func (p *Proxy) Delete() error {
	if err := p.tp.call(http.MethodDelete, "/proxies/"+p.Name, nil, nil); err != nil {
		return fmt.Errorf("toxiproxy: delete proxy %s: %w", p.Name, err)
	}
	return nil
}

// call makes one API request with a deadline and decodes the answer.
func (tp *Toxiproxy) call(method, path string, in, out any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	return call(ctx, method, tp.URL, path, body, out)
}
