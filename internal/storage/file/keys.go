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
