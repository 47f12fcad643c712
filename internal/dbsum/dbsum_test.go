package dbsum

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/superfly/ltx"
)

func page(size int, fill byte) []byte { return bytes.Repeat([]byte{fill}, size) }

func TestPage1CounterBytesMasked(t *testing.T) {
	a := page(4096, 7)
	b := page(4096, 7)
	b[24], b[27], b[92], b[99] = 1, 2, 3, 4 // change counter, version-valid-for, version
	if Page(1, a) != Page(1, b) {
		t.Fatal("page-1 checksum depends on pager-owned bytes 24-27/92-99")
	}
	if b[24] != 1 || b[99] != 4 {
		t.Fatal("Page modified its input")
	}
	c := page(4096, 7)
	c[28] = 9 // page count: real data
	if Page(1, a) == Page(1, c) {
		t.Fatal("page-1 checksum ignores byte 28 (page count)")
	}
	// Other pages are not masked.
	if Page(2, a) == Page(2, b) {
		t.Fatal("page 2 masked")
	}
	if Page(2, a) != ltx.ChecksumPage(2, a) {
		t.Fatal("page 2 differs from ltx's page checksum")
	}
}

func TestSumAddRemove(t *testing.T) {
	var s Sum
	p1, p2 := Page(2, page(512, 1)), Page(3, page(512, 2))
	s = s.Add(p1).Add(p2)
	if s.Add(p2).Add(p1) != 0 {
		t.Fatal("adding a page twice does not remove it")
	}
	if s.Checksum()&ltx.ChecksumFlag == 0 {
		t.Fatal("checksum lacks ltx's flag bit")
	}
}

func header(pageSize int, pages int) []byte {
	h := page(pageSize, 0)
	copy(h, "SQLite format 3\x00")
	ps := pageSize
	if ps == 65536 {
		ps = 1
	}
	h[16], h[17] = byte(ps>>8), byte(ps)
	h[31] = byte(pages)
	return h
}

func TestFileAndReader(t *testing.T) {
	dir := t.TempDir()
	img := append(header(1024, 3), append(page(1024, 5), page(1024, 6)...)...)
	path := filepath.Join(dir, "db")
	if err := os.WriteFile(path, img, 0o644); err != nil {
		t.Fatal(err)
	}
	sum, n, err := File(path)
	if err != nil || n != 3 {
		t.Fatalf("File = %v, %d, %v", sum, n, err)
	}
	want := Sum(0).Add(Page(1, img[:1024])).Add(Page(2, img[1024:2048])).Add(Page(3, img[2048:])).Checksum()
	if sum != want {
		t.Fatalf("File checksum %s, want %s", sum, want)
	}

	tests := []struct {
		name, content, want string
	}{
		{"not sqlite", strings.Repeat("x", 200), "not a SQLite database"},
		{"short", "SQLite", "read header"},
		{"partial page", string(img[:1500]), "partial page after page 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "-"))
			if err := os.WriteFile(p, []byte(tt.content), 0o644); err != nil {
				t.Fatal(err)
			}
			_, _, err := File(p)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), p) {
				t.Fatalf("File(%s) error %v, want one naming the path and %q", tt.name, err, tt.want)
			}
		})
	}
}

func TestLockPageSkipped(t *testing.T) {
	// With 512-byte pages the lock page is 0x40000000/512+1; Reader must
	// skip it. Build a reader that reports that many zero pages cheaply.
	lock := ltx.LockPgno(65536)
	size := 65536
	r := &zeroPages{n: int(lock), size: size}
	sum, n, err := Reader(r, size)
	if err != nil || n != lock {
		t.Fatalf("Reader = %v %d %v", sum, n, err)
	}
	var want Sum
	zero := make([]byte, size)
	for pg := uint32(1); pg < lock; pg++ {
		want = want.Add(Page(pg, zero))
	}
	if sum != want.Checksum() {
		t.Fatal("lock page was included in the checksum")
	}
}

// zeroPages reads as n pages of zeros.
type zeroPages struct{ n, size, off int }

func (z *zeroPages) Read(p []byte) (int, error) {
	left := z.n*z.size - z.off
	if left <= 0 {
		return 0, io.EOF
	}
	if len(p) > left {
		p = p[:left]
	}
	clear(p)
	z.off += len(p)
	return len(p), nil
}

func TestImagePages(t *testing.T) {
	// The lock page is the page holding byte 1 GiB: 262145 at 4 KiB pages.
	for _, tc := range []struct {
		pageSize, commit, want uint32
	}{
		{4096, 1, 1},
		{4096, 262144, 262144},
		{4096, 262145, 262144},
		{4096, 300000, 299999},
		{65536, 16384, 16384},
		{65536, 16385, 16384},
	} {
		if got := ImagePages(tc.pageSize, tc.commit); got != tc.want {
			t.Errorf("ImagePages(%d, %d) = %d, want %d", tc.pageSize, tc.commit, got, tc.want)
		}
	}
}
