package restore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/internal/storage"
)

// fi builds a listing entry "L<level> min-max" with a size that grows with
// the range, so that tie-breaks on size are visible.
func fi(level int, min, max ltx.TXID) storage.FileInfo {
	return storage.FileInfo{Level: level, MinTXID: min, MaxTXID: max, Size: int64(100 + max - min)}
}

// l0s returns one L0 file per TXID in [from, to].
func l0s(from, to ltx.TXID) []storage.FileInfo {
	var out []storage.FileInfo
	for t := from; t <= to; t++ {
		out = append(out, fi(0, t, t))
	}
	return out
}

func join(parts ...[]storage.FileInfo) []storage.FileInfo {
	var out []storage.FileInfo
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func names(files []storage.FileInfo) string {
	var s []string
	for _, f := range files {
		s = append(s, fmt.Sprintf("L%d:%d-%d", f.Level, f.MinTXID, f.MaxTXID))
	}
	return strings.Join(s, " ")
}

func TestPlanTXID(t *testing.T) {
	one := []storage.FileInfo{fi(9, 1, 1)}
	basic := join(one, l0s(2, 10))
	compacted := join(
		[]storage.FileInfo{fi(9, 1, 5), fi(9, 1, 40)},
		[]storage.FileInfo{fi(3, 6, 30)},
		[]storage.FileInfo{fi(2, 6, 20), fi(2, 21, 30), fi(2, 31, 40)},
		[]storage.FileInfo{fi(1, 31, 35), fi(1, 36, 40), fi(1, 41, 45)},
		l0s(41, 50),
	)
	tests := []struct {
		name    string
		files   []storage.FileInfo
		target  ltx.TXID
		want    string // plan, or
		wantErr error  // the error kind
		errText string // and a fragment of its message
	}{
		{name: "snapshot only", files: one, target: 0, want: "L9:1-1"},
		{name: "latest through L0", files: basic, target: 0, want: "L9:1-1 " + names(l0s(2, 10))},
		{name: "exact TXID", files: basic, target: 4, want: "L9:1-1 L0:2-2 L0:3-3 L0:4-4"},
		{name: "target is the snapshot", files: compacted, target: 40, want: "L9:1-40"},
		{name: "newest snapshot at or before target", files: join(compacted, l0s(36, 39)), target: 39,
			want: "L9:1-5 L3:6-30 L1:31-35 L0:36-36 L0:37-37 L0:38-38 L0:39-39"},
		{name: "compacted range past the target is no use", files: compacted, target: 39,
			wantErr: ErrMissingFile, errText: "no file covers TXIDs 0000000000000024-0000000000000027"},
		{name: "target inside a compacted file names its ends", files: compacted, target: 39,
			wantErr: ErrMissingFile, errText: "(L1 0000000000000024-0000000000000028 spans the target: TXID 0000000000000027 is not a restorable point any more; try TXID 0000000000000023 or 0000000000000028)"},
		{name: "highest levels first", files: compacted, target: 30, want: "L9:1-5 L3:6-30"},
		{name: "mixed levels to latest", files: compacted, target: 0, want: "L9:1-40 L1:41-45 " + names(l0s(46, 50))},
		{name: "L1 then L0 inside", files: compacted, target: 43, want: "L9:1-40 L0:41-41 L0:42-42 L0:43-43"},
		{name: "after snapshot in middle", files: compacted, target: 35, want: "L9:1-5 L3:6-30 L1:31-35"},
		{name: "after newest", files: basic, target: 11, wantErr: ErrAfterNewest, errText: "target TXID 000000000000000b is after the newest position 000000000000000a"},
		{name: "before earliest", files: join([]storage.FileInfo{fi(9, 1, 5)}, l0s(3, 8)), target: 4,
			wantErr: ErrBeforeEarliest, errText: "earliest restorable point, TXID 0000000000000005"},
		{name: "no snapshot", files: l0s(2, 4), target: 0, wantErr: ErrNoSnapshot},
		{name: "first L0 is a full image", files: l0s(1, 3), target: 0, want: "L0:1-1 L0:2-2 L0:3-3"},
		{name: "compactions from TXID 1 are full images once L0 is gone", files: join([]storage.FileInfo{fi(1, 1, 5), fi(1, 6, 10), fi(2, 1, 10)}, l0s(11, 12)), target: 0,
			want: "L2:1-10 L0:11-11 L0:12-12"},
		{name: "level 9 preferred among equal starting points", files: join([]storage.FileInfo{fi(0, 1, 1), fi(9, 1, 1)}, l0s(2, 2)), target: 0,
			want: "L9:1-1 L0:2-2"},
		{name: "empty", files: nil, target: 0, wantErr: ErrEmptyReplica},
		{name: "gap names the missing range", files: join(one, l0s(2, 4), l0s(8, 10)), target: 0,
			wantErr: ErrMissingFile, errText: "no file covers TXIDs 0000000000000005-0000000000000007 (the chain reaches TXID 0000000000000004"},
		{name: "gap at the end", files: join(one, l0s(2, 4), []storage.FileInfo{fi(1, 5, 9)}), target: 6,
			wantErr: ErrMissingFile, errText: "TXIDs 0000000000000005-0000000000000006"},
		{name: "every chain broken: error from the newest snapshot", files: join([]storage.FileInfo{fi(9, 1, 2), fi(9, 1, 6)}, l0s(3, 6), l0s(8, 9)), target: 9,
			wantErr: ErrMissingFile, errText: "from snapshot L9 0000000000000001-0000000000000006: missing file in the chain: no file covers TXIDs 0000000000000007-0000000000000007"},
		{name: "older snapshot when newest chain is broken", files: join([]storage.FileInfo{fi(9, 1, 2), fi(9, 1, 6), fi(1, 3, 9)}, l0s(8, 9)), target: 9,
			want: "L9:1-2 L1:3-9"},
		{name: "fewest files beats greedy jump", files: join(one, []storage.FileInfo{fi(1, 2, 6), fi(1, 2, 4), fi(1, 5, 10)}), target: 10,
			want: "L9:1-1 L1:2-4 L1:5-10"},
		{name: "full image L0 after history break is just a file", files: join(one, l0s(2, 3), []storage.FileInfo{fi(0, 4, 4), fi(9, 1, 4)}, l0s(5, 6)), target: 6,
			want: "L9:1-4 L0:5-5 L0:6-6"},
		{name: "level 9 file not from 1 is ignored", files: join(one, []storage.FileInfo{fi(9, 2, 3)}, l0s(2, 3)), target: 3,
			want: "L9:1-1 L0:2-2 L0:3-3"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := PlanTXID(tc.files, tc.target)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v (plan %s), want %v", err, names(p.Files), tc.wantErr)
				}
				if !strings.Contains(err.Error(), tc.errText) {
					t.Fatalf("err = %q, want it to contain %q", err, tc.errText)
				}
				return
			}
			if err != nil {
				t.Fatalf("PlanTXID: %v", err)
			}
			if got := names(p.Files); got != tc.want {
				t.Fatalf("plan = %s\nwant   %s", got, tc.want)
			}
			if want := p.Files[len(p.Files)-1].MaxTXID; p.Target != want {
				t.Fatalf("Target = %s, last file ends at %s", p.Target, want)
			}
		})
	}
}

func TestPlanSummary(t *testing.T) {
	p := Plan{Files: []storage.FileInfo{fi(9, 1, 5), fi(1, 6, 10), fi(0, 11, 11), fi(0, 12, 12)}}
	if got, want := p.Bytes(), int64(104+104+100+100); got != want {
		t.Fatalf("Bytes = %d, want %d", got, want)
	}
	lv := p.Levels()
	if lv[0] != (LevelSummary{Files: 2, Bytes: 200}) || lv[1].Files != 1 || lv[9].Files != 1 {
		t.Fatalf("Levels = %+v", lv)
	}
}

func TestResolveTimestamp(t *testing.T) {
	base := time.Date(2026, 1, 2, 3, 4, 0, 0, time.UTC)
	at := func(txid ltx.TXID) time.Time { return base.Add(time.Duration(txid) * time.Second) }
	files := join(
		[]storage.FileInfo{fi(9, 1, 5)},
		[]storage.FileInfo{fi(1, 6, 10), fi(1, 11, 15)},
		l0s(11, 20),
		[]storage.FileInfo{fi(0, 3, 3)}, // before the snapshot: never a point
	)
	tests := []struct {
		name    string
		ts      time.Time
		want    ltx.TXID
		wantErr error
		errText string
	}{
		{name: "exact commit time", ts: at(12), want: 12},
		{name: "between commits", ts: at(12).Add(500 * time.Millisecond), want: 12},
		{name: "inside a compacted file resolves before it", ts: at(8), want: 5},
		{name: "compacted file end", ts: at(10), want: 10},
		{name: "after newest gives newest", ts: at(100), want: 20},
		{name: "snapshot time", ts: at(5), want: 5},
		{name: "before earliest", ts: at(4), wantErr: ErrBeforeEarliest, errText: "TXID 0000000000000005 committed at 2026-01-02T03:04:05Z"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var reads int
			header := func(_ context.Context, f storage.FileInfo) (ltx.Header, error) {
				reads++
				return ltx.Header{MinTXID: f.MinTXID, MaxTXID: f.MaxTXID, Timestamp: at(f.MaxTXID).UnixMilli()}, nil
			}
			p, err := ResolveTimestamp(context.Background(), files, tc.ts, header)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), tc.errText) {
					t.Fatalf("err = %v, want %v containing %q", err, tc.wantErr, tc.errText)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.TXID != tc.want || !p.Timestamp.Equal(at(tc.want)) {
				t.Fatalf("point = %s at %s, want %s at %s", p.TXID, p.Timestamp, tc.want, at(tc.want))
			}
			// 16 boundaries: a binary search reads about log2(16)+1 headers.
			if reads > 6 {
				t.Fatalf("read %d headers, want a binary search", reads)
			}
		})
	}
}

func TestResolveTimestampHeaderError(t *testing.T) {
	boom := errors.New("boom")
	_, err := ResolveTimestamp(context.Background(), join([]storage.FileInfo{fi(9, 1, 1)}, l0s(2, 3)), time.Now(),
		func(context.Context, storage.FileInfo) (ltx.Header, error) { return ltx.Header{}, boom })
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "read header of L") {
		t.Fatalf("err = %v", err)
	}
}

func TestPageLimits(t *testing.T) {
	hs := func(commits ...uint32) []FileHeader {
		var out []FileHeader
		for _, c := range commits {
			out = append(out, FileHeader{Header: ltx.Header{Commit: c}})
		}
		return out
	}
	tests := []struct {
		commits []uint32
		want    []uint32
	}{
		{[]uint32{10}, []uint32{10}},
		{[]uint32{10, 12, 15}, []uint32{10, 12, 15}},
		{[]uint32{10, 5, 15}, []uint32{5, 5, 15}},
		{[]uint32{20, 15, 8, 30, 9}, []uint32{8, 8, 8, 9, 9}},
	}
	for _, tc := range tests {
		if got := pageLimits(hs(tc.commits...)); fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("pageLimits(%v) = %v, want %v", tc.commits, got, tc.want)
		}
	}
}

func bad(files ...storage.FileInfo) []BadObject {
	var out []BadObject
	for _, f := range files {
		out = append(out, BadObject{File: f, Err: errors.New(FileName(f) + ": corrupt"), Location: "/r/" + FileName(f)})
	}
	return out
}

func TestPlanAvoiding(t *testing.T) {
	// L9 1-10 and the L0 files it summarises; an L1 over 11-15, its L0s.
	store := join([]storage.FileInfo{fi(9, 1, 10), fi(1, 11, 15)}, l0s(1, 16))
	tests := []struct {
		name    string
		files   []storage.FileInfo
		target  ltx.TXID
		bad     []BadObject
		want    string // plan, or
		errText string // fragments of the error, "|"-separated
		newest  ltx.TXID
	}{
		{name: "nothing bad: the fewest files", files: store, want: "L9:1-10 L1:11-15 L0:16-16"},
		{name: "bad snapshot: the first L0 is a full image", files: store, target: 5, bad: bad(fi(9, 1, 10)),
			want: "L0:1-1 L0:2-2 L0:3-3 L0:4-4 L0:5-5"},
		{name: "bad snapshot, latest", files: store, bad: bad(fi(9, 1, 10)),
			want: "L0:1-1 L0:2-2 L0:3-3 L0:4-4 L0:5-5 L0:6-6 L0:7-7 L0:8-8 L0:9-9 L0:10-10 L1:11-15 L0:16-16"},
		{name: "bad L1: its L0 files", files: store, bad: bad(fi(1, 11, 15)),
			want: "L9:1-10 L0:11-11 L0:12-12 L0:13-13 L0:14-14 L0:15-15 L0:16-16"},
		{name: "bad L1 and one of its L0s: no path", files: store, bad: bad(fi(1, 11, 15), fi(0, 13, 13)),
			errText: "L1 000000000000000b-000000000000000f: corrupt; L0 000000000000000d-000000000000000d: corrupt; no restore path to TXID 0000000000000010 avoids them" +
				"|without them: from snapshot L9 0000000000000001-000000000000000a: missing file in the chain: no file covers TXIDs 000000000000000d-000000000000000d" +
				"|restore TXID 000000000000000c, the newest position that does not need them, with -txid 000000000000000c" +
				"|or move the bad object aside if it does not belong to this replica's history, or put a good copy in its place (/r/L1 000000000000000b-000000000000000f, /r/L0 000000000000000d-000000000000000d)",
			newest: 12},
		{name: "bad newest file: latest stays the newest, not an older position", files: store, bad: bad(fi(0, 16, 16)),
			errText: "no restore path to TXID 0000000000000010 avoids it (no other file reaches TXID 0000000000000010)|with -txid 000000000000000f", newest: 15},
		{name: "every snapshot bad: no position at all", files: join([]storage.FileInfo{fi(9, 1, 10)}, l0s(11, 12)), bad: bad(fi(9, 1, 10)),
			errText: "no position up to TXID 000000000000000c can be restored without it"},
		{name: "older snapshot when the newest is bad", files: join([]storage.FileInfo{fi(9, 1, 3), fi(9, 1, 10)}, l0s(4, 12)), bad: bad(fi(9, 1, 10)),
			want: "L9:1-3 L0:4-4 L0:5-5 L0:6-6 L0:7-7 L0:8-8 L0:9-9 L0:10-10 L0:11-11 L0:12-12"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := PlanAvoiding(tc.files, tc.target, tc.bad)
			if tc.errText != "" {
				var np *NoPathError
				if !errors.As(err, &np) {
					t.Fatalf("err = %v (plan %s), want a *NoPathError", err, names(p.Files))
				}
				for _, frag := range strings.Split(tc.errText, "|") {
					if !strings.Contains(err.Error(), frag) {
						t.Errorf("err = %q\nwant it to contain %q", err, frag)
					}
				}
				if np.Newest != tc.newest {
					t.Errorf("Newest = %s, want %s", np.Newest, tc.newest)
				}
				if errors.Is(err, ErrNoSnapshot) || errors.Is(err, ErrEmptyReplica) {
					t.Errorf("a store with bad objects says it holds nothing to restore: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := names(p.Files); got != tc.want {
				t.Fatalf("plan = %s\nwant   %s", got, tc.want)
			}
			for _, f := range p.Files {
				if isBad(tc.bad, f) {
					t.Fatalf("plan uses the bad object %s", FileName(f))
				}
			}
		})
	}
}

func TestNewestRestorable(t *testing.T) {
	tests := []struct {
		name  string
		files []storage.FileInfo
		limit ltx.TXID
		want  ltx.TXID
	}{
		{"empty", nil, 10, 0},
		{"no snapshot", l0s(2, 5), 10, 0},
		{"chain to the end", join([]storage.FileInfo{fi(9, 1, 1)}, l0s(2, 5)), 10, 5},
		{"limit cuts the chain", join([]storage.FileInfo{fi(9, 1, 1)}, l0s(2, 5)), 3, 3},
		{"gap stops it", join([]storage.FileInfo{fi(9, 1, 1)}, l0s(2, 3), l0s(5, 6)), 10, 3},
		{"a later snapshot bridges the gap", join([]storage.FileInfo{fi(9, 1, 1), fi(9, 1, 5)}, l0s(2, 3), l0s(6, 7)), 10, 7},
		{"a compaction past the limit is no use", join([]storage.FileInfo{fi(9, 1, 1), fi(1, 2, 8)}, l0s(2, 3)), 5, 3},
		{"snapshot past the limit is no use", []storage.FileInfo{fi(9, 1, 8)}, 5, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := NewestRestorable(tc.files, tc.limit); got != tc.want {
				t.Fatalf("NewestRestorable = %s, want %s", got, tc.want)
			}
		})
	}
}
