package lease

import (
	"time"

	"github.com/understudy-db/understudy/config"
)

// Timing defaults and limits of the Consul lease.
const (
	// DefaultTTL is the session TTL; 10 s is the smallest Consul accepts.
	DefaultTTL = config.DefaultConsulTTL
	MinTTL     = config.MinConsulTTL
	MaxTTL     = 24 * time.Hour // Consul's session TTL ceiling

	// DefaultLockDelay keeps a lease free briefly after its holder's session
	// was invalidated, so a holder that just lost it stops before anyone else
	// starts. It is never sent as 0: Consul reads 0 as its own default, 15 s.
	DefaultLockDelay = config.DefaultConsulLockDelay
	MaxLockDelay     = 60 * time.Second // Consul's ceiling

	// DefaultMargin is the least safety margin between the holder's own
	// step-down deadline and the TTL; see Margin.
	DefaultMargin = 2 * time.Second

	// DefaultKeyPrefix prefixes the lease key <prefix><db name>/primary.
	DefaultKeyPrefix = config.DefaultConsulKeyPrefix

	// DefaultCallTimeout bounds every non-blocking Consul call made outside
	// the renew loop (create, acquire, read, release, destroy).
	DefaultCallTimeout = 5 * time.Second

	// DefaultWatchWait bounds one blocking query of Watch; Watch repeats it
	// until the state changes.
	DefaultWatchWait = 1 * time.Minute
)

// Margin is the safety margin used with a TTL: DefaultMargin or a fifth of
// the TTL, whichever is larger, so long TTLs keep a proportional cushion for
// clock-rate differences and scheduling delays.
func Margin(ttl time.Duration) time.Duration {
	return max(DefaultMargin, ttl/5)
}

// SafeUntil is the moment the holder must stop acting on the lease: the send
// time of its last successful renewal plus the TTL, less the margin. Consul
// starts the session's TTL when it receives that renewal, which is after it
// was sent, and reaps the session only after twice the TTL, so every moment
// before SafeUntil is one at which no other node can hold the lease.
func SafeUntil(lastRenewSent time.Time, ttl, margin time.Duration) time.Time {
	return lastRenewSent.Add(ttl - margin)
}

// IsLost reports whether a holder whose lease is safe until safeUntil must
// treat it as lost at now. The deadline itself is already unsafe.
func IsLost(now, safeUntil time.Time) bool {
	return !now.Before(safeUntil)
}

// SafeAt reports whether a holder whose lease is safe until safeUntil may
// still act on it at now: strictly before the deadline (the inverse of
// IsLost). Every answer to "is this node primary" compares the clock at
// the moment of the answer with the deadline this way.
func SafeAt(now, safeUntil time.Time) bool {
	return now.Before(safeUntil)
}

// RenewInterval is the pause between successful renewals: a third of the safe
// window, so two renewals in a row may fail before the holder steps down.
func RenewInterval(ttl, margin time.Duration) time.Duration {
	return (ttl - margin) / 3
}

// RetryInterval is the pause after a failed renewal before the next attempt.
func RetryInterval(ttl, margin time.Duration) time.Duration {
	return min(RenewInterval(ttl, margin)/4, 500*time.Millisecond)
}

// Clock is the source of time for the step-down deadline; tests inject a
// fake one to move time without sleeping.
type Clock interface {
	Now() time.Time
	// After delivers the time once d has passed on this clock.
	After(d time.Duration) <-chan time.Time
}

// RealClock is the wall clock (with Go's monotonic readings).
type RealClock struct{}

// Now returns time.Now().
func (RealClock) Now() time.Time { return time.Now() }

// After returns time.After(d).
func (RealClock) After(d time.Duration) <-chan time.Time { return time.After(d) }
