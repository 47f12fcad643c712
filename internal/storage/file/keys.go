package file

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/understudy-db/understudy/internal/storage"
)

var _ storage.KeyReader = (*Client)(nil)

// keyPath maps a key to a path inside the replica directory, refusing keys
// that would leave it.
func (c *Client) keyPath(key string) (string, error) {
	clean := filepath.Clean(filepath.FromSlash(key))
	if filepath.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, ".."+string(filepath.Separator)) {
		return "", fmt.Errorf("file replica: key %q is outside the replica directory %s", key, c.dir)
	}
	return filepath.Join(c.dir, clean), nil
}

// ListKeys walks the directory the prefix names (prefix ends at a directory
// boundary, e.g. "generations/"), skipping temp files ("*.tmp"), which
// writers rename into place when complete.
func (c *Client) ListKeys(ctx context.Context, prefix string) ([]storage.KeyInfo, error) {
	root, err := c.keyPath(prefix)
	if err != nil {
		return nil, err
	}
	var out []storage.KeyInfo
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		if d.IsDir() || strings.HasSuffix(d.Name(), ".tmp") {
			return nil
		}
		st, err := d.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed while we walked
			}
			return err
		}
		rel, err := filepath.Rel(c.dir, p)
		if err != nil {
			return err
		}
		out = append(out, storage.KeyInfo{Key: filepath.ToSlash(rel), Size: st.Size(), ModTime: st.ModTime().UTC()})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("file replica: list %s: %w", root, err)
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
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("file replica: %s: %w", p, storage.ErrNotFound)
	} else if err != nil {
		return nil, fmt.Errorf("file replica: open %s: %w", p, err)
	}
	return f, nil
}

var _ storage.KeyWriter = (*Client)(nil)

// PutKey writes r to a temp file in the private directory, syncs it and
// renames it over key: rename replaces the name in one step, so a reader
// opens the old file or the new one, and a crash leaves one of them (and at
// worst a temp file, which listings skip).
func (c *Client) PutKey(ctx context.Context, key string, r io.Reader) (err error) {
	final, err := c.keyPath(key)
	if err != nil {
		return err
	}
	if final == c.dir {
		return fmt.Errorf("file replica: key %q names the replica directory %s itself, not a file in it", key, c.dir)
	}
	tmpRoot := filepath.Join(c.dir, privateDir, tmpDir)
	for _, d := range []string{tmpRoot, filepath.Dir(final)} {
		if err := c.ensureDir(d); err != nil {
			return err
		}
	}
	f, err := os.CreateTemp(tmpRoot, filepath.Base(final)+".*.tmp")
	if err != nil {
		return fmt.Errorf("file replica: create temp file in %s: %w (check that the directory is writable)", tmpRoot, err)
	}
	tmp := f.Name()
	defer func() {
		if f != nil {
			_ = f.Close()
		}
		if err != nil {
			_ = os.Remove(tmp)
		}
	}()
	// CreateTemp makes 0600; a follower running as another user must be
	// able to read it.
	if err = f.Chmod(0o644); err != nil {
		return fmt.Errorf("file replica: chmod temp file %s: %w", tmp, err)
	}
	if _, err = io.Copy(f, storage.ContextReader(ctx, r)); err != nil {
		return fmt.Errorf("file replica: write %s: %w", final, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("file replica: fsync %s: %w", tmp, err)
	}
	err = f.Close()
	f = nil
	if err != nil {
		return fmt.Errorf("file replica: close %s: %w", tmp, err)
	}
	if err = os.Rename(tmp, final); err != nil {
		return fmt.Errorf("file replica: rename %s to %s: %w (check that the directory is writable and on one filesystem)", tmp, final, err)
	}
	return syncDir(filepath.Dir(final))
}
