package primary

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// appWriteErr tries one application write with a short busy timeout.
func appWriteErr(t *testing.T, path string) error {
	t.Helper()
	app := openApp(t, path)
	if _, err := app.Exec("PRAGMA busy_timeout = 100"); err != nil {
		t.Fatal(err)
	}
	_, err := app.Exec("INSERT INTO t (v) VALUES ('probe')")
	return err
}

func isLocked(err error) bool { return err != nil && strings.Contains(err.Error(), "locked") }

// TestHaltStopsShippingAndWrites: Halt (the lease was lost) makes Run
// return ErrHalted, the application's writes fail with SQLITE_BUSY, and
// Sync refuses to ship.
func TestHaltStopsShippingAndWrites(t *testing.T) {
	e := newEnv(t, 1)
	d := e.open(e.options())
	defer d.Close()
	stop := run(t, d)
	e.exec("INSERT INTO t (v) VALUES ('before')")
	if err := d.Halt("test: the lease was lost"); err != nil {
		t.Fatal(err)
	}
	if !d.Halted() {
		t.Fatal("Halted() = false after Halt")
	}
	if err := stop(); !errors.Is(err, ErrHalted) {
		t.Fatalf("Run = %v, want ErrHalted", err)
	}
	if err := appWriteErr(t, e.path); !isLocked(err) {
		t.Fatalf("application write after Halt: %v, want SQLITE_BUSY", err)
	}
	if err := d.Sync(context.Background()); !errors.Is(err, ErrHalted) {
		t.Fatalf("Sync after Halt = %v, want ErrHalted", err)
	}
}

// TestHandOffShipsEverything: HandOff holds the writes first, then every
// replica holds the final TXID, whose image is the database's.
func TestHandOffShipsEverything(t *testing.T) {
	e := newEnv(t, 2)
	d := e.open(e.options())
	defer d.Close()
	stop := run(t, d)
	for i := 0; i < 50; i++ {
		e.exec("INSERT INTO t (v) VALUES (?)", strings.Repeat("x", i*30))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	txid, err := d.HandOff(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stop(); !errors.Is(err, ErrHalted) {
		t.Fatalf("Run after HandOff = %v, want ErrHalted", err)
	}
	if err := appWriteErr(t, e.path); !isLocked(err) {
		t.Fatalf("application write after HandOff: %v, want SQLITE_BUSY", err)
	}
	st := d.Status()
	if st.TXID != txid {
		t.Fatalf("final TXID %s, status TXID %s", txid, st.TXID)
	}
	for _, r := range st.Replicas {
		if r.TXID != txid || r.Checksum != st.Checksum {
			t.Fatalf("replica %s at %s/%s, want %s/%s", r.Name, r.TXID, r.Checksum, txid, st.Checksum)
		}
	}
	e.checkRestore(d)
}

// TestDetachKeepsWritesHeld: after Detach the shadow directory is free for
// a new DB, but the application's writes stay held.
func TestDetachKeepsWritesHeld(t *testing.T) {
	e := newEnv(t, 1)
	d := e.open(e.options())
	if err := d.Halt("test"); err != nil {
		t.Fatal(err)
	}
	d.Detach()
	if err := appWriteErr(t, e.path); !isLocked(err) {
		t.Fatalf("application write after Detach: %v, want SQLITE_BUSY", err)
	}
	// The shadow directory's lock was released: another shipper may take it.
	f, err := os.Open(filepath.Join(e.dir, ".app.db-understudy", "lock"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Fatalf("shadow directory still locked after Detach: %v", err)
	}
}

// TestLeaseUnsafeStopsShipping: once the lease says it is no longer safe
// (its deadline passed, asked at that moment), the next sync uploads
// nothing and fails with ErrHalted; and a write lock the shipper holds when
// the window ends is kept, so the application's writes stay held.
func TestLeaseUnsafeStopsShipping(t *testing.T) {
	var unsafe atomic.Bool
	e := newEnv(t, 1)
	opts := e.options()
	opts.LeaseSafe = func() bool { return !unsafe.Load() }
	d := e.open(opts)
	defer d.Close()
	ctx := context.Background()
	e.exec("INSERT INTO t (v) VALUES ('shipped')")
	if err := d.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	before := len(listLevel(t, e.stores[0], 0))

	// The window ends while the shipper holds the write lock.
	d.mu.Lock()
	err := d.quiesceLocked(ctx, time.Second, false, func() error { unsafe.Store(true); return nil })
	d.mu.Unlock()
	if !errors.Is(err, ErrHalted) {
		t.Fatalf("quiesce across the end of the window = %v, want ErrHalted", err)
	}
	if !d.Halted() {
		t.Fatal("the write lock was let go after the window ended")
	}
	if err := appWriteErr(t, e.path); !isLocked(err) {
		t.Fatalf("application write after the window ended: %v, want SQLITE_BUSY", err)
	}
	if err := d.Sync(ctx); !errors.Is(err, ErrHalted) {
		t.Fatalf("Sync after the window ended = %v, want ErrHalted", err)
	}
	if after := len(listLevel(t, e.stores[0], 0)); after != before {
		t.Fatalf("L0 files %d before the window ended, %d after: want nothing uploaded", before, after)
	}
}

// TestLeaseUnsafeSyncUploadsNothing: a sync that starts past the window
// uploads nothing, though the application committed.
func TestLeaseUnsafeSyncUploadsNothing(t *testing.T) {
	var unsafe atomic.Bool
	e := newEnv(t, 1)
	opts := e.options()
	opts.LeaseSafe = func() bool { return !unsafe.Load() }
	d := e.open(opts)
	defer d.Close()
	ctx := context.Background()
	if err := d.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	before := len(listLevel(t, e.stores[0], 0))
	unsafe.Store(true)
	e.exec("INSERT INTO t (v) VALUES ('after the window')")
	if err := d.Sync(ctx); !errors.Is(err, ErrHalted) {
		t.Fatalf("Sync past the window = %v, want ErrHalted", err)
	}
	if after := len(listLevel(t, e.stores[0], 0)); after != before {
		t.Fatalf("L0 files %d before, %d after: want nothing uploaded past the window", before, after)
	}
}
