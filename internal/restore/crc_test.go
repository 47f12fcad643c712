package restore

import (
	"hash/crc64"
	"math/rand"
	"testing"
)

func TestCRCCombine(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for _, sizes := range [][]int{{0, 0}, {1, 0}, {0, 1}, {100, 4106}, {7, 1, 65536 + 10, 3}, {4106, 4106, 4106, 100}} {
		var all []byte
		var f crcFolder
		for _, n := range sizes {
			b := make([]byte, n)
			rng.Read(b)
			all = append(all, b...)
			f.add(crc64.Checksum(b, crcTable), int64(n))
		}
		if want := crc64.Checksum(all, crcTable); f.crc != want {
			t.Errorf("sizes %v: folded %016x, want %016x", sizes, f.crc, want)
		}
	}
}
