package primary

import (
	"context"
	"fmt"

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

func (d *DB) checkpointLocked(ctx context.Context) error {
	if !d.haveWAL || d.halted {
		return nil
	}
	frames := wal.FrameIndex(d.walPos.Offset, d.pageSize)
	switch checkpointMode(frames, d.lastCkptAt, d.opts.MinCheckpointPageCount, d.opts.MaxCheckpointPageCount) {
	case ckptPassive:
		r, err := d.ckpt.Checkpoint(ctx, "PASSIVE")
		d.m.checkpoints.WithLabelValues(d.opts.Path, "passive").Inc()
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
// ship a small tail.
func (d *DB) restartWALLocked(ctx context.Context) error {
	if _, err := d.ckpt.Checkpoint(ctx, "PASSIVE"); err != nil {
		return err
	}
	d.m.checkpoints.WithLabelValues(d.opts.Path, "passive").Inc()
	var after int64
	err := d.quiesceLocked(ctx, restartLockWait, true, func() error {
		if _, err := d.syncLocked(ctx); err != nil {
			return err
		}
		r, err := d.ckpt.Checkpoint(ctx, "NOOP")
		if err != nil {
			return err
		}
		shipped := wal.FrameIndex(d.walPos.Offset, d.pageSize)
		if r.Log != shipped {
			return fmt.Errorf("WAL restart skipped: SQLite reports %d frames, shipped %d", r.Log, shipped)
		}
		d.endPinLocked(d.pinIdx)
		d.pinIdx = -1
		r2, cerr := d.ckpt.Checkpoint(ctx, "PASSIVE")
		d.m.checkpoints.WithLabelValues(d.opts.Path, "restart").Inc()
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
	// Give the disk space back if nobody is writing right now: TRUNCATE
	// without waiting. It is safe here: everything in the WAL is shipped,
	// and new frames cannot be copied back past our pin, so a TRUNCATE that
	// would have to discard unshipped frames reports busy instead.
	tr, terr := d.ckpt.Checkpoint(ctx, "TRUNCATE")
	truncated := terr == nil && !tr.Busy
	if truncated {
		d.m.checkpoints.WithLabelValues(d.opts.Path, "truncate").Inc()
	}
	d.log.Debug("checkpoint", "mode", "restart", "checkpointed", after, "truncated", truncated, "max_hold", d.maxHold)
	return nil
}
