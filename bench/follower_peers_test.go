package bench

// Followers side by side: `understudy follow` and Litestream 0.5's
// `restore -f` following the same replica at the same time, each with a
// reader polling its file read-only every 5 ms, while one application
// commits timestamped rows on the primary. The busy phase runs twice: with
// a reader on one connection opened right after the follower's restore (an
// application's pool), then with a reader opening a connection per query. The primary is `understudy
// replicate` and then Litestream 0.5's own `replicate` (so that each
// follower also follows the other tool's files), on a file replica and on
// S3 (versitygw). Both followers poll every second (understudy's default
// poll; Litestream's -follow-interval set to the same). Per follower: lag
// from commit to visibility (p50/p99/max), store requests a minute idle and
// busy, the reader's errors, and the follower's own WARN/ERROR log lines. Store requests are counted from outside,
// the same way for both: over S3 each follower talks to the store through
// its own counting proxy; on a file replica strace counts each follower's
// file-system calls under the replica during the idle phase (strace slows
// a process, so the busy phase, where lag is measured, runs without it).
// Numbers are reported, not asserted. Run:
//
//	UNDERSTUDY_BENCH=1 UNDERSTUDY_BIN=$PWD/bin/understudy UNDERSTUDY_TOOLS_BIN=$PWD/.tools/bin AWS_CA_BUNDLE= \
//	  UNDERSTUDY_BENCH_LITESTREAM05=/tmp/peers/litestream-0.5.16 \
//	  go test -count=1 -run TestFollowerPeersBench -v -timeout 30m ./bench/
//
// UNDERSTUDY_BENCH_SECONDS (default 10) sets the phases: idle and busy run
// three times as long.

import (
	"database/sql"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/understudy-db/understudy/follower"
	"github.com/understudy-db/understudy/integration/harness"
)

// countingProxy forwards to an S3 endpoint and counts the requests by kind.
// The Host header is passed through unchanged, so request signatures made
// for the proxy's address stay valid.
type countingProxy struct {
	srv *httptest.Server
	mu  sync.Mutex
	n   map[string]int
}

func startCountingProxy(t *testing.T, target string) *countingProxy {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	p := &countingProxy{n: map[string]int{}}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.n[s3Kind(r)]++
		p.mu.Unlock()
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(p.srv.Close)
	return p
}

// s3Kind names an S3 request: a GET of a bucket (path style, no key) is a
// LIST, any other GET reads an object.
func s3Kind(r *http.Request) string {
	switch r.Method {
	case http.MethodGet:
		if q := r.URL.Query(); q.Has("list-type") || q.Has("prefix") || strings.Count(strings.Trim(r.URL.Path, "/"), "/") == 0 {
			return "list"
		}
		return "get"
	case http.MethodHead:
		return "head"
	case http.MethodPut, http.MethodPost:
		return "put"
	case http.MethodDelete:
		return "delete"
	}
	return "other"
}

func (p *countingProxy) take() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := p.n
	p.n = map[string]int{}
	return out
}

func s3PerMinute(n map[string]int, d time.Duration) string {
	total := 0
	var parts []string
	for _, k := range []string{"list", "get", "head", "put", "delete", "other"} {
		if n[k] > 0 {
			total += n[k]
			parts = append(parts, fmt.Sprintf("%s %.0f", strings.ToUpper(k), float64(n[k])/d.Minutes()))
		}
	}
	return fmt.Sprintf("%.0f (%s)", float64(total)/d.Minutes(), strings.Join(parts, ", "))
}

// peerFollower is one follower process and what it gave.
type peerFollower struct {
	name  string
	path  string
	d     *daemon
	proxy *countingProxy // S3 only
	w     [2]*lagWatcher // a reader on one connection, and one connecting per query
	trace *fsTrace

	idle, busy string
}

// readerKinds names the two readers of each follower, as watchLagCounting's
// fresh is false and true.
var readerKinds = [2]string{"one connection", "new connection per query"}

func TestFollowerPeersBench(t *testing.T) {
	bin := benchBin(t)
	ls := os.Getenv("UNDERSTUDY_BENCH_LITESTREAM05")
	if ls == "" {
		t.Skip("set UNDERSTUDY_BENCH_LITESTREAM05 to a Litestream 0.5.16 binary")
	}
	phase := 3 * envDuration(t, "UNDERSTUDY_BENCH_SECONDS", 10*time.Second)
	const (
		rate    = 20  // commits per second while busy
		payload = 200 // bytes of row data per commit
		poll    = time.Second
	)
	fmt.Printf("\nFollowers side by side on the same replica at the same time (%d commits/s of a %d-byte row for %s, idle %s; both poll every %s; a reader polls each follower's file every 5 ms; load %s):\n\n",
		rate, payload, phase, phase, poll, loadAvg())
	fmt.Println("| store | primary | follower | reader | rows seen | lag p50 | p99 | max | reader errors (first) | slowest reader query | follower's store requests/min idle | busy |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|---|---|")
	var notes []string

	for _, store := range []string{"file", "s3"} {
		var s3 *harness.S3Server
		if store == "s3" {
			s3 = harness.StartVersityGW(t)
		}
		for _, primary := range []string{"understudy", "Litestream 0.5.16"} {
			dir := t.TempDir()
			appPath := filepath.Join(dir, "app.db")
			app, err := sql.Open("sqlite3", "file:"+appPath+"?_journal_mode=WAL&_synchronous=NORMAL&_busy_timeout=5000")
			if err != nil {
				t.Fatal(err)
			}
			app.SetMaxOpenConns(1)
			mustExec(t, app, `CREATE TABLE ticks (id INTEGER PRIMARY KEY, at INTEGER NOT NULL, v BLOB)`)
			mustExec(t, app, `INSERT INTO ticks(at, v) VALUES (0, NULL)`)

			// The store, and the URL each follower reads it by.
			var env []string
			var lsReplica string
			storeURL := func(*countingProxy) string { return "" }
			var storeRoot string
			switch store {
			case "file":
				storeRoot = filepath.Join(dir, "replica")
				lsReplica = fmt.Sprintf("      type: file\n      path: %s\n", storeRoot)
				storeURL = func(*countingProxy) string { return "file://" + storeRoot }
			case "s3":
				bucket := s3.NewBucket(t)
				storeRoot = filepath.Join(s3.DataDir, bucket)
				lsReplica = fmt.Sprintf("      type: s3\n      bucket: %s\n      path: app\n      endpoint: %s\n      region: %s\n      force-path-style: true\n", bucket, s3.Endpoint, s3.Region)
				storeURL = func(p *countingProxy) string {
					ep := s3.Endpoint
					if p != nil {
						ep = p.srv.URL
					}
					return fmt.Sprintf("s3://%s/app?endpoint=%s&region=%s&force-path-style=true", bucket, ep, s3.Region)
				}
				// Litestream 0.5.16 cannot start against S3 with
				// AWS_CA_BUNDLE set; the loopback store needs none.
				env = []string{"AWS_ACCESS_KEY_ID=" + s3.AccessKey, "AWS_SECRET_ACCESS_KEY=" + s3.SecretKey, "AWS_CA_BUNDLE="}
			}
			withEnv := func(cmd *exec.Cmd) *exec.Cmd { cmd.Env = append(os.Environ(), env...); return cmd }

			var p *daemon
			if primary == "understudy" {
				p = startDaemon(t, withEnv(exec.Command(bin, "replicate", "-addr", freeAddr(t), appPath, storeURL(nil))))
			} else {
				cfg := filepath.Join(dir, "litestream.yml")
				if err := os.WriteFile(cfg, []byte(fmt.Sprintf("dbs:\n  - path: %s\n    replica:\n%s", appPath, lsReplica)), 0o644); err != nil {
					t.Fatal(err)
				}
				p = startDaemon(t, withEnv(exec.Command(ls, "replicate", "-config", cfg)))
			}
			if _, ok := waitFor(2*time.Minute, func() bool {
				p.alive(t)
				for f := range replicaFiles(storeRoot) {
					if strings.HasSuffix(f, ".ltx") {
						return true
					}
				}
				return false
			}); !ok {
				t.Fatalf("%s: no LTX file in %s within 2 minutes", primary, storeRoot)
			}
			time.Sleep(2 * time.Second)

			fs := []*peerFollower{{name: "understudy follow"}, {name: "Litestream 0.5.16 restore -f"}}
			for i, f := range fs {
				f.path = filepath.Join(dir, fmt.Sprintf("follower%d.db", i))
				if store == "s3" {
					f.proxy = startCountingProxy(t, s3.Endpoint)
				}
				if i == 0 {
					f.d = startDaemon(t, withEnv(exec.Command(bin, "follow", "-addr", freeAddr(t), "-poll-interval", poll.String(), storeURL(f.proxy), f.path)))
				} else {
					f.d = startDaemon(t, withEnv(exec.Command(ls, "restore", "-f", "-follow-interval", poll.String(), "-o", f.path, storeURL(f.proxy))))
				}
			}
			for _, f := range fs {
				if _, ok := waitFor(2*time.Minute, func() bool {
					f.d.alive(t)
					db, err := sql.Open("sqlite3", follower.ReadOnlyDSN(f.path))
					if err != nil {
						return false
					}
					defer db.Close()
					return db.QueryRow(`SELECT count(*) FROM ticks`).Scan(new(int)) == nil
				}); !ok {
					b, _ := os.ReadFile(f.d.log)
					t.Fatalf("%s: no readable follower file %s within 2 minutes\n%s", f.name, f.path, tail(string(b), 2000))
				}
				f.w[0] = watchLagCounting(t, f.path, false)
			}

			// Idle, with each follower's long-lived reader connected.
			time.Sleep(2 * poll)
			for _, f := range fs {
				if f.proxy != nil {
					f.proxy.take()
				} else {
					f.trace = startFSTrace(t, f.d.pid())
				}
			}
			time.Sleep(phase)
			for _, f := range fs {
				switch {
				case f.proxy != nil:
					f.idle = s3PerMinute(f.proxy.take(), phase)
				case f.trace != nil:
					ops, err := f.trace.stop(t, storeRoot)
					if err != nil {
						t.Fatal(err)
					}
					f.idle = ops.perMinute(phase)
				default:
					f.idle = "no strace"
				}
				f.busy = "not counted (strace would slow it)"
			}

			// Two busy phases, one per reader kind: first the reader
			// connected since the restore (as an application's pool
			// would be), then, after it has closed, a reader opening a
			// new connection per query. They cannot run together: SQLite
			// keeps the locks of every connection to a file in a process
			// together, so one long-lived connection would also hold for
			// the other reader whatever it holds.
			for k := range readerKinds {
				if k == 1 {
					for _, f := range fs {
						f.w[1] = watchLagCounting(t, f.path, true)
					}
					// Rows of the first phase a follower shows only now
					// are not this phase's samples.
					drainReaders(fs, 1, lastTick(t, app), 20*time.Second)
					for _, f := range fs {
						f.w[1].take()
						f.w[1].takeMaxRead()
						if f.proxy != nil {
							f.proxy.take()
						}
					}
				} else {
					for _, f := range fs {
						f.w[0].take()
						f.w[0].takeMaxRead()
					}
				}
				t0 := time.Now()
				writeTicks(t, app, rate, payload, phase)
				last := lastTick(t, app)
				// Every reader has seen the last row, or 20 s passed (a
				// reader that stopped seeing rows is reported as such).
				drainReaders(fs, k, last, 20*time.Second)
				busy := time.Since(t0)
				for _, f := range fs {
					w := f.w[k]
					busyReq := f.busy
					if f.proxy != nil {
						busyReq = s3PerMinute(f.proxy.take(), busy)
					}
					w.close(t)
					l := lags(w.take())
					w.mu.Lock()
					seen, errs, firstErr := w.lastID, w.errs, w.firstErr
					w.mu.Unlock()
					missing := ""
					if seen < last {
						missing = fmt.Sprintf(" (the last %d rows never seen)", last-seen)
					}
					errCell := fmt.Sprint(errs)
					if firstErr != nil {
						errCell += " (" + strings.ReplaceAll(firstErr.Error(), "|", "/") + ")"
					}
					idle := f.idle
					if k == 1 {
						idle = "(as above)"
					}
					fmt.Printf("| %s | %s | %s | %s | %d%s | %s | %s | %s | %s | %s | %s | %s |\n", store, primary, f.name, readerKinds[k], len(l), missing,
						pct(l, 0.5), pct(l, 0.99), pct(l, 1), errCell, w.takeMaxRead().Round(time.Millisecond), idle, busyReq)
				}
			}
			for _, f := range fs {
				f.d.stop(t)
				if note := logProblems(f.d.log); note != "" {
					notes = append(notes, fmt.Sprintf("%s, primary %s, %s: %s", store, primary, f.name, note))
				}
			}
			p.stop(t)
			app.Close()
		}
	}
	fmt.Printf("\n(load at the end %s)\n", loadAvg())
	for _, n := range notes {
		fmt.Printf("\n- %s\n", n)
	}
}

func lastTick(t *testing.T, app *sql.DB) int64 {
	t.Helper()
	var last int64
	if err := app.QueryRow(`SELECT max(id) FROM ticks`).Scan(&last); err != nil {
		t.Fatal(err)
	}
	return last
}

// drainReaders waits until reader k of every follower has seen row last,
// or limit passed.
func drainReaders(fs []*peerFollower, k int, last int64, limit time.Duration) {
	_, _ = waitFor(limit, func() bool {
		for _, f := range fs {
			w := f.w[k]
			w.mu.Lock()
			seen := w.lastID
			w.mu.Unlock()
			if seen < last {
				return false
			}
		}
		return true
	})
}

// logProblems counts a follower's log lines at WARN or ERROR level and
// gives the first, so that a follower that stopped applying says why.
func logProblems(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	n, first := 0, ""
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") {
			if n == 0 {
				first = line
			}
			n++
		}
	}
	if n == 0 {
		return ""
	}
	if len(first) > 400 {
		first = first[:400] + "..."
	}
	return fmt.Sprintf("%d WARN/ERROR log lines; the first: `%s`", n, first)
}
