package primary

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
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
	d := e.open(e.options())
	defer d.Close()
	if got := fencedWindow(t, e, d); !slices.Equal(got, []ltx.TXID{1, 2, 3}) {
		t.Fatalf("L0 in the store after fencing: %v, want [1 2 3] (ours below the claim, the claim, nothing above)", got)
	}
	wantWriter(t, e.stores[0], 3, "node-b")
}

// fencedWindow ships TXID 1 on d, then commits 2..5 while the store fails,
// has another writer (node-b) claim TXID 3 and lets the store back: the
// window's sync must fence d. It returns the TXIDs of L0 in the store.
func fencedWindow(t *testing.T, e *testEnv, d *DB) []ltx.TXID {
	t.Helper()
	ctx := context.Background()
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
	return got
}

// wantWriter asserts that node wrote the store's L0 file of txid.
func wantWriter(t *testing.T, c storage.Client, txid ltx.TXID, node string) {
	t.Helper()
	obj, err := c.Open(context.Background(), 0, txid, txid, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	obj.Close()
	if obj.Info.Metadata == nil || obj.Info.Metadata.Node != node {
		t.Fatalf("TXID %s metadata %+v, want %s's", txid, obj.Info.Metadata, node)
	}
}

// replacingClient is a store on which another writer replaces the L0 file
// of TXID at right after our create of it lands (a PUT over ours on a store
// without create-only writes, or a newer primary replacing an orphan).
type replacingClient struct {
	storage.Client
	at   ltx.TXID
	body func() []byte
}

func (c *replacingClient) Create(ctx context.Context, level int, min, max ltx.TXID, r io.Reader, md storage.Metadata) (storage.FileInfo, error) {
	info, err := c.Client.Create(ctx, level, min, max, r, md)
	if err == nil && level == 0 && min == c.at {
		if err := c.Client.Delete(ctx, []storage.FileInfo{info}); err != nil {
			return info, err
		}
		if _, err := c.Client.Create(ctx, 0, min, max, bytes.NewReader(c.body()), storage.Metadata{Node: "node-b", FencingToken: 7}); err != nil {
			return info, err
		}
	}
	return info, err
}

// TestWithdrawKeepsAnotherWritersFile: as TestWindowFencedWithdrawsAbove,
// but the other writer has also replaced our file of TXID 5 by its own
// since our create: the withdrawal deletes 4, which is still ours, and
// leaves 5, which would cut the other writer's history.
func TestWithdrawKeepsAnotherWritersFile(t *testing.T) {
	e := newEnv(t, 1)
	opts := e.options()
	var d *DB
	opts.Replicas[0].Client = &replacingClient{Client: e.clients[0], at: 5,
		body: func() []byte { return zeroPageLTX(t, 5, d.table.commit(), d.pageSize) }}
	d = e.open(opts)
	defer d.Close()
	if got := fencedWindow(t, e, d); !slices.Equal(got, []ltx.TXID{1, 2, 3, 5}) {
		t.Fatalf("L0 in the store after fencing: %v, want [1 2 3 5] (ours below the claim, the claim, the other writer's 5)", got)
	}
	wantWriter(t, e.stores[0], 3, "node-b")
	wantWriter(t, e.stores[0], 5, "node-b")
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
