package integration

import (
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// linkedStack is a stack whose configured database path leads through a
// symbolic link: to the database file itself ("file"), or to the directory
// holding it ("dir"). It returns the stack, the configured path and the
// file it resolves to.
func linkedStack(t *testing.T, kind string) (*stack, string, string) {
	t.Helper()
	s := newStack(t, false)
	data := filepath.Join(s.dir, "data")
	if err := os.Mkdir(data, 0o755); err != nil {
		t.Fatal(err)
	}
	real := filepath.Join(data, "app.db")
	switch kind {
	case "file":
		// The config's path, s.dbPath, is the link.
		if err := os.Symlink("data/app.db", s.dbPath); err != nil {
			t.Fatal(err)
		}
	case "dir":
		if err := os.Symlink("data", filepath.Join(s.dir, "current")); err != nil {
			t.Fatal(err)
		}
		linked := filepath.Join(s.dir, "current", "app.db")
		writeFile(t, s.configPath, strings.Replace(mustRead(t, s.configPath), s.dbPath, linked, 1))
		s.dbPath = linked
	}
	return s, s.dbPath, real
}

func countRows(t testing.TB, path, table string) int {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM ` + table).Scan(&n); err != nil {
		t.Fatalf("count rows of %s in %s: %v", table, path, err)
	}
	return n
}

// TestReplicateSymlinkedPath: the database path (in the config) leads
// through a symbolic link, to the file or to its directory, and the
// application writes through it. SQLite keeps "-wal" beside the file the
// link resolves to: every commit must be shipped (the daemon read "-wal"
// beside the link and shipped nothing after the first snapshot, while
// /status and SIGTERM said everything was shipped), a second daemon
// started on the real path must find the database's lock taken, the log
// must name both paths, and a link that is changed to another file while
// the daemon runs must stop it (non-zero) instead of being followed or
// ignored silently.
func TestReplicateSymlinkedPath(t *testing.T) {
	for _, kind := range []string{"file", "dir"} {
		t.Run(kind, func(t *testing.T) {
			s, linked, real := linkedStack(t, kind)
			app := openDB(t, linked)
			mustExec(t, app, `CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)`)
			d := s.replicate(t)
			s.waitShipped(t, snapshotImage(t, app))
			const commits = 50
			for i := 0; i < commits; i++ {
				mustExec(t, app, `INSERT INTO t(v) VALUES (?)`, strings.Repeat("x", 100))
			}
			img := snapshotImage(t, app)
			s.waitShipped(t, img)
			if _, err := os.Stat(real + "-wal"); err != nil {
				t.Fatalf("the application's WAL is not beside the real file: %v", err)
			}

			// A second daemon on the same file through its real path.
			second := start(t, nil, "replicate", real, "file://"+filepath.Join(s.dir, "replica2"))
			if code := second.wait(t, 30*time.Second); code == 0 {
				t.Fatalf("a second daemon on %s (the file %s leads to) was not refused", real, linked)
			}
			if out := second.out.String(); !strings.Contains(out, "already replicating") {
				t.Errorf("second daemon's output does not say the database is being replicated already:\n%s", tailLines(out, 10))
			}

			if code := d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
				t.Fatalf("replicate exit code after SIGTERM = %d", code)
			}
			out := d.out.String()
			if !strings.Contains(out, "real_path="+real) || !strings.Contains(out, "path="+linked) {
				t.Errorf("the log does not name both the configured path %s and the real path %s:\n%s", linked, real, tailLines(out, 20))
			}
			restored := s.restore(t, s.replicaURLs()[0])
			if got := fileChecksum(t, restored); got != img.checksum {
				t.Errorf("restore checksum %s, primary %s", got, img.checksum)
			}
			if n := countRows(t, restored, "t"); n != commits {
				t.Errorf("restored %d rows, the application committed %d", n, commits)
			}

			if kind != "file" {
				return
			}
			// The link is pointed at another database while the daemon runs.
			d = s.replicate(t)
			s.waitShipped(t, img)
			other := filepath.Join(s.dir, "data", "other.db")
			makeDB(t, other)
			tmpLink := s.dbPath + ".new"
			if err := os.Symlink("data/other.db", tmpLink); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmpLink, s.dbPath); err != nil {
				t.Fatal(err)
			}
			mustExec(t, app, `INSERT INTO t(v) VALUES ('after the link moved')`) // wakes the shipper
			if code := d.wait(t, 30*time.Second); code == 0 {
				t.Fatalf("replicate exited 0 after its database link was changed")
			}
			if out := d.out.String(); !strings.Contains(out, "symbolic link changed") || !strings.Contains(out, other) {
				t.Errorf("the daemon's output does not say the link changed and to what:\n%s", tailLines(out, 10))
			}
		})
	}
}
