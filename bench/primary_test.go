package bench

// Primary benchmark: the application's commit rate alone and with
// `understudy replicate` running (file replica, default settings), the
// WAL's largest size, the daemon's CPU time and peak RSS, ship lag from
// commit to object, and store requests per minute when idle. Numbers are
// reported, not asserted. Run:
//
//	UNDERSTUDY_BENCH=1 UNDERSTUDY_BIN=$PWD/bin/understudy go test -run TestPrimaryBench -v -timeout 30m ./bench/
//
// UNDERSTUDY_BENCH_SECONDS (default 10) sets each phase's length.

import (
	"bufio"
	"database/sql"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3"
)

func benchBin(t *testing.T) string {
	t.Helper()
	if os.Getenv("UNDERSTUDY_BENCH") == "" {
		t.Skip("set UNDERSTUDY_BENCH=1 to run benchmarks (make bench)")
	}
	bin := os.Getenv("UNDERSTUDY_BIN")
	if bin == "" {
		t.Fatal("set UNDERSTUDY_BIN to the understudy binary (make bench does)")
	}
	return bin
}

func openApp(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+path+"?_journal_mode=WAL&_synchronous=NORMAL&_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	if _, err := db.Exec(`CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, k TEXT, v TEXT); CREATE INDEX IF NOT EXISTS t_k ON t(k)`); err != nil {
		t.Fatal(err)
	}
	return db
}

// commitLoop runs 1-row insert transactions for d and returns tx/s and the
// largest WAL size seen.
func commitLoop(t *testing.T, db *sql.DB, walPath string, d time.Duration) (float64, int64) {
	t.Helper()
	stmt, err := db.Prepare(`INSERT INTO t(k, v) VALUES (?, 'some value of a typical row')`)
	if err != nil {
		t.Fatal(err)
	}
	defer stmt.Close()
	var n int
	var maxWAL int64
	t0 := time.Now()
	for time.Since(t0) < d {
		if _, err := stmt.Exec(strconv.Itoa(n)); err != nil {
			t.Fatal(err)
		}
		n++
		if n%1000 == 0 {
			if st, err := os.Stat(walPath); err == nil && st.Size() > maxWAL {
				maxWAL = st.Size()
			}
		}
	}
	return float64(n) / time.Since(t0).Seconds(), maxWAL
}

// procStats returns CPU seconds (user+system) and peak RSS in KiB of pid.
func procStats(t *testing.T, pid int) (float64, int64) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	var hwm int64
	st, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	sc := bufio.NewScanner(st)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "VmHWM:") {
			hwm, _ = strconv.ParseInt(strings.Fields(sc.Text())[1], 10, 64)
		}
	}
	return (utime + stime) / 100, hwm // USER_HZ is 100 on Linux
}

// rssParts returns the current anonymous and file-backed RSS in KiB of pid
// (file-backed is mostly the binary's own mapped pages).
func rssParts(t *testing.T, pid int) (anon, file int64) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "RssAnon:" {
			anon, _ = strconv.ParseInt(f[1], 10, 64)
		} else if len(f) >= 2 && f[0] == "RssFile:" {
			file, _ = strconv.ParseInt(f[1], 10, 64)
		}
	}
	return anon, file
}

// metricSum adds the values of every sample of a metric in /metrics.
func metricSum(t *testing.T, addr, name string) float64 {
	t.Helper()
	var sum float64
	for _, v := range metricByLabel(t, addr, name, "") {
		sum += v
	}
	return sum
}

// metricByLabel adds the values of every sample of a metric in /metrics by
// the value of one label ("" for samples without it, or label "").
func metricByLabel(t *testing.T, addr, name, label string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		key := ""
		if i := strings.Index(line, label+`="`); label != "" && i >= 0 {
			rest := line[i+len(label)+2:]
			key = rest[:strings.IndexByte(rest, '"')]
		}
		f := strings.Fields(line)
		v, _ := strconv.ParseFloat(f[len(f)-1], 64)
		out[key] += v
	}
	return out
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	t.Helper()
	if v := os.Getenv(name); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			t.Fatalf("%s=%q: %v", name, v, err)
		}
		return time.Duration(n) * time.Second
	}
	return def
}

// shipLag measures commit-to-object latency: commit one row, then watch the
// replica's L0 directory for the file of the next TXID.
func shipLag(t *testing.T, db *sql.DB, l0Dir string, n int) []time.Duration {
	t.Helper()
	var lags []time.Duration
	for i := 0; i < n; i++ {
		before := countDir(l0Dir)
		t0 := time.Now()
		if _, err := db.Exec(`INSERT INTO t(k, v) VALUES ('lag', 'x')`); err != nil {
			t.Fatal(err)
		}
		for countDir(l0Dir) == before {
			if time.Since(t0) > 10*time.Second {
				t.Fatal("no L0 file within 10s of a commit")
			}
			time.Sleep(2 * time.Millisecond)
		}
		lags = append(lags, time.Since(t0))
		time.Sleep(time.Duration(137*(i%7)) * time.Millisecond) // spread over the sync interval
	}
	sort.Slice(lags, func(i, j int) bool { return lags[i] < lags[j] })
	return lags
}

// maxTXID is the highest MaxTXID of the LTX files in dir (0 if none).
func maxTXID(t *testing.T, dir string) uint64 {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	var out uint64
	for _, e := range ents {
		name := strings.TrimSuffix(e.Name(), ".ltx")
		if i := strings.IndexByte(name, '-'); i >= 0 && name != e.Name() {
			if v, err := strconv.ParseUint(name[i+1:], 16, 64); err == nil && v > out {
				out = v
			}
		}
	}
	return out
}

func countDir(dir string) int {
	ents, _ := os.ReadDir(dir)
	return len(ents)
}

func TestPrimaryBench(t *testing.T) {
	bin := benchBin(t)
	phase := envDuration(t, "UNDERSTUDY_BENCH_SECONDS", 10*time.Second)
	dir := t.TempDir()

	// Alone.
	soloPath := filepath.Join(dir, "solo.db")
	solo := openApp(t, soloPath)
	soloRate, soloWAL := commitLoop(t, solo, soloPath+"-wal", phase)
	solo.Close()

	// With replicate.
	path := filepath.Join(dir, "app.db")
	app := openApp(t, path)
	defer app.Close()
	replica := filepath.Join(dir, "replica")
	addr := freeAddr(t)
	cmd := exec.Command(bin, "replicate", "-addr", addr, path, "file://"+replica)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	time.Sleep(time.Second)
	cpu0, _ := procStats(t, cmd.Process.Pid)
	rate, maxWAL := commitLoop(t, app, path+"-wal", phase)
	time.Sleep(2 * time.Second) // let it ship the tail
	cpu1, rss := procStats(t, cmd.Process.Pid)
	walShipped := metricSum(t, addr, "understudy_primary_store_bytes_total")

	lags := shipLag(t, app, filepath.Join(replica, "ltx", "0"), 40)

	// Idle: first let the primary finish the work the commits above left
	// (compaction of their L0 files into L1, every 30 s by default), then
	// count store requests over three phases with no commit.
	settle := time.Now()
	for maxTXID(t, filepath.Join(replica, "ltx", "1")) < maxTXID(t, filepath.Join(replica, "ltx", "0")) {
		if time.Since(settle) > 2*time.Minute {
			t.Fatal("L1 did not catch up with L0 within 2 minutes")
		}
		time.Sleep(100 * time.Millisecond)
	}
	settled := time.Since(settle).Round(time.Second)
	time.Sleep(time.Second)
	ops0 := metricByLabel(t, addr, "understudy_primary_store_requests_total", "op")
	req0 := metricSum(t, addr, "understudy_primary_store_requests_total")
	idle := phase * 3
	time.Sleep(idle)
	req1 := metricSum(t, addr, "understudy_primary_store_requests_total")
	ops1 := metricByLabel(t, addr, "understudy_primary_store_requests_total", "op")
	var idleOps []string
	for op, v := range ops1 {
		if d := v - ops0[op]; d > 0 {
			idleOps = append(idleOps, fmt.Sprintf("%s %.0f", op, d))
		}
	}
	sort.Strings(idleOps)
	_, rss2 := procStats(t, cmd.Process.Pid)
	anon, file := rssParts(t, cmd.Process.Pid)
	if rss2 > rss {
		rss = rss2
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)

	fmt.Printf("\n| measure | value |\n|---|---|\n")
	fmt.Printf("| app alone, 1-row tx/s | %.0f (WAL max %.1f MB) |\n", soloRate, float64(soloWAL)/1e6)
	fmt.Printf("| app with replicate, 1-row tx/s | %.0f (%.0f%% of alone) |\n", rate, 100*rate/soloRate)
	fmt.Printf("| WAL max size with replicate | %.1f MB |\n", float64(maxWAL)/1e6)
	fmt.Printf("| daemon CPU during the busy phase | %.2f s for %.0f MB to the store (%.1f s/GB) |\n",
		cpu1-cpu0, walShipped/1e6, (cpu1-cpu0)/(walShipped/1e9))
	fmt.Printf("| daemon peak RSS | %.1f MB (at the end: %.1f MB anonymous, %.1f MB file-backed) |\n",
		float64(rss)/1024, float64(anon)/1024, float64(file)/1024)
	fmt.Printf("| ship lag commit->object p50 / p99 / max | %s / %s / %s |\n",
		lags[len(lags)/2].Round(time.Millisecond), lags[len(lags)*99/100].Round(time.Millisecond), lags[len(lags)-1].Round(time.Millisecond))
	fmt.Printf("| idle store requests per minute (after %s for L1 to catch up) | %.1f (%s in %s) |\n",
		settled, (req1-req0)/idle.Minutes(), strings.Join(idleOps, ", "), idle)
}
