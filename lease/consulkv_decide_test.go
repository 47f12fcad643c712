package lease_test

import (
	"testing"
	"time"

	"github.com/understudy-db/understudy/lease"
)

var kvT0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func TestKVMayTakeOver(t *testing.T) {
	const ttl = 2 * time.Second // take over after 2s + 200ms drift
	held := func(node string, ttlMS int64) lease.KVRecord {
		return lease.KVRecord{Value: lease.Value{Node: node}, Token: 7, TTLMillis: ttlMS, State: "held"}
	}
	obs := func(r lease.KVRecord, seenAgo time.Duration) lease.KVObservation {
		return lease.KVObservation{Exists: true, Index: 42, Record: r, FirstSeen: kvT0.Add(-seenAgo)}
	}
	handoff := func(to string) lease.KVRecord {
		r := held("a", 2000)
		r.State, r.Successor = "handoff", to
		return r
	}
	broken := held("a", 2000)
	broken.State = "broken"
	tests := []struct {
		name     string
		obs      lease.KVObservation
		node     string
		ownTTL   time.Duration
		wantOK   bool
		wantWait time.Duration
	}{
		{"no key", lease.KVObservation{}, "b", ttl, true, 0},
		{"released", obs(lease.KVRecord{Value: lease.Value{Node: "a"}, Token: 7, State: "released"}, 0), "b", ttl, true, 0},
		{"released by a session node (no state)", obs(lease.KVRecord{Value: lease.Value{Node: "a"}}, 0), "b", ttl, true, 0},
		{"locked by a session: never by waiting", lease.KVObservation{Exists: true, Session: "s1", FirstSeen: kvT0.Add(-time.Hour)}, "b", ttl, false, 0},
		{"held, just seen", obs(held("a", 2000), 0), "b", ttl, false, 2200 * time.Millisecond},
		{"held, seen for ttl only", obs(held("a", 2000), ttl), "b", ttl, false, 200 * time.Millisecond},
		{"held, seen 1ns short", obs(held("a", 2000), 2200*time.Millisecond-1), "b", ttl, false, 1},
		{"held, seen for ttl + drift", obs(held("a", 2000), 2200*time.Millisecond), "b", ttl, true, 0},
		{"holder's longer ttl wins", obs(held("a", 10000), 2200*time.Millisecond), "b", ttl, false, 8800 * time.Millisecond},
		{"own longer ttl wins", obs(held("a", 1000), 1100*time.Millisecond), "b", ttl, false, 1100 * time.Millisecond},
		{"drift at least 100ms", obs(held("a", 1000), 1050*time.Millisecond), "b", time.Second, false, 50 * time.Millisecond},
		{"own old tenure (restarted holder) waits too", obs(held("b", 2000), time.Second), "b", ttl, false, 1200 * time.Millisecond},
		{"hand-off to me: at once", obs(handoff("b"), 0), "b", ttl, true, 0},
		{"hand-off to another: wait", obs(handoff("c"), time.Second), "b", ttl, false, 1200 * time.Millisecond},
		{"hand-off to another who never came", obs(handoff("c"), 3*time.Second), "b", ttl, true, 0},
		{"broken: wait out the deposed holder", obs(broken, 2*time.Second), "b", ttl, false, 200 * time.Millisecond},
		{"broken, waited out", obs(broken, 3*time.Second), "b", ttl, true, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ok, wait := lease.KVMayTakeOver(tt.obs, tt.node, kvT0, tt.ownTTL)
			if ok != tt.wantOK || wait != tt.wantWait {
				t.Errorf("KVMayTakeOver = (%v, %v), want (%v, %v)", ok, wait, tt.wantOK, tt.wantWait)
			}
		})
	}
}

// The holder's deadline always precedes the earliest takeover by margin +
// drift, for every ttl: sent <= first sight of the write by a challenger.
func TestKVHolderStepsDownBeforeTakeover(t *testing.T) {
	for _, ttl := range []time.Duration{lease.MinKVTTL, lease.DefaultKVTTL, 5 * time.Second, time.Minute} {
		sent := kvT0
		deadline := lease.KVSafeUntil(sent, ttl)
		obs := lease.KVObservation{Exists: true, Index: 1, FirstSeen: sent,
			Record: lease.KVRecord{State: "held", TTLMillis: ttl.Milliseconds()}}
		ok, wait := lease.KVMayTakeOver(obs, "b", sent, ttl)
		takeover := sent.Add(wait)
		if ok || !deadline.Before(takeover) {
			t.Errorf("ttl %s: holder safe until +%s, challenger may take over at +%s (ok now %v)", ttl, deadline.Sub(sent), takeover.Sub(sent), ok)
		}
		if gap, want := takeover.Sub(deadline), lease.KVMargin(ttl)+lease.KVDrift(ttl); gap != want {
			t.Errorf("ttl %s: gap %s between step-down and takeover, want margin + drift = %s", ttl, gap, want)
		}
	}
}

func TestKVStillSafe(t *testing.T) {
	const ttl = 2 * time.Second // safe for 1.5s after the renewal was sent
	tests := []struct {
		name string
		now  time.Duration // after the send
		want bool
	}{
		{"at the send", 0, true},
		{"one renewal interval later", 500 * time.Millisecond, true},
		{"just before the deadline", 1500*time.Millisecond - 1, true},
		{"at the deadline", 1500 * time.Millisecond, false},
		{"past the ttl", 3 * time.Second, false},
	}
	for _, tt := range tests {
		if got := lease.KVStillSafe(kvT0, kvT0.Add(tt.now), ttl); got != tt.want {
			t.Errorf("%s: KVStillSafe(+%s) = %v, want %v", tt.name, tt.now, got, tt.want)
		}
	}
}

func TestKVNextRenewal(t *testing.T) {
	tests := []struct {
		ttl       time.Duration
		succeeded bool
		want      time.Duration
	}{
		{2 * time.Second, true, 500 * time.Millisecond},
		{2 * time.Second, false, 125 * time.Millisecond},
		{time.Second, true, 250 * time.Millisecond},
		{time.Second, false, 62500 * time.Microsecond},
		{10 * time.Second, false, 250 * time.Millisecond}, // retries capped
	}
	for _, tt := range tests {
		if got := lease.KVNextRenewal(kvT0, tt.succeeded, tt.ttl).Sub(kvT0); got != tt.want {
			t.Errorf("KVNextRenewal(ttl %s, succeeded %v) = +%s, want +%s", tt.ttl, tt.succeeded, got, tt.want)
		}
	}
}

func TestKVNextToken(t *testing.T) {
	tests := []struct {
		name string
		obs  lease.KVObservation
		want uint64
	}{
		{"first ever", lease.KVObservation{}, 1},
		{"after a kv tenure", lease.KVObservation{Exists: true, Record: lease.KVRecord{Token: 7}}, 8},
		{"after session tenures", lease.KVObservation{Exists: true, LockIndex: 12, Record: lease.KVRecord{}}, 13},
	}
	for _, tt := range tests {
		if got := lease.KVNextToken(tt.obs); got != tt.want {
			t.Errorf("%s: KVNextToken = %d, want %d", tt.name, got, tt.want)
		}
	}
}
