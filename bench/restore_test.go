package bench

// Restore benchmark: a database of UNDERSTUDY_BENCH_MB (default 1024) MB,
// replicated to a file replica by each tool in turn (understudy, and
// Litestream 0.5 and 0.3 when UNDERSTUDY_BENCH_LITESTREAM05/03 name their
// binaries), each with UNDERSTUDY_BENCH_L0 (default 100) small update
// transactions after its first copy; then each tool restores the replica
// it wrote itself, UNDERSTUDY_BENCH_RUNS (default 3) times, alternating
// tools (A B C A B C ...) so that drift in the machine's speed falls on all
// of them. Every restored file is checked page by page against the source
// at the moment its replicator stopped (outside the timing); each tool
// runs with its own defaults (understudy's restore checks its checksums and
// runs quick_check when they do not prove the result; Litestream 0.5.16's
// -integrity-check defaults to none; 0.3.13 has none). It reports the
// median and every run's seconds, CPU and peak RSS, next to the disk's own
// sequential write speed (dd with fsync) in the same run. Numbers are
// reported, not asserted. Run:
//
//	UNDERSTUDY_BENCH=1 UNDERSTUDY_BIN=$PWD/bin/understudy \
//	  [UNDERSTUDY_BENCH_LITESTREAM05=/tmp/peers/litestream-0.5.16] [UNDERSTUDY_BENCH_LITESTREAM03=/tmp/peers/litestream-0.3.13] \
//	  go test -run TestRestoreBench -v -timeout 60m ./bench/

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
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3"
	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/internal/dbsum"
	"github.com/understudy-db/understudy/internal/storage"
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
	runs := envInt(t, "UNDERSTUDY_BENCH_RUNS", 3)
	dir := os.Getenv("UNDERSTUDY_BENCH_DIR")
	if dir == "" {
		dir = t.TempDir()
	}
	loadStart := loadAvg()

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

	// Each tool writes its own replica of the database: the first full
	// copy, then nL0 small update transactions a few milliseconds apart
	// (several sync intervals' worth of L0 files or WAL segments), then
	// it is stopped once its replica is quiet. The source's checksum at
	// that moment is what its restore must give.
	type tool struct {
		name, replica string
		restore       []string // the command, "OUT" for the output path
		sum           ltx.Checksum
		dbSize        int64
		secs, cpu     []float64
		rssMB         []int64
	}
	var tools []*tool
	for _, r := range replicators(t, bin) {
		tl := &tool{name: r.name, replica: filepath.Join(dir, "replica-"+strings.ReplaceAll(r.name, " ", "-"))}
		switch r.name {
		case "understudy":
			tl.restore = []string{bin, "restore", "-o", "OUT", "file://" + tl.replica}
		case "Litestream 0.5":
			tl.restore = []string{os.Getenv("UNDERSTUDY_BENCH_LITESTREAM05"), "restore", "-o", "OUT", "file://" + tl.replica}
		case "Litestream 0.3":
			tl.restore = []string{os.Getenv("UNDERSTUDY_BENCH_LITESTREAM03"), "restore", "-o", "OUT", "file://" + tl.replica}
		}
		t0 := time.Now()
		d, _ := r.start(t, dbPath, tl.replica)
		quiet := func(limit time.Duration) {
			t.Helper()
			last, same := replicaState(tl.replica), 0
			if _, ok := waitFor(limit, func() bool {
				d.alive(t)
				now := replicaState(tl.replica)
				if now == last && now[1] > fileSize(t, dbPath)/4 {
					same++
				} else {
					last, same = now, 0
				}
				return same >= 30 // 3 s without a change
			}); !ok {
				t.Fatalf("%s: replica %s not quiet within %s", r.name, tl.replica, limit)
			}
		}
		quiet(15 * time.Minute)
		firstCopy := time.Since(t0)
		for txid := 0; txid < nL0; txid++ {
			for j := 0; j < 5; j++ {
				mustExec(t, db, "UPDATE t SET s = ? WHERE id = ?", fmt.Sprintf("u%d-%s", txid, r.name), (txid*7919+j*104729)%rows+1)
			}
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(2 * time.Second) // past the default 1 s sync interval
		quiet(5 * time.Minute)
		d.stop(t)
		mustExec(t, db, "PRAGMA wal_checkpoint(TRUNCATE)")
		if tl.sum, _, err = dbsum.File(dbPath); err != nil {
			t.Fatal(err)
		}
		tl.dbSize = fileSize(t, dbPath)
		st := replicaState(tl.replica)
		t.Logf("%s wrote its replica: %d files, %d MB; first copy quiet after %s", r.name, st[0], st[1]>>20, firstCopy.Round(100*time.Millisecond))
		// Litestream 0.5 and 0.3 keep their state in the same place
		// beside the database; the next one starts clean.
		if err := os.RemoveAll(filepath.Join(dir, ".src.db-litestream")); err != nil {
			t.Fatal(err)
		}
		tools = append(tools, tl)
	}

	// The disk's own sequential write speed, with fsync.
	dbSize := fileSize(t, dbPath)
	ddOut := filepath.Join(dir, "dd.out")
	ddStart := time.Now()
	if out, err := exec.Command("dd", "if=/dev/zero", "of="+ddOut, "bs=1M", fmt.Sprintf("count=%d", dbSize>>20), "conv=fsync").CombinedOutput(); err != nil {
		t.Fatalf("dd: %v: %s", err, out)
	}
	ddSecs := time.Since(ddStart).Seconds()
	_ = os.Remove(ddOut)

	out := filepath.Join(dir, "restored.db")
	for round := 0; round < runs; round++ {
		for _, tl := range tools {
			for _, f := range []string{out, out + "-wal", out + "-shm"} {
				_ = os.Remove(f)
			}
			_ = exec.Command("sync").Run() // earlier writes must not land in this run's fsync
			args := slices.Clone(tl.restore)
			for i, a := range args {
				if a == "OUT" {
					args[i] = out
				}
			}
			cmd := exec.Command(args[0], args[1:]...)
			var stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stderr, &stderr
			t0 := time.Now()
			if err := cmd.Start(); err != nil {
				t.Fatalf("%s restore: %v", tl.name, err)
			}
			hwm := watchHWM(cmd.Process.Pid)
			if err := cmd.Wait(); err != nil {
				t.Fatalf("%s restore: %v\n%s", tl.name, err, stderr.String())
			}
			secs := time.Since(t0).Seconds()
			peakKB := hwm()
			ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
			got, _, err := dbsum.File(out)
			if err != nil {
				t.Fatal(err)
			}
			if got != tl.sum {
				t.Fatalf("%s restore: checksum %s, want %s (the source when its replicator stopped)\n%s", tl.name, got, tl.sum, stderr.String())
			}
			tl.secs = append(tl.secs, secs)
			tl.cpu = append(tl.cpu, time.Duration(ru.Utime.Nano()+ru.Stime.Nano()).Seconds())
			tl.rssMB = append(tl.rssMB, peakKB>>10)
		}
	}
	_ = os.Remove(out)

	median := func(v []float64) float64 {
		s := slices.Clone(v)
		slices.Sort(s)
		return s[len(s)/2]
	}
	mb := float64(dbSize) / 1e6
	fmt.Printf("\nRestore of a %d MB database (%d update transactions after the first copy), each tool from the file replica it wrote, %d runs alternating; every page checked against the source afterwards (load %s -> %s):\n\n",
		dbSize>>20, nL0, runs, loadStart, loadAvg())
	fmt.Println("| tool | median | MB/s (median) | every run | CPU user+sys (median) | peak RSS (max VmHWM) |")
	fmt.Println("|---|---|---|---|---|---|")
	for _, tl := range tools {
		var each []string
		for _, s := range tl.secs {
			each = append(each, fmt.Sprintf("%.2f", s))
		}
		fmt.Printf("| %s | %.2f s | %.0f | %s s | %.2f s | %d MB |\n", tl.name, median(tl.secs), mb/median(tl.secs),
			strings.Join(each, ", "), median(tl.cpu), slices.Max(tl.rssMB))
	}
	fmt.Printf("| dd bs=1M conv=fsync, same bytes | %.2f s | %.0f | | | |\n", ddSecs, mb/ddSecs)
}

// watchHWM reads a process's VmHWM every 20 ms until it exits; the
// returned func gives the last value read (KiB). The rusage of a child
// cannot be used: a Go parent starts it with vfork semantics, so its
// ru_maxrss includes the parent's own high-water mark (the test's).
func watchHWM(pid int) func() int64 {
	var mu sync.Mutex
	var last int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
			if err != nil {
				return
			}
			for _, line := range strings.Split(string(b), "\n") {
				if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
					if v, err := strconv.ParseInt(f[1], 10, 64); err == nil && v > 0 {
						mu.Lock()
						last = v
						mu.Unlock()
					}
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	return func() int64 {
		<-done
		mu.Lock()
		defer mu.Unlock()
		return last
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
