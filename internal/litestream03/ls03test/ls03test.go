// Package ls03test writes replicas in Litestream 0.3's layout from a real
// SQLite database, for tests that need one without the Litestream binary:
// a snapshot is the LZ4 frame of the database file, a WAL segment the LZ4
// frame of the WAL bytes since the previous segment, exactly what 0.3
// uploads (its shadow WAL holds the real WAL's committed frames). The
// caller drives the database: it turns off automatic checkpoints, writes,
// and truncates the WAL (PRAGMA wal_checkpoint(TRUNCATE)) to start the next
// index, as a WAL restart does under Litestream.
package ls03test

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/pierrec/lz4/v4"
)

// Put stores one object at key (relative to the replica's root) and returns
// the time the store records for it.
type Put func(key string, data []byte) (time.Time, error)

// FilePut stores objects below dir, as 0.3's file replica does, with mtime
// from now() (nil: the clock).
func FilePut(dir string, now func() time.Time) Put {
	return func(key string, data []byte) (time.Time, error) {
		p := filepath.Join(dir, filepath.FromSlash(key))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return time.Time{}, err
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			return time.Time{}, err
		}
		t := time.Now()
		if now != nil {
			t = now()
			if err := os.Chtimes(p, t, t); err != nil {
				return time.Time{}, err
			}
		}
		st, err := os.Stat(p)
		if err != nil {
			return time.Time{}, err
		}
		return st.ModTime().UTC(), nil
	}
}

// Generation writes one generation of a database's history.
type Generation struct {
	Name   string
	dbPath string
	put    Put
	index  int
	offset int64 // WAL bytes of the current index already shipped
}

// NewGeneration starts generation name (16 lowercase hex digits) of the
// database at dbPath at WAL index 0.
func NewGeneration(name, dbPath string, put Put) *Generation {
	return &Generation{Name: name, dbPath: dbPath, put: put}
}

// Index is the current WAL index.
func (g *Generation) Index() int { return g.index }

// Snapshot uploads the database file as the snapshot of the current index.
// The caller checkpoints first so that the file holds every commit.
func (g *Generation) Snapshot() (time.Time, error) {
	b, err := os.ReadFile(g.dbPath)
	if err != nil {
		return time.Time{}, err
	}
	return g.upload(fmt.Sprintf("generations/%s/snapshots/%08x.snapshot.lz4", g.Name, g.index), b)
}

// Segment uploads the WAL bytes written since the last segment of this
// index (the caller writes only whole transactions between calls). It
// returns ok false when there is nothing new.
func (g *Generation) Segment() (t time.Time, ok bool, err error) {
	f, err := os.Open(g.dbPath + "-wal")
	if err != nil {
		return time.Time{}, false, err
	}
	defer f.Close()
	if _, err := f.Seek(g.offset, io.SeekStart); err != nil {
		return time.Time{}, false, err
	}
	b, err := io.ReadAll(f)
	if err != nil || len(b) == 0 {
		return time.Time{}, false, err
	}
	t, err = g.upload(fmt.Sprintf("generations/%s/wal/%08x_%08x.wal.lz4", g.Name, g.index, g.offset), b)
	if err != nil {
		return time.Time{}, false, err
	}
	g.offset += int64(len(b))
	return t, true, nil
}

// NextIndex moves to the next WAL index; call it after the WAL was
// truncated (the next write starts a fresh WAL with new salts).
func (g *Generation) NextIndex() { g.index, g.offset = g.index+1, 0 }

func (g *Generation) upload(key string, raw []byte) (time.Time, error) {
	var buf bytes.Buffer
	zw := lz4.NewWriter(&buf)
	if _, err := zw.Write(raw); err != nil {
		return time.Time{}, err
	}
	if err := zw.Close(); err != nil {
		return time.Time{}, err
	}
	t, err := g.put(key, buf.Bytes())
	if err != nil {
		return time.Time{}, fmt.Errorf("put %s: %w", key, err)
	}
	return t, nil
}
