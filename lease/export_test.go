package lease

import "time"

// SafeUntilOf exposes a Consul lease's current step-down deadline to the
// tests (zero when not held).
func SafeUntilOf(l Lease) time.Time {
	c := l.(*consulLease)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.t == nil {
		return time.Time{}
	}
	return c.t.safeUntil
}

// KeyOf is the Consul key a lease uses.
func KeyOf(l Lease) string {
	if kv, ok := l.(*kvLease); ok {
		return kv.key
	}
	return l.(*consulLease).key
}
