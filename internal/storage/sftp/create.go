package sftp

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"time"

	pkgsftp "github.com/pkg/sftp"
	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/internal/storage"
)

// tailSize is how many trailing bytes of an object its sidecar digest covers.
const tailSize = 64

// hardlinkExt is the OpenSSH extension create-only rests on.
const hardlinkExt = "hardlink@openssh.com"

// sidecar is the JSON form of a sidecar file.
type sidecar struct {
	Size   int64             `json:"size"`
	Fields map[string]string `json:"fields"`
}

// Create writes the file read from r create-only; see storage.Client.
func (c *Client) Create(ctx context.Context, level int, minTXID, maxTXID ltx.TXID, r io.Reader, md storage.Metadata) (storage.FileInfo, error) {
	if err := checkKey(level, minTXID, maxTXID); err != nil {
		return storage.FileInfo{}, err
	}
	var size int64
	err := c.do(ctx, func(s *pkgsftp.Client) error {
		if err := c.ensureDir(s, c.LevelDir(level)); err != nil {
			return err
		}
		var err error
		size, err = c.createExclusive(ctx, s, c.Path(level, minTXID, maxTXID), c.MetaDir(level), storage.ContextReader(ctx, r), md)
		return err
	})
	if err != nil {
		return storage.FileInfo{}, err
	}
	return storage.CreatedInfo(level, minTXID, maxTXID, size, md), nil
}

// createExclusive uploads r to a temp file, writes its sidecar into
// metaDir, and links the temp file to final; see the package doc.
func (c *Client) createExclusive(ctx context.Context, s *pkgsftp.Client, final, metaDir string, r io.Reader, md storage.Metadata) (size int64, err error) {
	tmpRoot := path.Join(c.dir, privateDir, tmpDir)
	for _, d := range []string{tmpRoot, metaDir} {
		if err := c.ensureDir(s, d); err != nil {
			return 0, err
		}
	}
	name := path.Base(final)
	tmp := path.Join(tmpRoot, name+"."+randomID()+".tmp")
	f, err := s.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL)
	if err != nil {
		return 0, c.fail("create temp file", tmp, err)
	}
	defer func() {
		if f != nil {
			_ = f.Close()
		}
		// After the link the final name holds the data; before it, the
		// temp file is all there is of a failed upload.
		_ = s.Remove(tmp)
	}()
	tail := &tailWriter{}
	if size, err = io.Copy(f, io.TeeReader(r, tail)); err != nil {
		return 0, c.fail("write", final, err)
	}
	data, err := json.Marshal(sidecar{Size: size, Fields: md.Fields()})
	if err != nil {
		return 0, fmt.Errorf("sftp replica: encode metadata of %s: %w", c.where(final), err)
	}
	digest := tail.digest(size)
	slot := sidecarPath(metaDir, name, digest)

	// The temp file's last steps and the sidecar are independent until the
	// link, which waits for both: side by side they cost half the round
	// trips.
	finished := make(chan error, 1)
	go func(f *pkgsftp.File) { finished <- c.finishTemp(s, f, tmp, md) }(f)
	f = nil // finishTemp closes it
	placed, err := c.placeSidecar(ctx, s, slot, final, tmpRoot, data)
	if ferr := <-finished; err == nil {
		err = ferr
	}
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		if placed {
			_ = s.Remove(slot)
		}
		return 0, err
	}
	if err = s.Link(tmp, final); err != nil {
		if placed {
			c.dropLosingSidecar(s, final, slot, digest)
		}
		return 0, c.linkError(s, tmp, final, err)
	}
	if testHookLinked != nil {
		testHookLinked(final)
	}
	return size, nil
}

// finishTemp gives the uploaded temp file its mode and mtime, syncs and
// closes it (closed in any case).
func (c *Client) finishTemp(s *pkgsftp.Client, f *pkgsftp.File, tmp string, md storage.Metadata) (err error) {
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = c.fail("close", tmp, cerr)
		}
	}()
	// 0644: a follower or Litestream running as another user on the server
	// must be able to read the replica.
	if err := f.Chmod(0o644); err != nil {
		return c.fail("chmod temp file", tmp, err)
	}
	if !md.CommitTime.IsZero() {
		if err := s.Chtimes(tmp, md.CommitTime, md.CommitTime); err != nil {
			return c.fail("set mtime of", tmp, err)
		}
	}
	if err := syncFile(f); err != nil {
		return c.fail("fsync", tmp, err)
	}
	return nil
}

// testHookLinked, when set by a test, runs the moment a file has become
// visible under its final name.
var testHookLinked func(final string)

// linkError explains a failed link of tmp to final. SFTP reports link()'s
// EEXIST as a generic failure, so an existing final name is what tells it
// apart from other failures.
func (c *Client) linkError(s *pkgsftp.Client, tmp, final string, err error) error {
	if ok, _ := exists(s, final); ok {
		return fmt.Errorf("sftp replica: %s: %w", c.where(final), storage.ErrExists)
	}
	var se *pkgsftp.StatusError
	if errors.As(err, &se) && se.FxCode() == pkgsftp.ErrSSHFxOpUnsupported {
		return c.noHardlink()
	}
	return c.fail("link "+tmp+" to", final, err)
}

// placeSidecar writes data to slot, create-only, and says whether it did. A
// slot that exists already is one for the same bytes (size and tail): left
// as it is when it says the same, and else replaced unless final exists (the
// key is taken, and the slot may be the owner's).
func (c *Client) placeSidecar(ctx context.Context, s *pkgsftp.Client, slot, final, tmpRoot string, data []byte) (bool, error) {
	f, err := s.OpenFile(slot, os.O_WRONLY|os.O_CREATE|os.O_EXCL)
	if err == nil {
		if err = writeAll(f, data); err != nil {
			_ = s.Remove(slot)
			return false, c.fail("write sidecar", slot, err)
		}
		return true, nil
	}
	if ok, serr := exists(s, slot); serr != nil || !ok {
		return false, c.fail("create sidecar", slot, err)
	}
	if ok, err := exists(s, final); err != nil {
		return false, c.fail("stat", final, err)
	} else if ok {
		return false, fmt.Errorf("sftp replica: %s: %w", c.where(final), storage.ErrExists)
	}
	if old, err := readSmall(s, slot); err == nil && bytes.Equal(old, data) {
		return false, nil // our own earlier attempt at these bytes
	}
	// A stale sidecar of another writer's attempt at the same bytes (or a
	// torn one): replace it in one step, so no reader sees it half written.
	tmp := path.Join(tmpRoot, path.Base(slot)+"."+randomID()+".tmp")
	tf, err := s.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL)
	if err != nil {
		return false, c.fail("create temp sidecar", tmp, err)
	}
	defer s.Remove(tmp)
	if err := writeAll(tf, data); err != nil {
		return false, c.fail("write temp sidecar", tmp, err)
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}
	if err := s.PosixRename(tmp, slot); err != nil {
		return false, c.fail("replace sidecar", slot, err)
	}
	return true, nil
}

// dropLosingSidecar removes the sidecar a writer placed before it lost the
// link, unless the winner's file has the same digest (the same bytes), whose
// sidecar it may be.
func (c *Client) dropLosingSidecar(s *pkgsftp.Client, final, slot, digest string) {
	if f, err := s.Open(final); err == nil {
		head, derr := readHead(f)
		_ = f.Close()
		if derr == nil && head.digest == digest {
			return
		}
	}
	_ = s.Remove(slot)
}

// ProbeCreateOnly creates a probe file twice under <path>/.understudy and
// removes it; see storage.Client.
func (c *Client) ProbeCreateOnly(ctx context.Context) error {
	probeDir := path.Join(c.dir, privateDir)
	metaProbe := path.Join(probeDir, metaDir, "probe")
	final := path.Join(probeDir, "probe-"+randomID())
	return c.do(ctx, func(s *pkgsftp.Client) error {
		if _, ok := s.HasExtension(hardlinkExt); !ok {
			return c.noHardlink()
		}
		defer func() {
			_ = s.Remove(final)
			if slots, err := s.ReadDir(metaProbe); err == nil {
				for _, fi := range slots {
					if strings.HasPrefix(fi.Name(), path.Base(final)+".") {
						_ = s.Remove(path.Join(metaProbe, fi.Name()))
					}
				}
			}
		}()
		md := storage.Metadata{Node: "probe", CommitTime: time.Now()}
		if _, err := c.createExclusive(ctx, s, final, metaProbe, strings.NewReader(""), md); err != nil {
			return fmt.Errorf("sftp replica: create-only probe in %s could not write: %w", c.where(""), err)
		}
		_, err := c.createExclusive(ctx, s, final, metaProbe, strings.NewReader(""), md)
		switch {
		case errors.Is(err, storage.ErrExists):
			return nil
		case err == nil:
			return storage.NoCreateOnly(fmt.Sprintf("sftp replica: create-only probe: a second create of %s succeeded; this server's hard links do not refuse an existing name, so two writers could overwrite each other's history", c.where(final)))
		default:
			return fmt.Errorf("sftp replica: create-only probe: second create of %s: %w", c.where(final), err)
		}
	})
}

// noHardlink is the error for a server without hardlink@openssh.com: it
// refuses the one create-only write SFTP has.
func (c *Client) noHardlink() error {
	return &storage.ConditionError{Condition: storage.ConditionRefused, Msg: fmt.Sprintf(
		"sftp replica: the server %s does not offer %s, so a file cannot be created only if its name is free, and two writers could overwrite each other's history; use an OpenSSH server (it has the extension since 5.7)",
		c.addr, hardlinkExt)}
}

// sidecarPath is the sidecar of name's content with the given digest.
func sidecarPath(metaDir, name, digest string) string {
	return path.Join(metaDir, name+"."+digest+".json")
}

// tailWriter keeps the last tailSize bytes written to it.
type tailWriter struct {
	buf []byte
}

func (w *tailWriter) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	if len(w.buf) > tailSize {
		w.buf = append(w.buf[:0], w.buf[len(w.buf)-tailSize:]...)
	}
	return len(p), nil
}

func (w *tailWriter) digest(size int64) string { return digestOf(size, w.buf) }

// digestOf is the sidecar digest of content of this size ending in tail.
func digestOf(size int64, tail []byte) string {
	h := sha256.New()
	_ = binary.Write(h, binary.BigEndian, size)
	h.Write(tail)
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// smallObject is the size up to which an object is read whole by its
// first read (L0 files mostly are): one round trip gives its size, its
// digest and its content.
const smallObject = 64 << 10

// head is what the first reads of an object tell.
type head struct {
	size   int64
	digest string
	mtime  time.Time
	whole  []byte // the content, for an object of at most smallObject bytes
}

// readHead stats an open file and, at the same time, reads its first
// smallObject bytes: the whole file when it is that small; a larger one's
// tail takes a second read.
func readHead(f *pkgsftp.File) (head, error) {
	type stat struct {
		st  os.FileInfo
		err error
	}
	stc := make(chan stat, 1)
	go func() {
		st, err := f.Stat()
		stc <- stat{st, err}
	}()
	buf := make([]byte, smallObject+1)
	n, err := f.ReadAt(buf, 0)
	sr := <-stc
	if err != nil && !errors.Is(err, io.EOF) {
		return head{}, err
	}
	st, err := sr.st, sr.err
	if err != nil {
		return head{}, err
	}
	h := head{size: st.Size(), mtime: st.ModTime()}
	if n <= smallObject && int64(n) == st.Size() {
		h.whole = buf[:n]
		h.digest = digestOf(h.size, h.whole[max(n-tailSize, 0):])
		return h, nil
	}
	t := min(h.size, tailSize)
	tail := make([]byte, t)
	if _, err := f.ReadAt(tail, h.size-t); err != nil && !errors.Is(err, io.EOF) {
		return head{}, err
	}
	h.digest = digestOf(h.size, tail)
	return h, nil
}

// writeAll writes data to f, syncs and closes it.
func writeAll(f *pkgsftp.File, data []byte) error {
	_, err := f.Write(data)
	if err == nil {
		err = syncFile(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// readSmall reads a small file (a sidecar): one read when it fits 4 KiB;
// the close is not waited for.
func readSmall(s *pkgsftp.Client, p string) ([]byte, error) {
	f, err := s.Open(p)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, 4<<10)
	n, err := f.ReadAt(buf, 0)
	switch {
	case errors.Is(err, io.EOF):
		go f.Close()
		return buf[:n], nil
	case err != nil:
		go f.Close()
		return nil, err
	}
	defer f.Close()
	rest, err := io.ReadAll(io.NewSectionReader(f, int64(n), 1<<40))
	return append(buf[:n], rest...), err
}

// syncFile asks the server to fsync f; a server without fsync@openssh.com
// leaves it to its filesystem, which is what it offers.
func syncFile(f *pkgsftp.File) error {
	err := f.Sync()
	var se *pkgsftp.StatusError
	if errors.As(err, &se) && se.FxCode() == pkgsftp.ErrSSHFxOpUnsupported {
		return nil
	}
	return err
}

// exists reports whether p exists on the server.
func exists(s *pkgsftp.Client, p string) (bool, error) {
	_, err := s.Lstat(p)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, os.ErrNotExist):
		return false, nil
	}
	return false, err
}

// fail wraps an SFTP error of op on p with the location.
func (c *Client) fail(op, p string, err error) error {
	if errors.Is(err, os.ErrPermission) {
		return fmt.Errorf("sftp replica: %s %s: %w (check that user %s may write the replica's directory)", op, c.where(p), err, c.user)
	}
	return fmt.Errorf("sftp replica: %s %s: %w", op, c.where(p), err)
}

// checkKey is storage.CheckKey with this store's prefix.
func checkKey(level int, minTXID, maxTXID ltx.TXID) error {
	if err := storage.CheckKey(level, minTXID, maxTXID); err != nil {
		return fmt.Errorf("sftp replica: %w", err)
	}
	return nil
}

// randomID names temp files apart.
func randomID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
