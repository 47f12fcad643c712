package primary

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/internal/sqlitex"
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
	if d.imagePending == "" {
		d.log.Warn("writing a full snapshot as the next TXID", "txid", d.txid+1, "reason", reason)
	} else {
		d.log.Debug("retrying the full snapshot as the next TXID", "txid", d.txid+1, "reason", reason)
	}
	d.imagePending = reason
	if err := d.captureLocked(ctx, false); err != nil {
		return fmt.Errorf("snapshot %s: %w", d.opts.Path, err)
	}
	if err := d.writeFullImageCapturedLocked(ctx, reason); err != nil {
		return err
	}
	d.imagePending = ""
	return nil
}

// handleBreakLocked recovers from a history break with a full image,
// reconnecting first if the database file was replaced.
func (d *DB) handleBreakLocked(ctx context.Context, hb *historyBreak) error {
	if hb.reopen {
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
	bw0 := newAsyncWriter(l0, encodeBufFor(n, d.pageSize))
	defer bw0.Flush() // ends its goroutine on every path
	e0, err := d.newEncoder(bw0, txid, txid, uint32(n), now, noWALSpan)
	if err != nil {
		return err
	}
	defer e0.Cleanup()
	encode := func(pgno uint32, data []byte) error {
		if err := e0.EncodePage(ltx.PageHeader{Pgno: pgno}, data); err != nil {
			return fmt.Errorf("encode page %d: %w", pgno, err)
		}
		return nil
	}
	// TXID 1 (an empty store): the L0 file is a snapshot (MinTXID 1), the
	// level-9 one is the same file, linked (copied where links fail): one
	// encoding, not two, of the first full copy.
	var snap *os.File
	var e9 *ltx.Encoder
	var bw9 *asyncWriter
	if txid > 1 {
		if snap, err = d.local.tempFile("snapshot-*.ltx"); err != nil {
			return err
		}
		defer removeUnlessKept(&snap)
		bw9 = newAsyncWriter(snap, encodeBufFor(n, d.pageSize))
		defer bw9.Flush()
		if e9, err = d.newEncoder(bw9, 1, txid, uint32(n), now, walSpan{}); err != nil {
			return err
		}
		defer e9.Cleanup()
		l0only := encode
		encode = func(pgno uint32, data []byte) error {
			if err := l0only(pgno, data); err != nil {
				return err
			}
			return e9.EncodePage(ltx.PageHeader{Pgno: pgno}, data)
		}
	}
	img, err := d.readImageLocked(ctx, encode)
	if err != nil {
		return fmt.Errorf("snapshot %s: %w", d.opts.Path, err)
	}
	pre := d.checksum
	if txid == 1 {
		pre = 0
	}
	md := fileMeta{TXID: txid, Pre: pre, Post: img.table.checksum(), CommitTime: now, Pages: int(img.pages), Commit: img.pages, Full: true}
	if err := d.finishLocal(l0, bw0, e0, &md); err != nil {
		return err
	}
	smd := md
	smd.Pre, smd.Full = 0, false
	if e9 != nil {
		if err := closeEncoder(e9, bw9); err != nil {
			return fmt.Errorf("encode snapshot 1-%s: %w", txid, err)
		}
		smd.Size = e9.N()
		if err := snap.Close(); err != nil {
			return err
		}
	} else if snap, err = d.local.linkTemp(d.local.path(txid), "snapshot-*.ltx"); err != nil {
		return fmt.Errorf("snapshot 1-%s: %w", txid, err)
	}
	name := snap.Name()
	snap = nil // kept: queued below
	d.table = img.table
	d.advanceLocked(md)
	if err := d.savePositionLocked(); err != nil {
		os.Remove(name)
		return err
	}
	d.m.snapshots.WithLabelValues(d.metricsDB(), "history-break").Inc()
	d.fullImages++
	d.queueSnapshot(txid, name, smd, d.replicas)
	d.log.Info("wrote full image", "txid", txid, "pages", img.pages, "size", md.Size, "reason", reason)
	return nil
}

// removeUnlessKept closes and removes *f unless it was set to nil (kept).
func removeUnlessKept(f **os.File) {
	if *f != nil {
		(*f).Close()
		os.Remove((*f).Name())
	}
}

// snapshotLocked writes a level-9 snapshot of the database at the current
// TXID for the given replicas and queues it, all with d.mu held (the ship
// loop reads the image without it: startSnapshotAsyncLocked).
func (d *DB) snapshotLocked(ctx context.Context, targets []*replica, reason string) error {
	sr, err := d.beginSnapshotLocked(ctx, targets, reason)
	if err != nil || sr == nil {
		return err
	}
	return d.finishSnapshotLocked(ctx, sr, sr.read(ctx))
}

// startSnapshotAsyncLocked begins a snapshot under d.mu and reads its image
// in the background, so the shipper keeps syncing meanwhile: reading a
// large database takes seconds per GiB, and with the shipper's lock held
// for that long nothing was shipped (the RPO) and the WAL could not
// restart. Only one runs at a time; Close waits for it.
func (d *DB) startSnapshotAsyncLocked(ctx context.Context, targets []*replica, reason string) error {
	if d.snapshotting {
		return nil
	}
	sr, err := d.beginSnapshotLocked(ctx, targets, reason)
	if err != nil || sr == nil {
		return err
	}
	d.snapshotting = true
	d.snapWG.Add(1)
	go func() {
		defer d.snapWG.Done()
		rerr := sr.read(ctx)
		d.mu.Lock()
		defer d.mu.Unlock()
		d.snapshotting = false
		if err := d.finishSnapshotLocked(ctx, sr, rerr); err != nil && ctx.Err() == nil && d.fencedErr() == nil {
			d.log.Error("snapshot failed", "txid", sr.txid, "error", err)
		}
	}()
	return nil
}

// snapshotRead is a snapshot being written: a read transaction of its own
// at exactly TXID txid, and what the shipper knew at that point.
type snapshotRead struct {
	d       *DB
	conn    *sqlitex.Conn // in a read transaction at txid; closed by finish
	connGen int64
	targets []*replica
	reason  string
	txid    ltx.TXID
	sum     ltx.Checksum // the rolling checksum at txid
	pages   uint32       // the page table's size at txid
	now     time.Time

	// view: how to read conn's image from the files (imagefile.go).
	view   imageView
	viewOK bool

	file *os.File // the snapshot file, written by read
	img  *image
	size int64
}

// beginSnapshotLocked ships the committed tail under the write lock and,
// still under it, starts a read transaction on a connection of the
// snapshot's own, which therefore sees exactly the shipped TXID. nil, nil:
// nothing to snapshot yet.
func (d *DB) beginSnapshotLocked(ctx context.Context, targets []*replica, reason string) (*snapshotRead, error) {
	conn, err := sqlitex.Open(ctx, d.realPath, connOpts(0))
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", d.opts.Path, err)
	}
	inTx := false
	var view imageView
	var viewOK bool
	err = d.captureThenLocked(ctx, true, func() error {
		if err := conn.Exec(ctx, "BEGIN"); err != nil {
			return err
		}
		inTx = true
		// The read transaction starts at its first read.
		if _, err := conn.Int(ctx, "SELECT count(*) FROM sqlite_master"); err != nil {
			return err
		}
		view, viewOK = d.viewLocked(ctx)
		return nil
	})
	if err != nil {
		closeSnapshotConn(conn, inTx)
		if hb, ok := isBreak(err); ok {
			return nil, d.handleBreakLocked(ctx, hb)
		}
		return nil, err
	}
	if d.txid == 0 {
		closeSnapshotConn(conn, inTx)
		return nil, nil
	}
	return &snapshotRead{d: d, conn: conn, connGen: d.connGen.Load(), targets: targets, reason: reason,
		txid: d.txid, sum: d.checksum, pages: d.table.commit(), now: d.clock.Now(), view: view, viewOK: viewOK}, nil
}

func closeSnapshotConn(c *sqlitex.Conn, inTx bool) {
	if inTx {
		c.Exec(context.Background(), "ROLLBACK")
	}
	c.Close()
}

// read writes the snapshot file from the snapshot's read transaction. It
// touches no shipper state, so it runs without d.mu.
func (sr *snapshotRead) read(ctx context.Context) (err error) {
	d := sr.d
	if d.snapshotReadHook != nil {
		d.snapshotReadHook()
	}
	if sr.file, err = d.local.tempFile("snapshot-*.ltx"); err != nil {
		return err
	}
	n, err := sr.conn.Int(ctx, "PRAGMA page_count")
	if err != nil {
		return err
	}
	bw := newAsyncWriter(sr.file, encodeBufFor(int64(n), d.pageSize))
	defer bw.Flush()
	enc, err := d.newEncoder(bw, 1, sr.txid, uint32(n), sr.now, walSpan{})
	if err != nil {
		return err
	}
	defer enc.Cleanup()
	encode := func(pgno uint32, data []byte) error { return enc.EncodePage(ltx.PageHeader{Pgno: pgno}, data) }
	if sr.viewOK {
		sr.img, err = readImageFile(sr.view, d.walPath, uint32(n), d.pageSize, encode)
	} else {
		sr.img, err = readImage(ctx, sr.conn, d.pageSize, encode)
	}
	if err != nil {
		return fmt.Errorf("snapshot %s: %w", d.opts.Path, err)
	}
	if err := closeEncoder(enc, bw); err != nil {
		return fmt.Errorf("encode snapshot 1-%s: %w", sr.txid, err)
	}
	sr.size = enc.N()
	return sr.file.Close()
}

// finishSnapshotLocked checks the image read against the shipped history
// and queues the snapshot for upload (or drops it, given readErr or if the
// world moved on meanwhile). The image's checksum must equal the rolling
// checksum at its TXID, which checks the page table end to end.
func (d *DB) finishSnapshotLocked(ctx context.Context, sr *snapshotRead, readErr error) error {
	closeSnapshotConn(sr.conn, true)
	keep := false
	defer func() {
		if sr.file != nil && !keep {
			sr.file.Close()
			os.Remove(sr.file.Name())
		}
	}()
	switch {
	case readErr != nil:
		return readErr
	case d.closed || d.halted || d.connGen.Load() != sr.connGen:
		// Shut down, halted, or the database file was replaced (that is
		// a full image of its own): this snapshot is of no use.
		return nil
	}
	if sr.img.table.checksum() != sr.sum || sr.img.pages != sr.pages {
		d.log.Error("database checksum drifted from the shipped history; writing a full image",
			"txid", sr.txid, "rolling", sr.sum, "image", sr.img.table.checksum())
		return d.writeFullImageLocked(ctx, "checksum drift")
	}
	keep = true
	md := fileMeta{TXID: sr.txid, Post: sr.sum, CommitTime: sr.now, Size: sr.size, Pages: int(sr.img.pages), Commit: sr.img.pages}
	d.m.snapshots.WithLabelValues(d.metricsDB(), sr.reason).Inc()
	d.queueSnapshot(sr.txid, sr.file.Name(), md, sr.targets)
	d.log.Info("wrote snapshot", "txid", sr.txid, "pages", sr.img.pages, "size", md.Size, "reason", sr.reason)
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
		PostApplyChecksum: md.Post, DatabaseID: d.dbID, DatabasePath: d.opts.Path}
	if pre {
		out.PreApplyChecksum = md.Pre
	}
	return out
}
