package follower

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/understudy-db/understudy/internal/dbid"
	"github.com/understudy-db/understudy/internal/sqlitex"
)

// primaryShadowMarker is the file the primary's local store keeps in its
// shadow directory for as long as it exists.
const primaryShadowMarker = "lock"

// setAside moves a local database that cannot be resumed aside, so that a
// fresh copy can be bootstrapped at its path.
//
// Two kinds, told apart by the primary's shadow directory beside it: with
// the primary's local store in it, this node ran the database as primary (a replicate, or a promoted
// follower) and was stopped without handing over (kill -9, a crash). What
// it committed and never shipped is a diverged history, not a change made
// outside the follower: it is saved as "<db>.diverged-<time>" with the
// shadow directory beside it as "<db>.diverged-<time>-understudy" (a later
// start as primary must not resume from it), logged, and reported as
// diverged_saved_to. Without one it is "<db>.mismatch-<time>" (moved_aside):
// written by someone else, or damaged. A former primary's database is
// moved only when it cannot be kept in place (keepDivergedInPlace).
func (f *Follower) setAside(path string, me *MismatchError) error {
	shadow, formerPrimary := f.primaryShadow(path)
	reason := "mismatch"
	if formerPrimary {
		reason = "diverged"
	}
	aside, err := moveAside(path, reason, f.cfg.Now())
	if err != nil {
		return fmt.Errorf("%v; and it could not be moved aside: %w", me, err)
	}
	if !formerPrimary {
		f.log.Warn("local database does not match its recorded position; kept aside, bootstrapping a fresh copy",
			"reason", me.Reason, "moved_to", aside)
		f.update(func(st *Status) { st.MovedAside = aside })
		return nil
	}
	if err := os.Rename(shadow, aside+"-understudy"); err != nil && !errors.Is(err, fs.ErrNotExist) {
		f.log.Warn("moving the primary's shadow directory aside", "shadow", shadow, "error", err)
	}
	f.log.Warn("this node was primary for this database and stopped without handing over: saved it whole (with any transactions it committed that the store lacks) as diverged; bootstrapping a fresh copy",
		"saved_to", aside, "reason", me.Reason)
	f.update(func(st *Status) { st.MovedAside, st.DivergedSavedTo = aside, aside })
	return nil
}

// primaryShadow is the primary's shadow directory of the database at path,
// and whether this node ran it as primary: a follower keeps only the
// history's identity there (dbid); the primary's local store
// (primary/local.go) always has its lock file.
func (f *Follower) primaryShadow(path string) (string, bool) {
	shadow := f.cfg.PrimaryShadowDir
	if shadow == "" {
		shadow = dbid.ShadowDir(path)
	}
	_, err := os.Stat(filepath.Join(shadow, primaryShadowMarker))
	return shadow, err == nil
}

// keepDivergedInPlace is setAside for a former primary's database without
// moving it: moved aside, its path would be missing until the bootstrap
// restored a copy there, and an application opening a connection per
// write would create an empty database in between (issue 15). It holds the
// write lock, saves a copy as "<db>.diverged-<time>" (HoldAndSaveCopy) and
// returns an applier writing through that lock, set to be rebuilt in place
// from the store (start). Nil when it cannot (the database is not in WAL
// mode, say): setAside moves it then.
func (f *Follower) keepDivergedInPlace(ctx context.Context, path string, me *MismatchError, slot *sqlitex.LockSlot) *Applier {
	shadow, formerPrimary := f.primaryShadow(path)
	if !formerPrimary {
		return nil
	}
	hold, aside, err := holdAndSaveCopy(ctx, slot, path, "diverged", f.cfg.Now())
	if err != nil {
		f.log.Warn("cannot keep the former primary's database in place; moving it aside", "error", err)
		return nil
	}
	slot.Put(hold)
	a, err := resumeApplier(ctx, path, f.log, slot)
	if err != nil {
		f.log.Warn("cannot follow the former primary's database in place; moving it aside", "error", err, "saved_to", aside)
		return nil
	}
	if err := os.Rename(shadow, aside+"-understudy"); err != nil && !errors.Is(err, fs.ErrNotExist) {
		f.log.Warn("moving the primary's shadow directory aside", "shadow", shadow, "error", err)
	}
	f.log.Warn("this node was primary for this database and stopped without handing over: saved a copy (with any transactions it committed that the store lacks) as diverged; rebuilding it in place from the store",
		"saved_to", aside, "reason", me.Reason)
	f.update(func(st *Status) { st.DivergedSavedTo = aside })
	return a
}
