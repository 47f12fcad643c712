package sftp

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strings"
	"sync"

	pkgsftp "github.com/pkg/sftp"
	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/internal/storage"
)

// maxReadBuffer bounds the read-ahead of an open object: one buffered read
// of up to this size goes out as pipelined SFTP requests.
const maxReadBuffer = 1 << 20

// Open opens one file; see storage.Client.
func (c *Client) Open(ctx context.Context, level int, minTXID, maxTXID ltx.TXID, offset, size int64) (*storage.Object, error) {
	if err := checkKey(level, minTXID, maxTXID); err != nil {
		return nil, err
	}
	p := c.Path(level, minTXID, maxTXID)
	if offset < 0 {
		return nil, fmt.Errorf("sftp replica: open %s: negative offset %d", c.where(p), offset)
	}
	var obj *storage.Object
	err := c.do(ctx, func(s *pkgsftp.Client) error {
		f, err := s.Open(p)
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("sftp replica: %s: %w", c.where(p), storage.ErrNotFound)
		} else if err != nil {
			return c.fail("open", p, err)
		}
		h, err := readHead(f)
		if err != nil {
			_ = f.Close()
			return c.fail("read", p, err)
		}
		if h.whole != nil {
			// All of it is read: the handle is not needed, and its close
			// need not be waited for.
			go f.Close()
		}
		md, err := c.readSidecar(s, sidecarPath(c.MetaDir(level), path.Base(p), h.digest), h.size)
		if err != nil {
			if h.whole == nil {
				_ = f.Close()
			}
			return fmt.Errorf("sftp replica: read metadata of %s: %w", c.where(p), err)
		}
		info := storage.FileInfo{
			Level: level, MinTXID: minTXID, MaxTXID: maxTXID, Size: h.size,
			CreatedAt: h.mtime.UTC(), Metadata: md,
		}
		if md != nil && !md.CommitTime.IsZero() {
			info.CreatedAt = md.CommitTime
		}
		n := max(min(h.size-offset, maxSize(size, h.size)), 0)
		obj = &storage.Object{Info: info}
		if h.whole != nil {
			obj.ReadCloser = io.NopCloser(bytes.NewReader(h.whole[min(offset, h.size):][:n]))
			return nil
		}
		section := io.NewSectionReader(f, offset, n)
		obj.ReadCloser = &fileReader{Reader: bufio.NewReaderSize(section, int(max(min(n, maxReadBuffer), 16))), f: f}
		return nil
	})
	return obj, err
}

// maxSize is size, or the whole file for a negative size.
func maxSize(size, whole int64) int64 {
	if size < 0 {
		return whole
	}
	return size
}

// readSidecar reads the metadata at slot; none (a file another tool wrote,
// or a sidecar of other content) is nil.
func (c *Client) readSidecar(s *pkgsftp.Client, slot string, size int64) (*storage.Metadata, error) {
	data, err := readSmall(s, slot)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("read sidecar %s: %w", c.where(slot), err)
	}
	var sc sidecar
	if err := json.Unmarshal(data, &sc); err != nil {
		return nil, fmt.Errorf("decode sidecar %s: %w", c.where(slot), err)
	}
	if sc.Size != size {
		return nil, nil
	}
	return storage.MetadataFromFields(func(k string) (string, bool) { v, ok := sc.Fields[k]; return v, ok })
}

// fileReader reads an open remote file and closes it.
type fileReader struct {
	io.Reader
	f *pkgsftp.File
}

func (r *fileReader) Close() error { return r.f.Close() }

// List lists one level from seek; see storage.Client. The directory is read
// at once, as the file store does: a level holds at most a few thousand
// files between compactions.
func (c *Client) List(ctx context.Context, level int, seek ltx.TXID) (storage.Iterator, error) {
	if level < 0 {
		return nil, fmt.Errorf("sftp replica: list: negative level %d", level)
	}
	dir := c.LevelDir(level)
	var infos []storage.FileInfo
	err := c.do(ctx, func(s *pkgsftp.Client) error {
		entries, err := s.ReadDir(dir)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		} else if err != nil {
			return c.fail("list", dir, err)
		}
		for _, e := range entries {
			minTXID, maxTXID, ok := storage.ParseFilename(e.Name())
			if !ok || minTXID < seek || !e.Mode().IsRegular() {
				continue
			}
			infos = append(infos, storage.FileInfo{
				Level: level, MinTXID: minTXID, MaxTXID: maxTXID,
				Size: e.Size(), CreatedAt: e.ModTime().UTC(),
			})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	storage.SortFileInfos(infos)
	return storage.NewSliceIterator(infos), nil
}

// Delete removes files and their sidecars (every sidecar of the name,
// including ones a losing or crashed writer left); missing ones are skipped.
func (c *Client) Delete(ctx context.Context, files []storage.FileInfo) error {
	for _, fi := range files {
		if err := checkKey(fi.Level, fi.MinTXID, fi.MaxTXID); err != nil {
			return err
		}
	}
	if len(files) == 0 {
		return ctx.Err()
	}
	return c.do(ctx, func(s *pkgsftp.Client) error {
		slots := map[int]map[string][]string{} // level -> name -> sidecars
		for _, fi := range files {
			if slots[fi.Level] == nil {
				byName, err := c.sidecarsOf(s, fi.Level)
				if err != nil {
					return err
				}
				slots[fi.Level] = byName
			}
		}
		// Each remove is a round trip and retention deletes hundreds of
		// files at once: deleteWorkers of them are in flight together.
		var (
			wg    sync.WaitGroup
			mu    sync.Mutex
			first error
		)
		sem := make(chan struct{}, deleteWorkers)
		for _, fi := range files {
			mu.Lock()
			failed := first != nil
			mu.Unlock()
			if failed || ctx.Err() != nil {
				break
			}
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer func() { <-sem; wg.Done() }()
				if err := c.deleteOne(s, fi, slots[fi.Level]); err != nil {
					mu.Lock()
					first = cmp.Or(first, err)
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		return cmp.Or(first, ctx.Err())
	})
}

// deleteWorkers is how many files Delete removes at the same time.
const deleteWorkers = 8

// deleteOne removes a file, then its sidecars (a sidecar without its file
// is never read; the other way round a file would lose its metadata).
func (c *Client) deleteOne(s *pkgsftp.Client, fi storage.FileInfo, slots map[string][]string) error {
	p := c.Path(fi.Level, fi.MinTXID, fi.MaxTXID)
	if err := s.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return c.fail("delete", p, err)
	}
	for _, sc := range slots[path.Base(p)] {
		if err := s.Remove(sc); err != nil && !errors.Is(err, os.ErrNotExist) {
			return c.fail("delete sidecar", sc, err)
		}
	}
	return nil
}

// sidecarsOf lists a level's sidecars by the file name they describe.
func (c *Client) sidecarsOf(s *pkgsftp.Client, level int) (map[string][]string, error) {
	dir := c.MetaDir(level)
	entries, err := s.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return map[string][]string{}, nil
	} else if err != nil {
		return nil, c.fail("list", dir, err)
	}
	out := map[string][]string{}
	for _, e := range entries {
		// <name>.<digest>.json
		base, ok := strings.CutSuffix(e.Name(), ".json")
		if i := strings.LastIndexByte(base, '.'); ok && i > 0 {
			out[base[:i]] = append(out[base[:i]], path.Join(dir, e.Name()))
		}
	}
	return out, nil
}

var _ storage.KeyReader = (*Client)(nil)

// ListKeys walks the directory the prefix names (e.g. "generations/"),
// skipping temp files ("*.tmp"): Litestream 0.3's trees on an SFTP server.
func (c *Client) ListKeys(ctx context.Context, prefix string) ([]storage.KeyInfo, error) {
	root, err := c.keyPath(prefix)
	if err != nil {
		return nil, err
	}
	var out []storage.KeyInfo
	err = c.do(ctx, func(s *pkgsftp.Client) error {
		w := s.Walk(root)
		for w.Step() {
			if err := w.Err(); err != nil {
				if errors.Is(err, os.ErrNotExist) {
					continue
				}
				return c.fail("list", w.Path(), err)
			}
			st := w.Stat()
			if st.IsDir() || strings.HasSuffix(st.Name(), ".tmp") {
				continue
			}
			rel := strings.TrimPrefix(strings.TrimPrefix(w.Path(), c.dir), "/")
			out = append(out, storage.KeyInfo{Key: rel, Size: st.Size(), ModTime: st.ModTime().UTC()})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	storage.SortKeyInfos(out)
	return out, nil
}

// OpenKey opens the file at key.
func (c *Client) OpenKey(ctx context.Context, key string) (io.ReadCloser, error) {
	p, err := c.keyPath(key)
	if err != nil {
		return nil, err
	}
	var rc io.ReadCloser
	err = c.do(ctx, func(s *pkgsftp.Client) error {
		f, err := s.Open(p)
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("sftp replica: %s: %w", c.where(p), storage.ErrNotFound)
		} else if err != nil {
			return c.fail("open", p, err)
		}
		rc = &fileReader{Reader: bufio.NewReaderSize(f, maxReadBuffer/4), f: f}
		return nil
	})
	return rc, err
}

// keyPath maps a key to a path inside the replica directory, refusing keys
// that would leave it.
func (c *Client) keyPath(key string) (string, error) {
	if slices.Contains(strings.Split(key, "/"), "..") {
		return "", fmt.Errorf("sftp replica: key %q is outside the replica directory %s", key, c.where(""))
	}
	return path.Join(c.dir, path.Clean("/"+key)), nil
}
