package primary

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"testing"

	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/internal/storage"
	"github.com/understudy-db/understudy/internal/wal"
)

// litestreamResumes applies the rule by which Litestream 0.5 decides,
// taking over a replica, whether it may continue reading the WAL after the
// replica's newest L0 file or must snapshot: the WAL's salts equal the
// file's, and the frame just before WALOffset+WALSize carries those salts
// and a page the file holds with the same bytes. It returns whether
// Litestream would resume, or an error where Litestream fails every sync (an
// offset before the first frame).
func litestreamResumes(walPath string, l0 []byte) (bool, error) {
	dec := ltx.NewDecoder(bytes.NewReader(l0))
	if err := dec.DecodeHeader(); err != nil {
		return false, err
	}
	h := dec.Header()
	end := h.WALOffset + h.WALSize
	w, err := os.ReadFile(walPath)
	if err != nil {
		return false, err
	}
	if len(w) < wal.HeaderSize {
		return false, fmt.Errorf("WAL has no header")
	}
	salts := binary.BigEndian.Uint32(w[16:]) == h.WALSalt1 && binary.BigEndian.Uint32(w[20:]) == h.WALSalt2
	if end == wal.HeaderSize {
		return salts, nil
	}
	frame := int64(wal.FrameSize(h.PageSize))
	prev := end - frame
	if prev < wal.HeaderSize {
		return false, fmt.Errorf("prev WAL offset is less than the header size: %d", prev)
	}
	if end > int64(len(w)) || !salts {
		return false, nil
	}
	fh := w[prev : prev+24]
	if binary.BigEndian.Uint32(fh[8:]) != h.WALSalt1 || binary.BigEndian.Uint32(fh[12:]) != h.WALSalt2 {
		return false, nil
	}
	pgno, data := binary.BigEndian.Uint32(fh), w[prev+24:end]
	buf := make([]byte, h.PageSize)
	for {
		var ph ltx.PageHeader
		if err := dec.DecodePage(&ph, buf); err == io.EOF {
			return false, nil
		} else if err != nil {
			return false, err
		}
		if ph.Pgno == pgno && bytes.Equal(buf, data) {
			return true, nil
		}
	}
}

// newestL0 reads the newest L0 object of a store.
func newestL0(t *testing.T, c storage.Client) (storage.FileInfo, []byte) {
	t.Helper()
	l0 := listLevel(t, c, 0)
	if len(l0) == 0 {
		t.Fatal("no L0 files")
	}
	fi := l0[len(l0)-1]
	obj, err := c.Open(context.Background(), 0, fi.MinTXID, fi.MaxTXID, 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer obj.Close()
	b, err := io.ReadAll(obj)
	if err != nil {
		t.Fatal(err)
	}
	return fi, b
}

// TestL0HeadersLetLitestreamTakeOver pins what a user switching from
// Understudy to Litestream on the same replica relies on: Litestream resumes
// from the newest L0 file's WAL span. Every L0 file read from the WAL must
// let it resume exactly there; a full image (no WAL position) must make it
// snapshot; and no file may make it fail (offset 0 did, on every sync,
// shipping nothing: "prev WAL offset is less than the header size").
func TestL0HeadersLetLitestreamTakeOver(t *testing.T) {
	e := newEnv(t, 1)
	ctx := context.Background()
	e.exec("INSERT INTO t (v) VALUES ('first')")
	d := e.open(e.options())
	if err := d.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	walPath := e.path + "-wal"
	check := func(step string, wantResume bool) {
		t.Helper()
		fi, b := newestL0(t, e.stores[0])
		ok, err := litestreamResumes(walPath, b)
		if err != nil {
			t.Fatalf("%s: Litestream would fail on TXID %s: %v", step, fi.MaxTXID, err)
		}
		if ok != wantResume {
			t.Fatalf("%s: Litestream would resume from TXID %s: %v, want %v", step, fi.MaxTXID, ok, wantResume)
		}
	}
	// TXID 1 is a full image: no WAL position to resume from.
	check("full image", false)

	var prevEnd int64
	for i := 0; i < 4; i++ {
		for j := 0; j <= i; j++ {
			e.exec("INSERT INTO t (v, b) VALUES (?, randomblob(3000))", fmt.Sprint(i))
		}
		if err := d.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		check(fmt.Sprintf("sync %d", i), true)
		// Consecutive files of one WAL generation tile it without overlap.
		_, b := newestL0(t, e.stores[0])
		dec := ltx.NewDecoder(bytes.NewReader(b))
		if err := dec.DecodeHeader(); err != nil {
			t.Fatal(err)
		}
		h := dec.Header()
		if prevEnd != 0 && h.WALOffset != prevEnd {
			t.Fatalf("sync %d: WAL span starts at %d, the previous ended at %d", i, h.WALOffset, prevEnd)
		}
		prevEnd = h.WALOffset + h.WALSize
	}

	// Frames written while the shipper was down ship as one TXID at the
	// next open: that file carries its span too.
	d.Close()
	e.exec("INSERT INTO t (v) VALUES ('while down')")
	d = e.open(e.options())
	defer d.Close()
	if err := d.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	check("resume", true)
	e.checkRestore(d)
}
