package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/integration/harness"
)

// followDirStatus is the part of follow's /status the test reads: its one
// followed directory's totals.
type followDirStatus struct {
	Polling   string `json:"polling"`
	Databases int    `json:"databases"`
	Following int    `json:"following"`
	Gone      int    `json:"gone"`
	Stalled   int    `json:"stalled"`
	Stopped   int    `json:"stopped"`
	Worst     []struct {
		Name  string `json:"name"`
		State string `json:"state"`
		Error string `json:"error"`
	} `json:"worst"`
}

func followDir(addr string) (followDirStatus, error) {
	var doc struct {
		Dirs []followDirStatus `json:"dirs"`
	}
	if err := getStatus(addr, &doc); err != nil {
		return followDirStatus{}, err
	}
	if len(doc.Dirs) != 1 {
		return followDirStatus{}, fmt.Errorf("/status at %s lists %d directories, want 1", addr, len(doc.Dirs))
	}
	return doc.Dirs[0], nil
}

// followedDB is one database of a followed directory (/status/db/NAME).
type followedDB struct {
	State    string       `json:"state"`
	TXID     ltx.TXID     `json:"txid"`
	Checksum ltx.Checksum `json:"checksum"`
	Error    string       `json:"error"`
}

func followedStatus(addr, name string) (followedDB, error) {
	var st followedDB
	resp, err := http.Get("http://" + addr + "/status/db/" + name)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("%s", resp.Status)
	}
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// waitFollowedAt waits until the follower at addr has every database of
// want at its checksum, then checks each local file the way an
// application reads it (read-only): its checksum is the application's.
func waitFollowedAt(t *testing.T, d *daemon, addr, outDir string, want map[string]ltx.Checksum) {
	t.Helper()
	var behind []string
	for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		behind = behind[:0]
		for n, sum := range want {
			if st, err := followedStatus(addr, n); err != nil || st.Checksum != sum {
				behind = append(behind, fmt.Sprintf("%s (%+v, %v; want checksum %s)", n, st, err, sum))
			}
		}
		if len(behind) == 0 {
			break
		}
		if d.exited() {
			t.Fatalf("follow exited:\n%s", tailLines(d.out.String(), 40))
		}
		if time.Now().After(deadline) {
			slices.Sort(behind)
			t.Fatalf("after 90s, %d of %d followed databases are behind: %s", len(behind), len(want), strings.Join(behind[:min(5, len(behind))], "; "))
		}
	}
	for n, sum := range want {
		if got := localChecksum(t, filepath.Join(outDir, filepath.FromSlash(n))); got != sum {
			t.Errorf("follower file %s: checksum %s, the application's is %s", n, got, sum)
		}
	}
}

// TestFollowDirectory: `understudy replicate` ships a directory of 50
// databases (a dir: entry, versitygw) while random writers commit to them
// and new databases are created; `understudy follow` of a dir: entry with
// a follower: section keeps a directory of followers of the whole prefix.
// Every database, the new ones too, converges: each follower file reads
// with the application's checksum. A database whose objects are removed
// from the store has its follower stopped and its local file kept, and
// `follow -dir-out DIR URL` of the same prefix converges as well.
func TestFollowDirectory(t *testing.T) {
	s := newDirStack(t)
	const n = 50
	s.createNumbered(t, n)
	start(t, s.env, "replicate", "-config", s.configPath)
	s.waitAllShipped(t)

	// The follower's machine: the same entry, its dir the followers'.
	s3url := fmt.Sprintf("s3://%s/tenants?endpoint=%s&region=us-east-1&force-path-style=true", s.bucket, s.s3.Endpoint)
	root := t.TempDir()
	outDir := filepath.Join(root, "copies")
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		t.Fatal(err)
	}
	faddr := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	fcfg := filepath.Join(root, "follower.yml")
	writeFile(t, fcfg, fmt.Sprintf(`addr: %s
dbs:
  - dir: %s
    replica:
      url: %s
      access-key-id: ${TEST_S3_KEY}
      secret-access-key: ${TEST_S3_SECRET}
    follower:
      poll-interval: 200ms
      discover-interval: 1s
`, faddr, outDir, s3url))
	f := start(t, s.env, "follow", "-config", fcfg)
	eventually(t, 60*time.Second, "the follower finds every database", func() bool {
		st, err := followDir(faddr)
		return err == nil && st.Databases == n && st.Following == n
	})
	// replicate writes the heads index: one GET of it a poll.
	eventually(t, 30*time.Second, "the follower polling the heads index", func() bool {
		st, err := followDir(faddr)
		return err == nil && st.Polling == "heads index"
	})
	r0 := metricValue(t, faddr, "understudy_follower_store_requests_total")
	t0 := time.Now()

	// Writers on random databases; new databases while they run.
	stopWriters := s.randomWriters(t, 3, 7, func(rng *rand.Rand) time.Duration { return time.Duration(1+rng.IntN(5)) * time.Millisecond })
	var created []string
	for i := range 5 {
		name := fmt.Sprintf("new%02d.db", i)
		if i%2 == 0 {
			name = "eu/" + name
		}
		s.create(t, name)
		created = append(created, name)
		time.Sleep(time.Second)
	}
	time.Sleep(3 * time.Second)
	if err := stopWriters(); err != nil {
		t.Fatal(err)
	}
	want := s.waitAllShipped(t)
	waitFollowedAt(t, f, faddr, outDir, want)
	for _, name := range created {
		if _, err := os.Stat(filepath.Join(outDir, filepath.FromSlash(name))); err != nil {
			t.Errorf("the database %s created during the run has no follower file: %v", name, err)
		}
	}
	if mins := time.Since(t0).Minutes(); mins > 0 {
		t.Logf("follower of %d databases: %.0f store requests a minute while written (poll 200ms)",
			len(want), (metricValue(t, faddr, "understudy_follower_store_requests_total")-r0)/mins)
	}

	// status: the directory's totals, one database in full; /metrics: a
	// few series for the directory, none per database.
	res := run(t, nil, "status", "-addr", faddr)
	if res.code != 0 || !strings.Contains(res.stdout, fmt.Sprintf("directory %s following s3://%s/tenants?", outDir, s.bucket)) ||
		!strings.Contains(res.stdout, fmt.Sprintf(": %d databases (%d following", len(want), len(want))) {
		t.Errorf("status of the followed directory: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	one := created[0]
	res = run(t, nil, "status", "-addr", faddr, "-db", one)
	if res.code != 0 || !strings.Contains(res.stdout, filepath.Join(outDir, filepath.FromSlash(one))) || !strings.Contains(res.stdout, "following") {
		t.Errorf("status -db %s: exit %d\n%s%s", one, res.code, res.stdout, res.stderr)
	}
	_, metrics := httpGetCode(t, "http://"+faddr+"/metrics")
	if !strings.Contains(metrics, `understudy_follow_dir_databases{dir="`+outDir+`",state="following"} `+fmt.Sprint(len(want))) {
		t.Errorf("/metrics lacks the directory's count of following databases:\n%s", grepLines(metrics, "follow_dir"))
	}
	if per := grepLines(metrics, `db="t0`); per != "" {
		t.Errorf("/metrics has series per database without per-db-metrics:\n%s", per)
	}

	// Another follower of the same prefix, from the command line.
	cliOut := filepath.Join(root, "cli")
	caddr := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	c := start(t, s.env, "follow", "-addr", caddr, "-poll-interval", "200ms", "-discover-interval", "1s", "-dir-out", cliOut, s3url)
	waitFollowedAt(t, c, caddr, cliOut, want)
	if code := c.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Errorf("follow -dir-out exited %d on SIGTERM:\n%s", code, tailLines(c.out.String(), 20))
	}

	// A database whose objects are removed from the store: its follower
	// stops, its file stays.
	gone := "t003.db"
	if err := os.RemoveAll(filepath.Join(s.s3.DataDir, s.bucket, "tenants", gone)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, gone+" reported gone", func() bool {
		st, err := followedStatus(faddr, gone)
		return err == nil && st.State == "gone"
	})
	if !strings.Contains(f.out.String(), "db="+gone) || !strings.Contains(f.out.String(), "objects are gone from the store") {
		t.Errorf("no log line says the objects of %s are gone:\n%s", gone, tailLines(f.out.String(), 20))
	}
	if got := localChecksum(t, filepath.Join(outDir, gone)); got != want[gone] {
		t.Errorf("the local file of the gone %s changed: checksum %s, was %s", gone, got, want[gone])
	}
	st, err := followDir(faddr)
	if err != nil || st.Gone != 1 || st.Stalled+st.Stopped != 0 {
		t.Errorf("directory status after one database went: %+v, %v", st, err)
	}
	if code, body := httpGetCode(t, "http://"+faddr+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz answered %d after a database went from the store (that is not a failure): %s", code, body)
	}
}

func httpGetCode(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestFollowDirectoryLitestream: a directory replicated by Litestream 0.5
// (its dir: entry, a file replica) has no heads index; `follow -dir-out`
// of its prefix says it polls each database, and every follower file
// converges to the application's checksum.
func TestFollowDirectoryLitestream(t *testing.T) {
	ls := litestreamBin(t)
	s := emptyDirStack(t)
	store := filepath.Join(filepath.Dir(s.dir), "store")
	for i := range 6 {
		name := fmt.Sprintf("t%d.db", i)
		if i%2 == 0 {
			name = "eu/" + name
		}
		s.create(t, name)
	}
	lsCfg := filepath.Join(filepath.Dir(s.dir), "litestream.yml")
	writeFile(t, lsCfg, fmt.Sprintf("dbs:\n  - dir: %s\n    pattern: \"*.db\"\n    recursive: true\n    watch: true\n    replica:\n      type: file\n      path: %s\n      sync-interval: 100ms\n", s.dir, store))
	startBinary(t, ls, nil, "replicate", "-config", lsCfg)
	for _, name := range s.names() {
		eventually(t, 60*time.Second, name+" shipped by Litestream", func() bool {
			ents, _ := os.ReadDir(filepath.Join(store, filepath.FromSlash(name), "ltx", "0"))
			return len(ents) > 0
		})
	}

	out := filepath.Join(t.TempDir(), "copies")
	addr := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	f := start(t, nil, "follow", "-addr", addr, "-poll-interval", "200ms", "-discover-interval", "1s", "-dir-out", out, "file://"+store)
	eventually(t, 60*time.Second, "every database followed", func() bool {
		st, err := followDir(addr)
		return err == nil && st.Databases == len(s.names()) && st.Following == len(s.names())
	})
	for _, name := range s.names() {
		s.mu.Lock()
		mustExec(t, s.dbs[name], `INSERT INTO t(v) VALUES (randomblob(2000))`)
		s.mu.Unlock()
	}
	want := map[string]ltx.Checksum{}
	for _, name := range s.names() {
		s.mu.Lock()
		want[name] = snapshotImage(t, s.dbs[name]).checksum
		s.mu.Unlock()
	}
	waitFollowedAt(t, f, addr, out, want)
	if st, err := followDir(addr); err != nil || st.Polling != "each database, no index" {
		t.Errorf("a prefix without a heads index: polling %q (%v), want each database", st.Polling, err)
	}
}

// TestFollowDirectoryStaleHeadsIndex: the heads index is a hint its writer
// may stop updating while files keep arriving: here the dir: daemon that
// wrote it stops, and one database goes on being shipped by a `replicate`
// of its own path, which keeps no index. A directory follower that
// trusted the index would sleep at the old head and show no lag; the
// discovery listing (made anyway) wakes it, and it converges to the
// application's checksum. A database the index never named (created after
// its writer stopped, shipped by its own replicate) is followed too.
func TestFollowDirectoryStaleHeadsIndex(t *testing.T) {
	s := newDirStack(t)
	store := s.store
	for _, name := range []string{"a.db", "b.db", "eu/c.db"} {
		s.create(t, name)
	}
	r := start(t, s.env, "replicate", "-config", s.configPath)
	s.waitAllShipped(t)
	eventually(t, 30*time.Second, "the heads index written", func() bool {
		_, err := os.Stat(filepath.Join(store, ".understudy-heads.json"))
		return err == nil
	})
	if code := r.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("replicate exit %d on SIGTERM:\n%s", code, tailLines(r.out.String(), 20))
	}

	out := filepath.Join(t.TempDir(), "copies")
	addr := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	f := start(t, nil, "follow", "-addr", addr, "-poll-interval", "200ms", "-discover-interval", "1s", "-dir-out", out, "file://"+store)
	eventually(t, 60*time.Second, "every database followed", func() bool {
		st, err := followDir(addr)
		return err == nil && st.Databases == 3 && st.Following == 3
	})

	// a.db goes on under a replicate of its own path; d.db is new.
	s.create(t, "d.db")
	for _, name := range []string{"a.db", "d.db"} {
		start(t, nil, "replicate", "-addr", "127.0.0.1:0", filepath.Join(s.dir, name), "file://"+filepath.Join(store, name))
	}
	want := map[string]ltx.Checksum{}
	for i := range 5 {
		for _, name := range []string{"a.db", "d.db"} {
			s.mu.Lock()
			mustExec(t, s.dbs[name], `INSERT INTO t(v) VALUES (randomblob(2000))`)
			if i == 4 {
				want[name] = snapshotImage(t, s.dbs[name]).checksum
			}
			s.mu.Unlock()
		}
	}
	for _, name := range []string{"b.db", "eu/c.db"} {
		s.mu.Lock()
		want[name] = snapshotImage(t, s.dbs[name]).checksum
		s.mu.Unlock()
	}
	waitFollowedAt(t, f, addr, out, want)
	// The stale index is still there and read: the case is the one meant.
	if st, err := followDir(addr); err != nil || st.Polling != "heads index" {
		t.Errorf("polling %q (%v), want the heads index", st.Polling, err)
	}
}
