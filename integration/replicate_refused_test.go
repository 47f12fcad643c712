package integration

import (
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/understudy-db/understudy/integration/harness"
)

// TestReplicateOneReplicaRefused: a database with a file replica and an S3
// replica whose store does not honour create-only writes runs on with the
// file replica (the refusal logged, /healthz failing with it), and the
// file replica restores the app's state; with required: true on the S3
// replica, replicate exits 2 instead.
func TestReplicateOneReplicaRefused(t *testing.T) {
	s3 := harness.StartVersityGW(t)
	bucket := s3.NewBucket(t)
	proxy := startConditionStripper(t, s3, true)
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "app.db")
	fileReplica := filepath.Join(dir, "replica")
	addr := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	env := []string{"AWS_ACCESS_KEY_ID=" + s3.AccessKey, "AWS_SECRET_ACCESS_KEY=" + s3.SecretKey}
	config := func(required bool) string {
		return writeConfig(t,
			"addr: "+addr,
			"dbs:",
			"  - path: "+dbPath,
			"    replicas:",
			"      - name: file",
			"        url: file://"+fileReplica,
			"        sync-interval: 100ms",
			"      - name: b2",
			"        url: s3://"+bucket+"/app?endpoint="+proxy.srv.URL+"&region=us-east-1&force-path-style=true",
			fmt.Sprintf("        required: %v", required),
		)
	}
	app := openDB(t, dbPath)
	mustExec(t, app, `CREATE TABLE t (v)`)

	res := run(t, env, "replicate", "-config", config(true))
	if res.code != 2 {
		t.Errorf("required refused replica: exit %d, want 2\n%s", res.code, res.stderr)
	}
	wantAll(t, res.stderr, "replica b2", "does not honour conditional writes")

	d := start(t, env, "replicate", "-config", config(false))
	mustExec(t, app, `INSERT INTO t VALUES ('shipped without b2')`)
	img := snapshotImage(t, app)
	eventually(t, 30*time.Second, "the file replica to hold the app's state", func() bool {
		var st primaryStatus
		return getStatus(addr, &st) == nil && len(st.DBs) == 1 && st.DBs[0].Checksum == img.checksum &&
			len(st.DBs[0].Replicas) == 1 && st.DBs[0].Replicas[0].TXID == st.DBs[0].TXID
	})
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK || !strings.Contains(string(body), "b2") {
		t.Errorf("/healthz %d %q, want a failure naming the refused replica b2", resp.StatusCode, body)
	}
	wantAll(t, d.out.String(), "replica refused at start-up", "required: true")
	if code := d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("replicate exit %d", code)
	}
	out := filepath.Join(t.TempDir(), "restored.db")
	if res := run(t, nil, "restore", "-o", out, "file://"+fileReplica); res.code != 0 {
		t.Fatalf("restore: exit %d: %s", res.code, res.stderr)
	}
	if got := filePageDigest(t, out, len(img.pages[0])); got != pageDigest(func(yield func([]byte) bool) {
		for _, p := range img.pages {
			if !yield(p) {
				return
			}
		}
	}) {
		t.Errorf("the file replica does not restore the app's state")
	}
}
