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
func (c *consulLease) renewLoop(ctx context.Context, t *tenure) {
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
		if c.checkDeadline(t) {
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
			c.logger.Warn("renewing the lease failed; retrying", "key", c.key, "error", err, "safe_until", c.safeUntil(t))
			wait = RetryInterval(c.ttl, c.margin)
		case entry == nil:
			c.markLost(t, "the session is gone in Consul (destroyed by promote -force or an operator, or expired)")
			return
		default:
			if c.renewed(t, sent) {
				return
			}
			wait = interval
		}
	}
}

// watchdog closes Lost at the tenure's SafeUntil unless renewals moved it on.
func (c *consulLease) watchdog(ctx context.Context, t *tenure) {
	for {
		if c.checkDeadline(t) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.lost:
			return
		case <-c.clock.After(c.safeUntil(t).Sub(c.clock.Now())):
		}
	}
}

func (c *consulLease) safeUntil(t *tenure) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return t.safeUntil
}

// renewed records a successful renewal sent at sent; it reports whether the
// tenure is lost (the deadline passed while the renewal was in flight).
func (c *consulLease) renewed(t *tenure, sent time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.isLost {
		return true
	}
	if IsLost(c.clock.Now(), t.safeUntil) {
		c.markLostLocked(t, "the renewal succeeded only after the safe deadline had passed")
		return true
	}
	if next := SafeUntil(sent, c.ttl, c.margin); next.After(t.safeUntil) {
		t.safeUntil = next
	}
	return false
}

// checkDeadline marks the tenure lost if its deadline has passed and reports
// whether it is lost.
func (c *consulLease) checkDeadline(t *tenure) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !t.isLost && IsLost(c.clock.Now(), t.safeUntil) {
		c.markLostLocked(t, "no successful renewal within the safe window (Consul unreachable or too slow)")
	}
	return t.isLost
}

func (c *consulLease) markLost(t *tenure, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.markLostLocked(t, reason)
}

func (c *consulLease) markLostLocked(t *tenure, reason string) {
	if t.isLost {
		return
	}
	t.isLost = true
	close(t.lost)
	// The tenure's loops end with it: without this, watchKey went on with
	// blocking queries on the key (and a renewal in flight went on) until
	// Release, for a tenure already given up.
	t.stop()
	if reason == "released" {
		return
	}
	c.logger.Error("lease lost: this node must stop acting as primary", "key", c.key, "token", t.token, "reason", reason, "safe_until", t.safeUntil)
}

// watchKey follows the key with blocking queries and ends the tenure as soon
// as the key no longer names this tenure's session: a destroyed session
// (promote -force, a failed health check attached to it) frees the key at
// once, and only the lock-delay stands between that and a new holder, so
// waiting for the next renewal to notice would be too slow. Errors are only
// retried: an unreachable Consul is the watchdog's business.
func (c *consulLease) watchKey(ctx context.Context, t *tenure) {
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
			c.markLost(t, "the lease key no longer names this node's session (session destroyed by promote -force, an operator or a failed health check)")
			return
		}
		index = nextIndex(index, meta.LastIndex)
	}
}
