// Package ltxtest encodes LTX files for tests, the way Litestream 0.5
// writes them: no checksum flag, no pre- or post-apply checksum, a file
// checksum. It is imported by tests only.
package ltxtest

import (
	"bytes"
	"testing"
	"time"

	"github.com/superfly/ltx"
)

// Encode returns an LTX file for TXIDs minTXID-maxTXID of a database of
// commit pages holding pgnos (in order; the lock page is skipped), each
// page's bytes given by page.
func Encode(t testing.TB, pageSize, commit uint32, minTXID, maxTXID ltx.TXID, ts time.Time, pgnos []uint32, page func(pgno uint32) []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc, err := ltx.NewEncoder(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if err := enc.EncodeHeader(ltx.Header{
		Version: ltx.Version, Flags: ltx.HeaderFlagNoChecksum, PageSize: pageSize, Commit: commit,
		MinTXID: minTXID, MaxTXID: maxTXID, Timestamp: ts.UnixMilli(),
	}); err != nil {
		t.Fatal(err)
	}
	lock := ltx.LockPgno(pageSize)
	for _, pgno := range pgnos {
		if pgno == lock {
			continue
		}
		if err := enc.EncodePage(ltx.PageHeader{Pgno: pgno}, page(pgno)); err != nil {
			t.Fatal(err)
		}
	}
	if err := enc.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
