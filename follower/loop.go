package follower

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/superfly/ltx"
	"github.com/understudy-db/understudy/internal/storage"
)

// loop is the state of one run of the poll loop. Steady state: GETs of the
// next L0 file, timed by pollSchedule (idle: one per poll interval), and one
// LIST of L0 past the position per HeadListInterval, which tells the store's
// head (for lag) and reveals a next file that is missing while later ones
// exist. Every level is listed at start, after failures, when the next L0
// file is missing while the store holds later TXIDs, and every
// HeadCheckInterval while idle.
type loop struct {
	f *Follower
	a *Applier

	sched     pollSchedule
	needCheck bool      // list every level before the next GET
	lastCheck time.Time // last listing of every level
	lastHead  time.Time // last listing of L0 past the position
	failures  int       // consecutive failed attempts, for the backoff
	// gapSince is when the store was first seen holding later TXIDs but
	// nothing that contains the next one. An upload still in flight looks
	// like that for a moment (the primary uploads several files at once), so
	// the follower reports a gap only once it has lasted GapGrace.
	gapSince time.Time
	stalled  string // why the follower cannot advance; "" while it can
	// failingSince starts a run of retried failures (store requests, applies
	// that failed for a reason outside the file) without progress in
	// between; zero: none. A run of UnhealthyAfter is a stall too.
	failingSince time.Time

	warnedNoMeta bool
	// blind: the last wake (Config.Wake) told no head, so the follower
	// keeps the periodic listings of a follower without Wake. Until the
	// first wake it knows nothing either.
	blind bool
}

// follow runs the poll loop until ctx ends or the local database can no
// longer be trusted (a *VerifyError with Changed set). Everything else is
// retried with backoff: store errors while staying healthy; a gap, a corrupt
// object or a file that does not verify marked unhealthy (StateStalled,
// the reason in Status.Error) until the follower advances again.
func (f *Follower) follow(ctx context.Context, a *Applier) error {
	l := &loop{f: f, a: a, needCheck: true, sched: pollSchedule{interval: f.cfg.PollInterval}, blind: true}
	for ctx.Err() == nil {
		if err := l.step(ctx); err != nil {
			return err
		}
	}
	return nil
}

// step fetches and applies the next file, or waits when there is none.
func (l *loop) step(ctx context.Context) error {
	f := l.f
	pos := l.a.Position()
	next := pos.TXID + 1
	fi := storage.FileInfo{Level: storage.LevelL0, MinTXID: next, MaxTXID: next}
	planned := false
	if l.needCheck || l.gapDue() {
		d, err := f.planCatchUp(ctx, pos.TXID)
		if err != nil {
			return l.retry(ctx, err, "replica store request failed; will retry")
		}
		now := time.Now()
		l.needCheck, l.lastCheck, l.lastHead = false, now, now
		f.raiseHead(d.Head)
		if err := d.dead(pos); err != nil {
			return l.cannotAdvance(ctx, err, d.Gap)
		}
		l.gapSince = time.Time{}
		if !d.Apply {
			// e.g. the bad object was removed and nothing came after it, or
			// the store answers again and holds nothing new.
			l.failingSince = time.Time{}
			l.unstall("nothing is missing any more")
		}
		if d.Apply && d.File.Level != storage.LevelL0 {
			fi, planned = d.File, true
		}
		// d.Apply at L0: the next L0 file exists after all; the GET takes it.
	}

	obj, err := f.get(ctx, fi)
	switch {
	case errors.Is(err, storage.ErrNotFound) && !planned:
		return l.missed(ctx, pos)
	case err != nil:
		return l.retry(ctx, err, "replica store request failed; will retry")
	case planned:
		what := "catching up from a compacted level"
		if fi.Level == storage.SnapshotLevel {
			what = "catching up from a snapshot (no level holds the next TXID)"
		}
		f.log.Info(what, "object", objectName(fi.Level, fi.MinTXID, fi.MaxTXID), "local", pos.TXID.String())
	default:
		l.sched.found()
	}

	info := obj.Info
	name := objectName(info.Level, info.MinTXID, info.MaxTXID)
	if info.Metadata == nil && !l.warnedNoMeta {
		l.warnedNoMeta = true
		f.log.Info("the replica's files carry no database checksums (written by another tool?); verifying them by file checksum only", "object", name)
	}
	res, err := l.a.Apply(ctx, name, obj, info.Metadata)
	obj.Close()
	var ve *VerifyError
	switch {
	case errors.As(err, &ve) && ve.Changed:
		return err // the local database is no longer a copy of the primary's
	case errors.As(err, &ve) && errors.Is(err, ErrUnverifiable):
		ok, rerr := l.rebuild(ctx, err)
		switch {
		case rerr != nil:
			return l.cannotAdvance(ctx, fmt.Errorf("%w; and rebuilding failed: %w", err, rerr), false)
		case !ok:
			return l.cannotAdvance(ctx, err, false)
		}
		l.rebuilt()
		return nil
	case errors.As(err, &ve):
		return l.cannotAdvance(ctx, err, false)
	case err != nil:
		return l.retry(ctx, err, "apply failed; will retry", "object", name)
	}
	l.failures, l.gapSince, l.failingSince = 0, time.Time{}, time.Time{}
	l.unstall("applied " + name)
	f.noteIdentity(info.Metadata)
	f.applied(l.a, res)
	// After a file found by listing, list again: the next L0 file may be
	// gone too, and a GET that misses would look like being caught up.
	l.needCheck = planned
	if !l.needCheck && time.Since(l.lastHead) >= f.cfg.HeadListInterval {
		// Busy: the store's head tells how far behind this follower is.
		if _, err := l.listHead(ctx, res.Pos.TXID); err != nil {
			return l.retry(ctx, err, "replica store request failed; will retry")
		}
	}
	return nil
}

// unstall ends a stall (if any): the follower is healthy and following
// again; why says what ended it.
func (l *loop) unstall(why string) {
	if l.stalled == "" {
		return
	}
	l.f.log.Info("advancing again", "after", why, "was", l.stalled)
	l.stalled, l.failures = "", 0
	l.f.update(func(st *Status) {
		if st.State == StateStalled {
			st.State, st.Healthy, st.Error = StateFollowing, true, ""
		}
	})
}

// rebuilt resets the loop after a rebuild took the database to the store's
// newest position: healthy again, and every level listed before the next GET.
func (l *loop) rebuilt() {
	l.gapSince, l.needCheck = time.Time{}, true
	l.unstall("rebuilding at the store's newest position")
	l.failures = 0
}

// gapDue reports whether a gap has lasted long enough to be checked again
// by listing every level (and reported if it is still there).
func (l *loop) gapDue() bool {
	return !l.gapSince.IsZero() && time.Since(l.gapSince) >= l.f.cfg.GapGrace
}

// missed handles a GET of the next L0 file that found nothing: caught up,
// unless the store is known to hold later TXIDs.
func (l *loop) missed(ctx context.Context, pos Position) error {
	f := l.f
	now := f.cfg.Now()
	if l.stalled == "" {
		l.failures, l.failingSince = 0, time.Time{}
	} else {
		// Only a listing can tell that the stall is over.
		l.needCheck = true
	}
	f.update(func(st *Status) {
		st.LastPoll, st.CaughtUp = &now, st.HeadTXID <= pos.TXID && l.stalled == ""
		if l.stalled == "" {
			st.Error = ""
		}
	})
	waked := f.cfg.Wake != nil && l.stalled == "" && l.gapSince.IsZero()
	switch {
	case waked && !l.blind:
		l.awaitWake(ctx, pos)
		return nil
	case time.Since(l.lastCheck) >= f.cfg.HeadCheckInterval:
		l.needCheck = true
	case l.gapSince.IsZero() && time.Since(l.lastHead) >= f.cfg.HeadListInterval:
		head, err := l.listHead(ctx, pos.TXID)
		if err != nil {
			return l.retry(ctx, err, "replica store request failed; will retry")
		}
		// Later TXIDs but no next L0 file: compacted away (a higher level
		// has it), still uploading, or a gap. Listing every level tells.
		l.needCheck = l.needCheck || head > pos.TXID
	}
	if waked && !l.needCheck {
		l.awaitWake(ctx, pos) // the sender wakes it each poll interval
		return nil
	}
	sleep(ctx, l.sched.miss(time.Now()))
	return nil
}

// awaitWake handles a miss of a follower told when its store moves
// (Config.Wake). The next file missing while the store is known to hold
// later TXIDs was compacted away, is still uploading, or is a gap: a
// listing of every level tells, soon. Otherwise nothing is asked of the
// store until the next wake: no poll, and, while the wakes tell the head,
// no periodic listing (the head is what a listing would learn).
func (l *loop) awaitWake(ctx context.Context, pos Position) {
	if l.f.Status().HeadTXID > pos.TXID {
		l.needCheck = true
		sleep(ctx, l.sched.probe())
		return
	}
	select {
	case <-ctx.Done():
	case head := <-l.f.cfg.Wake:
		l.blind = head == 0
		l.f.raiseHead(head)
	}
}

// listHead lists L0 past txid and raises the known store head to the
// newest TXID there. It returns that TXID (0 when L0 holds nothing past
// txid).
func (l *loop) listHead(ctx context.Context, txid ltx.TXID) (ltx.TXID, error) {
	files, err := listLevel(ctx, l.f.cfg.Client, storage.LevelL0, txid+1)
	l.f.request("list", result(err))
	if err != nil {
		return 0, err
	}
	l.lastHead = time.Now()
	var head ltx.TXID
	for _, fi := range files {
		head = max(head, fi.MaxTXID)
	}
	l.f.raiseHead(head)
	return head, nil
}

// retry records a failure worth retrying (the store, a failed read), lists
// every level next time, and backs off. The follower stays healthy until
// such failures have gone on for UnhealthyAfter without progress: the store
// may only be restarting.
func (l *loop) retry(ctx context.Context, err error, msg string, args ...any) error {
	if ctx.Err() != nil {
		return nil
	}
	l.failures++
	l.needCheck = true
	wait := backoff(l.f.cfg.PollInterval, l.failures, l.f.cfg.MaxBackoff)
	l.f.log.Warn(msg, append(args, "error", err, "retry_in", wait)...)
	now := time.Now()
	if l.failingSince.IsZero() {
		l.failingSince = now
	}
	if failing := now.Sub(l.failingSince); failing >= l.f.cfg.UnhealthyAfter {
		// Not advancing for this long is a stall, whatever the cause.
		reason := fmt.Sprintf("no progress for %s, retrying: %v", failing.Round(100*time.Millisecond), err)
		if l.stalled == "" {
			l.f.log.Error("cannot advance: the local database stays at its last good state and keeps serving reads; retrying",
				"failing_for", failing.Round(100*time.Millisecond), "error", err, "retry_in", wait)
		}
		l.stalled = reason
		l.f.update(func(st *Status) { st.State, st.Healthy, st.CaughtUp, st.Error = StateStalled, false, false, reason })
	} else {
		l.f.update(func(st *Status) { st.Error = err.Error() })
	}
	sleep(ctx, wait)
	return nil
}

// cannotAdvance handles what keeps the follower from advancing although the
// store answers: a gap (after GapGrace), a corrupt object, a file that does
// not verify against the local database. The follower turns unhealthy with
// the reason and tries again with backoff: a repaired or re-uploaded object
// lets it go on by itself.
func (l *loop) cannotAdvance(ctx context.Context, err error, gap bool) error {
	if ctx.Err() != nil {
		return nil
	}
	f := l.f
	if gap {
		if l.gapSince.IsZero() {
			l.gapSince = time.Now()
		}
		if !l.gapDue() {
			// Maybe an upload still in flight: GET the next file meanwhile.
			f.log.Debug("the next TXID is missing while the store holds later ones; looking again", "error", err)
			f.update(func(st *Status) { st.CaughtUp = false })
			sleep(ctx, f.cfg.PollInterval)
			return nil
		}
	}
	l.failures++
	l.needCheck = true
	wait := backoff(f.cfg.PollInterval, l.failures, f.cfg.MaxBackoff)
	reason := err.Error()
	lvl := hclog.Debug
	if reason != l.stalled {
		lvl = hclog.Error // once per reason, not once per retry
	}
	l.stalled = reason
	f.log.Log(lvl, "cannot advance: the local database stays at its last good state and keeps serving reads; retrying",
		"error", err, "retry_in", wait)
	f.update(func(st *Status) {
		st.State, st.Healthy, st.CaughtUp, st.Error = StateStalled, false, false, reason
	})
	sleep(ctx, wait)
	return nil
}
