package integration

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// exclusiveApp is python3's sqlite3 as an application that sets PRAGMA
// locking_mode=EXCLUSIVE and then inserts a row every 50 ms until killed,
// printing "ready" once it has its connection and each error's message.
const exclusiveApp = `
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], timeout=0.5, isolation_level=None)
db.execute("pragma locking_mode=exclusive")
if sys.argv[2] == "create":
    db.execute("pragma journal_mode=wal")
    db.execute("create table if not exists t(x)")
    db.execute("insert into t values (1)")
print("ready", flush=True)
while True:
    try:
        db.execute("insert into t values (1)")
    except Exception as e:
        print("error:", e, flush=True)
    time.sleep(0.05)
`

// startExclusiveApp starts exclusiveApp on path and waits for "ready"; it
// returns the process and its output lines.
func startExclusiveApp(t *testing.T, path, mode string) (*exec.Cmd, <-chan string) {
	t.Helper()
	script := filepath.Join(t.TempDir(), "exclusive_app.py")
	writeFile(t, script, exclusiveApp)
	cmd := exec.Command("python3", script, path, mode)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Skipf("python3 is needed for this test: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
		close(lines)
	}()
	select {
	case l := <-lines:
		if l != "ready" {
			t.Fatalf("exclusive-mode app: %q", l)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("exclusive-mode app did not start")
	}
	return cmd, lines
}

// healthzBody returns the daemon's /healthz status code and body.
func healthzBody(addr string) (int, string, error) {
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// TestReplicateExclusiveLockingApp: an application with PRAGMA
// locking_mode=EXCLUSIVE. Started first, it holds the database for good:
// replicate must fail naming the process and the pragma to change (it said
// "cannot open ... database is locked"). Started after the daemon, every
// one of its writes fails: the daemon must say why in its log and turn
// /healthz unhealthy naming the pragma (it logged nothing and stayed
// healthy), and be healthy again once the application is gone.
func TestReplicateExclusiveLockingApp(t *testing.T) {
	t.Run("app first", func(t *testing.T) {
		dir := t.TempDir()
		db := filepath.Join(dir, "app.db")
		app, _ := startExclusiveApp(t, db, "create")
		res := run(t, nil, "replicate", db, "file://"+filepath.Join(dir, "replica"))
		if res.code == 0 {
			t.Fatal("replicate exited 0 on a database held in exclusive locking mode")
		}
		wantAll(t, res.stderr, db, "exclusive locking mode", fmt.Sprintf("process %d (python3)", app.Process.Pid),
			"PRAGMA locking_mode=NORMAL", "remove PRAGMA locking_mode=EXCLUSIVE")
	})
	t.Run("daemon first", func(t *testing.T) {
		s := newStack(t, false)
		makeDB(t, s.dbPath)
		d := s.replicate(t)
		eventually(t, 30*time.Second, "the daemon to be healthy", func() bool {
			code, _, err := healthzBody(s.addr)
			return err == nil && code == http.StatusOK
		})
		app, lines := startExclusiveApp(t, s.dbPath, "")
		select {
		case l := <-lines:
			if !strings.Contains(l, "database is locked") {
				t.Fatalf("the exclusive-mode app's write: %q, want database is locked", l)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("the exclusive-mode app's writes did not fail: the test does not test what it says")
		}
		var body string
		eventually(t, 30*time.Second, "/healthz to fail naming the pragma", func() bool {
			code, b, err := healthzBody(s.addr)
			body = b
			return err == nil && code != http.StatusOK && strings.Contains(b, "locking_mode=EXCLUSIVE")
		})
		wantAll(t, body, fmt.Sprintf("process %d (python3)", app.Process.Pid), "exclusive locking mode")
		wantAll(t, d.out.String(), "[ERROR]", "exclusive locking mode", "PRAGMA locking_mode=NORMAL")

		_ = app.Process.Kill()
		_ = app.Wait()
		eventually(t, 30*time.Second, "/healthz to recover once the application is gone", func() bool {
			code, _, err := healthzBody(s.addr)
			return err == nil && code == http.StatusOK
		})
	})
}
