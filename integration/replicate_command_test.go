package integration

import (
	"database/sql"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/superfly/ltx"
	"github.com/understudy-db/understudy/integration/harness"
)

// The command contract of `understudy replicate` (issue 3, "Command"),
// proven through the binary: several databases and replicas in one process,
// a failing replica that holds back nobody, -exec, and the signals.

// TestReplicateSeveralDBs: one process replicates two databases, each to a
// file replica and to an S3 replica behind a proxy. While the S3 endpoint is
// cut off, both file replicas keep shipping every commit; once it is back,
// the S3 replicas catch up; SIGTERM then exits 0 with every replica equal to
// its database. The process stays up throughout.
func TestReplicateSeveralDBs(t *testing.T) {
	// newStack's S3 server, bucket, credentials and addr; the config is
	// this test's own: two databases, the S3 endpoint behind a proxy.
	s := newStack(t, true)
	tp := harness.StartToxiproxy(t)
	proxy := tp.NewProxy(t, "s3", s.s3.Addr)
	names := []string{"a", "b"}
	cfg := "addr: " + s.addr + "\ndbs:\n"
	var fileURLs, s3URLs []string
	for _, n := range names {
		fileDir := filepath.Join(s.dir, "replica-"+n)
		cfg += fmt.Sprintf(`  - path: %s
    replicas:
      - name: file
        url: file://%s
        sync-interval: 100ms
      - name: s3
        type: s3
        bucket: %s
        path: %s
        endpoint: http://%s
        region: us-east-1
        force-path-style: true
        access-key-id: ${TEST_S3_KEY}
        secret-access-key: ${TEST_S3_SECRET}
        sync-interval: 100ms
`, filepath.Join(s.dir, n+".db"), fileDir, s.bucket, n, proxy.Listen)
		fileURLs = append(fileURLs, "file://"+fileDir)
		// Restores read the server directly, not through the proxy.
		s3URLs = append(s3URLs, fmt.Sprintf("s3://%s/%s?endpoint=%s&region=us-east-1&force-path-style=true", s.bucket, n, s.s3.Endpoint))
	}
	writeFile(t, s.configPath, cfg)

	var apps []*sql.DB
	var writers []*writer
	for i, n := range names {
		app := openDB(t, filepath.Join(s.dir, n+".db"))
		apps = append(apps, app)
		writers = append(writers, startWriter(t, app, int64(10+i)))
	}
	d := s.replicate(t)
	alive := func(when string) {
		t.Helper()
		if d.exited() {
			t.Fatalf("replicate exited %s:\n%s", when, tailLines(d.out.String(), 40))
		}
	}
	// hold pauses every writer and returns the databases' images; release
	// lets them go on.
	hold := func() []image {
		var imgs []image
		for i, w := range writers {
			w.pause.Lock()
			imgs = append(imgs, snapshotImage(t, apps[i]))
		}
		return imgs
	}
	release := func() {
		for _, w := range writers {
			w.pause.Unlock()
		}
	}

	time.Sleep(time.Second)
	before := waitReplicasAt(t, s, hold())
	release()
	alive("before the S3 endpoint was cut")

	if err := proxy.SetEnabled(false); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	cut := hold()
	txids := waitReplicasAt(t, s, cut, "file")
	st, err := s.status()
	if err != nil {
		t.Fatal(err)
	}
	for i := range names {
		if txids[i] <= before[i] {
			t.Fatalf("db %s: the file replica did not advance while S3 was cut off (TXID %s, %s before the cut)", names[i], txids[i], before[i])
		}
		for _, r := range st.DBs[i].Replicas {
			if r.Name == "s3" && r.TXID >= txids[i] {
				t.Fatalf("db %s: the S3 replica is at TXID %s while its endpoint is cut off, the file replica at %s: the cut did not take", names[i], r.TXID, txids[i])
			}
		}
		out := s.restore(t, fileURLs[i])
		if got := fileChecksum(t, out); got != cut[i].checksum {
			t.Errorf("db %s: restore of its file replica while S3 was down: checksum %s, database %s", names[i], got, cut[i].checksum)
		}
	}
	release()
	alive("while the S3 endpoint was cut off")

	if err := proxy.SetEnabled(true); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	for _, w := range writers {
		w.halt(t)
		if w.n < 50 {
			t.Errorf("a writer made only %d transactions", w.n)
		}
	}
	var final []image
	for _, app := range apps {
		final = append(final, snapshotImage(t, app))
	}
	finalTXIDs := waitReplicasAt(t, s, final)
	alive("after the S3 endpoint came back")
	if code := d.stop(t, syscall.SIGTERM, time.Minute); code != 0 {
		t.Fatalf("SIGTERM: exit code %d, want 0:\n%s", code, tailLines(d.out.String(), 40))
	}
	for i := range names {
		t.Logf("db %s: %d transactions, cut at TXID %s, final TXID %s", names[i], writers[i].n, txids[i], finalTXIDs[i])
		out := s.restore(t, s3URLs[i])
		if got := fileChecksum(t, out); got != final[i].checksum {
			t.Errorf("db %s: restore of its S3 replica: checksum %s, database %s", names[i], got, final[i].checksum)
		}
		integrityCheck(t, out)
	}
}

// waitReplicasAt waits until each database i of the daemon's /status holds
// want[i] and every replica named in only (all when none is named) is at its
// database's TXID with that checksum; it returns the databases' TXIDs.
func waitReplicasAt(t *testing.T, s *stack, want []image, only ...string) []ltx.TXID {
	t.Helper()
	return waitReplicasWithin(t, s, 30*time.Second, want, only...)
}

// waitReplicasWithin is waitReplicasAt with a bound of its own (a first
// snapshot of a large database takes longer than 30 s on a loaded machine).
func waitReplicasWithin(t *testing.T, s *stack, timeout time.Duration, want []image, only ...string) []ltx.TXID {
	t.Helper()
	var last primaryStatus
	var lastErr error
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		last, lastErr = s.status()
		if lastErr == nil && len(last.DBs) == len(want) {
			txids := make([]ltx.TXID, len(want))
			ok := true
			for i, db := range last.DBs {
				ok = ok && db.TXID != 0 && db.Checksum == want[i].checksum
				for _, r := range db.Replicas {
					if len(only) > 0 && !slices.Contains(only, r.Name) {
						continue
					}
					ok = ok && r.TXID == db.TXID && r.Checksum == want[i].checksum
				}
				txids[i] = db.TXID
			}
			if ok {
				return txids
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("replicas %v did not reach the databases' checksums within %s; last status %+v (error %v)", only, timeout, last, lastErr)
	return nil
}

// The application -exec runs in TestReplicateExec is this test binary
// itself: with execAppEnv set, TestExecApp is the application (it does what
// the variable says and exits) instead of a test.
const (
	execAppEnv   = "UNDERSTUDY_TEST_EXEC_APP" // "commit" or "serve"
	execAppDB    = "UNDERSTUDY_TEST_EXEC_APP_DB"
	execAppDir   = "UNDERSTUDY_TEST_EXEC_APP_DIR" // where "ready" and "signal" are written
	execAppRows  = 200                            // rows "commit" inserts
	execAppExit  = 3                              // "commit"'s exit status
	lastRowValue = "last"
)

// TestExecApp is the application of TestReplicateExec (see execAppEnv):
//   - commit: inserts execAppRows rows, one transaction each, the last one
//     with the value "last", and exits execAppExit at once;
//   - serve: inserts a row every few milliseconds (writing dir/ready after
//     the first) until SIGTERM or SIGINT; then it inserts "last", writes
//     the signal's name to dir/signal and exits 0.
func TestExecApp(t *testing.T) {
	mode := os.Getenv(execAppEnv)
	if mode == "" {
		t.Skip("the application of TestReplicateExec; runs only as its child")
	}
	db := openDB(t, os.Getenv(execAppDB))
	dir := os.Getenv(execAppDir)
	insert := func(v string) {
		if _, err := db.Exec(`INSERT INTO log(v) VALUES (?)`, v); err != nil {
			fmt.Fprintf(os.Stderr, "test app: insert: %v\n", err)
			os.Exit(100)
		}
	}
	switch mode {
	case "commit":
		for i := 1; i < execAppRows; i++ {
			insert(fmt.Sprintf("row %d", i))
		}
		insert(lastRowValue)
		db.Close()
		os.Exit(execAppExit)
	case "serve":
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
		for i := 1; ; i++ {
			select {
			case sig := <-sigs:
				insert(lastRowValue)
				db.Close()
				writeFile(t, filepath.Join(dir, "signal"), sig.String())
				os.Exit(0)
			case <-time.After(3 * time.Millisecond):
			}
			insert(fmt.Sprintf("row %d", i))
			if i == 1 {
				writeFile(t, filepath.Join(dir, "ready"), "ready")
			}
		}
	default:
		fmt.Fprintf(os.Stderr, "test app: unknown mode %q\n", mode)
		os.Exit(101)
	}
}

// execAppArgs are the arguments that run TestExecApp; execApp is them as
// the -exec command line.
func execAppArgs(t *testing.T) []string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return []string{self, "-test.run=^TestExecApp$"}
}

func execApp(t *testing.T) string {
	args := execAppArgs(t)
	return "'" + args[0] + "' " + args[1]
}

// endLeftovers registers a cleanup that SIGKILLs the processes running
// cmdline (the application's), should one outlive replicate because a
// signal did not reach it: it would hold replicate's output open and keep
// the test waiting. Register it after start, so that it runs first.
func endLeftovers(t *testing.T, cmdline string) {
	t.Cleanup(func() {
		for _, pid := range processesRunning(t, cmdline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
}

// TestReplicateExec: `replicate -exec` runs the application as its child,
// ships what it committed up to its last transaction once it exits, and
// exits with its status; a SIGTERM to replicate reaches the application,
// which shuts down in its own time.
func TestReplicateExec(t *testing.T) {
	// A long sync interval: only the final sync can ship the application's
	// last commits in time.
	newExecStack := func(t *testing.T) (*stack, *sql.DB) {
		s := newStack(t, false)
		writeFile(t, s.configPath, strings.Replace(mustRead(t, s.configPath), "sync-interval: 100ms", "sync-interval: 1m", 1))
		db := openDB(t, s.dbPath)
		mustExec(t, db, `CREATE TABLE log (id INTEGER PRIMARY KEY, v TEXT)`)
		return s, db
	}
	appEnv := func(s *stack, mode string) []string {
		return append(s.env, execAppEnv+"="+mode, execAppDB+"="+s.dbPath, execAppDir+"="+s.dir)
	}
	// checkRestore: a restore equals the database, which holds want rows
	// and the application's last one.
	checkRestore := func(t *testing.T, s *stack, db *sql.DB, want int) {
		t.Helper()
		img := snapshotImage(t, db)
		out := s.restore(t, s.replicaURLs()[0])
		if got := fileChecksum(t, out); got != img.checksum {
			t.Errorf("restore checksum %s, database %s", got, img.checksum)
		}
		restored := openDB(t, out)
		var n, last int
		if err := restored.QueryRow(`SELECT count(*), count(*) FILTER (WHERE v = ?) FROM log`, lastRowValue).Scan(&n, &last); err != nil {
			t.Fatal(err)
		}
		if last != 1 || (want > 0 && n != want) {
			t.Errorf("restore holds %d rows (want %d; 0: any), %d with the application's last commit (want 1)", n, want, last)
		}
	}

	t.Run("app exits", func(t *testing.T) {
		s, db := newExecStack(t)
		d := start(t, appEnv(s, "commit"), "replicate", "-config", s.configPath, "-exec", execApp(t))
		if code := d.wait(t, time.Minute); code != execAppExit {
			t.Fatalf("replicate exited %d, want the application's %d:\n%s", code, execAppExit, tailLines(d.out.String(), 30))
		}
		checkRestore(t, s, db, execAppRows)
	})

	t.Run("SIGTERM to replicate", func(t *testing.T) {
		s, db := newExecStack(t)
		d := start(t, appEnv(s, "serve"), "replicate", "-config", s.configPath, "-exec", execApp(t))
		endLeftovers(t, strings.Join(execAppArgs(t), " "))
		eventually(t, 30*time.Second, "the application to commit", func() bool {
			_, err := os.Stat(filepath.Join(s.dir, "ready"))
			return err == nil || d.exited()
		})
		time.Sleep(300 * time.Millisecond)
		code := d.stop(t, syscall.SIGTERM, 30*time.Second)
		got, err := os.ReadFile(filepath.Join(s.dir, "signal"))
		if err != nil || string(got) != syscall.SIGTERM.String() {
			t.Errorf("the application did not record a SIGTERM (%q, %v): the signal did not reach it", got, err)
		}
		if code != 0 {
			t.Fatalf("replicate exited %d, want the application's 0:\n%s", code, tailLines(d.out.String(), 30))
		}
		checkRestore(t, s, db, 0)
	})

	t.Run("app killed by the forwarded signal", func(t *testing.T) {
		// A plain program that does not handle SIGTERM dies of it; the exit
		// status says so the way a shell does (128 + the signal number).
		s, _ := newExecStack(t)
		const app = "sleep 37.25" // a command line no other process has
		d := start(t, s.env, "replicate", "-config", s.configPath, "-exec", app)
		endLeftovers(t, app)
		eventually(t, 30*time.Second, "the application to start", func() bool {
			return strings.Contains(d.out.String(), "started application") || d.exited()
		})
		code := d.stop(t, syscall.SIGTERM, 30*time.Second)
		if want := 128 + int(syscall.SIGTERM); code != want {
			t.Errorf("replicate exited %d, want %d (the application killed by SIGTERM):\n%s",
				code, want, tailLines(d.out.String(), 30))
		}
		if pids := processesRunning(t, app); len(pids) > 0 {
			t.Errorf("the application outlived replicate (pids %v): the signal did not reach it", pids)
		}
	})
}

// processesRunning lists the pids of this user's processes whose command
// line is cmdline.
func processesRunning(t *testing.T, cmdline string) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if strings.Join(strings.Split(strings.TrimRight(string(b), "\x00"), "\x00"), " ") == cmdline {
			pids = append(pids, pid)
		}
	}
	return pids
}

// TestReplicateSIGINTShipsLastCommit: a SIGINT right after a commit ships
// it before replicate exits 0. The sync interval is long, so only the
// shutdown's sync can have shipped it.
func TestReplicateSIGINTShipsLastCommit(t *testing.T) {
	s := newStack(t, false)
	writeFile(t, s.configPath, strings.Replace(mustRead(t, s.configPath), "sync-interval: 100ms", "sync-interval: 1m", 1))
	db := openDB(t, s.dbPath)
	mustExec(t, db, `CREATE TABLE log (id INTEGER PRIMARY KEY, v TEXT)`)
	d := s.replicate(t)
	s.waitShipped(t, snapshotImage(t, db))
	mustExec(t, db, `INSERT INTO log(v) VALUES (?)`, lastRowValue)
	img := snapshotImage(t, db)
	if code := d.stop(t, syscall.SIGINT, time.Minute); code != 0 {
		t.Fatalf("SIGINT: exit code %d, want 0:\n%s", code, tailLines(d.out.String(), 30))
	}
	out := s.restore(t, s.replicaURLs()[0])
	if got := fileChecksum(t, out); got != img.checksum {
		t.Fatalf("restore after SIGINT: checksum %s, database %s (the last commit was not shipped)", got, img.checksum)
	}
}
