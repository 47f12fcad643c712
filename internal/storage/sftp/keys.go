package sftp

import (
	"context"
	"fmt"
	"io"
	"os"
	"path"

	pkgsftp "github.com/pkg/sftp"

	"github.com/understudy-db/understudy/internal/storage"
)

var _ storage.KeyWriter = (*Client)(nil)

// PutKey uploads r to a temp file in the private directory and renames it
// over key with posix-rename@openssh.com, which replaces the name in one
// step (plain SFTP rename refuses an existing name): a reader opens the old
// file or the new one.
func (c *Client) PutKey(ctx context.Context, key string, r io.Reader) error {
	final, err := c.keyPath(key)
	if err != nil {
		return err
	}
	if final == c.dir {
		return fmt.Errorf("sftp replica: key %q names the replica directory %s itself, not a file in it", key, c.where(""))
	}
	return c.do(ctx, func(s *pkgsftp.Client) error {
		tmpRoot := path.Join(c.dir, privateDir, tmpDir)
		for _, d := range []string{tmpRoot, path.Dir(final)} {
			if err := c.ensureDir(s, d); err != nil {
				return err
			}
		}
		tmp := path.Join(tmpRoot, path.Base(final)+"."+randomID()+".tmp")
		f, err := s.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL)
		if err != nil {
			return c.fail("create temp file", tmp, err)
		}
		renamed := false
		defer func() {
			if !renamed {
				_ = s.Remove(tmp)
			}
		}()
		_, err = io.Copy(f, storage.ContextReader(ctx, r))
		if err == nil {
			// 0644: a follower running as another user must read it.
			err = f.Chmod(0o644)
		}
		if err == nil {
			err = syncFile(f)
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return c.fail("write", tmp, err)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := s.PosixRename(tmp, final); err != nil {
			return c.fail("rename into place", final, err)
		}
		renamed = true
		return nil
	})
}
