package follower

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/superfly/ltx"
	"github.com/understudy-db/understudy/internal/storage"
)

func fi(level int, minTXID, maxTXID ltx.TXID) storage.FileInfo {
	return storage.FileInfo{Level: level, MinTXID: minTXID, MaxTXID: maxTXID}
}

func TestPlanCatchUp(t *testing.T) {
	tests := []struct {
		name     string
		txid     ltx.TXID
		listings []Listing
		want     CatchUp
	}{
		{"empty store", 5, nil, CatchUp{Behind: true}},
		{"caught up", 5, []Listing{{0, nil}, {1, []storage.FileInfo{fi(1, 1, 5)}}, {9, []storage.FileInfo{fi(9, 1, 3)}}},
			CatchUp{Head: 5}},
		{"caught up, L0 shows txid", 5, []Listing{{0, []storage.FileInfo{fi(0, 5, 5)}}, {1, []storage.FileInfo{fi(1, 1, 3)}}},
			CatchUp{Head: 5}},
		{"store reset", 5, []Listing{{0, nil}, {1, []storage.FileInfo{fi(1, 1, 2)}}, {9, []storage.FileInfo{fi(9, 1, 1)}}},
			CatchUp{Head: 2, Behind: true}},
		{"next L0 present", 5, []Listing{{0, []storage.FileInfo{fi(0, 6, 6), fi(0, 7, 7)}}},
			CatchUp{File: fi(0, 6, 6), Apply: true, Head: 7}},
		{"L1 starting at next", 5, []Listing{{0, []storage.FileInfo{fi(0, 20, 20)}}, {1, []storage.FileInfo{fi(1, 1, 5), fi(1, 6, 19)}}},
			CatchUp{File: fi(1, 6, 19), Apply: true, Head: 20}},
		{"straddling L1", 5, []Listing{{1, []storage.FileInfo{fi(1, 3, 9), fi(1, 10, 12)}}},
			CatchUp{File: fi(1, 3, 9), Apply: true, Head: 12}},
		{"furthest level wins", 5, []Listing{{1, []storage.FileInfo{fi(1, 6, 9)}}, {2, []storage.FileInfo{fi(2, 1, 30)}}, {3, []storage.FileInfo{fi(3, 6, 20)}}},
			CatchUp{File: fi(2, 1, 30), Apply: true, Head: 30}},
		{"tie prefers the file starting at next", 5, []Listing{{1, []storage.FileInfo{fi(1, 6, 9)}}, {2, []storage.FileInfo{fi(2, 1, 9)}}},
			CatchUp{File: fi(1, 6, 9), Apply: true, Head: 9}},
		{"tie prefers the lower level", 5, []Listing{{1, []storage.FileInfo{fi(1, 6, 9)}}, {3, []storage.FileInfo{fi(3, 6, 9)}}},
			CatchUp{File: fi(1, 6, 9), Apply: true, Head: 9}},
		{"file after next is no candidate", 5, []Listing{{1, []storage.FileInfo{fi(1, 7, 9)}}, {9, []storage.FileInfo{fi(9, 1, 8)}}},
			CatchUp{File: fi(9, 1, 8), Apply: true, Head: 9}},
		{"snapshot only when no level has next", 5, []Listing{{1, []storage.FileInfo{fi(1, 6, 7)}}, {9, []storage.FileInfo{fi(9, 1, 50)}}},
			CatchUp{File: fi(1, 6, 7), Apply: true, Head: 50}},
		{"newest snapshot", 5, []Listing{{9, []storage.FileInfo{fi(9, 1, 10), fi(9, 1, 40)}}},
			CatchUp{File: fi(9, 1, 40), Apply: true, Head: 40}},
		{"gap", 5, []Listing{{0, []storage.FileInfo{fi(0, 8, 8)}}, {1, []storage.FileInfo{fi(1, 1, 5)}}},
			CatchUp{Head: 8, Gap: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := planCatchUp(tt.txid, tt.listings); got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestLagOf(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 10, 0, time.UTC)
	tests := []struct {
		name       string
		caughtUp   bool
		lastCommit time.Time
		head, txid ltx.TXID
		secs       time.Duration
		txids      uint64
	}{
		{"caught up", true, now.Add(-time.Hour), 9, 9, 0, 0},
		{"behind", false, now.Add(-3 * time.Second), 12, 9, 3 * time.Second, 3},
		{"head unknown", false, now.Add(-time.Second), 9, 9, time.Second, 0},
		{"no commit time", false, time.Time{}, 10, 9, 0, 1},
		{"clock skew", false, now.Add(time.Second), 10, 9, 0, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			secs, txids := lagOf(now, tt.caughtUp, tt.lastCommit, tt.head, tt.txid)
			if secs != tt.secs || txids != tt.txids {
				t.Fatalf("got %s, %d; want %s, %d", secs, txids, tt.secs, tt.txids)
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	tests := []struct {
		n    int
		want time.Duration
	}{{1, time.Second}, {2, 2 * time.Second}, {3, 4 * time.Second}, {6, 30 * time.Second}, {100, 30 * time.Second}}
	for _, tt := range tests {
		if got := backoff(time.Second, tt.n, 30*time.Second); got != tt.want {
			t.Fatalf("backoff(%d) = %s, want %s", tt.n, got, tt.want)
		}
	}
}

func TestPollSchedule(t *testing.T) {
	const P = time.Second
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	type step struct {
		ms    int  // time of the GET
		found bool // whether it found a file
		wait  time.Duration
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"idle: one GET per interval", []step{{0, false, P}, {1000, false, P}, {2000, false, P}}},
		{"a file after a miss sets the due time; wait for it, then probe", []step{
			{0, false, P},
			{1000, true, 0}, // arrived in (0, 1000]: the next one from 1000 on
			{1001, false, P / 4},
			{1250, false, P / 4},
			{1500, true, 0}, // arrived in (1250, 1500]: the next one due at 2250
			{1501, false, 749 * time.Millisecond},
			{2250, false, P / 4},
			{2500, true, 0}, // due at 3250
			{2501, false, 749 * time.Millisecond},
		}},
		{"backlog: hits in a row keep the due time", []step{
			{0, false, P},
			{1000, true, 0},
			{1001, true, 0},
			{1002, false, P / 4},
		}},
		{"primary went idle: back to one GET per interval", []step{
			{0, false, P},
			{1000, true, 0},
			{1001, false, P / 4},
			{1250, true, 0}, // due at 2001
			{1251, false, 750 * time.Millisecond},
			{2001, false, P / 4},
			{2251, false, P / 4},
			{2501, false, P / 4},
			{2751, false, P / 4},
			{3001, false, P},
			{4001, false, P},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := pollSchedule{interval: P}
			for i, st := range tt.steps {
				var wait time.Duration
				if st.found {
					s.found()
				} else {
					wait = s.miss(at(st.ms))
				}
				if wait != st.wait {
					t.Fatalf("step %d (GET at %d ms, found %v): wait %s, want %s", i, st.ms, st.found, wait, st.wait)
				}
			}
		})
	}
}

func TestCatchUpDead(t *testing.T) {
	pos := Position{TXID: 5, Checksum: 0x8000000000000005}
	tests := []struct {
		name string
		d    CatchUp
		want string // "" for no error
	}{
		{"apply", CatchUp{File: fi(0, 6, 6), Apply: true, Head: 6}, ""},
		{"caught up", CatchUp{Head: 5}, ""},
		{"behind", CatchUp{Head: 2, Behind: true}, "history ends at TXID 0000000000000002, before the local position"},
		{"gap", CatchUp{Head: 8, Gap: true}, "gap in the history: the store has TXIDs up to 0000000000000008 but no file that contains the next TXID 0000000000000006; put the missing file back (the follower goes on by itself), or move the local database aside to bootstrap again"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.d.dead(pos)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("got %v, want none", err)
				}
				return
			}
			var ve *VerifyError
			if !errors.As(err, &ve) || ve.Local != pos || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want a *VerifyError at %s saying %q", err, pos, tt.want)
			}
		})
	}
}
