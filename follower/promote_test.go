package follower

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// TestCatchUpReplaysEverything: CatchUp (a promotion's replay, outside Run)
// bootstraps a missing database, applies every file up to the store's head,
// including compacted ones, and reports the position a claim builds on.
func TestCatchUpReplaysEverything(t *testing.T) {
	p, rng, path, _ := followedAndStopped(t, 11, 5)
	p.transfers(10, rng)
	p.compact(1, p.src.txid-9, p.src.txid-5) // part of the way is only in L1
	f, err := New(Config{Path: path, Client: p.store, PollInterval: 50 * time.Millisecond,
		Logger: hclog.New(&hclog.LoggerOptions{Level: hclog.Info, Output: testWriter{t}})})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	at, err := f.CatchUp(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if at.TXID != p.src.txid || at.Checksum != p.src.sum || at.PageCount != uint32(len(p.src.pages)) || at.PageSize != p.src.pageSize {
		t.Fatalf("CatchUp reached %+v; the store's head is TXID %s checksum %s, %d pages of %d bytes",
			at, p.src.txid, p.src.sum, len(p.src.pages), p.src.pageSize)
	}
	assertSame(t, p.src, path)

	// until beyond the head waits for it (a hand-off's final TXID).
	short, cancelShort := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancelShort()
	if _, err := f.CatchUp(short, p.src.txid+1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("CatchUp past the head = %v, want it to wait until the deadline", err)
	}
}

// TestSetAside moves a database with its WAL and sidecar to one name.
func TestSetAside(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.db")
	for _, s := range []string{"", "-wal", PositionSuffix} {
		if err := os.WriteFile(path+s, []byte("x"+s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	aside, err := SetAside(path, "diverged", time.Date(2026, 11, 24, 21, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	if want := path + ".diverged-20261124T210000.000000000Z"; aside != want {
		t.Fatalf("set aside to %s, want %s", aside, want)
	}
	for _, s := range []string{"", "-wal", PositionSuffix} {
		if _, err := os.Stat(aside + s); err != nil {
			t.Errorf("%s not moved: %v", s, err)
		}
		if _, err := os.Stat(path + s); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still at the old path", s)
		}
	}
}
