package primary

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/internal/dbsum"
	"github.com/understudy-db/understudy/internal/wal"
)

// imageView says how to read, straight from the files, the database image
// that a read transaction started under the write lock sees: the database
// file, with the newest frame of each page the WAL holds up to end laid
// over it when the WAL was not fully copied back (overlay). Reading pages
// one row at a time through sqlite_dbpage cost about 11 s per GiB; large
// sequential reads of the file run at page-cache speed.
//
// Why it is exact, as long as the read transaction is held: when SQLite
// reported every frame copied back (checkpointed == log) at the start of
// the transaction, the database file is the image, and no checkpoint can
// write to it while the transaction lasts (a reader of the file alone
// holds read mark 0, which every checkpoint needs exclusively; a reader
// with a nonzero mark stops the copy at its mark, which is the end of the
// WAL here). Otherwise the transaction holds a nonzero read mark at the
// end of the WAL: no writer can restart the WAL, so frames up to end stay
// as they are, and a checkpoint copies back only frames up to end, whose
// pages the overlay takes from the WAL anyway (a page the checkpoint is
// writing while it is read is never used).
type imageView struct {
	dbf     *os.File // the database file, open for the life of the DB
	overlay bool
	hdr     wal.Header
	end     wal.Position
}

// viewLocked decides the imageView of a read transaction that was just
// started under the write lock at the shipped position. ok is false when
// the files cannot be read directly (no descriptor of the database file).
func (d *DB) viewLocked(ctx context.Context) (imageView, bool) {
	if d.dbf == nil || d.dbfIno != d.inode {
		return imageView{}, false
	}
	r, err := d.ckpt.Checkpoint(ctx, "NOOP")
	if err != nil || r.Log < 0 {
		return imageView{}, false
	}
	v := imageView{dbf: d.dbf, overlay: r.Checkpointed < r.Log}
	if v.overlay {
		if !d.haveWAL || wal.FrameIndex(d.walPos.Offset, d.pageSize) != r.Log {
			return imageView{}, false // not at the end of the WAL: let SQLite read it
		}
		v.hdr, v.end = d.walHdr, d.walPos
	}
	return v, true
}

// imageChunkPages is how many pages are read, checksummed and handed on
// at once (1 MiB of 4 KiB pages).
const imageChunkPages = 256

// readImageFile reads the n pages of view from the database file (and
// the WAL at walPath) and passes each, in order and the lock page skipped,
// to fn (nil = checksums only). Reading, checksumming and fn overlap: the
// next chunk is read while the page checksums of the current one are
// computed beside fn.
func readImageFile(view imageView, walPath string, n, pageSize uint32, fn func(pgno uint32, data []byte) error) (*image, error) {
	var overlay map[uint32]int64
	var wf *os.File
	if view.overlay {
		f, err := os.Open(walPath) // reading "-wal" is safe (SQLITE-NOTES.md)
		if err != nil {
			return nil, fmt.Errorf("read image: %w", err)
		}
		defer f.Close()
		b, err := wal.Scan(f, view.hdr, wal.Start(view.hdr), 0, view.end.Offset)
		if err != nil {
			return nil, fmt.Errorf("read image: %w", err)
		}
		if b.End != view.end {
			return nil, fmt.Errorf("read image: the WAL ends at %d, not at the pinned %d", b.End.Offset, view.end.Offset)
		}
		overlay, wf = b.Pages, f
	}
	t := newPageTable(pageSize)
	ps := int64(pageSize)
	type chunk struct {
		first uint32 // page number of buf[0:pageSize]
		count uint32
		buf   []byte
		err   error
	}
	// Three buffers keep reading, checksumming and fn overlapping; a
	// database of fewer chunks gets fewer, and a small one a buffer of its
	// size (the first start of many small databases allocates one each).
	free := make(chan []byte, 3)
	chunkBytes := min(int64(imageChunkPages), max(int64(n), 1)) * ps
	for range min(int64(cap(free)), (int64(n)+imageChunkPages-1)/imageChunkPages) {
		free <- make([]byte, chunkBytes)
	}
	chunks := make(chan chunk, cap(free)-1)
	stop := make(chan struct{})
	var readers sync.WaitGroup
	readers.Add(1)
	go func() {
		defer readers.Done()
		defer close(chunks)
		for first := uint32(1); first <= n; first += imageChunkPages {
			var buf []byte
			select {
			case buf = <-free:
			case <-stop:
				return
			}
			c := chunk{first: first, count: min(imageChunkPages, n-first+1), buf: buf}
			c.buf = c.buf[:int64(c.count)*ps]
			c.err = readChunk(view.dbf, wf, overlay, c.first, c.buf, pageSize)
			chunks <- c
			if c.err != nil {
				return
			}
		}
	}()
	defer func() {
		close(stop)
		for c := range chunks {
			_ = c // drain so the reader ends
		}
		readers.Wait()
	}()
	changes := make([]pageSum, 0, n)
	for c := range chunks {
		if c.err != nil {
			return nil, c.err
		}
		sums := make([]pageSum, 0, c.count)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range c.count {
				p := c.first + i
				if p != t.lockPgno {
					sums = append(sums, pageSum{p, dbsum.Page(p, c.buf[int64(i)*ps:int64(i+1)*ps])})
				}
			}
		}()
		var err error
		if fn != nil {
			for i := uint32(0); i < c.count && err == nil; i++ {
				if p := c.first + i; p != t.lockPgno {
					err = fn(p, c.buf[int64(i)*ps:int64(i+1)*ps])
				}
			}
		}
		wg.Wait()
		if err != nil {
			return nil, err
		}
		changes = append(changes, sums...)
		free <- c.buf[:cap(c.buf)]
	}
	t.apply(changes, n)
	return &image{table: t, pages: n}, nil
}

// readChunk reads the pages first.. of buf from the database file and
// lays the overlay's WAL frames over them.
func readChunk(dbf, wf *os.File, overlay map[uint32]int64, first uint32, buf []byte, pageSize uint32) error {
	ps := int64(pageSize)
	got, err := dbf.ReadAt(buf, int64(first-1)*ps)
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("read database pages %d..: %w", first, err)
	}
	count := uint32(int64(len(buf)) / ps)
	for i := range count {
		p := first + i
		page := buf[int64(i)*ps : int64(i+1)*ps]
		if off, ok := overlay[p]; ok {
			if err := wal.PageData(wf, off, page); err != nil {
				return err
			}
			continue
		}
		if int64(i+1)*ps > int64(got) && p != ltx.LockPgno(pageSize) {
			// Past the end of the file and not in the WAL: the image
			// is not what the files hold (or the file was truncated
			// under us).
			return fmt.Errorf("read database page %d: past the end of the file (%d bytes) and not in the WAL", p, int64(first-1)*ps+int64(got))
		}
	}
	return nil
}
