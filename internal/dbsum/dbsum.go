// Package dbsum computes Understudy's database checksum: the rolling CRC64 of
// github.com/superfly/ltx (XOR of every page's checksum, lock page skipped),
// with the page-1 bytes that SQLite's pager rewrites on every commit masked.
//
// Why the mask: in WAL mode the pager rewrites page-1 bytes 24-27 (change
// counter), 92-95 (version-valid-for) and 96-99 (SQLite version) whenever a
// commit includes page 1, so a follower that applies a byte-exact page 1
// through sqlite_dbpage ends up with different bytes there than the primary.
// Those bytes carry no data; masking them lets the primary, a restore and a
// follower agree on one checksum for the same logical database.
package dbsum

import (
	"fmt"
	"io"
	"os"

	"github.com/superfly/ltx"
)

// Page returns the checksum of one page. Page 1 is hashed with the
// pager-owned counter bytes zeroed; data itself is not modified.
func Page(pgno uint32, data []byte) ltx.Checksum {
	if pgno != 1 || len(data) < 100 {
		return ltx.ChecksumPage(pgno, data)
	}
	var buf [65536]byte
	b := buf[:len(data)]
	copy(b, data)
	MaskPage1(b)
	return ltx.ChecksumPage(pgno, b)
}

// MaskPage1 zeroes the page-1 bytes that SQLite rewrites on every commit.
func MaskPage1(b []byte) {
	for i := 24; i < 28; i++ {
		b[i] = 0
	}
	for i := 92; i < 100; i++ {
		b[i] = 0
	}
}

// Sum is a rolling database checksum that pages can be swapped in and out of.
// The zero value is the checksum of an empty database.
type Sum uint64

// Checksum returns s in ltx's format (flag bit set).
func (s Sum) Checksum() ltx.Checksum { return ltx.ChecksumFlag | ltx.Checksum(s) }

// Add XORs a page checksum into s (adding and removing are the same).
func (s Sum) Add(c ltx.Checksum) Sum { return s ^ Sum(c&^ltx.ChecksumFlag) }

// ImagePages is how many pages a full image of a database of commit pages
// holds: every page but the lock page, which SQLite never writes.
func ImagePages(pageSize, commit uint32) uint32 {
	if ltx.LockPgno(pageSize) <= commit {
		return commit - 1
	}
	return commit
}

// Reader checksums a whole database image read from r. pageSize must be the
// database's page size; a trailing partial page is an error.
func Reader(r io.Reader, pageSize int) (ltx.Checksum, uint32, error) {
	if pageSize <= 0 {
		return 0, 0, fmt.Errorf("checksum database: invalid page size %d", pageSize)
	}
	lockPgno := ltx.LockPgno(uint32(pageSize))
	buf := make([]byte, pageSize)
	var s Sum
	var pgno uint32
	for {
		_, err := io.ReadFull(r, buf)
		if err == io.EOF {
			return s.Checksum(), pgno, nil
		} else if err == io.ErrUnexpectedEOF {
			return 0, pgno, fmt.Errorf("checksum database: partial page after page %d", pgno)
		} else if err != nil {
			return 0, pgno, fmt.Errorf("checksum database: read page %d: %w", pgno+1, err)
		}
		pgno++
		if pgno == lockPgno {
			continue
		}
		s = s.Add(Page(pgno, buf))
	}
}

// File checksums the database file at path (the main file only, not its WAL).
// The page size is read from the header. It opens and closes path, which
// drops every POSIX lock the calling process holds on it: never call it in
// a process whose SQLite connections have path open (SQLITE-NOTES.md); for
// a live database use Page/Sum over sqlite_dbpage or a reader of a copy.
func File(path string) (ltx.Checksum, uint32, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, fmt.Errorf("checksum database %s: %w", path, err)
	}
	defer f.Close()
	var hdr [100]byte
	if _, err := io.ReadFull(f, hdr[:]); err != nil {
		return 0, 0, fmt.Errorf("checksum database %s: read header: %w", path, err)
	}
	pageSize := PageSizeFromHeader(hdr[:])
	if pageSize == 0 {
		return 0, 0, fmt.Errorf("checksum database %s: not a SQLite database (bad header)", path)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return 0, 0, err
	}
	sum, n, err := Reader(f, pageSize)
	if err != nil {
		return 0, 0, fmt.Errorf("%s: %w", path, err)
	}
	return sum, n, nil
}

// PageSizeFromHeader returns the page size from a SQLite header, or 0 if hdr
// is not a SQLite header.
func PageSizeFromHeader(hdr []byte) int {
	if len(hdr) < 100 || string(hdr[:16]) != "SQLite format 3\x00" {
		return 0
	}
	sz := int(hdr[16])<<8 | int(hdr[17])
	if sz == 1 {
		return 65536
	}
	if sz < 512 || sz&(sz-1) != 0 {
		return 0
	}
	return sz
}
