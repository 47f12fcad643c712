package primary

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/internal/storage"
)

// Maintenance of a database that is not running (a parked database of a
// directory): Run's maintenance loop compacts, enforces retention and
// takes interval snapshots only while it runs, so a database closed for
// weeks would keep every file. NextMaintenance tells, from what the
// replicas' file lists already hold (no store request), when any of that
// would first do something; the caller opens the database then, calls
// Maintain instead of Run, and closes it again.
//
// Only work that changes something is due: compacting a level that has a
// single file to compact only copies it (a running database does it
// anyway, on its interval; an idle one need not open for it), so
// compaction is due when a level has two or more files to merge.

// NextMaintenance is when compaction, retention or a snapshot would first
// do something on a replica of the database as it is now; the zero time
// when nothing ever would (until it is written again). It makes no store
// request.
func (d *DB) NextMaintenance() time.Time {
	now := d.clock.Now()
	var next time.Time
	due := func(t time.Time) {
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	for _, r := range d.replicas {
		r.mu.Lock()
		levels := map[int][]storage.FileInfo{}
		for lvl, fs := range r.levels {
			levels[lvl] = append([]storage.FileInfo(nil), fs...)
		}
		pos := r.pos
		r.mu.Unlock()
		for i, iv := range d.opts.Levels {
			upto := ^ltx.TXID(0)
			if i == 0 {
				upto = pos
			}
			if len(planCompaction(levels[i], levels[i+1], upto)) >= 2 {
				due(now.Add(iv))
			}
		}
		if t, ok := retentionDue(levels, now, r.opts.Retention, d.opts.L0Retention, len(d.opts.Levels) > 0); ok {
			// As often as a running database checks, not more.
			due(maxTime(t, now.Add(r.opts.RetentionCheckInterval)))
		}
		var newest *storage.FileInfo
		for i, s := range levels[storage.SnapshotLevel] {
			if newest == nil || s.MaxTXID > newest.MaxTXID {
				newest = &levels[storage.SnapshotLevel][i]
			}
		}
		if newest != nil && newest.MaxTXID < pos && r.opts.SnapshotInterval > 0 {
			due(maxTime(newest.CreatedAt.Add(r.opts.SnapshotInterval), now))
		}
	}
	return next
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// retentionDue is the first time at or after now when planRetention would
// remove a file: it changes only when a snapshot passes the retention
// cutoff or an L0 file passes l0Retention, so only those times (and now)
// are tried.
func retentionDue(levels map[int][]storage.FileInfo, now time.Time, retention, l0Retention time.Duration, compacts bool) (time.Time, bool) {
	var l1Max ltx.TXID
	if compacts {
		for _, f := range levels[1] {
			l1Max = max(l1Max, f.MaxTXID)
		}
	}
	times := []time.Time{now}
	for _, s := range levels[storage.SnapshotLevel] {
		times = append(times, s.CreatedAt.Add(retention).Add(time.Second))
	}
	for _, f := range levels[0] {
		if f.MaxTXID <= l1Max {
			times = append(times, f.CreatedAt.Add(l0Retention).Add(time.Second))
		}
	}
	var first time.Time
	found := false
	for _, t := range times {
		if t.Before(now) {
			t = now
		}
		if len(planRetention(levels, t, retention, l0Retention, l1Max)) > 0 && (!found || t.Before(first)) {
			first, found = t, true
		}
	}
	return first, found
}

// Maintain does, once, what Run's maintenance loop does on its intervals,
// for a database opened only for it: it compacts every level, enforces
// retention and, for a replica whose newest snapshot is older than the
// snapshot interval and behind the database, writes a snapshot (uploaded
// by the next Sync). Errors are joined; each names the replica.
func (d *DB) Maintain(ctx context.Context) error {
	var errs []error
	for _, r := range d.replicas {
		for i := range d.opts.Levels {
			if err := r.compact(ctx, i+1); err != nil {
				errs = append(errs, fmt.Errorf("database %s: replica %s: compact level %d: %w", d.opts.Path, r.name, i+1, err))
			}
		}
		if err := r.enforceRetention(ctx); err != nil {
			errs = append(errs, fmt.Errorf("database %s: %w", d.opts.Path, err))
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	var targets []*replica
	for _, r := range d.replicas {
		r.mu.Lock()
		top := ltx.TXID(0)
		for _, s := range r.levels[storage.SnapshotLevel] {
			top = max(top, s.MaxTXID)
		}
		r.mu.Unlock()
		if top > 0 && top < d.txid && r.opts.SnapshotInterval > 0 && r.snapshotDue(d.clock.Now()) && len(d.pendingSnapshots(r)) == 0 {
			targets = append(targets, r)
		}
	}
	if len(targets) > 0 {
		if err := d.snapshotLocked(ctx, targets, "snapshot interval (maintenance of a parked database)"); err != nil {
			errs = append(errs, fmt.Errorf("database %s: snapshot: %w", d.opts.Path, err))
		}
	}
	d.gcLocal()
	return errors.Join(errs...)
}
