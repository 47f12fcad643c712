package fleet

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/understudy-db/understudy/internal/dbid"
	"github.com/understudy-db/understudy/primary"
)

// A parked database leaves a note of its files in its shadow directory:
// the database file's identity and the WAL's identity, size and
// modification time, taken just before its final sync. At the next start a
// database whose files still match its note has not been written since,
// so it is parked at once without being opened: ten thousand idle
// databases start in the time it takes to stat them, and make no store
// request. Any write of the application changes the WAL (or the file,
// when its last connection folds the WAL in), and then the database is
// opened and resumed as usual. The note is removed before a database is
// opened, so a process killed while it runs leaves none behind.
const parkedNoteName = "parked.json"

type fileStamp struct {
	Exists bool   `json:"exists"`
	Inode  uint64 `json:"inode,omitempty"`
	Size   int64  `json:"size,omitempty"`
	Mtime  int64  `json:"mtime_ns,omitempty"`
}

type stamps struct {
	DB  fileStamp `json:"db"`
	WAL fileStamp `json:"wal"`
}

type note struct {
	stamps
	Status primary.StatusDoc `json:"status"` // the database when it was parked, for /status
	// MaintainAt is when the database must be opened for compaction,
	// retention or a snapshot (primary.DB.NextMaintenance); zero: never.
	MaintainAt time.Time `json:"maintain_at,omitzero"`
}

func stampOf(p string) fileStamp {
	st, err := os.Stat(p)
	if err != nil {
		return fileStamp{}
	}
	fs := fileStamp{Exists: true, Size: st.Size(), Mtime: st.ModTime().UnixNano()}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		fs.Inode = sys.Ino
	}
	return fs
}

func stampsOf(dbPath string) stamps {
	return stamps{DB: stampOf(dbPath), WAL: stampOf(dbPath + "-wal")}
}

func notePath(dbPath string) string { return filepath.Join(dbid.ShadowDir(dbPath), parkedNoteName) }

// writeNote records that the database at dbPath was parked with its files
// as they are now.
func writeNote(dbPath string, before stamps, st primary.StatusDoc) error {
	return writeNoteAt(dbPath, before, st, time.Time{})
}

// writeNoteAt is writeNote with the time the database's maintenance is
// due.
func writeNoteAt(dbPath string, before stamps, st primary.StatusDoc, maintainAt time.Time) error {
	b, err := json.Marshal(note{before, st, maintainAt})
	if err != nil {
		return err
	}
	tmp := notePath(dbPath) + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, notePath(dbPath))
}

// removeNote forgets the note before the database is opened.
func removeNote(dbPath string) error {
	err := os.Remove(notePath(dbPath))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// unchangedSinceParked tells whether the database at dbPath has a note
// that its files still match, and the status the note gives.
func unchangedSinceParked(dbPath string) (primary.StatusDoc, bool) {
	was, ok := parkedNote(dbPath)
	return was.Status, ok
}

// parkedNote is unchangedSinceParked with the whole note.
func parkedNote(dbPath string) (note, bool) {
	var was note
	b, err := os.ReadFile(notePath(dbPath))
	if err != nil || json.Unmarshal(b, &was) != nil || !was.DB.Exists {
		return was, false
	}
	now := stampsOf(dbPath)
	// The database file itself changes on every checkpoint (SQLite's own
	// when the last connection closes, among them): only its identity is
	// compared. Every commit writes the WAL.
	return was, now.DB.Exists && now.DB.Inode == was.DB.Inode && now.WAL == was.WAL
}
