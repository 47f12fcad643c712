package bench

// Restore benchmark: a database of UNDERSTUDY_BENCH_MB (default 1024) MB in
// one snapshot plus UNDERSTUDY_BENCH_L0 (default 100) small L0 files in a
// file replica, restored by the real binary ($UNDERSTUDY_BIN). It reports
// seconds, MB/s and the peak RSS of the restore process, next to the disk's
// own sequential write speed (dd with fsync) measured in the same run, and,
// with UNDERSTUDY_BENCH_LITESTREAM naming a Litestream 0.5 binary, its
// restore of the same replica. Numbers are reported, not asserted. Run:
//
//	UNDERSTUDY_BENCH=1 UNDERSTUDY_BIN=$PWD/bin/understudy go test -run TestRestoreBench -v -timeout 30m ./bench/

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3"
	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/internal/dbsum"
	"github.com/understudy-db/understudy/internal/storage"
	"github.com/understudy-db/understudy/internal/storage/file"
	"github.com/understudy-db/understudy/internal/wal"
)

const benchPageSize = 4096

func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		t.Fatalf("%s=%q: %v", name, v, err)
	}
	return n
}

func TestRestoreBench(t *testing.T) {
	bin := benchBin(t)
	sizeMB := envInt(t, "UNDERSTUDY_BENCH_MB", 1024)
	nL0 := envInt(t, "UNDERSTUDY_BENCH_L0", 100)
	dir := os.Getenv("UNDERSTUDY_BENCH_DIR")
	if dir == "" {
		dir = t.TempDir()
	}

	dbPath := filepath.Join(dir, "src.db")
	db, err := sql.Open("sqlite3", dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	for _, q := range []string{
		fmt.Sprintf("PRAGMA page_size=%d", benchPageSize), "PRAGMA journal_mode=WAL", "PRAGMA synchronous=OFF",
		"CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB, s TEXT)",
	} {
		mustExec(t, db, q)
	}
	// Rows of half random, half repetitive bytes: compressible about 2:1,
	// like real data.
	start := time.Now()
	rows := sizeMB * 1024 * 1024 / 1100
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	blob := make([]byte, 500)
	for i := 0; i < rows; i++ {
		_, _ = rand.Read(blob)
		if _, err := tx.Exec("INSERT INTO t (v, s) VALUES (?, ?)", blob, fmt.Sprintf("%0500d", i)); err != nil {
			t.Fatal(err)
		}
		if i%20000 == 19999 {
			if err := tx.Commit(); err != nil {
				t.Fatal(err)
			}
			if tx, err = db.Begin(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	mustExec(t, db, "PRAGMA wal_checkpoint(TRUNCATE)")
	t.Logf("built a %d MB database in %s", fileSize(t, dbPath)>>20, time.Since(start).Round(time.Millisecond))

	client, err := file.New(filepath.Join(dir, "replica"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	clock := time.Now().UTC().Add(-time.Hour)
	sum := putFile(t, ctx, client, dbPath, storage.SnapshotLevel, 1, 1, clock, nil, 0)
	// L0 files: each updates a few rows; the pages it changed are the page
	// numbers of the WAL's frames, shipped after a TRUNCATE checkpoint.
	for txid := ltx.TXID(2); txid <= ltx.TXID(nL0)+1; txid++ {
		for j := 0; j < 5; j++ {
			mustExec(t, db, "UPDATE t SET s = ? WHERE id = ?", fmt.Sprintf("u%d", txid), (int(txid)*7919+j*104729)%rows+1)
		}
		changed := walPages(t, dbPath+"-wal")
		mustExec(t, db, "PRAGMA wal_checkpoint(TRUNCATE)")
		clock = clock.Add(time.Second)
		sum = putFile(t, ctx, client, dbPath, 0, txid, txid, clock, changed, sum)
	}
	dbSize := fileSize(t, dbPath)
	t.Logf("replica: snapshot + %d L0 files", nL0)

	// The disk's own sequential write speed, with fsync.
	ddOut := filepath.Join(dir, "dd.out")
	ddStart := time.Now()
	if out, err := exec.Command("dd", "if=/dev/zero", "of="+ddOut, "bs=1M", fmt.Sprintf("count=%d", dbSize>>20), "conv=fsync").CombinedOutput(); err != nil {
		t.Fatalf("dd: %v: %s", err, out)
	}
	ddSecs := time.Since(ddStart).Seconds()
	_ = os.Remove(ddOut)

	mb := float64(dbSize) / 1e6
	t.Logf("RESULT disk (dd bs=1M conv=fsync): %d MB in %.2f s, %.0f MB/s", dbSize>>20, ddSecs, mb/ddSecs)
	run := func(label string, out string, args ...string) {
		t.Helper()
		_ = os.Remove(out)
		_ = exec.Command("sync").Run() // earlier writes must not land in this run's fsync
		cmd := exec.Command(args[0], args[1:]...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		start := time.Now()
		if err := cmd.Run(); err != nil {
			t.Fatalf("%s: %v\n%s", label, err, stderr.String())
		}
		secs := time.Since(start).Seconds()
		ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
		got, _, err := dbsum.File(out)
		if err != nil {
			t.Fatal(err)
		}
		if got != sum {
			t.Fatalf("%s: restored checksum %s, want %s", label, got, sum)
		}
		t.Logf("RESULT %s: %d MB database, %.2f s, %.0f MB/s, CPU %.2f s user %.2f s sys, peak RSS %d MB",
			label, dbSize>>20, secs, mb/secs, time.Duration(ru.Utime.Nano()).Seconds(), time.Duration(ru.Stime.Nano()).Seconds(), ru.Maxrss>>10)
		_ = os.Remove(out)
	}
	for _, par := range []int{1, 8} {
		out := filepath.Join(dir, "restored.db")
		run(fmt.Sprintf("understudy restore -parallelism %d", par), out,
			bin, "restore", "-parallelism", strconv.Itoa(par), "-o", out, "file://"+client.Dir())
	}
	// A peer binary for comparison, built locally from fetched source.
	if peer := os.Getenv("UNDERSTUDY_BENCH_LITESTREAM"); peer != "" {
		out := filepath.Join(dir, "restored-litestream.db")
		run("litestream restore", out, peer, "restore", "-o", out, "file://"+client.Dir())
	}
}

func mustExec(t *testing.T, db *sql.DB, q string, args ...any) {
	t.Helper()
	if _, err := db.Exec(q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// walPages returns the sorted distinct page numbers of a WAL's committed
// frames.
func walPages(t *testing.T, path string) []uint32 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h, err := wal.ReadHeader(f)
	if err != nil {
		t.Fatal(err)
	}
	b, err := wal.Scan(f, h, wal.Start(h), 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	return slices.Sorted(maps.Keys(b.Pages))
}

// putFile encodes pages of the database at dbPath (all when pgnos is nil)
// into an LTX file streamed to the store through a pipe, and returns the
// database checksum after it.
func putFile(t *testing.T, ctx context.Context, client storage.Client, dbPath string, level int, minTXID, maxTXID ltx.TXID, ts time.Time, pgnos []uint32, pre ltx.Checksum) ltx.Checksum {
	t.Helper()
	post, _, err := dbsum.File(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	commit := uint32(fileSize(t, dbPath) / benchPageSize)
	pr, pw := io.Pipe()
	go func() {
		bw := bufio.NewWriterSize(pw, 1<<20)
		err := func() error {
			enc, err := ltx.NewEncoder(bw)
			if err != nil {
				return err
			}
			if err := enc.EncodeHeader(ltx.Header{Version: ltx.Version, Flags: ltx.HeaderFlagNoChecksum, PageSize: benchPageSize,
				Commit: commit, MinTXID: minTXID, MaxTXID: maxTXID, Timestamp: ts.UnixMilli()}); err != nil {
				return err
			}
			buf := make([]byte, benchPageSize)
			emit := func(p uint32) error {
				if p == ltx.LockPgno(benchPageSize) {
					return nil
				}
				if _, err := f.ReadAt(buf, int64(p-1)*benchPageSize); err != nil {
					return err
				}
				return enc.EncodePage(ltx.PageHeader{Pgno: p}, buf)
			}
			if pgnos == nil {
				for p := uint32(1); p <= commit; p++ {
					if err := emit(p); err != nil {
						return err
					}
				}
			} else {
				for _, p := range pgnos {
					if err := emit(p); err != nil {
						return err
					}
				}
			}
			if err := enc.Close(); err != nil {
				return err
			}
			return bw.Flush()
		}()
		pw.CloseWithError(err)
	}()
	md := storage.Metadata{Node: "bench", CommitTime: ts, PreApplyChecksum: pre, PostApplyChecksum: post}
	if _, err := client.Create(ctx, level, minTXID, maxTXID, pr, md); err != nil {
		t.Fatalf("create L%d %s-%s: %v", level, minTXID, maxTXID, err)
	}
	return post
}
