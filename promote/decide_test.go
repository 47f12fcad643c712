package promote

import (
	"bytes"
	"testing"
	"time"

	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/follower"
	"github.com/understudy-db/understudy/lease"
)

func TestPlanPromotion(t *testing.T) {
	held := lease.Holder{Held: true, Value: lease.Value{Node: "a", AdvertiseURL: "http://a:9090"}}
	heldNoURL := lease.Holder{Held: true, Value: lease.Value{Node: "a"}}
	for _, tc := range []struct {
		name           string
		h              lease.Holder
		holding, force bool
		want           Step
	}{
		{"free", lease.Holder{}, false, false, StepAcquire},
		{"free, force changes nothing", lease.Holder{}, false, true, StepAcquire},
		{"held by a live primary: hand-off", held, false, false, StepHandOff},
		{"held, force: break", held, false, true, StepBreak},
		{"held, no advertise URL: wait", heldNoURL, false, false, StepWait},
		{"held by this node", held, true, false, StepHolding},
		{"held by this node, force", held, true, true, StepHolding},
	} {
		if got := PlanPromotion(tc.h, tc.holding, tc.force); got != tc.want {
			t.Errorf("%s: got %s, want %s", tc.name, got, tc.want)
		}
	}
}

func TestLostRaceAndContend(t *testing.T) {
	held := lease.Holder{Held: true}
	for _, tc := range []struct {
		startedFree bool
		h           lease.Holder
		want        bool
	}{
		{true, held, true},            // someone else took the free lease first
		{true, lease.Holder{}, false}, // still free (lock-delay): keep trying
		{false, held, false},          // we wait for the holder (hand-off, dead primary)
	} {
		if got := LostRace(tc.startedFree, tc.h); got != tc.want {
			t.Errorf("LostRace(%v, held=%v) = %v", tc.startedFree, tc.h.Held, got)
		}
	}
	for _, tc := range []struct {
		h       lease.Holder
		healthy bool
		want    bool
	}{
		{lease.Holder{}, true, true},
		{lease.Holder{}, false, false},
		{held, true, false},
	} {
		if got := ShouldContend(tc.h, tc.healthy); got != tc.want {
			t.Errorf("ShouldContend(held=%v, healthy=%v) = %v", tc.h.Held, tc.healthy, got)
		}
	}
}

func TestParseOnDemote(t *testing.T) {
	for in, want := range map[string]OnDemote{"": DemoteHalt, "halt": DemoteHalt, "exit": DemoteExit, "follow": DemoteFollow} {
		got, err := ParseOnDemote(in)
		if err != nil || got != want {
			t.Errorf("ParseOnDemote(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := ParseOnDemote("restart"); err == nil {
		t.Error("ParseOnDemote(restart) accepted")
	}
}

func TestDiverged(t *testing.T) {
	for _, tc := range []struct {
		local, confirmed ltx.Checksum
		txid             ltx.TXID
		want             bool
	}{
		{0x1, 0x1, 5, false},
		{0x2, 0x1, 5, true}, // commits after the last confirmed upload
		{0x1, 0x1, 0, true}, // nothing ever confirmed
	} {
		if got := Diverged(tc.local, tc.txid, tc.confirmed); got != tc.want {
			t.Errorf("Diverged(%s, %s, %s) = %v", tc.local, tc.txid, tc.confirmed, got)
		}
	}
}

func TestEndpointURL(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"http://a:9090", "http://a:9090/handoff?db=app"},
		{"http://a:9090/", "http://a:9090/handoff?db=app"},
		{"http://a:9090/status", "http://a:9090/handoff?db=app"},
		{"https://a/x/status", "https://a/x/handoff?db=app"},
	} {
		got, err := EndpointURL(tc.in, "handoff", "app")
		if err != nil || got != tc.want {
			t.Errorf("EndpointURL(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "a:9090", "ftp://a/"} {
		if _, err := EndpointURL(bad, "handoff", "app"); err == nil {
			t.Errorf("EndpointURL(%q) accepted", bad)
		}
	}
}

// TestClaimFile: the claim decodes as a zero-page LTX file at the next
// TXID, sized like the database, written as Litestream writes its files.
func TestClaimFile(t *testing.T) {
	at := follower.Reached{Position: follower.Position{TXID: 41, Checksum: 0xabc}, PageCount: 7, PageSize: 4096}
	b, err := ClaimFile(at, time.UnixMilli(1700000000000))
	if err != nil {
		t.Fatal(err)
	}
	dec := ltx.NewDecoder(bytes.NewReader(b))
	if err := dec.Verify(); err != nil {
		t.Fatalf("claim does not verify: %v", err)
	}
	h := dec.Header()
	if h.MinTXID != 42 || h.MaxTXID != 42 || h.Commit != 7 || h.PageSize != 4096 || h.Flags != ltx.HeaderFlagNoChecksum {
		t.Fatalf("header %+v", h)
	}
	if tr := dec.Trailer(); tr.PostApplyChecksum != 0 {
		t.Fatalf("post-apply checksum %s in the file: Litestream 0.5 refuses it", tr.PostApplyChecksum)
	}
	if _, err := ClaimFile(follower.Reached{Position: follower.Position{TXID: 1}}, time.Now()); err == nil {
		t.Fatal("claim of an empty database accepted")
	}
}

func TestHolderDead(t *testing.T) {
	t0 := time.Unix(1000, 0)
	for _, tc := range []struct {
		name         string
		failingSince time.Time
		now          time.Time
		deadAfter    time.Duration
		want         bool
	}{
		{"answers", time.Time{}, t0, 10 * time.Second, false},
		{"failing briefly", t0, t0.Add(9 * time.Second), 10 * time.Second, false},
		{"failing a whole ttl", t0, t0.Add(10 * time.Second), 10 * time.Second, true},
		{"judgement disabled", t0, t0.Add(time.Hour), 0, false},
	} {
		if got := HolderDead(tc.failingSince, tc.now, tc.deadAfter); got != tc.want {
			t.Errorf("%s: got %v", tc.name, got)
		}
	}
}

// TestReportedRole: a primary is reported primary only strictly before its
// lease's deadline, judged with the clock of the answer; other roles are
// reported as they are.
func TestReportedRole(t *testing.T) {
	until := time.Date(2026, 1, 1, 0, 0, 8, 0, time.UTC)
	for _, tc := range []struct {
		name string
		role string
		now  time.Time
		want string
	}{
		{"primary, well inside the window", RolePrimary, until.Add(-5 * time.Second), RolePrimary},
		{"primary, 1ns before the deadline", RolePrimary, until.Add(-time.Nanosecond), RolePrimary},
		{"primary, at the deadline", RolePrimary, until, RoleHalted},
		{"primary woken from SIGSTOP, loop not run yet", RolePrimary, until.Add(11 * time.Second), RoleHalted},
		{"follower", RoleFollower, until.Add(time.Second), RoleFollower},
		{"halted", RoleHalted, until.Add(-time.Second), RoleHalted},
	} {
		if got := ReportedRole(tc.role, lease.SafeAt(tc.now, until)); got != tc.want {
			t.Errorf("%s: got %s, want %s", tc.name, got, tc.want)
		}
	}
}
