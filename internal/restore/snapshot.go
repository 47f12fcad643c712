package restore

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc64"
	"io"
	"math"
	"sync"

	"github.com/pierrec/lz4/v4"
	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/internal/dbsum"
)

// The snapshot holds most of a restore's bytes, and ltx's Decoder does all
// of its work (LZ4, the file checksum) on one thread. This decoder splits
// it: one goroutine reads and checks the frame structure and hands runs of
// still-compressed pages to workers, which decompress, checksum and write
// them; the file checksum is folded from the workers' CRCs (crc.go). It
// checks everything ltx's Decoder checks for a snapshot: header, ascending
// contiguous page numbers, frame sizes, the page index against the frames
// read, the trailer and the file checksum.
//
// It handles the LTX format Litestream 0.5 and Understudy write (block
// compression, no header checksums); for anything else errSlowPath sends
// the restore back to ltx's Decoder.

var errSlowPath = errors.New("snapshot needs the ltx decoder")

// forceSlowSnapshot makes every restore use ltx's Decoder (for tests).
var forceSlowSnapshot = false

// frameHeaderSize is the page header plus the compressed-size field.
const frameHeaderSize = ltx.PageHeaderSize + 4

type snapFrame struct {
	pgno uint32
	hdr  [frameHeaderSize]byte
	off  int // of the compressed data in snapJob.comp
	n    int
}

// snapJob is a run of consecutive frames of the snapshot.
type snapJob struct {
	frames []snapFrame
	comp   []byte // compressed page data
	out    []byte // decompressed pages, slot k for frames[k]
	seg    *crcSeg
}

// crcSeg is the CRC of a run's bytes as the file checksum hashes them (frame
// headers and decompressed pages), filled by the worker.
type crcSeg struct {
	crc uint64
	n   int64
}

// snapshotFast decodes and applies the plan's snapshot (file 0). It returns
// errSlowPath, before applying anything, for a file it does not handle.
func (d *download) snapshotFast(ctx context.Context, workers int) error {
	if forceSlowSnapshot {
		return errSlowPath
	}
	f := d.files[0]
	name := FileName(f)
	hdr := d.headers[0].Header
	if !hdr.NoChecksum() {
		return errSlowPath
	}
	obj, err := openFile(ctx, d.client, f, 0, -1)
	if err != nil {
		return err
	}
	defer obj.Close()
	src := &countingReader{r: obj, n: &d.bytesDone}
	br := bufio.NewReaderSize(src, readBufferSize)

	ps := d.pageSize
	hb := make([]byte, ltx.HeaderSize)
	if _, err := io.ReadFull(br, hb); err != nil {
		return decodeErr(ctx, src, name, "header", err)
	}
	if got, err := checkHeader(f, hb); err != nil {
		return err
	} else if got != hdr {
		return fmt.Errorf("%s: %w: header changed between reads (the object was replaced during the restore)", name, ErrCorrupt)
	}
	// The first frame decides the format.
	first, err := br.Peek(ltx.PageHeaderSize)
	if err != nil {
		return decodeErr(ctx, src, name, "page 1", err)
	}
	if binary.BigEndian.Uint16(first[4:])&ltx.PageHeaderFlagSize == 0 {
		return errSlowPath
	}

	chunkPages := chunkPagesFor(ps)
	bound := lz4.CompressBlockBound(ps)
	pool := make(chan *snapJob, 2*workers+1)
	for i := 0; i < cap(pool); i++ {
		pool <- &snapJob{comp: make([]byte, 0, chunkPages*bound), out: make([]byte, chunkPages*ps)}
	}
	jobs := make(chan *snapJob, workers)
	limit := d.limits[0]
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				if ctx.Err() == nil {
					if err := d.applySnapJob(j, name, limit); err != nil {
						d.fail(blame(f, err))
					}
				}
				pool <- j
			}
		}()
	}
	segs, tail, tailLen, trailer, pages, rerr := d.readSnapshotFrames(ctx, src, br, name, hdr, chunkPages, bound, pool, jobs)
	close(jobs)
	wg.Wait()
	if rerr != nil {
		return rerr
	}
	if d.firstErr != nil {
		return d.firstErr
	}
	if err := ctx.Err(); err != nil {
		return err
	}

	var fold crcFolder
	fold.add(crc64.Checksum(hb, crcTable), ltx.HeaderSize)
	for _, s := range segs {
		fold.add(s.crc, s.n)
	}
	fold.add(tail, tailLen)
	if err := trailer.Validate(hdr); err != nil {
		return fmt.Errorf("%s: %w: invalid trailer: %v", name, ErrCorrupt, err)
	}
	if ltx.ChecksumFlag|ltx.Checksum(fold.crc) != trailer.FileChecksum {
		return fmt.Errorf("%s: %w: file checksum mismatch (the object's bytes changed after it was written)", name, ErrCorrupt)
	}
	if !isFullImage(hdr, pages) {
		return fmt.Errorf("%s: %w: a snapshot of %d pages holds only %d pages", name, ErrCorrupt, hdr.Commit, pages)
	}
	d.pages[0] = pages
	d.filesDone.Add(1)
	return nil
}

// readSnapshotFrames reads the page frames, page index and trailer,
// checking their structure and sending runs of frames to jobs. It returns
// the runs' CRC segments in file order and the CRC of the tail (end marker,
// page index, trailer without its checksum).
func (d *download) readSnapshotFrames(ctx context.Context, src *countingReader, br *bufio.Reader, name string, hdr ltx.Header, chunkPages, bound int,
	pool chan *snapJob, jobs chan<- *snapJob) (segs []*crcSeg, tail uint64, tailLen int64, trailer ltx.Trailer, pages int, err error) {
	corrupt := func(format string, args ...any) error {
		return fmt.Errorf("%s: %w: %s", name, ErrCorrupt, fmt.Sprintf(format, args...))
	}
	lockPgno := hdr.LockPgno()
	idxSeq := crc64.New(crcTable) // (pgno, offset, size) of each frame read
	var rec [20]byte
	offset := int64(ltx.HeaderSize)
	var job *snapJob
	send := func() error {
		if job == nil || len(job.frames) == 0 {
			return nil
		}
		seg := &crcSeg{}
		job.seg = seg
		segs = append(segs, seg)
		select {
		case jobs <- job:
			job = nil
			return nil
		case <-ctx.Done():
			pool <- job
			job = nil
			return ctx.Err()
		}
	}
	defer func() {
		if job != nil {
			pool <- job
		}
	}()
	var prev uint32
	for {
		if err := ctx.Err(); err != nil {
			return nil, 0, 0, trailer, 0, err
		}
		if job == nil {
			select {
			case job = <-pool:
			case <-ctx.Done():
				return nil, 0, 0, trailer, 0, ctx.Err()
			}
			job.frames, job.comp = job.frames[:0], job.comp[:0]
		}
		var fr snapFrame
		if _, err := io.ReadFull(br, fr.hdr[:ltx.PageHeaderSize]); err != nil {
			return nil, 0, 0, trailer, 0, decodeErr(ctx, src, name, fmt.Sprintf("page %d", pages+1), err)
		}
		var ph ltx.PageHeader
		if err := ph.UnmarshalBinary(fr.hdr[:ltx.PageHeaderSize]); err != nil {
			return nil, 0, 0, trailer, 0, corrupt("page %d header: %v", pages+1, err)
		}
		if ph.IsZero() {
			break
		}
		if err := ph.Validate(); err != nil {
			return nil, 0, 0, trailer, 0, corrupt("page %d header: %v", pages+1, err)
		}
		if ph.Flags&ltx.PageHeaderFlagSize == 0 {
			return nil, 0, 0, trailer, 0, corrupt("page %d uses the old frame format after block-format pages", ph.Pgno)
		}
		want := prev + 1
		if want == lockPgno {
			want++
		}
		if ph.Pgno != want {
			return nil, 0, 0, trailer, 0, corrupt("snapshot page %d follows page %d (pages must be contiguous)", ph.Pgno, prev)
		}
		if ph.Pgno > hdr.Commit {
			return nil, 0, 0, trailer, 0, corrupt("page %d is beyond the database size of %d pages in its header", ph.Pgno, hdr.Commit)
		}
		if _, err := io.ReadFull(br, fr.hdr[ltx.PageHeaderSize:]); err != nil {
			return nil, 0, 0, trailer, 0, decodeErr(ctx, src, name, fmt.Sprintf("page %d", ph.Pgno), err)
		}
		n := int(binary.BigEndian.Uint32(fr.hdr[ltx.PageHeaderSize:]))
		if n <= 0 || n > bound {
			return nil, 0, 0, trailer, 0, corrupt("page %d has an invalid compressed size %d", ph.Pgno, n)
		}
		fr.pgno, fr.off, fr.n = ph.Pgno, len(job.comp), n
		job.comp = job.comp[:fr.off+n]
		if _, err := io.ReadFull(br, job.comp[fr.off:]); err != nil {
			return nil, 0, 0, trailer, 0, decodeErr(ctx, src, name, fmt.Sprintf("page %d", ph.Pgno), err)
		}
		size := int64(frameHeaderSize + n)
		binary.BigEndian.PutUint32(rec[0:], ph.Pgno)
		binary.BigEndian.PutUint64(rec[4:], uint64(offset))
		binary.BigEndian.PutUint64(rec[12:], uint64(size))
		idxSeq.Write(rec[:])
		offset += size
		job.frames = append(job.frames, fr)
		prev = ph.Pgno
		pages++
		if len(job.frames) == chunkPages {
			if err := send(); err != nil {
				return nil, 0, 0, trailer, 0, err
			}
		}
	}
	if err := send(); err != nil {
		return nil, 0, 0, trailer, 0, err
	}

	// Tail: end marker (already read: six zero bytes), page index, trailer.
	th := crc64.New(crcTable)
	th.Write(make([]byte, ltx.PageHeaderSize))
	tailLen = ltx.PageHeaderSize
	idxGot := crc64.New(crcTable)
	nidx := 0
	var consumed int64
	readUvarint := func() (uint64, error) {
		var buf [binary.MaxVarintLen64]byte
		var x uint64
		var s uint
		for i := 0; i < binary.MaxVarintLen64; i++ {
			b, err := br.ReadByte()
			if err != nil {
				return 0, err
			}
			buf[i] = b
			if b < 0x80 {
				th.Write(buf[:i+1])
				consumed += int64(i + 1)
				return x | uint64(b)<<s, nil
			}
			x |= uint64(b&0x7f) << s
			s += 7
		}
		return 0, errors.New("uvarint overflows 64 bits")
	}
	for {
		pgno, err := readUvarint()
		if err != nil {
			return nil, 0, 0, trailer, 0, decodeErr(ctx, src, name, "page index", err)
		}
		if pgno == 0 {
			break
		}
		off, err := readUvarint()
		if err != nil {
			return nil, 0, 0, trailer, 0, decodeErr(ctx, src, name, "page index", err)
		}
		size, err := readUvarint()
		if err != nil {
			return nil, 0, 0, trailer, 0, decodeErr(ctx, src, name, "page index", err)
		}
		if pgno > math.MaxUint32 || off > math.MaxInt64 || size > math.MaxInt64 {
			return nil, 0, 0, trailer, 0, corrupt("page index entry out of range")
		}
		binary.BigEndian.PutUint32(rec[0:], uint32(pgno))
		binary.BigEndian.PutUint64(rec[4:], off)
		binary.BigEndian.PutUint64(rec[12:], size)
		idxGot.Write(rec[:])
		nidx++
	}
	if nidx != pages || idxGot.Sum64() != idxSeq.Sum64() {
		return nil, 0, 0, trailer, 0, corrupt("the page index (%d entries) does not describe the %d page frames read", nidx, pages)
	}
	var tb [8 + ltx.TrailerSize]byte
	if _, err := io.ReadFull(br, tb[:]); err != nil {
		return nil, 0, 0, trailer, 0, decodeErr(ctx, src, name, "trailer", err)
	}
	if got := binary.BigEndian.Uint64(tb[:8]); got != uint64(consumed) {
		return nil, 0, 0, trailer, 0, corrupt("page index size field says %d bytes, read %d", got, consumed)
	}
	th.Write(tb[:8+ltx.TrailerChecksumOffset])
	tailLen += consumed + 8 + ltx.TrailerChecksumOffset
	if err := trailer.UnmarshalBinary(tb[8:]); err != nil {
		return nil, 0, 0, trailer, 0, corrupt("trailer: %v", err)
	}
	if _, err := br.ReadByte(); err == nil {
		return nil, 0, 0, trailer, 0, corrupt("unexpected data after the trailer")
	} else if !errors.Is(err, io.EOF) {
		return nil, 0, 0, trailer, 0, fmt.Errorf("%s: read after trailer: %w", name, err)
	}
	return segs, th.Sum64(), tailLen, trailer, pages, nil
}

// applySnapJob decompresses a run of frames, checksums it for the file
// checksum and the database checksum, and writes the pages no later file
// wrote, in runs of contiguous page numbers.
func (d *download) applySnapJob(j *snapJob, name string, limit uint32) error {
	ps := d.pageSize
	var h uint64
	var n int64
	var sum dbsum.Sum
	runStart := -1 // slot of the current run's first page
	flush := func(end int) error {
		if runStart < 0 {
			return nil
		}
		err := d.app.writeBase(j.frames[runStart].pgno, j.out[runStart*ps:end*ps])
		runStart = -1
		return err
	}
	for k := range j.frames {
		fr := &j.frames[k]
		dst := j.out[k*ps : (k+1)*ps]
		m, err := lz4.UncompressBlock(j.comp[fr.off:fr.off+fr.n], dst)
		if err != nil {
			return fmt.Errorf("%s: %w: cannot decompress page %d: %v", name, ErrCorrupt, fr.pgno, err)
		} else if m != ps {
			return fmt.Errorf("%s: %w: page %d decompresses to %d bytes, not the page size %d", name, ErrCorrupt, fr.pgno, m, ps)
		}
		h = crc64.Update(h, crcTable, fr.hdr[:])
		h = crc64.Update(h, crcTable, dst)
		n += int64(frameHeaderSize + ps)
		keep := fr.pgno <= limit && !d.app.ownedLater(fr.pgno)
		contiguous := runStart >= 0 && fr.pgno == j.frames[runStart].pgno+uint32(k-runStart)
		if !keep || !contiguous {
			if err := flush(k); err != nil {
				return err
			}
		}
		if keep {
			sum = sum.Add(dbsum.Page(fr.pgno, dst))
			if runStart < 0 {
				runStart = k
			}
		}
	}
	if err := flush(len(j.frames)); err != nil {
		return err
	}
	j.seg.crc, j.seg.n = h, n
	d.app.addBaseSum(sum)
	return nil
}
