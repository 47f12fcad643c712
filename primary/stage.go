package primary

import (
	"fmt"
	"io"
	"os"
	"slices"

	"github.com/understudy-db/understudy/internal/wal"
)

// stage holds the committed WAL pages read since the last L0 file, so that
// the WAL can be shipped (and then restarted) as often as bounding it
// needs while one sync interval still makes one L0 file, one TXID, one PUT
// per replica. A saturating writer fills max-checkpoint-page-count pages
// many times a second; a file per early sync made 1,290 PUTs a minute.
//
// The pages are copied out of the WAL into a temp file of the shadow
// directory (tmp/, emptied at every Open), appended batch after batch; the
// newest copy of each page wins. Nothing here is durable state: the local
// position is saved only with an L0 file, so a process that dies with
// pages staged resumes from the last L0 file (the WAL still holds the
// staged frames, or it restarted since, which is a history break: a full
// image). Appending instead of overwriting in place keeps the stage
// consistent when a write fails half-way: the batch is simply read again
// from the WAL, which the pin still protects.
type stage struct {
	f    *os.File
	size int64 // bytes of f in use
	// batch is the staged batches merged: Pages maps each page to its
	// copy's offset in f; Commit, Commits and Frames are those of the last
	// batch and the sums; End and the salts are the last batch's; Start is
	// where the first batch of the last WAL generation began (the span an
	// L0 header records must lie in one generation). nil: nothing staged.
	batch *wal.Batch
}

// stageChunkPages is how many pages are copied per write.
const stageChunkPages = 64

func (s *stage) empty() bool { return s.batch == nil }

// add copies the newest version of each page of b from the WAL (wf) into
// the stage and merges b into the staged batch.
func (s *stage) add(local *localStore, wf io.ReaderAt, b *wal.Batch, pageSize uint32) error {
	if s.f == nil {
		f, err := local.tempFile("stage-*.pages")
		if err != nil {
			return err
		}
		s.f = f
	}
	// In WAL order, so that the reads are sequential.
	pgnos := make([]uint32, 0, len(b.Pages))
	for p := range b.Pages {
		pgnos = append(pgnos, p)
	}
	slices.SortFunc(pgnos, func(x, y uint32) int { return int(b.Pages[x] - b.Pages[y]) })
	ps := int64(pageSize)
	buf := make([]byte, 0, stageChunkPages*ps)
	offsets := make(map[uint32]int64, len(pgnos))
	off := s.size
	flush := func() error {
		if len(buf) == 0 {
			return nil
		}
		if _, err := s.f.WriteAt(buf, off); err != nil {
			return fmt.Errorf("stage WAL pages in %s: %w", s.f.Name(), err)
		}
		off += int64(len(buf))
		buf = buf[:0]
		return nil
	}
	for _, p := range pgnos {
		n := len(buf)
		buf = buf[:n+int(ps)]
		if err := wal.PageData(wf, b.Pages[p], buf[n:]); err != nil {
			return err
		}
		offsets[p] = off + int64(n)
		if len(buf) == cap(buf) {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := flush(); err != nil {
		return err
	}
	s.size = off
	s.merge(b, offsets)
	return nil
}

// merge folds batch b, whose pages are now at offsets in the stage file,
// into the staged batch.
func (s *stage) merge(b *wal.Batch, offsets map[uint32]int64) {
	if s.batch == nil {
		c := *b
		c.Pages = offsets
		s.batch = &c
		return
	}
	m := s.batch
	if m.Salt1 != b.Salt1 || m.Salt2 != b.Salt2 {
		m.Start = b.Start
	}
	m.End, m.Salt1, m.Salt2 = b.End, b.Salt1, b.Salt2
	for p, o := range offsets {
		m.Pages[p] = o
	}
	m.Commit = b.Commit
	m.Commits += b.Commits
	m.Frames += b.Frames
	m.Tail = b.Tail
	m.Stop = b.Stop
	// Pages beyond the final size are not part of the database any more.
	for p := range m.Pages {
		if p > m.Commit {
			delete(m.Pages, p)
		}
	}
}

// page reads the staged copy of page p into buf.
func (s *stage) page(p uint32, buf []byte) error {
	if _, err := s.f.ReadAt(buf, s.batch.Pages[p]); err != nil {
		return fmt.Errorf("read staged page %d from %s: %w", p, s.f.Name(), err)
	}
	return nil
}

// reset drops what is staged (written as an L0 file, or covered by a full
// image) and gives the disk space back.
func (s *stage) reset() {
	s.batch = nil
	if s.f != nil && s.size > 0 {
		s.size = 0
		_ = s.f.Truncate(0) // a failure only keeps the space until the next reset
	}
}

// close removes the stage file.
func (s *stage) close() {
	s.batch = nil
	if s.f != nil {
		s.f.Close()
		os.Remove(s.f.Name())
		s.f = nil
	}
}
