package bench

// Primary on a 1 GB database: `understudy replicate` starts on a database
// of ~1 GiB (one table of random 3,000-byte blobs, one row per page, so it
// crosses the lock-byte page), writes its first full snapshot, then ships
// ~1 GiB of WAL the application writes as updates of random rows, 100 rows a
// transaction. Reported: time to the first snapshot in the store, the
// daemon's CPU seconds per GB of WAL, its peak RSS (and the anonymous /
// file-backed split), the WAL's largest size. Not asserted. Run:
//
//	UNDERSTUDY_BENCH=1 UNDERSTUDY_BIN=$PWD/bin/understudy go test -run TestPrimaryLargeBench -v -timeout 30m ./bench/
//
// UNDERSTUDY_BENCH_LARGE_MB (default 1024) sets both the database size and
// the WAL volume. With UNDERSTUDY_BENCH_LITESTREAM05/03 set (see
// litestream_test.go) the same workload runs through Litestream too, each on
// a fresh database; their "first full copy" is whatever full image they
// write first.

import (
	"database/sql"
	"fmt"
	"io/fs"
	"math/rand"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

const (
	largeBlob     = 3000 // bytes per row: one row per 4 KiB page
	largeTxRows   = 100  // rows updated per application transaction
	walFrameBytes = 4096 + 24
)

// buildLarge writes a database of rows blobs without a journal (quick: no
// WAL, no daemon yet), then puts it in WAL mode.
func buildLarge(t *testing.T, path string, rows int) {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+path+"?_journal_mode=OFF&_synchronous=OFF")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	if _, err := db.Exec(`CREATE TABLE b (id INTEGER PRIMARY KEY, v BLOB)`); err != nil {
		t.Fatal(err)
	}
	const batch = 20000
	for done := 0; done < rows; done += batch {
		n := min(batch, rows-done)
		if _, err := db.Exec(`WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < ?)
			INSERT INTO b (v) SELECT randomblob(?) FROM c`, n, largeBlob); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.Exec(`PRAGMA journal_mode=WAL`); err != nil {
		t.Fatal(err)
	}
}

// updateTx updates largeTxRows random rows in one transaction and returns
// how many distinct rows it changed.
func updateTx(t *testing.T, db *sql.DB, rng *rand.Rand, rows int) int {
	t.Helper()
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	ids := map[int]bool{}
	for len(ids) < largeTxRows {
		id := 1 + rng.Intn(rows)
		if ids[id] {
			continue
		}
		ids[id] = true
		if _, err := tx.Exec(`UPDATE b SET v = randomblob(?) WHERE id = ?`, largeBlob, id); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	return len(ids)
}

// rssPeak polls a process's anonymous and file-backed RSS and keeps the
// largest of each (VmHWM has only their sum's peak).
type rssPeak struct {
	mu         sync.Mutex
	anon, file int64
	quit, done chan struct{}
}

func watchRSS(t *testing.T, pid int) *rssPeak {
	p := &rssPeak{quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for {
			anon, file, err := readRSSParts(pid)
			if err != nil {
				return
			}
			p.mu.Lock()
			p.anon, p.file = max(p.anon, anon), max(p.file, file)
			p.mu.Unlock()
			select {
			case <-p.quit:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return p
}

func (p *rssPeak) stop() (anon, file int64) {
	close(p.quit)
	<-p.done
	return p.anon, p.file
}

// waitFor polls cond every 100 ms for up to limit and returns how long it
// took and whether it held.
func waitFor(limit time.Duration, cond func() bool) (time.Duration, bool) {
	t0 := time.Now()
	for !cond() {
		if time.Since(t0) > limit {
			return time.Since(t0), false
		}
		time.Sleep(100 * time.Millisecond)
	}
	return time.Since(t0), true
}

// largeRun is what one replicator did on the large database.
type largeRun struct {
	name                     string
	built                    time.Duration
	dbSize                   int64
	rows                     int
	snapTime                 time.Duration
	snapBytes                int64
	cpuSnap                  float64
	walBytes                 int64
	txs                      int
	framesPerRow             float64
	updating                 time.Duration
	putBytes                 float64 // -1 without /metrics
	tailTime                 time.Duration
	tailOK                   bool
	cpuTail, cpuEnd          float64
	compactTime              time.Duration
	compactOK, compacts      bool // compacts: the replica has L0/L1 levels
	hwmSnap, hwmTail, hwmEnd int64
	anonPeak, filePeak       int64
	anonEnd, fileEnd         int64
	maxWAL                   int64
}

// firstFullCopy is the largest finished file in the replica once one holds
// at least half the database (pages compress; a full image of random blobs
// is ~75 % of the file): a snapshot, or Litestream 0.5's first L0 file,
// whatever the replicator writes first.
func firstFullCopy(replica string, dbSize int64) int64 {
	var largest int64
	for p := range replicaFiles(replica) {
		if st, err := os.Stat(p); err == nil && st.Size() > largest {
			largest = st.Size()
		}
	}
	if largest*2 < dbSize {
		return 0
	}
	return largest
}

// replicaState is the replica's file count and total size, temp files
// included (a large file being written shows as a growing temp file), to
// tell when a replicator has stopped writing.
func replicaState(replica string) [2]int64 {
	var n, size int64
	_ = filepath.WalkDir(replica, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				n++
				size += info.Size()
			}
		}
		return nil
	})
	return [2]int64{n, size}
}

func runLarge(t *testing.T, r replicator, sizeMB int) largeRun {
	t.Helper()
	out := largeRun{name: r.name}
	dir := t.TempDir()
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "large.db")
	rows := sizeMB << 20 / 4096
	out.rows = rows
	t0 := time.Now()
	buildLarge(t, path, rows)
	out.built = time.Since(t0)
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	out.dbSize = st.Size()

	app, err := sql.Open("sqlite3", "file:"+path+"?_journal_mode=WAL&_synchronous=NORMAL&_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	app.SetMaxOpenConns(1)
	rng := rand.New(rand.NewSource(1))

	// How many WAL frames an updated row costs, measured on the fresh WAL
	// (one leaf page a row is expected), then the WAL is emptied again.
	distinct := updateTx(t, app, rng, rows)
	wst, err := os.Stat(path + "-wal")
	if err != nil {
		t.Fatal(err)
	}
	out.framesPerRow = float64(wst.Size()-32) / walFrameBytes / float64(distinct)
	if _, err := app.Exec(`PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
		t.Fatal(err)
	}

	// The daemon starts on the full database: its first full copy.
	replica := filepath.Join(dir, "replica")
	d, addr := r.start(t, path, replica)
	defer d.stop(t)
	peak := watchRSS(t, d.pid())
	snapTime, ok := waitFor(5*time.Minute, func() bool {
		out.snapBytes = firstFullCopy(replica, out.dbSize)
		return out.snapBytes > 0
	})
	d.alive(t)
	if !ok {
		t.Fatalf("%s: no full copy of the database in %s within %s", r.name, replica, snapTime)
	}
	out.snapTime = snapTime
	out.cpuSnap, out.hwmSnap = procStats(t, d.pid())

	// ~sizeMB of WAL from updates of random rows.
	out.putBytes = -1
	var put0 float64
	if addr != "" {
		put0 = metricByLabel(t, addr, "understudy_primary_store_bytes_total", "op")["put"]
	}
	target := int64(sizeMB) << 20
	u0 := time.Now()
	for out.walBytes < target {
		n := updateTx(t, app, rng, rows)
		out.walBytes += int64(float64(n)*out.framesPerRow+0.5) * walFrameBytes
		out.txs++
		if st, err := os.Stat(path + "-wal"); err == nil && st.Size() > out.maxWAL {
			out.maxWAL = st.Size()
		}
	}
	out.updating = time.Since(u0)
	lastCommit := time.Now()
	d.alive(t)

	// The tail: shipped when the replica has not changed for 3 s.
	last, lastChange := replicaState(replica), time.Now()
	_, out.tailOK = waitFor(2*time.Minute, func() bool {
		if s := replicaState(replica); s != last {
			last, lastChange = s, time.Now()
		}
		return time.Since(lastChange) > 3*time.Second
	})
	out.tailTime = max(lastChange.Sub(lastCommit), 0)
	out.cpuTail, out.hwmTail = procStats(t, d.pid())
	if addr != "" {
		out.putBytes = metricByLabel(t, addr, "understudy_primary_store_bytes_total", "op")["put"] - put0
	}

	// And the L1 compaction of those L0 files (every 30 s by default), for
	// replicators that have levels.
	l0, l1 := filepath.Join(replica, "ltx", "0"), filepath.Join(replica, "ltx", "1")
	if out.compacts = isDir(l0); out.compacts {
		out.compactTime, out.compactOK = waitFor(2*time.Minute, func() bool { return maxTXID(t, l1) >= maxTXID(t, l0) })
	}
	d.alive(t)
	out.cpuEnd, out.hwmEnd = procStats(t, d.pid())
	out.anonPeak, out.filePeak = peak.stop()
	out.anonEnd, out.fileEnd = rssParts(t, d.pid())
	return out
}

func TestPrimaryLargeBench(t *testing.T) {
	bin := benchBin(t)
	sizeMB := 1024
	if v := os.Getenv("UNDERSTUDY_BENCH_LARGE_MB"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			t.Fatalf("UNDERSTUDY_BENCH_LARGE_MB=%q: want a positive number of MB", v)
		}
		sizeMB = n
	}
	load0 := loadAvg()
	var runs []largeRun
	for _, r := range replicators(t, bin) {
		runs = append(runs, runLarge(t, r, sizeMB))
	}

	fmt.Printf("\nLoad average %s at the start, %s at the end.\n", load0, loadAvg())
	r0 := runs[0]
	fmt.Printf("Database %.2f GB (%d rows of %d-byte random blobs), built in %s without a journal; "+
		"then %.2f GB of WAL in %d transactions of %d row updates (%.2f frames a row).\n\n",
		float64(r0.dbSize)/1e9, r0.rows, largeBlob, r0.built.Round(100*time.Millisecond),
		float64(r0.walBytes)/1e9, r0.txs, largeTxRows, r0.framesPerRow)
	row := measureTable(runs, func(r largeRun) string { return r.name })
	gaveUp := func(ok bool) string {
		if ok {
			return ""
		}
		return " (gave up waiting)"
	}
	mb := func(kb int64) float64 { return float64(kb) / 1024 }
	row("first full copy in the store (size): time, daemon CPU", func(r largeRun) string {
		return fmt.Sprintf("%s, %.1f s (%.2f GB)", r.snapTime.Round(100*time.Millisecond), r.cpuSnap, float64(r.snapBytes)/1e9)
	})
	row("app's WAL rate with the daemon running", func(r largeRun) string {
		return fmt.Sprintf("%.0f MB/s", float64(r.walBytes)/1e6/r.updating.Seconds())
	})
	row("bytes put meanwhile (/metrics)", func(r largeRun) string {
		if r.putBytes < 0 {
			return "n/a"
		}
		return fmt.Sprintf("%.2f GB", r.putBytes/1e9)
	})
	row("replica last changed after the last commit", func(r largeRun) string {
		return r.tailTime.Round(100*time.Millisecond).String() + gaveUp(r.tailOK)
	})
	row("daemon CPU per GB of WAL, shipping", func(r largeRun) string {
		gb := float64(r.walBytes) / 1e9
		return fmt.Sprintf("%.1f s/GB (%.1f s)", (r.cpuTail-r.cpuSnap)/gb, r.cpuTail-r.cpuSnap)
	})
	row("daemon CPU per GB of WAL, shipping + L1 compaction", func(r largeRun) string {
		if !r.compacts {
			return "n/a (no levels)"
		}
		gb := float64(r.walBytes) / 1e9
		return fmt.Sprintf("%.1f s/GB (%.1f s; L1 caught up %s later%s)", (r.cpuEnd-r.cpuSnap)/gb, r.cpuEnd-r.cpuSnap,
			r.compactTime.Round(100*time.Millisecond), gaveUp(r.compactOK))
	})
	row("VmHWM after the first copy / after shipping / at the end", func(r largeRun) string {
		return fmt.Sprintf("%.1f / %.1f / %.1f MB", mb(r.hwmSnap), mb(r.hwmTail), mb(r.hwmEnd))
	})
	row("peak anonymous / file-backed RSS (sampled every 100 ms)", func(r largeRun) string {
		return fmt.Sprintf("%.1f / %.1f MB", mb(r.anonPeak), mb(r.filePeak))
	})
	row("RSS at the end: anonymous / file-backed", func(r largeRun) string {
		return fmt.Sprintf("%.1f / %.1f MB", mb(r.anonEnd), mb(r.fileEnd))
	})
	row("WAL max", func(r largeRun) string { return fmt.Sprintf("%.1f MB", float64(r.maxWAL)/1e6) })
}
