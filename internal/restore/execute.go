package restore

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/internal/dbsum"
	"github.com/understudy-db/understudy/internal/storage"
)

// readBufferSize is the read-ahead per downloading file: large enough that
// the decoder's many small reads do not each reach the store's stream.
const readBufferSize = 256 << 10

// fileResult is what decoding one file of the plan found.
type fileResult struct {
	pages int         // pages in the file (all of them, applied or not)
	trail ltx.Trailer // after a verified Close
	hdr   ltx.Header  // as decoded from the stream
	md    *storage.Metadata
}

// download streams the plan's files from the store with at most parallelism
// files in flight, decodes them, and hands their pages to page workers that
// checksum and write them through the applier. Memory is bounded by the
// buffer pool: a file is never held whole.
type download struct {
	client  storage.Client
	files   []storage.FileInfo
	headers []FileHeader
	limits  []uint32 // per file: pages above this are truncated later in the plan
	app     *applier
	results []fileResult

	pageSize int
	bufs     chan []byte
	jobs     chan pageJob

	bytesDone atomic.Int64
	filesDone atomic.Int64

	errOnce  sync.Once
	firstErr error
	cancel   context.CancelFunc
}

type pageJob struct {
	idx  int
	pgno uint32
	buf  []byte
}

// pageLimits returns, for each file, the page count below which its pages
// survive: the smallest Commit of it and every later file (a later file that
// shrinks the database truncates the pages above its Commit).
func pageLimits(headers []FileHeader) []uint32 {
	limits := make([]uint32, len(headers))
	var min uint32
	for i := len(headers) - 1; i >= 0; i-- {
		c := headers[i].Header.Commit
		if i == len(headers)-1 || c < min {
			min = c
		}
		limits[i] = min
	}
	return limits
}

func (d *download) fail(err error) {
	d.errOnce.Do(func() {
		d.firstErr = err
		d.cancel()
	})
}

// run downloads and applies every file. It returns the first error.
func (d *download) run(ctx context.Context, parallelism int) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	d.cancel = cancel

	workers := runtime.GOMAXPROCS(0)
	nbufs := 4*workers + 2*parallelism
	d.bufs = make(chan []byte, nbufs)
	for i := 0; i < nbufs; i++ {
		d.bufs <- make([]byte, d.pageSize)
	}
	d.jobs = make(chan pageJob, 2*workers)
	d.results = make([]fileResult, len(d.files))

	var wwg sync.WaitGroup
	for i := 0; i < workers; i++ {
		wwg.Add(1)
		go func() {
			defer wwg.Done()
			d.pageWorker(ctx)
		}()
	}

	var fwg sync.WaitGroup
	sem := make(chan struct{}, parallelism)
	for i := range d.files {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		fwg.Add(1)
		go func(i int) {
			defer fwg.Done()
			defer func() { <-sem }()
			if err := d.file(ctx, i); err != nil {
				d.fail(err)
				return
			}
			d.filesDone.Add(1)
		}(i)
	}
	fwg.Wait()
	close(d.jobs)
	wwg.Wait()
	if d.firstErr != nil {
		return d.firstErr
	}
	return ctx.Err()
}

func (d *download) pageWorker(ctx context.Context) {
	for job := range d.jobs {
		if ctx.Err() == nil {
			sum := dbsum.Page(job.pgno, job.buf)
			if err := d.app.write(job.idx, job.pgno, job.buf, sum); err != nil {
				d.fail(fmt.Errorf("restored file: %w", err))
			}
		}
		d.bufs <- job.buf
	}
}

// file downloads, decodes and verifies the plan's file i.
func (d *download) file(ctx context.Context, i int) error {
	f := d.files[i]
	name := FileName(f)
	obj, err := d.client.Open(ctx, f.Level, f.MinTXID, f.MaxTXID, 0, -1)
	if errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("%s: %w: the object is gone from the store: %v", name, ErrMissingFile, err)
	} else if err != nil {
		return fmt.Errorf("%s: open: %w", name, err)
	}
	defer obj.Close()

	dec := ltx.NewDecoder(bufio.NewReaderSize(&countingReader{r: obj, n: &d.bytesDone}, readBufferSize))
	dec.SetRetainPageIndex(false)
	if err := dec.DecodeHeader(); err != nil {
		return d.decodeErr(ctx, name, "header", err)
	}
	hdr := dec.Header()
	want := d.headers[i].Header
	if hdr != want {
		return fmt.Errorf("%s: %w: header changed between reads (the object was replaced during the restore)", name, ErrCorrupt)
	}
	if int(hdr.PageSize) != d.pageSize {
		return fmt.Errorf("%s: %w: page size %d differs from the snapshot's %d", name, ErrCorrupt, hdr.PageSize, d.pageSize)
	}
	limit := d.limits[i]
	lockPgno := hdr.LockPgno()
	var ph ltx.PageHeader
	for {
		var buf []byte
		select {
		case buf = <-d.bufs:
		case <-ctx.Done():
			return ctx.Err()
		}
		err := dec.DecodePage(&ph, buf)
		if err == io.EOF {
			d.bufs <- buf
			break
		} else if err != nil {
			d.bufs <- buf
			return d.decodeErr(ctx, name, fmt.Sprintf("page %d", dec.PageN()+1), err)
		}
		if ph.Pgno > hdr.Commit {
			d.bufs <- buf
			return fmt.Errorf("%s: %w: page %d is beyond the database size of %d pages in its header", name, ErrCorrupt, ph.Pgno, hdr.Commit)
		}
		if ph.Pgno == lockPgno || ph.Pgno > limit {
			d.bufs <- buf
			continue
		}
		select {
		case d.jobs <- pageJob{idx: i, pgno: ph.Pgno, buf: buf}:
		case <-ctx.Done():
			d.bufs <- buf
			return ctx.Err()
		}
	}
	if err := dec.Close(); err != nil {
		return d.decodeErr(ctx, name, "page index and trailer", err)
	}
	d.results[i] = fileResult{pages: dec.PageN(), trail: dec.Trailer(), hdr: hdr, md: d.headers[i].Metadata}
	if f.Level == storage.SnapshotLevel && !isFullImage(hdr, dec.PageN()) {
		return fmt.Errorf("%s: %w: a snapshot of %d pages holds only %d pages", name, ErrCorrupt, hdr.Commit, dec.PageN())
	}
	return nil
}

// decodeErr classifies a decoding error: a canceled restore is not a
// corrupt object.
func (d *download) decodeErr(ctx context.Context, name, part string, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if errors.Is(err, ltx.ErrChecksumMismatch) {
		return fmt.Errorf("%s: %w: file checksum mismatch (the object's bytes changed after it was written)", name, ErrCorrupt)
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%s: %w: truncated in the %s", name, ErrCorrupt, part)
	}
	return fmt.Errorf("%s: %w: cannot decode the %s: %v", name, ErrCorrupt, part, err)
}

// isFullImage reports whether a file with n pages holds every page of a
// database of hdr.Commit pages (the lock page is never stored).
func isFullImage(hdr ltx.Header, n int) bool {
	want := int(hdr.Commit)
	if hdr.LockPgno() <= hdr.Commit {
		want--
	}
	return n == want
}

type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}
