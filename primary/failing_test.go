package primary

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestFailureRun(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	e := errors.New("store unreachable")
	type step struct {
		at   time.Duration // after t0
		fail bool
		want logAction
	}
	tests := []struct {
		name  string
		steps []step
		count int // failures in the run at the end
	}{
		{"successes log nothing", []step{{0, false, logNothing}, {time.Second, false, logNothing}}, 0},
		{"first failure logged, then quiet until the summary", []step{
			{0, true, logFirst}, {time.Second, true, logNothing}, {59 * time.Second, true, logNothing},
			{time.Minute, true, logSummary}, {61 * time.Second, true, logNothing}, {2 * time.Minute, true, logSummary}}, 6},
		{"recovery ends the run", []step{{0, true, logFirst}, {time.Second, true, logNothing}, {2 * time.Second, false, logRecovered},
			{3 * time.Second, false, logNothing}}, 0},
		{"a new run after a recovery is logged again", []step{{0, true, logFirst}, {time.Second, false, logRecovered},
			{2 * time.Second, true, logFirst}}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var f failureRun
			for i, s := range tt.steps {
				var got logAction
				if s.fail {
					got = f.fail(t0.Add(s.at), e, time.Minute)
				} else {
					got, _ = f.ok()
				}
				if got != s.want {
					t.Errorf("step %d: %d, want %d", i, got, s.want)
				}
			}
			if f.count != tt.count {
				t.Errorf("count %d, want %d", f.count, tt.count)
			}
		})
	}
}

func TestHealthError(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	failing := failureRun{since: t0, count: 12, last: errors.New("database or disk is full")}
	tests := []struct {
		name string
		run  failureRun
		now  time.Duration
		want string // "" = healthy
	}{
		{"not failing", failureRun{}, time.Hour, ""},
		{"failing shorter than the bound", failing, 9 * time.Second, ""},
		{"failing for the bound", failing, 10 * time.Second, "sync failing for 10s (12 failures since 2026-01-01T00:00:00Z; the bound is 10s): database or disk is full"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := healthError("sync", tt.run, t0.Add(tt.now), 10*time.Second)
			if (err == nil) != (tt.want == "") || (err != nil && !strings.Contains(err.Error(), tt.want)) {
				t.Errorf("healthError = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestUnhealthyAfter(t *testing.T) {
	for _, tt := range []struct{ sync, want time.Duration }{
		{100 * time.Millisecond, 10 * time.Second}, {time.Second, 10 * time.Second}, {10 * time.Second, 30 * time.Second},
	} {
		if got := UnhealthyAfter(tt.sync); got != tt.want {
			t.Errorf("UnhealthyAfter(%s) = %s, want %s", tt.sync, got, tt.want)
		}
	}
}
