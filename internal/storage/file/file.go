// Package file is the replica store in a local (or NFS) directory, in
// Litestream 0.5's file layout:
//
//	<dir>/ltx/<level>/<minTXID %016x>-<maxTXID %016x>.ltx
//
// Files are created create-only: a temp file is written, given its metadata
// (user xattrs) and its mtime (the commit time), synced, and then hard-linked
// to its final name. link() fails when the name exists, so a TXID can be
// written once, and readers never see a partial file.
//
// Understudy's own files (temp files, sidecar metadata, probes) live under
// <dir>/.understudy/, which Litestream never reads: its restore reads only
// ltx/<level>/ names and mtimes.
package file

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/superfly/ltx"
	"golang.org/x/sys/unix"

	"github.com/understudy-db/understudy/internal/storage"
)

// Type is the value of Client.Type.
const Type = "file"

// Names of the directories inside a replica directory.
const (
	LTXDir     = "ltx"         // Litestream's level directories live below it
	privateDir = ".understudy" // ours; Litestream ignores it
	tmpDir     = "tmp"         // temp files before their link
	metaDir    = "meta"        // sidecar metadata where user xattrs are missing
)

// xattrPrefix prefixes each storage.Meta* field name in the user namespace.
const xattrPrefix = "user.understudy."

// Client is a replica store in one directory. It is safe for concurrent use
// by goroutines and by processes sharing the directory.
type Client struct {
	dir string

	// forceSidecar makes the client behave as on a filesystem without user
	// xattrs, so tests can cover the sidecar path on any machine.
	forceSidecar bool
}

var _ storage.Client = (*Client)(nil)

// New returns a client for the replica directory dir, which must be an
// absolute path. The directory is created on the first write.
func New(dir string) (*Client, error) {
	if dir == "" {
		return nil, errors.New("file replica: path is empty; set the replica's path to an absolute directory")
	}
	if !filepath.IsAbs(dir) {
		return nil, fmt.Errorf("file replica: path %q is not absolute; use an absolute directory", dir)
	}
	return &Client{dir: filepath.Clean(dir)}, nil
}

// Sub is a client of the directory rel below this client's (one database
// of a directory entry).
func (c *Client) Sub(rel string) storage.Client {
	return &Client{dir: filepath.Join(c.dir, filepath.FromSlash(rel)), forceSidecar: c.forceSidecar}
}

// Dir returns the replica directory.
func (c *Client) Dir() string { return c.dir }

// Type returns "file".
func (c *Client) Type() string { return Type }

// LevelDir is the directory of one level: <dir>/ltx/<level>.
func (c *Client) LevelDir(level int) string {
	return filepath.Join(c.dir, LTXDir, strconv.Itoa(level))
}

// Path is the path of one LTX file.
func (c *Client) Path(level int, minTXID, maxTXID ltx.TXID) string {
	return filepath.Join(c.LevelDir(level), storage.FormatFilename(minTXID, maxTXID))
}

// Create writes the file read from r create-only; see storage.Client.
func (c *Client) Create(ctx context.Context, level int, minTXID, maxTXID ltx.TXID, r io.Reader, md storage.Metadata) (storage.FileInfo, error) {
	if err := checkKey(level, minTXID, maxTXID); err != nil {
		return storage.FileInfo{}, err
	}
	if err := ctx.Err(); err != nil {
		return storage.FileInfo{}, err
	}
	final := c.Path(level, minTXID, maxTXID)
	if err := c.ensureDir(c.LevelDir(level)); err != nil {
		return storage.FileInfo{}, err
	}
	size, err := c.createExclusive(ctx, final, metaPath(c.dir, level, filepath.Base(final)), storage.ContextReader(ctx, r), md)
	if err != nil {
		return storage.FileInfo{}, err
	}
	return storage.CreatedInfo(level, minTXID, maxTXID, size, md), nil
}

// createExclusive writes r to a temp file with metadata and links it to
// final. sidecarBase is where sidecar metadata goes if xattrs are missing.
func (c *Client) createExclusive(ctx context.Context, final, sidecarBase string, r io.Reader, md storage.Metadata) (size int64, err error) {
	tmpRoot := filepath.Join(c.dir, privateDir, tmpDir)
	if err := c.ensureDir(tmpRoot); err != nil {
		return 0, err
	}
	f, err := os.CreateTemp(tmpRoot, filepath.Base(final)+".*.tmp")
	if err != nil {
		return 0, fmt.Errorf("file replica: create temp file in %s: %w (check that the directory is writable)", tmpRoot, err)
	}
	tmp := f.Name()
	sidecar := ""
	defer func() {
		if f != nil {
			_ = f.Close()
		}
		_ = os.Remove(tmp)
		if err != nil && sidecar != "" {
			_ = os.Remove(sidecar)
		}
	}()

	// CreateTemp makes 0600; a follower or Litestream running as another
	// user must be able to read the replica.
	if err = f.Chmod(0o644); err != nil {
		return 0, fmt.Errorf("file replica: chmod temp file %s: %w", tmp, err)
	}
	if size, err = io.Copy(f, r); err != nil {
		return 0, fmt.Errorf("file replica: write %s: %w", final, err)
	}
	st, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("file replica: stat temp file %s: %w", tmp, err)
	}
	fields := md.Fields()
	useXattr := !c.forceSidecar
	if useXattr {
		for _, name := range storage.AllMetaFields() {
			if _, ok := fields[name]; !ok {
				continue // an optional field not set
			}
			if err = unix.Fsetxattr(int(f.Fd()), xattrPrefix+name, []byte(fields[name]), 0); err != nil {
				break
			}
		}
		if errors.Is(err, unix.ENOTSUP) {
			useXattr, err = false, nil
		} else if err != nil {
			return 0, fmt.Errorf("file replica: set metadata xattrs on %s: %w", tmp, err)
		}
	}
	if !md.CommitTime.IsZero() {
		if err = os.Chtimes(tmp, md.CommitTime, md.CommitTime); err != nil {
			return 0, fmt.Errorf("file replica: set mtime of %s: %w", tmp, err)
		}
	}
	if err = f.Sync(); err != nil {
		return 0, fmt.Errorf("file replica: fsync %s: %w", tmp, err)
	}
	if err = f.Close(); err != nil {
		f = nil
		return 0, fmt.Errorf("file replica: close %s: %w", tmp, err)
	}
	f = nil
	if !useXattr {
		// The sidecar is keyed by the temp file's inode, which the final
		// name will share: a losing racer's sidecar never describes the
		// winner's file, and it is written before the link so that a reader
		// never sees the file without its metadata.
		sidecar = sidecarPath(sidecarBase, st)
		if err = writeSidecar(c, sidecar, fields, size); err != nil {
			return 0, err
		}
	}
	if err = ctx.Err(); err != nil {
		return 0, err
	}
	if err = os.Link(tmp, final); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return 0, fmt.Errorf("file replica: %s: %w", final, storage.ErrExists)
		}
		return 0, fmt.Errorf("file replica: link %s to %s: %w (check that the directory is writable and on one filesystem)", tmp, final, err)
	}
	if err = syncDir(filepath.Dir(final)); err != nil {
		return 0, err
	}
	return size, nil
}

// Open opens one file; see storage.Client.
func (c *Client) Open(ctx context.Context, level int, minTXID, maxTXID ltx.TXID, offset, size int64) (*storage.Object, error) {
	if err := checkKey(level, minTXID, maxTXID); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if offset < 0 {
		return nil, fmt.Errorf("file replica: open %s: negative offset %d", c.Path(level, minTXID, maxTXID), offset)
	}
	path := c.Path(level, minTXID, maxTXID)
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("file replica: %s: %w", path, storage.ErrNotFound)
	} else if err != nil {
		return nil, fmt.Errorf("file replica: open %s: %w", path, err)
	}
	st, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("file replica: stat %s: %w", path, err)
	}
	md, err := c.readMetadata(f, metaPath(c.dir, level, filepath.Base(path)), st)
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("file replica: read metadata of %s: %w", path, err)
	}
	info := storage.FileInfo{
		Level: level, MinTXID: minTXID, MaxTXID: maxTXID, Size: st.Size(),
		CreatedAt: st.ModTime().UTC(), Metadata: md,
	}
	if md != nil && !md.CommitTime.IsZero() {
		info.CreatedAt = md.CommitTime
	}
	n := st.Size() - offset
	if size >= 0 && size < n {
		n = size
	}
	if n < 0 {
		n = 0
	}
	return &storage.Object{
		ReadCloser: &sectionReadCloser{SectionReader: io.NewSectionReader(f, offset, n), f: f},
		Info:       info,
	}, nil
}

// List lists one level from seek; see storage.Client. The directory is read
// at once: a level holds at most a few thousand files between compactions.
func (c *Client) List(ctx context.Context, level int, seek ltx.TXID) (storage.Iterator, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if level < 0 {
		return nil, fmt.Errorf("file replica: list: negative level %d", level)
	}
	dir := c.LevelDir(level)
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return storage.NewSliceIterator(nil), nil
	} else if err != nil {
		return nil, fmt.Errorf("file replica: list %s: %w (check that the directory is readable)", dir, err)
	}
	infos := make([]storage.FileInfo, 0, len(entries))
	for _, e := range entries {
		minTXID, maxTXID, ok := storage.ParseFilename(e.Name())
		if !ok || minTXID < seek || !e.Type().IsRegular() {
			continue
		}
		fi, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted since ReadDir
		} else if err != nil {
			return nil, fmt.Errorf("file replica: stat %s: %w", filepath.Join(dir, e.Name()), err)
		}
		infos = append(infos, storage.FileInfo{
			Level: level, MinTXID: minTXID, MaxTXID: maxTXID,
			Size: fi.Size(), CreatedAt: fi.ModTime().UTC(),
		})
	}
	storage.SortFileInfos(infos)
	return storage.NewSliceIterator(infos), nil
}

// Delete removes files and their sidecars; missing ones are skipped.
func (c *Client) Delete(ctx context.Context, files []storage.FileInfo) error {
	dirs := map[string]bool{}
	for _, fi := range files {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := checkKey(fi.Level, fi.MinTXID, fi.MaxTXID); err != nil {
			return err
		}
		path := c.Path(fi.Level, fi.MinTXID, fi.MaxTXID)
		if err := removeSidecar(metaPath(c.dir, fi.Level, filepath.Base(path)), path); err != nil {
			return err
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("file replica: delete %s: %w", path, err)
		}
		dirs[filepath.Dir(path)] = true
	}
	for dir := range dirs {
		if err := syncDir(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// ProbeCreateOnly creates a probe file twice under <dir>/.understudy and
// removes it; see storage.Client.
func (c *Client) ProbeCreateOnly(ctx context.Context) error {
	var b [8]byte
	_, _ = rand.Read(b[:])
	probeDir := filepath.Join(c.dir, privateDir)
	if err := c.ensureDir(probeDir); err != nil {
		return fmt.Errorf("file replica: create-only probe: %w", err)
	}
	name := "probe-" + hex.EncodeToString(b[:])
	final := filepath.Join(probeDir, name)
	sidecarBase := filepath.Join(probeDir, metaDir, name)
	defer func() {
		_ = removeSidecar(sidecarBase, final)
		_ = os.Remove(final)
	}()
	md := storage.Metadata{Node: "probe", CommitTime: time.Now()}
	if _, err := c.createExclusive(ctx, final, sidecarBase, &probeReader{}, md); err != nil {
		return fmt.Errorf("file replica: create-only probe in %s could not write: %w", c.dir, err)
	}
	_, err := c.createExclusive(ctx, final, sidecarBase, &probeReader{}, md)
	switch {
	case errors.Is(err, storage.ErrExists):
		return nil
	case err == nil:
		return storage.NoCreateOnly(fmt.Sprintf("file replica: create-only probe: a second create of %s succeeded; this filesystem does not honour exclusive link(), so two writers could overwrite each other's history", final))
	default:
		return fmt.Errorf("file replica: create-only probe: second create of %s: %w", final, err)
	}
}

// checkKey is storage.CheckKey with this store's prefix.
func checkKey(level int, minTXID, maxTXID ltx.TXID) error {
	if err := storage.CheckKey(level, minTXID, maxTXID); err != nil {
		return fmt.Errorf("file replica: %w", err)
	}
	return nil
}

// ensureDir creates dir (and parents) if missing, fsyncing each parent whose
// entries changed so that the new directory survives a crash.
func (c *Client) ensureDir(dir string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	// Find the top-most missing ancestor, create the chain, sync parents.
	var missing []string
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil || d == filepath.Dir(d) {
			break
		}
		missing = append(missing, d)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("file replica: create directory %s: %w (check that the replica path is writable)", dir, err)
	}
	for _, d := range missing {
		if err := syncDir(filepath.Dir(d)); err != nil {
			return err
		}
	}
	return nil
}

// syncDir fsyncs a directory so that a link or remove in it is durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("file replica: open directory %s for fsync: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("file replica: fsync directory %s: %w", dir, err)
	}
	return nil
}

// sectionReadCloser reads a section of an open file and closes the file.
type sectionReadCloser struct {
	*io.SectionReader
	f *os.File
}

func (s *sectionReadCloser) Close() error { return s.f.Close() }

// probeReader is the probe's (empty) content.
type probeReader struct{}

func (*probeReader) Read([]byte) (int, error) { return 0, io.EOF }
