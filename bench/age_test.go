package bench

// What client-side age encryption costs: a database of UNDERSTUDY_BENCH_MB
// (default 256) MB of random blobs is written as an L9 snapshot into two
// file replicas, one plain and one through agecrypt (the upload path), and
// restored from each by the real binary, UNDERSTUDY_BENCH_RUNS (default 3)
// times. Numbers are reported, not asserted. Run:
//
//	UNDERSTUDY_BENCH=1 UNDERSTUDY_BIN=$PWD/bin/understudy go test -count=1 -run TestAgeBench -v ./bench/

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/understudy-db/understudy/internal/storage"
	"github.com/understudy-db/understudy/internal/storage/agecrypt"
	"github.com/understudy-db/understudy/internal/storage/file"
)

func TestAgeBench(t *testing.T) {
	bin := benchBin(t)
	sizeMB := envInt(t, "UNDERSTUDY_BENCH_MB", 256)
	runs := envInt(t, "UNDERSTUDY_BENCH_RUNS", 3)
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "src.db")
	randomBlobDB(t, dbPath, sizeMB)

	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "understudy.yml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, "dbs:\n  - path: %s\n    replicas:\n      - {name: plain, url: 'file://%s'}\n      - {name: age, url: 'file://%s', age: {identities: [%s]}}\n",
		dbPath, filepath.Join(dir, "plain"), filepath.Join(dir, "age"), id), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, name := range []string{"plain", "age"} {
		fc, err := file.New(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		var c storage.Client = fc
		if name == "age" {
			if c, err = agecrypt.New(fc, agecrypt.Options{Replica: name, Recipients: []age.Recipient{id.Recipient()}}); err != nil {
				t.Fatal(err)
			}
		}
		start := time.Now()
		putFile(t, ctx, c, dbPath, storage.SnapshotLevel, 1, 1, start.Add(-time.Hour), nil, 0)
		t.Logf("%-5s upload (LTX encode + write%s): %s", name, map[string]string{"age": " + encrypt"}[name], time.Since(start).Round(time.Millisecond))
	}
	for i := 0; i < runs; i++ {
		for _, name := range []string{"plain", "age"} {
			out := filepath.Join(dir, fmt.Sprintf("out-%s-%d.db", name, i))
			cmd := exec.Command(bin, "restore", "-config", cfg, "-replica", name, "-o", out, dbPath)
			start := time.Now()
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("restore %s: %v\n%s", name, err, b)
			}
			wall := time.Since(start)
			ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
			t.Logf("%-5s restore of %d MB: %s wall, %.2f s user + %.2f s sys, %d MB max RSS", name, sizeMB, wall.Round(time.Millisecond),
				time.Duration(ru.Utime.Nano()).Seconds(), time.Duration(ru.Stime.Nano()).Seconds(), ru.Maxrss/1024)
			os.Remove(out)
		}
	}
}
