package follower

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/internal/storage"
)

// Reached is where CatchUp left the local database: everything a node that
// takes over as primary needs to claim the next TXID.
type Reached struct {
	Position
	PageCount uint32 // database size in pages (the claim's Commit)
	PageSize  uint32
}

// CatchUp applies every file the store holds beyond the local database's
// position, once, without the polling loop: it is how a promoting node
// replays the store before it claims the next TXID. Run must not be running
// on the same database. It returns once the store has nothing newer and
// the position is at least until (0: whatever the store holds now); a
// database that is missing is bootstrapped first. Files that do not verify
// give a *VerifyError; transient store errors are retried until ctx ends.
func (f *Follower) CatchUp(ctx context.Context, until ltx.TXID) (Reached, error) {
	if err := CheckDBPage(ctx); err != nil {
		return Reached{}, err
	}
	a, err := f.start(ctx)
	if err != nil {
		return Reached{}, err
	}
	defer a.Close()
	failures := 0
	for {
		pos := a.Position()
		d, err := f.planCatchUp(ctx, pos.TXID)
		if err == nil {
			switch {
			case d.Behind:
				return Reached{}, &VerifyError{Local: pos, Err: fmt.Errorf("the replica's history ends at TXID %s, before the local position", d.Head)}
			case d.Gap:
				return Reached{}, &VerifyError{Local: pos, Err: fmt.Errorf("gap in the history: the store has TXIDs up to %s but nothing holds TXID %s", d.Head, pos.TXID+1)}
			case !d.Apply:
				if pos.TXID >= until {
					f.update(func(st *Status) { st.CaughtUp, st.HeadTXID = true, pos.TXID })
					return Reached{Position: pos, PageCount: a.PageCount(), PageSize: a.table.pageSize}, nil
				}
				// A planned hand-off names its final TXID before the
				// store may list it everywhere: look again shortly.
				if !sleep(ctx, f.cfg.PollInterval) {
					return Reached{}, ctx.Err()
				}
				continue
			}
			err = f.applyOne(ctx, a, d.File)
			var ve *VerifyError
			if errors.As(err, &ve) {
				return Reached{}, err
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return Reached{}, ctx.Err()
			}
			failures++
			wait := backoff(f.cfg.PollInterval, failures, f.cfg.MaxBackoff)
			f.log.Warn("catching up failed; will retry", "error", err, "retry_in", wait)
			if !sleep(ctx, wait) {
				return Reached{}, ctx.Err()
			}
			continue
		}
		failures = 0
	}
}

// applyOne fetches and applies one planned file.
func (f *Follower) applyOne(ctx context.Context, a *Applier, fi storage.FileInfo) error {
	obj, err := f.cfg.Client.Open(ctx, fi.Level, fi.MinTXID, fi.MaxTXID, 0, -1)
	f.request("get", result(err))
	if err != nil {
		return err
	}
	defer obj.Close()
	res, err := a.Apply(ctx, objectName(fi.Level, fi.MinTXID, fi.MaxTXID), obj, obj.Info.Metadata)
	if err != nil {
		return err
	}
	f.applied(a, res)
	return nil
}

// Adopt makes the database at path, which is exactly at pos (a node that
// was primary and everything it committed is in the store), a follower's
// database without a bootstrap: its position is recorded after the
// checksum is proven. It fails when the database is not at pos; the
// follower then keeps it aside and bootstraps.
func Adopt(ctx context.Context, path string, pos Position) error {
	a, err := InitApplier(ctx, path, pos.TXID, pos.Checksum, nil)
	if err != nil {
		return err
	}
	return a.Close()
}

// SaveDiverged copies the database at path, with its WAL, to
// "<path>.diverged-<UTC time>" and returns the copy's path: a deposed
// primary's transactions that never reached the store are kept whole before
// the node follows the new history. The caller must make sure nobody writes
// the database meanwhile (the primary holds its write lock).
func SaveDiverged(path string, now time.Time) (string, error) {
	dst := fmt.Sprintf("%s.diverged-%s", path, now.UTC().Format("20060102T150405.000000000Z"))
	for _, suffix := range []string{"", "-wal"} {
		if err := copyFile(path+suffix, dst+suffix); err != nil {
			if suffix != "" && errors.Is(err, os.ErrNotExist) {
				continue
			}
			return "", fmt.Errorf("save the diverged database %s to %s: %w", path, dst, err)
		}
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return dst, nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
