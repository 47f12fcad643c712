package restore

import (
	"fmt"

	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/internal/storage"
)

// fileShape is what checkFits needs to know about a file's pages.
type fileShape struct {
	newPages uint32 // pages above the previous database size (lock page excluded)
	page1    bool   // the file holds page 1
}

// add records page pgno of a file applied to a database of prev pages.
func (s *fileShape) add(pgno, prev, lockPgno uint32) {
	if pgno == 1 {
		s.page1 = true
	}
	if pgno > prev && pgno != lockPgno {
		s.newPages++
	}
}

// checkFits applies the follower's structural checks (follower/apply.go) to
// a file applied to a database of prev pages. File checksums prove only
// that the bytes are the ones written, not that the file belongs to this
// history: another database's LTX file under the next TXID's name decodes
// fine, and applied, it gives a malformed database. So, as the follower
// requires before it applies a file:
//   - a file that grows the database holds every new page: a gap past the
//     old end would leave pages no file wrote (SQLITE-NOTES.md, rule 5);
//   - a file that changes the database size holds page 1, whose header
//     records the size.
//
// The errors wrap ErrForeignObject: the object is not the change its name
// says it is.
func checkFits(hdr ltx.Header, prev uint32, s fileShape) error {
	if hdr.Commit > prev {
		want := hdr.Commit - prev
		if lock := hdr.LockPgno(); lock > prev && lock <= hdr.Commit {
			want--
		}
		if s.newPages != want {
			return fmt.Errorf("%w: it grows the database from %d to %d pages but holds only %d of the %d new pages, "+
				"which would leave a gap past the end of the database (is it from another database's history?)",
				ErrForeignObject, prev, hdr.Commit, s.newPages, want)
		}
	}
	if hdr.Commit != prev && !s.page1 {
		return fmt.Errorf("%w: it changes the database size from %d to %d pages without page 1, whose header records the size (is it from another database's history?)",
			ErrForeignObject, prev, hdr.Commit)
	}
	return nil
}

// checkHeaderFits checks what a plan file's header alone tells: its page
// size is the snapshot's, and it does not delete the database (Commit 0),
// which the follower refuses too.
func checkHeaderFits(f storage.FileInfo, hdr ltx.Header, pageSize uint32) error {
	switch {
	case hdr.PageSize != pageSize:
		return &ObjectError{File: f, Err: fmt.Errorf("%s: %w: page size %d differs from the snapshot's %d (is it from another database?)",
			FileName(f), ErrForeignObject, hdr.PageSize, pageSize)}
	case hdr.Commit == 0:
		return &ObjectError{File: f, Err: fmt.Errorf("%s: %w: its header says the database has 0 pages after it", FileName(f), ErrCorrupt)}
	}
	return nil
}

// unprovenErr explains a failed integrity check. A result that the database
// checksums prove cannot be malformed unless the writer's database was; one
// they do not prove was assembled from files only their own checksums
// vouch for, and the message names them. When exactly one such file is in
// the plan, the result is blamed on it (an *ObjectError), so that Restore
// tries another path and, failing that, names it and the way out.
func unprovenErr(err error, verified bool, plan Plan, headers []FileHeader, unproven []storage.FileInfo) error {
	if verified || len(unproven) == 0 {
		return err
	}
	carry := "files carry"
	if len(unproven) == 1 {
		carry = "files carries"
	}
	msg := fmt.Errorf("%w; the result is not proven by database checksums because %d of the plan's %d %s no understudy metadata (%s): "+
		"a file without it may not be from this database's history; nothing was written to the output path",
		err, len(unproven), len(plan.Files), carry, describeFiles(unproven, 3))
	if f, ok := soleUnproven(plan.Files, headers); ok {
		return &ObjectError{File: f, Err: fmt.Errorf("%s: %w", FileName(f), msg)}
	}
	return msg
}
