package bench

// Footprint: the disk a replicator uses beside the database (its shadow
// directory) and in a file replica, for a 225 MB database that the
// application keeps updating (100 random rows every 100 ms), sampled over
// UNDERSTUDY_BENCH_FOOTPRINT_SECONDS (default 90) with each replicator's
// default settings; understudy, then Litestream 0.5 and 0.3 where their
// binaries are given (litestream_test.go), each on a fresh database.
// Reported, not asserted. Run:
//
//	UNDERSTUDY_BENCH=1 UNDERSTUDY_BIN=$PWD/bin/understudy go test -run TestFootprintBench -v ./bench/

import (
	"database/sql"
	"fmt"
	"io/fs"
	"math/rand"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// footprintMB is the database size of the footprint benchmark (the issue's
// case).
const footprintMB = 225

// dirBytes is the size of the regular files under root (0 if absent).
func dirBytes(root string) int64 {
	var n int64
	filepath.WalkDir(root, func(_ string, e fs.DirEntry, err error) error {
		if err == nil && e.Type().IsRegular() {
			if info, err := e.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}

// shadowBytes is the size of the replicator's directories beside the
// database: understudy's .<name>-understudy, Litestream's .<name>-litestream.
func shadowBytes(db string) int64 {
	dir, base := filepath.Dir(db), filepath.Base(db)
	return dirBytes(filepath.Join(dir, "."+base+"-understudy")) + dirBytes(filepath.Join(dir, "."+base+"-litestream"))
}

type footprintSample struct {
	at              time.Duration
	shadow, replica int64
}

type footprintRun struct {
	name    string
	dbSize  int64
	samples []footprintSample
}

func TestFootprintBench(t *testing.T) {
	bin := benchBin(t)
	secs := 90
	if v := os.Getenv("UNDERSTUDY_BENCH_FOOTPRINT_SECONDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			t.Fatalf("UNDERSTUDY_BENCH_FOOTPRINT_SECONDS=%q: want a number of seconds", v)
		}
		secs = n
	}
	load0 := loadAvg()
	var runs []footprintRun
	for _, r := range replicators(t, bin) {
		runs = append(runs, runFootprint(t, r, time.Duration(secs)*time.Second))
	}
	fmt.Printf("\nLoad average %s at the start, %s at the end; %d MB database, 100 random rows updated every 100 ms for %d s, default settings, file replica.\n\n",
		load0, loadAvg(), footprintMB, secs)
	header := "| after the start |"
	sep := "|---|"
	for _, r := range runs {
		header += fmt.Sprintf(" %s: shadow / replica |", r.name)
		sep += "---|"
	}
	fmt.Println(header)
	fmt.Println(sep)
	for i := range runs[0].samples {
		line := fmt.Sprintf("| %s |", runs[0].samples[i].at)
		for _, r := range runs {
			if i >= len(r.samples) {
				line += " |"
				continue
			}
			s := r.samples[i]
			line += fmt.Sprintf(" %.0f MB (%.2f×) / %.0f MB (%.2f×) |", float64(s.shadow)/1e6, float64(s.shadow)/float64(r.dbSize),
				float64(s.replica)/1e6, float64(s.replica)/float64(r.dbSize))
		}
		fmt.Println(line)
	}
	fmt.Println()
}

// runFootprint samples the shadow directory and the replica while r
// replicates a fresh database under a steady trickle of updates.
func runFootprint(t *testing.T, r replicator, d time.Duration) footprintRun {
	t.Helper()
	out := footprintRun{name: r.name}
	dir := t.TempDir()
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "app.db")
	rows := footprintMB << 20 / 4096
	buildLarge(t, path, rows)
	if st, err := os.Stat(path); err == nil {
		out.dbSize = st.Size()
	}
	app, err := sql.Open("sqlite3", "file:"+path+"?_journal_mode=WAL&_synchronous=NORMAL&_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	app.SetMaxOpenConns(1)
	replica := filepath.Join(dir, "replica")
	dm, _ := r.start(t, path, replica)
	defer dm.stop(t)
	rng := rand.New(rand.NewSource(1))
	t0 := time.Now()
	next := 10 * time.Second
	for time.Since(t0) < d {
		updateTx(t, app, rng, rows)
		time.Sleep(100 * time.Millisecond)
		if at := time.Since(t0); at >= next {
			out.samples = append(out.samples, footprintSample{at: next, shadow: shadowBytes(path), replica: dirBytes(replica)})
			next += 10 * time.Second
		}
	}
	dm.alive(t)
	return out
}
