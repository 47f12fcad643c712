package litestream03_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3"

	"github.com/understudy-db/understudy/internal/litestream03"
	"github.com/understudy-db/understudy/internal/litestream03/ls03test"
	"github.com/understudy-db/understudy/internal/storage/file"
)

// checkpointedCopy is the oracle: the database as SQLite itself makes it
// from copies of the file and its WAL (a TRUNCATE checkpoint in a fresh
// directory), read as bytes.
func checkpointedCopy(t *testing.T, dbPath string) []byte {
	t.Helper()
	dir := t.TempDir()
	cp := filepath.Join(dir, "copy.db")
	for _, suffix := range []string{"", "-wal"} {
		b, err := os.ReadFile(dbPath + suffix)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(cp+suffix, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	db, err := sql.Open("sqlite3", "file:"+cp)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	b, err := os.ReadFile(cp)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type point struct {
	index int
	at    time.Time
	want  []byte
}

// history writes a generation from a real database: a snapshot at index 0,
// two segments of WAL 0 (the second grows the database), then a WAL restart
// and WAL 1 that shrinks it (VACUUM), then a snapshot at index 2 and a
// segment of WAL 2. Object times step by a second from t0.
func history(t *testing.T, replicaDir string) (string, []point) {
	t.Helper()
	dbPath := filepath.Join(t.TempDir(), "app.db")
	db, err := sql.Open("sqlite3", "file:"+dbPath+"?_journal_mode=WAL&_synchronous=NORMAL")
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := db.Exec(q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	exec(`PRAGMA wal_autocheckpoint=0`)
	exec(`CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)`)
	for i := 0; i < 20; i++ {
		exec(`INSERT INTO t (v) VALUES (randomblob(300))`)
	}
	exec(`PRAGMA wal_checkpoint(TRUNCATE)`)

	clock := time.Date(2026, 2, 3, 4, 5, 0, 0, time.UTC)
	tick := func() time.Time { clock = clock.Add(time.Second); return clock }
	const gen = "00112233445566aa"
	g := ls03test.NewGeneration(gen, dbPath, ls03test.FilePut(replicaDir, tick))
	var points []point
	snap := func() {
		at, err := g.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		points = append(points, point{g.Index(), at, checkpointedCopy(t, dbPath)})
	}
	segment := func() {
		t.Helper()
		at, ok, err := g.Segment()
		if err != nil || !ok {
			t.Fatalf("segment: ok %v, %v", ok, err)
		}
		points = append(points, point{g.Index(), at, checkpointedCopy(t, dbPath)})
	}
	restart := func() { exec(`PRAGMA wal_checkpoint(TRUNCATE)`); g.NextIndex() }

	snap()
	exec(`UPDATE t SET v = randomblob(310) WHERE id % 3 = 0`)
	exec(`INSERT INTO t (v) VALUES (randomblob(100))`)
	segment()
	for i := 0; i < 40; i++ {
		exec(`INSERT INTO t (v) VALUES (randomblob(2000))`) // grows the file
	}
	segment()
	restart()
	exec(`DELETE FROM t WHERE id > 10`)
	exec(`VACUUM`) // shrinks the file: the commit is smaller than before
	segment()
	restart()
	exec(`PRAGMA wal_checkpoint(TRUNCATE)`)
	snap()
	exec(`INSERT INTO t (v) VALUES ('last')`)
	segment()
	return gen, points
}

func build(t *testing.T, c *file.Client, target litestream03.Target) ([]byte, error) {
	t.Helper()
	r, err := litestream03.Load(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	p, err := litestream03.PlanRestore(r, target)
	if err != nil {
		return nil, err
	}
	out := filepath.Join(t.TempDir(), "restored.db")
	if _, err := litestream03.Restore(context.Background(), c, p, out, nil); err != nil {
		return nil, err
	}
	return os.ReadFile(out)
}

func TestBuildMatchesSQLiteCheckpoint(t *testing.T) {
	dir := t.TempDir()
	gen, points := history(t, dir)
	c, err := file.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	same := func(what string, got, want []byte) {
		t.Helper()
		if !bytes.Equal(got, want) {
			t.Errorf("%s: restored %d bytes (sha256 %x), SQLite's checkpoint of the source %d bytes (sha256 %x)",
				what, len(got), sha256.Sum256(got), len(want), sha256.Sum256(want))
		}
	}
	last := points[len(points)-1]
	got, err := build(t, c, litestream03.Latest)
	if err != nil {
		t.Fatal(err)
	}
	same("latest", got, last.want)

	for i, p := range points {
		got, err := build(t, c, litestream03.Target{Index: litestream03.NoIndex, Timestamp: p.at})
		if err != nil {
			t.Fatalf("point %d at %s: %v", i, p.at, err)
		}
		same(fmt.Sprintf("point %d by timestamp %s", i, p.at.Format(time.RFC3339)), got, p.want)
	}
	// By index: the last point of each index.
	byIndex := map[int][]byte{}
	for _, p := range points {
		byIndex[p.index] = p.want
	}
	for index, want := range byIndex {
		got, err := build(t, c, litestream03.Target{Generation: gen, Index: index})
		if err != nil {
			t.Fatalf("index %d: %v", index, err)
		}
		same(fmt.Sprintf("generation %s index %d", gen, index), got, want)
	}
}

func TestBuildRejectsBadObjects(t *testing.T) {
	for _, tc := range []struct {
		name    string
		spoil   func(t *testing.T, dir, gen string)
		err     error
		errText string
	}{
		{"age-encrypted segment", func(t *testing.T, dir, gen string) {
			writeKey(t, dir, gen, "wal/00000000_00000000.wal.lz4", []byte("age-encryption.org/v1\n-> X25519 abc\n"))
		}, litestream03.ErrEncrypted, "restore this replica with Litestream 0.3"},
		{"segment that is not LZ4", func(t *testing.T, dir, gen string) {
			writeKey(t, dir, gen, "wal/00000001_00000000.wal.lz4", []byte("hello, not lz4"))
		}, litestream03.ErrCorrupt, "00000001_00000000.wal.lz4 is not an LZ4 frame"},
		{"gap between two segments of an index", func(t *testing.T, dir, gen string) {
			shiftSecondSegment(t, filepath.Join(dir, "generations", gen, "wal"), "00000000_")
		}, litestream03.ErrMissing, "starts at WAL offset"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			gen, _ := history(t, dir)
			tc.spoil(t, dir, gen)
			c, err := file.New(dir)
			if err != nil {
				t.Fatal(err)
			}
			_, err = build(t, c, litestream03.Target{Generation: gen, Index: 1})
			if !errors.Is(err, tc.err) || !strings.Contains(err.Error(), tc.errText) {
				t.Fatalf("error %v, want %v saying %q", err, tc.err, tc.errText)
			}
		})
	}
}

func writeKey(t *testing.T, dir, gen, rel string, data []byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "generations", gen, rel), data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// shiftSecondSegment renames the second segment of an index to a name 4 KiB
// further on, as if a segment between them were lost.
func shiftSecondSegment(t *testing.T, walDir, prefix string) {
	t.Helper()
	ents, err := os.ReadDir(walDir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) {
			names = append(names, e.Name())
		}
	}
	if len(names) < 2 {
		t.Fatalf("index %s has %d segments, want 2 or more", prefix, len(names))
	}
	var index, offset int64
	if _, err := fmt.Sscanf(names[1], "%08x_%08x.wal.lz4", &index, &offset); err != nil {
		t.Fatal(err)
	}
	moved := fmt.Sprintf("%08x_%08x.wal.lz4", index, offset+4096)
	if err := os.Rename(filepath.Join(walDir, names[1]), filepath.Join(walDir, moved)); err != nil {
		t.Fatal(err)
	}
}
