package primary

import (
	"context"
	"fmt"
	"os"
	"sync"

	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/internal/storage"
)

// snapshotJob is a level-9 snapshot file waiting to be uploaded to some
// replicas. The file is removed when every target has it.
type snapshotJob struct {
	txid    ltx.TXID
	path    string
	md      fileMeta
	mu      sync.Mutex
	targets map[string]bool // replica name -> still to upload
}

// writeFullImageLocked handles a history break: the next TXID is a full
// image of the database. It is written twice from one read of the pages:
//   - as the L0 file n+1 holding every page (Commit = page count), so that
//     the L0 chain stays contiguous and a follower at n that applies it ends
//     up byte-identical whatever its state was;
//   - as the level-9 snapshot 1-(n+1), which restores need no history
//     before (ltx: a file with MinTXID 1 is a snapshot).
//
// For n+1 == 1 (empty stores) both are the same file, a snapshot.
func (d *DB) writeFullImageLocked(ctx context.Context, reason string) error {
	d.log.Warn("writing a full snapshot as the next TXID", "txid", d.txid+1, "reason", reason)
	if err := d.captureLocked(ctx, false); err != nil {
		return fmt.Errorf("snapshot %s: %w", d.opts.Path, err)
	}
	return d.writeFullImageCapturedLocked(ctx, reason)
}

// handleBreakLocked recovers from a history break with a full image,
// reconnecting first if the database file was replaced.
func (d *DB) handleBreakLocked(ctx context.Context, hb *historyBreak) error {
	if hb.reopen {
		d.log.Warn("database file replaced; reconnecting", "txid", d.txid)
		if err := d.reopenLocked(ctx); err != nil {
			return err
		}
	}
	return d.writeFullImageLocked(ctx, hb.reason)
}

// writeFullImageCapturedLocked is writeFullImageLocked after the capture.
func (d *DB) writeFullImageCapturedLocked(ctx context.Context, reason string) error {
	txid := d.txid + 1
	now := d.clock.Now()
	pin := d.pins[d.pinIdx]
	n, err := pin.Int(ctx, "PRAGMA page_count")
	if err != nil {
		return err
	}
	l0, err := d.local.tempFile("full-*.ltx")
	if err != nil {
		return err
	}
	defer os.Remove(l0.Name())
	defer l0.Close()
	snap, err := d.local.tempFile("snapshot-*.ltx")
	if err != nil {
		return err
	}
	keepSnap := false
	defer func() {
		if !keepSnap {
			snap.Close()
			os.Remove(snap.Name())
		}
	}()
	e0, err := d.newEncoder(l0, txid, txid, uint32(n), now)
	if err != nil {
		return err
	}
	defer e0.Cleanup()
	e9, err := d.newEncoder(snap, 1, txid, uint32(n), now)
	if err != nil {
		return err
	}
	defer e9.Cleanup()
	img, err := d.readImageLocked(ctx, func(pgno uint32, data []byte) error {
		if err := e0.EncodePage(ltx.PageHeader{Pgno: pgno}, data); err != nil {
			return fmt.Errorf("encode page %d: %w", pgno, err)
		}
		return e9.EncodePage(ltx.PageHeader{Pgno: pgno}, data)
	})
	if err != nil {
		return fmt.Errorf("snapshot %s: %w", d.opts.Path, err)
	}
	pre := d.checksum
	if txid == 1 {
		pre = 0
	}
	md := fileMeta{TXID: txid, Pre: pre, Post: img.table.checksum(), CommitTime: now, Pages: int(img.pages), Commit: img.pages}
	if err := d.finishLocal(l0, e0, &md); err != nil {
		return err
	}
	smd := md
	smd.Pre = 0
	if err := e9.Close(); err != nil {
		return fmt.Errorf("encode snapshot 1-%s: %w", txid, err)
	}
	smd.Size = e9.N()
	if err := snap.Close(); err != nil {
		return err
	}
	keepSnap = true
	d.table = img.table
	d.advanceLocked(md)
	if err := d.savePositionLocked(); err != nil {
		return err
	}
	d.m.snapshots.WithLabelValues(d.opts.Path, "history-break").Inc()
	d.fullImages++
	d.queueSnapshot(txid, snap.Name(), smd, d.replicas)
	d.log.Info("wrote full image", "txid", txid, "pages", img.pages, "size", md.Size, "reason", reason)
	return nil
}

// snapshotLocked writes a level-9 snapshot of the database at the current
// TXID for the given replicas: the tail is shipped under the write lock and
// the pin placed exactly there, then the pages are read through the pin.
// The image's checksum must equal the rolling checksum, which checks the
// page table end to end.
func (d *DB) snapshotLocked(ctx context.Context, targets []*replica, reason string) error {
	if err := d.captureLocked(ctx, true); err != nil {
		if hb, ok := isBreak(err); ok {
			return d.handleBreakLocked(ctx, hb)
		}
		return err
	}
	if d.txid == 0 {
		return nil
	}
	txid := d.txid
	now := d.clock.Now()
	pin := d.pins[d.pinIdx]
	n, err := pin.Int(ctx, "PRAGMA page_count")
	if err != nil {
		return err
	}
	snap, err := d.local.tempFile("snapshot-*.ltx")
	if err != nil {
		return err
	}
	keep := false
	defer func() {
		if !keep {
			snap.Close()
			os.Remove(snap.Name())
		}
	}()
	enc, err := d.newEncoder(snap, 1, txid, uint32(n), now)
	if err != nil {
		return err
	}
	defer enc.Cleanup()
	img, err := d.readImageLocked(ctx, func(pgno uint32, data []byte) error {
		return enc.EncodePage(ltx.PageHeader{Pgno: pgno}, data)
	})
	if err != nil {
		return fmt.Errorf("snapshot %s: %w", d.opts.Path, err)
	}
	if img.table.checksum() != d.checksum || img.pages != d.table.commit() {
		d.log.Error("database checksum drifted from the shipped history; writing a full image",
			"txid", txid, "rolling", d.checksum, "image", img.table.checksum())
		return d.writeFullImageCapturedLocked(ctx, "checksum drift")
	}
	if err := enc.Close(); err != nil {
		return fmt.Errorf("encode snapshot 1-%s: %w", txid, err)
	}
	if err := snap.Close(); err != nil {
		return err
	}
	keep = true
	md := fileMeta{TXID: txid, Post: d.checksum, CommitTime: now, Size: enc.N(), Pages: int(img.pages), Commit: img.pages}
	d.m.snapshots.WithLabelValues(d.opts.Path, reason).Inc()
	d.queueSnapshot(txid, snap.Name(), md, targets)
	d.log.Info("wrote snapshot", "txid", txid, "pages", img.pages, "size", md.Size, "reason", reason)
	return nil
}

// queueSnapshot moves a finished snapshot file into the shadow directory
// (it survives a restart there) and queues it for the targets.
func (d *DB) queueSnapshot(txid ltx.TXID, tmp string, md fileMeta, targets []*replica) {
	path, err := d.local.commitSnapshot(tmp, md)
	if err != nil {
		d.log.Error("keep snapshot", "txid", txid, "error", err)
		os.Remove(tmp)
		return
	}
	d.queueSnapshotFile(txid, path, md, targets)
}

// requeueSnapshots queues, at Open, the snapshots an earlier process wrote
// but did not upload everywhere.
func (d *DB) requeueSnapshots() {
	queued := map[ltx.TXID]bool{}
	d.snapMu.Lock()
	for _, j := range d.snapshots {
		queued[j.txid] = true
	}
	d.snapMu.Unlock()
	for _, md := range d.local.snapshots() {
		if queued[md.TXID] {
			continue
		}
		var targets []*replica
		for _, r := range d.replicas {
			if !r.hasFile(storage.SnapshotLevel, 1, md.TXID) {
				targets = append(targets, r)
			}
		}
		if len(targets) == 0 || md.TXID > d.txid {
			d.local.removeSnapshot(md.TXID)
			continue
		}
		d.queueSnapshotFile(md.TXID, d.local.snapshotPath(md.TXID), md, targets)
	}
}

func (d *DB) queueSnapshotFile(txid ltx.TXID, path string, md fileMeta, targets []*replica) {
	j := &snapshotJob{txid: txid, path: path, md: md, targets: map[string]bool{}}
	for _, r := range targets {
		j.targets[r.name] = true
		r.mu.Lock()
		r.snapDue = false
		r.mu.Unlock()
	}
	d.snapMu.Lock()
	d.snapshots = append(d.snapshots, j)
	d.snapMu.Unlock()
	for _, r := range targets {
		r.poke()
	}
}

// pendingSnapshots returns the jobs that still target r, oldest first.
func (d *DB) pendingSnapshots(r *replica) []*snapshotJob {
	d.snapMu.Lock()
	defer d.snapMu.Unlock()
	var out []*snapshotJob
	for _, j := range d.snapshots {
		j.mu.Lock()
		if j.targets[r.name] {
			out = append(out, j)
		}
		j.mu.Unlock()
	}
	return out
}

// snapshotDone marks j uploaded to r and drops finished jobs.
func (d *DB) snapshotDone(j *snapshotJob, r *replica) {
	j.mu.Lock()
	delete(j.targets, r.name)
	done := len(j.targets) == 0
	j.mu.Unlock()
	if !done {
		return
	}
	d.snapMu.Lock()
	for i, x := range d.snapshots {
		if x == j {
			d.snapshots = append(d.snapshots[:i], d.snapshots[i+1:]...)
			break
		}
	}
	d.snapMu.Unlock()
	d.local.removeSnapshot(j.txid)
}

// snapshotMetadata is the store metadata of a snapshot job.
func (d *DB) storeMetadata(md fileMeta, pre bool) storage.Metadata {
	out := storage.Metadata{Node: d.opts.Node, FencingToken: d.opts.FencingToken(), CommitTime: md.CommitTime,
		PostApplyChecksum: md.Post}
	if pre {
		out.PreApplyChecksum = md.Pre
	}
	return out
}
