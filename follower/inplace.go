package follower

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/internal/sqlitex"
)

// Following in place.
//
// A primary that steps down and follows the new one keeps its database at
// its path: moving it aside and restoring a copy there (the first way)
// left the path missing for a moment, in which an application that opens
// a connection per write created an empty database ("no such table"), and
// the restore then failed for good ("output exists"). The write lock the
// halted primary holds passes to the follower's applier (sqlitex.LockSlot),
// and the database is either resumed where it is (ResumeInPlace: it holds
// exactly what the store holds) or, when it holds transactions the store
// lacks, copied aside (SaveCopy) and rebuilt in place from the store's
// newest state (SetRebuild) as a rebuild does (rebuild.go): the file is
// never removed or replaced, and no other process can write it meanwhile.

// ResumeInPlace records the database at path as a follower's at TXID txid,
// whose database checksum is want: the follower resumes from it. It fails,
// recording nothing, when the database's checksum is not want.
func ResumeInPlace(ctx context.Context, path string, txid ltx.TXID, want ltx.Checksum) error {
	t, err := readPageTable(ctx, path)
	if err != nil {
		return err
	}
	if sum := t.checksum(); sum != want || txid == 0 {
		return fmt.Errorf("resume %s in place: its checksum is %s, the store's at TXID %s is %s", path, sum, txid, want)
	}
	return writePosition(PositionPath(path), positionRecord{
		Position: Position{TXID: txid, Checksum: want}, PageSize: t.pageSize, UpdatedAt: time.Now().UTC(),
	})
}

// SetRebuild records the database at path as one the follower must rebuild
// in place from the store's newest state before it follows (its content is
// no position of the history). Save what it holds first (SaveCopy).
func SetRebuild(ctx context.Context, path string) error {
	t, err := readPageTable(ctx, path)
	if err != nil {
		return err
	}
	return writePosition(PositionPath(path), positionRecord{
		Position: Position{Checksum: t.checksum()}, PageSize: t.pageSize, UpdatedAt: time.Now().UTC(), Rebuild: true,
	})
}

// SaveCopy writes a transaction-consistent copy of the database at path to
// "<path>.<reason>-<UTC time>" (VACUUM INTO, through a read-only
// connection: the database itself is not touched) and returns its path.
func SaveCopy(ctx context.Context, path, reason string, now time.Time) (string, error) {
	dst := fmt.Sprintf("%s.%s-%s", path, reason, now.UTC().Format("20060102T150405.000000000Z"))
	c, err := sqlitex.Open(ctx, path, sqlitex.Options{ReadOnly: true})
	if err != nil {
		return "", fmt.Errorf("save a copy of %s: %w", path, err)
	}
	defer c.Close()
	if err := c.Exec(ctx, "VACUUM INTO '"+strings.ReplaceAll(dst, "'", "''")+"'"); err != nil {
		os.Remove(dst)
		return "", fmt.Errorf("save a copy of %s: %w", path, err)
	}
	return dst, nil
}

// readPageTable reads the database at path through a read-only connection.
func readPageTable(ctx context.Context, path string) (*pageTable, error) {
	db, err := sqlitex.OpenDB(ctx, ReadOnlyDSN(path))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	defer db.Close()
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	defer conn.Close()
	t, err := loadPageTable(ctx, conn)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return t, nil
}

// HoldAndSaveCopy takes the write lock of the database at path for good
// (sqlitex.HoldWriteLock), then saves a copy of it (SaveCopy) and sets it
// for an in-place rebuild (SetRebuild). It returns the holding connection,
// for the follower's applier to write through (Config.Locks), and the
// copy's path. The lock comes first: every write the application
// committed is in the copy, and none can land after it, where the rebuild
// would overwrite it.
func HoldAndSaveCopy(ctx context.Context, path, reason string, now time.Time) (*sqlitex.Conn, string, error) {
	return holdAndSaveCopy(ctx, nil, path, reason, now)
}

// holdAndSaveCopy is HoldAndSaveCopy through the lock in slot when it
// holds one on the file at path (taking the lock again from a second
// connection would wait for the first, and fail).
func holdAndSaveCopy(ctx context.Context, slot *sqlitex.LockSlot, path, reason string, now time.Time) (*sqlitex.Conn, string, error) {
	hold := slot.Take(path)
	if hold == nil {
		var err error
		if hold, err = sqlitex.HoldWriteLock(ctx, path, DefaultApplyBusyTimeout); err != nil {
			return nil, "", fmt.Errorf("hold the write lock of %s: %w", path, err)
		}
	}
	aside, err := SaveCopy(ctx, path, reason, now)
	if err == nil {
		err = SetRebuild(ctx, path)
	}
	if err != nil {
		if slot != nil {
			slot.Put(hold) // still held: the fallback moves the file aside with it locked
		} else {
			hold.Close()
		}
		return nil, aside, err
	}
	return hold, aside, nil
}

// saveWrittenSinceSaved saves another copy of the database at path, set for
// an in-place rebuild when its checksum was recorded and at checksum now,
// and records it for the rebuild at that checksum. The caller holds the
// write lock: nothing lands between the copy and the rebuild.
func saveWrittenSinceSaved(ctx context.Context, path string, logger hclog.Logger, recorded, now ltx.Checksum) error {
	aside, err := SaveCopy(ctx, path, "diverged", time.Now())
	if err == nil {
		err = SetRebuild(ctx, path)
	}
	if err != nil {
		return fmt.Errorf("%s was written after it was set to be rebuilt in place; saving those writes: %w", path, err)
	}
	logger.Warn("the database set to be rebuilt in place was written since it was saved (while this node was down); saved it again before rebuilding",
		"saved_to", aside, "checksum_saved", recorded.String(), "checksum_now", now.String())
	return nil
}
