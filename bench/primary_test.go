package bench

// Primary benchmark: the application's commit rate alone and with a
// replicator running (file replica, default settings): `understudy
// replicate`, and Litestream 0.5 and 0.3 beside it when their binaries are
// given (litestream_test.go). For each: the WAL's largest size, the
// daemon's CPU time and peak RSS, ship lag from commit to object, store
// requests and bytes while busy, and what it does to the store when idle.
// Numbers are reported, not asserted. Run:
//
//	UNDERSTUDY_BENCH=1 UNDERSTUDY_BIN=$PWD/bin/understudy go test -run 'TestPrimaryBench$' -v -timeout 30m ./bench/
//
// UNDERSTUDY_BENCH_SECONDS (default 10) sets each busy phase's length; the
// idle phase is three times as long.

import (
	"bufio"
	"database/sql"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
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
	anon, file, err := readRSSParts(pid)
	if err != nil {
		t.Fatal(err)
	}
	return anon, file
}

// readRSSParts is rssParts for callers that cannot fail the test (the
// process may have exited).
func readRSSParts(pid int) (anon, file int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "RssAnon:" {
			anon, _ = strconv.ParseInt(f[1], 10, 64)
		} else if len(f) >= 2 && f[0] == "RssFile:" {
			file, _ = strconv.ParseInt(f[1], 10, 64)
		}
	}
	return anon, file, nil
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
// replica's L0 directory for an LTX file with a higher TXID than before (by
// name, so that a temp file beside it or an L0 file deleted after its
// compaction does not count).
func shipLag(t *testing.T, db *sql.DB, l0Dir string, n int) []time.Duration {
	t.Helper()
	return shipLagBy(t, db, func() uint64 { return maxTXID(t, l0Dir) }, n)
}

// shipLagBy is shipLag for a store whose newest L0 TXID maxL0 tells.
func shipLagBy(t *testing.T, db *sql.DB, maxL0 func() uint64, n int) []time.Duration {
	t.Helper()
	var lags []time.Duration
	for i := 0; i < n; i++ {
		before := maxL0()
		t0 := time.Now()
		if _, err := db.Exec(`INSERT INTO t(k, v) VALUES ('lag', 'x')`); err != nil {
			t.Fatal(err)
		}
		for maxL0() == before {
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

// replicatorRun is what one replicator did to the same workload.
type replicatorRun struct {
	name       string
	rate       float64 // app's 1-row tx/s with the replicator running
	solo       float64 // mean of the app's solo runs just before and after
	maxWAL     int64
	busyCPU    float64 // daemon CPU seconds, busy phase plus its 2 s tail
	hwmKB      int64   // VmHWM at the end
	anonKB     int64   // RssAnon at the end
	fileKB     int64   // RssFile at the end
	busyFiles  int     // files in the replica after the busy phase that were not there before
	busyOps    map[string]float64
	busyBytes  map[string]float64
	lags       []time.Duration
	settled    string
	idle       time.Duration
	idleFiles  int
	idleOps    map[string]float64 // from /metrics; nil without
	idleFS     *fsOps             // from strace; nil without
	idleFSNote string
}

// lagCommits is how many single commits the lag phase times.
const lagCommits = 40

// busyTail is how long a replicator is given after the busy phase to ship
// what it left; the busy counters (CPU, requests, files) cover both.
const busyTail = 2 * time.Second

// runReplicator runs the busy, lag and idle phases against a fresh
// database in dir with r replicating it.
func runReplicator(t *testing.T, r replicator, dir string, phase time.Duration) replicatorRun {
	t.Helper()
	out := replicatorRun{name: r.name}
	path := filepath.Join(dir, "app.db")
	app := openApp(t, path)
	defer app.Close()
	replica := filepath.Join(dir, "replica")
	d, addr := r.start(t, path, replica)
	defer d.stop(t)
	time.Sleep(time.Second)
	d.alive(t)

	// Busy.
	files0 := replicaFiles(replica)
	cpu0, _ := procStats(t, d.pid())
	var ops0, bytes0 map[string]float64
	if addr != "" {
		ops0 = metricByLabel(t, addr, "understudy_primary_store_requests_total", "op")
		bytes0 = metricByLabel(t, addr, "understudy_primary_store_bytes_total", "op")
	}
	out.rate, out.maxWAL = commitLoop(t, app, path+"-wal", phase)
	time.Sleep(busyTail) // let it ship the tail
	d.alive(t)
	cpu1, _ := procStats(t, d.pid())
	out.busyCPU = cpu1 - cpu0
	out.busyFiles = newFiles(files0, replicaFiles(replica))
	if addr != "" {
		out.busyOps = diffMetrics(ops0, metricByLabel(t, addr, "understudy_primary_store_requests_total", "op"))
		out.busyBytes = diffMetrics(bytes0, metricByLabel(t, addr, "understudy_primary_store_bytes_total", "op"))
	}

	// Lag, where the replica has Litestream 0.5's layout (L0 files by TXID).
	l0, l1 := filepath.Join(replica, "ltx", "0"), filepath.Join(replica, "ltx", "1")
	if isDir(l0) {
		out.lags = shipLag(t, app, l0, lagCommits)
	}

	// Idle: first let the replicator finish the work the commits above left
	// (the L1 compaction of their L0 files, 30 s by default; without levels,
	// until no new file has appeared for 5 s), then watch a phase with no
	// commit.
	settle := time.Now()
	quiet, seen := time.Now(), len(replicaFiles(replica))
	for {
		if isDir(l0) && maxTXID(t, l1) >= maxTXID(t, l0) {
			break
		}
		if n := len(replicaFiles(replica)); n != seen {
			quiet, seen = time.Now(), n
		} else if !isDir(l0) && time.Since(quiet) > 5*time.Second {
			break
		}
		if time.Since(settle) > 2*time.Minute {
			out.settled = "still working after "
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	out.settled += time.Since(settle).Round(time.Second).String()
	d.alive(t)
	time.Sleep(time.Second)
	out.idle = phase * 3
	watch := watchFiles(replica, 500*time.Millisecond)
	trace := startFSTrace(t, d.pid())
	if addr != "" {
		ops0 = metricByLabel(t, addr, "understudy_primary_store_requests_total", "op")
	}
	time.Sleep(out.idle)
	if addr != "" {
		out.idleOps = diffMetrics(ops0, metricByLabel(t, addr, "understudy_primary_store_requests_total", "op"))
	}
	if trace != nil {
		ops, err := trace.stop(t, replica)
		if err != nil {
			out.idleFSNote = err.Error()
		} else {
			out.idleFS = &ops
		}
	} else {
		out.idleFSNote = "no strace"
	}
	out.idleFiles = watch.stop()
	d.alive(t)
	_, out.hwmKB = procStats(t, d.pid())
	out.anonKB, out.fileKB = rssParts(t, d.pid())
	return out
}

// diffMetrics is after - before for each label value.
func diffMetrics(before, after map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for k, v := range after {
		out[k] = v - before[k]
	}
	return out
}

func TestPrimaryBench(t *testing.T) {
	bin := benchBin(t)
	phase := envDuration(t, "UNDERSTUDY_BENCH_SECONDS", 10*time.Second)
	reps := replicators(t, bin)
	load0 := loadAvg()

	// Alone, before and after each replicator, alternating: each row is
	// compared with the mean of the two solo runs around it, so that a
	// machine that got busier or quieter meanwhile shifts both alike.
	soloRun := func(name string) (float64, int64) {
		p := filepath.Join(t.TempDir(), name)
		db := openApp(t, p)
		defer db.Close()
		return commitLoop(t, db, p+"-wal", phase)
	}
	solo0, soloWAL := soloRun("solo-0.db")
	solos := []float64{solo0}
	var runs []replicatorRun
	for i, r := range reps {
		dir := t.TempDir()
		runs = append(runs, runReplicator(t, r, dir, phase))
		_ = os.RemoveAll(dir) // Litestream 0.3's WAL alone can be ~1 GB
		s, _ := soloRun(fmt.Sprintf("solo-%d.db", i+1))
		solos = append(solos, s)
		runs[i].solo = (solos[i] + solos[i+1]) / 2
	}

	var soloText []string
	for _, s := range solos {
		soloText = append(soloText, thousands(s))
	}
	fmt.Printf("\nLoad average %s at the start, %s at the end; busy phase %s, idle phase %s.\n", load0, loadAvg(), phase, 3*phase)
	fmt.Printf("App alone, 1-row tx/s, before, between and after the replicators: %s (WAL max %.1f MB).\n\n",
		strings.Join(soloText, ", "), float64(soloWAL)/1e6)
	row := measureTable(runs, func(r replicatorRun) string { return r.name })
	var soloMean float64
	for _, s := range solos {
		soloMean += s / float64(len(solos))
	}
	row("app, 1-row tx/s (% of the solo runs around it / of all solo runs)", func(r replicatorRun) string {
		return fmt.Sprintf("%s (%.0f %% / %.0f %%)", thousands(r.rate), 100*r.rate/r.solo, 100*r.rate/soloMean)
	})
	row("WAL max", func(r replicatorRun) string { return fmt.Sprintf("%.1f MB", float64(r.maxWAL)/1e6) })
	row("daemon CPU, busy phase + 2 s tail", func(r replicatorRun) string { return fmt.Sprintf("%.2f s", r.busyCPU) })
	row("daemon peak RSS (VmHWM)", func(r replicatorRun) string { return fmt.Sprintf("%.1f MB", float64(r.hwmKB)/1024) })
	row("RSS at the end: anonymous / file-backed", func(r replicatorRun) string {
		return fmt.Sprintf("%.1f / %.1f MB", float64(r.anonKB)/1024, float64(r.fileKB)/1024)
	})
	// The counters cover the busy phase and its tail.
	busyMin := (phase + busyTail).Minutes()
	row("busy: PUTs / MB put per minute (/metrics, busy phase + 2 s tail)", func(r replicatorRun) string {
		if r.busyOps == nil {
			return "n/a"
		}
		return fmt.Sprintf("%.0f / %.0f MB", r.busyOps["put"]/busyMin, r.busyBytes["put"]/1e6/busyMin)
	})
	row("busy: all store requests (/metrics)", func(r replicatorRun) string {
		if r.busyOps == nil {
			return "n/a"
		}
		return sortedKeys(r.busyOps)
	})
	row("busy: new files in the replica per minute (busy phase + 2 s tail)", func(r replicatorRun) string {
		return fmt.Sprintf("%.0f", float64(r.busyFiles)/busyMin)
	})
	row("ship lag commit → L0 object, p50 / p99 / max", func(r replicatorRun) string {
		if len(r.lags) == 0 {
			return "n/a (no L0 files)"
		}
		return fmt.Sprintf("%s / %s / %s", r.lags[len(r.lags)/2].Round(time.Millisecond),
			r.lags[len(r.lags)*99/100].Round(time.Millisecond), r.lags[len(r.lags)-1].Round(time.Millisecond))
	})
	row("settle before idle", func(r replicatorRun) string { return r.settled })
	row("idle: store requests per minute (/metrics)", func(r replicatorRun) string {
		if r.idleOps == nil {
			return "n/a"
		}
		var sum float64
		for _, v := range r.idleOps {
			sum += v
		}
		return fmt.Sprintf("%.1f (%s)", sum/r.idle.Minutes(), sortedKeys(r.idleOps))
	})
	row("idle: files created per minute", func(r replicatorRun) string {
		return fmt.Sprintf("%.1f", float64(r.idleFiles)/r.idle.Minutes())
	})
	row("idle: replica-dir file-system calls per minute (strace)", func(r replicatorRun) string {
		if r.idleFS == nil {
			return "n/a (" + r.idleFSNote + ")"
		}
		return r.idleFS.perMinute(r.idle)
	})
}

// measureTable prints the head of a table with a column per run and returns
// the function that prints one row: the measure, then cell(r) for each run.
func measureTable[R any](runs []R, name func(R) string) func(measure string, cell func(R) string) {
	fmt.Printf("| measure |")
	for _, r := range runs {
		fmt.Printf(" %s |", name(r))
	}
	fmt.Printf("\n|---|%s\n", strings.Repeat("---|", len(runs)))
	return func(measure string, cell func(R) string) {
		fmt.Printf("| %s |", measure)
		for _, r := range runs {
			fmt.Printf(" %s |", cell(r))
		}
		fmt.Println()
	}
}

// thousands formats a rate as an integer with comma separators.
func thousands(v float64) string {
	s := strconv.FormatInt(int64(v+0.5), 10)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
