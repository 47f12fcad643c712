package primary

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/internal/storage"
)

func TestWindowPrefix(t *testing.T) {
	timeout := errors.New("context deadline exceeded")
	fence := fmt.Errorf("create level 0: %w", ErrFenced)
	tests := []struct {
		name           string
		errs           []error
		n, fencedIndex int
	}{
		{"empty", nil, 0, -1},
		{"all made it", []error{nil, nil, nil}, 3, -1},
		{"the first failed: nothing advances though later ones made it", []error{timeout, nil, nil}, 0, -1},
		{"a failure in the middle ends the prefix", []error{nil, nil, timeout, nil}, 2, -1},
		{"fenced in the middle: files above it are withdrawn", []error{nil, fence, nil, nil}, 1, 1},
		{"a failure before the fence", []error{nil, timeout, nil, fence, nil}, 1, 3},
		{"fenced first", []error{fence, nil}, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, f := windowPrefix(tt.errs)
			if n != tt.n || f != tt.fencedIndex {
				t.Errorf("windowPrefix = %d, %d; want %d, %d", n, f, tt.n, tt.fencedIndex)
			}
		})
	}
}

// TestWindowFencedWithdrawsAbove: the replica is behind by four L0 files
// (2..5) and goes up with them at once; another writer has claimed TXID 3.
// The DB is fenced, 2 stays (it continues the history the other writer
// took over), and 4 and 5, which made it into the store concurrently, are
// withdrawn: above the other writer's claim they would break its chain.
func TestWindowFencedWithdrawsAbove(t *testing.T) {
	e := newEnv(t, 1)
	ctx := context.Background()
	d := e.open(e.options())
	defer d.Close()
	if err := d.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	e.clients[0].fail.Store(true)
	for i := range 4 {
		e.exec("INSERT INTO t (v) VALUES (?)", fmt.Sprintf("behind %d", i))
		if err := d.Sync(ctx); err == nil {
			t.Fatal("Sync with a failing store: no error")
		}
	}
	if got := d.Status().TXID; got != 5 {
		t.Fatalf("local TXID %s, want 5", got)
	}
	if _, err := e.stores[0].Create(ctx, 0, 3, 3, bytes.NewReader(zeroPageLTX(t, 3, d.table.commit(), d.pageSize)),
		storage.Metadata{Node: "node-b", FencingToken: 7}); err != nil {
		t.Fatal(err)
	}
	e.clients[0].fail.Store(false)
	if err := d.Sync(ctx); !errors.Is(err, ErrFenced) {
		t.Fatalf("Sync = %v, want ErrFenced", err)
	}
	var got []ltx.TXID
	for _, f := range listLevel(t, e.stores[0], 0) {
		got = append(got, f.MinTXID)
	}
	if !slices.Equal(got, []ltx.TXID{1, 2, 3}) {
		t.Fatalf("L0 in the store after fencing: %v, want [1 2 3] (ours below the claim, the claim, nothing above)", got)
	}
	obj, err := e.stores[0].Open(ctx, 0, 3, 3, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	obj.Close()
	if obj.Info.Metadata == nil || obj.Info.Metadata.Node != "node-b" {
		t.Fatalf("TXID 3 metadata %+v, want the other writer's", obj.Info.Metadata)
	}
}

func TestChainEnd(t *testing.T) {
	l0 := func(ts ...ltx.TXID) []storage.FileInfo {
		var out []storage.FileInfo
		for _, x := range ts {
			out = append(out, storage.FileInfo{Level: 0, MinTXID: x, MaxTXID: x})
		}
		return out
	}
	f := func(level int, min, max ltx.TXID) []storage.FileInfo {
		return []storage.FileInfo{{Level: level, MinTXID: min, MaxTXID: max}}
	}
	tests := []struct {
		name   string
		levels map[int][]storage.FileInfo
		want   ltx.TXID
	}{
		{"empty", map[int][]storage.FileInfo{}, 0},
		{"contiguous L0", map[int][]storage.FileInfo{0: l0(1, 2, 3), 9: f(9, 1, 1)}, 3},
		{"a window's gap: the position ends before it", map[int][]storage.FileInfo{0: l0(1, 2, 4, 5), 9: f(9, 1, 1)}, 2},
		{"the first of a window missing", map[int][]storage.FileInfo{0: l0(1, 3), 9: f(9, 1, 1)}, 1},
		{"L0 compacted into L1 and removed below it", map[int][]storage.FileInfo{0: l0(9, 10, 11), 1: f(1, 1, 10), 9: f(9, 1, 1)}, 11},
		{"a gap above L1", map[int][]storage.FileInfo{0: l0(11, 13), 1: f(1, 1, 10)}, 11},
		{"a catch-up snapshot covers the L0 files never uploaded", map[int][]storage.FileInfo{0: l0(1, 2, 9, 10), 9: {{Level: 9, MinTXID: 1, MaxTXID: 1}, {Level: 9, MinTXID: 1, MaxTXID: 8}}}, 10},
		{"a history break's snapshot landed, its L0 file not", map[int][]storage.FileInfo{0: l0(1, 2), 9: {{Level: 9, MinTXID: 1, MaxTXID: 1}, {Level: 9, MinTXID: 1, MaxTXID: 3}}}, 2},
		{"only a compaction", map[int][]storage.FileInfo{1: f(1, 1, 7)}, 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := chainEnd(tt.levels); got != tt.want {
				t.Errorf("chainEnd = %s, want %s", got, tt.want)
			}
		})
	}
}
