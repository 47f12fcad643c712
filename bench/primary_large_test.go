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
// the WAL volume.

import (
	"database/sql"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
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
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
			if err != nil {
				return
			}
			var anon, file int64
			for _, line := range strings.Split(string(b), "\n") {
				f := strings.Fields(line)
				if len(f) >= 2 && f[0] == "RssAnon:" {
					anon, _ = strconv.ParseInt(f[1], 10, 64)
				} else if len(f) >= 2 && f[0] == "RssFile:" {
					file, _ = strconv.ParseInt(f[1], 10, 64)
				}
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
	dir := t.TempDir()
	path := filepath.Join(dir, "large.db")
	rows := sizeMB << 20 / 4096
	t0 := time.Now()
	buildLarge(t, path, rows)
	built := time.Since(t0)
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	dbSize := st.Size()

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
	framesPerRow := float64(wst.Size()-32) / walFrameBytes / float64(distinct)
	if _, err := app.Exec(`PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
		t.Fatal(err)
	}

	// The daemon starts on the full database: its first snapshot.
	replica := filepath.Join(dir, "replica")
	addr := freeAddr(t)
	d := startDaemon(t, exec.Command(bin, "replicate", "-addr", addr, path, "file://"+replica))
	peak := watchRSS(t, d.pid())
	snapDir := filepath.Join(replica, "ltx", "9")
	snapTime, ok := waitFor(5*time.Minute, func() bool { return maxTXID(t, snapDir) > 0 })
	d.alive(t)
	if !ok {
		t.Fatalf("no snapshot in %s within %s", snapDir, snapTime)
	}
	cpuSnap, hwmSnap := procStats(t, d.pid())
	var snapBytes int64
	if ents, _ := os.ReadDir(snapDir); len(ents) > 0 {
		if info, err := ents[len(ents)-1].Info(); err == nil {
			snapBytes = info.Size()
		}
	}

	// ~sizeMB of WAL from updates of random rows.
	put0 := metricByLabel(t, addr, "understudy_primary_store_bytes_total", "op")["put"]
	target := int64(sizeMB) << 20
	var walBytes, maxWAL int64
	var txs int
	u0 := time.Now()
	for walBytes < target {
		n := updateTx(t, app, rng, rows)
		walBytes += int64(float64(n)*framesPerRow+0.5) * walFrameBytes
		txs++
		if st, err := os.Stat(path + "-wal"); err == nil && st.Size() > maxWAL {
			maxWAL = st.Size()
		}
	}
	updating := time.Since(u0)
	lastCommit := time.Now()
	d.alive(t)

	// The tail: shipped when no new L0 file has appeared for 3 s.
	l0, l1 := filepath.Join(replica, "ltx", "0"), filepath.Join(replica, "ltx", "1")
	last, lastChange := maxTXID(t, l0), time.Now()
	_, tailOK := waitFor(2*time.Minute, func() bool {
		if m := maxTXID(t, l0); m != last {
			last, lastChange = m, time.Now()
		}
		return time.Since(lastChange) > 3*time.Second
	})
	tailTime := max(lastChange.Sub(lastCommit), 0)
	cpuTail, hwmTail := procStats(t, d.pid())
	putBytes := metricByLabel(t, addr, "understudy_primary_store_bytes_total", "op")["put"] - put0

	// And the L1 compaction of those L0 files (every 30 s by default).
	compactTime, compactOK := waitFor(2*time.Minute, func() bool { return maxTXID(t, l1) >= maxTXID(t, l0) })
	d.alive(t)
	cpuEnd, hwm := procStats(t, d.pid())
	anonPeak, filePeak := peak.stop()
	anonEnd, fileEnd := rssParts(t, d.pid())
	d.stop(t)

	gb := float64(walBytes) / 1e9
	notDone := func(ok bool) string {
		if ok {
			return ""
		}
		return " (gave up waiting)"
	}
	fmt.Printf("\nLoad average %s at the start, %s at the end.\n\n", load0, loadAvg())
	fmt.Printf("| measure | value |\n|---|---|\n")
	fmt.Printf("| database | %.2f GB (%d rows of %d-byte random blobs), built in %s without a journal |\n",
		float64(dbSize)/1e9, rows, largeBlob, built.Round(100*time.Millisecond))
	fmt.Printf("| first snapshot in the store | %s after start (%.2f GB object), daemon CPU %.1f s |\n",
		snapTime.Round(100*time.Millisecond), float64(snapBytes)/1e9, cpuSnap)
	fmt.Printf("| WAL written by the app | %.2f GB in %s (%.0f MB/s; %d transactions of %d row updates, %.2f frames a row) |\n",
		gb, updating.Round(100*time.Millisecond), float64(walBytes)/1e6/updating.Seconds(), txs, largeTxRows, framesPerRow)
	fmt.Printf("| shipped to the store meanwhile | %.2f GB put (L0 and any L1), last L0 file %s after the last commit%s |\n",
		putBytes/1e9, tailTime.Round(100*time.Millisecond), notDone(tailOK))
	fmt.Printf("| daemon CPU per GB of WAL, shipping | %.1f s/GB (%.1f s) |\n", (cpuTail-cpuSnap)/gb, cpuTail-cpuSnap)
	fmt.Printf("| daemon CPU per GB of WAL, shipping + L1 compaction | %.1f s/GB (%.1f s; L1 caught up %s later%s) |\n",
		(cpuEnd-cpuSnap)/gb, cpuEnd-cpuSnap, compactTime.Round(100*time.Millisecond), notDone(compactOK))
	fmt.Printf("| daemon peak RSS (VmHWM) after the snapshot / after shipping / at the end | %.1f / %.1f / %.1f MB |\n",
		float64(hwmSnap)/1024, float64(hwmTail)/1024, float64(hwm)/1024)
	fmt.Printf("| peak anonymous / file-backed RSS (sampled every 100 ms) | %.1f / %.1f MB |\n",
		float64(anonPeak)/1024, float64(filePeak)/1024)
	fmt.Printf("| RSS at the end: anonymous / file-backed | %.1f / %.1f MB |\n", float64(anonEnd)/1024, float64(fileEnd)/1024)
	fmt.Printf("| WAL max | %.1f MB |\n", float64(maxWAL)/1e6)
}
