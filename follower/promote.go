package follower

import (
	"context"
	"errors"
	"time"

	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/internal/sqlitex"
	"github.com/understudy-db/understudy/internal/storage"
)

// Reached is where CatchUp left the local database: everything a node that
// takes over as primary needs to claim the next TXID.
type Reached struct {
	Position
	PageCount uint32 // database size in pages (the claim's Commit)
	PageSize  uint32
	// DatabaseID is the identity of the history replayed, as recorded
	// beside the database ("" when its files carry none).
	DatabaseID string
}

// CatchUp applies every file the store holds beyond the local database's
// position, once, without the polling loop: it is how a promoting node
// replays the store before it claims the next TXID. Run must not be running
// on the same database. It returns once the store has nothing newer and
// the position is at least until (0: whatever the store holds now); a
// database that is missing is bootstrapped first. Files that do not verify
// give a *VerifyError; transient store errors are retried until ctx ends.
func (f *Follower) CatchUp(ctx context.Context, until ltx.TXID) (Reached, error) {
	if err := sqlitex.CheckDBPage(ctx); err != nil {
		return Reached{}, err
	}
	a, err := f.start(ctx)
	if err != nil {
		return Reached{}, err
	}
	defer a.Close()
	failures := 0
	var gapSince time.Time
	for {
		pos := a.Position()
		d, err := f.planCatchUp(ctx, pos.TXID)
		if err == nil {
			if d.Gap && until <= pos.TXID {
				// Files above a missing TXID, with nothing required past
				// the position (a forced or automatic promotion): a primary
				// that uploaded several files at once and died left the
				// ones that outran a missing one. No chain reaches them,
				// so they hold nothing restorable; the history ends here.
				// An upload still in flight could fill the gap, so it must
				// last GapGrace first; and the claim after this is
				// create-only, so one that lands later loses to it or wins
				// (then the replay goes on past it).
				if gapSince.IsZero() {
					gapSince = time.Now()
				}
				if time.Since(gapSince) >= f.cfg.GapGrace {
					f.log.Warn("the store holds files above a missing TXID: uploads of the old primary that outran a missing one, past the history it left; taking over after the contiguous history (the new primary replaces them)",
						"txid", pos.TXID.String(), "store_head", d.Head.String())
					return Reached{Position: pos, PageCount: a.PageCount(), PageSize: a.table.pageSize, DatabaseID: f.identity()}, nil
				}
				if !sleep(ctx, f.cfg.PollInterval) {
					return Reached{}, ctx.Err()
				}
				continue
			}
			gapSince = time.Time{}
			if err := d.dead(pos); err != nil {
				return Reached{}, err
			}
			if !d.Apply {
				if pos.TXID >= until {
					f.update(func(st *Status) { st.CaughtUp, st.HeadTXID = true, pos.TXID })
					return Reached{Position: pos, PageCount: a.PageCount(), PageSize: a.table.pageSize, DatabaseID: f.identity()}, nil
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
	obj, err := f.get(ctx, fi)
	if err != nil {
		return err
	}
	defer obj.Close()
	res, err := a.Apply(ctx, objectName(fi.Level, fi.MinTXID, fi.MaxTXID), obj, obj.Info.Metadata)
	if err != nil {
		return err
	}
	f.noteIdentity(obj.Info.Metadata)
	f.applied(a, res)
	return nil
}

// SetAside renames the database at path, with its -wal, -shm and position
// sidecar, to "<path>.<reason>-<UTC time>" and returns the new path ("" when
// there was nothing to move). A deposed primary's database is kept whole
// this way, transactions the store lacks included, before the node follows
// the new primary; the application's open connections move with the file.
func SetAside(path, reason string, now time.Time) (string, error) {
	return moveAside(path, reason, now)
}
