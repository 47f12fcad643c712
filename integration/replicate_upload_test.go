package integration

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/understudy-db/understudy/integration/harness"
)

// The primary's upload path against a slow or unreachable store (issue 10,
// items 5 and 6 and the operability items): a create-only PUT that landed
// but whose reply was lost is our own object, not another writer's; the
// backlog stays bounded when a round trip exceeds sync-interval; /healthz
// fails while nothing can be shipped; an outage is logged at a bounded rate.

// proxiedStack is a database with one S3 replica reached through a
// toxiproxy proxy (faults on the way), while restores and checks read the
// server directly.
type proxiedStack struct {
	*stack
	proxy  *harness.Proxy
	direct string // the replica's URL on the server itself
}

func newProxiedStack(t *testing.T, syncInterval string, dbKeys ...string) *proxiedStack {
	t.Helper()
	s := newStack(t, true)
	tp := harness.StartToxiproxy(t)
	proxy := tp.NewProxy(t, "s3", s.s3.Addr)
	writeFile(t, s.configPath, fmt.Sprintf(`addr: %s
dbs:
  - path: %s
%s    replicas:
      - name: s3
        type: s3
        bucket: %s
        path: app
        endpoint: http://%s
        region: us-east-1
        force-path-style: true
        access-key-id: ${TEST_S3_KEY}
        secret-access-key: ${TEST_S3_SECRET}
        sync-interval: %s
`, s.addr, s.dbPath, indent(dbKeys), s.bucket, proxy.Listen, syncInterval))
	return &proxiedStack{stack: s, proxy: proxy,
		direct: fmt.Sprintf("s3://%s/app?endpoint=%s&region=us-east-1&force-path-style=true", s.bucket, s.s3.Endpoint)}
}

func indent(lines []string) string {
	var b strings.Builder
	for _, l := range lines {
		b.WriteString("    " + l + "\n")
	}
	return b.String()
}

// slowReplies delays every reply of the store by d until the returned
// function is called (or the test ends).
func (p *proxiedStack) slowReplies(t *testing.T, d time.Duration) (undo func()) {
	t.Helper()
	name := "slow-replies"
	if err := p.proxy.AddToxic(harness.Toxic{Name: name, Type: "latency", Stream: "downstream",
		Attributes: map[string]any{"latency": d.Milliseconds()}}); err != nil {
		t.Fatal(err)
	}
	done := false
	undo = func() {
		if !done {
			done = true
			if err := p.proxy.RemoveToxic(name); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Cleanup(undo)
	return undo
}

// objects lists the LTX objects of one level as the server stores them.
func (p *proxiedStack) objects(level int) []string {
	entries, _ := os.ReadDir(filepath.Join(p.s3.DataDir, p.bucket, "app", fmt.Sprintf("%04x", level)))
	var out []string
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".ltx") {
			out = append(out, e.Name())
		}
	}
	return out
}

// wantNoFencing fails if the daemon's output says it was fenced.
func wantNoFencing(t *testing.T, out string) {
	t.Helper()
	for _, s := range []string{"another node is primary", "halted the application's writes", "another writer owns"} {
		if strings.Contains(out, s) {
			t.Errorf("the daemon took its own upload for another writer (%q):\n%s", s, tailLines(out, 40))
		}
	}
}

// TestReplicateSIGTERMDuringSlowSnapshotUpload: SIGTERM arrives when the
// first snapshot's PUT has landed in the store but its reply is still on
// the way (2 s reply latency). The final sync finds the key taken by our
// own object: replicate exits 0, and a restart resumes without fencing;
// a restore is byte-identical.
func TestReplicateSIGTERMDuringSlowSnapshotUpload(t *testing.T) {
	s := newProxiedStack(t, "100ms")
	app := openDB(t, s.dbPath)
	mustExec(t, app, `CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)`)
	for range 20 {
		mustExec(t, app, `INSERT INTO t(v) VALUES (randomblob(3000))`)
	}
	s.slowReplies(t, 2*time.Second)
	d := s.replicate(t)
	eventually(t, 2*time.Minute, "the first snapshot to land in the bucket", func() bool {
		return len(s.objects(9)) > 0 || d.exited()
	})
	if code := d.stop(t, syscall.SIGTERM, 90*time.Second); code != 0 {
		t.Fatalf("replicate: exit %d after SIGTERM during the snapshot upload:\n%s", code, tailLines(d.out.String(), 40))
	}
	wantNoFencing(t, d.out.String())

	d = s.replicate(t)
	mustExec(t, app, `INSERT INTO t(v) VALUES (randomblob(5000))`)
	img := snapshotImage(t, app)
	s.waitShipped(t, img)
	if code := d.stop(t, syscall.SIGTERM, 90*time.Second); code != 0 {
		t.Fatalf("replicate after the restart: exit %d:\n%s", code, tailLines(d.out.String(), 40))
	}
	wantNoFencing(t, d.out.String())
	if got := fileChecksum(t, s.restore(t, s.direct)); got != img.checksum {
		t.Fatalf("restore: checksum %s, database %s", got, img.checksum)
	}
}

// metricValue sums the samples of one metric on a daemon's /metrics whose
// labels contain every one of labels.
func metricValue(t *testing.T, addr, name string, labels ...string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return -1
	}
	sum := 0.0
	re := regexp.MustCompile(`^` + regexp.QuoteMeta(name) + `(\{[^}]*\})? (\S+)$`)
line:
	for _, l := range strings.Split(string(body), "\n") {
		m := re.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		for _, lb := range labels {
			if !strings.Contains(m[1], lb) {
				continue line
			}
		}
		v, _ := strconv.ParseFloat(m[2], 64)
		sum += v
	}
	return sum
}

// TestReplicateReplyLatencyBeyondTimeout: the store's replies take 16 s,
// longer than an attempt waits for one (15 s), while the primary runs with
// an idle application. A compaction's PUT lands but is not heard of and
// times out; the next compaction of the same files finds the key taken by
// its own object. That must not halt the application or fence the primary
// (it did: "another node is primary", exit 1), and everything committed
// restores byte-identical.
func TestReplicateReplyLatencyBeyondTimeout(t *testing.T) {
	s := newProxiedStack(t, "100ms", "levels: [5s]")
	app := openDB(t, s.dbPath)
	w := startWriter(t, app, 41)
	d := s.replicate(t)
	eventually(t, time.Minute, "a first compaction", func() bool { return len(s.objects(1)) > 0 })
	w.halt(t)
	s.waitShipped(t, snapshotImage(t, app))

	l1 := len(s.objects(1))
	errs := metricValue(t, s.addr, "understudy_primary_sync_errors_total")
	undo := s.slowReplies(t, 16*time.Second)
	// A compaction landed that the daemon has not heard of, and the
	// daemon gave up waiting for its reply.
	eventually(t, 2*time.Minute, "a compaction to land in the bucket", func() bool { return len(s.objects(1)) > l1 })
	eventually(t, 2*time.Minute, "an upload to time out", func() bool {
		return metricValue(t, s.addr, "understudy_primary_sync_errors_total") > errs || d.exited()
	})
	// Any PUT counted from now on was sent after the one that timed out.
	puts := metricValue(t, s.addr, "understudy_primary_store_requests_total", `op="put"`)
	undo()
	// The next compaction tries the same key again.
	eventually(t, time.Minute, "the compaction to be tried again", func() bool {
		return metricValue(t, s.addr, "understudy_primary_store_requests_total", `op="put"`) > puts || d.exited()
	})
	mustExec(t, app, `INSERT INTO t(k, v) VALUES ('after', randomblob(100))`) // the app can still write
	img := snapshotImage(t, app)
	if d.exited() {
		t.Fatalf("replicate exited:\n%s", tailLines(d.out.String(), 40))
	}
	s.waitShipped(t, img)
	if code := d.stop(t, syscall.SIGTERM, 90*time.Second); code != 0 {
		t.Fatalf("replicate: exit %d:\n%s", code, tailLines(d.out.String(), 40))
	}
	wantNoFencing(t, d.out.String())
	if got := fileChecksum(t, s.restore(t, s.direct)); got != img.checksum {
		t.Fatalf("restore: checksum %s, database %s", got, img.checksum)
	}
}

// healthz returns the daemon's /healthz status code (0 if unreachable).
func healthz(addr string) int {
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestReplicateStoreOutageHealthAndLogs: while the store is cut off and the
// application writes, /healthz turns unhealthy (after the bound, not on the
// first error) and the daemon logs the failure once, not every second;
// when the store is back /healthz is ok again and one line says the
// uploads recovered.
func TestReplicateStoreOutageHealthAndLogs(t *testing.T) {
	s := newProxiedStack(t, "100ms")
	app := openDB(t, s.dbPath)
	w := startWriter(t, app, 47)
	d := s.replicate(t)
	w.pause.Lock()
	s.waitShipped(t, snapshotImage(t, app))
	w.pause.Unlock()
	if code := healthz(s.addr); code != http.StatusOK {
		t.Fatalf("/healthz %d before the outage", code)
	}
	before := len(strings.Split(d.out.String(), "\n"))

	if err := s.proxy.SetEnabled(false); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Minute, "/healthz to fail while the store is cut off", func() bool {
		return healthz(s.addr) == http.StatusServiceUnavailable || d.exited()
	})
	if d.exited() {
		t.Fatalf("replicate exited:\n%s", tailLines(d.out.String(), 40))
	}
	// Let the outage last a while longer: failing uploads go on.
	errs := metricValue(t, s.addr, "understudy_primary_sync_errors_total")
	eventually(t, time.Minute, "more failed uploads", func() bool {
		return metricValue(t, s.addr, "understudy_primary_sync_errors_total") >= errs+5
	})
	outage := strings.Split(d.out.String(), "\n")[before-1:]
	errLines := 0
	for _, l := range outage {
		if strings.Contains(l, "[ERROR]") || strings.Contains(l, "[WARN]") {
			errLines++
		}
	}
	t.Logf("outage: %d error/warning lines in %d lines:\n%s", errLines, len(outage), strings.Join(outage, "\n"))
	if errLines > 3 {
		t.Errorf("the outage logged %d error/warning lines before the first summary was due; want the first failure only", errLines)
	}

	if err := s.proxy.SetEnabled(true); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Minute, "/healthz to be ok once the store is back", func() bool { return healthz(s.addr) == http.StatusOK })
	w.halt(t)
	img := snapshotImage(t, app)
	s.waitShipped(t, img)
	eventually(t, 30*time.Second, "a line saying the uploads recovered", func() bool {
		return strings.Contains(d.out.String(), "recovered")
	})
	if code := d.stop(t, syscall.SIGTERM, 90*time.Second); code != 0 {
		t.Fatalf("replicate: exit %d:\n%s", code, tailLines(d.out.String(), 40))
	}
}

// TestReplicateLocalWriteFailureHealth: every sync fails because the L0
// file cannot be written locally (the shadow directory's tmp is replaced
// by a file, as a full disk makes every write fail). /healthz said ok
// while "sync failed" was logged every sync; now it fails after the bound,
// the failure is logged once, and one line says when syncs recovered.
func TestReplicateLocalWriteFailureHealth(t *testing.T) {
	s := newStack(t, false)
	app := openDB(t, s.dbPath)
	w := startWriter(t, app, 53)
	d := s.replicate(t)
	w.pause.Lock()
	s.waitShipped(t, snapshotImage(t, app))
	w.pause.Unlock()
	if code := healthz(s.addr); code != http.StatusOK {
		t.Fatalf("/healthz %d before the failure", code)
	}
	tmp := filepath.Join(s.dir, ".app.db-understudy", "tmp")
	if err := os.Rename(tmp, tmp+".aside"); err != nil {
		t.Fatal(err)
	}
	writeFile(t, tmp, "not a directory")
	before := len(strings.Split(d.out.String(), "\n"))
	eventually(t, time.Minute, "/healthz to fail while no sync can write its file", func() bool {
		return healthz(s.addr) == http.StatusServiceUnavailable || d.exited()
	})
	if d.exited() {
		t.Fatalf("replicate exited:\n%s", tailLines(d.out.String(), 40))
	}
	failed := 0
	for _, l := range strings.Split(d.out.String(), "\n")[before-1:] {
		if strings.Contains(l, "sync failed") || strings.Contains(l, "sync still failing") {
			failed++
		}
	}
	if failed != 1 {
		t.Errorf("%d lines about failing syncs in the first 10 s of the failure, want 1:\n%s", failed, tailLines(d.out.String(), 20))
	}
	if err := os.Remove(tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp+".aside", tmp); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Minute, "/healthz to be ok once syncs work again", func() bool { return healthz(s.addr) == http.StatusOK })
	eventually(t, 30*time.Second, "a line saying syncs recovered", func() bool { return strings.Contains(d.out.String(), "sync recovered") })
	w.halt(t)
	img := snapshotImage(t, app)
	s.waitShipped(t, img)
	if code := d.stop(t, syscall.SIGTERM, 90*time.Second); code != 0 {
		t.Fatalf("replicate: exit %d:\n%s", code, tailLines(d.out.String(), 40))
	}
	if got := fileChecksum(t, s.restore(t, "file://"+s.fileReplica)); got != img.checksum {
		t.Fatalf("restore: checksum %s, database %s", got, img.checksum)
	}
}
