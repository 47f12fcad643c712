package bench

// What restore's safety costs (issue 10 items 2, 7, 8): a database of
// UNDERSTUDY_BENCH_MB (default 256) MB as an L9 snapshot, the same full
// image as L0 file 1, and UNDERSTUDY_BENCH_L0 (default 20) small L0 files,
// in a file replica, restored by the real binary:
//   - intact (proven by database checksums: no quick_check);
//   - with one byte of the snapshot flipped (routed through L0 file 1);
//   - the L0 files copied without their metadata (quick_check by default),
//     and the same with -skip-integrity-check;
//   - SIGINT in the middle of a restore: time to exit, what is left.
// Numbers are reported, not asserted. Run:
//
//	UNDERSTUDY_BENCH=1 UNDERSTUDY_BIN=$PWD/bin/understudy go test -run TestRestoreBadObjectBench -v ./bench/

import (
	"context"
	"crypto/rand"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/internal/dbsum"
	"github.com/understudy-db/understudy/internal/storage"
	"github.com/understudy-db/understudy/internal/storage/file"
)

func TestRestoreBadObjectBench(t *testing.T) {
	bin := benchBin(t)
	sizeMB := envInt(t, "UNDERSTUDY_BENCH_MB", 256)
	nL0 := envInt(t, "UNDERSTUDY_BENCH_L0", 20)
	dir := t.TempDir()

	dbPath := filepath.Join(dir, "src.db")
	db, rows := randomBlobDB(t, dbPath, sizeMB)

	ctx := context.Background()
	replica := filepath.Join(dir, "replica")
	client, err := file.New(replica)
	if err != nil {
		t.Fatal(err)
	}
	clock := time.Now().UTC().Add(-time.Hour)
	putFile(t, ctx, client, dbPath, storage.SnapshotLevel, 1, 1, clock, nil, 0)
	sum := putFile(t, ctx, client, dbPath, 0, 1, 1, clock, nil, 0)
	for txid := ltx.TXID(2); txid <= ltx.TXID(nL0)+1; txid++ {
		mustExec(t, db, "UPDATE t SET v = randomblob(4000) WHERE id = ?", int(txid)*7919%rows+1)
		changed := walPages(t, dbPath+"-wal")
		mustExec(t, db, "PRAGMA wal_checkpoint(TRUNCATE)")
		clock = clock.Add(time.Second)
		sum = putFile(t, ctx, client, dbPath, 0, txid, txid, clock, changed, sum)
	}
	// The L0 files again, copied without their metadata (as cp or rsync
	// without extended attributes copy them).
	plain := filepath.Join(dir, "plain")
	if out, err := exec.Command("cp", "-r", "--no-preserve=all", replica+"/ltx", plain+"-ltx").CombinedOutput(); err != nil {
		t.Fatalf("cp: %v: %s", err, out)
	}
	if err := os.MkdirAll(plain, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(plain+"-ltx", filepath.Join(plain, "ltx")); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(plain, "ltx", "9")); err != nil {
		t.Fatal(err)
	}
	dbMB := fileSize(t, dbPath) >> 20

	restore := func(label, url string, args ...string) string {
		t.Helper()
		out := filepath.Join(dir, "restored.db")
		_ = os.Remove(out)
		cmd := exec.Command(bin, append(append([]string{"restore", "-o", out}, args...), url)...)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		start := time.Now()
		if err := cmd.Run(); err != nil {
			t.Fatalf("%s: %v\n%s", label, err, stderr.String())
		}
		secs := time.Since(start).Seconds()
		ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
		if got, _, err := dbsum.File(out); err != nil || got != sum {
			t.Fatalf("%s: restored checksum %s (%v), want %s", label, got, err, sum)
		}
		t.Logf("RESULT %s: %d MB, %.2f s, CPU %.2f s user %.2f s sys", label, dbMB, secs,
			time.Duration(ru.Utime.Nano()).Seconds(), time.Duration(ru.Stime.Nano()).Seconds())
		return stderr.String()
	}
	restore("intact, verified by checksums", "file://"+replica)
	restore("metadata stripped, quick_check by default", "file://"+plain)
	restore("metadata stripped, -skip-integrity-check", "file://"+plain, "-skip-integrity-check")

	snap := client.Path(storage.SnapshotLevel, 1, 1)
	f, err := os.OpenFile(snap, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	off := fileSize(t, snap) / 2
	b := []byte{0}
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if log := restore("one byte of the L9 snapshot flipped: routed via L0 1", "file://"+replica); !strings.Contains(log, "skipping a bad object") {
		t.Fatalf("the routed restore did not log the skip:\n%s", log)
	}

	// SIGINT once the restore has written pages to its temp file (it is
	// created sparse at its full size).
	outDir := filepath.Join(dir, "interrupted")
	if err := os.Mkdir(outDir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "restore", "-o", filepath.Join(outDir, "restored.db"), "file://"+plain)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	var written int64
	for {
		if tmp, _ := filepath.Glob(filepath.Join(outDir, ".restored.db.restore-*.tmp")); len(tmp) > 0 {
			if st, err := os.Stat(tmp[0]); err == nil && st.Sys().(*syscall.Stat_t).Blocks*512 > 16<<20 {
				written = st.Sys().(*syscall.Stat_t).Blocks * 512
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no temp file with 16 MB written within a minute")
		}
		time.Sleep(time.Millisecond)
	}
	sent := time.Now()
	_ = cmd.Process.Signal(syscall.SIGINT)
	err = cmd.Wait()
	took := time.Since(sent)
	entries, _ := os.ReadDir(outDir)
	t.Logf("RESULT SIGINT during a restore of %d MB, %d MB written: exit after %s (%v), %d files left beside the output",
		dbMB, written>>20, took.Round(time.Millisecond), err, len(entries))
}

// randomBlobDB creates a WAL database at path of about sizeMB of rows of
// 4,000 random (incompressible) bytes, checkpointed so the whole of it is in
// the database file, and returns its one connection (closed at the test's
// end) and the number of rows (ids 1..rows).
func randomBlobDB(t *testing.T, path string, sizeMB int) (*sql.DB, int) {
	t.Helper()
	db, err := sql.Open("sqlite3", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	db.SetMaxOpenConns(1)
	for _, q := range []string{
		fmt.Sprintf("PRAGMA page_size=%d", benchPageSize), "PRAGMA journal_mode=WAL", "PRAGMA synchronous=OFF",
		"CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)",
	} {
		mustExec(t, db, q)
	}
	blob := make([]byte, 4000)
	rows := sizeMB * 1024 * 1024 / 4100
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < rows; i++ {
		_, _ = rand.Read(blob)
		if _, err := tx.Exec("INSERT INTO t (v) VALUES (?)", blob); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	mustExec(t, db, "PRAGMA wal_checkpoint(TRUNCATE)")
	return db, rows
}
