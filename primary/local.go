package primary

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/superfly/ltx"
	"golang.org/x/sys/unix"

	"github.com/understudy-db/understudy/internal/wal"
)

// localStore is the shadow directory beside the database. It keeps every
// L0 file until each replica has uploaded it and compacted it into L1, so
// that a slow or failing replica catches up by uploading exactly the files
// the others got (one history, byte-identical files at each TXID), and it
// keeps the local position so a restarted daemon can continue the WAL
// history it was following without a snapshot.
type localStore struct {
	dir  string
	lock *os.File // flock held for the life of the DB: one shipper per database
}

// fileMeta is what we know about one L0 file we wrote.
type fileMeta struct {
	TXID       ltx.TXID     `json:"txid"`
	Pre        ltx.Checksum `json:"pre"`
	Post       ltx.Checksum `json:"post"`
	CommitTime time.Time    `json:"commit_time"`
	Size       int64        `json:"size"`
	Pages      int          `json:"pages"`
	Commit     uint32       `json:"commit"` // database size in pages after the file
}

// localPosition is the position of the newest L0 file written locally and
// where it ends in the WAL, so that the history can be continued after a
// restart. WALOffset/WALChecksum are only meaningful with the salts.
type localPosition struct {
	TXID        ltx.TXID     `json:"txid"`
	Checksum    ltx.Checksum `json:"checksum"`
	PageSize    uint32       `json:"page_size"`
	Commit      uint32       `json:"commit"`
	Salt1       uint32       `json:"salt1"`
	Salt2       uint32       `json:"salt2"`
	HaveWAL     bool         `json:"have_wal"`
	WALOffset   int64        `json:"wal_offset"`
	WALChecksum [2]uint32    `json:"wal_checksum"`
}

func (p localPosition) walPosition() wal.Position {
	return wal.Position{Offset: p.WALOffset, Checksum: wal.Checksum{S1: p.WALChecksum[0], S2: p.WALChecksum[1]}}
}

func openLocalStore(dir string) (*localStore, error) {
	for _, d := range []string{dir, filepath.Join(dir, "ltx"), filepath.Join(dir, "tmp"), filepath.Join(dir, "snapshots")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("create shadow directory %s: %w (the directory beside the database must be writable)", d, err)
		}
	}
	// One shipper per database: a second process would share this
	// directory and race the first for every TXID. flock on a file of our
	// own (never the database's files, whose POSIX locks SQLite owns).
	lock, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open lock file in %s: %w", dir, err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("another understudy process is already replicating this database (lock %s is held): %w; stop it first",
			lock.Name(), err)
	}
	// Temp files of an earlier process are garbage.
	if ents, err := os.ReadDir(filepath.Join(dir, "tmp")); err == nil {
		for _, e := range ents {
			os.Remove(filepath.Join(dir, "tmp", e.Name()))
		}
	}
	return &localStore{dir: dir, lock: lock}, nil
}

// close releases the lock.
func (s *localStore) close() {
	if s != nil && s.lock != nil {
		s.lock.Close()
		s.lock = nil
	}
}

func (s *localStore) path(txid ltx.TXID) string {
	return filepath.Join(s.dir, "ltx", ltx.FormatFilename(txid, txid))
}

func (s *localStore) metaPath(txid ltx.TXID) string { return s.path(txid) + ".json" }

// tempFile creates a temp file in the shadow directory.
func (s *localStore) tempFile(pattern string) (*os.File, error) {
	f, err := os.CreateTemp(filepath.Join(s.dir, "tmp"), pattern)
	if err != nil {
		return nil, fmt.Errorf("create temp file in %s: %w", s.dir, err)
	}
	return f, nil
}

// snapshotPath is where a level-9 snapshot waits for its uploads.
func (s *localStore) snapshotPath(txid ltx.TXID) string {
	return filepath.Join(s.dir, "snapshots", ltx.FormatFilename(1, txid))
}

// commitSnapshot moves a finished snapshot temp file into place.
func (s *localStore) commitSnapshot(tmp string, md fileMeta) (string, error) {
	path := s.snapshotPath(md.TXID)
	if err := writeJSON(path+".json", md); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", fmt.Errorf("rename %s: %w", tmp, err)
	}
	return path, nil
}

// snapshots returns the waiting snapshots' metadata.
func (s *localStore) snapshots() []fileMeta {
	ents, _ := os.ReadDir(filepath.Join(s.dir, "snapshots"))
	var out []fileMeta
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".ltx") {
			continue
		}
		_, max, err := ltx.ParseFilename(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(s.snapshotPath(max) + ".json")
		var md fileMeta
		if err != nil || json.Unmarshal(b, &md) != nil || md.TXID != max {
			s.removeSnapshot(max)
			continue
		}
		out = append(out, md)
	}
	return out
}

func (s *localStore) removeSnapshot(txid ltx.TXID) {
	os.Remove(s.snapshotPath(txid))
	os.Remove(s.snapshotPath(txid) + ".json")
}

// commitFile moves a finished temp file to its L0 name with its metadata.
// The metadata is written first: a file without metadata is never visible.
func (s *localStore) commitFile(tmp string, md fileMeta) error {
	if err := writeJSON(s.metaPath(md.TXID), md); err != nil {
		return err
	}
	if err := os.Rename(tmp, s.path(md.TXID)); err != nil {
		return fmt.Errorf("rename %s: %w", tmp, err)
	}
	return nil
}

// meta reads the metadata of a local L0 file.
func (s *localStore) meta(txid ltx.TXID) (fileMeta, error) {
	var md fileMeta
	b, err := os.ReadFile(s.metaPath(txid))
	if err != nil {
		return md, err
	}
	if err := json.Unmarshal(b, &md); err != nil {
		return md, fmt.Errorf("%s: %w", s.metaPath(txid), err)
	}
	return md, nil
}

// has reports whether the L0 file for txid and its metadata are present.
func (s *localStore) has(txid ltx.TXID) bool {
	_, err1 := os.Stat(s.path(txid))
	_, err2 := os.Stat(s.metaPath(txid))
	return err1 == nil && err2 == nil
}

// remove deletes local L0 files with TXID <= upto.
func (s *localStore) remove(upto ltx.TXID) error {
	txids, err := s.list()
	if err != nil {
		return err
	}
	var errs []error
	for _, t := range txids {
		if t > upto {
			break
		}
		for _, p := range []string{s.path(t), s.metaPath(t)} {
			if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// list returns the TXIDs of the local L0 files in order.
func (s *localStore) list() ([]ltx.TXID, error) {
	ents, err := os.ReadDir(filepath.Join(s.dir, "ltx"))
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", s.dir, err)
	}
	var out []ltx.TXID
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".ltx") {
			continue
		}
		min, max, err := ltx.ParseFilename(e.Name())
		if err != nil || min != max {
			continue
		}
		out = append(out, min)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out, nil
}

// position reads the local position; ok is false if there is none.
func (s *localStore) position() (localPosition, bool, error) {
	var p localPosition
	b, err := os.ReadFile(filepath.Join(s.dir, "position.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return p, false, nil
	} else if err != nil {
		return p, false, err
	}
	if err := json.Unmarshal(b, &p); err != nil {
		// A torn write (power loss) is as good as none: the history is
		// re-proven from the store, or snapshotted.
		return p, false, nil
	}
	return p, true, nil
}

func (s *localStore) setPosition(p localPosition) error {
	return writeJSON(filepath.Join(s.dir, "position.json"), p)
}

// writeJSON writes v to path atomically (temp file, rename).
func writeJSON(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename %s: %w", tmp, err)
	}
	return nil
}
