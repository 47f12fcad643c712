package lease_test

import (
	"testing"
	"time"

	"github.com/understudy-db/understudy/lease"
)

var t0 = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)

func TestSafeUntil(t *testing.T) {
	tests := []struct {
		name        string
		sent        time.Time
		ttl, margin time.Duration
		want        time.Time
	}{
		{"default ttl and margin", t0, 10 * time.Second, 2 * time.Second, t0.Add(8 * time.Second)},
		{"long ttl", t0, time.Minute, 12 * time.Second, t0.Add(48 * time.Second)},
		{"counts from the send time, not now", t0.Add(-5 * time.Second), 10 * time.Second, 2 * time.Second, t0.Add(3 * time.Second)},
		{"zero margin is exactly the ttl", t0, 10 * time.Second, 0, t0.Add(10 * time.Second)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := lease.SafeUntil(tt.sent, tt.ttl, tt.margin); !got.Equal(tt.want) {
				t.Errorf("SafeUntil(%v, %v, %v) = %v, want %v", tt.sent, tt.ttl, tt.margin, got, tt.want)
			}
		})
	}
}

func TestSafeUntilBeforeConsulCouldReap(t *testing.T) {
	// Consul starts the TTL on receipt (>= send time) and reaps after 2x TTL;
	// the holder's deadline must come first for every TTL we accept.
	for _, ttl := range []time.Duration{lease.MinTTL, 15 * time.Second, time.Minute, time.Hour, lease.MaxTTL} {
		until := lease.SafeUntil(t0, ttl, lease.Margin(ttl))
		if reap := t0.Add(2 * ttl); !until.Before(reap) {
			t.Errorf("ttl %v: SafeUntil %v is not before Consul's earliest reap %v", ttl, until, reap)
		}
		if !until.Before(t0.Add(ttl)) {
			t.Errorf("ttl %v: SafeUntil %v leaves no margin before the TTL itself", ttl, until)
		}
	}
}

func TestIsLost(t *testing.T) {
	until := t0.Add(8 * time.Second)
	tests := []struct {
		name string
		now  time.Time
		want bool
	}{
		{"well before", t0, false},
		{"1ns before", until.Add(-time.Nanosecond), false},
		{"at the deadline", until, true},
		{"after", until.Add(time.Second), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := lease.IsLost(tt.now, until); got != tt.want {
				t.Errorf("IsLost(%v, %v) = %v, want %v", tt.now, until, got, tt.want)
			}
		})
	}
}

// TestSafeAt: the answer to "may this node act as primary now" flips at
// the deadline itself, and is always the inverse of IsLost.
func TestSafeAt(t *testing.T) {
	until := t0.Add(8 * time.Second)
	tests := []struct {
		name string
		now  time.Time
		want bool
	}{
		{"well before", t0, true},
		{"1ns before", until.Add(-time.Nanosecond), true},
		{"at the deadline", until, false},
		{"after a pause", until.Add(11 * time.Second), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := lease.SafeAt(tt.now, until); got != tt.want || got == lease.IsLost(tt.now, until) {
				t.Errorf("SafeAt(%v, %v) = %v, want %v (and the inverse of IsLost)", tt.now, until, got, tt.want)
			}
		})
	}
}

func TestMarginAndIntervals(t *testing.T) {
	tests := []struct {
		ttl                  time.Duration
		margin, renew, retry time.Duration
	}{
		{10 * time.Second, 2 * time.Second, 8 * time.Second / 3, 500 * time.Millisecond},
		{15 * time.Second, 3 * time.Second, 4 * time.Second, 500 * time.Millisecond},
		{time.Minute, 12 * time.Second, 16 * time.Second, 500 * time.Millisecond},
	}
	for _, tt := range tests {
		m := lease.Margin(tt.ttl)
		if m != tt.margin {
			t.Errorf("Margin(%v) = %v, want %v", tt.ttl, m, tt.margin)
		}
		if got := lease.RenewInterval(tt.ttl, m); got != tt.renew {
			t.Errorf("RenewInterval(%v, %v) = %v, want %v", tt.ttl, m, got, tt.renew)
		}
		if got := lease.RetryInterval(tt.ttl, m); got != tt.retry {
			t.Errorf("RetryInterval(%v, %v) = %v, want %v", tt.ttl, m, got, tt.retry)
		}
		// Two renewals in a row may fail and a third still lands in time.
		if 3*lease.RenewInterval(tt.ttl, m) > tt.ttl-m {
			t.Errorf("ttl %v: three renew intervals overrun the safe window", tt.ttl)
		}
	}
}
