package lease

import (
	"context"
	"time"

	"github.com/hashicorp/consul/api"
)

// renewLoop renews the tenure's session every RenewInterval (sooner after a
// failure) until the tenure ends. Each renewal that succeeds moves the
// step-down deadline to SafeUntil(its send time); one that finds the session
// gone ends the tenure at once.
func (c *consulLease) renewLoop(ctx context.Context, t *sessionTenure) {
	interval := RenewInterval(c.ttl, c.margin)
	wait := interval
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.lost:
			return
		case <-c.clock.After(wait):
		}
		// A deadline that passed while this loop slept is a loss even if the
		// next renewal would succeed: someone may already act on it.
		if t.checkDeadline(deadlineMissed) {
			return
		}
		sent := c.clock.Now()
		// The deadline is real time: a renewal stuck on a dead connection must
		// not delay the next attempt. The watchdog enforces SafeUntil meanwhile.
		cctx, cancel := context.WithTimeout(ctx, interval)
		entry, _, err := c.sessions.Renew(t.session, (&api.WriteOptions{}).WithContext(cctx))
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			c.logger.Warn("renewing the lease failed; retrying", "key", c.key, "error", err, "safe_until", t.deadline())
			wait = RetryInterval(c.ttl, c.margin)
		case entry == nil:
			t.markLost("the session is gone in Consul (destroyed by promote -force or an operator, or expired)")
			return
		default:
			c.mu.Lock()
			lost := t.renewedLocked(SafeUntil(sent, c.ttl, c.margin))
			c.mu.Unlock()
			if lost {
				return
			}
			wait = interval
		}
	}
}

// deadlineMissed is why a tenure ends at its deadline.
const deadlineMissed = "no successful renewal within the safe window (Consul unreachable, without a leader, or too slow)"

// watchKey follows the key with blocking queries and ends the tenure as soon
// as the key no longer names this tenure's session: a destroyed session
// (promote -force, a failed health check attached to it) frees the key at
// once, and only the lock-delay stands between that and a new holder, so
// waiting for the next renewal to notice would be too slow. Errors are only
// retried: an unreachable Consul is the watchdog's business.
func (c *consulLease) watchKey(ctx context.Context, t *sessionTenure) {
	var index uint64
	for {
		pair, meta, err := c.watchKV.Get(c.key, (&api.QueryOptions{WaitIndex: index, WaitTime: DefaultWatchWait}).WithContext(ctx))
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			select {
			case <-ctx.Done():
				return
			case <-t.lost:
				return
			case <-time.After(RetryInterval(c.ttl, c.margin)):
			}
			continue
		}
		if pair == nil || pair.Session != t.session {
			t.markLost("the lease key no longer names this node's session (session destroyed by promote -force, an operator or a failed health check)")
			return
		}
		index = nextIndex(index, meta.LastIndex)
	}
}
