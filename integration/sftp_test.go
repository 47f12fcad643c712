package integration

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/understudy-db/understudy/integration/harness"
)

// sftpStack is a primary shipping to one SFTP replica on a real sshd, and a
// home directory whose ~/.ssh holds the login key and known_hosts, for the
// commands given only the replica URL.
type sftpStack struct {
	*stack
	sshd *harness.SSHServer
	dir  string // the replica's directory on the server
	url  string
	home string
}

func newSFTPStack(t *testing.T) *sftpStack {
	t.Helper()
	sshd := harness.StartSSHD(t)
	dir := t.TempDir()
	s := &sftpStack{
		stack: &stack{
			dir:        dir,
			dbPath:     filepath.Join(dir, "app.db"),
			addr:       fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t)),
			configPath: filepath.Join(dir, "understudy.yml"),
		},
		sshd: sshd,
		dir:  sshd.NewDir(t),
		home: filepath.Join(dir, "home"),
	}
	s.url = sshd.URL(s.dir)
	writeFile(t, s.configPath, fmt.Sprintf(`addr: %s
dbs:
  - path: %s
    replicas:
      - name: sftp
        url: %s
        key-path: %s
        known-hosts-path: %s
        password: ${TEST_SFTP_PASSWORD}
        sync-interval: 100ms
`, s.addr, s.dbPath, s.url, sshd.KeyPath, sshd.KnownHostsPath))
	sshd.WriteSSHDir(t, s.home)
	// The key logs in; the password (which this sshd does not take) is
	// there to show that it never reaches a log.
	s.env = []string{"HOME=" + s.home, "TEST_SFTP_PASSWORD=" + sftpTestPassword}
	return s
}

const sftpTestPassword = "sftp-test-password-do-not-print"

// TestSFTPReplicateRestoreFollow ships a changing database to an SFTP
// replica on OpenSSH's sshd, follows it by URL while it changes, and
// restores it: the follower ends at the primary's checksum and the restore
// is byte-identical to the primary's pages. The files are Litestream's
// layout on the server.
func TestSFTPReplicateRestoreFollow(t *testing.T) {
	s := newSFTPStack(t)
	app := openDB(t, s.dbPath)
	w := startWriter(t, app, 7)
	d := s.replicate(t, "-log-level", "debug")
	time.Sleep(500 * time.Millisecond)

	localPath := filepath.Join(t.TempDir(), "follower.db")
	f := startFollow(t, s.env, s.url, localPath, 100*time.Millisecond)
	f.waitFollowing(t)
	time.Sleep(time.Second) // the follower applies while the primary ships
	w.halt(t)
	if w.err != nil {
		t.Fatal(w.err)
	}
	final := snapshotImage(t, app)
	txid := s.waitShipped(t, final)
	st := f.waitAt(t, txid, final.checksum)
	if code := d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("replicate exit code after SIGTERM = %d\n%s", code, tailLines(d.out.String(), 30))
	}
	t.Logf("%d transactions, TXID %s, follower applied %d files", w.n, txid, st.Applied)
	if log := d.out.String(); strings.Contains(log, sftpTestPassword) || !strings.Contains(log, "password: REDACTED") {
		t.Errorf("the daemon's debug log shows the password, or not its redacted form:\n%s", tailLines(log, 40))
	}

	out := s.restore(t, s.url)
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if want := bytes.Join(final.pages, nil); !bytes.Equal(got, want) {
		t.Fatalf("restore: %d bytes that differ from the primary's %d", len(got), len(want))
	}
	integrityCheck(t, out)
	if got := localChecksum(t, localPath); got != final.checksum {
		t.Errorf("follower's checksum %s, primary %s", got, final.checksum)
	}
	if n := countFiles(t, filepath.Join(s.dir, "ltx", "0")); n == 0 {
		t.Errorf("no L0 files under %s/ltx/0 on the server", s.dir)
	}
}

// TestSFTPUnknownHostRefused: a restore from a server whose host key is not
// in known_hosts fails with an error naming the host and the file, and
// writes nothing.
func TestSFTPUnknownHostRefused(t *testing.T) {
	s := newSFTPStack(t)
	known := filepath.Join(s.home, ".ssh", "known_hosts")
	writeFile(t, known, "")
	out := filepath.Join(t.TempDir(), "restored.db")
	res := run(t, s.env, "restore", "-o", out, s.url)
	if res.code == 0 {
		t.Fatalf("restore from an unknown host succeeded:\n%s", res.stderr)
	}
	for _, want := range []string{"host " + s.sshd.Addr + " is unknown", known, "ssh-keyscan"} {
		if !strings.Contains(res.stderr, want) {
			t.Errorf("stderr does not contain %q:\n%s", want, res.stderr)
		}
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("restore left %s: %v", out, err)
	}
}

// TestSFTPSecondWriterFenced: a restored copy of the database (same
// history) replicating into the same SFTP directory while the primary still
// runs: both write, and the next TXID can be created by one of them only, so
// one daemon is fenced and stops, and no object on the server is ever
// overwritten (the hard-link create-only of the store, end to end).
func TestSFTPSecondWriterFenced(t *testing.T) {
	s := newSFTPStack(t)
	app := openDB(t, s.dbPath)
	w := startWriter(t, app, 3)
	a := s.replicate(t)
	w.pause.Lock()
	s.waitShipped(t, snapshotImage(t, app))
	w.pause.Unlock()
	ltxDir := filepath.Join(s.dir, "ltx")
	before := treeDigest(t, ltxDir)

	other := s.restore(t, s.url) // carries the history's identity
	otherDB := openDB(t, other)
	w2 := startWriter(t, otherDB, 4)
	b := s.replicateOther(t, other)

	loser := waitOneFenced(t, a, b)
	t.Logf("fenced: %s", grepLines(loser.out.String(), "another writer"))
	if out := loser.out.String(); !strings.Contains(out, "another writer") {
		t.Errorf("fenced daemon's output does not say another writer owns the history:\n%s", tailLines(out, 20))
	}
	w.allowErrors, w2.allowErrors = true, true
	w.halt(t)
	w2.halt(t)
	assertNotOverwritten(t, before, treeDigest(t, ltxDir))
}
