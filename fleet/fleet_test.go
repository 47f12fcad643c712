package fleet

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/understudy-db/understudy/config"
	"github.com/understudy-db/understudy/internal/dbid"
	"github.com/understudy-db/understudy/primary"
)

func TestMatches(t *testing.T) {
	f := &Fleet{opts: Options{Entry: &config.DB{Dir: "/d", Pattern: "*.db"}}}
	for name, want := range map[string]bool{
		"a.db": true, "a.db-wal": false, "a.db-shm": false, "a.db-journal": false, "a.sqlite": false,
		".a.db-understudy": false, "a.db.diverged-2026": false, "x.mismatch-1.db": false, "r.db.tmp": false,
	} {
		if got := f.matches(name); got != want {
			t.Errorf("matches(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestIsDatabase(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"db": "SQLite format 3\x00" + string(make([]byte, 100)), "text": "not a database at all", "short": "SQLite",
	} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if got, want := isDatabase(p), name == "db"; got != want {
			t.Errorf("isDatabase(%s) = %v, want %v", name, got, want)
		}
	}
}

// TestParkedNote: a note matches while the WAL is unchanged and the file
// is the same (a checkpoint writes it), and no longer once the WAL is
// written, created or removed or the file replaced.
func TestParkedNote(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "a.db")
	write := func(p, s string) {
		t.Helper()
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(db, "one")
	if err := os.MkdirAll(dbid.ShadowDir(db), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, ok := unchangedSinceParked(db); ok {
		t.Fatal("unchanged without a note")
	}
	note := func() {
		t.Helper()
		if err := writeNote(db, stampsOf(db), primary.StatusDoc{TXID: 7}); err != nil {
			t.Fatal(err)
		}
	}
	note()
	if doc, ok := unchangedSinceParked(db); !ok || doc.TXID != 7 {
		t.Fatalf("note not matched (txid %s)", doc.TXID)
	}
	write(db, "checkpointed") // same inode
	if _, ok := unchangedSinceParked(db); !ok {
		t.Fatal("a checkpoint of the file made the note stale")
	}
	for _, change := range []struct {
		what string
		do   func()
	}{
		{"WAL created", func() { write(db+"-wal", "frames") }},
		{"WAL written", func() { write(db+"-wal", "more frames") }},
		{"WAL removed", func() { os.Remove(db + "-wal") }},
		{"file replaced", func() { write(db+".new", "two"); os.Rename(db+".new", db) }},
	} {
		change.do()
		if _, ok := unchangedSinceParked(db); ok {
			t.Errorf("%s: the note still matches", change.what)
		}
		note()
	}
	if err := removeNote(db); err != nil {
		t.Fatal(err)
	}
	if _, ok := unchangedSinceParked(db); ok {
		t.Error("a removed note still matches")
	}
}
