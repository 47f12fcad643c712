package bench

// Backlog benchmark (issue 10 item 6): `understudy replicate` ships to an
// S3 replica on versitygw through a toxiproxy proxy that delays every
// reply; the application commits a small row every 5 ms, so one TXID is
// made per sync-interval. It reports pending_txids (TXIDs written locally
// but not yet in the store) over time: whether the replica keeps up when a
// store round trip exceeds sync-interval. Numbers are reported, not
// asserted. Run (needs versitygw and toxiproxy-server in
// UNDERSTUDY_TOOLS_BIN, as `make tools` installs them):
//
//	UNDERSTUDY_TOOLS_BIN=$PWD/.tools/bin BENCH_RUN=TestBacklogBench bash bench/run.sh
//
// UNDERSTUDY_BENCH_SECONDS (default 30) sets how long each case runs with
// the latency.

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/integration/harness"
)

func TestBacklogBench(t *testing.T) {
	bin := benchBin(t)
	d := envDuration(t, "UNDERSTUDY_BENCH_SECONDS", 30*time.Second)
	cases := []struct {
		sync, latency time.Duration
	}{
		{time.Second, 2 * time.Second},
		{100 * time.Millisecond, 200 * time.Millisecond},
	}
	fmt.Printf("\nBacklog with slow store replies (%s per case, a commit every 5 ms, one S3 replica via toxiproxy):\n\n", d)
	fmt.Println("| sync-interval | reply latency | TXIDs made | TXIDs/s | pending at 0 s / 1/4 / 1/2 / 3/4 / end | max | mean, 2nd half |")
	fmt.Println("|---|---|---|---|---|---|---|")
	for _, c := range cases {
		r := backlogCase(t, bin, c.sync, c.latency, d)
		fmt.Printf("| %s | %s | %d | %.1f | %s | %d | %.1f |\n", c.sync, c.latency, r.txids, float64(r.txids)/d.Seconds(),
			r.quarters, r.max, r.meanLate)
	}
}

type backlogResult struct {
	txids    int
	quarters string
	max      int
	meanLate float64
}

func backlogCase(t *testing.T, bin string, syncInterval, latency, d time.Duration) backlogResult {
	t.Helper()
	s3 := harness.StartVersityGW(t)
	bucket := s3.NewBucket(t)
	tp := harness.StartToxiproxy(t)
	proxy := tp.NewProxy(t, "s3", s3.Addr)
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "app.db")
	addr := freeAddr(t)
	cfg := filepath.Join(dir, "understudy.yml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`addr: %s
dbs:
  - path: %s
    replicas:
      - type: s3
        name: s3
        bucket: %s
        path: app
        endpoint: http://%s
        region: us-east-1
        force-path-style: true
        access-key-id: %s
        secret-access-key: %s
        sync-interval: %s
`, addr, dbPath, bucket, proxy.Listen, s3.AccessKey, s3.SecretKey, syncInterval)), 0o600); err != nil {
		t.Fatal(err)
	}
	app, err := sql.Open("sqlite3", "file:"+dbPath+"?_journal_mode=WAL&_synchronous=NORMAL&_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	app.SetMaxOpenConns(1)
	if _, err := app.Exec(`CREATE TABLE ticks (id INTEGER PRIMARY KEY, v BLOB)`); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	cmd := exec.Command(bin, "replicate", "-config", cfg)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("replicate output:\n%s", tail(out.String(), 40))
		}
	}()
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				done <- nil
				return
			case <-tick.C:
			}
			if _, err := app.Exec(`INSERT INTO ticks(v) VALUES (randomblob(100))`); err != nil {
				done <- err
				return
			}
		}
	}()
	defer func() {
		close(stop)
		if err := <-done; err != nil {
			t.Errorf("app: %v", err)
		}
	}()
	waitHTTP(t, "http://"+addr+"/status", func(body string) bool { return strings.Contains(body, `"pending_txids"`) })
	time.Sleep(2 * syncInterval) // shipping at full speed before the latency
	if err := proxy.AddToxic(harness.Toxic{Name: "slow", Type: "latency", Stream: "downstream",
		Attributes: map[string]any{"latency": latency.Milliseconds()}}); err != nil {
		t.Fatal(err)
	}
	var samples []int
	txid0, _ := primaryPending(t, addr)
	var txid uint64
	t0 := time.Now()
	for time.Since(t0) < d {
		var pending int
		txid, pending = primaryPending(t, addr)
		samples = append(samples, pending)
		time.Sleep(250 * time.Millisecond)
	}
	if err := proxy.RemoveToxic("slow"); err != nil {
		t.Fatal(err)
	}
	r := backlogResult{txids: int(txid - txid0)}
	n := len(samples)
	var qs []string
	for _, i := range []int{0, n / 4, n / 2, 3 * n / 4, n - 1} {
		qs = append(qs, fmt.Sprint(samples[i]))
	}
	r.quarters = strings.Join(qs, " / ")
	sum := 0
	for i, p := range samples {
		r.max = max(r.max, p)
		if i >= n/2 {
			sum += p
		}
	}
	r.meanLate = float64(sum) / float64(n-n/2)
	return r
}

// primaryPending reads the DB's TXID and its one replica's pending_txids
// from /status.
func primaryPending(t *testing.T, addr string) (uint64, int) {
	t.Helper()
	var doc struct {
		DBs []struct {
			TXID     ltx.TXID `json:"txid"`
			Replicas []struct {
				Pending int `json:"pending_txids"`
			} `json:"replicas"`
		} `json:"dbs"`
	}
	resp, err := http.Get("http://" + addr + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.DBs) != 1 || len(doc.DBs[0].Replicas) != 1 {
		t.Fatalf("/status: %+v", doc)
	}
	return uint64(doc.DBs[0].TXID), doc.DBs[0].Replicas[0].Pending
}
