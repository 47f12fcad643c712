package integration

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/understudy-db/understudy/integration/harness"
)

// writeConfig writes lines as a config file in a fresh directory and
// returns its path.
func writeConfig(t *testing.T, lines ...string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "understudy.yml")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestCLIConfigSyntaxErrorLine: a YAML syntax error is reported at the line
// that holds it. The YAML library names the line where the enclosing
// mapping begins, so a bad key on line 5 came out as line 1.
func TestCLIConfigSyntaxErrorLine(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t,
		"dbs:",
		"  - path: "+filepath.Join(dir, "app.db"),
		"    replicas:",
		"      - url: file://"+filepath.Join(dir, "replica"),
		"     sync-interval: 1s", // one space short of the replica's keys
	)
	for _, cmd := range []string{"replicate", "follow", "status"} {
		res := run(t, nil, cmd, "-config", cfg)
		want := cfg + ":5: invalid YAML: did not find expected key"
		if res.code == 0 || !strings.Contains(res.stderr, want) {
			t.Errorf("%s: exit %d, stderr %q; want non-zero and %q", cmd, res.code, res.stderr, want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "replica")); !os.IsNotExist(err) {
		t.Errorf("the replica directory exists after a config error (%v)", err)
	}
}

// startStaticPrimary starts replicate on a database under a static lease
// that names this node the primary, with leaseExtra appended to its lease:
// section, and waits until it is primary.
func startStaticPrimary(t *testing.T, leaseExtra ...string) (*leaseNode, nodeStatus) {
	t.Helper()
	dir := t.TempDir()
	n := &leaseNode{name: "host-a", dir: dir, dbPath: filepath.Join(dir, "app.db"),
		addr: fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t)), config: filepath.Join(dir, "understudy.yml")}
	writeFile(t, n.config, fmt.Sprintf(`addr: %s
dbs:
  - path: %s
    replicas:
      - url: file://%s
        sync-interval: 100ms
    lease:
      type: static
      node: host-a
      primary: host-a
`, n.addr, n.dbPath, filepath.Join(dir, "store"))+strings.Join(leaseExtra, ""))
	db := openDB(t, n.dbPath)
	mustExec(t, db, `CREATE TABLE t (id INTEGER PRIMARY KEY)`)
	n.replicate(t)
	return n, n.waitPrimary(t)
}

// TestCLIStatusShowsFencingToken: plain `status` of a node under a lease
// shows its node name and fencing token, as the README says (only
// status -json had them).
func TestCLIStatusShowsFencingToken(t *testing.T) {
	n, st := startStaticPrimary(t)

	res := run(t, nil, "status", "-config", n.config)
	if res.code != 0 {
		t.Fatalf("status: exit %d\n%s", res.code, res.stderr)
	}
	lines := strings.Split(res.stdout, "\n")
	header := regexp.MustCompile(`^ROLE .* NODE +FENCING TOKEN$`)
	row := regexp.MustCompile(`^primary +` + regexp.QuoteMeta(n.dbPath) + ` .* host-a +` + strconv.FormatUint(st.FencingToken, 10) + `$`)
	if st.FencingToken == 0 || !header.MatchString(lines[0]) || len(lines) < 2 || !row.MatchString(lines[1]) {
		t.Errorf("status table (fencing token in /status: %d) lacks the node and token columns:\n%s", st.FencingToken, res.stdout)
	}
}

// TestReplicateRefusesNestedReplica: a replica inside another replica's
// level directory, or inside another replica's store, is refused before
// anything is written: its files would mix with the other's history.
func TestReplicateRefusesNestedReplica(t *testing.T) {
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "app.db")
	makeDB(t, dbPath)
	store := filepath.Join(dir, "store")
	nested := filepath.Join(store, "ltx", "0", "x")
	before := treeDigest(t, dir)

	res := run(t, nil, "replicate", dbPath, "file://"+nested)
	want := "file://" + nested + " is inside the level directory ltx/0 of a replica at file://" + store
	if res.code == 0 || !strings.Contains(res.stderr, want) {
		t.Errorf("replicate into a level directory: exit %d, stderr %q; want non-zero and %q", res.code, res.stderr, want)
	}

	cfg := writeConfig(t,
		"dbs:",
		"  - path: "+dbPath,
		"    replica: {url: file://"+store+"}",
		"  - path: "+filepath.Join(dir, "b.db"),
		"    replica: {url: file://"+filepath.Join(store, "b")+"}",
	)
	res = run(t, nil, "replicate", "-config", cfg)
	want = cfg + ":5: dbs[1].replica: file://" + filepath.Join(store, "b") + " is inside the store of dbs[0].replica (file://" + store + ")"
	if res.code == 0 || !strings.Contains(res.stderr, want) {
		t.Errorf("replicate with one replica inside another: exit %d, stderr %q; want non-zero and %q", res.code, res.stderr, want)
	}
	sameTree(t, dir, before, treeDigest(t, dir))
}

// TestReplicateNamesEmptyEnv: a ${VAR} of the config that expands to
// nothing is named: as a warning at start-up, in the error of the replica
// whose credentials it left empty, and in a config error it causes.
func TestReplicateNamesEmptyEnv(t *testing.T) {
	s3 := harness.StartVersityGW(t)
	bucket := s3.NewBucket(t)
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "app.db")
	makeDB(t, dbPath)
	before := treeDigest(t, dir)
	replica := []string{
		"    replicas:",
		"      - url: s3://" + bucket + "/app?endpoint=" + s3.Endpoint + "&region=us-east-1&force-path-style=true",
		"        access-key-id: ${US_ITEST_UNSET_KEY}",
		"        secret-access-key: ${US_ITEST_UNSET_SECRET}",
	}
	cfg := writeConfig(t, append([]string{"dbs:", "  - path: " + dbPath}, replica...)...)

	// Both empty: the SDK falls back to the environment's keys, which the
	// store refuses; the error says which variables of the config were empty.
	env := []string{"US_ITEST_UNSET_KEY=", "AWS_ACCESS_KEY_ID=no-such-key", "AWS_SECRET_ACCESS_KEY=not-the-secret"}
	res := run(t, env, "replicate", "-config", cfg)
	keyRef := cfg + ":5: dbs[0].replicas[0].access-key-id: ${US_ITEST_UNSET_KEY} is set but empty, so it expands to nothing"
	secretRef := cfg + ":6: dbs[0].replicas[0].secret-access-key: ${US_ITEST_UNSET_SECRET} is not set, so it expands to nothing"
	if res.code == 0 {
		t.Fatalf("replicate with refused credentials exited 0:\n%s", res.stderr)
	}
	wantAll(t, res.stderr,
		"[WARN]  understudy: config: "+keyRef, "[WARN]  understudy: config: "+secretRef,
		"refused the credentials", "(in the config, which may be why: "+keyRef+"; "+secretRef+")")

	// The key id set, the secret not: a config error that names the secret's variable.
	res = run(t, []string{"US_ITEST_UNSET_KEY=" + s3.AccessKey}, "replicate", "-config", cfg)
	want := cfg + ":5: dbs[0].replicas[0]: access-key-id is set but secret-access-key is not: set both or neither (line 6: ${US_ITEST_UNSET_SECRET} is not set, so it expands to nothing)"
	if res.code != 2 || !strings.Contains(res.stderr, want) {
		t.Errorf("replicate with half the credentials: exit %d, stderr %q; want 2 and %q", res.code, res.stderr, want)
	}
	sameTree(t, dir, before, treeDigest(t, dir))
}

// TestRestoreLitestreamLocalhostURL: Litestream's URL for a local store,
// s3://BUCKET.localhost:PORT/PATH, reaches the bucket at
// http://localhost:PORT (path-style); it was taken for a bucket named
// "BUCKET.localhost:PORT".
func TestRestoreLitestreamLocalhostURL(t *testing.T) {
	s := newStack(t, true)
	app := openDB(t, s.dbPath)
	mustExec(t, app, `CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)`)
	mustExec(t, app, `INSERT INTO t(v) VALUES (randomblob(3000))`)
	s.replicate(t)
	img := snapshotImage(t, app)
	s.waitShipped(t, img)

	u, err := url.Parse(s.s3.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	out := s.restore(t, "s3://"+s.bucket+".localhost:"+u.Port()+"/app")
	if got := fileChecksum(t, out); got != img.checksum {
		t.Errorf("restore by the localhost URL: checksum %s, primary %s", got, img.checksum)
	}
}

// TestLeaseNodeWarnsEmptyEnv: a node under a lease (replicate or follow
// with a lease: section) warns about a ${VAR} of its config that expanded
// to nothing, as plain replicate does.
func TestLeaseNodeWarnsEmptyEnv(t *testing.T) {
	n, _ := startStaticPrimary(t, "      on-promote: ${US_ITEST_UNSET_HOOK}\n")
	want := "[WARN]  understudy: config: " + n.config + ":11: dbs[0].lease.on-promote: ${US_ITEST_UNSET_HOOK} is not set, so it expands to nothing"
	if out := n.d.out.String(); !strings.Contains(out, want) {
		t.Errorf("the node's log lacks %q:\n%s", want, out)
	}
}
