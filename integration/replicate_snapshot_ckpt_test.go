package integration

import (
	"math/rand"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSnapshotsUnderAppTruncateCheckpoints: the daemon reads snapshot
// images straight from the database file (and the WAL) under a read
// transaction (primary/imagefile.go). That is exact only if no checkpoint
// can write to the pages it reads while it reads them. Here the app, in
// another process than the daemon, commits all the time, runs
// wal_checkpoint(TRUNCATE) every few commits, grows the file past its end
// and shrinks it with VACUUM, while the daemon takes a snapshot every
// second. A wrong page read would show as a snapshot whose checksum
// differs from the shipped history ("checksum drifted"), or as a
// snapshot that does not restore; every snapshot must restore with its
// checksums verified and pass integrity_check, and the latest restore
// must equal the app's database.
func TestSnapshotsUnderAppTruncateCheckpoints(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the daemon for several seconds")
	}
	s := newStack(t, false)
	writeFile(t, s.configPath, strings.Replace(mustRead(t, s.configPath), "        sync-interval: 100ms\n",
		"        sync-interval: 100ms\n        snapshot-interval: 1s\n", 1))
	app := openDB(t, s.dbPath)
	mustExec(t, app, `CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)`)
	for i := 0; i < 1500; i++ {
		mustExec(t, app, `INSERT INTO t (v) VALUES (randomblob(2000))`)
	}
	mustExec(t, app, `PRAGMA wal_checkpoint(TRUNCATE)`)
	d := s.replicate(t)

	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	// Until the daemon has taken several snapshots while the app writes
	// (the bound only guards against a hang: a loaded machine takes
	// fewer snapshots a second).
	snapDir := filepath.Join(s.fileReplica, "ltx", "9")
	hang := time.Now().Add(3 * time.Minute)
	commits, truncates, vacuums := 0, 0, 0
	for commits < 300 || len(levelRanges(t, snapDir)) < 5 {
		if time.Now().After(hang) {
			t.Fatalf("after %d commits, %d snapshots in the replica; want 5\n%s", commits, len(levelRanges(t, snapDir)), tailLines(d.out.String(), 30))
		}
		switch k := rng.Intn(100); {
		case k < 60:
			mustExec(t, app, `UPDATE t SET v = randomblob(2000) WHERE id = ?`, 1+rng.Intn(1500))
		case k < 90:
			mustExec(t, app, `INSERT INTO t (v) VALUES (randomblob(3000))`)
		case k < 99:
			mustExec(t, app, `DELETE FROM t WHERE id IN (SELECT id FROM t ORDER BY random() LIMIT 20)`)
		default:
			// VACUUM rewrites every page into the WAL; the checkpoint
			// that follows shrinks the database file.
			mustExec(t, app, `VACUUM`)
			vacuums++
		}
		commits++
		if commits%15 == 0 {
			var busy, log, done int
			if err := app.QueryRow(`PRAGMA wal_checkpoint(TRUNCATE)`).Scan(&busy, &log, &done); err != nil {
				t.Fatalf("app checkpoint: %v", err)
			}
			if busy == 0 {
				truncates++
			}
		}
	}
	if vacuums == 0 {
		mustExec(t, app, `VACUUM`)
		vacuums++
	}
	want := snapshotImage(t, app)
	s.waitShipped(t, want)
	if code := d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("replicate exit code after SIGTERM = %d\n%s", code, tailLines(d.out.String(), 30))
	}
	logs := d.out.String()
	t.Logf("%d commits, %d TRUNCATE checkpoints done (not busy), %d VACUUMs; %d snapshots written",
		commits, truncates, vacuums, strings.Count(logs, "wrote snapshot"))
	if strings.Contains(logs, "checksum drifted") {
		t.Fatalf("a snapshot image differed from the shipped history:\n%s", tailLines(logs, 40))
	}

	snaps := levelRanges(t, snapDir)
	for _, r := range snaps {
		out := s.restore(t, s.replicaURLs()[0], "-txid", hex16(r[1]))
		integrityCheck(t, out)
	}
	out := s.restore(t, s.replicaURLs()[0])
	if got := fileChecksum(t, out); got != want.checksum {
		t.Fatalf("restore: checksum %s, app %s", got, want.checksum)
	}
}
