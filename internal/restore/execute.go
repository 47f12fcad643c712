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
	"github.com/understudy-db/understudy/internal/storage/agecrypt"
)

// readBufferSize is the read-ahead per downloading file: large enough that
// the decoder's many small reads do not each reach the store's stream.
const readBufferSize = 256 << 10

// chunkBytes is the size of the runs of snapshot pages written with one
// call: big enough that system calls cost nothing next to the copying.
// (A variable so that tests can make runs of a few pages.)
var chunkBytes = 1 << 20

// chunkPagesFor is how many pages of pageSize make a run (at least one).
func chunkPagesFor(pageSize int) int {
	return max(chunkBytes/pageSize, 1)
}

// download streams the plan's files from the store, decodes and verifies
// them, and hands their pages to workers that checksum and write them
// through the applier, in the applier's two phases: the files after the
// snapshot (at most parallelism in flight), then the snapshot. Memory is
// bounded by the buffer pools: a file is never held whole.
type download struct {
	client  storage.Client
	files   []storage.FileInfo
	headers []FileHeader
	limits  []uint32 // per file: pages above this are truncated later in the plan
	app     *applier
	pages   []int // per file, once decoded and verified: its pages (applied or not)

	pageSize int

	bytesDone atomic.Int64
	filesDone atomic.Int64

	errOnce  sync.Once
	firstErr error
	cancel   context.CancelFunc
}

// pageJob is a run of n >= 1 decoded pages from first, from file idx.
type pageJob struct {
	idx   int
	first uint32
	data  []byte // the pages
	buf   []byte // the pool buffer data lives in
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
	d.pages = make([]int, len(d.files))
	workers := runtime.GOMAXPROCS(0)

	// Phase 1: the files after the snapshot, page by page.
	if len(d.files) > 1 {
		pool := newPool(2*workers+2*parallelism, d.pageSize)
		jobs := make(chan pageJob, 2*workers)
		done := d.startWorkers(ctx, workers, jobs, pool, func(j pageJob) error {
			return d.app.write(j.idx, j.first, j.data, dbsum.Page(j.first, j.data))
		})
		each(ctx, 1, len(d.files), parallelism, func(i int) {
			sink := &pageSink{idx: i, pool: pool, jobs: jobs}
			if err := d.file(ctx, i, sink); err != nil {
				d.fail(err)
			}
		})
		close(jobs)
		done()
		if d.firstErr != nil {
			return d.firstErr
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}

	// Phase 2: the snapshot, in runs of contiguous pages, decoded in
	// parallel where the format allows (snapshot.go).
	if err := d.snapshotFast(ctx, workers); !errors.Is(err, errSlowPath) {
		if err != nil {
			d.fail(blame(d.files[0], err))
			return d.firstErr
		}
		return ctx.Err()
	}
	chunkPages := chunkPagesFor(d.pageSize)
	pool := newPool(2*workers+1, chunkPages*d.pageSize)
	jobs := make(chan pageJob, workers)
	done := d.startWorkers(ctx, workers, jobs, pool, func(j pageJob) error {
		var sum dbsum.Sum
		for k := 0; k*d.pageSize < len(j.data); k++ {
			sum = sum.Add(dbsum.Page(j.first+uint32(k), j.data[k*d.pageSize:(k+1)*d.pageSize]))
		}
		if err := d.app.writeBase(j.first, j.data); err != nil {
			return err
		}
		d.app.addBaseSum(sum)
		return nil
	})
	sink := &runSink{pool: pool, jobs: jobs, pageSize: d.pageSize, chunkPages: chunkPages, app: d.app}
	if err := d.file(ctx, 0, sink); err != nil {
		d.fail(err)
	}
	close(jobs)
	done()
	if d.firstErr != nil {
		return d.firstErr
	}
	return ctx.Err()
}

// each calls fn(i) for every i in [from, to) with at most parallelism calls
// in flight, starting none once ctx is done, and waits for the calls.
func each(ctx context.Context, from, to, parallelism int, fn func(i int)) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, parallelism)
	for i := from; i < to; i++ {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			fn(i)
		}(i)
	}
	wg.Wait()
}

// startWorkers starts n workers applying jobs; the returned function waits
// for them after jobs is closed. Every job's buffer goes back to pool.
func (d *download) startWorkers(ctx context.Context, n int, jobs <-chan pageJob, pool chan []byte, apply func(pageJob) error) (wait func()) {
	var wg sync.WaitGroup
	for w := 0; w < n; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				if ctx.Err() == nil {
					if err := apply(j); err != nil {
						d.fail(fmt.Errorf("restored file: %w", err))
					}
				}
				pool <- j.buf
			}
		}()
	}
	return wg.Wait
}

func newPool(n, size int) chan []byte {
	pool := make(chan []byte, n)
	for i := 0; i < n; i++ {
		pool <- make([]byte, size)
	}
	return pool
}

// take waits for a buffer from pool, or for ctx to end.
func take(ctx context.Context, pool chan []byte) ([]byte, error) {
	select {
	case buf := <-pool:
		return buf, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// sink receives the pages of one file as it is decoded: buffer gives the
// page-sized slice to decode the next page into; keep or drop says what
// becomes of it; flush ends the file.
type sink interface {
	buffer(ctx context.Context) ([]byte, error)
	keep(ctx context.Context, pgno uint32) error
	drop(pgno uint32) bool // reports whether the page is to be skipped anyway
	flush(ctx context.Context) error
}

// pageSink sends each page as its own job (phase 1).
type pageSink struct {
	idx  int
	pool chan []byte
	jobs chan<- pageJob
	cur  []byte
}

func (s *pageSink) buffer(ctx context.Context) ([]byte, error) {
	if s.cur == nil {
		buf, err := take(ctx, s.pool)
		if err != nil {
			return nil, err
		}
		s.cur = buf
	}
	return s.cur, nil
}

func (s *pageSink) keep(ctx context.Context, pgno uint32) error {
	select {
	case s.jobs <- pageJob{idx: s.idx, first: pgno, data: s.cur, buf: s.cur}:
		s.cur = nil
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *pageSink) drop(uint32) bool { return false }

func (s *pageSink) flush(context.Context) error {
	if s.cur != nil {
		s.pool <- s.cur
		s.cur = nil
	}
	return nil
}

// runSink gathers contiguous snapshot pages into runs (phase 2), leaving
// out the pages a later file wrote in phase 1.
type runSink struct {
	pool       chan []byte
	jobs       chan<- pageJob
	pageSize   int
	chunkPages int
	app        *applier

	cur   []byte
	first uint32 // page number of the run's first page
	n     int    // pages in the run; the next page decodes into slot n
}

func (s *runSink) buffer(ctx context.Context) ([]byte, error) {
	if s.cur == nil {
		buf, err := take(ctx, s.pool)
		if err != nil {
			return nil, err
		}
		s.cur, s.n = buf, 0
	}
	return s.cur[s.n*s.pageSize : (s.n+1)*s.pageSize], nil
}

func (s *runSink) drop(pgno uint32) bool { return s.app.ownedLater(pgno) }

func (s *runSink) keep(ctx context.Context, pgno uint32) error {
	if s.n > 0 && pgno != s.first+uint32(s.n) {
		// Not contiguous: send the run so far and start a new one with
		// the page just decoded.
		old, n := s.cur, s.n
		s.cur = nil
		if _, err := s.buffer(ctx); err != nil {
			s.pool <- old
			return err
		}
		copy(s.cur[:s.pageSize], old[n*s.pageSize:(n+1)*s.pageSize])
		if err := s.send(ctx, old, n); err != nil {
			return err
		}
	}
	if s.n == 0 {
		s.first = pgno
	}
	s.n++
	if s.n == s.chunkPages {
		buf, n := s.cur, s.n
		s.cur, s.n = nil, 0
		return s.send(ctx, buf, n)
	}
	return nil
}

func (s *runSink) send(ctx context.Context, buf []byte, n int) error {
	select {
	case s.jobs <- pageJob{first: s.first, data: buf[:n*s.pageSize], buf: buf}:
		return nil
	case <-ctx.Done():
		s.pool <- buf
		return ctx.Err()
	}
}

func (s *runSink) flush(ctx context.Context) error {
	if s.cur == nil {
		return nil
	}
	buf, n := s.cur, s.n
	s.cur, s.n = nil, 0
	if n == 0 {
		s.pool <- buf
		return nil
	}
	return s.send(ctx, buf, n)
}

// file downloads, decodes and verifies the plan's file i, handing the pages
// to apply to sink.
func (d *download) file(ctx context.Context, i int, sink sink) error {
	err := d.decodeFile(ctx, i, sink)
	if ferr := sink.flush(ctx); err == nil {
		err = ferr
	}
	if err == nil {
		d.filesDone.Add(1)
	}
	return blame(d.files[i], err)
}

func (d *download) decodeFile(ctx context.Context, i int, sink sink) error {
	f := d.files[i]
	name := FileName(f)
	obj, err := openFile(ctx, d.client, f, 0, -1)
	if err != nil {
		return err
	}
	defer obj.Close()

	src := &countingReader{r: obj, n: &d.bytesDone}
	dec := ltx.NewDecoder(bufio.NewReaderSize(src, readBufferFor(f.Size)))
	dec.SetRetainPageIndex(false)
	if err := dec.DecodeHeader(); err != nil {
		return decodeErr(ctx, src, name, "header", err)
	}
	hdr := dec.Header()
	if hdr != d.headers[i].Header {
		return fmt.Errorf("%s: %w: header changed between reads (the object was replaced during the restore)", name, ErrCorrupt)
	}
	if int(hdr.PageSize) != d.pageSize {
		return fmt.Errorf("%s: %w: page size %d differs from the snapshot's %d", name, ErrCorrupt, hdr.PageSize, d.pageSize)
	}
	limit := d.limits[i]
	lockPgno := hdr.LockPgno()
	// The database's size before this file: the pages above it are new, and
	// the file must hold every one of them (checkFits).
	var prevCommit uint32
	if i > 0 {
		prevCommit = d.headers[i-1].Header.Commit
	}
	var shape fileShape
	var ph ltx.PageHeader
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		buf, err := sink.buffer(ctx)
		if err != nil {
			return err
		}
		err = dec.DecodePage(&ph, buf)
		if err == io.EOF {
			break
		} else if err != nil {
			return decodeErr(ctx, src, name, fmt.Sprintf("page %d", dec.PageN()+1), err)
		}
		if ph.Pgno > hdr.Commit {
			return fmt.Errorf("%s: %w: page %d is beyond the database size of %d pages in its header", name, ErrCorrupt, ph.Pgno, hdr.Commit)
		}
		shape.add(ph.Pgno, prevCommit, lockPgno)
		if ph.Pgno == lockPgno || ph.Pgno > limit || sink.drop(ph.Pgno) {
			continue
		}
		if err := sink.keep(ctx, ph.Pgno); err != nil {
			return err
		}
	}
	if err := dec.Close(); err != nil {
		return decodeErr(ctx, src, name, "page index and trailer", err)
	}
	d.pages[i] = dec.PageN()
	if i == 0 && !isFullImage(hdr, dec.PageN()) {
		return fmt.Errorf("%s: %w: a snapshot of %d pages holds only %d pages", name, ErrCorrupt, hdr.Commit, dec.PageN())
	}
	if i > 0 {
		if err := checkFits(hdr, prevCommit, shape); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	return nil
}

// decodeErr classifies a decoding error: a canceled restore is not a
// corrupt object, and neither is a failed read from the store (src saw an
// error that was not the end of the object).
func decodeErr(ctx context.Context, src *countingReader, name, part string, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if rerr := src.readErr(); errors.Is(rerr, agecrypt.ErrDecrypt) {
		// An encrypted object failing age's authentication is damaged, not
		// unreachable: another level may restore the same TXIDs.
		return fmt.Errorf("%s: %w: %w", name, ErrCorrupt, rerr)
	} else if rerr != nil {
		return fmt.Errorf("%s: read the %s from the store: %w", name, part, rerr)
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
	return n == int(dbsum.ImagePages(hdr.PageSize, hdr.Commit))
}

// readBufferFor sizes the read-ahead of a file: a small file (most L0
// files) gets a small buffer, so that thousands of them do not each
// allocate and clear readBufferSize bytes.
func readBufferFor(size int64) int {
	if size > 0 && size < readBufferSize {
		return int(size)
	}
	return readBufferSize
}

// countingReader counts the bytes read from an object and remembers the
// first read error other than the end of the object.
type countingReader struct {
	r   io.Reader
	n   *atomic.Int64
	mu  sync.Mutex
	err error
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	if err != nil && err != io.EOF {
		c.mu.Lock()
		if c.err == nil {
			c.err = err
		}
		c.mu.Unlock()
	}
	return n, err
}

func (c *countingReader) readErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}
