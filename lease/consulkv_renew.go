package lease

import (
	"context"
	"errors"
	"time"
)

// renewLoop renews the KV tenure by check-and-set every KVRenewInterval
// (KVRetryInterval after a failure) until the tenure ends. A renewal that
// succeeds moves the deadline to KVSafeUntil(its send time); one that finds
// the key written by anyone else ends the tenure at once.
func (c *kvLease) renewLoop(ctx context.Context, t *kvTenure) {
	next := KVNextRenewal(c.clock.Now(), true, c.ttl)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.lost:
			return
		case <-c.clock.After(next.Sub(c.clock.Now())):
		}
		// A deadline that passed while this loop slept is a loss even if the
		// next renewal would succeed: someone may already act on it.
		if t.checkDeadline(deadlineMissed) {
			return
		}
		// An unhealthy application gives the lease up (consulkv_health.go).
		// Half the renew interval at most: the renewal must still go out.
		if err := c.checkHealth(ctx, KVRenewInterval(c.ttl)/2); errors.Is(err, ErrUnhealthy) {
			t.markLost(err.Error() + ": stepping down so that a healthy node takes over")
			return
		} else if err != nil {
			c.logger.Warn("reading the health check failed; renewing anyway", "key", c.key, "error", err)
		}
		c.mu.Lock()
		index, renewals := t.index, t.renewals+1
		c.mu.Unlock()
		sent := c.clock.Now()
		// Bounded by the renew interval: a renewal stuck on a dead
		// connection must not delay the next attempt.
		newIndex, ok, err := c.casOwn(ctx, t, index, c.record(kvHeld, t.token, renewals, 0, ""), KVRenewInterval(c.ttl))
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			c.logger.Warn("renewing the lease failed; retrying", "key", c.key, "error", err, "safe_until", t.deadline())
			next = KVNextRenewal(sent, false, c.ttl)
		case !ok:
			t.markLost("the lease key was written by another node (taken over after a missed deadline, or broken by promote -force)")
			return
		default:
			if c.kvRenewed(t, sent, newIndex, renewals) {
				return
			}
			next = KVNextRenewal(sent, true, c.ttl)
		}
	}
}

// kvRenewed records a successful renewal sent at sent; it reports whether
// the tenure is lost (the deadline passed while the renewal was in flight).
func (c *kvLease) kvRenewed(t *kvTenure, sent time.Time, index, renewals uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.isLost {
		return true
	}
	t.index, t.renewals = index, renewals
	return t.renewedLocked(KVSafeUntil(sent, c.ttl))
}
