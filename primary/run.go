package primary

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/understudy-db/understudy/internal/sqlitex"
	"github.com/understudy-db/understudy/internal/wal"
)

// Run ships, checkpoints, snapshots, compacts and enforces retention until
// ctx is done (then it returns nil) or another writer turns out to own the
// history: then the application's writes are halted (the write lock is
// held until Close, so the application gets SQLITE_BUSY) and Run returns an
// error wrapping ErrFenced.
func (d *DB) Run(ctx context.Context) error {
	d.mu.Lock()
	ok := d.opened && !d.closed
	d.mu.Unlock()
	if !ok {
		return fmt.Errorf("database %s: Run before Open", d.opts.Path)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	notify := make(chan struct{}, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); d.watchCommits(ctx, notify) }()
	for _, r := range d.replicas {
		wg.Add(2)
		go func() { defer wg.Done(); r.runUploads(ctx) }()
		go func() { defer wg.Done(); r.runMaintenance(ctx) }()
	}
	err := d.shipLoop(ctx, notify)
	cancel()
	wg.Wait()
	if ferr := d.fencedErr(); ferr != nil {
		if herr := d.haltWrites(); herr != nil {
			return errors.Join(ferr, herr)
		}
		return ferr
	}
	return err
}

// requestSnapshot asks the ship loop to write a snapshot for the replicas
// that need one.
func (d *DB) requestSnapshot() {
	if d.snapReq == nil {
		return
	}
	select {
	case d.snapReq <- struct{}{}:
	default:
	}
}

func (d *DB) shipLoop(ctx context.Context, notify <-chan struct{}) error {
	monitor := time.NewTicker(d.opts.MonitorInterval)
	defer monitor.Stop()
	interval := d.opts.minSyncInterval()
	// lastFinal is when the last L0 file was made (a final step): the next
	// one waits for the interval, however often early steps stage the WAL.
	// Open shipped what was there.
	lastFinal := time.Now()
	var timer *time.Timer
	var timerC <-chan time.Time
	arm := func() {
		if timer == nil {
			timer = time.NewTimer(max(0, interval-time.Since(lastFinal)))
			timerC = timer.C
		}
	}
	step := func(final bool) {
		if final {
			if timer != nil {
				timer.Stop()
				timer, timerC = nil, nil
			}
			lastFinal = time.Now()
		}
		d.step(ctx, final)
		if !final && d.hasStaged() {
			arm() // the staged pages become the interval's L0 file
		}
	}
	due := func() bool { return time.Since(lastFinal) >= interval }
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-d.fencedCh:
			return d.fencedErr()
		case <-d.stopCh:
			return d.stoppedErr()
		case <-notify:
			switch {
			case due():
				step(true)
			case d.walGrowingFast():
				step(false)
			default:
				arm()
			}
		case <-timerC:
			timer, timerC = nil, nil
			step(true)
		case <-monitor.C:
			step(due())
		case <-d.snapReq:
			step(due())
		}
	}
}

// hasStaged reports whether WAL pages are staged for the next L0 file.
func (d *DB) hasStaged() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return !d.stage.empty()
}

// walGrowingFast reports whether the unshipped part of the WAL reached half
// of max-checkpoint-page-count, so that it is staged, and the WAL
// restarted at max-checkpoint-page-count, before the interval is up (this
// bounds the WAL). An early step only stages (stage.go): the interval's
// L0 file, its one PUT per replica, comes at the interval.
//
// It asks SQLite for its frame count (wal_checkpoint(NOOP): no lock, no
// I/O) instead of looking at the file's size: after a WAL restart the file
// keeps the size of its largest generation (it is truncated only once the
// database is quiet), and taking that size for unshipped frames made every
// commit after a busy spell sync at once, one PUT per commit instead of one
// per sync-interval.
func (d *DB) walGrowingFast() bool {
	if !d.mu.TryLock() {
		return false
	}
	defer d.mu.Unlock()
	if d.ckpt == nil || d.halted || d.closed {
		return false
	}
	r, err := d.ckpt.Checkpoint(context.Background(), "NOOP")
	if err != nil {
		return false
	}
	shipped := int64(0)
	if d.haveWAL {
		shipped = wal.FrameIndex(d.walPos.Offset, d.pageSize)
	}
	return unshippedFrames(r.Log, shipped, d.expectRestart) >= int64(d.opts.MaxCheckpointPageCount/2)
}

// unshippedFrames estimates how many of SQLite's log frames are not
// shipped. Fewer frames than shipped means the WAL restarted and all of
// them are new. restartExpected says that the shipper saw the end of the
// current generation (a quiesced restart, a capture): then any count other
// than the shipped one is a new generation, all of it unshipped. Without
// that, a WAL restarted after a quiesced restart of 14,000 frames was
// counted as 14,000 frames short, so the next early step came only at
// 19,000 frames of the new generation and the restart after it later
// still (generations of 60,000 frames, 250 MB, under a saturating
// writer). The one case left wrong, a WAL restarted by someone else that
// grew past the shipped count before any sync, only delays the sync to
// its interval: it decides when to sync, never what is shipped.
func unshippedFrames(log, shipped int64, restartExpected bool) int64 {
	if log < shipped || (restartExpected && log != shipped) {
		return log
	}
	return log - shipped
}

// step is one round of the ship loop: sync (with final, what is committed
// becomes the next L0 file; without, it is only staged), checkpoint,
// snapshots.
func (d *DB) step(ctx context.Context, final bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed || d.fencedErr() != nil {
		return
	}
	shipped, err := d.rotateAndSyncLocked(ctx, final)
	if hb, ok := isBreak(err); ok {
		err = d.handleBreakLocked(ctx, hb)
	}
	if err == nil && !shipped {
		d.truncateIfIdleLocked(ctx)
	}
	if err == nil {
		err = d.checkpointLocked(ctx)
		if hb, ok := isBreak(err); ok {
			err = d.handleBreakLocked(ctx, hb)
		}
	}
	if err == nil {
		if targets := d.snapshotTargets(); len(targets) > 0 {
			err = d.startSnapshotAsyncLocked(ctx, targets, "interval")
		}
	}
	var waiting *errReplacedWaiting
	switch {
	case err == nil:
		d.syncFails.ok(d.clock.Now(), "txid", d.txid)
	case ctx.Err() == nil && d.fencedErr() == nil && !errors.As(err, &waiting):
		d.syncFails.fail(d.clock.Now(), err, "txid", d.txid)
	}
	if err != nil {
		// Whatever went wrong, do not stand in the way of SQLite (a WAL
		// recovery needs the checkpoint lock): the pin, if any, stays.
		d.ckl.release()
	} else if !d.closed {
		d.relaxPinLocked()
	}
	d.gcLocal()
	d.checkExclusiveLocked()
}

// snapshotTargets are the replicas that need a snapshot and have none
// queued.
func (d *DB) snapshotTargets() []*replica {
	var out []*replica
	for _, r := range d.replicas {
		r.mu.Lock()
		want := r.snapDue || r.needSnapshot
		r.mu.Unlock()
		if want && len(d.pendingSnapshots(r)) == 0 {
			out = append(out, r)
		}
	}
	return out
}

// gcLocal removes local L0 files that every replica has uploaded and
// compacted, and full images that every replica has uploaded, then bounds
// what is left (capLocalLocked). Called with d.mu held.
func (d *DB) gcLocal() {
	floor := d.replicas[0].localFloor()
	for _, r := range d.replicas[1:] {
		floor = min(floor, r.localFloor())
	}
	if floor > 0 {
		if err := d.local.remove(floor); err != nil {
			d.log.Warn("remove local L0 files", "error", err)
		}
	}
	// A full image (as large as the database) goes as soon as every
	// replica has it, not after L1 compaction: that reads it back from the
	// store instead, one GET, and the shadow directory does not hold a
	// second copy of the database for the 30 s (or more, behind a slow
	// store) until then.
	if d.local.imageBytes() > 0 {
		uploaded := d.replicas[0].position()
		for _, r := range d.replicas[1:] {
			uploaded = min(uploaded, r.position())
		}
		if err := d.local.removeImages(uploaded); err != nil {
			d.log.Warn("remove local full images", "error", err)
		}
	}
	d.capLocalLocked()
}

// quietBeforeInotify is how long no commit must be seen before the
// inotify watch is armed again.
const quietBeforeInotify = 250 * time.Millisecond

// watchCommits notices commits: PRAGMA data_version on a dedicated
// connection, polled every PollInterval, and, while the database is quiet,
// inotify on the -wal file as a faster wake-up (inotify fires before the
// commit is visible in about a quarter of events, so data_version always
// confirms). The watch is dropped as soon as commits are seen and armed
// again after quietBeforeInotify without one: while it is armed, every
// write(2) of the application to the WAL queues an inotify event and wakes
// this process, which cost the application about a fifth of its time
// under a saturating writer (perf: fsnotify under pwrite). A busy
// application is then noticed by the poll alone, which is as fast as the
// shipper needs.
func (d *DB) watchCommits(ctx context.Context, notify chan<- struct{}) {
	dir := filepath.Dir(d.realPath)
	var w *fsnotify.Watcher
	if d.opts.Wake == nil { // else the owner's watch wakes us (Options.Wake)
		var err error
		if w, err = fsnotify.NewWatcher(); err != nil {
			d.log.Warn("inotify unavailable; polling only", "error", err)
			w = nil
		} else {
			defer w.Close()
		}
	}
	var events <-chan fsnotify.Event
	armed := false
	arm := func(on bool) {
		if w == nil || on == armed {
			return
		}
		if on {
			if err := w.Add(dir); err != nil {
				d.log.Warn("inotify unavailable; polling only", "error", err)
				w.Close()
				w, events = nil, nil
				return
			}
			events = w.Events
		} else {
			_ = w.Remove(dir)
			// Events already queued are drained by the loop below.
		}
		armed = on
	}
	arm(true)
	poll := time.NewTicker(d.opts.PollInterval)
	defer poll.Stop()
	var lastVersion int64 = -1
	var lastCheck, lastChange time.Time
	// The watcher's own connection: data_version is per connection and
	// must not be read inside a transaction.
	var conn *sqlitex.Conn
	var gen int64 = -1
	defer func() {
		if conn != nil {
			conn.Close() // KeepWAL: safe even if the file was replaced
		}
	}()
	check := func() {
		lastCheck = time.Now()
		if g := d.connGen.Load(); conn == nil || g != gen {
			c, err := sqlitex.Open(ctx, d.realPath, connOpts(0))
			if err != nil {
				if ctx.Err() == nil {
					d.log.Warn("open connection to notice commits", "error", err)
				}
				return
			}
			if conn != nil {
				conn.Close() // to the replaced file; KeepWAL makes this safe
			}
			conn, gen, lastVersion = c, g, -1
		}
		v, err := conn.DataVersion(ctx)
		if err != nil {
			if ctx.Err() == nil && !sqlitex.IsBusy(err) {
				d.log.Warn("read data_version", "error", err)
			}
			return
		}
		if v != lastVersion {
			if lastVersion != -1 {
				lastChange = lastCheck
				arm(false)
			}
			lastVersion = v
			select {
			case notify <- struct{}{}:
			default:
			}
		} else if !armed && lastCheck.Sub(lastChange) >= quietBeforeInotify {
			arm(true)
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			if armed && ev.Name == d.walPath && time.Since(lastCheck) >= d.opts.PollInterval/4 {
				check()
			}
		case <-d.opts.Wake:
			if time.Since(lastCheck) >= d.opts.PollInterval/4 {
				check()
			}
		case <-poll.C:
			check()
		}
	}
}

// runUploads uploads new L0 files as they appear, at most once per the
// replica's sync interval, retrying failures after the interval.
func (r *replica) runUploads(ctx context.Context) {
	retry := time.NewTicker(max(r.opts.SyncInterval, time.Second))
	defer retry.Stop()
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.wake:
		case <-retry.C:
		}
		if wait := r.opts.SyncInterval - time.Since(last); wait > 0 && r.opts.SyncInterval > r.d.opts.minSyncInterval() {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
		last = time.Now()
		err := r.uploadPending(ctx)
		switch {
		case errors.Is(err, ErrFenced):
			return
		case err == nil:
			r.upFails.ok(r.d.clock.Now(), "txid", r.position())
		case ctx.Err() == nil:
			r.upFails.fail(r.d.clock.Now(), err, "txid", r.position())
		}
	}
}

// runMaintenance compacts each level on its interval, enforces retention
// and notices when a snapshot is due.
func (r *replica) runMaintenance(ctx context.Context) {
	tick := time.NewTicker(min(time.Second, r.d.opts.MonitorInterval))
	defer tick.Stop()
	start := time.Now()
	nextCompact := make([]time.Time, len(r.d.opts.Levels))
	for i, iv := range r.d.opts.Levels {
		nextCompact[i] = start.Add(iv)
	}
	nextRetention := start.Add(r.opts.RetentionCheckInterval)
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if r.d.fencedErr() != nil {
			return
		}
		now := time.Now()
		for i, iv := range r.d.opts.Levels {
			if now.Before(nextCompact[i]) {
				continue
			}
			nextCompact[i] = now.Add(iv)
			if err := r.compact(ctx, i+1); err != nil && ctx.Err() == nil {
				r.log.Error("compaction failed", "level", i+1, "error", err)
			}
			if i == 0 {
				r.d.gcLocalAsync()
			}
		}
		if !now.Before(nextRetention) {
			nextRetention = now.Add(r.opts.RetentionCheckInterval)
			if err := r.enforceRetention(ctx); err != nil && ctx.Err() == nil {
				r.log.Error("retention failed", "error", err)
			}
		}
		if r.snapshotDue(r.d.clock.Now()) && len(r.d.pendingSnapshots(r)) == 0 {
			r.mu.Lock()
			was := r.snapDue
			r.snapDue = true
			r.mu.Unlock()
			if !was {
				r.d.requestSnapshot()
			}
		}
		// Snapshots queued for this replica are uploaded by its uploader.
		if len(r.d.pendingSnapshots(r)) > 0 {
			r.poke()
		}
	}
}

// gcLocalAsync runs gcLocal when the shipper is not busy.
func (d *DB) gcLocalAsync() {
	if d.mu.TryLock() {
		d.gcLocal()
		d.mu.Unlock()
	}
}

// Sync ships everything committed now and waits until every replica has
// it (or ctx ends). Use it for the final sync on shutdown, before Close.
func (d *DB) Sync(ctx context.Context) error {
	d.mu.Lock()
	if !d.opened || d.closed {
		d.mu.Unlock()
		return fmt.Errorf("database %s: Sync on a closed database", d.opts.Path)
	}
	if err := d.fencedErr(); err != nil {
		d.mu.Unlock()
		return err
	}
	_, err := d.rotateAndSyncLocked(ctx, true)
	if hb, ok := isBreak(err); ok {
		err = d.handleBreakLocked(ctx, hb)
	}
	d.mu.Unlock()
	if err != nil {
		return err
	}
	errs := make([]error, len(d.replicas))
	var wg sync.WaitGroup
	for i, r := range d.replicas {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = r.uploadPending(ctx) }()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// haltWrites takes the database's write lock and keeps it until Close, so
// that the application cannot commit a history nobody will ship.
func (d *DB) haltWrites() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.halted || d.writer == nil {
		return nil
	}
	// Wait for the application's transaction in progress to end; a minute
	// is far longer than any sane transaction.
	err := d.lockLocked(context.Background(), time.Minute, false)
	if err == nil {
		d.keepWritesLocked()
		d.log.Error("halted the application's writes: another writer owns the replica history; this node must not write on",
			"txid", d.txid)
		return nil
	}
	return fmt.Errorf("database %s: could not halt writes: %w", d.opts.Path, err)
}
