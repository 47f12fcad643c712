package primary

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/superfly/ltx"
	"golang.org/x/sys/unix"

	"github.com/understudy-db/understudy/internal/wal"
)

// localStore is the shadow directory beside the database. It keeps every
// L0 file until each replica has uploaded it and compacted it into L1, so
// that a slow or failing replica catches up by uploading exactly the files
// the others got (one history, byte-identical files at each TXID), up to a
// bound (capLocalLocked) past which a replica catches up with a snapshot
// instead; and it keeps the local position so a restarted daemon can
// continue the WAL history it was following without a snapshot.
type localStore struct {
	dir  string
	lock *os.File // flock held for the life of the DB: one shipper per database

	// mu guards the index of the local L0 files: their sizes, so that the
	// bound on the directory (capLocal) is decided without listing it on
	// every sync. Files are added by commitFile and removed by remove only;
	// the index is read from the directory at open.
	mu     sync.Mutex
	sizes  map[ltx.TXID]int64
	images map[ltx.TXID]bool // the full images among them
	bytes  int64             // sum of the sizes of the files that are not full images
}

// localFile is one local L0 file in the index. Full: a full image (a
// history break's L0 file holding every page), which does not count
// against the shadow directory's bound: it is as large as the database,
// so with the default bound (the database's size) it used it all up at
// once, and every replica that had not uploaded it yet lost its catch-up
// files to the next few syncs (and got a second full upload).
type localFile struct {
	TXID ltx.TXID
	Size int64
	Full bool
}

// fileMeta is what we know about one L0 file we wrote.
type fileMeta struct {
	TXID       ltx.TXID     `json:"txid"`
	Pre        ltx.Checksum `json:"pre"`
	Post       ltx.Checksum `json:"post"`
	CommitTime time.Time    `json:"commit_time"`
	Size       int64        `json:"size"`
	Pages      int          `json:"pages"`
	Commit     uint32       `json:"commit"`         // database size in pages after the file
	Full       bool         `json:"full,omitempty"` // a full image (every page)
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

// openLocalStore opens (creating it) the shadow directory dir of the
// database at path, which resolves to real (named in the lock error).
func openLocalStore(dir, path, real string) (*localStore, error) {
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
		what := path
		if real != path {
			what = fmt.Sprintf("%s (the file %s)", path, real)
		}
		return nil, fmt.Errorf("another understudy process is already replicating database %s (lock %s is held): %w; stop it first",
			what, lock.Name(), err)
	}
	// Temp files of an earlier process are garbage.
	if ents, err := os.ReadDir(filepath.Join(dir, "tmp")); err == nil {
		for _, e := range ents {
			os.Remove(filepath.Join(dir, "tmp", e.Name()))
		}
	}
	s := &localStore{dir: dir, lock: lock, sizes: map[ltx.TXID]int64{}, images: map[ltx.TXID]bool{}}
	if err := s.loadIndex(); err != nil {
		lock.Close()
		return nil, err
	}
	return s, nil
}

// loadIndex reads the sizes of the L0 files already in the directory.
func (s *localStore) loadIndex() error {
	ents, err := os.ReadDir(filepath.Join(s.dir, "ltx"))
	if err != nil {
		return fmt.Errorf("list %s: %w", s.dir, err)
	}
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".ltx") {
			continue
		}
		min, max, err := ltx.ParseFilename(e.Name())
		if err != nil || min != max {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue // removed meanwhile
		}
		s.sizes[min] = info.Size()
		if md, err := s.meta(min); err == nil && md.Full {
			s.images[min] = true
		} else {
			s.bytes += info.Size()
		}
	}
	return nil
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

// linkTemp makes a temp file with the content of path: a hard link, or a
// copy where the file system has none. The returned file is closed.
func (s *localStore) linkTemp(path, pattern string) (*os.File, error) {
	f, err := s.tempFile(pattern)
	if err != nil {
		return nil, err
	}
	f.Close()
	os.Remove(f.Name())
	if err := os.Link(path, f.Name()); err == nil {
		return f, nil
	}
	if f, err = s.tempFile(pattern); err != nil {
		return nil, err
	}
	src, err := os.Open(path)
	if err == nil {
		_, err = io.Copy(f, src)
		src.Close()
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return nil, fmt.Errorf("copy %s: %w", path, err)
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
	s.mu.Lock()
	s.forgetLocked(md.TXID)
	s.sizes[md.TXID] = md.Size
	if md.Full {
		s.images[md.TXID] = true
	} else {
		s.bytes += md.Size
	}
	s.mu.Unlock()
	return nil
}

// forgetLocked drops txid from the index (s.mu held).
func (s *localStore) forgetLocked(txid ltx.TXID) {
	if n, ok := s.sizes[txid]; ok && !s.images[txid] {
		s.bytes -= n
	}
	delete(s.sizes, txid)
	delete(s.images, txid)
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

// remove deletes local L0 files with TXID <= upto. The L0 file goes
// before its metadata, so that has() never sees a file without it.
func (s *localStore) remove(upto ltx.TXID) error {
	var errs []error
	for _, f := range s.files() {
		if f.TXID > upto {
			break
		}
		errs = append(errs, s.removeOne(f.TXID))
	}
	return errors.Join(errs...)
}

// removeImages deletes the local full images with TXID <= upto.
func (s *localStore) removeImages(upto ltx.TXID) error {
	var errs []error
	for _, f := range s.files() {
		if f.Full && f.TXID <= upto {
			errs = append(errs, s.removeOne(f.TXID))
		}
	}
	return errors.Join(errs...)
}

// removeOne deletes the local L0 file txid, the file before its metadata.
func (s *localStore) removeOne(txid ltx.TXID) error {
	var errs []error
	for _, p := range []string{s.path(txid), s.metaPath(txid)} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	s.mu.Lock()
	s.forgetLocked(txid)
	s.mu.Unlock()
	return errors.Join(errs...)
}

// list returns the TXIDs of the local L0 files in order.
func (s *localStore) list() ([]ltx.TXID, error) {
	files := s.files()
	out := make([]ltx.TXID, len(files))
	for i, f := range files {
		out[i] = f.TXID
	}
	return out, nil
}

// files returns the local L0 files in TXID order.
func (s *localStore) files() []localFile {
	s.mu.Lock()
	out := make([]localFile, 0, len(s.sizes))
	for t, n := range s.sizes {
		out = append(out, localFile{t, n, s.images[t]})
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].TXID < out[j].TXID })
	return out
}

// imageBytes is the total size of the local full images.
func (s *localStore) imageBytes() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n int64
	for t := range s.images {
		n += s.sizes[t]
	}
	return n
}

// size is the total size of the local L0 files in bytes, full images
// left out.
func (s *localStore) size() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bytes
}

// planEviction decides which of the local L0 files (in TXID order) to
// drop so that what is left totals at most limit bytes: the oldest first,
// as those are the ones only the replicas furthest behind still need (or a
// replica's compaction, which then reads them from its store). The newest
// file is always kept: it is the one every replica uploads next. Full
// images do not count (localFile); one goes only with the older files
// when the files after it alone pass the limit. It returns the TXID
// through which files go, and their number and bytes.
func planEviction(files []localFile, limit int64) (upto ltx.TXID, n int, bytes int64) {
	var total int64
	for _, f := range files {
		if !f.Full {
			total += f.Size
		}
	}
	for i := 0; i < len(files)-1 && total > limit; i++ {
		if !files[i].Full {
			total -= files[i].Size
		}
		upto, n, bytes = files[i].TXID, n+1, bytes+files[i].Size
	}
	return upto, n, bytes
}

// shadowLimit is the bound on the local L0 files: the configured one, or
// by default the larger of the database's size and DefaultMaxShadowSize.
// Why the database's size: a replica that is further behind than that
// catches up more cheaply with one snapshot (at most the database's size)
// than by uploading the backlog file by file; the floor keeps a small
// database from losing its catch-up files to a short outage of a store.
func shadowLimit(configured, dbBytes int64) int64 {
	if configured > 0 {
		return configured
	}
	return max(DefaultMaxShadowSize, dbBytes)
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

// capLocalLocked drops the oldest local L0 files once they pass the shadow
// directory's bound (shadowLimit), tells the replicas that still needed
// them, and reports the directory's size. Called with d.mu held (the page
// table gives the database's size).
func (d *DB) capLocalLocked() {
	var dbBytes int64
	if d.table != nil {
		dbBytes = int64(d.table.commit()) * int64(d.pageSize)
	}
	limit := shadowLimit(d.opts.MaxShadowSize, dbBytes)
	// Called every step: the running total decides, so the index is copied
	// and sorted (files) only when there is something to drop.
	if d.local.size() > limit {
		if upto, n, bytes := planEviction(d.local.files(), limit); n > 0 {
			head := ltx.TXID(d.head.Load())
			for _, r := range d.replicas {
				r.noteDropped(upto, head, limit)
			}
			if err := d.local.remove(upto); err != nil {
				d.log.Warn("remove local L0 files", "error", err)
			}
			d.m.shadowDropped.WithLabelValues(d.metricsDB()).Add(float64(n))
			d.log.Debug("dropped the oldest local L0 files to bound the shadow directory",
				"through_txid", upto, "files", n, "bytes", bytes, "limit", limit)
		}
	}
	d.m.shadowBytes.WithLabelValues(d.metricsDB(), "l0").Set(float64(d.local.size()))
	d.m.shadowBytes.WithLabelValues(d.metricsDB(), "image").Set(float64(d.local.imageBytes()))
	var snaps int64
	d.snapMu.Lock()
	for _, j := range d.snapshots {
		snaps += j.md.Size
	}
	d.snapMu.Unlock()
	d.m.shadowBytes.WithLabelValues(d.metricsDB(), "snapshot").Set(float64(snaps))
}
