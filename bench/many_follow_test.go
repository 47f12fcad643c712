package bench

// Many idle followed databases: N small databases replicated by a dir:
// entry to versitygw (S3), then `understudy follow -dir-out` of the whole
// prefix through a proxy that counts the S3 requests by kind. Reported:
// the time until every database is followed, and over the idle period the
// store requests a minute (GET, LIST) and what they would cost at S3's
// prices, RSS, CPU, descriptors and goroutines.
//
//	UNDERSTUDY_BENCH=1 UNDERSTUDY_BIN=$PWD/bin/understudy UNDERSTUDY_TOOLS_BIN=/work/main/.tools/bin \
//	  [UNDERSTUDY_BENCH_FOLLOW_DBS=1000] [UNDERSTUDY_BENCH_IDLE=60 (seconds)] \
//	  [UNDERSTUDY_BENCH_FOLLOW_POLL=1s] [UNDERSTUDY_BENCH_FOLLOW_DISCOVER=30s] \
//	  go test -count=1 -run TestManyFollowBench -v -timeout 60m ./bench/

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/understudy-db/understudy/integration/harness"
)

// S3 request prices (us-east-1, standard storage): GET (and HEAD) $0.0004
// per 1,000, LIST (and PUT) $0.005 per 1,000.
const (
	s3GetPer1000  = 0.0004
	s3ListPer1000 = 0.005
)

// s3Counter counts the requests that pass a proxy in front of an S3
// server by kind.
type s3Counter struct {
	mu                  sync.Mutex
	get, list, put, etc int
}

func (c *s3Counter) count(r *http.Request) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case r.Method == http.MethodGet && r.URL.Query().Has("list-type"), r.Method == http.MethodGet && r.URL.Query().Has("prefix"):
		c.list++
	case r.Method == http.MethodGet, r.Method == http.MethodHead:
		c.get++
	case r.Method == http.MethodPut, r.Method == http.MethodPost:
		c.put++
	default:
		c.etc++
	}
	return 0
}

func (c *s3Counter) take() (get, list, put, etc int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.get, c.list, c.put, c.etc
}

type followDirCounts struct {
	Databases, Following, Starting, Stalled, Stopped int
	CaughtUp                                         int `json:"caught_up"`
}

func followDirStatus(addr string) (followDirCounts, error) { return firstDir[followDirCounts](addr) }

func TestManyFollowBench(t *testing.T) {
	bin := benchBin(t)
	n := envInt(t, "UNDERSTUDY_BENCH_FOLLOW_DBS", 1000)
	idleFor := envDuration(t, "UNDERSTUDY_BENCH_IDLE", time.Minute)
	poll, discover := "1s", "30s"
	if v := os.Getenv("UNDERSTUDY_BENCH_FOLLOW_POLL"); v != "" {
		poll = v
	}
	if v := os.Getenv("UNDERSTUDY_BENCH_FOLLOW_DISCOVER"); v != "" {
		discover = v
	}
	s3 := harness.StartVersityGW(t)
	bucket := s3.NewBucket(t)
	var counter s3Counter
	front := harness.FaultyFront(t, s3.Endpoint, counter.count, func(*http.Request) int { return 0 })
	env := append(os.Environ(), "AWS_ACCESS_KEY_ID="+s3.AccessKey, "AWS_SECRET_ACCESS_KEY="+s3.SecretKey)
	url := fmt.Sprintf("s3://%s/tenants?endpoint=%s&region=us-east-1&force-path-style=true", bucket, front)

	root := t.TempDir()
	dir := filepath.Join(root, "dir")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	createDBs(t, dir, n)
	raddr := freeAddr(t)
	cfg := filepath.Join(root, "understudy.yml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("addr: %s\ndbs:\n  - dir: %s\n    replica:\n      url: %s\n", raddr, dir, url)), 0o644); err != nil {
		t.Fatal(err)
	}
	rcmd := exec.Command(bin, "replicate", "-config", cfg)
	rcmd.Env = env
	r := startDaemon(t, rcmd)
	if took, ok := waitFor(30*time.Minute, func() bool {
		c, err := dirStatus(raddr)
		return err == nil && c.Databases == n && c.Parked == n
	}); !ok {
		t.Fatalf("%d databases: not all replicated and parked after %s", n, took)
	}
	r.stop(t) // idle followers of an idle primary: nothing changes in the store

	out := filepath.Join(root, "copies")
	faddr := freeAddr(t)
	g0, l0, _, _ := counter.take()
	fcmd := exec.Command(bin, "follow", "-addr", faddr, "-poll-interval", poll, "-discover-interval", discover, "-dir-out", out, url)
	fcmd.Env = env
	f := startDaemon(t, fcmd)
	peak := watchRSS(t, f.pid())
	took, ok := waitFor(30*time.Minute, func() bool {
		c, err := followDirStatus(faddr)
		return err == nil && c.Databases == n && c.Following == n && c.CaughtUp == n
	})
	f.alive(t)
	if !ok {
		c, err := followDirStatus(faddr)
		t.Fatalf("%d databases: not all followed and caught up after %s: %+v %v", n, took, c, err)
	}
	g1, l1, p1, e1 := counter.take()
	pa, pf := peak.stop()

	c0 := cpuTicks(t, f.pid())
	time.Sleep(idleFor)
	cpu := float64(cpuTicks(t, f.pid())-c0) / idleFor.Seconds()
	g2, l2, p2, e2 := counter.take()
	getMin, listMin := float64(g2-g1)/idleFor.Minutes(), float64(l2-l1)/idleFor.Minutes()
	costMin := getMin/1000*s3GetPer1000 + listMin/1000*s3ListPer1000
	anon, file, _ := readRSSParts(f.pid())
	fds := openFDs(f.pid())
	goroutines := ""
	for _, v := range metricByLabel(t, faddr, "go_goroutines", "") {
		goroutines = fmt.Sprint(v)
	}
	f.stop(t)

	fmt.Printf("\nMany idle followed databases (follow -dir-out of a versitygw prefix, poll-interval %s, discover-interval %s, idle %s, load %s)\n\n",
		poll, discover, idleFor, loadAvg())
	fmt.Println("| databases | all followed and caught up | requests to get there (GET / LIST) | GET/min idle | LIST/min idle | S3 cost a minute | a 30-day month | peak RSS | idle RSS | idle CPU | fds | goroutines |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|---|---|")
	fmt.Printf("| %d | %s | %d / %d | %.0f | %.1f | $%.6f | $%.2f | %.0f MB | %.0f MB | %.1f %% | %d | %s |\n",
		n, took.Round(100*time.Millisecond), g1-g0, l1-l0, getMin, listMin, costMin, costMin*60*24*30,
		float64(pa+pf)/1024, float64(anon+file)/1024, cpu, fds, goroutines)
	if p2 != p1 || e2 != e1 {
		fmt.Printf("(other requests while idle: %d PUT/POST, %d other)\n", p2-p1, e2-e1)
	}
}
