package primary

import (
	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/internal/dbsum"
)

// pageTable holds the checksum of every page of the database at the
// shipped position, so that the rolling database checksum can be updated
// exactly from the pages of each sync (XOR the old page checksum out, the
// new one in) without reading the database. 8 bytes per page: 2 MiB for a
// 1 GiB database of 4 KiB pages.
type pageTable struct {
	sums     []ltx.Checksum // index pgno-1; the lock page stays 0
	sum      dbsum.Sum
	lockPgno uint32
}

func newPageTable(pageSize uint32) *pageTable {
	return &pageTable{lockPgno: ltx.LockPgno(pageSize)}
}

// commit is the database size in pages.
func (t *pageTable) commit() uint32 { return uint32(len(t.sums)) }

// checksum is the database checksum.
func (t *pageTable) checksum() ltx.Checksum { return t.sum.Checksum() }

// pageSum is a page number and the checksum of its new content.
type pageSum struct {
	pgno uint32
	sum  ltx.Checksum
}

// apply sets the pages' new checksums and then sizes the database to commit
// pages, dropping the checksums of pages past the end.
func (t *pageTable) apply(changes []pageSum, commit uint32) {
	for _, c := range changes {
		if c.pgno == t.lockPgno || c.pgno > commit {
			continue
		}
		for uint32(len(t.sums)) < c.pgno {
			t.sums = append(t.sums, 0)
		}
		t.sum = t.sum.Add(t.sums[c.pgno-1]).Add(c.sum)
		t.sums[c.pgno-1] = c.sum
	}
	for uint32(len(t.sums)) > commit {
		t.sum = t.sum.Add(t.sums[len(t.sums)-1])
		t.sums = t.sums[:len(t.sums)-1]
	}
	for uint32(len(t.sums)) < commit {
		t.sums = append(t.sums, 0)
	}
}

// preview returns the checksum apply would give, without changing t (the
// table is only changed once the file is safely written).
func (t *pageTable) preview(changes []pageSum, commit uint32) ltx.Checksum {
	s := t.sum
	for _, c := range changes {
		if c.pgno == t.lockPgno || c.pgno > commit {
			continue
		}
		if int(c.pgno) <= len(t.sums) {
			s = s.Add(t.sums[c.pgno-1])
		}
		s = s.Add(c.sum)
	}
	for p := commit + 1; int(p) <= len(t.sums); p++ {
		s = s.Add(t.sums[p-1])
	}
	return s.Checksum()
}
