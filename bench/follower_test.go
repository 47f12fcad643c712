package bench

// Follower benchmark: `understudy replicate` (file replica) and `understudy
// follow` as real processes, an application committing timestamped rows on
// the primary and a reader polling the follower's file read-only. It reports
// the lag from commit to visibility for the reader (p50/p99/max) at the
// defaults (1 s sync, 1 s poll) and at 100 ms/100 ms, the highest write rate
// the pair sustains with lag not growing (a ramp of rates), and the
// follower's store requests per minute when idle and when busy. Numbers are
// reported, not asserted. Run:
//
//	UNDERSTUDY_BENCH=1 BENCH_RUN=TestFollowerBench bash bench/run.sh
//
// UNDERSTUDY_BENCH_SECONDS (default 10) sets the length of each ramp step;
// lag and request phases run three times as long.

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3"

	"github.com/understudy-db/understudy/follower"
)

// pair is a primary (app + replicate) and a follower on one file replica.
type pair struct {
	app          *sql.DB
	appPath      string
	followerPath string
	pAddr, fAddr string
	procs        []*exec.Cmd
	logs         *os.File // both daemons' output, shown if the benchmark fails
}

func startPair(t *testing.T, bin string, syncInterval, poll time.Duration) *pair {
	t.Helper()
	dir := t.TempDir()
	p := &pair{
		appPath:      filepath.Join(dir, "app.db"),
		followerPath: filepath.Join(dir, "follower.db"),
		pAddr:        freeAddr(t),
		fAddr:        freeAddr(t),
	}
	replica := filepath.Join(dir, "replica")
	app, err := sql.Open("sqlite3", "file:"+p.appPath+"?_journal_mode=WAL&_synchronous=NORMAL&_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	app.SetMaxOpenConns(1)
	if p.logs, err = os.Create(filepath.Join(dir, "daemons.log")); err != nil {
		t.Fatal(err)
	}
	if _, err := app.Exec(`CREATE TABLE ticks (id INTEGER PRIMARY KEY, at INTEGER NOT NULL, v BLOB)`); err != nil {
		t.Fatal(err)
	}
	p.app = app
	cfg := filepath.Join(dir, "understudy.yml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("dbs:\n  - path: %s\n    replicas:\n      - url: file://%s\n        sync-interval: %s\n",
		p.appPath, replica, syncInterval)), 0o644); err != nil {
		t.Fatal(err)
	}
	p.start(t, bin, "replicate", "-config", cfg, "-addr", p.pAddr)
	waitHTTP(t, "http://"+p.pAddr+"/status", func(body string) bool { return !strings.Contains(body, `"txid": "0000000000000000"`) })
	p.start(t, bin, "follow", "-addr", p.fAddr, "-poll-interval", poll.String(), "file://"+replica, p.followerPath)
	waitHTTP(t, "http://"+p.fAddr+"/readyz", nil)
	t.Cleanup(func() {
		p.close()
		if t.Failed() {
			b, _ := os.ReadFile(p.logs.Name())
			t.Logf("daemons' output:\n%s", b)
		}
		p.logs.Close()
	})
	return p
}

func (p *pair) start(t *testing.T, bin string, args ...string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = p.logs, p.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.procs = append(p.procs, cmd)
}

func (p *pair) close() {
	for _, c := range p.procs {
		_ = c.Process.Kill()
		_ = c.Wait()
	}
	p.procs = nil
	_ = p.app.Close()
}

// waitHTTP waits up to a minute for url to answer 200 (and ok(body)).
func waitHTTP(t *testing.T, url string, ok func(string) bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(url); err == nil {
			var b strings.Builder
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				b.WriteString(sc.Text())
			}
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && (ok == nil || ok(b.String())) {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s not ready within a minute", url)
}

// sample is one row seen by the reader: when it was committed on the
// primary and how long until the reader on the follower saw it.
type sample struct {
	commit time.Time
	lag    time.Duration
}

// lagWatcher polls the follower's file read-only every 5 ms, as an
// application would, and records when each new row became visible.
type lagWatcher struct {
	mu      sync.Mutex
	samples []sample
	lastID  int64
	maxRead time.Duration // slowest poll query: how long the applier can hold a reader up
	stop    context.CancelFunc
	done    chan struct{}
	err     error
	// tolerate: a failed query is counted (errs, firstErr) and the
	// reader goes on, for a follower whose readers are expected to see
	// errors; otherwise the first error ends the watch and fails the test.
	tolerate bool
	errs     int
	firstErr error
}

func watchLag(t *testing.T, path string) *lagWatcher {
	t.Helper()
	return startLagWatch(t, path, false, false)
}

// watchLagCounting is watchLag for a follower whose readers may see
// errors: they are counted, not fatal. With fresh, every query opens a new
// connection (no page cache or wal-index state carried from one to the
// next), as a reader that connects per request would.
func watchLagCounting(t *testing.T, path string, fresh bool) *lagWatcher {
	t.Helper()
	return startLagWatch(t, path, true, fresh)
}

func startLagWatch(t *testing.T, path string, tolerate, fresh bool) *lagWatcher {
	t.Helper()
	db, err := sql.Open("sqlite3", follower.ReadOnlyDSN(path))
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	if fresh {
		db.SetMaxIdleConns(0)
	}
	if err := db.QueryRow(`SELECT coalesce(max(id), 0) FROM ticks`).Scan(new(int64)); err != nil {
		t.Fatalf("reader on the follower: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &lagWatcher{stop: cancel, done: make(chan struct{}), tolerate: tolerate}
	_ = db.QueryRow(`SELECT coalesce(max(id), 0) FROM ticks`).Scan(&w.lastID)
	go func() {
		defer close(w.done)
		defer db.Close()
		for ctx.Err() == nil {
			if err := w.poll(db); err != nil {
				if !w.tolerate {
					w.err = err
					return
				}
				w.mu.Lock()
				w.errs++
				if w.firstErr == nil {
					w.firstErr = err
				}
				w.mu.Unlock()
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	return w
}

func (w *lagWatcher) poll(db *sql.DB) error {
	t0 := time.Now()
	rows, err := db.Query(`SELECT id, at FROM ticks WHERE id > ? ORDER BY id`, w.lastID)
	if err != nil {
		return err
	}
	defer rows.Close()
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	if d := now.Sub(t0); d > w.maxRead {
		w.maxRead = d
	}
	for rows.Next() {
		var id, at int64
		if err := rows.Scan(&id, &at); err != nil {
			return err
		}
		if at == 0 { // a row written before the measurement (no commit time)
			w.lastID = id
			continue
		}
		c := time.Unix(0, at)
		w.samples = append(w.samples, sample{commit: c, lag: now.Sub(c)})
		w.lastID = id
	}
	return rows.Err()
}

// take returns and forgets the samples so far.
func (w *lagWatcher) take() []sample {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.samples
	w.samples = nil
	return s
}

// takeMaxRead returns and resets the slowest poll query so far.
func (w *lagWatcher) takeMaxRead() time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	d := w.maxRead
	w.maxRead = 0
	return d
}

func (w *lagWatcher) close(t *testing.T) {
	w.stop()
	<-w.done
	if w.err != nil {
		t.Fatalf("reader on the follower: %v", w.err)
	}
}

// writeTicks commits one row (at, payload bytes) per transaction at rate
// per second (0: as fast as the app can) for d. It returns the commits and
// the rate achieved.
func writeTicks(t *testing.T, db *sql.DB, rate float64, payload int, d time.Duration) (int, float64) {
	t.Helper()
	stmt, err := db.Prepare(`INSERT INTO ticks(at, v) VALUES (?, randomblob(?))`)
	if err != nil {
		t.Fatal(err)
	}
	defer stmt.Close()
	t0 := time.Now()
	n := 0
	for time.Since(t0) < d {
		if rate > 0 {
			if due := t0.Add(time.Duration(float64(n) / rate * float64(time.Second))); time.Until(due) > 0 {
				time.Sleep(time.Until(due))
			}
		}
		if _, err := stmt.Exec(time.Now().UnixNano(), payload); err != nil {
			t.Fatal(err)
		}
		n++
	}
	return n, float64(n) / time.Since(t0).Seconds()
}

// waitDrained waits until the reader has seen every row the app wrote.
func waitDrained(t *testing.T, app *sql.DB, w *lagWatcher, timeout time.Duration) time.Duration {
	t.Helper()
	var max int64
	if err := app.QueryRow(`SELECT max(id) FROM ticks`).Scan(&max); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	for time.Since(t0) < timeout {
		w.mu.Lock()
		seen := w.lastID
		w.mu.Unlock()
		if seen >= max {
			return time.Since(t0)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("the follower did not catch up within %s", timeout)
	return 0
}

func lags(samples []sample) []time.Duration {
	out := make([]time.Duration, len(samples))
	for i, s := range samples {
		out[i] = s.lag
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

func pct(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[int(q*float64(len(sorted)-1))].Round(time.Millisecond)
}

// requestsByType reads the follower's store request counters by type.
func requestsByType(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	return metricByLabel(t, addr, "understudy_follower_store_requests_total", "type")
}

func perMinute(before, after map[string]float64, d time.Duration) string {
	var parts []string
	total := 0.0
	for _, typ := range []string{"get", "list"} {
		n := (after[typ] - before[typ]) / d.Minutes()
		total += n
		parts = append(parts, fmt.Sprintf("%s %.1f", strings.ToUpper(typ), n))
	}
	return fmt.Sprintf("%.1f (%s)", total, strings.Join(parts, ", "))
}

func TestFollowerBench(t *testing.T) {
	bin := benchBin(t)
	step := envDuration(t, "UNDERSTUDY_BENCH_SECONDS", 10*time.Second)
	phase := 3 * step
	const (
		lagRate    = 20  // commits per second while measuring lag
		lagPayload = 200 // bytes of row data per commit
	)

	type lagRow struct {
		name          string
		p50, p99, max time.Duration
		n             int
		maxRead       time.Duration
		idle, busy    string
	}
	var lagRows []lagRow
	type rampRow struct {
		target, achieved float64
		payload          int
		first, last, max time.Duration
		drain, maxRead   time.Duration
		flat             bool
	}
	var ramp []rampRow
	// The ramp: rates of small rows, then the app's top speed with larger
	// rows, so that the pair rather than the app becomes the limit.
	steps := []struct {
		rate    float64
		payload int
	}{{100, 200}, {1000, 200}, {5000, 200}, {0, 200}, {2500, 2000}, {5000, 2000}, {0, 2000}, {0, 16000}}

	for _, set := range []struct {
		name       string
		sync, poll time.Duration
		ramp       bool
	}{
		{"defaults: 1 s sync, 1 s poll", time.Second, time.Second, true},
		{"100 ms sync, 100 ms poll", 100 * time.Millisecond, 100 * time.Millisecond, false},
	} {
		p := startPair(t, bin, set.sync, set.poll)
		w := watchLag(t, p.followerPath)
		row := lagRow{name: set.name}

		// Idle: nothing to follow.
		time.Sleep(set.sync + set.poll) // let start-up listings pass
		r0 := requestsByType(t, p.fAddr)
		time.Sleep(phase)
		r1 := requestsByType(t, p.fAddr)
		row.idle = perMinute(r0, r1, phase)

		// Busy: lagRate commits a second; lag of every row.
		w.take()
		w.takeMaxRead()
		r0 = requestsByType(t, p.fAddr)
		t0 := time.Now()
		writeTicks(t, p.app, lagRate, lagPayload, phase)
		waitDrained(t, p.app, w, time.Minute)
		busy := time.Since(t0)
		r1 = requestsByType(t, p.fAddr)
		row.busy = perMinute(r0, r1, busy)
		l := lags(w.take())
		row.p50, row.p99, row.max, row.n = pct(l, 0.5), pct(l, 0.99), pct(l, 1), len(l)
		row.maxRead = w.takeMaxRead().Round(time.Millisecond)
		lagRows = append(lagRows, row)

		if set.ramp {
			// Lag flat: the last third's median is not above the first
			// third's by more than half a second.
			for _, st := range steps {
				w.take()
				w.takeMaxRead()
				_, achieved := writeTicks(t, p.app, st.rate, st.payload, step)
				drain := waitDrained(t, p.app, w, 5*time.Minute)
				s := w.take()
				sort.Slice(s, func(i, j int) bool { return s[i].commit.Before(s[j].commit) })
				third := len(s) / 3
				first, last := lags(s[:third]), lags(s[len(s)-third:])
				rr := rampRow{target: st.rate, achieved: achieved, payload: st.payload,
					first: pct(first, 0.5), last: pct(last, 0.5), max: pct(lags(s), 1),
					drain: drain.Round(time.Millisecond), maxRead: w.takeMaxRead().Round(time.Millisecond)}
				rr.flat = rr.last <= rr.first+500*time.Millisecond
				ramp = append(ramp, rr)
				time.Sleep(2 * set.poll)
			}
		}
		w.close(t)
		p.close()
	}

	fmt.Printf("\nLag from commit on the primary to visibility for a reader on the follower (file replica; %d commits/s of a %d-byte row for %s; the reader polls every 5 ms):\n\n", lagRate, lagPayload, phase)
	fmt.Printf("| setting | samples | p50 | p99 | max | slowest reader query |\n|---|---|---|---|---|---|\n")
	for _, r := range lagRows {
		fmt.Printf("| %s | %d | %s | %s | %s | %s |\n", r.name, r.n, r.p50, r.p99, r.max, r.maxRead)
	}
	fmt.Printf("\nWrite-rate ramp at the defaults (%s per step, one row per transaction; lag medians of the first and last third of each step; flat = last third at most 0.5 s above the first; drain = time from the step's last commit until the reader saw it):\n\n", step)
	fmt.Printf("| target tx/s | row bytes | achieved tx/s | MB/s of rows | lag p50 first third | lag p50 last third | lag max | drain | slowest reader query | lag flat |\n|---|---|---|---|---|---|---|---|---|---|\n")
	var best rampRow
	for _, r := range ramp {
		target := fmt.Sprintf("%.0f", r.target)
		if r.target == 0 {
			target = "app's top speed"
		}
		fmt.Printf("| %s | %d | %.0f | %.1f | %s | %s | %s | %s | %s | %v |\n", target, r.payload, r.achieved, r.achieved*float64(r.payload)/1e6,
			r.first, r.last, r.max, r.drain, r.maxRead, r.flat)
		if r.flat && r.achieved*float64(r.payload) > best.achieved*float64(best.payload) {
			best = r
		}
	}
	fmt.Printf("\nHighest write rate with lag flat: %.0f tx/s of %d-byte rows (%.1f MB/s of row data).\n", best.achieved, best.payload, best.achieved*float64(best.payload)/1e6)
	fmt.Printf("\nFollower store requests per minute (from its /metrics):\n\n| setting | idle (%s) | busy (%d commits/s) |\n|---|---|---|\n", phase, lagRate)
	for _, r := range lagRows {
		fmt.Printf("| %s | %s | %s |\n", r.name, r.idle, r.busy)
	}
}
