package sqlitex

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// newWAL creates a WAL database with a table t at a temp path.
func newWAL(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "db")
	newWALAt(t, path)
	return path
}

// otherWrites reports whether another connection (no busy timeout) can
// commit a write: SQLite's unix layer refuses it while any connection of
// the process holds the write lock, as the file lock refuses other
// processes.
func otherWrites(t *testing.T, path string) bool {
	t.Helper()
	c, err := Open(context.Background(), path, Options{BusyTimeout: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	err = c.Exec(context.Background(), "INSERT INTO t VALUES ('other')")
	if err != nil && !IsBusy(err) {
		t.Fatal(err)
	}
	return err == nil
}

func TestKeepWriteLock(t *testing.T) {
	ctx := context.Background()
	path := newWAL(t)
	w, err := Open(ctx, path, Options{BusyTimeout: -1, VFS: HoldableVFS})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	steps := []struct {
		name      string
		do        func() error
		otherCan  bool
		ownCommit bool // the holder itself can still commit a write afterwards
	}{
		{"holdable starts as the unix VFS", func() error { return w.TakeWriteLock(ctx) }, true, false},
		{"kept past its transaction", func() error {
			if err := w.SetKeepWriteLock(ctx, true); err != nil {
				return err
			}
			return w.TakeWriteLock(ctx)
		}, false, true},
		{"still held after its own commits", func() error { return nil }, false, false},
		{"let go while a transaction holds it: at its end", func() error {
			if err := w.Exec(ctx, "BEGIN IMMEDIATE"); err != nil {
				return err
			}
			if err := w.SetKeepWriteLock(ctx, false); err != nil {
				return err
			}
			if otherWrites(t, path) {
				t.Error("another connection wrote inside the holder's transaction")
			}
			return w.Exec(ctx, "COMMIT")
		}, true, false},
		{"kept again, then let go at once", func() error {
			if err := w.SetKeepWriteLock(ctx, true); err != nil {
				return err
			}
			if err := w.TakeWriteLock(ctx); err != nil {
				return err
			}
			if otherWrites(t, path) {
				t.Error("another connection wrote while the lock was kept")
			}
			return w.SetKeepWriteLock(ctx, false)
		}, true, false},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if s.ownCommit {
			if err := w.Exec(ctx, "INSERT INTO t VALUES ('holder')"); err != nil {
				t.Fatalf("%s: the holder's own write: %v", s.name, err)
			}
		}
		if got := otherWrites(t, path); got != s.otherCan {
			t.Fatalf("%s: another connection could write: %v, want %v", s.name, got, s.otherCan)
		}
	}
}

func TestHoldVFSKeepsFromTheStartUntilClose(t *testing.T) {
	ctx := context.Background()
	path := newWAL(t)
	h, err := Open(ctx, path, Options{VFS: HoldVFS})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.TakeWriteLock(ctx); err != nil {
		t.Fatal(err)
	}
	if otherWrites(t, path) {
		t.Fatal("another connection wrote while HoldVFS held the lock")
	}
	h.Close()
	if !otherWrites(t, path) {
		t.Fatal("the lock outlived the connection")
	}
}

func TestLockSlot(t *testing.T) {
	ctx := context.Background()
	path := newWAL(t)
	var s LockSlot
	if s.Take(path) != nil {
		t.Fatal("an empty slot gave a lock")
	}
	h, err := Open(ctx, path, Options{VFS: HoldVFS})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.TakeWriteLock(ctx); err != nil {
		t.Fatal(err)
	}
	s.Put(h)
	if got := s.Take(path); got != h {
		t.Fatalf("Take gave %v, want the lock put there", got)
	}
	s.Put(h)
	// The file moved aside and another created at the path: the lock stays
	// on the moved file, held, and is not handed out for the new one.
	if err := os.Rename(path, path+".aside"); err != nil {
		t.Fatal(err)
	}
	for _, sfx := range []string{"-wal", "-shm"} {
		os.Rename(path+sfx, path+".aside"+sfx)
	}
	newWALAt(t, path)
	if got := s.Take(path); got != nil {
		t.Fatal("Take handed out a lock of a file moved aside")
	}
	if otherWrites(t, path+".aside") {
		t.Fatal("the file moved aside was writable: its lock was let go")
	}
	if err := s.Release(); err != nil {
		t.Fatal(err)
	}
}

// newWALAt is newWAL at a given path.
func newWALAt(t *testing.T, path string) {
	t.Helper()
	c, err := OpenDB(context.Background(), DSN(path, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, q := range []string{"PRAGMA journal_mode=WAL", "CREATE TABLE t (v)"} {
		if _, err := c.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
}
