package follower

import (
	"context"
	"errors"
	"fmt"
	"strings"

	sqlite3 "github.com/mattn/go-sqlite3"

	"github.com/understudy-db/understudy/internal/walock"
)

// A follower's database must take no write but the applier's: a write by
// anyone else is acknowledged to its application and shipped nowhere, and
// readers would see it. So the applier holds SQLite's WAL write lock at all
// times: every other connection's write, opened before or after the
// follower started, fails with SQLITE_BUSY ("database is locked"), while
// readers read on (a reader needs no write lock).
//
// Between applies the apply connection keeps a write transaction open
// ("held"), and each apply runs inside it. From its COMMIT to the next
// held transaction the lock passes through a guard (internal/walock, an
// OFD lock on the same byte of "-shm"), taken the moment COMMIT returns:
// the page-cache reset that must run outside any transaction (rule 7) runs
// under the guard, then the next transaction begins and takes its
// snapshot, and takes the lock over from the guard with a write that
// changes nothing, in one call into C (writelock_cgo.go).
//
// SQLite cannot pass a write lock from one owner to another, so it is free
// twice per apply for a moment: from COMMIT's unlock to the guard's lock,
// and from the guard's unlock to the new transaction's lock. A writer that
// tries in exactly such a moment can get in. Its commit cannot go
// unnoticed: PRAGMA data_version on the apply connection changes only when
// another connection commits, and it is compared with the value after the
// applier's own last commit every time the lock is back. A difference
// stops the follower with a *VerifyError (changed outside the follower;
// restarting moves the database aside).
//
// Measured (TestFollowerRefusesAppWrites, on 2 loaded cores): applications
// with a busy timeout that open a new connection per write got in 0 times
// in 10 runs. A writer with no busy timeout in a tight loop (a try every
// ~300 µs) got in once per 20-130 applies, caught every time; with the
// hand-overs made from Go instead of C, once per 5-15.

// openGuard opens the guard of a.path ("-shm" exists: the apply
// connection has read the database in WAL mode) and takes the lock.
func (a *Applier) openGuard(ctx context.Context) error {
	g, err := walock.Open(a.path)
	if err != nil {
		return err
	}
	a.guard = g
	return a.guard.Lock(ctx, DefaultApplyBusyTimeout)
}

// hold opens the held transaction if it is not open: it takes the guard
// (waiting up to the apply busy timeout for a writer that has the lock)
// and passes the lock on to a new transaction (rearm). check: compare
// data_version with the applier's baseline (false sets it).
func (a *Applier) hold(ctx context.Context, check bool) error {
	if a.held {
		return nil
	}
	if err := a.guard.Lock(ctx, DefaultApplyBusyTimeout); err != nil {
		return err
	}
	return a.rearm(ctx, check)
}

// rearm runs with the guard holding the lock and no transaction open: it
// resets the apply connection's cache, checks data_version, begins the
// held transaction and hands the lock from the guard to it. On an error
// the guard keeps the lock.
func (a *Applier) rearm(ctx context.Context, check bool) error {
	if err := a.resetCache(ctx); err != nil {
		return err
	}
	if err := a.checkDataVersion(ctx, check); err != nil {
		return err
	}
	var err error
	rerr := a.apply.Raw(func(dc any) error {
		c, ok := dc.(*sqlite3.SQLiteConn)
		if !ok {
			return fmt.Errorf("apply connection is a %T, not SQLite's", dc)
		}
		err = beginTake(c, a.guard)
		return nil
	})
	if rerr == nil && err == nil {
		a.held = true
		return nil
	}
	if rerr != nil {
		err = rerr
	}
	// Another connection took the lock in the moment the guard let go: take
	// the guard back (it waits for that writer) and report what it did.
	if gerr := a.guard.Lock(ctx, DefaultApplyBusyTimeout); gerr != nil {
		return errors.Join(fmt.Errorf("take the write lock of %s: %w", a.path, err), gerr)
	}
	if verr := a.checkDataVersion(ctx, true); verr != nil {
		return verr
	}
	return fmt.Errorf("take the write lock of %s: %w", a.path, err)
}

// checkDataVersion compares data_version with the applier's baseline (or
// sets it when check is false).
func (a *Applier) checkDataVersion(ctx context.Context, check bool) error {
	v, err := a.readDataVersion(ctx)
	if err != nil {
		return err
	}
	if check && v != a.dataVersion {
		return &VerifyError{Local: a.pos, Changed: true, Err: fmt.Errorf(
			"the local database was written by another connection (data_version %d -> %d); followers' databases must be opened read-only", a.dataVersion, v)}
	}
	a.dataVersion = v
	return nil
}

// release ends the held transaction, keeping nothing of it, and leaves the
// lock to the guard if it can take it at once.
func (a *Applier) release() {
	if !a.held || a.apply == nil {
		return
	}
	a.held = false
	if _, err := a.apply.ExecContext(context.Background(), `ROLLBACK`); err != nil && !strings.Contains(err.Error(), "no transaction") {
		a.log.Warn("releasing the write lock failed", "db", a.path, "error", err)
	}
	a.guard.TryLock()
}

// errCommit marks a failed COMMIT (the transaction is still open or was
// rolled back; either way nothing was applied).
var errCommit = errors.New("commit failed")

// commitAndHold commits the held transaction, has the guard take the lock
// the moment COMMIT returns, and opens the next held transaction. A failed
// COMMIT wraps errCommit. A write that got in meanwhile breaks the applier;
// any other failure to hold the lock again is logged, not returned: the
// commit stands, and the next Apply takes the lock and checks data_version.
func (a *Applier) commitAndHold(ctx context.Context, object string) error {
	var commitErr error
	err := a.apply.Raw(func(dc any) error {
		c, ok := dc.(*sqlite3.SQLiteConn)
		if !ok {
			return fmt.Errorf("apply connection is a %T, not SQLite's", dc)
		}
		commitErr = commitGuard(c, a.guard)
		return nil
	})
	switch {
	case err != nil:
		return fmt.Errorf("commit to %s: %w", a.path, err)
	case commitErr != nil:
		return fmt.Errorf("commit to %s: %w: %w", a.path, errCommit, commitErr)
	}
	a.held, a.pinnedBehind = false, true
	err = a.hold(ctx, true)
	var ve *VerifyError
	if errors.As(err, &ve) {
		ve.Object = object
		a.broken = ve
		return ve
	}
	if err != nil {
		a.log.Warn("could not take the write lock again after an apply; other connections may write until the next apply", "db", a.path, "error", err)
	}
	return nil
}
