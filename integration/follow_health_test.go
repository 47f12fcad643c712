package integration

// Issue 10 item 3 and the follower's operability: a follower that cannot
// advance says so (/status, /healthz), its lag is measured against the
// store's head, and it goes on by itself once the store is repaired.

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/superfly/ltx"
	"github.com/understudy-db/understudy/follower"
	"github.com/understudy-db/understudy/integration/harness"
)

// healthz returns the follower's /healthz status code and body.
func (f *followProc) healthz(t *testing.T) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + f.addr + "/healthz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// signal sends sig to the follower process.
func (f *followProc) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := f.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %s to the follower: %v", sig, err)
	}
}

// TestFollowGapReported: the store holds ..T, T+2, T+3 (T+1 missing) while
// a follower at T runs. The follower must not look caught up: /status
// reports the store's head T+3, lag_txids >= 2, caught_up false, unhealthy,
// the gap as the reason, and /healthz fails with it. Once T+1 is put back,
// the follower goes on by itself to T+3 and is healthy again.
func TestFollowGapReported(t *testing.T) {
	s := newStack(t, false)
	// No compaction while the test runs: an L1 file would bridge the gap.
	writeFile(t, s.configPath, strings.Replace(mustRead(t, s.configPath), "    replicas:\n", "    levels: [1h]\n    replicas:\n", 1))
	app := openDB(t, s.dbPath)
	mustExec(t, app, `CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)`)
	primary := s.replicate(t)
	img := snapshotImage(t, app)
	at := s.waitShipped(t, img)
	localPath := filepath.Join(t.TempDir(), "follower.db")
	f := startFollow(t, s.env, s.replicaURLs()[0], localPath, 100*time.Millisecond)
	f.waitFor(t, 60*time.Second, "caught up at the first shipped TXID", func(st followStatus) bool {
		return st.TXID == at && st.Checksum == img.checksum && st.CaughtUp
	})

	// Three more TXIDs while the follower is paused; then the first of them
	// goes missing. The primary stops first: no compaction may bridge it.
	f.signal(t, syscall.SIGSTOP)
	var head ltx.TXID
	var final image
	for i := 0; i < 3; i++ {
		mustExec(t, app, `INSERT INTO t(v) VALUES (randomblob(2000))`)
		final = snapshotImage(t, app)
		head = s.waitShipped(t, final)
	}
	if head < at+3 {
		t.Fatalf("three commits shipped as TXIDs %s..%s", at+1, head)
	}
	if code := primary.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("primary exit code %d", code)
	}
	name := ltx.FormatFilename(at+1, at+1)
	obj := filepath.Join(s.fileReplica, "ltx", "0", name)
	aside := filepath.Join(t.TempDir(), name)
	if err := os.Rename(obj, aside); err != nil {
		t.Fatal(err)
	}
	f.signal(t, syscall.SIGCONT)

	st := f.waitFor(t, 60*time.Second, "the gap reported", func(st followStatus) bool {
		return !st.Healthy
	})
	if st.State != follower.StateStalled || st.HeadTXID != head || st.LagTXIDs < 2 || st.LagTXIDs != uint64(head-at) ||
		st.CaughtUp || st.TXID != at || !strings.Contains(st.Error, "gap in the history") {
		t.Errorf("status at the gap: %+v; want stalled, head_txid %s, lag_txids %d, not caught up, the gap as the error", st, head, head-at)
	}
	if code, body := f.healthz(t); code == http.StatusOK || !strings.Contains(body, "gap in the history") {
		t.Errorf("/healthz at the gap: %d %q; want a failure naming the gap", code, body)
	}
	if got := localChecksum(t, localPath); got != img.checksum {
		t.Errorf("local database checksum %s at the gap, want the last good %s", got, img.checksum)
	}

	if err := os.Rename(aside, obj); err != nil {
		t.Fatal(err)
	}
	st = f.waitFor(t, 90*time.Second, "the follower to go on once the file is back", func(st followStatus) bool {
		return st.TXID == head && st.Checksum == final.checksum && st.CaughtUp
	})
	if !st.Healthy || st.State != follower.StateFollowing || st.Error != "" || st.LagTXIDs != 0 {
		t.Errorf("status after the repair: %+v; want healthy, following, no error, no lag", st)
	}
	if code, body := f.healthz(t); code != http.StatusOK {
		t.Errorf("/healthz after the repair: %d %q", code, body)
	}
	if out := f.out.String(); !strings.Contains(out, "advancing again") {
		t.Errorf("log does not say the follower advances again:\n%s", tailLines(out, 20))
	}
}

// TestFollowLagAgainstStoreHead: under a steady writer, a follower whose
// store requests are slowed (300 ms a reply, through toxiproxy) falls
// behind; its lag_txids must count the TXIDs between it and the store's
// head (at least a head the primary reported shipped), not be 0 because it
// keeps finding its next file.
func TestFollowLagAgainstStoreHead(t *testing.T) {
	s := newStack(t, true)
	tp := harness.StartToxiproxy(t)
	proxy := tp.NewProxy(t, "s3", s.s3.Addr)
	app := openDB(t, s.dbPath)
	w := startWriter(t, app, 31)
	s.replicate(t)
	url := fmt.Sprintf("s3://%s/app?endpoint=http://%s&region=us-east-1&force-path-style=true", s.bucket, proxy.Listen)
	localPath := filepath.Join(t.TempDir(), "follower.db")
	f := startFollow(t, s.env, url, localPath, 100*time.Millisecond)
	f.waitFor(t, 60*time.Second, "caught up once", func(st followStatus) bool { return st.State == follower.StateFollowing && st.CaughtUp })

	if err := proxy.AddToxic(harness.Toxic{Type: "latency", Attributes: map[string]any{"latency": 300}}); err != nil {
		t.Fatal(err)
	}
	// A head the store is known to have reached, read after the slowdown.
	var known ltx.TXID
	eventually(t, 30*time.Second, "the primary to ship more", func() bool {
		ps, err := s.status()
		if err != nil || len(ps.DBs) != 1 || len(ps.DBs[0].Replicas) != 2 {
			return false
		}
		for _, r := range ps.DBs[0].Replicas {
			if r.Name == "s3" && r.TXID > known {
				known = r.TXID
			}
		}
		st, err := f.status()
		return err == nil && known > st.TXID+5
	})
	st := f.waitFor(t, 60*time.Second, fmt.Sprintf("lag measured against a store head at least %s", known), func(st followStatus) bool {
		return st.HeadTXID >= known && st.LagTXIDs > 0
	})
	if st.LagTXIDs != uint64(st.HeadTXID-st.TXID) || st.CaughtUp {
		t.Errorf("behind the store: %+v; want lag_txids = head_txid - txid and not caught up", st)
	}
	t.Logf("behind: txid %s, store head %s, lag_txids %d", st.TXID, st.HeadTXID, st.LagTXIDs)

	w.halt(t)
	if err := proxy.RemoveToxic("latency_downstream"); err != nil {
		t.Fatal(err)
	}
	final := snapshotImage(t, app)
	finalTXID := s.waitShipped(t, final)
	st = f.waitAt(t, finalTXID, final.checksum)
	st = f.waitFor(t, 60*time.Second, "caught up", func(st followStatus) bool { return st.CaughtUp })
	if st.LagTXIDs != 0 || st.HeadTXID != finalTXID {
		t.Errorf("caught up: %+v; want no lag and head_txid %s", st, finalTXID)
	}
}

// TestFollowBadCredentials: `follow` against versitygw with credentials
// that are wrong, missing, or expanded empty from the config exits non-zero
// by itself, soon, with a message that says what to set (it used to retry
// for ever with the SDK's EC2-metadata error). No secret is printed.
func TestFollowBadCredentials(t *testing.T) {
	gw := harness.StartVersityGW(t)
	bucket := gw.NewBucket(t)
	url := fmt.Sprintf("s3://%s/app?endpoint=%s&region=us-east-1&force-path-style=true", bucket, gw.Endpoint)
	dir := t.TempDir()
	// Nothing from this machine may supply credentials.
	isolated := []string{"AWS_PROFILE=", "AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(dir, "none"),
		"AWS_CONFIG_FILE=" + filepath.Join(dir, "none"), "AWS_EC2_METADATA_DISABLED=true"}

	configPath := filepath.Join(dir, "understudy.yml")
	writeFile(t, configPath, fmt.Sprintf(`dbs:
  - path: %s
    replicas:
      - name: s3
        type: s3
        bucket: %s
        path: app
        endpoint: %s
        region: us-east-1
        force-path-style: true
        access-key-id: ${TEST_FOLLOW_KEY}
        secret-access-key: ${TEST_FOLLOW_SECRET}
    follower:
      replica: s3
`, filepath.Join(dir, "from-config.db"), bucket, gw.Endpoint))

	tests := []struct {
		name string
		env  []string
		args []string
		want []string // in stderr
	}{
		{"wrong secret", []string{"AWS_ACCESS_KEY_ID=" + gw.AccessKey, "AWS_SECRET_ACCESS_KEY=wrong-secret-do-not-print"},
			[]string{url, filepath.Join(dir, "a.db")}, []string{"refused the credentials", "AWS_SECRET_ACCESS_KEY"}},
		{"unknown key", []string{"AWS_ACCESS_KEY_ID=no-such-key", "AWS_SECRET_ACCESS_KEY=" + gw.SecretKey},
			[]string{url, filepath.Join(dir, "b.db")}, []string{"refused the credentials", "AWS_ACCESS_KEY_ID"}},
		{"empty environment", []string{"AWS_ACCESS_KEY_ID=", "AWS_SECRET_ACCESS_KEY="},
			[]string{url, filepath.Join(dir, "c.db")}, []string{"no credentials found", "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY", "set but empty"}},
		{"config expanded empty", []string{"AWS_ACCESS_KEY_ID=", "AWS_SECRET_ACCESS_KEY=", "TEST_FOLLOW_KEY=", "TEST_FOLLOW_SECRET="},
			[]string{"-config", configPath}, []string{"no credentials found", "${TEST_FOLLOW_KEY} is set but empty", "${TEST_FOLLOW_SECRET} is set but empty"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := append(append([]string{}, isolated...), tt.env...)
			res := runBounded(t, 20*time.Second, env, append([]string{"follow"}, tt.args...)...)
			if res.code <= 0 {
				t.Fatalf("exit code %d, want a non-zero exit by itself; stderr:\n%s", res.code, res.stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(res.stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, res.stderr)
				}
			}
			for _, secret := range []string{gw.SecretKey, "wrong-secret-do-not-print"} {
				if strings.Contains(res.stdout+res.stderr, secret) {
					t.Errorf("output shows a secret:\n%s", res.stderr)
				}
			}
		})
	}
}

// runBounded runs understudy to completion within timeout; a process still
// running then is killed and reported with exit code -1.
func runBounded(t *testing.T, timeout time.Duration, env []string, args ...string) result {
	t.Helper()
	d := start(t, env, args...)
	select {
	case <-d.done:
	case <-time.After(timeout):
		d.kill()
		return result{stderr: d.out.String(), code: -1}
	}
	return result{stderr: d.out.String(), code: d.cmd.ProcessState.ExitCode()}
}

// TestFollowFileModeFollowsUmask: the follower's database, its -wal and
// -shm and its position sidecar are created 0666 less the umask (under
// umask 027: 0640), so that an application running as another user of the
// group can read the follower; they were 0600 whatever the umask.
func TestFollowFileModeFollowsUmask(t *testing.T) {
	s := newStack(t, false)
	app := openDB(t, s.dbPath)
	mustExec(t, app, `CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)`)
	s.replicate(t)
	img := snapshotImage(t, app)
	txid := s.waitShipped(t, img)

	localPath := filepath.Join(t.TempDir(), "follower.db")
	addr := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	d := startBinary(t, "/bin/sh", nil, "-c", `umask 027 && exec "$0" "$@"`, understudyBin(t),
		"follow", "-addr", addr, "-poll-interval", "100ms", s.replicaURLs()[0], localPath)
	f := &followProc{daemon: d, addr: addr, url: s.replicaURLs()[0], path: localPath}
	f.waitAt(t, txid, img.checksum)
	// One more apply, so that the -wal and -shm exist.
	mustExec(t, app, `INSERT INTO t(v) VALUES (randomblob(3000))`)
	img = snapshotImage(t, app)
	f.waitAt(t, s.waitShipped(t, img), img.checksum)

	for _, p := range []string{localPath, localPath + "-wal", localPath + "-shm", follower.PositionPath(localPath)} {
		st, err := os.Stat(p)
		if err != nil {
			t.Errorf("%v", err)
			continue
		}
		if got := st.Mode().Perm(); got != 0o640 {
			t.Errorf("%s has mode %o under umask 027, want 640", filepath.Base(p), got)
		}
	}
}

// TestFollowStoreOutageUnhealthy: a follower whose store does not answer
// (toxiproxy cuts it off) cannot advance: after
// follower.DefaultUnhealthyAfter of failures /healthz fails, naming the
// store error; once the store answers again the follower is healthy and
// reaches the primary's newest state.
func TestFollowStoreOutageUnhealthy(t *testing.T) {
	s := newStack(t, true)
	tp := harness.StartToxiproxy(t)
	proxy := tp.NewProxy(t, "s3", s.s3.Addr)
	app := openDB(t, s.dbPath)
	mustExec(t, app, `CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)`)
	s.replicate(t)
	img := snapshotImage(t, app)
	txid := s.waitShipped(t, img)
	url := fmt.Sprintf("s3://%s/app?endpoint=http://%s&region=us-east-1&force-path-style=true", s.bucket, proxy.Listen)
	f := startFollow(t, s.env, url, filepath.Join(t.TempDir(), "follower.db"), 100*time.Millisecond)
	f.waitAt(t, txid, img.checksum)

	if err := proxy.SetEnabled(false); err != nil {
		t.Fatal(err)
	}
	st := f.waitFor(t, 90*time.Second, "unhealthy while the store is cut off", func(st followStatus) bool { return !st.Healthy })
	if st.State != follower.StateStalled || !strings.Contains(st.Error, "no progress for") {
		t.Errorf("status while the store is cut off: %+v; want stalled, the store error as the reason", st)
	}
	if code, body := f.healthz(t); code == http.StatusOK || !strings.Contains(body, "no progress for") {
		t.Errorf("/healthz while the store is cut off: %d %q", code, body)
	}

	if err := proxy.SetEnabled(true); err != nil {
		t.Fatal(err)
	}
	mustExec(t, app, `INSERT INTO t(v) VALUES (randomblob(2000))`)
	img = snapshotImage(t, app)
	st = f.waitAt(t, s.waitShipped(t, img), img.checksum)
	st = f.waitFor(t, 30*time.Second, "healthy again", func(st followStatus) bool { return st.Healthy })
	if st.State != follower.StateFollowing || st.Error != "" {
		t.Errorf("status after the outage: %+v; want following, no error", st)
	}
}
