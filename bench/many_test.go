package bench

// Many idle databases in one daemon: a dir: entry of N small databases
// (one table, one row), file replica. For each N: the first start (every
// database gets its first full image), the idle daemon over a minute (RSS,
// CPU, store requests, descriptors, goroutines), the time from a commit to
// a parked database until it is shipped, from a new database's first
// commit until its first file is in the store, and a restart.
//
//	UNDERSTUDY_BENCH=1 UNDERSTUDY_BIN=$PWD/bin/understudy \
//	  [UNDERSTUDY_BENCH_MANY=1000,10000] [UNDERSTUDY_BENCH_IDLE=60 (seconds)] \
//	  [UNDERSTUDY_BENCH_LITESTREAM05=/tmp/peers/litestream-0.5.16 [UNDERSTUDY_BENCH_LITESTREAM05_MAX=10000]] \
//	  [UNDERSTUDY_BENCH_MANY_STORE=s3 (versitygw instead of a file replica; needs UNDERSTUDY_TOOLS_BIN)] \
//	  [UNDERSTUDY_CPUPROFILE=/tmp/many.prof (the daemon's CPU profile, of its last run)] \
//	  go test -count=1 -run TestManyIdleBench -v -timeout 60m ./bench/

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/understudy-db/understudy/integration/harness"
)

// createDBs makes n small WAL databases under dir.
func createDBs(t *testing.T, dir string, n int) {
	t.Helper()
	for i := range n {
		db, err := sql.Open("sqlite3", "file:"+filepath.Join(dir, fmt.Sprintf("t%05d.db", i))+"?_journal_mode=WAL")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.Exec(`CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t(v) VALUES ('x')`); err != nil {
			t.Fatal(err)
		}
		db.Close()
	}
}

type dirCounts struct {
	Databases, Active, Parked, Opening, Failed int
}

func dirStatus(addr string) (dirCounts, error) { return firstDir[dirCounts](addr) }

// firstDir is the one entry of /status's "dirs" (a daemon with one dir:
// entry), decoded as T: the replicate and follow daemons each report
// their own counts there.
func firstDir[T any](addr string) (T, error) {
	var doc struct {
		Dirs []T `json:"dirs"`
	}
	var zero T
	resp, err := http.Get("http://" + addr + "/status")
	if err != nil {
		return zero, err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil || len(doc.Dirs) != 1 {
		return zero, fmt.Errorf("no dirs in /status: %v", err)
	}
	return doc.Dirs[0], nil
}

// cpuTicks is the process's user + system time in clock ticks (1/100 s).
func cpuTicks(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return u + s
}

func openFDs(pid int) int {
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(ents)
}

// softFDLimit is the process's "Max open files" soft limit.
func softFDLimit(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "Max open files") {
			return strings.Fields(line)[3]
		}
	}
	return "?"
}

func sumMetric(t *testing.T, addr, name string) float64 {
	total := 0.0
	for _, v := range metricByLabel(t, addr, name, "op") {
		total += v
	}
	return total
}

type idleFigures struct {
	rssMB, peakMB     float64
	cpuPct, reqPerMin float64
	fds               int
	limit, goroutines string
	took              time.Duration
}

// idle measures the daemon over d.
func idle(t *testing.T, pid int, addr string, d time.Duration) idleFigures {
	t.Helper()
	c0, r0 := cpuTicks(t, pid), 0.0
	if addr != "" {
		r0 = sumMetric(t, addr, "understudy_primary_store_requests_total")
	}
	time.Sleep(d)
	f := idleFigures{cpuPct: float64(cpuTicks(t, pid)-c0) / d.Seconds(), fds: openFDs(pid), limit: softFDLimit(pid)}
	if addr != "" {
		f.reqPerMin = (sumMetric(t, addr, "understudy_primary_store_requests_total") - r0) / d.Minutes()
		g := metricByLabel(t, addr, "go_goroutines", "")
		for _, v := range g {
			f.goroutines = fmt.Sprint(v)
		}
	}
	anon, file, _ := readRSSParts(pid)
	f.rssMB = float64(anon+file) / 1024
	return f
}

func TestManyIdleBench(t *testing.T) {
	bin := benchBin(t)
	counts := []int{1000, 10000}
	if v := os.Getenv("UNDERSTUDY_BENCH_MANY"); v != "" {
		counts = nil
		for _, s := range strings.Split(v, ",") {
			n, err := strconv.Atoi(s)
			if err != nil {
				t.Fatalf("UNDERSTUDY_BENCH_MANY=%s: %v", v, err)
			}
			counts = append(counts, n)
		}
	}
	idleFor := envDuration(t, "UNDERSTUDY_BENCH_IDLE", time.Minute)
	kind := os.Getenv("UNDERSTUDY_BENCH_MANY_STORE")
	if kind == "" {
		kind = "file"
	}
	if kind != "file" && kind != "s3" {
		t.Fatalf("UNDERSTUDY_BENCH_MANY_STORE=%s: use file or s3", kind)
	}
	fmt.Printf("\nMany idle databases (one dir: entry, %s replica, idle %s, load %s)\n\n", kind, idleFor, loadAvg())
	fmt.Println("| databases | replicator | first start (all shipped) | peak RSS | idle RSS | idle CPU | store requests/min idle | fds (soft limit) | goroutines | commit to a parked db shipped | new db's first file in the store | restart (all known) | RSS after restart |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
	var notes []string
	for _, n := range counts {
		root := t.TempDir()
		dir, store := filepath.Join(root, "dir"), filepath.Join(root, "store")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		createDBs(t, dir, n)
		addr := freeAddr(t)
		cfg := filepath.Join(root, "understudy.yml")
		url, l0Of, env := "file://"+store, func(db string) string { return filepath.Join(store, db, "ltx", "0") }, os.Environ()
		if kind == "s3" {
			s3 := harness.StartVersityGW(t)
			bucket := s3.NewBucket(t)
			url = fmt.Sprintf("s3://%s/tenants?endpoint=%s&region=us-east-1&force-path-style=true", bucket, s3.Endpoint)
			l0Of = func(db string) string { return filepath.Join(s3.DataDir, bucket, "tenants", db, "0000") }
			env = append(env, "AWS_ACCESS_KEY_ID="+s3.AccessKey, "AWS_SECRET_ACCESS_KEY="+s3.SecretKey)
		}
		if err := os.WriteFile(cfg, []byte(fmt.Sprintf("addr: %s\ndbs:\n  - dir: %s\n    watch: true\n    replica:\n      url: '%s'\n", addr, dir, url)), 0o644); err != nil {
			t.Fatal(err)
		}
		daemonCmd := func() *exec.Cmd {
			c := exec.Command(bin, "replicate", "-config", cfg)
			c.Env = env
			return c
		}
		allParked := func() bool { c, err := dirStatus(addr); return err == nil && c.Databases == n && c.Parked == n }

		d := startDaemon(t, daemonCmd())
		peak := watchRSS(t, d.pid())
		first, ok := waitFor(30*time.Minute, allParked)
		d.alive(t)
		if !ok {
			t.Fatalf("%d databases: not all parked after %s", n, first)
		}
		pa, pf := peak.stop()
		f := idle(t, d.pid(), addr, idleFor)

		// A commit to a parked database, until its TXID moves on.
		app, err := sql.Open("sqlite3", "file:"+filepath.Join(dir, "t00000.db")+"?_journal_mode=WAL")
		if err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		if _, err := app.Exec(`INSERT INTO t(v) VALUES ('y')`); err != nil {
			t.Fatal(err)
		}
		wake, _ := waitFor(time.Minute, func() bool {
			var st struct {
				TXID     string `json:"txid"`
				Replicas []struct {
					TXID string `json:"txid"`
				} `json:"replicas"`
			}
			resp, err := http.Get("http://" + addr + "/status/db/t00000.db")
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			return json.NewDecoder(resp.Body).Decode(&st) == nil && len(st.Replicas) == 1 && st.Replicas[0].TXID == "0000000000000002"
		})
		wake = time.Since(t0)
		app.Close()
		// A new database, until its first L0 file is in the store.
		t0 = time.Now()
		nw, err := sql.Open("sqlite3", "file:"+filepath.Join(dir, "new.db")+"?_journal_mode=WAL")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := nw.Exec(`CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t(v) VALUES ('x')`); err != nil {
			t.Fatal(err)
		}
		t0 = time.Now()
		newDB, _ := waitFor(time.Minute, func() bool {
			ents, _ := os.ReadDir(l0Of("new.db"))
			return len(ents) > 0
		})
		newDB = time.Since(t0)
		nw.Close()
		n++ // new.db
		_, _ = waitFor(time.Minute, allParked)
		d.stop(t)

		d = startDaemon(t, daemonCmd())
		restart, _ := waitFor(30*time.Minute, allParked)
		ra, rf, _ := readRSSParts(d.pid())
		d.stop(t)
		n-- // as created
		fmt.Printf("| %d | understudy | %s | %.0f MB | %.0f MB | %.2f %% | %.0f | %d (%s) | %s | %s | %s | %s | %.0f MB |\n",
			n, first.Round(100*time.Millisecond), float64(pa+pf)/1024, f.rssMB, f.cpuPct, f.reqPerMin, f.fds, f.limit, f.goroutines,
			wake.Round(time.Millisecond), newDB.Round(time.Millisecond), restart.Round(100*time.Millisecond), float64(ra+rf)/1024)

		if ls := os.Getenv("UNDERSTUDY_BENCH_LITESTREAM05"); ls != "" && n <= envInt(t, "UNDERSTUDY_BENCH_LITESTREAM05_MAX", 1000) {
			if note := manyLitestream(t, ls, n, idleFor); note != "" {
				notes = append(notes, note)
			}
		}
	}
	for _, note := range notes {
		fmt.Printf("\n%s\n", note)
	}
}

// manyLitestream runs Litestream 0.5 on a fresh directory of n databases
// (directory replication, watch: true): the time until every database has
// its first file in the store, then the idle figures it gives from outside
// (no request counters: store requests are not reported). Litestream keeps
// every database open (about 6 descriptors each), so at 10,000 it meets the
// descriptor limit: the row then gives how many databases it shipped, when
// it stopped making progress, whether it exited, and its first error.
func manyLitestream(t *testing.T, bin string, n int, idleFor time.Duration) string {
	t.Helper()
	root := t.TempDir()
	dir, store := filepath.Join(root, "dir"), filepath.Join(root, "store")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	createDBs(t, dir, n)
	cfg := filepath.Join(root, "litestream.yml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("dbs:\n  - dir: %s\n    pattern: \"*.db\"\n    watch: true\n    replica:\n      type: file\n      path: %s\n", dir, store)), 0o644); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, exec.Command(bin, "replicate", "-config", cfg))
	peak := watchRSS(t, d.pid())
	// shipped[i]: database i has its first L0 file. Checked once a second
	// (10,000 directory reads per check), only for those still missing.
	shipped := make([]bool, n)
	count, last, lastChange := 0, 0, time.Now()
	t0 := time.Now()
	exited := false
	var maxFDs int
	for count < n && time.Since(t0) < 15*time.Minute && time.Since(lastChange) < 2*time.Minute {
		select {
		case <-d.exited:
			exited = true
		default:
		}
		if exited {
			break
		}
		maxFDs = max(maxFDs, openFDs(d.pid()))
		for i := range n {
			if !shipped[i] {
				if l0, _ := os.ReadDir(filepath.Join(store, fmt.Sprintf("t%05d.db", i), "ltx", "0")); len(l0) > 0 {
					shipped[i] = true
					count++
				}
			}
		}
		if count != last {
			last, lastChange = count, time.Now()
		}
		time.Sleep(time.Second)
	}
	first := lastChange.Sub(t0)
	pa, pf := peak.stop()
	logb, _ := os.ReadFile(d.log)
	emfile := strings.Count(string(logb), "too many open files")
	firstErr := ""
	for _, line := range strings.Split(string(logb), "\n") {
		if strings.Contains(line, "level=ERROR") || strings.Contains(line, "too many open files") || strings.Contains(line, "panic") {
			firstErr = line
			break
		}
	}
	if len(firstErr) > 300 {
		firstErr = firstErr[:300] + "..."
	}
	firstErr = strings.ReplaceAll(firstErr, "|", "/")
	startS := first.Round(100 * time.Millisecond).String()
	if count < n {
		startS = fmt.Sprintf("%d of %d shipped; no progress after %s", count, n, startS)
	}
	fdsS := func(f idleFigures) string {
		return fmt.Sprintf("%d, max %d while starting (%s)", f.fds, maxFDs, f.limit)
	}
	if exited {
		fmt.Printf("| %d | Litestream 0.5.16 | %s; then exited (%s) | %.0f MB | — | — | (not counted) | max %d | | | | | |\n",
			n, startS, d.cmd.ProcessState, float64(pa+pf)/1024, maxFDs)
	} else {
		f := idle(t, d.pid(), "", idleFor)
		fmt.Printf("| %d | Litestream 0.5.16 | %s | %.0f MB | %.0f MB | %.2f %% | (not counted) | %s | | | | | |\n",
			n, startS, float64(pa+pf)/1024, f.rssMB, f.cpuPct, fdsS(f))
		d.stop(t)
	}
	if emfile > 0 || firstErr != "" || exited {
		return fmt.Sprintf("Litestream 0.5.16 at %d databases: %d log lines say \"too many open files\"; first error line: %s", n, emfile, firstErr)
	}
	return ""
}
