package primary

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestExclusiveHolders(t *testing.T) {
	db := fileID{0xfe, 0, 9981471}
	shm := fileID{0xfe, 0, 9981472}
	const self = 100
	for _, tc := range []struct {
		name  string
		locks string
		shm   fileID
		want  []int
	}{
		{"exclusive mode holds the lock bytes and no -shm (app first)",
			"1: POSIX  ADVISORY  WRITE 5594 fe:00:9981471 1073741824 1073742335\n", shm, []int{5594}},
		{"exclusive mode reader waiting to write (shipper first)",
			"2: POSIX  ADVISORY  READ 7145 fe:00:9981471 1073741826 1073742335\n" +
				"3: POSIX  ADVISORY  READ 100 fe:00:9981471 1073741826 1073742335\n" +
				"4: POSIX  ADVISORY  READ 100 fe:00:9981472 128 128\n", shm, []int{7145}},
		{"normal mode connections hold -shm too",
			"2: POSIX  ADVISORY  READ 7145 fe:00:9981471 1073741826 1073742335\n" +
				"5: POSIX  ADVISORY  READ 7145 fe:00:9981472 128 128\n", shm, nil},
		{"no -shm at all", "2: POSIX  ADVISORY  READ 7145 fe:00:9981471 1073741826 1073742335\n", fileID{}, []int{7145}},
		{"ourselves, other files, other devices, waiters, OFD locks and garbage are ignored",
			"1: POSIX  ADVISORY  WRITE 100 fe:00:9981471 1073741824 1073742335\n" +
				"2: POSIX  ADVISORY  WRITE 7 fe:00:12 1073741824 1073742335\n" +
				"3: POSIX  ADVISORY  WRITE 8 fd:00:9981471 1073741824 1073742335\n" +
				"4: -> POSIX  ADVISORY  WRITE 9 fe:00:9981471 1073741824 1073742335\n" +
				"5: OFDLCK ADVISORY  WRITE -1 fe:00:9981471 1073741824 1073742335\n" +
				"6: FLOCK  ADVISORY  WRITE x fe:00:9981471 0 EOF\n" +
				"garbage\n", shm, nil},
		{"a lock outside the lock bytes is not SQLite's", "1: POSIX  ADVISORY  WRITE 11 fe:00:9981471 0 100\n", shm, nil},
		{"a whole-file lock to EOF covers them", "1: POSIX  ADVISORY  WRITE 12 fe:00:9981471 0 EOF\n", shm, []int{12}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := exclusiveHolders(parseProcLocks(strings.NewReader(tc.locks)), db, tc.shm, self)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("exclusiveHolders = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestReadAll: a file longer than the first read comes back whole.
func TestReadAll(t *testing.T) {
	for _, size := range []int{0, 10, 1 << 20, 3<<20 + 17} {
		p := filepath.Join(t.TempDir(), "f")
		want := bytes.Repeat([]byte{'x'}, size)
		if err := os.WriteFile(p, want, 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := readAll(p)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("size %d: read %d bytes, %v", size, len(got), err)
		}
	}
}

// TestProcLocksShared: checks within procLocksMaxAge share one reading of
// /proc/locks (the same gen); a later check reads it anew.
func TestProcLocksShared(t *testing.T) {
	var c procLocksCache
	now := time.Now()
	_, g1, ok := c.get(now)
	if !ok {
		t.Skip("no /proc/locks here")
	}
	if _, g2, _ := c.get(now.Add(procLocksMaxAge / 2)); g2 != g1 {
		t.Errorf("a check %v later read /proc/locks again (gen %d, then %d)", procLocksMaxAge/2, g1, g2)
	}
	if _, g3, _ := c.get(now.Add(procLocksMaxAge)); g3 == g1 {
		t.Errorf("a check %v later used the old reading (gen %d)", procLocksMaxAge, g3)
	}
}
