package restore

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// checkOutput refuses an output path that exists, or that has a WAL or SHM
// file beside it (SQLite would apply a stale WAL to the restored file).
func checkOutput(out string) error {
	if out == "" {
		return errors.New("restore: no output path given")
	}
	for _, p := range []string{out, out + "-wal", out + "-shm", out + "-journal"} {
		if _, err := os.Lstat(p); err == nil {
			if p == out {
				return fmt.Errorf("%s: %w; restore never overwrites a database: choose another path or remove it", p, ErrOutputExists)
			}
			return fmt.Errorf("%s: %w: a stale SQLite %s file is beside the output path; remove it first", p, ErrOutputExists, p[strings.LastIndex(p, "-")+1:])
		} else if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("check output %s: %w", p, err)
		}
	}
	return nil
}

// publish links the finished temp file to out (link fails if out exists, so
// a file created meanwhile is never replaced), removes the temp name and
// syncs the directory.
func publish(tmpPath, out string) error {
	if err := os.Link(tmpPath, out); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s: %w: it appeared during the restore; nothing was overwritten", out, ErrOutputExists)
		}
		return fmt.Errorf("link restored file to %s: %w", out, err)
	}
	if err := os.Remove(tmpPath); err != nil {
		return fmt.Errorf("remove temp file %s: %w", tmpPath, err)
	}
	dir, err := os.Open(filepath.Dir(out))
	if err != nil {
		return fmt.Errorf("sync directory of %s: %w", out, err)
	}
	defer dir.Close()
	if err := dir.Sync(); err != nil {
		return fmt.Errorf("sync directory of %s: %w", out, err)
	}
	return nil
}

// CreateTemp creates a new file in dir, named by pattern with its last "*"
// replaced by a random string, with mode less the process's umask (os.CreateTemp
// always uses 0600, so a restored database was unreadable to an app running as
// another user even where the umask allows it). The caller removes it.
func CreateTemp(dir, pattern string, mode fs.FileMode) (*os.File, error) {
	prefix, suffix := pattern, ""
	if i := strings.LastIndex(pattern, "*"); i >= 0 {
		prefix, suffix = pattern[:i], pattern[i+1:]
	}
	for try := 0; ; try++ {
		var b [8]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, err
		}
		name := filepath.Join(dir, prefix+hex.EncodeToString(b[:])+suffix)
		f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, mode.Perm())
		if errors.Is(err, fs.ErrExist) && try < 100 {
			continue
		}
		return f, err
	}
}
