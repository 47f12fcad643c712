package primary

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/understudy-db/understudy/internal/sqlitex"
	"github.com/understudy-db/understudy/internal/wal"
)

// Checkpoint decisions.
const (
	ckptNone    = ""
	ckptPassive = "PASSIVE"
	ckptRestart = "RESTART" // the quiesced WAL restart protocol
)

// checkpointMode decides the checkpoint after a sync from the number of
// frames in the WAL generation (all shipped at this point) and the frame
// count at the last PASSIVE checkpoint (no point in repeating one when the
// WAL has not grown).
//
// A PASSIVE checkpoint runs when the WAL holds min pages and then again
// every min pages (each one syncs the database file, so not every sync).
func checkpointMode(frames, lastPassive int64, minPages, maxPages int) string {
	switch {
	case frames >= int64(maxPages) && frames > lastPassive:
		return ckptRestart
	case frames >= int64(minPages) && frames-lastPassive >= int64(minPages):
		return ckptPassive
	}
	return ckptNone
}

// checkpointUnlockedLocked runs a checkpoint on the checkpoint connection,
// releasing the checkpoint lock for it (ckptlock.go) and taking it back
// after. Callers hold a pin at or before the shipped position (or the
// write lock with everything shipped), which protects the WAL meanwhile.
func (d *DB) checkpointUnlockedLocked(ctx context.Context, mode string) (sqlitex.CheckpointResult, error) {
	held := d.ckl.isHeld()
	d.ckl.release()
	var r sqlitex.CheckpointResult
	var err error
	if mode == ckptPassive {
		r, err = d.passiveLocked(ctx)
	} else {
		r, err = d.ckpt.Checkpoint(ctx, mode)
	}
	if held {
		d.ckl.acquire(ckptLockWait)
	}
	return r, err
}

// passiveLocked runs a PASSIVE checkpoint, trying again for up to
// passiveBusyRetry while another checkpointer holds the checkpoint lock
// (SQLite reports that as -1/-1 and never waits for it, whatever the busy
// handler). The other one is nearly always the application's own
// autocheckpoint, which takes the lock in the moment ours lets it go and
// keeps it for its fsyncs: a debug log of a saturating 1-row writer had
// half of the catch-up rounds before a WAL restart end busy at once, so
// that the write-locked window then had to copy back everything (holds of
// 30-90 ms) or failed (-1) and was repeated.
func (d *DB) passiveLocked(ctx context.Context) (sqlitex.CheckpointResult, error) {
	r, err := d.ckpt.Checkpoint(ctx, ckptPassive)
	for retry := time.Now(); err == nil && r.Log < 0 && time.Since(retry) < passiveBusyRetry; {
		if passiveBusyHook != nil {
			passiveBusyHook()
		}
		time.Sleep(lockRetryEvery)
		r, err = d.ckpt.Checkpoint(ctx, ckptPassive)
	}
	return r, err
}

// passiveBusyHook, when set (tests), is called before each retry.
var passiveBusyHook func()

// passiveBusyRetry bounds how long a PASSIVE checkpoint waits for another
// checkpointer (one fsync or two of the application's autocheckpoint).
const passiveBusyRetry = 25 * time.Millisecond

// ckptLockWait bounds how long the checkpoint lock is waited for after
// our own checkpoint (the application's autocheckpoint may have taken it
// meanwhile; it is short, bounded by our pin). If it is not back, the pin
// stays until a later step takes it.
const ckptLockWait = 20 * time.Millisecond

func (d *DB) checkpointLocked(ctx context.Context) error {
	if !d.haveWAL || d.halted {
		return nil
	}
	frames := wal.FrameIndex(d.walPos.Offset, d.pageSize)
	mode := checkpointMode(frames, d.lastCkptAt, d.opts.MinCheckpointPageCount, d.opts.MaxCheckpointPageCount)
	if mode == ckptRestart && d.snapshotting {
		// The snapshot's read transaction keeps the WAL from restarting
		// until it ends: do not hold the application's writes for nothing.
		mode = checkpointMode(frames, d.lastCkptAt, d.opts.MinCheckpointPageCount, math.MaxInt)
	}
	switch mode {
	case ckptPassive:
		r, err := d.checkpointUnlockedLocked(ctx, "PASSIVE")
		d.m.checkpoints.WithLabelValues(d.metricsDB(), "passive").Inc()
		if err != nil {
			return err
		}
		d.lastCkptAt = frames
		d.log.Debug("checkpoint", "mode", "passive", "log", r.Log, "checkpointed", r.Checkpointed)
	case ckptRestart:
		return d.restartWALLocked(ctx)
	}
	return nil
}

// restartWALLocked lets the WAL start over, following the protocol of
// SQLITE-NOTES.md that had no unexpected restarts: PASSIVE checkpoint; take
// the write lock; ship the rest of the WAL; check that SQLite's frame count
// equals the last shipped frame; release the pin; PASSIVE again (copies
// everything, nothing can be in the way of the pages we pinned); re-pin;
// release the write lock. The next writer then restarts the WAL, which the
// shipper expects. Only called when caught up, so the hold is the time to
// ship a small tail. "Ship" here is: copy the tail's pages into the stage
// (stage.go: no fsync) and advance the shipped position; the L0 file that
// holds them is written at the end of the sync interval, which took the
// hold from 5-10 ms to about 1 ms (the application sleeps in its busy
// handler for at least as long). A crash before it is written loses
// nothing: the local position is then behind a restarted WAL, which is a
// history break at the next Open (a full image).
func (d *DB) restartWALLocked(ctx context.Context) error {
	if err := d.catchUpBackfillLocked(ctx); err != nil {
		return err
	}
	var after int64
	var tSync, tNoop, tCkpt time.Duration
	err := d.quiesceLocked(ctx, restartLockWait, true, func() error {
		t0 := time.Now()
		// Stage the tail only: writing and syncing an L0 file (most of the
		// hold, and the application sleeps in its busy handler meanwhile)
		// waits for the sync interval.
		_, err := d.syncLocked(ctx, false)
		if err != nil {
			return err
		}
		tSync = time.Since(t0)
		r, err := d.ckpt.Checkpoint(ctx, "NOOP")
		tNoop = time.Since(t0)
		if err != nil {
			return err
		}
		shipped := wal.FrameIndex(d.walPos.Offset, d.pageSize)
		if r.Log != shipped {
			return fmt.Errorf("WAL restart skipped: SQLite reports %d frames, shipped %d", r.Log, shipped)
		}
		d.endPinLocked(d.pinIdx)
		d.pinIdx = -1
		// Our own checkpoint needs the checkpoint lock; the write lock
		// and the shipped tail protect the WAL until the pin is back.
		held := d.ckl.isHeld()
		d.ckl.release()
		if held {
			defer d.ckl.acquire(0) // not waiting with the write lock held: relaxPinLocked retries
		}
		// The application's own autocheckpoint runs right after its commit,
		// outside the write lock, so it is often still running now and
		// holds the checkpoint lock (PASSIVE reports busy, -1/-1): then the
		// WAL would not restart and the hold was for nothing. It ends soon
		// (it needs no write lock); passiveLocked tries again for a while.
		r2, cerr := d.passiveLocked(ctx)
		tCkpt = time.Since(t0)
		d.m.checkpoints.WithLabelValues(d.metricsDB(), "restart").Inc()
		idx, perr := d.startPinLocked()
		if perr != nil {
			return perr
		}
		d.pinIdx = idx
		if cerr != nil {
			return cerr
		}
		after = r2.Checkpointed
		// We saw the end of this generation under the write lock: a restart
		// by the next writer continues our history.
		d.expectRestart = true
		return nil
	})
	if err != nil {
		return err
	}
	d.walRestarts++
	// Until the WAL restarts (or grows), do not repeat.
	d.lastCkptAt = wal.FrameIndex(d.walPos.Offset, d.pageSize)
	// The file keeps its size: the next writer overwrites it from the
	// start, in place, as SQLite does on its own. Truncating it here made a
	// busy application allocate and zero the file's blocks again on every
	// restart (perf: ext4 block allocation under pwrite). The space is
	// given back once the database is quiet (truncateIfIdleLocked).
	d.truncatePending = true
	d.log.Debug("checkpoint", "mode", "restart", "checkpointed", after, "max_hold", d.maxHold,
		"hold_sync", tSync, "hold_noop", tNoop, "hold_ckpt", tCkpt)
	return nil
}

// Limits of the catch-up before a WAL restart.
const (
	// restartBacklogDiv: a quarter of max-checkpoint-page-count may be
	// left to copy back when the write lock is taken: the hold grows with
	// it, and the WAL grows with every round that makes it smaller.
	restartBacklogDiv = 4
	// restartCatchUpRounds bounds the rounds of ship + PASSIVE; a writer
	// faster than the checkpoint leaves more, which the hold then takes.
	restartCatchUpRounds = 4
)

// catchUpBackfillLocked ships what is committed and copies it back into
// the database (PASSIVE, under the new pin) in rounds until little is left
// for the write-locked window of a restart. Under a writer that commits
// 100 MB/s in long transactions the window otherwise had to ship and copy
// back everything written while the lock was awaited: holds of 2 s and
// hundreds of MB of tail read into memory.
func (d *DB) catchUpBackfillLocked(ctx context.Context) error {
	prev := int64(-1)
	for round := 0; ; round++ {
		// Copy back what the pin covers, then ship what came meanwhile:
		// the last thing before the lock is a sync, so the tail left for
		// the window is what the lock took to get.
		r, err := d.checkpointUnlockedLocked(ctx, "PASSIVE")
		if err != nil {
			return err
		}
		d.m.checkpoints.WithLabelValues(d.metricsDB(), "passive").Inc()
		if _, err := d.rotateAndSyncLocked(ctx, false); err != nil {
			return err
		}
		n, err := d.ckpt.Checkpoint(ctx, "NOOP")
		if err != nil {
			return err
		}
		backlog := n.Log - n.Checkpointed
		d.log.Debug("catching up before a WAL restart", "round", round, "passive_log", r.Log,
			"passive_checkpointed", r.Checkpointed, "backlog", backlog)
		// Done when little is left, after the last round, or when a round
		// did not shrink the backlog by a quarter: the application writes
		// about as fast as we ship and copy back, and only the write lock
		// (the restart's window) can hold it back.
		if backlog <= int64(d.opts.MaxCheckpointPageCount/restartBacklogDiv) || round+1 >= restartCatchUpRounds || (prev >= 0 && backlog > prev*3/4) {
			return nil
		}
		prev = backlog
	}
}

// truncateIfIdleLocked gives the disk space of the WAL back after a
// quiesced restart once syncs have found nothing new for MonitorInterval:
// TRUNCATE, without
// waiting. Only while no writer has started a new generation since the
// restart (expectRestart): then the WAL holds only frames we shipped. It is
// safe in any case: new frames cannot be copied back past our pin (whose
// snapshot is never past the shipped position), so a TRUNCATE that would
// have to discard unshipped frames reports busy instead.
func (d *DB) truncateIfIdleLocked(ctx context.Context) {
	if !d.truncatePending || d.halted || d.clock.Now().Sub(d.lastSync) < d.opts.MonitorInterval {
		// Not quiet yet: an application that got SQLITE_BUSY during the
		// restart sleeps in its busy handler for a few milliseconds, and a
		// TRUNCATE then would make it grow the file again.
		return
	}
	if !d.expectRestart {
		// A new generation is being written in place of the old one.
		d.truncatePending = false
		return
	}
	tr, err := d.checkpointUnlockedLocked(ctx, "TRUNCATE")
	if err != nil || tr.Busy {
		return // the next idle sync tries again
	}
	d.truncatePending = false
	d.m.checkpoints.WithLabelValues(d.metricsDB(), "truncate").Inc()
	d.log.Debug("checkpoint", "mode", "truncate")
}
