package follower

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/superfly/ltx"
	"github.com/understudy-db/understudy/internal/restore"
)

// Position is where a database is in the replica's history: the TXID of the
// last change set applied and the database checksum (dbsum) after it.
type Position struct {
	TXID     ltx.TXID     `json:"txid"`
	Checksum ltx.Checksum `json:"checksum"`
}

func (p Position) String() string { return fmt.Sprintf("TXID %s (checksum %s)", p.TXID, p.Checksum) }

// PositionSuffix names the sidecar file that records a follower's position
// beside its database. It is not kept inside the database: that would change
// the database checksum that proves the follower identical to the primary.
const PositionSuffix = "-understudy-pos"

// PositionPath is the position sidecar of the database at dbPath.
func PositionPath(dbPath string) string { return dbPath + PositionSuffix }

// positionRecord is the sidecar's content. It is written before each commit
// and names both the position the commit leads to and the one before it, so
// that a crash between the commit and the next write of the sidecar (or a
// commit lost with the machine) leaves a database that matches one of the
// two: the follower resumes from whichever its checksum proves.
type positionRecord struct {
	Position
	Prev      *Position `json:"prev,omitempty"`
	PageSize  uint32    `json:"page_size"`
	UpdatedAt time.Time `json:"updated_at"`
	// Rebuild: the database is at no position of the history (a deposed
	// primary's, saved aside, SetRebuild); the follower rebuilds it in
	// place from the store's newest state before it follows.
	Rebuild bool `json:"rebuild,omitempty"`
}

// readPosition reads the sidecar. A missing sidecar gives an error wrapping
// fs.ErrNotExist.
func readPosition(path string) (positionRecord, error) {
	var rec positionRecord
	b, err := os.ReadFile(path)
	if err != nil {
		return rec, fmt.Errorf("read follower position %s: %w", path, err)
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		return rec, fmt.Errorf("read follower position %s: %w (the file is damaged)", path, err)
	}
	if (rec.TXID == 0 && !rec.Rebuild) || rec.PageSize == 0 {
		return rec, fmt.Errorf("read follower position %s: incomplete record", path)
	}
	return rec, nil
}

// writePosition replaces the sidecar atomically and durably: temp file,
// fsync, rename, fsync of the directory.
func writePosition(path string, rec positionRecord) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	return writeFileAtomic(path, b)
}

func writeFileAtomic(path string, b []byte) (err error) {
	dir := filepath.Dir(path)
	// Mode 0666 less the umask, as SQLite creates the database and its -wal
	// and -shm (os.CreateTemp's 0600 kept other users of the group out).
	f, err := restore.CreateTemp(dir, filepath.Base(path)+".tmp-*", restore.DefaultFileMode)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if _, err = f.Write(b); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", tmp, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp, err)
	}
	if err = os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename %s to %s: %w", tmp, path, err)
	}
	if err = syncDir(dir); err != nil {
		return fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	return nil
}

// syncDir makes the renames in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// moveAside renames a database that cannot be followed any more to
// "<db>.<reason>-<UTC time>", together with its -wal, -shm and position
// sidecar, so that nothing is lost and the file plus its WAL still open as
// one database. No connection of this process may be open on it. Readers in
// other processes keep their descriptors (of the renamed files) and see the
// old state until they reopen the path. It returns the new database path.
func moveAside(dbPath, reason string, now time.Time) (string, error) {
	stamp := now.UTC().Format("20060102T150405.000000000Z")
	dst := fmt.Sprintf("%s.%s-%s", dbPath, reason, stamp)
	moved := false
	for _, suffix := range []string{"", "-wal", "-shm", PositionSuffix} {
		err := os.Rename(dbPath+suffix, dst+suffix)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		} else if err != nil {
			return "", fmt.Errorf("move %s aside to %s: %w", dbPath+suffix, dst+suffix, err)
		}
		moved = true
	}
	if !moved {
		return "", nil
	}
	_ = syncDir(filepath.Dir(dbPath))
	return dst, nil
}
