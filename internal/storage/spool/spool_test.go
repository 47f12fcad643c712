package spool

import (
	"bytes"
	"io"
	"testing"

	"github.com/understudy-db/understudy/internal/storage/storagetest"
)

func TestSpoolLargeBody(t *testing.T) {
	big := storagetest.Body(MaxMemoryBody+100, 3)
	b, err := New(io.MultiReader(bytes.NewReader(big))) // hides Seek
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if !b.InFile() || b.Size != int64(len(big)) {
		t.Fatalf("spooled to file %v, size %d", b.InFile(), b.Size)
	}
	var got bytes.Buffer
	if _, err := got.ReadFrom(b); err != nil || !bytes.Equal(got.Bytes(), big) {
		t.Fatalf("spooled content differs (%v)", err)
	}
	// A ReadSeeker is used in place, from its current offset.
	r := bytes.NewReader([]byte("0123456789"))
	r.Seek(4, 0)
	b2, _ := New(r)
	got.Reset()
	got.ReadFrom(b2)
	if got.String() != "456789" || b2.Size != 6 {
		t.Fatalf("seeker body %q size %d", got.String(), b2.Size)
	}
}
