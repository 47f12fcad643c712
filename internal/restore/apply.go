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

// applier writes the pages of a plan's files into one output file so that
// the result is that of applying them in plan order, in two phases:
//
//  1. The files after the snapshot arrive concurrently, page by page. A page
//     is written by a file only if no later file in the plan has written it
//     yet; each written page's newest writer is kept in a map (these files
//     change few pages compared to the database).
//  2. The snapshot (most of the bytes) streams last, in long runs of
//     contiguous pages written with one call each, skipping the pages phase 1
//     wrote. The map is read-only by then, so this phase takes no locks.
//
// The database checksum (dbsum) of the result is kept as pages are written,
// so no second pass over the file is needed. Memory is one bit per page plus
// the map, however big the database.
type applier struct {
	f        *os.File
	pageSize int
	lockPgno uint32
	base     []atomic.Uint64 // bit per page written by the snapshot
	stripes  [stripes]stripe

	baseMu  sync.Mutex
	baseSum dbsum.Sum
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

// write applies page pgno with checksum sum from the plan's file idx >= 1
// (phase 1).
func (a *applier) write(idx int, pgno uint32, data []byte, sum ltx.Checksum) error {
	s := &a.stripes[pgno%stripes]
	s.mu.Lock()
	defer s.mu.Unlock()
	prev, owned := s.owner[pgno]
	if owned && prev.idx > idx {
		return nil // a later file got there first
	}
	if _, err := a.f.WriteAt(data, int64(pgno-1)*int64(a.pageSize)); err != nil {
		return fmt.Errorf("write page %d: %w", pgno, err)
	}
	if owned {
		s.sum = s.sum.Add(prev.sum)
	}
	s.owner[pgno] = pageOwner{idx: idx, sum: sum}
	s.sum = s.sum.Add(sum)
	return nil
}

// ownedLater reports whether phase 1 wrote pgno. Only for phase 2, when no
// phase-1 writer is left.
func (a *applier) ownedLater(pgno uint32) bool {
	_, ok := a.stripes[pgno%stripes].owner[pgno]
	return ok
}

// writeBase writes a run of contiguous snapshot pages starting at first
// (phase 2).
func (a *applier) writeBase(first uint32, data []byte) error {
	if _, err := a.f.WriteAt(data, int64(first-1)*int64(a.pageSize)); err != nil {
		return fmt.Errorf("write pages %d-%d: %w", first, int(first)+len(data)/a.pageSize-1, err)
	}
	for p := first; p < first+uint32(len(data)/a.pageSize); p++ {
		a.base[p/64].Or(1 << (p % 64))
	}
	return nil
}

// addBaseSum adds the checksum of snapshot pages written with writeBase.
func (a *applier) addBaseSum(sum dbsum.Sum) {
	a.baseMu.Lock()
	a.baseSum ^= sum
	a.baseMu.Unlock()
}

// finish sizes the file to commit pages and returns the checksum of the
// whole result. Pages no file wrote read as zeros (a hole in the file), and
// count as zero pages in the checksum, as dbsum.File would see them.
func (a *applier) finish(commit uint32) (ltx.Checksum, error) {
	if err := a.f.Truncate(int64(commit) * int64(a.pageSize)); err != nil {
		return 0, fmt.Errorf("size the restored file to %d pages: %w", commit, err)
	}
	sum := a.baseSum
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
