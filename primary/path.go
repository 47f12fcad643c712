package primary

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/understudy-db/understudy/internal/dbid"
)

// resolvePath resolves the database path to the file it names, once, at
// Open: SQLite follows symbolic links and keeps "-wal" and "-shm" beside
// the target, so the shipper must read the WAL there (reading "-wal"
// beside a link shipped nothing after the first snapshot), lock the
// shadow directory there (a second daemon through another path to the
// same file must find the lock taken), and watch the target's directory.
func (d *DB) resolvePath() error {
	path := d.opts.Path
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			if target, lerr := os.Readlink(path); lerr == nil {
				return fmt.Errorf("database %s is a symbolic link to %s, which does not exist; fix the link or the path", path, target)
			}
		}
		// checkFile names the problem (missing, no permission...).
		_, cerr := checkFile(path)
		if cerr == nil {
			cerr = fmt.Errorf("database %s: resolve symbolic links: %w", path, err)
		}
		return cerr
	}
	if real, err = filepath.Abs(real); err != nil {
		return fmt.Errorf("database %s: %w", path, err)
	}
	d.realPath, d.walPath = real, real+"-wal"
	d.shadowDir = d.opts.ShadowDir
	if d.shadowDir == "" {
		d.shadowDir = dbid.ShadowDir(real)
	}
	if real != path {
		d.log.Info("the database path leads through a symbolic link; replicating the file it resolves to",
			"path", path, "real_path", real)
	}
	return nil
}

// errLinkMoved: a symbolic link on the database path now leads to another
// file than at Open. Following it silently would switch the replica's
// history to another file; going on would ship a file the application no
// longer writes. The daemon stops instead; a restart resolves the path
// again (and checks the replica's identity against the new file).
type errLinkMoved struct {
	path, was, now string
}

func (e *errLinkMoved) Error() string {
	return fmt.Sprintf("database %s now resolves to %s, not %s (symbolic link changed): understudy replicates the file the path resolved to at start "+
		"and will not switch files silently; restart it to replicate %s", e.path, e.now, e.was, e.now)
}

// checkLinkLocked stops the shipper (errLinkMoved, through stop) when the
// database path no longer resolves to the file it resolved to at Open. A
// path that does not resolve at the moment (the file is being replaced)
// is left to checkFile.
func (d *DB) checkLinkLocked() error {
	real, err := filepath.EvalSymlinks(d.opts.Path)
	if err != nil {
		return nil
	}
	if abs, err := filepath.Abs(real); err == nil {
		real = abs
	}
	if real == d.realPath {
		return nil
	}
	e := &errLinkMoved{path: d.opts.Path, was: d.realPath, now: real}
	d.stop(e)
	return e
}

// stop ends Run with err (the daemon exits non-zero) without halting the
// application's writes: for conditions that are not another writer.
func (d *DB) stop(err error) {
	d.stopOnce.Do(func() {
		d.stopErr.Store(&err)
		close(d.stopCh)
	})
}

// stoppedErr returns the error stop was given, or nil.
func (d *DB) stoppedErr() error {
	if p := d.stopErr.Load(); p != nil {
		return *p
	}
	return nil
}
