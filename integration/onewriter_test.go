package integration

// Issue 15 A: no write may land where nothing ships it. Applications that
// open a new connection per write (CLI tools, cron jobs, PHP, pools after an
// error) run here as separate processes beside a follower, an old primary
// during a hand-off, and a primary frozen past its lease.

import (
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/understudy-db/understudy/follower"
)

// Intruder processes are this test binary run again with intruderEnvDB set.
const (
	intruderEnvDB     = "UNDERSTUDY_TEST_INTRUDER_DB"
	intruderEnvBusy   = "UNDERSTUDY_TEST_INTRUDER_BUSY_MS"
	intruderEnvTable  = "UNDERSTUDY_TEST_INTRUDER_TABLE"
	intruderResultPfx = "INTRUDER-RESULT "
)

// intruderResult is what one intruder process saw.
type intruderResult struct {
	Tries     int    `json:"tries"`
	Committed int    `json:"committed"` // writes that succeeded: must be 0
	Busy      int    `json:"busy"`      // SQLITE_BUSY / database is locked
	ReadOnly  int    `json:"read_only"` // SQLITE_READONLY
	Missing   int    `json:"missing"`   // the path did not exist (ENOENT)
	Empty     int    `json:"empty"`     // the path was an empty file
	NoTable   int    `json:"no_table"`  // "no such table": a database without the app's schema
	Other     int    `json:"other"`
	Reads     int    `json:"reads"`
	ReadErrs  int    `json:"read_errors"`
	FirstErr  string `json:"first_error,omitempty"`
	FirstOKAt string `json:"first_ok_at,omitempty"`
}

// TestOneWriterIntruderProcess is the body of an intruder process, not a
// test of its own: without intruderEnvDB it skips. Until its stdin closes it
// stats the path, opens a new read-write connection, reads, tries one
// INSERT, and closes the connection, as fast as it can.
func TestOneWriterIntruderProcess(t *testing.T) {
	path := os.Getenv(intruderEnvDB)
	if path == "" {
		t.Skip("intruder process body; run by the one-writer tests")
	}
	busy, _ := strconv.Atoi(os.Getenv(intruderEnvBusy))
	table := os.Getenv(intruderEnvTable)
	stop := make(chan struct{})
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); close(stop) }()
	var res intruderResult
	note := func(err error) {
		if res.FirstErr == "" {
			res.FirstErr = err.Error()
		}
	}
	for {
		select {
		case <-stop:
			b, _ := json.Marshal(res)
			fmt.Println(intruderResultPfx + string(b))
			return
		default:
		}
		res.Tries++
		if st, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			res.Missing++
			continue // opening it would create it: that is the bug, not the test
		} else if err == nil && st.Size() == 0 {
			res.Empty++
		}
		db, err := sql.Open("sqlite3", fmt.Sprintf("file:%s?_busy_timeout=%d", path, busy))
		if err != nil {
			res.Other++
			note(err)
			continue
		}
		var n int
		if err := db.QueryRow(`SELECT count(*) FROM ` + table).Scan(&n); err != nil {
			res.ReadErrs++
			if strings.Contains(err.Error(), "no such table") {
				res.NoTable++
			}
			note(err)
		} else {
			res.Reads++
		}
		_, err = db.Exec(`INSERT INTO ` + table + `(v) VALUES ('intruder')`)
		db.Close()
		switch {
		case err == nil:
			res.Committed++
			if res.FirstOKAt == "" {
				res.FirstOKAt = time.Now().UTC().Format(time.RFC3339Nano)
			}
		case isBusy(err):
			res.Busy++
		case strings.Contains(err.Error(), "readonly"):
			res.ReadOnly++
		case strings.Contains(err.Error(), "no such table"):
			res.NoTable++
			note(err)
		default:
			res.Other++
			note(err)
		}
	}
}

// intruderProc is a running intruder process.
type intruderProc struct{ *childProc }

// startIntruder runs an intruder on path's table with a busy timeout.
func startIntruder(t *testing.T, path, table string, busy time.Duration) *intruderProc {
	t.Helper()
	return &intruderProc{startChild(t, "intruder", "TestOneWriterIntruderProcess",
		intruderEnvDB+"="+path, intruderEnvTable+"="+table, intruderEnvBusy+"="+strconv.Itoa(int(busy.Milliseconds())))}
}

// finish stops the intruder and returns what it saw.
func (p *intruderProc) finish(t *testing.T) intruderResult {
	t.Helper()
	return finishChild[intruderResult](t, p.childProc, intruderResultPfx)
}

// refused checks that an intruder tried, committed nothing and was turned
// away with SQLITE_BUSY or SQLITE_READONLY only.
func (r intruderResult) refused(t *testing.T, who string) {
	t.Helper()
	t.Logf("%s: %+v", who, r)
	if r.Tries == 0 || r.Busy+r.ReadOnly == 0 {
		t.Errorf("%s never tried a write: %+v", who, r)
	}
	if r.Committed != 0 || r.Other != 0 || r.NoTable != 0 || r.Missing != 0 || r.Empty != 0 {
		t.Errorf("%s: %d writes committed (first at %s), %d other errors, %d without the table, %d missing, %d empty (first error %q); want every write refused with SQLITE_BUSY or SQLITE_READONLY",
			who, r.Committed, r.FirstOKAt, r.Other, r.NoTable, r.Missing, r.Empty, r.FirstErr)
	}
}

// neverMissing checks what an app writing through a switch-over saw: the
// database path was never missing or empty and never lacked the app's
// table, and every write that failed failed with SQLITE_BUSY.
func (r intruderResult) neverMissing(t *testing.T, who string) {
	t.Helper()
	if r.Missing != 0 || r.Empty != 0 || r.NoTable != 0 || r.Other != 0 {
		t.Errorf("%s: the database was missing %d times, empty %d, without the app's table %d, other errors %d (first %q); want only SQLITE_BUSY",
			who, r.Missing, r.Empty, r.NoTable, r.Other, r.FirstErr)
	}
}

// readLoop reads path through conn-per-read connections with dsn until
// stop, counting reads, errors, and rows an intruder wrote.
type readLoop struct {
	mu                   sync.Mutex
	reads, errs, foreign int
	firstErr             string
	stop, done           chan struct{}
}

func startReadLoop(dsn, table string) *readLoop {
	r := &readLoop{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(r.done)
		db, err := sql.Open("sqlite3", dsn)
		if err != nil {
			r.errs, r.firstErr = 1, err.Error()
			return
		}
		defer db.Close()
		db.SetMaxOpenConns(1)
		for {
			select {
			case <-r.stop:
				return
			default:
			}
			var n int
			err := db.QueryRow(`SELECT count(*) FROM ` + table + ` WHERE v = 'intruder'`).Scan(&n)
			r.mu.Lock()
			switch {
			case err != nil:
				r.errs++
				if r.firstErr == "" {
					r.firstErr = err.Error()
				}
			case n != 0:
				r.foreign++
			default:
				r.reads++
			}
			r.mu.Unlock()
			time.Sleep(time.Millisecond)
		}
	}()
	return r
}

func (r *readLoop) finish(t *testing.T, who string) {
	t.Helper()
	close(r.stop)
	<-r.done
	t.Logf("%s: %d reads, %d errors, %d saw intruder rows", who, r.reads, r.errs, r.foreign)
	if r.reads == 0 || r.errs != 0 || r.foreign != 0 {
		t.Errorf("%s: %d reads, %d errors (first %q), %d reads saw an intruder's rows; want reads that all work and see only applied data",
			who, r.reads, r.errs, r.firstErr, r.foreign)
	}
}

// TestFollowerRefusesAppWrites (issue 15 A, case a): on a plain follower,
// every write by another process fails with SQLITE_BUSY: from a connection
// opened before the follower started and from a new connection per write
// (apps with a 5 s and a 100 ms busy timeout, trying again at once),
// while a read-only reader and an ordinary read connection keep reading and
// never see a row the primary did not write. The follower stays healthy and
// reaches the primary's state.
func TestFollowerRefusesAppWrites(t *testing.T) {
	s := newStack(t, false)
	appDB := openDB(t, s.dbPath)
	mustExec(t, appDB, `CREATE TABLE log (id INTEGER PRIMARY KEY, v TEXT)`)
	s.replicate(t)
	stopApp := make(chan struct{})
	appDone := make(chan error, 1)
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stopApp:
				appDone <- nil
				return
			default:
			}
			if _, err := appDB.Exec(`INSERT INTO log(v) VALUES (?)`, fmt.Sprintf("primary %d", i)); err != nil {
				appDone <- err
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()

	localPath := filepath.Join(t.TempDir(), "follower.db")
	url := s.replicaURLs()[0]
	f := startFollow(t, s.env, url, localPath, 100*time.Millisecond)
	f.waitFollowing(t)
	if code := f.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("follower exit code %d after SIGTERM", code)
	}
	// A connection the app opened while no follower ran, kept open.
	early, err := sql.Open("sqlite3", "file:"+localPath+"?_busy_timeout=200")
	if err != nil {
		t.Fatal(err)
	}
	defer early.Close()
	early.SetMaxOpenConns(1)
	var n int
	if err := early.QueryRow(`SELECT count(*) FROM log`).Scan(&n); err != nil {
		t.Fatal(err)
	}

	f = startFollow(t, s.env, url, localPath, 100*time.Millisecond)
	st := f.waitFollowing(t)
	patient := startIntruder(t, localPath, "log", 5*time.Second)
	hasty := startIntruder(t, localPath, "log", 100*time.Millisecond)
	t.Cleanup(func() {
		if t.Failed() { // what each intruder saw, when the follower caught one
			t.Logf("intruders: %+v %+v", patient.finish(t), hasty.finish(t))
		}
	})
	ro := startReadLoop(follower.ReadOnlyDSN(localPath), "log")
	rw := startReadLoop("file:"+localPath+"?_busy_timeout=5000", "log")
	earlyBusy := 0
	f.waitFor(t, 60*time.Second, "30 more applied files", func(cur followStatus) bool {
		if _, err := early.Exec(`INSERT INTO log(v) VALUES ('intruder')`); err == nil {
			t.Fatalf("a write through a connection opened before the follower started was committed")
		} else if !isBusy(err) {
			t.Fatalf("a write through a connection opened before the follower started: %v, want SQLITE_BUSY", err)
		}
		earlyBusy++
		return cur.Applied >= st.Applied+30
	})
	patient.finish(t).refused(t, "intruder with a 5 s busy timeout")
	hasty.finish(t).refused(t, "intruder with a 100 ms busy timeout")
	ro.finish(t, "mode=ro reader")
	rw.finish(t, "read-write connection reading")

	close(stopApp)
	if err := <-appDone; err != nil {
		t.Fatalf("the primary's app: %v", err)
	}
	img := snapshotImage(t, appDB)
	txid := s.waitShipped(t, img)
	f.waitAt(t, txid, img.checksum)
	if got := localChecksum(t, localPath); got != img.checksum {
		t.Errorf("follower checksum %s, primary %s", got, img.checksum)
	}
	t.Logf("the early connection's %d writes all failed with SQLITE_BUSY", earlyBusy)
}

// wakeProbe is one /status or /healthz answer of a primary woken from
// SIGSTOP.
type wakeProbe struct {
	path, role string
	code       int
	err        error
}

// probeAfterWake asks addr's /status (role) and /healthz (code) once.
func probeAfterWake(hc *http.Client, addr, path string) wakeProbe {
	p := wakeProbe{path: path}
	resp, err := hc.Get("http://" + addr + path)
	if err != nil {
		p.err = err
		return p
	}
	defer resp.Body.Close()
	p.code = resp.StatusCode
	if path == "/status" {
		var doc struct {
			DBs []struct {
				Role string `json:"role"`
			} `json:"dbs"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil || len(doc.DBs) != 1 {
			p.err = fmt.Errorf("decode /status: %v (%d databases)", err, len(doc.DBs))
			return p
		}
		p.role = doc.DBs[0].Role
	}
	return p
}

// TestFrozenPrimaryNeverReportsPrimaryPastItsWindow (issue 15, the safe
// window): a primary frozen with SIGSTOP for longer than its lease's safe
// window (ttl - margin = 8 s) answers every /status and /healthz request
// made after the freeze, the ones queued while it was frozen included, as
// not primary (503 on /healthz), although its loop has not yet noticed the
// loss when they are answered; its app's writes are then held, and nothing
// it could still upload lands past the window.
func TestFrozenPrimaryNeverReportsPrimaryPastItsWindow(t *testing.T) {
	c := newCluster(t)
	a := c.node("a", "", "halt", false)
	ap := startApp(t, a.dbPath)
	a.replicate(t)
	st := a.waitPrimary(t)
	ap.waitCommits(t, 100)
	if st.Role != "primary" {
		t.Fatalf("a: %+v", st)
	}

	if err := a.d.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := true
	defer func() {
		if stopped {
			_ = a.d.cmd.Process.Signal(syscall.SIGCONT)
		}
	}()
	// Requests sent while it is frozen wait in the listen queue; it answers
	// them first thing after SIGCONT.
	hc := &http.Client{Timeout: 30 * time.Second}
	probes := make(chan wakeProbe, 64)
	var wg sync.WaitGroup
	queue := func(path string) {
		wg.Add(1)
		go func() { defer wg.Done(); probes <- probeAfterWake(hc, a.addr, path) }()
	}
	time.Sleep(9 * time.Second) // past the window, whenever the last renewal was
	for i := 0; i < 12; i++ {
		queue("/status")
		queue("/healthz")
	}
	time.Sleep(200 * time.Millisecond) // let them reach the listen queue
	if err := a.d.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	stopped = false
	for i := 0; i < 20; i++ { // and some right after the wake
		queue("/status")
		queue("/healthz")
	}
	wg.Wait()
	close(probes)
	n := 0
	for p := range probes {
		n++
		switch {
		case p.err != nil:
			t.Errorf("%s after the wake: %v", p.path, p.err)
		case p.path == "/status" && p.role == "primary":
			t.Errorf("/status said primary after the lease's safe window had ended")
		case p.path == "/healthz" && p.code == http.StatusOK:
			t.Errorf("/healthz answered 200 after the lease's safe window had ended")
		}
	}
	t.Logf("%d /status and /healthz answers after the freeze checked", n)
	ap.waitHeld(t)
	if st, err := a.status(); err != nil || st.Role == "primary" {
		t.Fatalf("a after the wake: %+v %v", st, err)
	}
}

// TestKilledPrimaryRestartsAsFollowerKeepsDiverged (issue 15): a primary
// killed with transactions it never shipped (the app wrote on after the
// daemon died), restarted as a follower of the new primary, saves its
// database as <db>.diverged-<time> with every one of those transactions,
// reports it as diverged_saved_to, and follows the new primary. Before, it
// was kept as .mismatch-, "changed outside the follower". An app opening a
// connection per write runs on through the restart: the database path
// never goes missing or empty (the copy is saved under the write lock and
// the database rebuilt in place), and every write it had acknowledged is
// in the diverged copy. Before, the database was moved aside and a copy
// bootstrapped at its path.
func TestKilledPrimaryRestartsAsFollowerKeepsDiverged(t *testing.T) {
	c := newCluster(t)
	a := c.node("a", "", "follow", false)
	b := c.node("b", "", "halt", false)
	ap := startApp(t, a.dbPath)
	mustExec(t, ap.db, `CREATE TABLE ia (id INTEGER PRIMARY KEY, v TEXT)`)
	a.replicate(t)
	a.waitPrimary(t)
	b.follow(t)
	ap.waitCommits(t, 200)
	b.waitFollowing(t)

	a.d.kill()
	shippedBefore := ap.commits()
	ap.waitCommits(t, shippedBefore+50)
	ap.halt()
	ap.db.Close()
	committed := ap.commits()

	if res := run(t, nil, "promote", "-config", b.config, "-force", "-timeout", "40s"); res.code != 0 {
		t.Fatalf("promote: exit %d\n%s%s\n%s", res.code, res.stdout, res.stderr, tailLines(b.d.out.String(), 30))
	}
	b.waitPrimary(t)
	nb := openDB(t, b.dbPath)
	onB := rows(t, nb)
	if onB >= committed {
		t.Fatalf("the new primary has %d rows, the killed one committed %d: nothing left unshipped to test", onB, committed)
	}
	for i := 0; i < 20; i++ {
		mustExec(t, nb, `INSERT INTO log(v) VALUES ('on b')`)
	}

	onA := startIntruder(t, a.dbPath, "ia", 50*time.Millisecond)
	eventually(t, 10*time.Second, "the app's writes on the stopped node", func() bool { return countRows(t, a.dbPath, "ia") >= 20 })
	a.follow(t)
	st := a.waitStatus(t, 60*time.Second, "following with the diverged copy saved", func(st nodeStatus) bool {
		return st.Role == "follower" && st.Diverged != ""
	})
	ra := onA.finish(t)
	t.Logf("app on the restarted node: %+v", ra)
	ra.neverMissing(t, "app on the restarted node")
	if ra.Busy == 0 {
		t.Errorf("app on the restarted node: no write was refused once it followed: %+v", ra)
	}
	if got := countRows(t, st.Diverged, "ia"); got != ra.Committed {
		t.Errorf("the diverged copy holds %d of the app's rows, it had %d writes acknowledged (none can reach the store)", got, ra.Committed)
	}
	if n := strings.Count(a.d.out.String(), "bootstrapping the local database"); n != 0 {
		t.Errorf("the restarted node bootstrapped its database %d times instead of rebuilding it in place:\n%s", n, tailLines(a.d.out.String(), 30))
	}
	if !strings.Contains(filepath.Base(st.Diverged), "app.db.diverged-") {
		t.Fatalf("diverged_saved_to = %q, want an app.db.diverged-<time> file", st.Diverged)
	}
	if m, _ := filepath.Glob(a.dbPath + ".mismatch-*"); len(m) != 0 {
		t.Fatalf("the killed primary's database was kept as a mismatch: %v", m)
	}
	saved := openDB(t, st.Diverged)
	if got := rows(t, saved); got != committed {
		t.Fatalf("the diverged copy %s has %d rows, the app committed %d on the killed primary", st.Diverged, got, committed)
	}
	if _, err := os.Stat(st.Diverged + "-understudy"); err != nil {
		t.Errorf("the old primary's shadow directory was not kept beside the diverged copy: %v", err)
	}
	img := snapshotImage(t, nb)
	txid := b.waitShippedAt(t, img.checksum)
	a.waitStatus(t, 30*time.Second, "following b", func(st nodeStatus) bool { return st.TXID == txid && st.Checksum == img.checksum })
	t.Logf("%d app commits on the killed primary, %d reached the store; all kept in %s", committed, onB, filepath.Base(st.Diverged))
}

// TestPlannedHandOffPerConnectionWriters (issue 15 A): during a planned
// promote, an app on each node opens a new connection for every write, as
// fast as it can. On the old primary (on-demote: follow) the database path
// never goes missing or empty and never lacks the app's table: the
// database follows the new primary in place, its write lock passed from
// the halted primary to the follower's applier. On the promoted node the
// write lock is held from the follower's last apply until the primary
// ships. Every write either side acknowledged is in the store afterwards,
// and every other write failed with SQLITE_BUSY. Before, the old database
// was moved aside and a copy restored at its path (the app found it
// missing), and the promoting follower let go of its lock during the
// promotion.
func TestPlannedHandOffPerConnectionWriters(t *testing.T) {
	c := newCluster(t)
	a := c.node("a", "", "follow", false)
	b := c.node("b", "", "halt", false)
	adb := openDB(t, a.dbPath)
	for _, q := range []string{
		`CREATE TABLE ia (id INTEGER PRIMARY KEY, v TEXT)`, `CREATE TABLE ib (id INTEGER PRIMARY KEY, v TEXT)`,
		`CREATE TABLE log (id INTEGER PRIMARY KEY, v TEXT)`, `INSERT INTO log(v) VALUES ('seed')`,
	} {
		mustExec(t, adb, q)
	}
	adb.Close()
	a.replicate(t)
	a.waitPrimary(t)
	b.follow(t)
	b.waitFollowing(t)

	onA := startIntruder(t, a.dbPath, "ia", 50*time.Millisecond)
	onB := startIntruder(t, b.dbPath, "ib", 50*time.Millisecond)
	time.Sleep(time.Second) // writes on a, refused on b
	if res := run(t, nil, "promote", "-config", b.config, "-timeout", "30s"); res.code != 0 {
		t.Fatalf("promote: exit %d\n%s%s\nold primary:\n%s\nfollower:\n%s", res.code, res.stdout, res.stderr,
			tailLines(a.d.out.String(), 30), tailLines(b.d.out.String(), 30))
	}
	claim := b.waitPrimary(t).TXID
	// b's app writes ship, and a follows them.
	at := b.waitStatus(t, 30*time.Second, "shipping the app's writes", func(st nodeStatus) bool { return st.TXID >= claim+5 }).TXID
	a.waitStatus(t, 30*time.Second, "following b in place", func(st nodeStatus) bool { return st.Role == "follower" && st.TXID >= at })
	ra, rb := onA.finish(t), onB.finish(t)
	t.Logf("app on the old primary: %+v", ra)
	t.Logf("app on the promoted node: %+v", rb)
	for _, r := range []struct {
		who string
		res intruderResult
	}{{"old primary", ra}, {"promoted node", rb}} {
		if r.res.Committed == 0 || r.res.Busy == 0 {
			t.Errorf("%s: the app committed %d writes and was refused %d times; want both", r.who, r.res.Committed, r.res.Busy)
		}
		r.res.neverMissing(t, r.who)
	}

	nb := openDB(t, b.dbPath)
	img := snapshotImage(t, nb)
	txid := b.waitShippedAt(t, img.checksum)
	a.waitStatus(t, 30*time.Second, "at b's position", func(st nodeStatus) bool { return st.TXID == txid && st.Checksum == img.checksum })
	restored := openDB(t, c.restoreStore(t))
	for table, want := range map[string]int{"ia": ra.Committed, "ib": rb.Committed} {
		var got int
		if err := restored.QueryRow(`SELECT count(*) FROM ` + table).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("the store holds %d rows of %s, the app had %d writes acknowledged there", got, table, want)
		}
	}
	if st, err := a.status(); err != nil || st.Diverged != "" {
		t.Errorf("old primary: %+v %v, want no diverged copy", st, err)
	}
	if aside, _ := filepath.Glob(a.dbPath + ".*-2*"); len(aside) != 0 {
		t.Errorf("files set aside beside the old primary's database: %v", aside)
	}
	if n := strings.Count(a.d.out.String(), "bootstrapping the local database"); n != 0 {
		t.Errorf("the old primary bootstrapped its database again %d times:\n%s", n, tailLines(a.d.out.String(), 30))
	}
}
