package litestream03

import (
	"testing"
	"time"

	"github.com/understudy-db/understudy/internal/storage"
)

func TestParseKey(t *testing.T) {
	const gen = "0123456789abcdef"
	for _, tc := range []struct {
		key    string
		kind   Kind
		index  int
		offset int64
	}{
		{"generations/" + gen + "/snapshots/00000000.snapshot.lz4", KindSnapshot, 0, 0},
		{"generations/" + gen + "/snapshots/0000001f.snapshot.lz4", KindSnapshot, 31, 0},
		{"generations/" + gen + "/wal/00000002_00001020.wal.lz4", KindSegment, 2, 0x1020},
		{"generations/" + gen + "/wal/00000000_00000000.wal.lz4", KindSegment, 0, 0},
		{"generations/" + gen + "/wal/00000002_00001020.wal.lz4.tmp", KindOther, 0, 0},    // temp file
		{"generations/" + gen + "/wal/00000002.wal.lz4", KindOther, 0, 0},                 // no offset
		{"generations/" + gen + "/wal/0000000A_00000000.wal.lz4", KindOther, 0, 0},        // upper case
		{"generations/" + gen + "/snapshots/00000000.snapshot", KindOther, 0, 0},          // not lz4
		{"generations/0123456789ABCDEF/snapshots/00000000.snapshot.lz4", KindOther, 0, 0}, // generation upper case
		{"generations/0123456789abcde/snapshots/00000000.snapshot.lz4", KindOther, 0, 0},  // 15 digits
		{"generations/" + gen + "/other/00000000.snapshot.lz4", KindOther, 0, 0},          // wrong dir
		{"generations/" + gen + "/snapshots/x/00000000.snapshot.lz4", KindOther, 0, 0},    // too deep
		{"ltx/0/0000000000000001-0000000000000001.ltx", KindOther, 0, 0},                  // ours
		{"db/generations/" + gen + "/snapshots/00000000.snapshot.lz4", KindOther, 0, 0},   // not at the root
	} {
		kind, g, index, offset := ParseKey(tc.key)
		if kind != tc.kind || index != tc.index || offset != tc.offset || (kind != KindOther && g != gen) {
			t.Errorf("ParseKey(%q) = %v %q %d %d, want %v %d %d", tc.key, kind, g, index, offset, tc.kind, tc.index, tc.offset)
		}
		if kind == KindSnapshot {
			if got := (Snapshot{Generation: g, Index: index}).Key(); got != tc.key {
				t.Errorf("Snapshot.Key() = %q, want %q", got, tc.key)
			}
		}
		if kind == KindSegment {
			if got := (Segment{Generation: g, Index: index, Offset: offset}).Key(); got != tc.key {
				t.Errorf("Segment.Key() = %q, want %q", got, tc.key)
			}
		}
	}
}

func TestParseGroupsAndOrders(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	keys := []storage.KeyInfo{
		{Key: "generations/bbbbbbbbbbbbbbbb/wal/00000001_00000000.wal.lz4", Size: 5, ModTime: at(30)},
		{Key: "generations/aaaaaaaaaaaaaaaa/wal/00000000_00001000.wal.lz4", Size: 3, ModTime: at(3)},
		{Key: "generations/aaaaaaaaaaaaaaaa/wal/00000000_00000000.wal.lz4", Size: 2, ModTime: at(2)},
		{Key: "generations/aaaaaaaaaaaaaaaa/snapshots/00000000.snapshot.lz4", Size: 1, ModTime: at(1)},
		{Key: "generations/aaaaaaaaaaaaaaaa/junk", Size: 9, ModTime: at(99)},
		{Key: "generations/bbbbbbbbbbbbbbbb/snapshots/00000001.snapshot.lz4", Size: 4, ModTime: at(20)},
	}
	r := Parse(keys)
	if got := r.Names(); len(got) != 2 || got[0] != "aaaaaaaaaaaaaaaa" || got[1] != "bbbbbbbbbbbbbbbb" {
		t.Fatalf("generations %v", got)
	}
	a := r.Generations[0]
	if len(a.Snapshots) != 1 || len(a.Segments) != 2 || a.Segments[0].Offset != 0 || a.Segments[1].Offset != 0x1000 {
		t.Fatalf("generation a: %+v", a)
	}
	if !a.CreatedAt.Equal(at(1)) || !a.UpdatedAt.Equal(at(3)) {
		t.Errorf("generation a bounds %s..%s, want %s..%s (junk ignored)", a.CreatedAt, a.UpdatedAt, at(1), at(3))
	}
	if b := r.Generations[1]; b.MaxIndex() != 1 || !b.CreatedAt.Equal(at(20)) || !b.UpdatedAt.Equal(at(30)) {
		t.Errorf("generation b: %+v", b)
	}
	if len(Parse(nil).Generations) != 0 {
		t.Error("empty listing has generations")
	}
}
