package lease

import "time"

// KVSafeUntilOf exposes a KV lease's current step-down deadline to the tests
// (zero when not held).
func KVSafeUntilOf(l Lease) time.Time {
	c := l.(*kvLease)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.t == nil {
		return time.Time{}
	}
	return c.t.safeUntil
}

// KVKeyOf is the Consul key a KV lease uses.
func KVKeyOf(l Lease) string { return l.(*kvLease).key }
