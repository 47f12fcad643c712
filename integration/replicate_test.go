package integration

import (
	"database/sql"
	"fmt"
	"io/fs"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/superfly/ltx"
	"github.com/understudy-db/understudy/integration/harness"
)

// stack is one primary set-up: a database, a file replica and an S3 replica
// on a real versitygw, and a config file naming them.
type stack struct {
	dir, dbPath, fileReplica string
	s3                       *harness.S3Server
	bucket                   string
	addr                     string
	configPath               string
	env                      []string
}

func newStack(t *testing.T, withS3 bool) *stack {
	t.Helper()
	dir := t.TempDir()
	s := &stack{
		dir:         dir,
		dbPath:      filepath.Join(dir, "app.db"),
		fileReplica: filepath.Join(dir, "replica"),
		addr:        fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t)),
		configPath:  filepath.Join(dir, "understudy.yml"),
	}
	cfg := fmt.Sprintf(`addr: %s
dbs:
  - path: %s
    replicas:
      - name: file
        url: file://%s
        sync-interval: 100ms
`, s.addr, s.dbPath, s.fileReplica)
	if withS3 {
		s.s3 = harness.StartVersityGW(t)
		s.bucket = s.s3.NewBucket(t)
		cfg += fmt.Sprintf(`      - name: s3
        type: s3
        bucket: %s
        path: app
        endpoint: %s
        region: us-east-1
        force-path-style: true
        access-key-id: ${TEST_S3_KEY}
        secret-access-key: ${TEST_S3_SECRET}
        sync-interval: 100ms
`, s.bucket, s.s3.Endpoint)
		s.env = []string{"TEST_S3_KEY=" + s.s3.AccessKey, "TEST_S3_SECRET=" + s.s3.SecretKey,
			"AWS_ACCESS_KEY_ID=" + s.s3.AccessKey, "AWS_SECRET_ACCESS_KEY=" + s.s3.SecretKey}
	}
	writeFile(t, s.configPath, cfg)
	return s
}

func (s *stack) replicaURLs() []string {
	urls := []string{"file://" + s.fileReplica}
	if s.s3 != nil {
		urls = append(urls, fmt.Sprintf("s3://%s/app?endpoint=%s&region=us-east-1&force-path-style=true", s.bucket, s.s3.Endpoint))
	}
	return urls
}

func (s *stack) replicate(t *testing.T, extra ...string) *daemon {
	t.Helper()
	return start(t, s.env, append([]string{"replicate", "-config", s.configPath}, extra...)...)
}

// primaryStatus is the part of /status the tests read.
type primaryStatus struct {
	DBs []struct {
		TXID     ltx.TXID     `json:"txid"`
		Checksum ltx.Checksum `json:"checksum"`
		Fenced   bool         `json:"fenced"`
		Replicas []struct {
			Name     string       `json:"name"`
			TXID     ltx.TXID     `json:"txid"`
			Checksum ltx.Checksum `json:"checksum"`
		} `json:"replicas"`
	} `json:"dbs"`
}

func (s *stack) status() (primaryStatus, error) {
	var st primaryStatus
	err := getStatus(s.addr, &st)
	return st, err
}

// waitShipped waits until every replica holds want's state and returns its
// TXID: the daemon's position checksum equals the image's and every replica
// is at that TXID.
func (s *stack) waitShipped(t *testing.T, want image) ltx.TXID {
	t.Helper()
	return waitReplicasAt(t, s, []image{want})[0]
}

// restore runs `understudy restore` and returns the output path.
func (s *stack) restore(t *testing.T, url string, args ...string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "restored.db")
	res := run(t, s.env, append(append([]string{"restore", "-o", out}, args...), url)...)
	if res.code != 0 {
		t.Fatalf("restore %s %v: exit %d\n%s%s", url, args, res.code, res.stdout, res.stderr)
	}
	return out
}

// writer is an application writing a random mix of transactions.
type writer struct {
	db    *sql.DB
	rng   *rand.Rand
	pause sync.Mutex
	stop  chan struct{}
	done  chan struct{}
	n     int
	err   error
	// allowErrors: the test expects the app's writes to fail (a fenced
	// primary holds the write lock).
	allowErrors bool
}

func startWriter(t *testing.T, db *sql.DB, seed int64) *writer {
	t.Helper()
	mustExec(t, db, `CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, k TEXT, v BLOB)`)
	mustExec(t, db, `CREATE INDEX IF NOT EXISTS t_k ON t(k)`)
	w := &writer{db: db, rng: rand.New(rand.NewSource(seed)), stop: make(chan struct{}), done: make(chan struct{})}
	go w.loop()
	t.Cleanup(func() { w.halt(t) })
	return w
}

func (w *writer) loop() {
	defer close(w.done)
	for {
		select {
		case <-w.stop:
			return
		default:
		}
		w.pause.Lock()
		err := w.step()
		w.pause.Unlock()
		if err != nil {
			w.err = err
			return
		}
		w.n++
		time.Sleep(time.Duration(w.rng.Intn(3)) * time.Millisecond)
	}
}

// step runs one random transaction: inserts, updates, deletes, DDL, a
// shrinking VACUUM or a large blob.
func (w *writer) step() error {
	r := w.rng.Intn(1000)
	var q []string
	switch {
	case r < 500:
		n := 1 + w.rng.Intn(20)
		for i := 0; i < n; i++ {
			q = append(q, fmt.Sprintf(`INSERT INTO t(k, v) VALUES ('k%d', randomblob(%d))`, w.rng.Intn(1000), 10+w.rng.Intn(400)))
		}
	case r < 700:
		q = append(q, fmt.Sprintf(`UPDATE t SET v = randomblob(%d) WHERE id %% 17 = %d`, 10+w.rng.Intn(300), w.rng.Intn(17)))
	case r < 850:
		q = append(q, fmt.Sprintf(`DELETE FROM t WHERE id %% 13 = %d`, w.rng.Intn(13)))
	case r < 900:
		q = append(q, fmt.Sprintf(`INSERT INTO t(k, v) VALUES ('big', randomblob(%d))`, 50_000+w.rng.Intn(200_000)))
	case r < 930:
		name := fmt.Sprintf("side%d", w.rng.Intn(4))
		q = append(q, fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s (a INTEGER PRIMARY KEY, b TEXT)`, name),
			fmt.Sprintf(`INSERT INTO %s(b) VALUES (hex(randomblob(200)))`, name),
			fmt.Sprintf(`CREATE INDEX IF NOT EXISTS %s_b ON %s(b)`, name, name))
	case r < 960:
		name := fmt.Sprintf("side%d", w.rng.Intn(4))
		q = append(q, fmt.Sprintf(`DROP TABLE IF EXISTS %s`, name))
	case r < 975:
		// Delete most rows then VACUUM: the file shrinks.
		if _, err := w.db.Exec(`DELETE FROM t WHERE id % 4 != 0`); err != nil {
			return err
		}
		_, err := w.db.Exec(`VACUUM`)
		return err
	default:
		q = append(q, `DELETE FROM t WHERE k = 'big'`)
	}
	tx, err := w.db.Begin()
	if err != nil {
		return err
	}
	for _, s := range q {
		if _, err := tx.Exec(s); err != nil {
			tx.Rollback()
			return fmt.Errorf("%s: %w", s, err)
		}
	}
	return tx.Commit()
}

func (w *writer) halt(t testing.TB) {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
	if w.err != nil && !w.allowErrors {
		t.Errorf("writer failed after %d transactions: %v", w.n, w.err)
	}
}

type point struct {
	txid ltx.TXID
	img  image
}

// TestReplicateKillRestart is issue 3's main proof: a writer runs a random
// mix while the daemon is kill -9ed and restarted 20 times; restores from
// both replicas equal the primary, and a restore at every recorded TXID
// equals the copy taken at that TXID.
func TestReplicateKillRestart(t *testing.T) {
	s := newStack(t, true)
	app := openDB(t, s.dbPath)
	w := startWriter(t, app, 1)
	rng := rand.New(rand.NewSource(2))

	var points []point
	for i := 0; i < 20; i++ {
		d := s.replicate(t)
		time.Sleep(time.Duration(200+rng.Intn(800)) * time.Millisecond)
		if i%2 == 0 {
			// Record a point: hold the app still, wait for the ship, copy.
			w.pause.Lock()
			img := snapshotImage(t, app)
			txid := s.waitShipped(t, img)
			w.pause.Unlock()
			points = append(points, point{txid, img})
		}
		if d.exited() {
			t.Fatalf("daemon exited on its own in round %d:\n%s", i, tailLines(d.out.String(), 30))
		}
		d.kill()
	}
	w.halt(t)
	if w.n < 100 {
		t.Fatalf("writer made only %d transactions", w.n)
	}

	d := s.replicate(t)
	final := snapshotImage(t, app)
	finalTXID := s.waitShipped(t, final)
	if code := d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("replicate exit code after SIGTERM = %d", code)
	}
	t.Logf("%d transactions, %d recorded points, final TXID %s", w.n, len(points), finalTXID)

	for _, url := range s.replicaURLs() {
		out := s.restore(t, url)
		if got := fileChecksum(t, out); got != final.checksum {
			t.Errorf("restore of %s: checksum %s, primary %s", url, got, final.checksum)
		}
		integrityCheck(t, out)
	}
	for i, p := range points {
		url := s.replicaURLs()[i%2]
		out := s.restore(t, url, "-txid", hex16(p.txid))
		if got := fileChecksum(t, out); got != p.img.checksum {
			t.Errorf("restore of %s at TXID %s: checksum %s, copy %s", url, p.txid, got, p.img.checksum)
		}
	}
}

// TestReplicateCheckpointWhileDown: the app writes and TRUNCATE-checkpoints
// while the daemon is down; on start the daemon snapshots and restores match.
func TestReplicateCheckpointWhileDown(t *testing.T) {
	s := newStack(t, false)
	app := openDB(t, s.dbPath)
	mustExec(t, app, `CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)`)
	for i := 0; i < 50; i++ {
		mustExec(t, app, `INSERT INTO t(v) VALUES (randomblob(1000))`)
	}
	d := s.replicate(t)
	s.waitShipped(t, snapshotImage(t, app))
	if code := d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	snapshotsBefore := countFiles(t, filepath.Join(s.fileReplica, "ltx", "9"))

	for i := 0; i < 50; i++ {
		mustExec(t, app, `INSERT INTO t(v) VALUES (randomblob(1000))`)
	}
	mustExec(t, app, `PRAGMA wal_checkpoint(TRUNCATE)`)
	mustExec(t, app, `UPDATE t SET v = randomblob(10) WHERE id % 3 = 0`)

	d = s.replicate(t)
	img := snapshotImage(t, app)
	s.waitShipped(t, img)
	d.stop(t, syscall.SIGTERM, 30*time.Second)
	if after := countFiles(t, filepath.Join(s.fileReplica, "ltx", "9")); after <= snapshotsBefore {
		t.Errorf("no new snapshot after the app checkpointed while the daemon was down (%d before, %d after)", snapshotsBefore, after)
	}
	out := s.restore(t, s.replicaURLs()[0])
	if got := fileChecksum(t, out); got != img.checksum {
		t.Fatalf("restore checksum %s, primary %s", got, img.checksum)
	}
	integrityCheck(t, out)
}

// TestReplicateSecondWriterRefused: two daemons shipping two different
// databases to one store: create-only stops one of them, which exits non-zero
// naming the problem, and no object is ever overwritten.
func TestReplicateSecondWriterRefused(t *testing.T) {
	s := newStack(t, true)
	app := openDB(t, s.dbPath)
	w := startWriter(t, app, 3)
	a := s.replicate(t)
	w.pause.Lock()
	s.waitShipped(t, snapshotImage(t, app))
	w.pause.Unlock()
	before := treeDigest(t, filepath.Join(s.fileReplica, "ltx"))

	// A second node with its own database and the same replicas.
	other := filepath.Join(s.dir, "other.db")
	otherDB := openDB(t, other)
	w2 := startWriter(t, otherDB, 4)
	b := s.replicateOther(t, other)

	loser := waitOneFenced(t, a, b)
	// Refused at start as another database's replica (identity), or, had
	// both started on an empty store, fenced as another writer.
	if out := loser.out.String(); !strings.Contains(out, "another writer") && !strings.Contains(out, "another database") {
		t.Errorf("fenced daemon's output does not say another writer or database owns the history:\n%s", tailLines(out, 20))
	}
	w.allowErrors, w2.allowErrors = true, true
	w.halt(t)
	w2.halt(t)
	assertNotOverwritten(t, before, treeDigest(t, filepath.Join(s.fileReplica, "ltx")))
}

// replicateOther starts a second node: replicate of the database at other
// with s's replicas, on an address of its own.
func (s *stack) replicateOther(t *testing.T, other string) *daemon {
	t.Helper()
	cfg := strings.Replace(mustRead(t, s.configPath), s.dbPath, other, 1)
	cfg = strings.Replace(cfg, "addr: "+s.addr, fmt.Sprintf("addr: 127.0.0.1:%d", harness.FreePort(t)), 1)
	path := filepath.Join(s.dir, "other.yml")
	writeFile(t, path, cfg)
	return start(t, s.env, "replicate", "-config", path)
}

// waitOneFenced waits until a or b exits and returns it; it must exit
// non-zero.
func waitOneFenced(t *testing.T, a, b *daemon) *daemon {
	t.Helper()
	var loser *daemon
	eventually(t, 30*time.Second, "one daemon to be fenced", func() bool {
		switch {
		case a.exited():
			loser = a
		case b.exited():
			loser = b
		}
		return loser != nil
	})
	if code := loser.wait(t, 10*time.Second); code == 0 {
		t.Fatalf("fenced daemon exited 0")
	}
	return loser
}

// assertNotOverwritten fails for every object of before (a treeDigest)
// whose content differs in after.
func assertNotOverwritten(t *testing.T, before, after map[string][32]byte) {
	t.Helper()
	for key, sum := range before {
		if got, ok := after[key]; ok && got != sum {
			t.Errorf("object %s was overwritten", key)
		}
	}
}

// TestReplicateBadInput: missing, non-SQLite and directory paths fail with
// the path named and nothing written.
func TestReplicateBadInput(t *testing.T) {
	dir := t.TempDir()
	notDB := filepath.Join(dir, "notes.txt")
	writeFile(t, notDB, strings.Repeat("not a database\n", 100))
	tests := []struct {
		name, path, want string
	}{
		{"missing", filepath.Join(dir, "missing.db"), "missing.db"},
		{"not sqlite", notDB, "notes.txt"},
		{"directory", dir, dir},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			replica := filepath.Join(t.TempDir(), "replica")
			res := run(t, nil, "replicate", tt.path, "file://"+replica)
			if res.code == 0 {
				t.Fatalf("exit 0 for %s", tt.path)
			}
			if !strings.Contains(res.stderr, tt.want) {
				t.Errorf("error does not name %s:\n%s", tt.want, res.stderr)
			}
			if n := countFiles(t, filepath.Join(replica, "ltx")); n != 0 {
				t.Errorf("%d files written to the replica", n)
			}
		})
	}
	if got := mustRead(t, notDB); got != strings.Repeat("not a database\n", 100) {
		t.Errorf("non-database file was modified")
	}
}

func mustRead(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// countFiles counts regular files under dir (0 if it does not exist).
func countFiles(t testing.TB, dir string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			n++
		}
		return nil
	})
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return n
}

// TestReplicateIdleBurstsKeepHistory: bursts of writes with idle gaps and
// frequent checkpoints. The WAL restarts only when the daemon lets it, so
// the history is never broken: no snapshot beyond the first, and the log
// never reports an unexpected WAL restart.
func TestReplicateIdleBurstsKeepHistory(t *testing.T) {
	s := newStack(t, false)
	cfg := strings.Replace(mustRead(t, s.configPath), "    replicas:\n",
		"    min-checkpoint-page-count: 50\n    max-checkpoint-page-count: 400\n    replicas:\n", 1)
	writeFile(t, s.configPath, cfg)
	app := openDB(t, s.dbPath)
	mustExec(t, app, `PRAGMA wal_autocheckpoint = 100`)
	mustExec(t, app, `CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)`)
	d := s.replicate(t, "-log-level", "debug")
	for burst := 0; burst < 8; burst++ {
		for i := 0; i < 60; i++ {
			mustExec(t, app, `INSERT INTO t(v) VALUES (randomblob(3000))`)
		}
		time.Sleep(700 * time.Millisecond) // idle: the daemon checkpoints
	}
	img := snapshotImage(t, app)
	s.waitShipped(t, img)
	if code := d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("replicate exit code after SIGTERM = %d", code)
	}
	if strings.Contains(d.out.String(), "unexpectedly") {
		t.Errorf("the WAL restarted behind the daemon's back:\n%s", grepLines(d.out.String(), "unexpectedly"))
	}
	if n := countFiles(t, filepath.Join(s.fileReplica, "ltx", "9")); n != 1 {
		t.Errorf("%d snapshots, want only the first", n)
	}
	out := s.restore(t, s.replicaURLs()[0])
	if got := fileChecksum(t, out); got != img.checksum {
		t.Fatalf("restore checksum %s, primary %s", got, img.checksum)
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestReplicateMissingConfigSaysWhatToDo(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "none.yml")
	res := run(t, []string{"UNDERSTUDY_CONFIG=" + missing}, "replicate")
	if res.code == 0 || !strings.Contains(res.stderr, missing) || !strings.Contains(res.stderr, "DB_PATH REPLICA_URL") {
		t.Fatalf("exit %d, stderr %q: want non-zero naming %s and the config-less form", res.code, res.stderr, missing)
	}
}
