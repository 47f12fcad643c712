package lease

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/consul/api"
)

// The application's health check in mode kv (lease consul health-check).
//
// A session lease names the check in its session, and Consul ends the
// session when the check turns critical. A KV lease has no session: the
// holder asks its local agent for the check before every renewal (ttl/4),
// and when it is critical, or no longer registered, it stops renewing and
// steps down at once (Lost closes: the node halts the application's writes
// and stops shipping); the node then releases the key (on-demote), so that
// a healthy follower takes over without waiting out the ttl. A node whose
// check is critical does not take the lease either. A failed query of the
// agent decides nothing: the renewal goes to the same agent and fails too
// when it is down.

// ErrUnhealthy is why a node with a critical health check may not hold the
// lease.
var ErrUnhealthy = errors.New("the application's health check is not passing")

// KVCheckVerdict judges the local agent's checks for the check id: nil
// when it passes (or warns, which a Consul session tolerates too), an
// error wrapping ErrUnhealthy when it is critical or not registered.
func KVCheckVerdict(checks map[string]*api.AgentCheck, id string) error {
	c, ok := checks[id]
	switch {
	case !ok || c == nil:
		return fmt.Errorf("%w: check %q is not registered with the local Consul agent", ErrUnhealthy, id)
	case c.Status == api.HealthCritical:
		return fmt.Errorf("%w: check %q is critical (%s)", ErrUnhealthy, id, c.Output)
	}
	return nil
}

// checkHealth asks the local agent for the health check, if one is set,
// waiting at most timeout.
func (c *kvLease) checkHealth(ctx context.Context, timeout time.Duration) error {
	if c.healthCheck == "" {
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	checks, err := c.agent.ChecksWithFilterOpts("", (&api.QueryOptions{}).WithContext(cctx))
	if err != nil {
		return fmt.Errorf("lease: read health check %q from the Consul agent: %w", c.healthCheck, err)
	}
	return KVCheckVerdict(checks, c.healthCheck)
}
