package litestream03

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/understudy-db/understudy/internal/storage"
)

var planT0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func sec(s int) time.Time { return planT0.Add(time.Duration(s) * time.Second) }

// listing builds keys from "gen:snap:index@sec" and "gen:wal:index:offset@sec".
func listing(specs ...string) []storage.KeyInfo {
	var keys []storage.KeyInfo
	for _, s := range specs {
		var gen, kind string
		var index, offset, at int
		parts := strings.Split(s, ":")
		gen, kind = strings.Repeat(parts[0], 16), parts[1]
		switch kind {
		case "snap":
			fmt.Sscanf(parts[2], "%d@%d", &index, &at)
			keys = append(keys, storage.KeyInfo{Key: Snapshot{Generation: gen, Index: index}.Key(), Size: 100, ModTime: sec(at)})
		case "wal":
			fmt.Sscanf(parts[2], "%d", &index)
			fmt.Sscanf(parts[3], "%d@%d", &offset, &at)
			keys = append(keys, storage.KeyInfo{Key: Segment{Generation: gen, Index: index, Offset: int64(offset)}.Key(), Size: 10, ModTime: sec(at)})
		}
	}
	return keys
}

// planString is "gen snap=N wal=i/o,i/o".
func planString(p Plan) string {
	var segs []string
	for _, s := range p.Segments {
		segs = append(segs, fmt.Sprintf("%d/%d", s.Index, s.Offset))
	}
	return fmt.Sprintf("%s snap=%d wal=%s", p.Generation[:1], p.Snapshot.Index, strings.Join(segs, ","))
}

func TestPlanRestore(t *testing.T) {
	// Generation a: snapshot 0 at 1s, WAL 0 at 2s and 3s, WAL 1 at 4s,
	// snapshot 2 at 5s, WAL 2 at 6s. Generation b begins later (10s).
	two := listing(
		"a:snap:0@1", "a:wal:0:0@2", "a:wal:0:4152@3", "a:wal:1:0@4", "a:snap:2@5", "a:wal:2:0@6",
		"b:snap:0@10", "b:wal:0:0@11",
	)
	gaps := listing("c:snap:0@1", "c:wal:0:0@2", "c:wal:2:0@3")
	noStart := listing("d:snap:0@1", "d:wal:0:0@2", "d:wal:1:32@3")
	snapOnly := listing("e:snap:3@1")
	for _, tc := range []struct {
		name    string
		keys    []storage.KeyInfo
		target  Target
		want    string // planString, or "" when err is set
		err     error
		errText string
	}{
		{"latest picks the generation updated last", two, Latest, "b snap=0 wal=0/0", nil, ""},
		{"generation named: newest snapshot and WAL after it", two, Target{Generation: strings.Repeat("a", 16), Index: NoIndex}, "a snap=2 wal=2/0", nil, ""},
		{"index before the last snapshot uses the one before", two, Target{Generation: strings.Repeat("a", 16), Index: 1}, "a snap=0 wal=0/0,0/4152,1/0", nil, ""},
		{"index 0", two, Target{Generation: strings.Repeat("a", 16), Index: 0}, "a snap=0 wal=0/0,0/4152", nil, ""},
		{"index at a snapshot with WAL", two, Target{Generation: strings.Repeat("a", 16), Index: 2}, "a snap=2 wal=2/0", nil, ""},
		{"timestamp inside a generation stops at the first later segment", two, Target{Index: NoIndex, Timestamp: sec(2)}, "a snap=0 wal=0/0", nil, ""},
		{"timestamp between segments of one index", two, Target{Index: NoIndex, Timestamp: sec(3)}, "a snap=0 wal=0/0,0/4152", nil, ""},
		{"timestamp after a snapshot uses it", two, Target{Index: NoIndex, Timestamp: sec(5)}, "a snap=2 wal=", nil, ""},
		{"timestamp between generations stays in the older one", two, Target{Index: NoIndex, Timestamp: sec(8)}, "a snap=2 wal=2/0", nil, ""},
		{"timestamp after everything restores the newest", two, Target{Index: NoIndex, Timestamp: sec(99)}, "b snap=0 wal=0/0", nil, ""},
		{"timestamp at a snapshot exactly", two, Target{Index: NoIndex, Timestamp: sec(1)}, "a snap=0 wal=", nil, ""},
		{"timestamp before everything", two, Target{Index: NoIndex, Timestamp: sec(0)}, "", ErrNotFound, "before the oldest generation"},
		{"unknown generation names the ones there are", two, Target{Generation: strings.Repeat("f", 16), Index: NoIndex}, "", ErrNotFound, "aaaaaaaaaaaaaaaa, bbbbbbbbbbbbbbbb"},
		{"index beyond the generation", two, Target{Generation: strings.Repeat("a", 16), Index: 7}, "", ErrNotFound, "no WAL index 00000007 (it reaches 00000002)"},
		{"index without generation", two, Target{Index: 1}, "", nil, "needs a generation"},
		{"empty replica", nil, Latest, "", ErrNoGenerations, ""},
		{"a missing WAL index is a gap", gaps, Latest, "", ErrMissing, "no segment of WAL index 00000001"},
		{"a WAL index not starting at 0", noStart, Latest, "", ErrMissing, "not at offset 0"},
		{"snapshot only", snapOnly, Latest, "e snap=3 wal=", nil, ""},
		{"index below the only snapshot", snapOnly, Target{Generation: strings.Repeat("e", 16), Index: 2}, "", ErrNotFound, "no snapshot at or before"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := PlanRestore(Parse(tc.keys), tc.target)
			if tc.want != "" {
				if err != nil {
					t.Fatalf("PlanRestore(%s): %v", tc.target, err)
				}
				if got := planString(p); got != tc.want {
					t.Fatalf("PlanRestore(%s) = %s, want %s", tc.target, got, tc.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("PlanRestore(%s) = %s, want an error", tc.target, planString(p))
			}
			if tc.err != nil && !errors.Is(err, tc.err) {
				t.Errorf("error %v, want %v", err, tc.err)
			}
			if !strings.Contains(err.Error(), tc.errText) {
				t.Errorf("error %q does not say %q", err, tc.errText)
			}
		})
	}
}
