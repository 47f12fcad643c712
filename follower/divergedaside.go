package follower

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/understudy-db/understudy/internal/dbid"
)

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
// written by someone else, or damaged.
// primaryShadowMarker is the file the primary's local store keeps in its
// shadow directory for as long as it exists.
const primaryShadowMarker = "lock"

func (f *Follower) setAside(path string, me *MismatchError) error {
	shadow := f.cfg.PrimaryShadowDir
	if shadow == "" {
		shadow = dbid.ShadowDir(path)
	}
	// A follower keeps only the history's identity there (dbid); the
	// primary's local store (primary/local.go) always has its lock file.
	_, serr := os.Stat(filepath.Join(shadow, primaryShadowMarker))
	formerPrimary := serr == nil
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
