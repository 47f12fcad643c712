package follower

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/internal/restore"
	"github.com/understudy-db/understudy/internal/storage"
)

// Rebuilding at a newer position.
//
// A follower whose next TXID lies inside a compacted file it cannot verify
// (Litestream's compactions carry no database checksums, and once its L0
// files are gone, after 5 minutes with Litestream's defaults, a follower that
// was down has nothing else to apply) would otherwise be stuck for good. It
// rebuilds instead: it restores the store's newest position to a temp file
// beside the database with every check a restore makes (file checksums,
// contiguity, database checksums where the store has them, quick_check),
// then applies that image to the live database as one full-image change set
// through the applier, exactly as it applies a snapshot. The database file
// is never removed or swapped: readers see the old state or the new one,
// connections opened before keep working, and the -wal/-shm stay the
// database's own (a renamed-in file would meet the old file's -wal and -shm,
// which SQLite would pair with it).

// rebuildSuffix names the temp file a rebuild restores into, beside the
// database; a leftover from a crash is removed before the next rebuild.
const rebuildSuffix = ".rebuild.tmp"

// rebuild restores the store's newest state and applies it over the local
// database. It returns false (and no error) when the store's newest
// position is not past the local one, so there is nothing to gain.
func (l *loop) rebuild(ctx context.Context, cause error) (bool, error) {
	return l.f.rebuild(ctx, l.a, cause)
}

// rebuildInPlace rebuilds a database set for it (SetRebuild) before the
// follower resumes from it.
func (f *Follower) rebuildInPlace(ctx context.Context, a *Applier) error {
	ok, err := f.rebuild(ctx, a, errors.New("the local database was set to be rebuilt in place"))
	if err == nil && !ok {
		err = fmt.Errorf("rebuild %s in place: the store holds no position to rebuild at", a.Path())
	}
	if err != nil {
		a.Close()
	}
	return err
}

func (f *Follower) rebuild(ctx context.Context, a *Applier, cause error) (bool, error) {
	pos := a.Position()
	tmp := a.Path() + rebuildSuffix
	// A leftover of a crashed rebuild goes first; restore wants no file there.
	if err := removeTemp(tmp); err != nil {
		return false, err
	}
	defer removeTemp(tmp)
	f.log.Warn("cannot follow the history from the local position; rebuilding from the store's newest state",
		"local", pos.TXID.String(), "reason", cause)
	start := time.Now()
	res, err := restore.Restore(ctx, f.cfg.Client, restore.Options{OutputPath: tmp, Logger: f.log, IntegrityCheck: restore.IntegrityQuick})
	if err != nil {
		return false, fmt.Errorf("rebuild: restore the newest state to %s: %w", tmp, err)
	}
	if res.TXID <= pos.TXID {
		return false, nil
	}
	var md *storage.Metadata
	if res.PostApplyChecksum != 0 {
		// The restored file's checksum: applying the image must give it.
		md = &storage.Metadata{PostApplyChecksum: res.PostApplyChecksum, CommitTime: res.Timestamp, DatabaseID: res.DatabaseID}
	}
	name := fmt.Sprintf("rebuilt image at TXID %s", res.TXID)
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(encodeImage(pw, tmp, res)) }()
	ares, err := a.Apply(ctx, name, pr, md)
	pr.Close()
	if err != nil {
		return false, fmt.Errorf("rebuild: apply the image restored at TXID %s: %w", res.TXID, err)
	}
	f.noteIdentity(md)
	f.applied(a, ares)
	f.log.Info("rebuilt at a newer position", "from", pos.TXID.String(), "txid", res.TXID.String(),
		"pages", ares.Pages, "verified_by_store_checksums", res.Verified, "elapsed", time.Since(start).Round(time.Millisecond))
	return true, nil
}

// encodeImage writes the database file at path (res's restore) to w as an
// LTX snapshot of TXIDs 1..res.TXID: every page but the lock page, in order.
func encodeImage(w io.Writer, path string, res restore.Result) error {
	src, err := os.Open(path)
	if err != nil {
		return err
	}
	defer src.Close()
	enc, err := ltx.NewEncoder(w)
	if err != nil {
		return err
	}
	if err := enc.EncodeHeader(ltx.Header{
		Version: ltx.Version, Flags: ltx.HeaderFlagNoChecksum, PageSize: res.PageSize, Commit: res.PageCount,
		MinTXID: 1, MaxTXID: res.TXID, Timestamp: res.Timestamp.UnixMilli(),
	}); err != nil {
		return fmt.Errorf("encode image of %s: %w", path, err)
	}
	lock := ltx.LockPgno(res.PageSize)
	buf := make([]byte, res.PageSize)
	for pgno := uint32(1); pgno <= res.PageCount; pgno++ {
		if pgno == lock {
			continue
		}
		if _, err := src.ReadAt(buf, int64(pgno-1)*int64(res.PageSize)); err != nil {
			return fmt.Errorf("read page %d of %s: %w", pgno, path, err)
		}
		if err := enc.EncodePage(ltx.PageHeader{Pgno: pgno}, buf); err != nil {
			return fmt.Errorf("encode page %d of %s: %w", pgno, path, err)
		}
	}
	return enc.Close()
}

// removeTemp removes a rebuild's temp database and any -wal/-shm beside it.
func removeTemp(path string) error {
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove leftover %s: %w", p, err)
		}
	}
	return nil
}
