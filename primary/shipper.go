package primary

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/internal/dbsum"
	"github.com/understudy-db/understudy/internal/sqlitex"
	"github.com/understudy-db/understudy/internal/wal"
)

// historyBreak means the WAL history since the shipped position cannot be
// followed; the only correct recovery is a full image as the next TXID.
// reopen: the database file was replaced; connect to the new one first.
type historyBreak struct {
	reason string
	reopen bool
}

func (h *historyBreak) Error() string { return "history break: " + h.reason }

func isBreak(err error) (*historyBreak, bool) {
	var hb *historyBreak
	ok := errors.As(err, &hb)
	return hb, ok
}

// startPinLocked starts a read transaction on the idle pin connection. A
// read transaction with a nonzero read mark stops every checkpoint from
// resetting the WAL (SQLITE-NOTES.md), so frames not yet shipped survive.
func (d *DB) startPinLocked() (int, error) {
	i := 0
	if d.pinIdx == 0 {
		i = 1
	}
	c := d.pins[i]
	ctx := context.Background() // never interrupt a pin half-way
	if d.ckl.isHeld() && d.ckl.walIndexNeedsRecovery() {
		// A writer died half-way through a commit: the wal-index must be
		// rebuilt, which needs the checkpoint lock. Let it go (the pin
		// starting now protects the WAL instead); our pin's read does the
		// recovery if no one else has.
		d.log.Warn("the wal-index needs a recovery; letting the checkpoint lock go")
		d.ckl.release()
	}
	d.pinSeq++
	err := d.beginPin(ctx, c)
	if err != nil && d.ckl.isHeld() {
		// Whatever it was, try once more without standing in the way.
		d.ckl.release()
		err = d.beginPin(ctx, c)
	}
	if err != nil {
		return -1, fmt.Errorf("pin the WAL: %w", err)
	}
	return i, nil
}

// beginPin starts the read transaction of a pin on c.
func (d *DB) beginPin(ctx context.Context, c *sqlitex.Conn) error {
	if err := c.Exec(ctx, "BEGIN"); err != nil {
		return err
	}
	if _, err := c.Int(ctx, "SELECT count(*) FROM sqlite_master"); err != nil {
		c.Exec(ctx, "ROLLBACK")
		return err
	}
	return nil
}

func (d *DB) endPinLocked(i int) {
	if i >= 0 && d.pins[i] != nil {
		if err := d.pins[i].Exec(context.Background(), "COMMIT"); err != nil {
			d.log.Warn("release WAL pin", "error", err)
		}
	}
}

// relaxPinLocked ends the pin between syncs when the checkpoint lock
// protects the WAL instead (ckptlock.go), taking the lock if it is free.
// Without the lock the pin stays, as in the notes' protocol.
func (d *DB) relaxPinLocked() {
	if d.halted || d.pinIdx < 0 || !d.ckl.acquire(0) {
		return
	}
	d.endPinLocked(d.pinIdx)
	d.pinIdx = -1
}

// rotateAndSyncLocked moves the pin forward and ships what is committed:
// the new pin starts first, then the WAL is read to its end (which covers
// everything the new pin sees), and only then the old pin is released. So
// no checkpoint can ever pass, and no writer restart, a frame not shipped.
func (d *DB) rotateAndSyncLocked(ctx context.Context, final bool) (bool, error) {
	newIdx, err := d.startPinLocked()
	if err != nil {
		return false, err
	}
	shipped, err := d.syncLocked(ctx, final)
	if err != nil {
		d.endPinLocked(newIdx)
		return false, err
	}
	old := d.pinIdx
	d.pinIdx = newIdx
	d.endPinLocked(old)
	return shipped, nil
}

// Limits on waiting for the write lock. The application may commit in a
// tight loop; SQLite's busy handler sleeps 1, 2, 5, 10... ms between tries
// and loses to such a writer for a long time (seen: 1.3 s, while the WAL
// grew by 300 MB that then had to be shipped under the lock). So the
// shipper tries often, with no busy handler, and keeps shipping while it
// waits so that the tail left for the locked window stays small.
const (
	lockRetryEvery   = 100 * time.Microsecond
	lockSpin         = 5 * time.Millisecond   // grabWriteLock's spin per try
	lockHandOver     = 100 * time.Microsecond // see lockLocked
	lockCatchUpEvery = 10 * time.Millisecond
	// waits: a WAL restart gives up quickly (the next sync tries again);
	// a capture for a snapshot or at Open waits longer.
	restartLockWait = 250 * time.Millisecond
	captureLockWait = 5 * time.Second
)

// lockLocked takes the database's write lock (BEGIN IMMEDIATE on the
// writer connection, which has no busy timeout), retrying until maxWait.
// With catchUp it ships what is committed every few milliseconds while it
// waits.
func (d *DB) lockLocked(ctx context.Context, maxWait time.Duration, catchUp bool) error {
	deadline := time.Now().Add(maxWait)
	lastCatchUp := time.Now()
	for {
		if d.ckl.grabWriteLock(lockSpin) {
			// Hold it a moment so that a writer between two transactions
			// tries, fails and sleeps in its busy handler, then hand it
			// over to the writer connection.
			time.Sleep(lockHandOver)
			d.ckl.dropWriteLock()
		}
		err := d.writer.Exec(ctx, "BEGIN IMMEDIATE")
		if err == nil {
			return nil
		}
		if !sqlitex.IsBusy(err) || time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("take the write lock: %w", err)
		}
		if catchUp && time.Since(lastCatchUp) >= lockCatchUpEvery {
			// Staged only: the wait must not make a TXID (a PUT) every
			// few milliseconds.
			if _, err := d.syncLocked(ctx, false); err != nil {
				return err
			}
			lastCatchUp = time.Now()
		}
		time.Sleep(lockRetryEvery)
	}
}

// quiesceLocked runs fn while holding the database's write lock, so that no
// transaction commits meanwhile. The hold is measured and reported.
func (d *DB) quiesceLocked(ctx context.Context, maxWait time.Duration, catchUp bool, fn func() error) error {
	if d.halted {
		return fn()
	}
	if err := d.lockLocked(ctx, maxWait, catchUp); err != nil {
		return err
	}
	t0 := time.Now()
	err := fn()
	if !d.leaseSafe() {
		// The safe window ended while the lock was held (or the process
		// was paused in between): keep it, so that no application write
		// lands between now and the halt the lease loss brings.
		d.keepHaltedLocked(errLeaseUnsafe)
		return errors.Join(err, d.fencedErr())
	}
	if rerr := d.writer.Exec(context.Background(), "ROLLBACK"); rerr != nil && err == nil {
		err = fmt.Errorf("release the write lock: %w", rerr)
	}
	hold := time.Since(t0)
	if hold > d.maxHold {
		d.maxHold = hold
		d.m.writeHold.WithLabelValues(d.metricsDB()).Set(hold.Seconds())
	}
	return err
}

// openWAL opens the -wal file and reads its header. ok is false if there is
// no WAL or no valid header (an empty WAL holds no frames).
func (d *DB) openWAL() (*os.File, wal.Header, bool, error) {
	f, err := os.Open(d.walPath)
	if errors.Is(err, os.ErrNotExist) {
		return nil, wal.Header{}, false, nil
	} else if err != nil {
		return nil, wal.Header{}, false, fmt.Errorf("open %s: %w", d.walPath, err)
	}
	h, err := wal.ReadHeader(f)
	if errors.Is(err, wal.ErrNoHeader) {
		f.Close()
		return nil, wal.Header{}, false, nil
	} else if err != nil {
		f.Close()
		return nil, wal.Header{}, false, err
	}
	return f, h, true, nil
}

// captureLocked brings the shipper to an exact, known point under the write
// lock and pins it there: with shipTail the committed tail is shipped first
// (the image then equals TXID d.txid); without, the WAL is read from its
// start to its last commit (the position of a fresh image). Either way the
// new pin's snapshot is exactly d.walPos, and since everything up to the
// end of the WAL generation has been seen, a restart that follows is
// expected.
func (d *DB) captureLocked(ctx context.Context, shipTail bool) error {
	return d.captureThenLocked(ctx, shipTail, nil)
}

// captureThenLocked is captureLocked, running then (if not nil) while the
// write lock is still held, with the new pin at the captured point.
func (d *DB) captureThenLocked(ctx context.Context, shipTail bool, then func() error) error {
	return d.quiesceLocked(ctx, captureLockWait, shipTail, func() error {
		if shipTail {
			if _, err := d.syncLocked(ctx, true); err != nil {
				return err
			}
		} else {
			f, h, ok, err := d.openWAL()
			if err != nil {
				return err
			}
			// The image read at this position covers what was staged.
			d.stage.reset()
			d.haveWAL, d.walHdr, d.walPos = ok, h, wal.Position{}
			if ok {
				if h.PageSize != d.pageSize {
					f.Close()
					return fmt.Errorf("%s: WAL page size %d differs from the database's %d", d.walPath, h.PageSize, d.pageSize)
				}
				b, err := wal.Scan(f, h, wal.Start(h), 0, 0)
				f.Close()
				if err != nil {
					return err
				}
				d.walPos = b.End
				r, err := d.ckpt.Checkpoint(ctx, "NOOP")
				if err != nil {
					return err
				}
				// SQLite knowing more frames than we could read would mean
				// frames we cannot see; fewer is a restart not yet written.
				if r.Log > wal.FrameIndex(b.End.Offset, d.pageSize) {
					return fmt.Errorf("%s: SQLite reports %d WAL frames but only %d validate; refusing to guess",
						d.walPath, r.Log, wal.FrameIndex(b.End.Offset, d.pageSize))
				}
			}
		}
		idx, err := d.startPinLocked()
		if err != nil {
			return err
		}
		d.endPinLocked(d.pinIdx)
		d.pinIdx = idx
		d.expectRestart = true
		d.view, d.viewOK = d.viewLocked(ctx)
		d.viewSeq = d.pinSeq
		if then != nil {
			return then()
		}
		return nil
	})
}

// image is a database image read through the pin.
type image struct {
	table *pageTable
	pages uint32
}

// readImageLocked reads every page through the pin's read transaction (so
// at exactly the pinned position, via sqlite_dbpage: never by opening the
// database file) and passes each to fn (nil = checksums only).
func (d *DB) readImageLocked(ctx context.Context, fn func(pgno uint32, data []byte) error) (*image, error) {
	if d.pinIdx < 0 {
		return nil, errors.New("read image: no pin")
	}
	if d.viewOK && d.viewSeq == d.pinSeq {
		// The pin is the capture's: read the files directly.
		n, err := d.pins[d.pinIdx].Int(ctx, "PRAGMA page_count")
		if err != nil {
			return nil, err
		}
		return readImageFile(d.view, d.walPath, uint32(n), d.pageSize, fn)
	}
	return readImage(ctx, d.pins[d.pinIdx], d.pageSize, fn)
}

// readImage reads every page of the database as c's read transaction sees
// it (c must be in one) and passes each to fn (nil = checksums only).
func readImage(ctx context.Context, c *sqlitex.Conn, pageSize uint32, fn func(pgno uint32, data []byte) error) (*image, error) {
	n, err := c.Int(ctx, "PRAGMA page_count")
	if err != nil {
		return nil, err
	}
	rows, err := c.Query(ctx, "SELECT pgno, data FROM sqlite_dbpage WHERE pgno <= ?", n)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	t := newPageTable(pageSize)
	changes := make([]pageSum, 0, n)
	var pgno uint32
	var data []byte
	for rows.Next() {
		if err := rows.Scan(&pgno, &data); err != nil {
			return nil, fmt.Errorf("read page: %w", err)
		}
		if pgno == t.lockPgno {
			continue
		}
		if uint32(len(data)) != pageSize {
			return nil, fmt.Errorf("read page %d: %d bytes, want %d", pgno, len(data), pageSize)
		}
		changes = append(changes, pageSum{pgno, dbsum.Page(pgno, data)})
		if fn != nil {
			if err := fn(pgno, data); err != nil {
				return nil, err
			}
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read pages of %s: %w", c.Path(), err)
	}
	t.apply(changes, uint32(n))
	return &image{table: t, pages: uint32(n)}, nil
}

// syncLocked reads the WAL from the shipped position and, if anything was
// committed, takes it: with final it becomes the next L0 file, together
// with whatever earlier syncs staged; without, it is only staged (stage.go)
// and the shipped WAL position moves past it, so that checkpoints may copy
// it back and the WAL restart, but no TXID is made. It returns a
// *historyBreak when the WAL cannot be followed.
func (d *DB) syncLocked(ctx context.Context, final bool) (bool, error) {
	if err := d.fencedErr(); err != nil {
		return false, err
	}
	if !d.halted && !d.leaseSafe() {
		// Nothing is shipped past the lease's safe window (a planned
		// hand-off halts first, and ships what was committed before).
		d.fence(errLeaseUnsafe)
		return false, d.fencedErr()
	}
	if d.imagePending != "" {
		// The full image read covers what was staged too.
		d.stage.reset()
		return false, &historyBreak{reason: d.imagePending}
	}
	t0 := time.Now()
	if err := d.checkLinkLocked(); err != nil {
		return false, err
	}
	if ino, err := checkFile(d.realPath); err != nil {
		return false, err
	} else if ino != d.inode {
		return false, &historyBreak{reason: "the database file was replaced (new inode)", reopen: true}
	}
	f, h, ok, err := d.openWAL()
	if err != nil {
		return false, err
	}
	if !ok {
		return d.finishStageIfLocked(final)
	}
	defer f.Close()
	if h.PageSize != d.pageSize {
		return false, &historyBreak{reason: fmt.Sprintf("WAL page size %d differs from %d", h.PageSize, d.pageSize)}
	}
	start := d.walPos
	if !d.haveWAL || h.Salt1 != d.walHdr.Salt1 || h.Salt2 != d.walHdr.Salt2 {
		// A new WAL generation. The pin discipline makes every restart we
		// can observe safe: while a pin with a read mark is held no writer
		// can restart the WAL, and a pin without one (taken when the WAL
		// was fully checkpointed) blocks copying any newer frame back, so the
		// old generation can only have ended where the pin began, which we
		// shipped before releasing the previous pin. Still, where the old
		// generation's frames after our position survive in the file, check
		// that none of them was a commit we did not ship.
		if d.haveWAL && !d.expectRestart {
			if old, err := wal.Scan(f, d.walHdr, d.walPos, d.shippedCommit(), 0); err != nil {
				return false, err
			} else if old.Commits > 0 {
				return false, &historyBreak{reason: fmt.Sprintf(
					"the WAL restarted while it held %d committed frames that were not shipped", old.Frames)}
			}
		}
		start = wal.Start(h)
		d.walRestartsSeen++
	}
	b, err := wal.Scan(f, h, start, d.shippedCommit(), 0)
	if err != nil {
		return false, err
	}
	if st, err := f.Stat(); err == nil {
		d.m.walBytes.WithLabelValues(d.metricsDB()).Set(float64(st.Size()))
	}
	if b.Grown {
		return false, &historyBreak{reason: "a commit grew the database without writing its new pages"}
	}
	if b.Commits == 0 {
		return d.finishStageIfLocked(final)
	}
	if start.Offset == wal.HeaderSize && (!d.haveWAL || h.Salt1 != d.walHdr.Salt1 || h.Salt2 != d.walHdr.Salt2) {
		d.log.Debug("following new WAL generation", "salt1", h.Salt1, "salt2", h.Salt2)
		d.lastCkptAt = 0
	}
	if final && d.stage.empty() {
		// The common case: straight from the WAL into the L0 file.
		md, changes, err := d.writeL0(b, func(p uint32, buf []byte) error { return wal.PageData(f, b.Pages[p], buf) })
		if err != nil {
			return false, err
		}
		d.haveWAL, d.walHdr, d.walPos = true, h, b.End
		d.expectRestart = false
		d.finishSyncLocked(b, md, changes, t0)
		if err := d.savePositionLocked(); err != nil {
			return true, err
		}
		return true, nil
	}
	if err := d.stage.add(d.local, f, b, d.pageSize); err != nil {
		return false, err
	}
	d.haveWAL, d.walHdr, d.walPos = true, h, b.End
	d.expectRestart = false
	if final {
		return d.finishStageIfLocked(true)
	}
	return true, nil
}

// shippedCommit is the database size in pages at the shipped WAL position:
// the staged batches' if any, else the page table's.
func (d *DB) shippedCommit() uint32 {
	if !d.stage.empty() {
		return d.stage.batch.Commit
	}
	return d.table.commit()
}

// finishStageIfLocked writes what is staged as the next L0 file when final
// (and there is something). If that fails the pages stay staged and the
// next final sync tries again.
func (d *DB) finishStageIfLocked(final bool) (bool, error) {
	if !final || d.stage.empty() {
		return false, nil
	}
	t0 := time.Now()
	b := d.stage.batch
	md, changes, err := d.writeL0(b, d.stage.page)
	if err != nil {
		return false, err
	}
	d.finishSyncLocked(b, md, changes, t0)
	d.stage.reset()
	if err := d.savePositionLocked(); err != nil {
		return true, err
	}
	return true, nil
}

// finishSyncLocked makes a freshly written L0 file of batch b the head.
func (d *DB) finishSyncLocked(b *wal.Batch, md fileMeta, changes []pageSum, t0 time.Time) {
	d.table.apply(changes, b.Commit)
	d.framesShipped += int64(b.Frames)
	d.advanceLocked(md)
	d.lastSync = d.clock.Now()
	d.m.syncSeconds.WithLabelValues(d.metricsDB()).Observe(time.Since(t0).Seconds())
	d.log.Debug("sync", "txid", md.TXID, "pages", md.Pages, "commits", b.Commits, "frames", b.Frames,
		"size", md.Size, "db_pages", md.Commit, "wal_offset", b.End.Offset, "took", time.Since(t0))
}

// advanceLocked makes a freshly written local L0 file the new head.
func (d *DB) advanceLocked(md fileMeta) {
	d.txid, d.checksum = md.TXID, md.Post
	d.headSum.Store(uint64(md.Post))
	d.head.Store(uint64(md.TXID))
	for _, r := range d.replicas {
		r.poke()
	}
}

// walSpan is the stretch of the WAL an L0 file was read from, recorded in
// the LTX header as Litestream 0.5 records it. Litestream resumes from the
// newest L0 file of a replica it takes over: it continues reading the WAL at
// WALOffset+WALSize when the WAL's salts and the frame just before that
// offset match the file, and takes a snapshot otherwise. A zero span
// (offset 0) makes it fail on every sync ("prev WAL offset is less than the
// header size"), so every L0 file carries either its real span or noWALSpan.
type walSpan struct {
	Offset, Size int64
	Salt1, Salt2 uint32
}

// noWALSpan is the span of an L0 file that was not read from the WAL (a
// full image, a promotion claim): the WAL header's offset, no frames and
// zero salts, which no live WAL has, so that Litestream taking over the
// replica snapshots the database instead of trusting a WAL position.
var noWALSpan = walSpan{Offset: wal.HeaderSize}

// batchSpan is the WAL span of the frames batch b was scanned from.
func batchSpan(b *wal.Batch) walSpan {
	return walSpan{Offset: b.Start.Offset, Size: b.End.Offset - b.Start.Offset, Salt1: b.Salt1, Salt2: b.Salt2}
}

// newEncoder starts an LTX file exactly as Litestream 0.5 writes one: no
// database checksums in the file (they travel in the metadata), file
// checksum present, and for L0 files the WAL span they were read from
// (snapshots and compactions carry none, as Litestream's).
func (d *DB) newEncoder(w io.Writer, minTXID, maxTXID ltx.TXID, commit uint32, ts time.Time, span walSpan) (*ltx.Encoder, error) {
	enc, err := ltx.NewEncoder(w)
	if err != nil {
		return nil, err
	}
	enc.SetSpillDir(d.local.dir + "/tmp")
	if err := enc.EncodeHeader(ltx.Header{
		Version:   ltx.Version,
		Flags:     ltx.HeaderFlagNoChecksum,
		PageSize:  d.pageSize,
		Commit:    commit,
		MinTXID:   minTXID,
		MaxTXID:   maxTXID,
		Timestamp: ts.UnixMilli(),
		WALOffset: span.Offset,
		WALSize:   span.Size,
		WALSalt1:  span.Salt1,
		WALSalt2:  span.Salt2,
	}); err != nil {
		return nil, fmt.Errorf("encode ltx header %s-%s: %w", minTXID, maxTXID, err)
	}
	return enc, nil
}

// writeL0 writes the next L0 file from the newest version of each page in
// b (read by page) and commits it to the shadow directory. The page table
// is not changed; the caller applies the returned changes.
func (d *DB) writeL0(b *wal.Batch, page func(pgno uint32, buf []byte) error) (fileMeta, []pageSum, error) {
	txid := d.txid + 1
	now := d.clock.Now()
	pgnos := make([]uint32, 0, len(b.Pages))
	for p := range b.Pages {
		pgnos = append(pgnos, p)
	}
	slices.Sort(pgnos)
	tmp, err := d.local.tempFile("l0-*.ltx")
	if err != nil {
		return fileMeta{}, nil, err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	bw := bufio.NewWriterSize(tmp, encodeBufFor(int64(len(pgnos)), d.pageSize))
	enc, err := d.newEncoder(bw, txid, txid, b.Commit, now, batchSpan(b))
	if err != nil {
		return fileMeta{}, nil, err
	}
	defer enc.Cleanup()
	data := make([]byte, d.pageSize)
	changes := make([]pageSum, 0, len(pgnos))
	for _, p := range pgnos {
		if err := page(p, data); err != nil {
			return fileMeta{}, nil, err
		}
		changes = append(changes, pageSum{p, dbsum.Page(p, data)})
		if err := enc.EncodePage(ltx.PageHeader{Pgno: p}, data); err != nil {
			return fileMeta{}, nil, fmt.Errorf("encode page %d of TXID %s: %w", p, txid, err)
		}
	}
	md := fileMeta{TXID: txid, Pre: d.checksum, Post: d.table.preview(changes, b.Commit),
		CommitTime: now, Pages: len(pgnos), Commit: b.Commit}
	if err := d.finishLocal(tmp, bw, enc, &md); err != nil {
		return fileMeta{}, nil, err
	}
	return md, changes, nil
}

// encodeBufSize is the write buffer between an LTX encoder and its file:
// the encoder writes every page as three small writes (header, size,
// data), which unbuffered were a system call each: 43 % of the CPU of a
// 1 GiB full image.
const encodeBufSize = 1 << 20

// encodeBufFor is the write buffer for an LTX file of the given number of
// pages: encodeBufSize, or less for a small file. Each buffer is allocated
// and zeroed per file, and the first start of a directory of ten thousand
// two-page databases spent a tenth of its CPU zeroing 1 MiB buffers it
// wrote a few kilobytes through.
func encodeBufFor(pages int64, pageSize uint32) int {
	const overhead = 4 << 10 // header, trailer, page headers of a small file
	n := pages*(int64(pageSize)+64) + overhead
	return int(min(n, encodeBufSize))
}

// flusher is a write buffer (bufio.Writer, asyncWriter).
type flusher interface{ Flush() error }

// closeEncoder closes enc and flushes its buffer bw.
func closeEncoder(enc *ltx.Encoder, bw flusher) error {
	if err := enc.Close(); err != nil {
		return err
	}
	return bw.Flush()
}

// finishLocal closes the encoder (flushing bw), makes the temp file durable and moves it
// to its L0 name with its metadata.
func (d *DB) finishLocal(tmp *os.File, bw flusher, enc *ltx.Encoder, md *fileMeta) error {
	if err := closeEncoder(enc, bw); err != nil {
		return fmt.Errorf("encode TXID %s: %w", md.TXID, err)
	}
	md.Size = enc.N()
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return d.local.commitFile(tmp.Name(), *md)
}

// shipDeltaLocked ships, at Open, the frames after the local position as
// the next TXID: the capture proved they continue the shipped history
// (d.proof). Their pages are read through the pin, which sees exactly the
// captured position, so a WAL restart since the capture cannot change
// them; the captured image gives the exact database checksum after them.
func (d *DB) shipDeltaLocked(ctx context.Context, img *pageTable) error {
	b := d.proof.batch
	d.proof = walProof{}
	if b == nil || b.Commits == 0 {
		return d.writeFullImageCapturedLocked(ctx, "the WAL since the last position was not proven at the capture")
	}
	pin := d.pins[d.pinIdx]
	md, _, err := d.writeL0(b, func(p uint32, buf []byte) error {
		var data []byte
		if err := pin.QueryRow(ctx, "SELECT data FROM sqlite_dbpage WHERE pgno = ?", p).Scan(&data); err != nil {
			return fmt.Errorf("read page %d through the pin: %w", p, err)
		}
		if len(data) != len(buf) {
			return fmt.Errorf("read page %d through the pin: %d bytes, want %d", p, len(data), len(buf))
		}
		copy(buf, data)
		return nil
	})
	if err != nil {
		return err
	}
	md.Post = img.checksum()
	if err := writeJSON(d.local.metaPath(md.TXID), md); err != nil {
		return err
	}
	d.table = img
	d.advanceLocked(md)
	d.log.Info("shipped WAL written while the shipper was down", "txid", md.TXID, "pages", md.Pages, "commits", b.Commits)
	return nil
}
