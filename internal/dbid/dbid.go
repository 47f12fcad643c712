// Package dbid is the identity of a database history: a random name minted
// by the primary that starts a history in an empty replica, written into
// the metadata of every object of that history, and recorded beside every
// local copy that continues it (the primary's database, a restored file, a
// follower), in the shadow directory the primary uses for that database.
//
// It is what lets a primary tell its own replica from another database's
// (two databases pointed at one replica URL by a typo or a copied config):
// without it the second database took the first one's history over with a
// full image, silently.
package dbid

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// FileName is the record's name inside the shadow directory.
const FileName = "database-id.json"

// Record is the content of the identity file.
type Record struct {
	ID string `json:"database_id"`
	// Origin says where the identity came from (minted, restored from a
	// replica, adopted...), for people reading the file.
	Origin string `json:"origin,omitempty"`
}

// New mints a new identity: 128 random bits in hex.
func New() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("dbid: no randomness: %v", err)) // crypto/rand never fails on Linux
	}
	return hex.EncodeToString(b[:])
}

// ShadowDir is the primary's default shadow directory of the database at
// path: ".<name>-understudy" beside the file the path resolves to, so that
// every path that leads to one file (a symbolic link, a linked directory)
// leads to one directory. A path that does not resolve is used as given.
func ShadowDir(path string) string {
	if real, err := filepath.EvalSymlinks(path); err == nil {
		path = real
	}
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	return filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+"-understudy")
}

// Read reads the identity recorded in dir; "" without error when there is
// none.
func Read(dir string) (Record, error) {
	var rec Record
	p := filepath.Join(dir, FileName)
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return rec, nil
	} else if err != nil {
		return rec, fmt.Errorf("read database identity %s: %w", p, err)
	}
	if err := json.Unmarshal(b, &rec); err != nil || rec.ID == "" {
		return Record{}, fmt.Errorf("read database identity %s: the file is damaged (%v); remove it to have it set again", p, err)
	}
	return rec, nil
}

// Write records rec in dir (created if need be), atomically and durably.
func Write(dir string, rec Record) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("record database identity: create %s: %w", dir, err)
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	p := filepath.Join(dir, FileName)
	tmp := p + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("record database identity %s: %w", p, err)
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, p)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("record database identity %s: %w", p, err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// RecordFor records the identity of the history a local copy at dbPath
// continues (a restore's output, a follower's database) in the shadow
// directory a primary started on that path will read. An empty id (the
// replica carries none) records nothing.
func RecordFor(dbPath, id, origin string) error {
	if id == "" {
		return nil
	}
	return Write(ShadowDir(dbPath), Record{ID: id, Origin: origin})
}
