package integration

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/understudy-db/understudy/integration/harness"
	"github.com/understudy-db/understudy/internal/restore"
	"github.com/understudy-db/understudy/internal/storage"
	"github.com/understudy-db/understudy/internal/storage/file"
)

// otherDBStack is a second stack on the same replicas as s (same config
// but for the database path and the status address): another database
// pointed at s's replica URL, as a typo or a copied config does.
func otherDBStack(t *testing.T, s *stack, path string) *stack {
	t.Helper()
	o := *s
	o.dbPath = path
	o.addr = fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	o.configPath = filepath.Join(s.dir, strings.TrimSuffix(filepath.Base(path), ".db")+".yml")
	cfg := strings.Replace(mustRead(t, s.configPath), "path: "+s.dbPath+"\n", "path: "+path+"\n", 1)
	cfg = strings.Replace(cfg, "addr: "+s.addr, "addr: "+o.addr, 1)
	writeFile(t, o.configPath, cfg)
	return &o
}

// fileStoreIDs returns the database identity in the metadata of every
// object of a file replica, by "level/name".
func fileStoreIDs(t *testing.T, dir string) map[string]string {
	t.Helper()
	c, err := file.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	files, err := restore.ListAll(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, f := range files {
		obj, err := c.Open(ctx, f.Level, f.MinTXID, f.MaxTXID, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		obj.Close()
		id := ""
		if obj.Info.Metadata != nil {
			id = obj.Info.Metadata.DatabaseID
		}
		out[fmt.Sprintf("%d/%s", f.Level, storage.FormatFilename(f.MinTXID, f.MaxTXID))] = id
	}
	return out
}

// TestReplicateOtherDatabaseRefused: a.db replicates; b.db is started with
// the same replicas (file and S3). b.db must be refused at start with an
// error naming both databases, a.db must go on shipping unfenced, and a
// restore must still return a.db. With -adopt-replica b.db takes the
// replicas over: a.db is then stopped with a message that says another
// database (not another node) writes to its replica, and, restarted, is
// refused as b.db was (instead of being fenced on every restart).
func TestReplicateOtherDatabaseRefused(t *testing.T) {
	s := newStack(t, true)
	app := openDB(t, s.dbPath)
	mustExec(t, app, `CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)`)
	mustExec(t, app, `INSERT INTO t(v) VALUES ('a')`)
	a := s.replicate(t)
	s.waitShipped(t, snapshotImage(t, app))

	bPath := filepath.Join(s.dir, "b.db")
	makeDB(t, bPath)
	sb := otherDBStack(t, s, bPath)
	b := sb.replicate(t)
	if code := b.wait(t, 60*time.Second); code == 0 {
		t.Fatal("b.db's daemon took a.db's replica without complaint (exit 0)")
	}
	wantAll(t, b.out.String(), "holds the history of another database", s.dbPath, bPath, "-adopt-replica")

	// a.db goes on, unfenced.
	mustExec(t, app, `INSERT INTO t(v) VALUES ('a after b was refused')`)
	imgA := snapshotImage(t, app)
	s.waitShipped(t, imgA)
	if st, err := s.status(); err != nil || st.DBs[0].Fenced {
		t.Fatalf("a.db fenced after b.db was refused: %+v %v", st, err)
	}
	for _, url := range s.replicaURLs() {
		if got := fileChecksum(t, s.restore(t, url)); got != imgA.checksum {
			t.Fatalf("restore of %s gives checksum %s, not a.db's %s", url, got, imgA.checksum)
		}
	}

	// The operator says b.db replaces that history.
	b = sb.replicate(t, "-adopt-replica")
	bApp := openDB(t, bPath)
	imgB := snapshotImage(t, bApp)
	sb.waitShipped(t, imgB)
	if _, err := app.Exec(`INSERT INTO t(v) VALUES ('a after b took over')`); err != nil {
		t.Logf("a.db's write: %v", err) // may already be held by its fenced daemon
	}
	if code := a.wait(t, 60*time.Second); code == 0 {
		t.Fatal("a.db's daemon exited 0 after b.db took its replica over")
	}
	wantAll(t, a.out.String(), "another database writes to this replica", bPath)
	if strings.Contains(a.out.String(), "another node is primary") {
		t.Errorf("a.db's daemon blames another node:\n%s", tailLines(a.out.String(), 10))
	}
	if code := b.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("b.db's daemon exit code after SIGTERM = %d", code)
	}
	for _, url := range s.replicaURLs() {
		if got := fileChecksum(t, s.restore(t, url)); got != imgB.checksum {
			t.Fatalf("restore of %s after the adoption gives checksum %s, not b.db's %s", url, got, imgB.checksum)
		}
	}

	// a.db restarted (systemd): refused at start, naming b.db.
	a = s.replicate(t)
	if code := a.wait(t, 60*time.Second); code == 0 {
		t.Fatal("a.db's daemon restarted on b.db's replica with exit 0")
	}
	wantAll(t, a.out.String(), "holds the history of another database", bPath, s.dbPath)
}

// TestReplicateRestoredCopyContinuesHistory: a replica restored to a new
// machine, written to by the application there, then replicated to the
// same replica is the same history: it is accepted, and the objects it
// writes carry the history's identity on (as do those of a second restore
// and replicate round).
func TestReplicateRestoredCopyContinuesHistory(t *testing.T) {
	s := newStack(t, false)
	app := openDB(t, s.dbPath)
	mustExec(t, app, `CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)`)
	mustExec(t, app, `INSERT INTO t(v) VALUES ('first machine')`)
	d := s.replicate(t)
	s.waitShipped(t, snapshotImage(t, app))
	if code := d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	before := fileStoreIDs(t, s.fileReplica)
	var id string
	for key, got := range before {
		if got == "" {
			t.Fatalf("object %s carries no database identity", key)
		}
		if id != "" && got != id {
			t.Fatalf("objects of one history carry identities %s and %s", id, got)
		}
		id = got
	}

	// The new machine: restore, the application writes, then replicate.
	for round := 1; round <= 2; round++ {
		newPath := filepath.Join(t.TempDir(), "app.db")
		s2 := otherDBStack(t, s, newPath)
		run := run(t, s.env, "restore", "-o", newPath, s.replicaURLs()[0])
		if run.code != 0 {
			t.Fatalf("restore: exit %d\n%s", run.code, run.stderr)
		}
		app2 := openDB(t, newPath)
		mustExec(t, app2, `INSERT INTO t(v) VALUES (?)`, fmt.Sprintf("restored copy, round %d", round))
		d2 := s2.replicate(t)
		mustExec(t, app2, `INSERT INTO t(v) VALUES ('while replicating')`)
		img := snapshotImage(t, app2)
		s2.waitShipped(t, img)
		if code := d2.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
			t.Fatalf("round %d: replicate of the restored copy: exit code %d", round, code)
		}
		if err := app2.Close(); err != nil {
			t.Fatal(err)
		}
		for key, got := range fileStoreIDs(t, s.fileReplica) {
			if got != id {
				t.Errorf("round %d: object %s carries database identity %q, not the history's %s", round, key, got, id)
			}
		}
		if got := fileChecksum(t, s.restore(t, s.replicaURLs()[0])); got != img.checksum {
			t.Fatalf("round %d: restore gives checksum %s, the restored copy %s", round, got, img.checksum)
		}
	}
}

// oneIdentity checks that every object of a file replica carries the same,
// non-empty database identity (one history), and returns it.
func oneIdentity(t *testing.T, dir string) string {
	t.Helper()
	id := ""
	for key, got := range fileStoreIDs(t, dir) {
		switch {
		case got == "":
			t.Errorf("object %s carries no database identity", key)
		case id == "":
			id = got
		case got != id:
			t.Errorf("object %s carries database identity %s, another object %s: the history changed identity", key, got, id)
		}
	}
	return id
}
