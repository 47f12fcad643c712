package restore

import (
	"fmt"
	"os"
	"sync"
	"sync/atomic"

	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/internal/dbsum"
)

// stripes is how many locks share the page space of an applier. Writers of
// different pages rarely meet on a lock; a few hundred are plenty.
const stripes = 256

// applier writes the pages of a plan's files into one output file in any
// order while giving the result of applying them in plan order: a page is
// written by a file only if no later file in the plan has written it yet.
// Files arrive concurrently, so each page's newest writer is tracked.
//
// Memory stays small however big the database: file 0 (the snapshot, most
// of the bytes) is tracked with one bit per page; later files, which change
// few pages, with a map entry per page they write.
//
// The database checksum (dbsum) of the result is kept as pages are written,
// XOR-ing out the checksum of a page's previous content when it is
// overwritten, so no second pass over the file is needed.
type applier struct {
	f        *os.File
	pageSize int
	lockPgno uint32
	base     []atomic.Uint64 // bit per page written by file 0
	stripes  [stripes]stripe
}

type stripe struct {
	mu    sync.Mutex
	owner map[uint32]pageOwner // pages written by files 1..n
	sum   dbsum.Sum            // checksum of the pages of this stripe written so far
	_     [40]byte             // keep stripes on separate cache lines
}

type pageOwner struct {
	idx int
	sum ltx.Checksum
}

func newApplier(f *os.File, pageSize int, maxPgno uint32) *applier {
	a := &applier{
		f:        f,
		pageSize: pageSize,
		lockPgno: ltx.LockPgno(uint32(pageSize)),
		base:     make([]atomic.Uint64, int(maxPgno)/64+1),
	}
	for i := range a.stripes {
		a.stripes[i].owner = map[uint32]pageOwner{}
	}
	return a
}

func (a *applier) baseHas(pgno uint32) bool {
	return a.base[pgno/64].Load()&(1<<(pgno%64)) != 0
}

// write applies page pgno with checksum sum from the plan's file idx.
func (a *applier) write(idx int, pgno uint32, data []byte, sum ltx.Checksum) error {
	s := &a.stripes[pgno%stripes]
	s.mu.Lock()
	defer s.mu.Unlock()
	off := int64(pgno-1) * int64(a.pageSize)
	prev, owned := s.owner[pgno]
	if idx == 0 {
		if owned {
			return nil // a later file got there first
		}
		if _, err := a.f.WriteAt(data, off); err != nil {
			return fmt.Errorf("write page %d: %w", pgno, err)
		}
		a.base[pgno/64].Or(1 << (pgno % 64))
		s.sum = s.sum.Add(sum)
		return nil
	}
	switch {
	case owned && prev.idx > idx:
		return nil // a later file got there first
	case owned:
		s.sum = s.sum.Add(prev.sum)
	case a.baseHas(pgno):
		// Overwriting the snapshot's page: take its checksum out first.
		old := make([]byte, a.pageSize)
		if _, err := a.f.ReadAt(old, off); err != nil {
			return fmt.Errorf("read back page %d: %w", pgno, err)
		}
		s.sum = s.sum.Add(dbsum.Page(pgno, old))
	}
	if _, err := a.f.WriteAt(data, off); err != nil {
		return fmt.Errorf("write page %d: %w", pgno, err)
	}
	s.owner[pgno] = pageOwner{idx: idx, sum: sum}
	s.sum = s.sum.Add(sum)
	return nil
}

// finish sizes the file to commit pages and returns the checksum of the
// whole result. Pages no file wrote read as zeros (a hole in the file), and
// count as zero pages in the checksum, as dbsum.File would see them.
func (a *applier) finish(commit uint32) (ltx.Checksum, error) {
	if err := a.f.Truncate(int64(commit) * int64(a.pageSize)); err != nil {
		return 0, fmt.Errorf("size the restored file to %d pages: %w", commit, err)
	}
	var sum dbsum.Sum
	for i := range a.stripes {
		sum ^= a.stripes[i].sum
	}
	var zero []byte
	for pgno := uint32(1); pgno <= commit; pgno++ {
		if pgno == a.lockPgno || a.baseHas(pgno) {
			continue
		}
		if _, ok := a.stripes[pgno%stripes].owner[pgno]; ok {
			continue
		}
		if zero == nil {
			zero = make([]byte, a.pageSize)
		}
		sum = sum.Add(dbsum.Page(pgno, zero))
	}
	return sum.Checksum(), nil
}
