package integration

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/understudy-db/understudy/integration/harness"
)

// holdsReadMark0 reports whether process pid holds a read lock on the
// WAL_READ_LOCK(0) byte of the -shm file with inode ino (/proc/locks): a
// reader of a fully checkpointed WAL, such as a shipper's pin taken then.
func holdsReadMark0(t *testing.T, pid int, ino uint64) bool {
	t.Helper()
	f, err := os.Open("/proc/locks")
	if err != nil {
		t.Skipf("no /proc/locks: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fl := strings.Fields(sc.Text())
		if len(fl) >= 8 && fl[1] != "->" && fl[3] == "READ" && fl[4] == fmt.Sprint(pid) &&
			strings.HasSuffix(fl[5], fmt.Sprintf(":%d", ino)) && fl[6] == "123" {
			return true
		}
	}
	return false
}

// TestReplicateKillResumesFromWAL: the daemon is killed (kill -9) while the
// application writes; the application writes more while it is down and
// checkpoints every frame back (no restart yet). At the restart the
// shipper's pin holds read mark 0, and the application's next write
// restarts the WAL while the shipper reads the database image. The WAL
// held every frame since the last position when the shipper captured it,
// so the restart must resume with those frames as one TXID: no full image
// (no new level-9 snapshot, no "wrote full image"), and a restore equals
// the application's database. The shipper used to look at the WAL again
// after the image and, finding it restarted, upload the whole image.
func TestReplicateKillResumesFromWAL(t *testing.T) {
	s := newStack(t, false)
	app := openDB(t, s.dbPath)
	mustExec(t, app, `PRAGMA wal_autocheckpoint=0`) // no restart while the daemon is down
	mustExec(t, app, `CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)`)
	for i := 0; i < 10; i++ { // ~16 MB: the image read takes a while
		mustExec(t, app, `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 400) INSERT INTO t(v) SELECT randomblob(4000) FROM n`)
	}
	d := s.replicate(t)
	s.waitShipped(t, snapshotImage(t, app))
	l9 := filepath.Join(s.fileReplica, "ltx", "9")
	// The first start's full image goes to level 9 too, after its L0 file.
	eventually(t, 30*time.Second, "the first snapshot", func() bool { return countFiles(t, l9) == 1 })
	snapshots := countFiles(t, l9)
	for i := 0; i < 30; i++ {
		mustExec(t, app, `UPDATE t SET v = randomblob(4000) WHERE id = ?`, 1+i*97)
	}
	d.kill()
	for i := 0; i < 30; i++ {
		mustExec(t, app, `UPDATE t SET v = randomblob(4000) WHERE id = ?`, 7+i*89)
	}
	mustExec(t, app, `PRAGMA wal_checkpoint(PASSIVE)`) // every frame back; the next write restarts the WAL

	st, err := os.Stat(s.dbPath + "-shm")
	if err != nil {
		t.Fatal(err)
	}
	shmIno := st.Sys().(*syscall.Stat_t).Ino
	d = s.replicate(t)
	pid := d.cmd.Process.Pid
	// Wait for the pin (held through the image read; a transient read
	// lock of a statement is not seen twice 5 ms apart), then write.
	deadline := time.Now().Add(60 * time.Second)
	for seen := 0; seen < 2 && time.Now().Before(deadline) && !d.exited(); {
		if holdsReadMark0(t, pid, shmIno) {
			seen++
			time.Sleep(5 * time.Millisecond)
		} else {
			seen = 0
			time.Sleep(time.Millisecond)
		}
	}
	mustExec(t, app, `UPDATE t SET v = randomblob(4000) WHERE id = 3`) // restarts the WAL
	img := snapshotImage(t, app)
	s.waitShipped(t, img)
	if code := d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	out := d.out.String()
	if !strings.Contains(out, `decision="ship WAL since last position"`) {
		t.Errorf("the restart did not resume from the WAL:\n%s", grepLines(out, "decision="))
	}
	if strings.Contains(out, "wrote full image") {
		t.Errorf("the restart wrote a full image:\n%s", grepLines(out, "full"))
	}
	if got := countFiles(t, l9); got != snapshots {
		t.Errorf("%d level-9 snapshots after the restart, %d before: the restart uploaded the whole image", got, snapshots)
	}
	if got := fileChecksum(t, s.restore(t, s.replicaURLs()[0])); got != img.checksum {
		t.Fatalf("restore checksum %s, the application's %s", got, img.checksum)
	}
}

// TestReplicateFullImageNotCountedInShadowBound: a full image is as large
// as the database; it must not count against max-shadow-size. Here the
// bound is 1 MiB, the first full image 4 MB, and the store takes ~16 s to
// receive it (bandwidth toxic) while the application commits: the shadow
// directory keeps the small L0 files that follow, and no replica is
// declared "too far behind" (the image used up the bound at once, so the
// next syncs dropped it and the replica that was still uploading it was
// warned about with behind_for=0s and needed a second full upload).
func TestReplicateFullImageNotCountedInShadowBound(t *testing.T) {
	p := newProxiedStack(t, "100ms", "max-shadow-size: 1MiB")
	app := openDB(t, p.dbPath)
	mustExec(t, app, `CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)`)
	mustExec(t, app, `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 1000) INSERT INTO t(v) SELECT randomblob(4000) FROM n`)
	if err := p.proxy.AddToxic(harness.Toxic{Name: "slow-upload", Type: "bandwidth", Stream: "upstream",
		Attributes: map[string]any{"rate": 256}}); err != nil { // KB/s
		t.Fatal(err)
	}
	d := p.replicate(t)
	var st primaryStatus
	eventually(t, 60*time.Second, "the full image to be written", func() bool {
		var err error
		st, err = p.status()
		return err == nil && len(st.DBs) == 1 && st.DBs[0].TXID >= 1
	})
	for i := 0; i < 10; i++ {
		mustExec(t, app, `UPDATE t SET v = randomblob(4000) WHERE id = ?`, 1+i*50)
		time.Sleep(150 * time.Millisecond) // one sync interval and more: one L0 file each
	}
	st, err := p.status()
	if err != nil {
		t.Fatal(err)
	}
	if st.DBs[0].Replicas[0].TXID != 0 {
		t.Fatalf("the store got the full image before the application's next commits (replica at TXID %s): the test does not test what it says",
			st.DBs[0].Replicas[0].TXID)
	}
	if err := p.proxy.RemoveToxic("slow-upload"); err != nil {
		t.Fatal(err)
	}
	img := snapshotImage(t, app)
	p.waitShipped(t, img)
	if out := d.out.String(); strings.Contains(out, "too far behind") || strings.Contains(out, "needs a snapshot") {
		t.Errorf("local files were dropped while the full image uploaded:\n%s", grepLines(out, "behind"))
	}
	if code := d.stop(t, syscall.SIGTERM, 60*time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	if got := fileChecksum(t, p.restore(t, p.direct)); got != img.checksum {
		t.Fatalf("restore checksum %s, the application's %s", got, img.checksum)
	}
}
