package integration

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/integration/harness"
)

// dirStack is a directory of databases replicated by one dir: entry to a
// file replica and to versitygw (or, by emptyDirStack, to other stores:
// two replicas in all).
type dirStack struct {
	dir, store, addr, configPath string
	s3                           *harness.S3Server
	bucket                       string
	env                          []string

	mu  sync.Mutex
	dbs map[string]*sql.DB // the application's connections, by name
}

func newDirStack(t *testing.T) *dirStack {
	t.Helper()
	s := emptyDirStack(t)
	s.store = filepath.Join(filepath.Dir(s.dir), "store")
	s.s3 = harness.StartVersityGW(t)
	s.bucket = s.s3.NewBucket(t)
	writeFile(t, s.configPath, fmt.Sprintf(`addr: %s
dbs:
  - dir: %s
    recursive: true
    watch: true
    idle-after: 2s
    replicas:
      - url: file://%s
        sync-interval: 100ms
      - url: s3://%s/tenants?endpoint=%s&region=us-east-1&force-path-style=true
        access-key-id: ${TEST_S3_KEY}
        secret-access-key: ${TEST_S3_SECRET}
        sync-interval: 100ms
`, s.addr, s.dir, s.store, s.bucket, s.s3.Endpoint))
	s.env = []string{"TEST_S3_KEY=" + s.s3.AccessKey, "TEST_S3_SECRET=" + s.s3.SecretKey,
		"AWS_ACCESS_KEY_ID=" + s.s3.AccessKey, "AWS_SECRET_ACCESS_KEY=" + s.s3.SecretKey}
	return s
}

// emptyDirStack is a dirStack with its directory (and eu/ in it) and no
// store or config yet.
func emptyDirStack(t *testing.T) *dirStack {
	t.Helper()
	root := t.TempDir()
	s := &dirStack{
		dir:        filepath.Join(root, "tenants"),
		addr:       fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t)),
		configPath: filepath.Join(root, "understudy.yml"),
		dbs:        map[string]*sql.DB{},
	}
	if err := os.MkdirAll(filepath.Join(s.dir, "eu"), 0o755); err != nil {
		t.Fatal(err)
	}
	return s
}

// create makes the database name (relative to the directory) with one row.
func (s *dirStack) create(t *testing.T, name string) {
	t.Helper()
	db := openDB(t, filepath.Join(s.dir, name))
	mustExec(t, db, `CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)`)
	mustExec(t, db, `INSERT INTO t(v) VALUES (randomblob(100))`)
	s.mu.Lock()
	s.dbs[name] = db
	s.mu.Unlock()
}

// remove closes the application's connection and deletes the database.
func (s *dirStack) remove(t *testing.T, name string) {
	t.Helper()
	s.mu.Lock()
	db := s.dbs[name]
	delete(s.dbs, name)
	s.mu.Unlock()
	db.Close()
	for _, suffix := range []string{"", "-wal", "-shm"} {
		if err := os.Remove(filepath.Join(s.dir, name) + suffix); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
}

func (s *dirStack) names() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for n := range s.dbs {
		out = append(out, n)
	}
	return out
}

// dbStatus is the part of /status/db/NAME the test reads.
type dbStatus struct {
	State    string       `json:"state"`
	TXID     ltx.TXID     `json:"txid"`
	Checksum ltx.Checksum `json:"checksum"`
	Replicas []struct {
		TXID ltx.TXID `json:"txid"`
	} `json:"replicas"`
}

func (s *dirStack) dbStatus(name string) (dbStatus, error) {
	var st dbStatus
	resp, err := http.Get("http://" + s.addr + "/status/db/" + name)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("%s", resp.Status)
	}
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// parked is how many databases of the directory the daemon has closed.
func (s *dirStack) parked() int {
	var doc struct {
		Dirs []struct {
			Parked int `json:"parked"`
		} `json:"dirs"`
	}
	if err := getStatus(s.addr, &doc); err != nil || len(doc.Dirs) != 1 {
		return -1
	}
	return doc.Dirs[0].Parked
}

// createNumbered creates databases t000.db to t<n-1>.db, every fourth of
// them in eu/.
func (s *dirStack) createNumbered(t *testing.T, n int) {
	t.Helper()
	for i := range n {
		name := fmt.Sprintf("t%03d.db", i)
		if i%4 == 0 {
			name = "eu/" + name
		}
		s.create(t, name)
	}
}

// randomWriters starts n writers, each inserting a random blob into a
// random database of s, one transaction at a time with pause(rng) between,
// until the returned stop is called. stop waits for them and returns the
// first write error; a database removed meanwhile is skipped.
func (s *dirStack) randomWriters(t *testing.T, n int, seed uint64, pause func(*rand.Rand) time.Duration) (stop func() error) {
	t.Helper()
	done := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for w := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), seed))
			for {
				select {
				case <-done:
					return
				default:
				}
				names := s.names()
				name := names[rng.IntN(len(names))]
				s.mu.Lock()
				db := s.dbs[name]
				s.mu.Unlock()
				if db == nil {
					continue
				}
				if _, err := db.Exec(`INSERT INTO t(v) VALUES (randomblob(?))`, 50+rng.IntN(3000)); err != nil && !strings.Contains(err.Error(), "closed") {
					mu.Lock()
					if first == nil {
						first = fmt.Errorf("%s: %w", name, err)
					}
					mu.Unlock()
					return
				}
				time.Sleep(pause(rng))
			}
		}()
	}
	return func() error {
		close(done)
		wg.Wait()
		return first
	}
}

// waitAllShipped waits until the daemon's position of every database has
// the application's checksum and every replica holds it.
func (s *dirStack) waitAllShipped(t *testing.T) map[string]ltx.Checksum {
	t.Helper()
	want := map[string]ltx.Checksum{}
	s.mu.Lock()
	for n, db := range s.dbs {
		want[n] = snapshotImage(t, db).checksum
	}
	s.mu.Unlock()
	var behind []string
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		behind = behind[:0]
		for n, sum := range want {
			st, err := s.dbStatus(n)
			ok := err == nil && st.Checksum == sum && len(st.Replicas) == 2
			for _, r := range st.Replicas {
				ok = ok && r.TXID == st.TXID
			}
			if !ok {
				behind = append(behind, fmt.Sprintf("%s (%+v, %v; want checksum %s)", n, st, err, sum))
			}
		}
		if len(behind) == 0 {
			return want
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 60s, %d databases are not shipped: %s", len(behind), strings.Join(behind[:min(5, len(behind))], "; "))
		}
	}
}

// TestReplicateDirectory: one daemon replicates a directory (recursive,
// watch) of 200 databases to a file replica and versitygw while random
// writers commit to them; databases are created and deleted during the
// run. Each database's replica is the prefix plus its path relative to the
// directory (Litestream 0.5's rule), databases quiet for idle-after are
// closed and woken by their next write, a new one is picked up, a deleted
// one stops with its history kept. After a kill -9 and more writes while
// the daemon is down, the restart resumes every database from its WAL (no
// full image), and a restore of every database, from both stores, equals
// the application's.
func TestReplicateDirectory(t *testing.T) {
	s := newDirStack(t)
	const n = 200
	s.createNumbered(t, n)
	writeFile(t, filepath.Join(s.dir, "notes.db"), "not a database") // matches the pattern, no SQLite header
	d := start(t, s.env, "replicate", "-config", s.configPath)
	s.waitAllShipped(t)

	// Writers: random databases, one transaction at a time.
	stopWriters := s.randomWriters(t, 4, 1, func(rng *rand.Rand) time.Duration { return time.Duration(rng.IntN(3)) * time.Millisecond })
	for i := range 10 { // created and deleted while the writers run
		s.create(t, fmt.Sprintf("eu/new%02d.db", i))
		if i < 5 {
			s.remove(t, fmt.Sprintf("t%03d.db", 1+i*4))
		}
		time.Sleep(300 * time.Millisecond)
	}
	time.Sleep(3 * time.Second) // databases quiet for idle-after are closed meanwhile
	if err := stopWriters(); err != nil {
		t.Fatal(err)
	}
	s.waitAllShipped(t)
	out := d.out.String()
	for i := range 5 {
		name := fmt.Sprintf("t%03d.db", 1+i*4)
		if !strings.Contains(out, "db="+name+" why=") {
			t.Errorf("no log line says %s left the directory", name)
		}
		if c := countFiles(t, filepath.Join(s.store, name, "ltx", "0")); c == 0 {
			t.Errorf("the history of the deleted %s is gone from the store", name)
		}
	}
	if strings.Contains(out, "notes.db") {
		t.Errorf("a file without the SQLite header was taken for a database:\n%s", grepLines(out, "notes.db"))
	}

	// Everything quiet for idle-after is closed ("parked").
	eventually(t, 30*time.Second, "every database parked", func() bool { return s.parked() == len(s.names()) })

	// kill -9, more writes while the daemon is down, restart.
	d.kill()
	l9 := map[string]int{}
	for i, name := range s.names() {
		l9[name] = countFiles(t, filepath.Join(s.store, name, "ltx", "9"))
		if i%3 == 0 {
			s.mu.Lock()
			mustExec(t, s.dbs[name], `INSERT INTO t(v) VALUES (randomblob(500))`)
			s.mu.Unlock()
		}
	}
	d = start(t, s.env, "replicate", "-config", s.configPath)
	s.waitAllShipped(t)
	// Writes to parked databases wake them.
	eventually(t, 30*time.Second, "every database parked", func() bool { return s.parked() == len(s.names()) })
	for i, name := range s.names()[:30] {
		s.mu.Lock()
		if i >= 20 {
			// The application's last connection closes, which deletes
			// the WAL, and a new one writes: the database file is at
			// the shipped position, so the new WAL is shipped as it is
			// (no full image).
			s.dbs[name].Close()
			s.dbs[name] = openDB(t, filepath.Join(s.dir, name))
		}
		mustExec(t, s.dbs[name], `INSERT INTO t(v) VALUES (randomblob(500))`)
		s.mu.Unlock()
	}
	want := s.waitAllShipped(t)
	if full := grepLines(d.out.String(), "wrote full image"); full != "" {
		t.Errorf("the restart wrote full images; the WAL proved every database's history:\n%s", full)
	}
	for name, c := range l9 {
		if got := countFiles(t, filepath.Join(s.store, name, "ltx", "9")); got != c {
			t.Errorf("%s: %d snapshots after the restart, %d before", name, got, c)
		}
	}

	// Restores: every database from the file replica, a sample from S3,
	// where Litestream 0.5 would look for them (prefix + relative path).
	var rwg sync.WaitGroup
	sem := make(chan struct{}, 4)
	i := 0
	for name, sum := range want {
		urls := []string{"file://" + filepath.Join(s.store, name)}
		if i%10 == 0 {
			urls = append(urls, fmt.Sprintf("s3://%s/tenants/%s?endpoint=%s&region=us-east-1&force-path-style=true", s.bucket, name, s.s3.Endpoint))
		}
		i++
		for _, u := range urls {
			rwg.Add(1)
			sem <- struct{}{}
			go func() {
				defer rwg.Done()
				defer func() { <-sem }()
				out := filepath.Join(t.TempDir(), "restored.db")
				res := run(t, s.env, "restore", "-o", out, u)
				if res.code != 0 {
					t.Errorf("restore %s: exit %d\n%s%s", u, res.code, res.stdout, res.stderr)
					return
				}
				if got := fileChecksum(t, out); got != sum {
					t.Errorf("restore of %s: checksum %s, the application's is %s", u, got, sum)
				}
			}()
		}
	}
	rwg.Wait()
}
