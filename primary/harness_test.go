package primary

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	_ "github.com/mattn/go-sqlite3"
	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/internal/dbsum"
	"github.com/understudy-db/understudy/internal/storage"
	"github.com/understudy-db/understudy/internal/storage/file"
)

// countingClient counts creates, to check that an idle shipper makes no
// request, and can be told to fail.
type countingClient struct {
	storage.Client
	creates atomic.Int64
	others  atomic.Int64 // opens, lists, deletes
	fail    atomic.Bool
}

func (c *countingClient) Open(ctx context.Context, level int, min, max ltx.TXID, offset, size int64) (*storage.Object, error) {
	c.others.Add(1)
	return c.Client.Open(ctx, level, min, max, offset, size)
}

func (c *countingClient) List(ctx context.Context, level int, seek ltx.TXID) (storage.Iterator, error) {
	c.others.Add(1)
	return c.Client.List(ctx, level, seek)
}

func (c *countingClient) Delete(ctx context.Context, files []storage.FileInfo) error {
	c.others.Add(1)
	return c.Client.Delete(ctx, files)
}

func (c *countingClient) Create(ctx context.Context, level int, min, max ltx.TXID, r io.Reader, md storage.Metadata) (storage.FileInfo, error) {
	if c.fail.Load() {
		return storage.FileInfo{}, errors.New("injected store failure")
	}
	c.creates.Add(1)
	return c.Client.Create(ctx, level, min, max, r, md)
}

type testEnv struct {
	t       *testing.T
	dir     string
	path    string
	app     *sql.DB // the application's own connections
	stores  []*file.Client
	clients []*countingClient
}

func newEnv(t *testing.T, replicas int) *testEnv {
	t.Helper()
	dir := t.TempDir()
	e := &testEnv{t: t, dir: dir, path: filepath.Join(dir, "app.db")}
	e.app = openApp(t, e.path)
	e.exec("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT, b BLOB)")
	for i := 0; i < replicas; i++ {
		c, err := file.New(filepath.Join(dir, fmt.Sprintf("replica%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		e.stores = append(e.stores, c)
		e.clients = append(e.clients, &countingClient{Client: c})
	}
	return e
}

func openApp(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+path+"?_journal_mode=WAL&_busy_timeout=5000&_synchronous=NORMAL")
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	return db
}

func (e *testEnv) exec(q string, args ...any) {
	e.t.Helper()
	if _, err := e.app.Exec(q, args...); err != nil {
		e.t.Fatalf("%s: %v", q, err)
	}
}

func (e *testEnv) options() Options {
	var reps []ReplicaOptions
	for i, c := range e.clients {
		reps = append(reps, ReplicaOptions{Name: fmt.Sprintf("r%d", i), Client: c, SyncInterval: 10 * time.Millisecond})
	}
	return Options{
		Path: e.path, Node: "node-a", Replicas: reps,
		Levels:          []time.Duration{time.Hour}, // compaction is driven by hand in tests
		MonitorInterval: 20 * time.Millisecond,
		Logger:          hclog.New(&hclog.LoggerOptions{Level: testLogLevel(), Output: os.Stderr}),
	}
}

func (e *testEnv) open(opts Options) *DB {
	e.t.Helper()
	d, err := New(opts)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := d.Open(context.Background()); err != nil {
		e.t.Fatal(err)
	}
	return d
}

// renameOver builds another database with schema (checkpointed, without
// -wal or -shm) and renames it over the application's path; the path's
// own -wal and -shm are left for the caller.
func (e *testEnv) renameOver(schema string) {
	e.t.Helper()
	other := filepath.Join(e.dir, "other.db")
	o := openApp(e.t, other)
	if _, err := o.Exec(schema); err != nil {
		e.t.Fatal(err)
	}
	if _, err := o.Exec("PRAGMA wal_checkpoint(TRUNCATE)"); err != nil {
		e.t.Fatal(err)
	}
	o.Close()
	os.Remove(other + "-wal")
	os.Remove(other + "-shm")
	if err := os.Rename(other, e.path); err != nil {
		e.t.Fatal(err)
	}
}

// listLevel lists one level of a store.
func listLevel(t *testing.T, c storage.Client, level int) []storage.FileInfo {
	t.Helper()
	it, err := c.List(context.Background(), level, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	var out []storage.FileInfo
	for it.Next() {
		out = append(out, it.Item())
	}
	return out
}

// restoreL0 applies every L0 file of the store in order into a new file,
// the simplest restore there is: write each page at its offset, truncate to
// the file's Commit. It checks that TXIDs are contiguous, that every file
// decodes (file checksum), and that each file's metadata matches the
// database before (pre-apply) and after (post-apply) applying it.
func restoreL0(t *testing.T, c storage.Client, out string) (ltx.TXID, ltx.Checksum) {
	t.Helper()
	files := listLevel(t, c, 0)
	if len(files) == 0 {
		t.Fatal("restore: no L0 files")
	}
	for i, fi := range files {
		if fi.MinTXID != fi.MaxTXID || fi.MinTXID != ltx.TXID(i+1) {
			t.Fatalf("restore: L0 file %d is %s-%s; want TXID %d (contiguous from 1)", i, fi.MinTXID, fi.MaxTXID, i+1)
		}
	}
	return restoreFiles(t, c, files, out)
}

// restoreFiles applies files (of any levels, contiguous, the first a
// snapshot) in order into out.
func restoreFiles(t *testing.T, c storage.Client, files []storage.FileInfo, out string) (ltx.TXID, ltx.Checksum) {
	t.Helper()
	ctx := context.Background()
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var cur ltx.Checksum
	for i, fi := range files {
		if i > 0 && fi.MinTXID != files[i-1].MaxTXID+1 {
			t.Fatalf("restore: gap between %s and %s", files[i-1].MaxTXID, fi.MinTXID)
		}
		obj, err := c.Open(ctx, fi.Level, fi.MinTXID, fi.MaxTXID, 0, -1)
		if err != nil {
			t.Fatal(err)
		}
		md := obj.Info.Metadata
		if md == nil {
			t.Fatalf("restore: TXID %s has no metadata", fi.MinTXID)
		}
		if i > 0 && md.PreApplyChecksum != cur {
			t.Fatalf("restore: TXID %s pre-apply %s, database is %s", fi.MinTXID, md.PreApplyChecksum, cur)
		}
		dec := ltx.NewDecoder(obj)
		if err := dec.DecodeHeader(); err != nil {
			t.Fatal(err)
		}
		h := dec.Header()
		if h.Flags != ltx.HeaderFlagNoChecksum || h.PreApplyChecksum != 0 {
			t.Fatalf("restore: TXID %s header %+v not as Litestream writes it", fi.MinTXID, h)
		}
		buf := make([]byte, h.PageSize)
		for {
			var ph ltx.PageHeader
			if err := dec.DecodePage(&ph, buf); err == io.EOF {
				break
			} else if err != nil {
				t.Fatalf("restore: TXID %s: %v", fi.MinTXID, err)
			}
			if _, err := f.WriteAt(buf, int64(ph.Pgno-1)*int64(h.PageSize)); err != nil {
				t.Fatal(err)
			}
		}
		if err := dec.Close(); err != nil {
			t.Fatalf("restore: TXID %s: %v", fi.MinTXID, err)
		}
		if dec.Trailer().PostApplyChecksum != 0 {
			t.Fatalf("restore: TXID %s carries a post-apply checksum in the file", fi.MinTXID)
		}
		obj.Close()
		if err := f.Truncate(int64(h.Commit) * int64(h.PageSize)); err != nil {
			t.Fatal(err)
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		sum, _, err := dbsum.Reader(f, int(h.PageSize))
		if err != nil {
			t.Fatal(err)
		}
		if sum != md.PostApplyChecksum {
			t.Fatalf("restore: after TXID %s the database checksum is %s, metadata says %s", fi.MinTXID, sum, md.PostApplyChecksum)
		}
		cur = sum
	}
	return files[len(files)-1].MaxTXID, cur
}

// checkRestore restores every replica and compares with the database: the
// shipper's checksum, and the primary file itself after the application
// checkpoints it (an independent check of the rolling checksum).
func (e *testEnv) checkRestore(d *DB) {
	e.t.Helper()
	st := d.Status()
	for i, c := range e.stores {
		out := filepath.Join(e.dir, fmt.Sprintf("restored%d.db", i))
		var txid ltx.TXID
		var sum ltx.Checksum
		if l0 := listLevel(e.t, c, 0); len(l0) > 0 && l0[0].MinTXID == 1 {
			txid, sum = restoreL0(e.t, c, out)
		} else {
			// A replica that caught up with a snapshot: the newest
			// snapshot and the L0 files after it.
			l9 := listLevel(e.t, c, storage.SnapshotLevel)
			if len(l9) == 0 {
				e.t.Fatalf("replica %d has neither an L0 chain from 1 nor a snapshot", i)
			}
			files := []storage.FileInfo{l9[len(l9)-1]}
			for _, f := range l0 {
				if f.MinTXID > files[0].MaxTXID {
					files = append(files, f)
				}
			}
			txid, sum = restoreFiles(e.t, c, files, out)
		}
		if txid != st.TXID || sum != st.Checksum {
			e.t.Fatalf("replica %d restored to TXID %s checksum %s; shipper is at %s %s", i, txid, sum, st.TXID, st.Checksum)
		}
		checkIntegrity(e.t, out)
	}
}

// checkRestoreAndFile checks every replica's restore against the shipper
// (checkRestore), closes d and checks the primary file against the same
// checksum (checkPrimaryFile).
func (e *testEnv) checkRestoreAndFile(d *DB) {
	e.t.Helper()
	e.checkRestore(d)
	want := d.Status().Checksum
	d.Close()
	e.checkPrimaryFile(want)
}

// runUntilCaughtUp runs d until replica i has the head (or 5 s), commits
// one more row, stops the Run loop and ships that row with Sync.
func (e *testEnv) runUntilCaughtUp(d *DB, i int) {
	e.t.Helper()
	stop := run(e.t, d)
	for n := 0; n < 500 && d.Status().Replicas[i].TXID != d.Status().TXID; n++ {
		sleepTick()
	}
	e.exec("INSERT INTO t (v) VALUES ('after catch-up')")
	if err := stop(); err != nil {
		e.t.Fatal(err)
	}
	if err := d.Sync(context.Background()); err != nil {
		e.t.Fatal(err)
	}
}

// checkPrimaryFile compares the restore with the primary database file
// after a TRUNCATE checkpoint by the application (call after Close).
func (e *testEnv) checkPrimaryFile(want ltx.Checksum) {
	e.t.Helper()
	e.exec("PRAGMA wal_checkpoint(TRUNCATE)")
	// dbsum.File opens and closes the database file, which drops every
	// POSIX lock this process holds on it (SQLITE-NOTES.md): the
	// application's connection goes first.
	e.app.Close()
	got, _, err := dbsum.File(e.path)
	if err != nil {
		e.t.Fatal(err)
	}
	if got != want {
		e.t.Fatalf("primary database checksum %s, restore %s", got, want)
	}
}

func checkIntegrity(t *testing.T, path string) {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var res string
	if err := db.QueryRow("PRAGMA integrity_check").Scan(&res); err != nil || res != "ok" {
		t.Fatalf("integrity_check of %s: %q %v", path, res, err)
	}
}

func run(t *testing.T, d *DB) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	return func() error {
		cancel()
		return <-done
	}
}

func testLogLevel() hclog.Level {
	if v := os.Getenv("PRIMARY_TEST_LOG"); v != "" {
		return hclog.LevelFromString(v)
	}
	return hclog.Warn
}
