package follower

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
	"time"
)

// TestRebuildSetDatabaseWrittenSinceIsSavedAgain: a database set for an
// in-place rebuild (SetRebuild) and then written while no follower held
// its lock (the node stopped before the rebuild) is saved again, with
// that write, when the follower opens it: the rebuild will overwrite it.
// Unchanged, it is not saved again.
func TestRebuildSetDatabaseWrittenSinceIsSavedAgain(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "app.db")
	db, err := sql.Open("sqlite3", "file:"+path+"?_journal_mode=WAL")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	exec := func(q string) {
		t.Helper()
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	exec(`CREATE TABLE t (v TEXT)`)
	exec(`INSERT INTO t VALUES ('before')`)
	if err := SetRebuild(ctx, path); err != nil {
		t.Fatal(err)
	}
	copies := func() []string {
		t.Helper()
		m, err := filepath.Glob(path + ".diverged-*")
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	a, err := OpenApplier(ctx, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	a.Close()
	if m := copies(); len(m) != 0 {
		t.Fatalf("an unchanged database set for a rebuild was saved again: %v", m)
	}

	exec(`INSERT INTO t VALUES ('acknowledged after SetRebuild')`)
	a, err = OpenApplier(ctx, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if a.Position().TXID != 0 {
		t.Fatalf("position %s, want one set for a rebuild (TXID 0)", a.Position())
	}
	m := copies()
	if len(m) != 1 {
		t.Fatalf("saved copies %v, want one holding the write made after SetRebuild", m)
	}
	c, err := sql.Open("sqlite3", "file:"+m[0]+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var n int
	if err := c.QueryRow(`SELECT count(*) FROM t WHERE v = 'acknowledged after SetRebuild'`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("the saved copy %s holds %d rows of the later write (%v), want 1", m[0], n, err)
	}
	// Recorded again at the new checksum: a third open saves nothing more.
	a.Close()
	time.Sleep(time.Millisecond) // copies are named by time
	if a, err = OpenApplier(ctx, path, nil); err != nil {
		t.Fatal(err)
	}
	a.Close()
	if m := copies(); len(m) != 1 {
		t.Fatalf("saved copies %v after reopening unchanged, want still one", m)
	}
}
