package integration

import (
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/understudy-db/understudy/integration/harness"
)

// The tests in this file feed `understudy replicate` the bad inputs of issue
// 3 ("Bad input") and check what a user sees: a non-zero exit, an error that
// names the path or bucket and says what to do, no secret in the output, the
// database byte-identical and nothing written (or overwritten) in the store.

// nobodyID is the uid and gid the permission tests run the binary as: these
// tests run as root, which file modes do not stop.
const nobodyID = 65534

// unprivileged is a scratch directory the unprivileged user can enter (but
// not write) and a copy of the binary it may run (the built binary lives in
// a 0700 temp directory).
type unprivileged struct {
	dir string
	bin string
}

func newUnprivileged(t *testing.T) *unprivileged {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: denying access takes running the binary as another uid, which only root can do")
	}
	dir, err := os.MkdirTemp("", "understudy-perm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	u := &unprivileged{dir: dir, bin: filepath.Join(dir, "understudy")}
	copyFile(t, understudyBin(t), u.bin, 0o755)
	return u
}

// mkdir makes dir/name with exactly mode (chmod: the umask does not apply).
func (u *unprivileged) mkdir(t *testing.T, name string, mode fs.FileMode) string {
	t.Helper()
	p := filepath.Join(u.dir, name)
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	return p
}

// run runs understudy as the unprivileged user to completion.
func (u *unprivileged) run(t *testing.T, args ...string) result {
	t.Helper()
	res, err := runCmd(u.bin, args, func(cmd *exec.Cmd) {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobodyID, Gid: nobodyID}}
		cmd.Dir = u.dir
		cmd.Env = append(os.Environ(), "HOME="+u.dir)
	})
	if err != nil {
		t.Fatalf("run understudy as uid %d: %v (every directory above %s must be searchable by others)", nobodyID, err, u.dir)
	}
	return res
}

func copyFile(t testing.TB, src, dst string, mode fs.FileMode) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// makeDB creates a small WAL-mode database at path, checkpointed and
// closed: the file at rest, with no -wal or -shm beside it.
func makeDB(t testing.TB, path string) {
	t.Helper()
	db := openDB(t, path)
	mustExec(t, db, `CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)`)
	for i := 0; i < 20; i++ {
		mustExec(t, db, `INSERT INTO t(v) VALUES (randomblob(500))`)
	}
	mustExec(t, db, `PRAGMA wal_checkpoint(TRUNCATE)`)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path + "-wal", path + "-shm"} {
		if _, err := os.Stat(p); err == nil {
			t.Fatalf("%s is left after closing the database", p)
		}
	}
}

// treeDigest maps every entry under root to its content hash (directories
// to a zero hash), so that any file or directory written, changed or removed
// under root shows as a difference. A missing root is an empty tree.
//
// The hashes come from a sha256sum child process: this process may hold an
// application's SQLite connection to a file under root, and opening and
// closing that file here would drop the connection's POSIX locks (then
// another process's last close checkpoints into the database and deletes
// its WAL, as seen with a reader in this process).
func treeDigest(t testing.TB, root string) map[string][32]byte {
	t.Helper()
	out := map[string][32]byte{}
	var files []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) && path == root {
			return nil // nothing there: an empty tree
		} else if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			files = append(files, path)
		} else {
			out[strings.TrimPrefix(path, root)] = [32]byte{}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		return out
	}
	sums, err := exec.Command("sha256sum", append([]string{"--"}, files...)...).Output()
	if err != nil {
		t.Fatalf("sha256sum under %s: %v", root, err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(sums)), "\n") {
		sum, path, ok := strings.Cut(line, "  ")
		var b [32]byte
		if n, err := hex.Decode(b[:], []byte(sum)); !ok || err != nil || n != 32 {
			t.Fatalf("sha256sum printed %q", line)
		}
		out[strings.TrimPrefix(path, root)] = b
	}
	return out
}

// sameTree reports every difference between two treeDigests of root.
func sameTree(t testing.TB, root string, before, after map[string][32]byte) {
	t.Helper()
	for name, sum := range before {
		if got, ok := after[name]; !ok {
			t.Errorf("%s%s was removed", root, name)
		} else if got != sum {
			t.Errorf("%s%s was changed", root, name)
		}
	}
	for name := range after {
		if _, ok := before[name]; !ok {
			t.Errorf("%s%s was written", root, name)
		}
	}
}

// TestReplicateNoPermission: run as an unprivileged user, replicate refuses
// a database it cannot read or write, a database whose directory it cannot
// create the -wal, -shm and shadow files in, and a file replica it cannot
// write; each with the path named and what to do, and nothing written.
func TestReplicateNoPermission(t *testing.T) {
	u := newUnprivileged(t)
	// A replica every case but the replica cases can write.
	open := u.mkdir(t, "open", 0o777)
	shut := u.mkdir(t, "shut", 0o755) // root's: nobody cannot write here

	// A file replica with a history (written as root), then made read-only.
	histDB := filepath.Join(u.mkdir(t, "hist", 0o755), "hist.db")
	makeDB(t, histDB)
	readOnlyReplica := filepath.Join(shut, "replica-with-history")
	d := start(t, nil, "replicate", histDB, "file://"+readOnlyReplica)
	eventually(t, 30*time.Second, "the first snapshot in the replica", func() bool {
		return countFiles(t, filepath.Join(readOnlyReplica, "ltx", "9")) > 0
	})
	if code := d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("replicate as root: exit %d:\n%s", code, tailLines(d.out.String(), 20))
	}
	if err := filepath.WalkDir(readOnlyReplica, func(p string, e fs.DirEntry, err error) error {
		if err != nil || !e.IsDir() {
			return err
		}
		return os.Chmod(p, 0o755)
	}); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		// setup returns the database and replica directory to run with.
		setup func(t *testing.T) (db, replica string)
		want  func(db, replica string) []string // what stderr must contain
	}{
		{
			name: "db unreadable",
			setup: func(t *testing.T) (string, string) {
				db := filepath.Join(u.mkdir(t, "a1", 0o777), "app.db")
				makeDB(t, db)
				chmod(t, db, 0o600)
				return db, filepath.Join(open, "a1")
			},
			want: func(db, _ string) []string { return []string{db, "permission", "write access"} },
		},
		{
			name: "db read-only",
			setup: func(t *testing.T) (string, string) {
				db := filepath.Join(u.mkdir(t, "a2", 0o777), "app.db")
				makeDB(t, db)
				chmod(t, db, 0o644)
				return db, filepath.Join(open, "a2")
			},
			want: func(db, _ string) []string { return []string{db, "permission", "write access"} },
		},
		{
			name: "db directory not writable",
			setup: func(t *testing.T) (string, string) {
				dir := u.mkdir(t, "b", 0o755)
				db := filepath.Join(dir, "app.db")
				makeDB(t, db)
				chmod(t, db, 0o666)
				return db, filepath.Join(open, "b")
			},
			want: func(db, _ string) []string {
				return []string{db, filepath.Dir(db) + " ", "-wal", "writable"}
			},
		},
		{
			// The application runs (as root): -wal and -shm exist and
			// are writable, but the shadow directory cannot be made.
			name: "db directory not writable, application running",
			setup: func(t *testing.T) (string, string) {
				dir := u.mkdir(t, "b2", 0o755)
				db := filepath.Join(dir, "app.db")
				makeDB(t, db)
				chmod(t, db, 0o666)
				app := openDB(t, db)
				mustExec(t, app, `INSERT INTO t(v) VALUES ('running')`)
				chmod(t, db+"-wal", 0o666)
				chmod(t, db+"-shm", 0o666)
				return db, filepath.Join(open, "b2")
			},
			want: func(db, _ string) []string {
				return []string{"database " + db, filepath.Join(filepath.Dir(db), ".app.db-understudy"), "writable"}
			},
		},
		{
			name: "replica directory cannot be created",
			setup: func(t *testing.T) (string, string) {
				db := filepath.Join(u.mkdir(t, "c", 0o777), "app.db")
				makeDB(t, db)
				chmod(t, db, 0o666)
				return db, filepath.Join(shut, "c-replica")
			},
			want: func(_, replica string) []string { return []string{replica, "permission denied", "writable"} },
		},
		{
			name: "replica with history read-only",
			setup: func(t *testing.T) (string, string) {
				db := filepath.Join(u.mkdir(t, "d", 0o777), "app.db")
				makeDB(t, db)
				chmod(t, db, 0o666)
				return db, readOnlyReplica
			},
			want: func(_, replica string) []string { return []string{replica, "permission denied", "writable"} },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db, replica := tt.setup(t)
			dbDir := treeDigest(t, filepath.Dir(db))
			store := treeDigest(t, filepath.Join(replica, "ltx"))
			res := u.run(t, "replicate", db, "file://"+replica)
			t.Logf("exit %d: %s", res.code, strings.TrimSpace(res.stderr))
			if res.code == 0 {
				t.Fatalf("exit 0")
			}
			wantAll(t, res.stderr, tt.want(db, replica)...)
			// The -shm file is SQLite's shared memory, which every
			// connection that reads writes to; it holds no data.
			dbDirAfter := treeDigest(t, filepath.Dir(db))
			delete(dbDir, "/app.db-shm")
			delete(dbDirAfter, "/app.db-shm")
			sameTree(t, filepath.Dir(db), dbDir, dbDirAfter)
			sameTree(t, filepath.Join(replica, "ltx"), store, treeDigest(t, filepath.Join(replica, "ltx")))
		})
	}
}

func chmod(t testing.TB, path string, mode fs.FileMode) {
	t.Helper()
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

// bucketDigest is treeDigest of a bucket of the harness's versitygw (a
// directory of its POSIX backend), objects only: not the directories of key
// prefixes, nor versitygw's own .sgwtmp.
func bucketDigest(t testing.TB, s3 *harness.S3Server, bucket string) map[string][32]byte {
	t.Helper()
	root := filepath.Join(s3.DataDir, bucket)
	out := map[string][32]byte{}
	for name, sum := range treeDigest(t, root) {
		if st, err := os.Stat(root + name); err == nil && st.Mode().IsRegular() && !strings.HasPrefix(name, "/.sgwtmp/") {
			out[name] = sum
		}
	}
	return out
}

func ltxObjects(objects map[string][32]byte) []string {
	var out []string
	for name := range objects {
		if strings.HasSuffix(name, ".ltx") {
			out = append(out, name)
		}
	}
	return out
}

// TestReplicateStoreRefusesWrites: S3 replicas that refuse every write
// (wrong secret, unknown key, missing bucket) stop replicate at start-up
// with the bucket named and what to check, never printing a secret, with
// the database untouched and the bucket's history intact.
func TestReplicateStoreRefusesWrites(t *testing.T) {
	s := newStack(t, true)
	app := openDB(t, s.dbPath)
	mustExec(t, app, `CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)`)
	mustExec(t, app, `INSERT INTO t(v) VALUES (randomblob(3000))`)
	d := s.replicate(t)
	s.waitShipped(t, snapshotImage(t, app))
	if code := d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("replicate: exit %d", code)
	}
	history := bucketDigest(t, s.s3, s.bucket)
	if len(ltxObjects(history)) == 0 {
		t.Fatalf("no LTX object in bucket %s after a good run", s.bucket)
	}

	// The bad runs use a database of their own: the refusal must come
	// before it is touched at all.
	db := filepath.Join(t.TempDir(), "app.db")
	makeDB(t, db)
	const wrongSecret = "wrong-secret-must-never-be-printed"
	s3url := func(bucket string) string {
		return "s3://" + bucket + "/app?endpoint=" + s.s3.Endpoint + "&region=us-east-1&force-path-style=true"
	}
	cfgWithKeys := filepath.Join(t.TempDir(), "keys.yml")
	writeFile(t, cfgWithKeys, `dbs:
  - path: `+db+`
    replicas:
      - type: s3
        bucket: `+s.bucket+`
        path: app
        endpoint: `+s.s3.Endpoint+`
        region: us-east-1
        force-path-style: true
        access-key-id: `+s.s3.AccessKey+`
        secret-access-key: `+wrongSecret+`
`)
	tests := []struct {
		name string
		env  []string
		args []string
		want []string
	}{
		{"wrong secret", []string{"AWS_ACCESS_KEY_ID=" + s.s3.AccessKey, "AWS_SECRET_ACCESS_KEY=" + wrongSecret},
			[]string{db, s3url(s.bucket)}, []string{s.bucket, "refused the credentials", "check", "AWS_SECRET_ACCESS_KEY"}},
		{"unknown access key", []string{"AWS_ACCESS_KEY_ID=no-such-key", "AWS_SECRET_ACCESS_KEY=" + wrongSecret},
			[]string{db, s3url(s.bucket)}, []string{s.bucket, "refused the credentials", "check"}},
		{"wrong secret in the config", []string{"AWS_ACCESS_KEY_ID=", "AWS_SECRET_ACCESS_KEY="},
			[]string{"-config", cfgWithKeys, "-log-level", "debug"}, []string{s.bucket, "refused the credentials", "secret-access-key"}},
		{"missing bucket", []string{"AWS_ACCESS_KEY_ID=" + s.s3.AccessKey, "AWS_SECRET_ACCESS_KEY=" + s.s3.SecretKey},
			[]string{db, s3url("no-such-bucket")}, []string{`"no-such-bucket"`, "does not exist", "create it"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dbDir := treeDigest(t, filepath.Dir(db))
			res := run(t, tt.env, append([]string{"replicate"}, tt.args...)...)
			t.Logf("exit %d: %s", res.code, strings.TrimSpace(res.stderr))
			if res.code == 0 {
				t.Fatalf("exit 0")
			}
			wantAll(t, res.stderr, tt.want...)
			for _, secret := range []string{wrongSecret, s.s3.SecretKey} {
				if strings.Contains(res.stdout+res.stderr, secret) {
					t.Errorf("the output shows a secret key:\n%s%s", res.stdout, res.stderr)
				}
			}
			sameTree(t, filepath.Dir(db), dbDir, treeDigest(t, filepath.Dir(db)))
			sameTree(t, s.bucket, history, bucketDigest(t, s.s3, s.bucket))
		})
	}
}

// conditionStripper is an S3 front that forgets create-only, as a store that
// ignores conditional writes does: it drops If-None-Match from every PUT and
// signs the request again (the header is signed) with the store's
// credentials, so the store performs a valid, unconditional PUT.
type conditionStripper struct {
	srv      *httptest.Server
	mu       sync.Mutex
	stripped []string // paths of the PUTs that lost their condition
	signErr  error
}

// startConditionStripper starts the proxy; with answer501 it answers every
// conditional PUT 501 Not Implemented itself, as Backblaze B2's S3 API does,
// instead of passing it on without its condition.
func startConditionStripper(t *testing.T, s3 *harness.S3Server, answer501 bool) *conditionStripper {
	t.Helper()
	return startConditionStripperWith(t, s3, answer501, nil)
}

// startConditionStripperWith is startConditionStripper with wrap (if not
// nil) around the proxy's handler.
func startConditionStripperWith(t *testing.T, s3 *harness.S3Server, answer501 bool, wrap func(http.Handler) http.Handler) *conditionStripper {
	t.Helper()
	target, err := url.Parse(s3.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	p := &conditionStripper{}
	signer := v4.NewSigner()
	creds := aws.Credentials{AccessKeyID: s3.AccessKey, SecretAccessKey: s3.SecretKey}
	rp := httputil.NewSingleHostReverseProxy(target)
	direct := rp.Director
	rp.Director = func(r *http.Request) {
		direct(r)
		if r.Method != http.MethodPut || r.Header.Get("If-None-Match") == "" {
			return
		}
		r.Header.Del("If-None-Match")
		r.Header.Del("Authorization")
		// The Host header the client signed (the proxy's) goes upstream
		// unchanged, so the new signature covers the same host.
		err := signer.SignHTTP(r.Context(), creds, r, r.Header.Get("X-Amz-Content-Sha256"), "s3", s3.Region, time.Now())
		p.mu.Lock()
		defer p.mu.Unlock()
		p.stripped = append(p.stripped, r.URL.Path)
		if err != nil && p.signErr == nil {
			p.signErr = err
		}
	}
	var h http.Handler = rp
	if answer501 {
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodPut || r.Header.Get("If-None-Match") == "" {
				rp.ServeHTTP(w, r)
				return
			}
			p.mu.Lock()
			p.stripped = append(p.stripped, r.URL.Path)
			p.mu.Unlock()
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusNotImplemented)
			fmt.Fprint(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>NotImplemented</Code><Message>A header you provided implies functionality that is not implemented</Message></Error>`)
		})
	}
	if wrap != nil {
		h = wrap(h)
	}
	p.srv = httptest.NewServer(h)
	t.Cleanup(p.srv.Close)
	return p
}

func (p *conditionStripper) puts() ([]string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.stripped...), p.signErr
}

// TestReplicateStoreIgnoresCreateOnly: against a store that ignores
// If-None-Match, and one that answers it 501 Not Implemented (Backblaze B2),
// replicate refuses at start-up (the create-only probe) with the same words,
// that the store does not honour conditional writes and which key runs on
// it anyway (conditional-writes: if-supported), exits 2 (the config
// error status: systemd's RestartPreventExitStatus=2 stops the restart
// loop, since no retry can make such a store fence writers) and writes no
// LTX object.
func TestReplicateStoreIgnoresCreateOnly(t *testing.T) {
	s3 := harness.StartVersityGW(t)
	for _, tc := range []struct {
		name      string
		answer501 bool
	}{{"ignores the condition", false}, {"answers 501", true}} {
		t.Run(tc.name, func(t *testing.T) {
			bucket := s3.NewBucket(t)
			proxy := startConditionStripper(t, s3, tc.answer501)
			db := filepath.Join(t.TempDir(), "app.db")
			makeDB(t, db)
			dbDir := treeDigest(t, filepath.Dir(db))
			replicaURL := "s3://" + bucket + "/app?endpoint=" + proxy.srv.URL + "&region=us-east-1&force-path-style=true"
			res := run(t, []string{"AWS_ACCESS_KEY_ID=" + s3.AccessKey, "AWS_SECRET_ACCESS_KEY=" + s3.SecretKey}, "replicate", db, replicaURL)
			t.Logf("exit %d: %s", res.code, strings.TrimSpace(res.stderr))
			puts, err := proxy.puts()
			if err != nil {
				t.Fatalf("proxy could not sign a PUT again: %v", err)
			}
			if len(puts) == 0 {
				t.Fatalf("no conditional PUT reached the store: replicate never tried a create-only write")
			}
			if res.code != 2 {
				t.Errorf("exit %d against a store without create-only writes, want 2", res.code)
			}
			wantAll(t, res.stderr, bucket, "create-only probe", "does not honour conditional writes", proxy.srv.URL,
				"set conditional-writes: if-supported on replica", "a second writer from another host cannot be refused")
			for _, p := range puts {
				if strings.HasSuffix(p, ".ltx") {
					t.Errorf("replicate wrote LTX object %s to a store that ignores create-only", p)
				}
			}
			// Not even the probe object is left behind.
			if left := bucketDigest(t, s3, bucket); len(left) != 0 {
				t.Errorf("objects left in the bucket: %v", keys(left))
			}
			if strings.Contains(res.stdout+res.stderr, s3.SecretKey) {
				t.Errorf("the output shows the secret key")
			}
			sameTree(t, filepath.Dir(db), dbDir, treeDigest(t, filepath.Dir(db)))
		})
	}
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestReplicateDatabaseReplaced: the database file is replaced under the
// running daemon (a new inode renamed over the path). The daemon notices,
// says so, snapshots the new file as the next TXID and ships its commits
// after it: restores equal the new database at each point, and restores at
// TXIDs before the replacement still equal the old one. The new file may
// have another page size. Compaction runs across the replacement: the
// first L1 compaction (3 s after start) normally takes every L0 file of both
// databases at once.
func TestReplicateDatabaseReplaced(t *testing.T) {
	for _, pageSize := range []int{4096, 8192} {
		t.Run(fmt.Sprintf("page size %d", pageSize), func(t *testing.T) {
			testDatabaseReplaced(t, pageSize)
		})
	}
}

func testDatabaseReplaced(t *testing.T, pageSize int) {
	s := newStack(t, false)
	s.withDBKeys(t, "    levels: [3s, 1h]\n    l0-retention: 1m\n")
	app := openDB(t, s.dbPath)
	mustExec(t, app, `CREATE TABLE old (id INTEGER PRIMARY KEY, v BLOB)`)
	for i := 0; i < 30; i++ {
		mustExec(t, app, `INSERT INTO old(v) VALUES (randomblob(2000))`)
	}
	d := s.replicate(t)
	var points []point
	record := func() {
		img := snapshotImage(t, app)
		points = append(points, point{s.waitShipped(t, img), img})
	}
	record()
	mustExec(t, app, `UPDATE old SET v = randomblob(100) WHERE id % 2 = 0`)
	record()
	lastOld := len(points)
	snapshots := countFiles(t, filepath.Join(s.fileReplica, "ltx", "9"))

	// The new database, built beside the old one and brought to rest:
	// other tables, other size, checkpointed and closed.
	next := filepath.Join(s.dir, "next.db")
	// The page size is fixed by the first write outside WAL mode.
	raw, err := sql.Open("sqlite3", "file:"+next)
	if err != nil {
		t.Fatal(err)
	}
	raw.SetMaxOpenConns(1)
	mustExec(t, raw, fmt.Sprintf(`PRAGMA page_size = %d`, pageSize))
	mustExec(t, raw, `CREATE TABLE fresh (k TEXT PRIMARY KEY, v BLOB)`)
	mustExec(t, raw, `PRAGMA journal_mode = WAL`)
	if err := raw.Close(); err != nil {
		t.Fatal(err)
	}
	nd := openDB(t, next)
	for i := 0; i < 50; i++ {
		mustExec(t, nd, `INSERT INTO fresh(k, v) VALUES (?, randomblob(900))`, fmt.Sprintf("k%d", i))
	}
	var got int
	if err := nd.QueryRow(`PRAGMA page_size`).Scan(&got); err != nil || got != pageSize {
		t.Fatalf("new database page size %d (%v), want %d", got, err, pageSize)
	}
	mustExec(t, nd, `PRAGMA wal_checkpoint(TRUNCATE)`)
	if err := nd.Close(); err != nil {
		t.Fatal(err)
	}

	// The replacement as a careful operator does it: stop the application,
	// remove the old database's -wal and -shm, then rename the new file
	// over the path. Removing them first matters: a -wal or -shm left at
	// the path would be taken by the next connection as the new file's
	// (SQLite ties neither to its database file), with the old pages in it.
	if err := app.Close(); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{s.dbPath + "-wal", s.dbPath + "-shm", next + "-wal", next + "-shm"} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
	}
	if err := os.Rename(next, s.dbPath); err != nil {
		t.Fatal(err)
	}
	app = openDB(t, s.dbPath)
	record() // the new file as it came: the snapshot
	for i := 0; i < 3; i++ {
		mustExec(t, app, `INSERT INTO fresh(k, v) VALUES (?, randomblob(5000))`, fmt.Sprintf("after %d", i))
		mustExec(t, app, `DELETE FROM fresh WHERE k = ?`, fmt.Sprintf("k%d", i))
		record() // commits to the new file, shipped from its WAL
	}
	// Compaction runs across the replacement: wait until L1 covers the
	// last point, or the log reports an error.
	last := points[len(points)-1].txid
	eventually(t, 20*time.Second, "L1 compaction up to the last TXID, or an error", func() bool {
		return maxTXIDAt(t, filepath.Join(s.fileReplica, "ltx", "1")) >= last ||
			strings.Contains(d.out.String(), "[ERROR]") || d.exited()
	})
	if d.exited() {
		t.Fatalf("replicate exited:\n%s", tailLines(d.out.String(), 20))
	}
	if code := d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("replicate exit code after SIGTERM = %d", code)
	}
	out := d.out.String()
	if !strings.Contains(out, "replaced") {
		t.Errorf("the log does not say the database file was replaced:\n%s", tailLines(out, 30))
	}
	if errs := grepLines(out, "[ERROR]"); errs != "" {
		t.Errorf("errors in the log:\n%s", errs)
	}
	if n := countFiles(t, filepath.Join(s.fileReplica, "ltx", "9")); n <= snapshots {
		t.Errorf("no snapshot after the replacement (%d snapshots before, %d after)", snapshots, n)
	}
	for i := 1; i < len(points); i++ {
		if points[i].txid <= points[i-1].txid {
			t.Fatalf("TXIDs of the recorded points do not grow: %v then %v", points[i-1].txid, points[i].txid)
		}
	}
	t.Logf("TXIDs: old database up to %s, new database from %s to %s",
		points[lastOld-1].txid, points[lastOld].txid, points[len(points)-1].txid)

	url := s.replicaURLs()[0]
	latest := s.restore(t, url)
	if got := fileChecksum(t, latest); got != points[len(points)-1].img.checksum {
		t.Errorf("restore: checksum %s, new database %s", got, points[len(points)-1].img.checksum)
	}
	integrityCheck(t, latest)
	wantTables(t, latest, "fresh")
	for i, p := range points {
		out := s.restore(t, url, "-txid", hex16(p.txid))
		if got := fileChecksum(t, out); got != p.img.checksum {
			t.Errorf("restore at TXID %s (%s the replacement): checksum %s, copy %s",
				p.txid, map[bool]string{true: "before", false: "after"}[i < lastOld], got, p.img.checksum)
		}
		if i < lastOld {
			wantTables(t, out, "old")
		} else {
			wantTables(t, out, "fresh")
		}
	}
}

// wantTables checks the tables of a database file at rest.
func wantTables(t *testing.T, path string, want ...string) {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(`SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			t.Fatal(err)
		}
		got = append(got, name)
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("%s has tables %v, want %v", path, got, want)
	}
}

// TestReplicateDatabaseReplacedStaleWAL: the new file is renamed over the
// path while the old file's -wal and -shm are still there, and the operator
// removes them only after the daemon noticed the replacement. Without the
// daemon nobody would open the database in between and nothing would go
// wrong; the daemon must not be the one that pairs the new file with the old
// WAL. The replica must end up equal to the new database.
func TestReplicateDatabaseReplacedStaleWAL(t *testing.T) {
	s := newStack(t, false)
	app := openDB(t, s.dbPath)
	mustExec(t, app, `CREATE TABLE old (id INTEGER PRIMARY KEY, v BLOB)`)
	for i := 0; i < 30; i++ {
		mustExec(t, app, `INSERT INTO old(v) VALUES (randomblob(2000))`)
	}
	d := s.replicate(t)
	s.waitShipped(t, snapshotImage(t, app))
	mustExec(t, app, `UPDATE old SET v = randomblob(100) WHERE id % 2 = 0`)
	s.waitShipped(t, snapshotImage(t, app))

	next := filepath.Join(s.dir, "next.db")
	nd := openDB(t, next)
	mustExec(t, nd, `CREATE TABLE fresh (k TEXT PRIMARY KEY, v BLOB)`)
	for i := 0; i < 40; i++ {
		mustExec(t, nd, `INSERT INTO fresh VALUES (?, randomblob(1500))`, fmt.Sprint("k", i))
	}
	mustExec(t, nd, `PRAGMA wal_checkpoint(TRUNCATE)`)
	if err := nd.Close(); err != nil {
		t.Fatal(err)
	}
	if err := app.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(next, s.dbPath); err != nil {
		t.Fatal(err)
	}
	// The daemon's monitor notices the new inode within a second, and
	// waits for the old files to go, saying which.
	eventually(t, 10*time.Second, "the daemon to notice the replacement", func() bool {
		return strings.Contains(d.out.String(), "replaced")
	})
	eventually(t, 10*time.Second, "the daemon to say which old files to remove", func() bool {
		return strings.Contains(d.out.String(), "remove "+s.dbPath+"-wal")
	})
	for _, p := range []string{s.dbPath + "-wal", s.dbPath + "-shm"} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
	}
	app = openDB(t, s.dbPath)
	// A small commit: it rewrites a page or two, not the whole file.
	mustExec(t, app, `UPDATE fresh SET v = x'00' WHERE k = 'k7'`)
	img := snapshotImage(t, app)
	s.waitShipped(t, img)
	if code := d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("replicate exit code after SIGTERM = %d", code)
	}
	out := s.restore(t, s.replicaURLs()[0])
	if got := fileChecksum(t, out); got != img.checksum {
		t.Errorf("restore: checksum %s, database %s", got, img.checksum)
	}
	wantTables(t, out, "fresh")
}
