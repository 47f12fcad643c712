package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/understudy-db/understudy/integration/harness"
	"github.com/understudy-db/understudy/internal/litestream03/ls03test"
)

// Issue 11 item 3: replicas that Litestream 0.3 wrote (generations/ layout).
// The fixtures here are written by ls03test from a real database (snapshot =
// LZ4 of the database file, WAL segments = LZ4 of the real WAL's bytes);
// TestLitestream03Peer does the same with the real Litestream 0.3.13.

// ls03Point is a state of the source that a 0.3 restore can reach.
type ls03Point struct {
	gen   string
	index int
	at    time.Time // time of the object that ends the state
	sum   [32]byte  // sha256 of the database's pages
}

func (p ls03Point) String() string {
	return fmt.Sprintf("generation %s index %d at %s", p.gen, p.index, p.at.Format(time.RFC3339))
}

func imageSum(img image) [32]byte {
	h := sha256.New()
	for _, p := range img.pages {
		h.Write(p)
	}
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return s
}

func fileSum(t testing.TB, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// Generation names of the fixtures: A is the older.
const (
	ls03GenA = "0a0a0a0a0a0a0a0a"
	ls03GenB = "0b0b0b0b0b0b0b0b"
)

// writeLS03History writes two generations of app's history through put
// (each put one second after the one before, by the store's clock as
// setTime makes it): A = snapshot at index 0, two WAL 0 segments (the second
// grows the database), a WAL restart and one WAL 1 segment that shrinks it
// (VACUUM); B = a fresh snapshot (as 0.3 starts a generation after losing
// the WAL) and one segment. It returns every reachable state.
func writeLS03History(t *testing.T, app *sql.DB, dbPath string, put ls03test.Put) []ls03Point {
	t.Helper()
	mustExec(t, app, `PRAGMA wal_autocheckpoint=0`)
	mustExec(t, app, `CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)`)
	for i := 0; i < 30; i++ {
		mustExec(t, app, `INSERT INTO t (v) VALUES (randomblob(500))`)
	}
	var points []ls03Point
	record := func(g *ls03test.Generation, at time.Time) {
		points = append(points, ls03Point{gen: g.Name, index: g.Index(), at: at, sum: imageSum(snapshotImage(t, app))})
	}
	snapshot := func(g *ls03test.Generation) {
		mustExec(t, app, `PRAGMA wal_checkpoint(TRUNCATE)`)
		at, err := g.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		record(g, at)
	}
	segment := func(g *ls03test.Generation) {
		at, ok, err := g.Segment()
		if err != nil || !ok {
			t.Fatalf("segment: ok %v, %v", ok, err)
		}
		record(g, at)
	}

	a := ls03test.NewGeneration(ls03GenA, dbPath, put)
	snapshot(a)
	mustExec(t, app, `UPDATE t SET v = randomblob(510) WHERE id % 4 = 0`)
	segment(a)
	for i := 0; i < 60; i++ {
		mustExec(t, app, `INSERT INTO t (v) VALUES (randomblob(3000))`)
	}
	segment(a)
	mustExec(t, app, `PRAGMA wal_checkpoint(TRUNCATE)`)
	a.NextIndex()
	mustExec(t, app, `DELETE FROM t WHERE id > 20`)
	mustExec(t, app, `VACUUM`)
	segment(a)

	b := ls03test.NewGeneration(ls03GenB, dbPath, put)
	snapshot(b)
	mustExec(t, app, `INSERT INTO t (v) VALUES ('generation b')`)
	segment(b)
	return points
}

// ls03Clock steps a second per call from a fixed time in the past.
func ls03Clock() func() time.Time {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	return func() time.Time { now = now.Add(time.Second); return now }
}

// s3Put uploads 0.3 objects below prefix in bucket with a real PUT, then
// sets the backing file's mtime (versitygw's posix backend serves it as
// LastModified) from clock, so that object times are distinct seconds.
func s3Put(t *testing.T, srv *harness.S3Server, bucket, prefix string, clock func() time.Time) ls03test.Put {
	client := newS3Client(srv)
	return func(key string, data []byte) (time.Time, error) {
		full := prefix + key
		if _, err := client.PutObject(context.Background(), &awss3.PutObjectInput{
			Bucket: aws.String(bucket), Key: aws.String(full), Body: bytes.NewReader(data),
		}); err != nil {
			return time.Time{}, err
		}
		at := clock()
		if err := os.Chtimes(filepath.Join(srv.DataDir, bucket, filepath.FromSlash(full)), at, at); err != nil {
			return time.Time{}, err
		}
		out, err := client.ListObjectsV2(context.Background(), &awss3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String(full)})
		if err != nil || len(out.Contents) != 1 {
			return time.Time{}, fmt.Errorf("list %s back: %d objects, %v", full, len(out.Contents), err)
		}
		if got := aws.ToTime(out.Contents[0].LastModified); !got.Equal(at) {
			return time.Time{}, fmt.Errorf("%s: LastModified %s after setting the mtime to %s", full, got, at)
		}
		return at, nil
	}
}

// ls03Store is one store holding a 0.3 history: its URL for the CLI.
type ls03Store struct {
	name, url string
	env       []string
}

// newLS03Stores writes the same kind of history into a file replica and an
// S3 replica (each from its own database) and returns the stores with their
// reachable states.
func newLS03Stores(t *testing.T) ([]ls03Store, map[string][]ls03Point) {
	t.Helper()
	dir := t.TempDir()
	fileDir := filepath.Join(dir, "file-replica")
	srv := harness.StartVersityGW(t)
	bucket := srv.NewBucket(t)
	stores := []ls03Store{
		{name: "file", url: "file://" + fileDir},
		{name: "s3", url: fmt.Sprintf("s3://%s/app?endpoint=%s&region=us-east-1&force-path-style=true", bucket, srv.Endpoint),
			env: []string{"AWS_ACCESS_KEY_ID=" + srv.AccessKey, "AWS_SECRET_ACCESS_KEY=" + srv.SecretKey}},
	}
	points := map[string][]ls03Point{}
	for _, st := range stores {
		dbPath := filepath.Join(dir, st.name+".db")
		app := openDB(t, dbPath)
		put := ls03test.FilePut(fileDir, ls03Clock())
		if st.name == "s3" {
			put = s3Put(t, srv, bucket, "app/", ls03Clock())
		}
		points[st.name] = writeLS03History(t, app, dbPath, put)
	}
	return stores, points
}

// restoreLS03 restores url with args into a fresh path and returns its sha256.
func restoreLS03(t *testing.T, st ls03Store, args ...string) [32]byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "restored.db")
	res := run(t, st.env, append(append([]string{"restore", "-o", out}, args...), st.url)...)
	if res.code != 0 {
		t.Fatalf("restore %v %s: exit %d\n%s%s", args, st.url, res.code, res.stdout, res.stderr)
	}
	integrityCheck(t, out)
	return fileSum(t, out)
}

// TestLitestream03Restore restores 0.3 replicas on a file replica and on S3
// byte-identically at the newest state, at every object's time, and by
// generation and index; lists them with ltx and snapshots.
func TestLitestream03Restore(t *testing.T) {
	stores, allPoints := newLS03Stores(t)
	for _, st := range stores {
		t.Run(st.name, func(t *testing.T) {
			points := allPoints[st.name]
			last := points[len(points)-1]
			if got := restoreLS03(t, st); got != last.sum {
				t.Errorf("latest: restored %x, want the source's last state %x (%s)", got, last.sum, last)
			}
			for _, p := range points {
				ts := p.at.Format(time.RFC3339)
				if got := restoreLS03(t, st, "-timestamp", ts); got != p.sum {
					t.Errorf("-timestamp %s: restored %x, want %x (%s)", ts, got, p.sum, p)
				}
			}
			// The last state of each (generation, index), by -generation/-index.
			byIndex := map[[2]string]ls03Point{}
			for _, p := range points {
				byIndex[[2]string{p.gen, fmt.Sprintf("%x", p.index)}] = p
			}
			for k, p := range byIndex {
				if got := restoreLS03(t, st, "-generation", k[0], "-index", k[1]); got != p.sum {
					t.Errorf("-generation %s -index %s: restored %x, want %x", k[0], k[1], got, p.sum)
				}
			}
			if got, want := restoreLS03(t, st, "-generation", ls03GenA), byIndex[[2]string{ls03GenA, "1"}].sum; got != want {
				t.Errorf("-generation %s: restored %x, want its last state %x", ls03GenA, got, want)
			}

			snaps := run(t, st.env, "snapshots", st.url)
			if snaps.code != 0 {
				t.Fatalf("snapshots: exit %d: %s", snaps.code, snaps.stderr)
			}
			wantAll(t, snaps.stdout, "Litestream 0.3", ls03GenA+"  snapshot  00000000", ls03GenB+"  snapshot  00000000")
			if strings.Contains(snaps.stdout, "  wal  ") {
				t.Errorf("snapshots lists WAL segments:\n%s", snaps.stdout)
			}
			list := run(t, st.env, "ltx", st.url)
			if list.code != 0 {
				t.Fatalf("ltx: exit %d: %s", list.code, list.stderr)
			}
			wantAll(t, list.stdout, ls03GenA+"  wal       00000001  00000000", ls03GenB+"  wal       00000000  00000000")
			js := run(t, st.env, "ltx", "-json", st.url)
			wantAll(t, js.stdout, `"format": "litestream-0.3"`, `"generation": "`+ls03GenA+`"`)

			msg := restoreFailure(t, st.env, st.url, "-generation", ls03GenA, "-index", "7")
			wantAll(t, msg, "no WAL index 00000007", "it reaches 00000001")
			msg = restoreFailure(t, st.env, st.url, "-generation", "ffffffffffffffff")
			wantAll(t, msg, ls03GenA+", "+ls03GenB)
			msg = restoreFailure(t, st.env, st.url, "-timestamp", "2020-01-01T00:00:00Z")
			wantAll(t, msg, "before the oldest generation")
		})
	}
}

// TestLitestream03AgeEncrypted: an age-encrypted 0.3 object gets a clear
// error, not garbage.
func TestLitestream03AgeEncrypted(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "generations", ls03GenA, "snapshots", "00000000.snapshot.lz4")
	if err := os.MkdirAll(filepath.Dir(key), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, key, "age-encryption.org/v1\n-> X25519 c29tZXRoaW5n\nbinary")
	msg := restoreFailure(t, nil, "file://"+dir)
	wantAll(t, msg, "age-encrypted", "00000000.snapshot.lz4", "restore this replica with Litestream 0.3")
}

// TestLitestream03FollowRefuses: following a replica that holds only 0.3
// generations fails at once saying what to do, instead of waiting forever.
func TestLitestream03FollowRefuses(t *testing.T) {
	dir := t.TempDir()
	replica := filepath.Join(dir, "replica")
	app := openDB(t, filepath.Join(dir, "app.db"))
	g := ls03test.NewGeneration(ls03GenA, filepath.Join(dir, "app.db"), ls03test.FilePut(replica, nil))
	mustExec(t, app, `CREATE TABLE t (x)`)
	mustExec(t, app, `PRAGMA wal_checkpoint(TRUNCATE)`)
	if _, err := g.Snapshot(); err != nil {
		t.Fatal(err)
	}
	local := filepath.Join(dir, "follower.db")
	res := run(t, nil, "follow", "file://"+replica, local)
	if res.code == 0 {
		t.Fatalf("follow of a 0.3-only replica exited 0:\n%s", res.stderr)
	}
	if res.code != 2 {
		t.Errorf("exit %d, want 2 (a replica that can never be followed as given)", res.code)
	}
	wantAll(t, res.stderr, "only Litestream 0.3 generations", ls03GenA, "understudy restore -o "+local, "understudy replicate")
	if _, err := os.Stat(local); err == nil {
		t.Errorf("follow created %s", local)
	}
}

// TestLitestream03ReplicateBeside: replicate on a database whose replicas
// (file and S3) hold a 0.3 history starts its own history beside it, logs
// that the generations are still there and how to restore them, leaves them
// untouched, and both histories restore.
func TestLitestream03ReplicateBeside(t *testing.T) {
	s := newStack(t, true)
	app := openDB(t, s.dbPath)
	points := writeLS03History(t, app, s.dbPath, ls03test.FilePut(s.fileReplica, ls03Clock()))
	// The same objects on S3, under the S3 replica's path.
	s3put := s3Put(t, s.s3, s.bucket, "app/", ls03Clock())
	err := filepath.Walk(filepath.Join(s.fileReplica, "generations"), func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(s.fileReplica, p)
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		_, err = s3put(filepath.ToSlash(rel), data)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	mustExec(t, app, `PRAGMA wal_autocheckpoint=1000`)
	before := treeDigest(t, filepath.Join(s.fileReplica, "generations"))

	d := s.replicate(t)
	mustExec(t, app, `INSERT INTO t (v) VALUES ('after the move')`)
	img := snapshotImage(t, app)
	s.waitShipped(t, img)
	eventually(t, 30*time.Second, "the log line about the 0.3 generations for both replicas", func() bool {
		return strings.Count(d.out.String(), "replica holds Litestream 0.3 generations") == 2
	})
	line := grepLines(d.out.String(), "replica holds Litestream 0.3 generations")
	wantAll(t, line, ls03GenA, ls03GenB, "understudy restore -generation "+ls03GenB+" -o PATH file://"+s.fileReplica)
	if code := d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("replicate exit %d", code)
	}
	sameTree(t, filepath.Join(s.fileReplica, "generations"), before, treeDigest(t, filepath.Join(s.fileReplica, "generations")))

	want := imageSum(img)
	bIndex0 := points[len(points)-1]
	for _, url := range s.replicaURLs() {
		st := ls03Store{name: url, url: url, env: s.env}
		if got := restoreLS03(t, st); got != want {
			t.Errorf("%s: latest restored %x, want Understudy's newest state %x", url, got, want)
		}
		if got := restoreLS03(t, st, "-generation", ls03GenB, "-index", "0"); got != bIndex0.sum {
			t.Errorf("%s: -generation %s -index 0 restored %x, want the old history's %x", url, ls03GenB, got, bIndex0.sum)
		}
		if got := restoreLS03(t, st, "-timestamp", points[1].at.Format(time.RFC3339)); got != points[1].sum {
			t.Errorf("%s: -timestamp before Understudy's history restored %x, want the 0.3 state %x", url, got, points[1].sum)
		}
	}
}

// TestLitestream03Migration is the migration the README's "Coming from
// Litestream" section describes, step by step on a new machine: the
// Litestream config as it was (Understudy reads its keys), `understudy
// restore DB_PATH` without -o restores the 0.3 replica to the configured
// path (refusing when the file exists; -if-db-not-exists then succeeds
// without touching it), `understudy replicate` ships the database beside the
// 0.3 generations, and a restore gives the app's newest state.
func TestLitestream03Migration(t *testing.T) {
	old := t.TempDir()
	replica := filepath.Join(t.TempDir(), "replica")
	oldDB := filepath.Join(old, "app.db")
	points := writeLS03History(t, openDB(t, oldDB), oldDB, ls03test.FilePut(replica, ls03Clock()))
	last := points[len(points)-1]

	dir := t.TempDir()
	dbPath := filepath.Join(dir, "app.db")
	addr := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	cfg := writeConfig(t,
		"addr: "+addr,
		"dbs:",
		"  - path: "+dbPath,
		"    replicas:",
		"      - type: file",
		"        path: "+replica,
		"        sync-interval: 100ms",
	)
	res := run(t, nil, "restore", "-config", cfg, dbPath)
	if res.code != 0 {
		t.Fatalf("restore without -o: exit %d: %s", res.code, res.stderr)
	}
	if got := fileSum(t, dbPath); got != last.sum {
		t.Fatalf("restored %x to the configured path, want the 0.3 replica's newest state %x", got, last.sum)
	}
	res = run(t, nil, "restore", "-config", cfg, dbPath)
	if res.code == 0 {
		t.Fatalf("second restore without -o exited 0 over an existing database")
	}
	wantAll(t, res.stderr, dbPath+" exists", "never overwrites", "-if-db-not-exists")
	if res := run(t, nil, "restore", "-config", cfg, "-if-db-not-exists", dbPath); res.code != 0 {
		t.Fatalf("restore -if-db-not-exists over an existing database: exit %d: %s", res.code, res.stderr)
	}
	if got := fileSum(t, dbPath); got != last.sum {
		t.Fatalf("the database changed under refused restores")
	}
	if res := run(t, nil, "restore", "file://"+replica); res.code == 0 {
		t.Errorf("restore of a replica URL without -o exited 0")
	} else {
		wantAll(t, res.stderr, "-o OUT is required", "only a DB_PATH from the config")
	}

	app := openDB(t, dbPath)
	d := start(t, nil, "replicate", "-config", cfg)
	mustExec(t, app, `INSERT INTO t (v) VALUES ('written after the move')`)
	img := snapshotImage(t, app)
	eventually(t, 30*time.Second, "the database shipped to the replica", func() bool {
		var st primaryStatus
		err := getStatus(addr, &st)
		return err == nil && len(st.DBs) == 1 && st.DBs[0].Checksum == img.checksum &&
			len(st.DBs[0].Replicas) == 1 && st.DBs[0].Replicas[0].TXID == st.DBs[0].TXID
	})
	eventually(t, 30*time.Second, "the log line about the 0.3 generations", func() bool {
		return strings.Contains(d.out.String(), "replica holds Litestream 0.3 generations")
	})
	if code := d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("replicate exit %d", code)
	}
	st := ls03Store{name: "file", url: "file://" + replica}
	if got := restoreLS03(t, st); got != imageSum(img) {
		t.Errorf("restore after the move gave %x, want the app's newest state %x", got, imageSum(img))
	}
	if got := restoreLS03(t, st, "-generation", ls03GenB); got != last.sum {
		t.Errorf("the 0.3 generation %s no longer restores to its state", ls03GenB)
	}
}
