package restore

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/internal/ltxtest"
	"github.com/understudy-db/understudy/internal/storage"
)

// buildHistory writes a history with growth, updates, a shrink (VACUUM)
// and regrowth, a mid-history snapshot, and compactions at L1..L3:
//
//	L9: 1-1, 1-12      L3: 2-9      L2: 2-5, 6-9      L1: 10-11, 13-14
//	L0: 1..18
func buildHistory(t *testing.T) *source {
	t.Helper()
	s := newSource(t)
	s.insert(50, 100)
	s.sync() // 1 (+ snapshot 1-1)
	for i := 0; i < 8; i++ {
		s.insert(30, 200)
		s.sync() // 2..9
	}
	s.exec("UPDATE t SET v = v || 'x' WHERE id % 7 = 0")
	s.sync() // 10
	s.exec("DELETE FROM t WHERE id > 60")
	s.exec("VACUUM")
	s.sync() // 11: the database shrinks
	s.insert(20, 300)
	s.sync() // 12
	s.snapshot()
	for i := 0; i < 6; i++ {
		s.insert(10, 150)
		s.exec("UPDATE t SET v = 'u' || v WHERE id % 11 = ?", i)
		s.sync() // 13..18
	}
	s.compact(2, 2, 5)
	s.compact(2, 6, 9)
	s.compact(3, 2, 9)
	s.compact(1, 10, 11)
	s.compact(1, 13, 14)
	if len(s.states[11].data) >= len(s.states[10].data) {
		t.Fatalf("VACUUM did not shrink the database (%d -> %d bytes)", len(s.states[10].data), len(s.states[11].data))
	}
	return s
}

func TestRestoreEveryTXIDAndTime(t *testing.T) {
	s := buildHistory(t)
	for txid := ltx.TXID(1); txid <= s.txid; txid++ {
		out, res, err := restoreTo(t, s.client, Target{TXID: txid}, nil)
		if err != nil {
			t.Fatalf("restore TXID %s: %v", txid, err)
		}
		assertRestored(t, s, out, res, txid)
		if !res.Verified {
			t.Fatalf("TXID %s: result not verified against metadata", txid)
		}
		if !res.Timestamp.Equal(s.states[txid].time) {
			t.Fatalf("TXID %s: timestamp %s, want %s", txid, res.Timestamp, s.states[txid].time)
		}

		out, res, err = restoreTo(t, s.client, Target{Timestamp: s.states[txid].time.Add(500e6)}, nil)
		if err != nil {
			t.Fatalf("restore time of TXID %s: %v", txid, err)
		}
		assertRestored(t, s, out, res, txid)
	}
}

// TestRestoreShortRuns restores with snapshot runs of 3 pages, so that runs
// fill up, break at pages a later file wrote, and restart mid-buffer.
func TestRestoreShortRuns(t *testing.T) {
	defer func(n int, slow bool) { chunkBytes, forceSlowSnapshot = n, slow }(chunkBytes, forceSlowSnapshot)
	chunkBytes = 3 * testPageSize
	s := buildHistory(t)
	for _, slow := range []bool{false, true} {
		forceSlowSnapshot = slow
		for _, txid := range []ltx.TXID{1, 9, 11, 12, 15, 18} {
			out, res, err := restoreTo(t, s.client, Target{TXID: txid}, nil)
			if err != nil {
				t.Fatalf("restore TXID %s (slow=%v): %v", txid, slow, err)
			}
			assertRestored(t, s, out, res, txid)
		}
	}
}

// TestSnapshotFastPathTaken checks that the test histories' snapshots are
// ones the parallel decoder handles: otherwise the slow=false runs above
// would quietly test ltx's Decoder twice.
func TestSnapshotFastPathTaken(t *testing.T) {
	s := buildHistory(t)
	ctx := context.Background()
	plan, err := BuildPlan(ctx, s.client, Target{})
	if err != nil {
		t.Fatal(err)
	}
	headers, err := ReadHeaders(ctx, s.client, plan.Files, 1)
	if err != nil {
		t.Fatal(err)
	}
	tmp, err := os.CreateTemp(t.TempDir(), "fast-*.db")
	if err != nil {
		t.Fatal(err)
	}
	defer tmp.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	d := &download{
		client: s.client, files: plan.Files, headers: headers, limits: pageLimits(headers),
		app:      newApplier(tmp, testPageSize, headers[0].Header.Commit),
		pageSize: testPageSize, pages: make([]int, len(plan.Files)), cancel: cancel,
	}
	if err := d.snapshotFast(ctx, 2); err != nil {
		t.Fatalf("snapshotFast = %v, want the fast path to decode the snapshot", err)
	}
	if d.filesDone.Load() != 1 || d.pages[0] == 0 {
		t.Fatalf("snapshotFast decoded %d files, %d pages", d.filesDone.Load(), d.pages[0])
	}
}

func TestRestoreLatestUsesFewestFiles(t *testing.T) {
	s := buildHistory(t)
	plan, err := BuildPlan(context.Background(), s.client, Target{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := names(plan.Files), "L9:1-12 L1:13-14 L0:15-15 L0:16-16 L0:17-17 L0:18-18"; got != want {
		t.Fatalf("plan = %s, want %s", got, want)
	}
	plan, err = PlanTXID(mustList(t, s.client), 11)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := names(plan.Files), "L9:1-1 L3:2-9 L1:10-11"; got != want {
		t.Fatalf("plan = %s, want %s", got, want)
	}
	out, res, err := restoreTo(t, s.client, Target{}, func(o *Options) { o.Parallelism = 1 })
	if err != nil {
		t.Fatal(err)
	}
	assertRestored(t, s, out, res, s.txid)

	pos, err := Latest(context.Background(), s.client)
	if err != nil {
		t.Fatal(err)
	}
	if pos.TXID != s.txid || pos.Checksum != s.states[s.txid].sum || !pos.Timestamp.Equal(s.states[s.txid].time) {
		t.Fatalf("Latest = %+v, want TXID %s checksum %s", pos, s.txid, s.states[s.txid].sum)
	}
}

func mustList(t *testing.T, c storage.Client) []storage.FileInfo {
	t.Helper()
	files, err := ListAll(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// TestRestoreWithoutMetadata restores files written without our metadata,
// as Litestream writes them (plain files in ltx/<level>/).
func TestRestoreWithoutMetadata(t *testing.T) {
	s := newSource(t)
	s.insert(40, 100)
	s.sync()
	s.insert(40, 100)
	s.sync()
	plain := newSource(t)
	for _, key := range []struct {
		level    int
		min, max ltx.TXID
	}{{9, 1, 1}, {0, 2, 2}} {
		data, err := os.ReadFile(s.path(key.level, key.min, key.max))
		if err != nil {
			t.Fatal(err)
		}
		p := plain.path(key.level, key.min, key.max)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out, res, err := restoreTo(t, plain.client, Target{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	assertRestored(t, s, out, res, 2)
	if res.Verified {
		t.Fatal("a restore without metadata claims to be verified against it")
	}
}

func TestRestoreErrors(t *testing.T) {
	tests := []struct {
		name    string
		break_  func(t *testing.T, s *source) // breaks the store
		target  Target
		wantErr error
		errText string
	}{
		{
			name:    "missing file in the chain",
			break_:  func(t *testing.T, s *source) { remove(t, s.path(0, 16, 16)) },
			wantErr: ErrMissingFile,
			errText: "no file covers TXIDs 0000000000000010-0000000000000010",
		},
		{
			name:    "corrupt object",
			break_:  func(t *testing.T, s *source) { flipByte(t, s.path(0, 17, 17), 0.6) },
			wantErr: ErrCorrupt,
			errText: "L0 0000000000000011-0000000000000011: corrupt object",
		},
		{
			name: "corrupt object and no other path",
			break_: func(t *testing.T, s *source) {
				flipByte(t, s.path(0, 17, 17), 0.6)
			},
			wantErr: ErrCorrupt,
			errText: "no restore path to TXID 0000000000000012 avoids it (without it: from snapshot L9 0000000000000001-000000000000000c: missing file in the chain: " +
				"no file covers TXIDs 0000000000000011-0000000000000011",
		},
		{
			name: "corrupt snapshot and no other path names the way out",
			break_: func(t *testing.T, s *source) {
				flipByte(t, s.path(9, 1, 12), 0.5)
				remove(t, s.path(0, 12, 12))
			},
			wantErr: ErrCorrupt,
			errText: "way out: restore TXID 000000000000000b, the newest position that does not need it, with -txid 000000000000000b; " +
				"or move the bad object aside if it does not belong to this replica's history, or put a good copy in its place (",
		},
		{
			name: "file of another database's history, no metadata",
			break_: func(t *testing.T, s *source) {
				// Grows the database by 5 pages but holds only the last:
				// a gap past the end, as another database's file would.
				commit := uint32(len(s.states[18].data)/testPageSize) + 5
				page := make([]byte, testPageSize)
				s.put(0, 19, 19, ltxtest.Encode(t, testPageSize, commit, 19, 19, s.clock, []uint32{1, commit},
					func(uint32) []byte { return page }), storage.Metadata{})
				removeMetadata(t, s, 0, 19, 19)
			},
			wantErr: ErrForeignObject,
			errText: "L0 0000000000000013-0000000000000013: foreign object: it grows the database from",
		},
		{
			name: "foreign object",
			break_: func(t *testing.T, s *source) {
				if err := os.WriteFile(s.path(0, 19, 19), []byte("this is not an LTX file, but it has an LTX file's name............................................................"), 0o644); err != nil {
					t.Fatal(err)
				}
			},
			wantErr: ErrForeignObject,
			errText: "L0 0000000000000013-0000000000000013: foreign object: not an LTX file",
		},
		{
			name: "object under another file's name",
			break_: func(t *testing.T, s *source) {
				data, err := os.ReadFile(s.path(0, 18, 18))
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(s.path(0, 19, 19), data, 0o644); err != nil {
					t.Fatal(err)
				}
			},
			wantErr: ErrForeignObject,
			errText: "its header covers TXIDs 0000000000000012-0000000000000012",
		},
		{
			name:    "before the earliest restorable point",
			break_:  func(t *testing.T, s *source) { remove(t, s.path(9, 1, 1)); remove(t, s.path(0, 1, 1)) },
			target:  Target{TXID: 5},
			wantErr: ErrBeforeEarliest,
			errText: "target TXID 0000000000000005 is before the earliest restorable point, TXID 000000000000000c",
		},
		{
			name:    "timestamp before the earliest restorable point",
			break_:  func(t *testing.T, s *source) { remove(t, s.path(9, 1, 1)); remove(t, s.path(0, 1, 1)) },
			target:  Target{Timestamp: sourceStart.Add(5 * time.Second)},
			wantErr: ErrBeforeEarliest,
			errText: "before the earliest restorable point, TXID 000000000000000c committed at 2026-03-04T05:06:19Z",
		},
		{
			name:    "after the newest position",
			target:  Target{TXID: 19},
			wantErr: ErrAfterNewest,
			errText: "target TXID 0000000000000013 is after the newest position 0000000000000012",
		},
		{
			name: "checksum chain broken",
			break_: func(t *testing.T, s *source) {
				// A file from another history: right name and valid, but its
				// pre-apply checksum is not where the chain stands.
				remove(t, s.path(0, 18, 18))
				s.put(0, 18, 18, s.l0[18], storage.Metadata{Node: "other", CommitTime: s.clock, PreApplyChecksum: s.states[16].sum, PostApplyChecksum: s.states[18].sum})
			},
			wantErr: ErrChecksumChain,
			errText: "L0 0000000000000012-0000000000000012 starts from database checksum",
		},
		{
			name: "final checksum differs",
			break_: func(t *testing.T, s *source) {
				remove(t, s.path(0, 18, 18))
				s.put(0, 18, 18, s.l0[18], storage.Metadata{Node: "other", CommitTime: s.clock, PreApplyChecksum: s.states[17].sum, PostApplyChecksum: s.states[16].sum})
			},
			wantErr: ErrChecksumChain,
			errText: "recorded with L0 0000000000000012-0000000000000012; the replica is inconsistent",
		},
	}
	for _, slow := range []bool{false, true} {
		for _, tc := range tests {
			t.Run(fmt.Sprintf("%s/slow=%v", tc.name, slow), func(t *testing.T) {
				defer func(v bool) { forceSlowSnapshot = v }(forceSlowSnapshot)
				forceSlowSnapshot = slow
				s := buildHistory(t)
				if tc.break_ != nil {
					tc.break_(t, s)
				}
				out, _, err := restoreTo(t, s.client, tc.target, nil)
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				if !strings.Contains(err.Error(), tc.errText) {
					t.Fatalf("err = %q\nwant it to contain %q", err, tc.errText)
				}
				assertNothingLeft(t, out)
			})
		}
	}
}

// TestRestoreRoutesAroundBadObjects breaks one object of the newest plan
// in each way a restore notices (file checksum, snapshot structure,
// truncation, header): the restore takes another path (another level, the
// older snapshot), reports what it skipped, and gives the byte-identical
// database.
func TestRestoreRoutesAroundBadObjects(t *testing.T) {
	tests := []struct {
		name    string
		break_  func(t *testing.T, s *source)
		target  ltx.TXID
		skipped string
	}{
		{"corrupt L1 trailer", func(t *testing.T, s *source) { flipByte(t, s.path(1, 13, 14), 1) }, 0, "L1 000000000000000d-000000000000000e"},
		{"corrupt snapshot", func(t *testing.T, s *source) { flipByte(t, s.path(9, 1, 12), 0.5) }, 0, "L9 0000000000000001-000000000000000c"},
		{"corrupt snapshot trailer", func(t *testing.T, s *source) { flipByte(t, s.path(9, 1, 12), 1) }, 12, "L9 0000000000000001-000000000000000c"},
		{"corrupt snapshot page index", func(t *testing.T, s *source) { flipAt(t, s.path(9, 1, 12), -25) }, 0, "L9 0000000000000001-000000000000000c"},
		{"truncated snapshot", func(t *testing.T, s *source) { truncate(t, s.path(9, 1, 12), 0.7) }, 0, "L9 0000000000000001-000000000000000c"},
		{"corrupt snapshot header", func(t *testing.T, s *source) { flipFrom(t, s.path(9, 1, 12), 10) }, 0, "L9 0000000000000001-000000000000000c"},
		{"first snapshot: the first L0 is a full image", func(t *testing.T, s *source) { flipByte(t, s.path(9, 1, 1), 0.5) }, 5, "L9 0000000000000001-0000000000000001"},
		{"no L3: the L2 files cover its range", func(t *testing.T, s *source) { remove(t, s.path(3, 2, 9)) }, 9, ""},
	}
	for _, slow := range []bool{false, true} {
		for _, tc := range tests {
			t.Run(fmt.Sprintf("%s/slow=%v", tc.name, slow), func(t *testing.T) {
				defer func(v bool) { forceSlowSnapshot = v }(forceSlowSnapshot)
				forceSlowSnapshot = slow
				s := buildHistory(t)
				tc.break_(t, s)
				out, res, err := restoreTo(t, s.client, Target{TXID: tc.target}, nil)
				if err != nil {
					t.Fatalf("restore: %v", err)
				}
				want := tc.target
				if want == 0 {
					want = s.txid
				}
				assertRestored(t, s, out, res, want)
				var got []string
				for _, b := range res.Skipped {
					got = append(got, FileName(b.File))
					if b.Location == "" || !strings.Contains(b.Err.Error(), FileName(b.File)) {
						t.Errorf("skipped %s: location %q, error %q", FileName(b.File), b.Location, b.Err)
					}
				}
				if strings.Join(got, ",") != tc.skipped {
					t.Fatalf("skipped %v, want %q", got, tc.skipped)
				}
			})
		}
	}
}

// TestRestoreTimestampAroundBadHeader: finding the TXID of a time reads
// file headers; a bad one is read from another file ending at the same
// TXID, and the restore goes on.
func TestRestoreTimestampAroundBadHeader(t *testing.T) {
	s := buildHistory(t)
	flipFrom(t, s.path(0, 14, 14), 10) // the page size field: an invalid header
	out, res, err := restoreTo(t, s.client, Target{Timestamp: s.states[14].time.Add(500 * time.Millisecond)}, nil)
	if err != nil {
		t.Fatalf("restore by time with a bad header at the answer: %v", err)
	}
	assertRestored(t, s, out, res, 14)

	// With no other file ending at TXID 15, the error names the object.
	flipFrom(t, s.path(0, 15, 15), 10)
	_, _, err = restoreTo(t, s.client, Target{Timestamp: s.states[15].time.Add(500 * time.Millisecond)}, nil)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "L0 000000000000000f-000000000000000f") {
		t.Fatalf("err = %v, want ErrCorrupt naming L0 15", err)
	}
}

// removeMetadata strips an object of the file store of its metadata, as a
// plain copy without extended attributes does.
func removeMetadata(t *testing.T, s *source, level int, min, max ltx.TXID) {
	t.Helper()
	p := s.path(level, min, max)
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	remove(t, p)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	h, err := ReadHeader(context.Background(), s.client, storage.FileInfo{Level: level, MinTXID: min, MaxTXID: max})
	if err != nil {
		t.Fatal(err)
	}
	if h.Metadata != nil {
		t.Fatalf("%s still has metadata after a plain copy (a sidecar?)", p)
	}
}

func TestRestoreRefusesExistingOutput(t *testing.T) {
	s := buildHistory(t)
	for _, name := range []string{"out.db", "out.db-wal"} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			existing := filepath.Join(dir, name)
			if err := os.WriteFile(existing, []byte("keep me"), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := Restore(context.Background(), s.client, Options{OutputPath: filepath.Join(dir, "out.db")})
			if !errors.Is(err, ErrOutputExists) || !strings.Contains(err.Error(), existing) {
				t.Fatalf("err = %v, want ErrOutputExists naming %s", err, existing)
			}
			if b, _ := os.ReadFile(existing); string(b) != "keep me" {
				t.Fatalf("existing file changed: %q", b)
			}
			entries, _ := os.ReadDir(dir)
			if len(entries) != 1 {
				t.Fatalf("directory holds %d entries, want only %s", len(entries), name)
			}
		})
	}
}

func TestExecuteFileDeletedAfterPlanning(t *testing.T) {
	s := buildHistory(t)
	plan, err := BuildPlan(context.Background(), s.client, Target{})
	if err != nil {
		t.Fatal(err)
	}
	remove(t, s.path(0, 17, 17))
	out := filepath.Join(t.TempDir(), "out.db")
	_, err = Execute(context.Background(), s.client, plan, Options{OutputPath: out})
	if !errors.Is(err, ErrMissingFile) || !strings.Contains(err.Error(), "L0 0000000000000011-0000000000000011: missing file in the chain") {
		t.Fatalf("err = %v", err)
	}
	assertNothingLeft(t, out)
}

func remove(t *testing.T, path string) {
	t.Helper()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
}

// flipAt inverts the byte at offset off from the end of the file (off < 0).
func flipAt(t *testing.T, path string, off int64) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	flipByte(t, path, float64(st.Size()+off)/float64(st.Size()-1))
}

// flipFrom inverts the byte at offset off from the start of the file (10:
// the page size field of an LTX header).
func flipFrom(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// truncate cuts the file to fraction at of its length.
func truncate(t *testing.T, path string, at float64) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, int64(float64(st.Size())*at)); err != nil {
		t.Fatal(err)
	}
}

// flipByte inverts the byte at fraction at (0..1) of the file's length.
func flipByte(t *testing.T, path string, at float64) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	i := int(float64(len(b)-1) * at)
	b[i] ^= 0xff
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b[i:i+1], int64(i)); err != nil {
		t.Fatal(err)
	}
}

// TestRestoreZeroPageAndFullImage covers two files the primary writes: a
// zero-page file that claims a TXID (a node taking over), and a full image
// written after a history break, whose pre-apply checksum does not follow
// the previous file (the chain restarts there).
func TestRestoreZeroPageAndFullImage(t *testing.T) {
	s := newSource(t)
	s.insert(40, 100)
	s.sync() // 1
	s.insert(40, 100)
	s.sync() // 2

	// 3: a claim with no pages.
	cur := s.pages()
	s.txid++
	s.clock = s.clock.Add(time.Second)
	sum := s.states[2].sum
	s.put(0, 3, 3, encode(t, cur, 3, 3, s.clock, []uint32{}), storage.Metadata{Node: "b", CommitTime: s.clock, PreApplyChecksum: sum, PostApplyChecksum: sum})
	s.states[3] = state{data: cur, sum: sum, time: s.clock}

	// 4: the history broke (say, a checkpoint while the daemon was down):
	// a full image whose pre-apply checksum is not where the chain stood.
	s.insert(40, 100)
	s.exec("DELETE FROM t WHERE id % 3 = 0")
	cur = s.pages()
	s.txid++
	s.clock = s.clock.Add(time.Second)
	st := state{data: cur, sum: checksumOf(t, cur), time: s.clock}
	s.put(0, 4, 4, encode(t, cur, 4, 4, s.clock, nil), storage.Metadata{Node: "b", CommitTime: s.clock, PreApplyChecksum: ltx.ChecksumFlag | 12345, PostApplyChecksum: st.sum})
	s.states[4] = st
	s.l0[4] = nil
	s.prev = cur
	s.insert(10, 100)
	s.sync() // 5

	for txid := ltx.TXID(1); txid <= 5; txid++ {
		out, res, err := restoreTo(t, s.client, Target{TXID: txid}, nil)
		if err != nil {
			t.Fatalf("restore TXID %s: %v", txid, err)
		}
		assertRestored(t, s, out, res, txid)
	}
}

// TestRestoreRandomHistory records 50 points of a random write run (inserts,
// updates, deletes, an occasional VACUUM) compacted as the primary does (L1
// every 5 TXIDs, L2 every 20, a snapshot at 30) and restores each point by
// TXID and by time, byte for byte.
func TestRestoreRandomHistory(t *testing.T) {
	rng := rand.New(rand.NewSource(7))
	s := newSource(t)
	const points = 50
	for i := 0; i < points; i++ {
		switch r := rng.Intn(10); {
		case r < 5:
			s.insert(1+rng.Intn(40), 20+rng.Intn(400))
		case r < 8:
			s.exec("UPDATE t SET v = v || ? WHERE id % ? = 0", strings.Repeat("u", rng.Intn(50)), 2+rng.Intn(9))
		case r < 9:
			s.exec("DELETE FROM t WHERE id % ? = 0", 2+rng.Intn(5))
		default:
			s.exec("DELETE FROM t WHERE id % 4 = 0")
			s.exec("VACUUM")
		}
		txid := s.sync()
		if txid%5 == 0 && txid > 1 {
			s.compact(1, txid-4, txid)
		}
		if txid%20 == 0 {
			s.compact(2, txid-19, txid)
		}
		if txid == 30 {
			s.snapshot()
		}
	}
	// L0 files older than the last L1 are gone, as retention would leave them.
	for txid := ltx.TXID(2); txid <= 40; txid++ {
		remove(t, s.path(0, txid, txid))
	}
	for txid := ltx.TXID(1); txid <= s.txid; txid++ {
		restorable := txid == 1 || txid%5 == 0 || txid > 40 || txid == 30
		out, res, err := restoreTo(t, s.client, Target{TXID: txid}, nil)
		if !restorable {
			if !errors.Is(err, ErrMissingFile) {
				t.Fatalf("TXID %s inside a compaction: err = %v, want ErrMissingFile", txid, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("restore TXID %s: %v", txid, err)
		}
		assertRestored(t, s, out, res, txid)

		out, res, err = restoreTo(t, s.client, Target{Timestamp: s.states[txid].time}, nil)
		if err != nil {
			t.Fatalf("restore time of TXID %s: %v", txid, err)
		}
		assertRestored(t, s, out, res, txid)
	}
}
