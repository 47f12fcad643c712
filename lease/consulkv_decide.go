package lease

import (
	"encoding/json"
	"time"

	"github.com/understudy-db/understudy/config"
)

// Timing of the KV lease (lease.consul.mode kv). With the default ttl of 2s
// the holder renews every 500ms, steps down 1.5s after sending its last
// successful renewal, and a challenger takes over 2.2s after it last saw the
// key change: a kill -9 of the holder costs 1.7-2.2s before the takeover.
const (
	// DefaultKVTTL is the KV lease's ttl. 2s keeps failover near 2s while
	// costing each database only 2 KV writes a second (each a Raft commit on
	// the Consul servers), and leaves the holder 3 renewal attempts within
	// its safe window, so one slow Consul round trip (a leader election
	// takes about a second) does not depose it.
	DefaultKVTTL = config.DefaultConsulKVTTL
	// MinKVTTL: below 1s the renewals (4 a second per database) load Consul
	// and a single slow commit would cost the lease.
	MinKVTTL = config.MinConsulKVTTL
	// MaxKVTTL is the longest KV ttl accepted (as for sessions).
	MaxKVTTL = MaxTTL
	// MinKVDrift is the smallest drift bound a challenger adds to the ttl.
	MinKVDrift = 100 * time.Millisecond
)

// States of the KV lease key.
const (
	kvHeld     = "held"     // Node holds the lease and renews it
	kvReleased = "released" // Node stepped down; anyone may take it at once
	kvHandOff  = "handoff"  // Node stepped down for Successor, who alone may take it at once
	kvBroken   = "broken"   // promote -force deposed Node, which may not know yet
)

// KVRecord is the value of a KV lease key. Every write of it is a
// check-and-set on the ModifyIndex the writer last saw, so two writers can
// never both succeed from the same state.
type KVRecord struct {
	Value // the holder (or the last one), its status URL, its final TXID

	// Token is the fencing token: one more than the previous record's on
	// every new tenure, unchanged by renewals.
	Token uint64 `json:"token"`
	// Renewals counts the holder's renewals within its tenure (each one is
	// a new ModifyIndex, which is what challengers watch).
	Renewals uint64 `json:"renewals"`
	// TTLMillis is the holder's ttl: a challenger configured with a shorter
	// one must still wait the holder's.
	TTLMillis int64  `json:"ttl_ms"`
	State     string `json:"state"`
	// Successor is the only node that may take the lease during a planned
	// hand-off.
	Successor string `json:"successor,omitempty"`
}

// KVHeldBy reports whether a lease key's value, not locked by a session,
// is a KV lease record whose holder has not stepped down (held, or handed
// off to a successor): a node in mode session must not take such a key.
func KVHeldBy(value []byte) (string, bool) {
	var r KVRecord
	if json.Unmarshal(value, &r) != nil || r.Token == 0 {
		return "", false
	}
	return r.Node, r.State == kvHeld || r.State == kvHandOff
}

// KVObservation is what one node has seen of the lease key.
type KVObservation struct {
	Exists    bool
	Session   string // the key is locked by a session (a mode session node)
	LockIndex uint64 // the session lock's index, when Session is set
	Index     uint64 // the key's ModifyIndex
	Record    KVRecord
	// FirstSeen is when this node first saw Index, on its monotonic clock.
	FirstSeen time.Time
}

// KVMargin is how long before the ttl runs out (counted from the send time
// of its last successful renewal) the holder steps down: a quarter of the
// ttl, the same as a renewal interval.
func KVMargin(ttl time.Duration) time.Duration { return ttl / 4 }

// KVDrift is the drift bound a challenger adds to the ttl before it takes
// over: a tenth of the ttl, at least MinKVDrift.
func KVDrift(ttl time.Duration) time.Duration { return max(MinKVDrift, ttl/10) }

// KVRenewInterval is the pause between successful renewals: ttl/4, so the
// holder makes three attempts within its safe window of 3/4 ttl.
func KVRenewInterval(ttl time.Duration) time.Duration { return ttl / 4 }

// KVRetryInterval is the pause after a failed renewal: a sixteenth of the
// ttl, at most 250ms.
func KVRetryInterval(ttl time.Duration) time.Duration { return min(ttl/16, 250*time.Millisecond) }

// KVNextRenewal is when the holder sends its next renewal, given when it
// sent the last attempt and whether that attempt succeeded.
func KVNextRenewal(lastSent time.Time, succeeded bool, ttl time.Duration) time.Time {
	if succeeded {
		return lastSent.Add(KVRenewInterval(ttl))
	}
	return lastSent.Add(KVRetryInterval(ttl))
}

// KVSafeUntil is the end of the holder's safe window: the send time of its
// last successful renewal (or of the write that took the lease) plus the
// ttl less KVMargin. The holder must not act as primary from then on.
func KVSafeUntil(lastRenewSent time.Time, ttl time.Duration) time.Time {
	return SafeUntil(lastRenewSent, ttl, KVMargin(ttl))
}

// KVStillSafe reports whether a holder whose last successful renewal was
// sent at lastRenewSent may still act as primary at now.
func KVStillSafe(lastRenewSent, now time.Time, ttl time.Duration) bool {
	return !IsLost(now, KVSafeUntil(lastRenewSent, ttl))
}

// KVTakeOverAfter is how long a challenger must have seen one ModifyIndex of
// a key held by someone else before it may take the lease: the longer of
// its own ttl and the holder's, plus the drift bound.
func KVTakeOverAfter(rec KVRecord, ownTTL time.Duration) time.Duration {
	ttl := max(ownTTL, time.Duration(rec.TTLMillis)*time.Millisecond)
	return ttl + KVDrift(ttl)
}

// KVMayTakeOver decides whether node may check-and-set itself into the key
// now, given what it has observed. When it may not, wait is how long until
// it may if the key does not change meanwhile; 0 means only a change of the
// key (a release, a hand-off, a session's end) can let it in.
//
//   - no key, or a released one: yes, at once;
//   - locked by a session (a mode session node): no, not by waiting;
//   - a hand-off naming node: yes, at once;
//   - held, broken, or a hand-off to another node: only once node has seen
//     the same ModifyIndex for KVTakeOverAfter on its own clock (the holder
//     is gone, or the successor never came).
func KVMayTakeOver(obs KVObservation, node string, now time.Time, ownTTL time.Duration) (ok bool, wait time.Duration) {
	switch {
	case !obs.Exists:
		return true, 0
	case obs.Session != "":
		return false, 0
	}
	switch obs.Record.State {
	case kvReleased, "": // "": released by a mode session node
		return true, 0
	case kvHandOff:
		if obs.Record.Successor == node {
			return true, 0
		}
	}
	need := KVTakeOverAfter(obs.Record, ownTTL)
	if seen := now.Sub(obs.FirstSeen); seen < need {
		return false, need - seen
	}
	return true, 0
}

// KVNextToken is the fencing token of the tenure that takes over from what
// obs shows: one more than any token the key has carried.
func KVNextToken(obs KVObservation) uint64 {
	return max(obs.Record.Token, obs.LockIndex) + 1
}
