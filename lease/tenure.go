package lease

import (
	"context"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

// tenure is one holding of a Consul lease, session or KV: its fencing
// token, the deadline at which its holder steps down unless a renewal moved
// it on, and how it ends (Lost). The fields after key are guarded by mu, the
// lease's own mutex, which guards the lease's other state too.
type tenure struct {
	token uint64
	mu    *sync.Mutex
	clock Clock
	log   hclog.Logger
	key   string

	safeUntil time.Time
	lost      chan struct{}
	isLost    bool

	stop context.CancelFunc // ends the tenure's loops
	done sync.WaitGroup     // the tenure's loops
}

func newTenure(token uint64, safeUntil time.Time, stop context.CancelFunc, mu *sync.Mutex, clock Clock, log hclog.Logger, key string) *tenure {
	return &tenure{token: token, mu: mu, clock: clock, log: log, key: key, safeUntil: safeUntil, lost: make(chan struct{}), stop: stop}
}

// deadline is the step-down deadline now.
func (t *tenure) deadline() time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.safeUntil
}

// checkDeadline ends the tenure, for why, if its deadline has passed; it
// reports whether the tenure has ended.
func (t *tenure) checkDeadline(why string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.isLost && IsLost(t.clock.Now(), t.safeUntil) {
		t.markLostLocked(why)
	}
	return t.isLost
}

// safeLocked reports whether the holder may act as primary at this moment,
// comparing the deadline with the clock now (not when a loop last looked:
// a process woken from a pause).
func (t *tenure) safeLocked() bool {
	if t.isLost {
		return false
	}
	if !SafeAt(t.clock.Now(), t.safeUntil) {
		t.markLostLocked("no successful renewal within the safe window (found when asked; the process may have been paused)")
		return false
	}
	return true
}

// renewedLocked records a successful renewal whose deadline is next; it
// reports whether the tenure has ended (the deadline passed while the
// renewal was in flight).
func (t *tenure) renewedLocked(next time.Time) bool {
	if t.isLost {
		return true
	}
	if IsLost(t.clock.Now(), t.safeUntil) {
		t.markLostLocked("the renewal succeeded only after the safe deadline had passed")
		return true
	}
	if next.After(t.safeUntil) {
		t.safeUntil = next
	}
	return false
}

// watchdog ends the tenure at its deadline, for why, unless renewals moved
// it on.
func (t *tenure) watchdog(ctx context.Context, why string) {
	for {
		if t.checkDeadline(why) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.lost:
			return
		case <-t.clock.After(t.deadline().Sub(t.clock.Now())):
		}
	}
}

func (t *tenure) markLost(reason string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.markLostLocked(reason)
}

// markLostLocked ends the tenure: Lost closes and its loops stop (without
// that, a session's watchKey went on with blocking queries, and a renewal in
// flight went on, until Release, for a tenure already given up).
func (t *tenure) markLostLocked(reason string) {
	if t.isLost {
		return
	}
	t.isLost = true
	close(t.lost)
	t.stop()
	if reason == "released" {
		return
	}
	t.log.Error("lease lost: this node must stop acting as primary", "key", t.key, "token", t.token, "reason", reason, "safe_until", t.safeUntil)
}
