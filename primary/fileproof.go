package primary

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"

	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/internal/dbsum"
	"github.com/understudy-db/understudy/internal/wal"
)

// proveFromFileLocked is the last resort of the proof at Open, when the
// WAL does not continue the local position (notWAL says why): the WAL was
// deleted and started anew (the application's last connection closed
// while the shipper was not running, as happens to every parked database
// of a directory), restarted more than once, or the position was taken
// before there was a WAL. If the database file itself, without the WAL, is
// exactly at the local position (same size in pages and same checksum),
// then the WAL's frames from its start are everything committed since,
// and they are shipped as the next TXID instead of a full image. Frames
// checkpointed into the file since only make the file differ: then
// nothing is proven. Called with the capture's write lock held; the file
// is read through a descriptor kept until Close, since closing one would
// drop this process's SQLite locks on it.
func (d *DB) proveFromFileLocked(lp localPosition, notWAL walProof) walProof {
	if !d.haveWAL {
		return notWAL
	}
	fail := func(why string) walProof {
		return walProof{reason: notWAL.reason + "; " + why}
	}
	if d.mainFile == nil {
		f, err := os.Open(d.realPath)
		if err != nil {
			return fail(err.Error())
		}
		d.mainFile = f
	}
	sum, pages, err := fileChecksum(d.mainFile, d.pageSize)
	switch {
	case err != nil:
		return fail("read the database file: " + err.Error())
	case pages != lp.Commit || sum != lp.Checksum:
		return fail(fmt.Sprintf("the database file (%d pages, checksum %s) is not at the last position (%d pages, checksum %s)",
			pages, sum, lp.Commit, lp.Checksum))
	}
	w, err := os.Open(d.walPath)
	if err != nil {
		return fail(err.Error())
	}
	defer w.Close()
	delta, err := wal.Scan(w, d.walHdr, wal.Start(d.walHdr), lp.Commit, 0)
	if err != nil {
		return fail(err.Error())
	}
	if delta.End != d.walPos || delta.Grown {
		return fail(fmt.Sprintf("the WAL does not lead to the captured position (end %d/%d, grown %v)", delta.End.Offset, d.walPos.Offset, delta.Grown))
	}
	d.log.Info("the database file is at the last position: shipping the whole WAL since", "reason", notWAL.reason, "frames", delta.Frames)
	return walProof{batch: delta}
}

// fileChecksum is the database checksum of the file f alone (the WAL not
// applied) and its size in pages, from the header's in-header size.
func fileChecksum(f *os.File, pageSize uint32) (sum ltx.Checksum, pages uint32, err error) {
	var hdr [100]byte
	if _, err := f.ReadAt(hdr[:], 0); err != nil {
		return 0, 0, err
	}
	pages = binary.BigEndian.Uint32(hdr[28:])
	if binary.BigEndian.Uint32(hdr[24:]) != binary.BigEndian.Uint32(hdr[92:]) || pages == 0 {
		return 0, 0, fmt.Errorf("the header's database size is not valid")
	}
	t := newPageTable(pageSize)
	changes := make([]pageSum, 0, pages)
	buf := make([]byte, pageSize)
	for pgno := uint32(1); pgno <= pages; pgno++ {
		if pgno == t.lockPgno {
			continue
		}
		if _, err := f.ReadAt(buf, int64(pgno-1)*int64(pageSize)); err != nil {
			if err == io.EOF {
				return 0, 0, fmt.Errorf("the file ends before page %d of %d", pgno, pages)
			}
			return 0, 0, err
		}
		changes = append(changes, pageSum{pgno, dbsum.Page(pgno, buf)})
	}
	t.apply(changes, pages)
	return t.checksum(), pages, nil
}
