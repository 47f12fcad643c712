// Package heads is the heads index of a dir: entry's replica: one small
// object at the prefix root, Key, that maps every database of the
// directory (its path relative to the directory, which is also its path
// below the prefix) to the newest TXID shipped to that replica. A follower
// of the whole directory reads it with one GET per poll instead of polling
// each database's objects, so an idle directory of a thousand databases
// costs it one request a poll, not a thousand.
//
// The index is a hint, never the history: a follower still reads and
// verifies the LTX files it names (checksums chain from one to the next),
// and a head lower than the store's (the writer crashed between an upload
// and the next index write) only delays it until the next write. The
// writer (package fleet) replaces it at most once per sync interval and
// only when a head moved, so an idle directory writes nothing.
//
// Key starts with "." and is a single leaf at the prefix root, so it is
// never an LTX key: storage.DatabaseOfKey (restore -dir-out) skips it, and
// Litestream's restore reads only <db>/<level>/ names.
package heads

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/understudy-db/understudy/internal/storage"
)

// Key is where the index lives, relative to the replica's prefix.
const Key = ".understudy-heads.json"

// MaxSize bounds what Read accepts: ten thousand databases with paths of
// a hundred bytes take about 1.3 MB, so anything past this is not an index.
const MaxSize = 64 << 20

// Version is the format of the object; Read refuses others.
const Version = 1

// Index is the content of the object.
type Index struct {
	// Written is when the writer made this index (its clock).
	Written time.Time
	// Heads maps a database's path relative to the directory ("a.db",
	// "eu/c.db") to the newest TXID shipped to this replica. A database
	// with nothing shipped yet is absent.
	Heads map[string]uint64
}

// doc is the JSON form: TXIDs as decimal numbers, which JSON carries
// exactly up to 2^53 and encoding/json reads into uint64 exactly beyond.
type doc struct {
	Version int               `json:"version"`
	Written time.Time         `json:"written"`
	Heads   map[string]uint64 `json:"heads"`
}

// ErrCorrupt is wrapped by Read's error for an object that is not a valid
// index.
var ErrCorrupt = errors.New("heads index is corrupt")

// Read reads and validates the index at Key. A missing object gives an
// error wrapping storage.ErrNotFound (no writer has written one yet: the
// directory is not written by an Understudy that writes it); a damaged one
// an error wrapping ErrCorrupt that names the object.
func Read(ctx context.Context, kr storage.KeyReader) (Index, error) {
	rc, err := kr.OpenKey(ctx, Key)
	if err != nil {
		return Index{}, fmt.Errorf("heads index %s: %w", Key, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, MaxSize+1))
	if err != nil {
		return Index{}, fmt.Errorf("heads index %s: read: %w", Key, err)
	}
	if len(b) > MaxSize {
		return Index{}, fmt.Errorf("heads index %s: %w: more than %d bytes", Key, ErrCorrupt, MaxSize)
	}
	return Decode(b)
}

// Decode parses and validates an index's bytes (Read without the store).
func Decode(b []byte) (Index, error) {
	corrupt := func(format string, args ...any) (Index, error) {
		return Index{}, fmt.Errorf("heads index %s: %w: %s (rewritten by the primary at its next sync; remove it if it persists)", Key, ErrCorrupt, fmt.Sprintf(format, args...))
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var d doc
	if err := dec.Decode(&d); err != nil {
		return corrupt("not the JSON of an index: %v", err)
	}
	if dec.More() {
		return corrupt("data after the JSON object")
	}
	switch {
	case d.Version != Version:
		return corrupt("version %d, want %d (written by another version of Understudy?)", d.Version, Version)
	case d.Written.IsZero():
		return corrupt("no written time")
	case d.Heads == nil:
		return corrupt("no heads")
	}
	for rel, txid := range d.Heads {
		if err := checkRel(rel); err != nil {
			return corrupt("database %q: %v", rel, err)
		}
		if txid == 0 {
			return corrupt("database %q: TXID 0 (a database with nothing shipped is left out)", rel)
		}
	}
	return Index{Written: d.Written, Heads: d.Heads}, nil
}

// Encode is the object's bytes for ix, after the checks Decode makes.
func Encode(ix Index) ([]byte, error) {
	if ix.Written.IsZero() {
		return nil, errors.New("heads index: no written time")
	}
	heads := ix.Heads
	if heads == nil {
		heads = map[string]uint64{}
	}
	for rel, txid := range heads {
		if err := checkRel(rel); err != nil {
			return nil, fmt.Errorf("heads index: database %q: %w", rel, err)
		}
		if txid == 0 {
			return nil, fmt.Errorf("heads index: database %q: TXID 0 (leave a database with nothing shipped out)", rel)
		}
	}
	// encoding/json writes map keys sorted: the same index gives the same
	// bytes.
	return json.Marshal(doc{Version: Version, Written: ix.Written.UTC(), Heads: heads})
}

// Write replaces the index at Key with ix.
func Write(ctx context.Context, kw storage.KeyWriter, ix Index) error {
	b, err := Encode(ix)
	if err != nil {
		return err
	}
	if err := kw.PutKey(ctx, Key, bytes.NewReader(b)); err != nil {
		return fmt.Errorf("heads index %s: write: %w", Key, err)
	}
	return nil
}

// checkRel refuses a path that cannot be a database below the prefix: it
// must be what storage.DatabaseOfKey gives, a relative "/"-separated path
// without empty, "." or ".." segments.
func checkRel(rel string) error {
	if rel == "" {
		return errors.New("empty path")
	}
	for _, s := range strings.Split(rel, "/") {
		if s == "" || s == "." || s == ".." {
			return errors.New(`not a relative path without empty, "." or ".." segments`)
		}
	}
	return nil
}
