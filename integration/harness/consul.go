package harness

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// Consul is a running Consul dev agent (in-memory, single server).
type Consul struct {
	HTTPAddr string // 127.0.0.1:PORT, as CONSUL_HTTP_ADDR wants it
	URL      string // http://127.0.0.1:PORT
	NodeName string
}

// StartConsul starts a Consul dev agent on free loopback ports (DNS and gRPC
// off) and stops it at test end. It returns once the agent has a leader and
// accepts session creation, which lags the leader by a few hundred ms.
func StartConsul(t testing.TB) *Consul {
	t.Helper()
	bin := Tool(t, "consul")
	ports := freePorts(t, 4)
	c := &Consul{
		HTTPAddr: "127.0.0.1:" + itoa(ports[0]),
		NodeName: "understudy-test",
	}
	c.URL = "http://" + c.HTTPAddr
	p := start(t, "consul", bin, "agent", "-dev",
		"-node", c.NodeName,
		"-bind", "127.0.0.1", "-client", "127.0.0.1",
		"-http-port", itoa(ports[0]),
		"-dns-port", "-1", "-grpc-port", "-1", "-grpc-tls-port", "-1",
		"-serf-lan-port", itoa(ports[1]), "-serf-wan-port", itoa(ports[2]),
		"-server-port", itoa(ports[3]),
		"-log-level", "warn")
	p.waitReady(t, c.ready)
	return c
}

// ready: a leader is elected and a session can be created (and destroyed).
func (c *Consul) ready(ctx context.Context) error {
	code, body, err := httpGet(ctx, c.URL+"/v1/status/leader")
	if err != nil {
		return err
	}
	if code != http.StatusOK || strings.Trim(strings.TrimSpace(string(body)), `"`) == "" {
		return fmt.Errorf("no leader yet (%d %s)", code, body)
	}
	var sess struct{ ID string }
	if err := c.Do(ctx, http.MethodPut, "/v1/session/create", `{"TTL":"10s","Behavior":"release"}`, &sess); err != nil {
		return err
	}
	return c.Do(ctx, http.MethodPut, "/v1/session/destroy/"+sess.ID, "", nil)
}

// Do sends a request to the agent's HTTP API and decodes a JSON answer into
// out (nil: none); a status other than 2xx is an error naming it.
func (c *Consul) Do(ctx context.Context, method, path, body string, out any) error {
	return call(ctx, method, c.URL, path, strings.NewReader(body), out)
}
