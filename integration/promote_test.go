package integration

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/superfly/ltx"
	"github.com/understudy-db/understudy/config"
	"github.com/understudy-db/understudy/integration/harness"
	"github.com/understudy-db/understudy/internal/replicaclient"
	"github.com/understudy-db/understudy/internal/storage"
)

// cluster is one database with a shared file store and a Consul lease; each
// leaseNode is a machine (its own directory, database copy, config, addr).
type cluster struct {
	t          *testing.T
	dir, store string
	consul     *harness.Consul
	prefix     string
	// replica, when set, is every node's replica (its lines under
	// replicas:, sync-interval excepted) instead of the file store.
	replica string
}

type leaseNode struct {
	name, dir, dbPath, addr, config string
	d                               *daemon
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	dir := t.TempDir()
	return &cluster{t: t, dir: dir, store: filepath.Join(dir, "store"), consul: harness.StartConsul(t),
		prefix: fmt.Sprintf("t%d/", time.Now().UnixNano())}
}

// node writes the config of a node with the session lease (mode session,
// explicitly: kv is the default); consulAddr "" = the agent itself.
func (c *cluster) node(name, consulAddr, onDemote string, autoPromote bool, leaseExtra ...string) *leaseNode {
	c.t.Helper()
	return c.writeNode(name, consulAddr, onDemote, autoPromote, "        mode: session\n        ttl: 10s\n        lock-delay: 1s\n"+strings.Join(leaseExtra, ""))
}

// writeNode writes a node's config: one database on the cluster's file
// store, under a Consul lease whose consul: section ends with consulKeys.
func (c *cluster) writeNode(name, consulAddr, onDemote string, autoPromote bool, consulKeys string) *leaseNode {
	c.t.Helper()
	if consulAddr == "" {
		consulAddr = c.consul.HTTPAddr
	}
	n := &leaseNode{name: name, dir: filepath.Join(c.dir, name)}
	if err := os.MkdirAll(n.dir, 0o755); err != nil {
		c.t.Fatal(err)
	}
	n.dbPath = filepath.Join(n.dir, "app.db")
	n.addr = fmt.Sprintf("127.0.0.1:%d", harness.FreePort(c.t))
	n.config = filepath.Join(n.dir, "understudy.yml")
	replica := "      - name: file\n        url: file://" + c.store + "\n"
	if c.replica != "" {
		replica = c.replica
	}
	writeFile(c.t, n.config, fmt.Sprintf(`addr: %s
dbs:
  - path: %s
    name: app
    replicas:
%s        sync-interval: 100ms
    follower:
      poll-interval: 100ms
      auto-promote: %v
    lease:
      type: consul
      node: %s
      advertise-url: http://%s
      on-demote: %s
      consul:
        address: %s
        key-prefix: %s
`, n.addr, n.dbPath, replica, autoPromote, name, n.addr, onDemote, consulAddr, c.prefix)+consulKeys)
	return n
}

func (n *leaseNode) replicate(t *testing.T) { n.d = start(t, nil, "replicate", "-config", n.config) }
func (n *leaseNode) follow(t *testing.T)    { n.d = start(t, nil, "follow", "-config", n.config) }

// nodeStatus is the part of a node's /status the tests read.
type nodeStatus struct {
	Role         string       `json:"role"`
	FencingToken uint64       `json:"fencing_token"`
	TXID         ltx.TXID     `json:"txid"`
	Checksum     ltx.Checksum `json:"checksum"`
	State        string       `json:"state"`
	Diverged     string       `json:"diverged_saved_to"`
	SafeUntil    time.Time    `json:"safe_until"`
	Replicas     []struct {
		TXID     ltx.TXID     `json:"txid"`
		Checksum ltx.Checksum `json:"checksum"`
	} `json:"replicas"`
}

func (n *leaseNode) status() (nodeStatus, error) { return statusDB[nodeStatus](n.addr) }

func (n *leaseNode) waitStatus(t *testing.T, timeout time.Duration, what string, cond func(nodeStatus) bool) nodeStatus {
	t.Helper()
	var st nodeStatus
	eventually(t, timeout, n.name+": "+what, func() bool {
		var err error
		st, err = n.status()
		return err == nil && cond(st)
	})
	return st
}

// waitFollowing waits until n follows, at some TXID.
func (n *leaseNode) waitFollowing(t *testing.T) nodeStatus {
	t.Helper()
	return n.waitStatus(t, 30*time.Second, "following", func(st nodeStatus) bool { return st.Role == "follower" && st.TXID > 0 })
}

// waitPrimary waits until n is primary.
func (n *leaseNode) waitPrimary(t *testing.T) nodeStatus {
	t.Helper()
	return n.waitStatus(t, 30*time.Second, "primary", func(st nodeStatus) bool { return st.Role == "primary" })
}

// waitShippedAt waits until the primary node's replica holds its database
// as it is now (the app must be still) and returns that TXID.
func (n *leaseNode) waitShippedAt(t *testing.T, sum ltx.Checksum) ltx.TXID {
	t.Helper()
	st := n.waitStatus(t, 30*time.Second, "shipped", func(st nodeStatus) bool {
		return st.Role == "primary" && st.Checksum == sum && len(st.Replicas) == 1 &&
			st.Replicas[0].TXID == st.TXID && st.Replicas[0].Checksum == sum
	})
	return st.TXID
}

// leaseKey reads the lease key from Consul directly: the session holding it.
func (c *cluster) leaseSession() (string, error) {
	resp, err := http.Get(c.consul.URL + "/v1/kv/" + c.prefix + "app/primary")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return "", nil
	}
	var pairs []struct{ Session string }
	if err := json.NewDecoder(resp.Body).Decode(&pairs); err != nil || len(pairs) == 0 {
		return "", fmt.Errorf("read lease key: %v", err)
	}
	return pairs[0].Session, nil
}

// restoreStore restores the store into a new file and returns its path.
func (c *cluster) restoreStore(t *testing.T) string {
	t.Helper()
	restored := filepath.Join(t.TempDir(), "restored.db")
	if r := run(t, nil, "restore", "-o", restored, "file://"+c.store); r.code != 0 {
		t.Fatalf("restore: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	return restored
}

// serviceIDs lists the instances of the database's service with tag.
func (c *cluster) serviceIDs(tag string) ([]string, error) {
	var svcs []struct{ ServiceID string }
	if err := c.consul.Do(context.Background(), http.MethodGet, "/v1/catalog/service/understudy-app?tag="+tag, "", &svcs); err != nil {
		return nil, err
	}
	var ids []string
	for _, s := range svcs {
		ids = append(ids, s.ServiceID)
	}
	return ids, nil
}

// app writes one small transaction after another and records each commit
// and the first error.
type app struct {
	db     *sql.DB
	mu     sync.Mutex
	n      int
	lastOK time.Time // when the last acknowledged write returned
	err    error
	errT   time.Time
	stop   chan struct{}
	done   chan struct{}
}

func startApp(t *testing.T, path string) *app {
	t.Helper()
	db := openDB(t, path)
	mustExec(t, db, `CREATE TABLE IF NOT EXISTS log (id INTEGER PRIMARY KEY, v TEXT)`)
	a := &app{db: db, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(a.done)
		for i := 0; ; i++ {
			select {
			case <-a.stop:
				return
			default:
			}
			_, err := db.Exec(`INSERT INTO log(v) VALUES (?)`, fmt.Sprintf("row %d %s", i, strings.Repeat("x", i%300)))
			a.mu.Lock()
			if err != nil {
				a.err, a.errT = err, time.Now()
				a.mu.Unlock()
				return
			}
			a.n++
			a.lastOK = time.Now()
			a.mu.Unlock()
			time.Sleep(2 * time.Millisecond)
		}
	}()
	t.Cleanup(a.halt)
	return a
}

func (a *app) halt() {
	select {
	case <-a.stop:
	default:
		close(a.stop)
	}
	<-a.done
}

func (a *app) failed() (error, time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.err, a.errT
}

// lastCommit is when the app's last acknowledged write returned.
func (a *app) lastCommit() time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.lastOK
}

// waitCommits waits until the app has committed more than n transactions.
// An app that stopped on an error fails the test at once, naming the
// error (it used to show only as a timeout). Otherwise there is no
// throughput bound: a loaded machine commits slowly, and
// appCommitsHangAfter only guards against a hang.
func (a *app) waitCommits(t *testing.T, n int) {
	t.Helper()
	for deadline := time.Now().Add(appCommitsHangAfter); a.commits() <= n; {
		if err, at := a.failed(); err != nil {
			t.Fatalf("the app stopped after %d commits (want more than %d): %v at %s", a.commits(), n, err, at.Format(time.RFC3339Nano))
		}
		if time.Now().After(deadline) {
			t.Fatalf("the app committed %d transactions in %s, want more than %d", a.commits(), appCommitsHangAfter, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// appCommitsHangAfter bounds waitCommits.
const appCommitsHangAfter = 2 * time.Minute

func (a *app) commits() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.n
}

// waitHeld waits until the old primary holds the app's writes: its next
// write fails, with SQLITE_BUSY.
func (a *app) waitHeld(t *testing.T) {
	t.Helper()
	eventually(t, 20*time.Second, "the old primary's app to fail", func() bool { err, _ := a.failed(); return err != nil })
	if err, _ := a.failed(); !isBusy(err) {
		t.Fatalf("app write on the old primary failed with %v, want SQLITE_BUSY", err)
	}
}

func isBusy(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "database is locked") || strings.Contains(err.Error(), "busy"))
}

// TestLeaseCutOffFromConsulHaltsWrites: the primary loses Consul (toxiproxy
// disables its only way there) but still reaches the store. Before its
// session could expire in Consul (the key still names it), the daemon logs
// the loss and the application's writes fail with SQLITE_BUSY. Then an
// auto-promote follower takes over, and a restore of the store (one chain
// of TXIDs, every checksum verified) equals the new primary.
func TestLeaseCutOffFromConsulHaltsWrites(t *testing.T) {
	c := newCluster(t)
	tp := harness.StartToxiproxy(t)
	proxy := tp.NewProxy(t, "consul", c.consul.HTTPAddr)
	a := c.node("a", proxy.Listen, "halt", false)
	b := c.node("b", "", "halt", true)
	db := openDB(t, a.dbPath)
	mustExec(t, db, `CREATE TABLE IF NOT EXISTS log (id INTEGER PRIMARY KEY, v TEXT)`)
	a.replicate(t)
	st := a.waitStatus(t, 30*time.Second, "primary with a fencing token", func(st nodeStatus) bool {
		return st.Role == "primary" && st.FencingToken > 0 && len(st.Replicas) == 1 && st.Replicas[0].TXID > 0
	})
	b.follow(t)
	b.waitFollowing(t)
	session, err := c.leaseSession()
	if err != nil || session == "" {
		t.Fatalf("lease key not held after start: %q %v", session, err)
	}
	t.Logf("primary holds the lease: token %d, session %s", st.FencingToken, session)
	ap := startApp(t, a.dbPath)
	ap.waitCommits(t, 50)

	cut := time.Now()
	if err := proxy.SetEnabled(false); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the app's writes to fail", func() bool { err, _ := ap.failed(); return err != nil })
	appErr, failedAt := ap.failed()
	// The session is still alive in Consul at this moment: nobody else
	// could have acquired the lease yet.
	held, err := c.leaseSession()
	if err != nil {
		t.Fatal(err)
	}
	if held != session {
		t.Fatalf("when the app's writes failed (%s after the cut), the lease key names session %q, not the old primary's %q: the halt came too late",
			failedAt.Sub(cut), held, session)
	}
	if !isBusy(appErr) {
		t.Fatalf("app write failed with %v, want SQLITE_BUSY (database is locked)", appErr)
	}
	if !strings.Contains(a.d.out.String(), "lease lost") {
		t.Fatalf("daemon did not log the lease loss:\n%s", tailLines(a.d.out.String(), 30))
	}
	st, err = a.status()
	if err != nil || st.Role != "halted" {
		t.Fatalf("status after the loss: %+v %v, want role halted", st, err)
	}
	t.Logf("cut at 0s; app writes failed with SQLITE_BUSY after %s (%d commits before); lease key still held by the old session",
		failedAt.Sub(cut).Round(time.Millisecond), ap.commits())

	// The follower takes over; the store stays one verified chain.
	b.waitStatus(t, 60*time.Second, "promoted", func(st nodeStatus) bool { return st.Role == "primary" })
	t.Logf("follower promoted %s after the cut", time.Since(cut).Round(time.Millisecond))
	nb := openDB(t, b.dbPath)
	if got, committed := rows(t, nb), ap.commits(); got > committed || committed-got > 2000 {
		t.Fatalf("new primary has %d rows, the old primary's app committed %d", got, committed)
	}
	for i := 0; i < 20; i++ {
		mustExec(t, nb, `INSERT INTO log(v) VALUES ('on b')`)
	}
	img := snapshotImage(t, nb)
	b.waitShippedAt(t, img.checksum)
	restored := c.restoreStore(t)
	if got := fileChecksum(t, restored); got != img.checksum {
		t.Fatalf("restore has checksum %s, the new primary %s", got, img.checksum)
	}
}

// TestPromoteForcedAfterKill: the primary (daemon and app) is killed with
// SIGKILL; `understudy promote -force` on the follower breaks the dead
// primary's lease, replays the store, claims the next TXID and ships. The
// new primary accepts writes, and a restore of the store (one unbroken,
// verified chain of TXIDs) equals the new primary's database.
func TestPromoteForcedAfterKill(t *testing.T) {
	c := newCluster(t)
	a := c.node("a", "", "halt", false)
	// The hook is a script: the config would expand $VARS at load time.
	hookOut, hook := filepath.Join(c.dir, "hook.out"), filepath.Join(c.dir, "hook.sh")
	writeFile(t, hook, "#!/bin/sh\necho \"$UNDERSTUDY_ROLE $UNDERSTUDY_FENCING_TOKEN\" > "+hookOut+"\n")
	if err := os.Chmod(hook, 0o755); err != nil {
		t.Fatal(err)
	}
	b := c.node("b", "", "halt", false, "      on-promote: "+hook+"\n")
	ap := startApp(t, a.dbPath)
	a.replicate(t)
	a.waitStatus(t, 30*time.Second, "primary", func(st nodeStatus) bool { return st.Role == "primary" && st.FencingToken > 0 })
	b.follow(t)
	ap.waitCommits(t, 200)

	// Kill the primary machine: daemon first, then the app mid-write.
	a.d.kill()
	ap.halt()
	ap.db.Close()
	committed := ap.commits()

	t0 := time.Now()
	res := run(t, nil, "promote", "-config", b.config, "-force", "-timeout", "40s")
	if res.code != 0 {
		t.Fatalf("promote: exit %d\n%s%s\nfollower output:\n%s", res.code, res.stdout, res.stderr, tailLines(b.d.out.String(), 40))
	}
	t.Logf("promote -force took %s: %s", time.Since(t0).Round(time.Millisecond), strings.TrimSpace(res.stdout))
	st := b.waitStatus(t, 10*time.Second, "primary", func(st nodeStatus) bool { return st.Role == "primary" })
	if st.FencingToken == 0 {
		t.Fatalf("new primary has no fencing token: %+v", st)
	}
	want := fmt.Sprintf("primary %d\n", st.FencingToken)
	eventually(t, 10*time.Second, "the on-promote hook", func() bool { b, _ := os.ReadFile(hookOut); return string(b) == want })

	// The new primary accepts writes and ships them.
	nb := openDB(t, b.dbPath)
	got := rows(t, nb)
	if lost := committed - got; lost < 0 || got == 0 {
		t.Fatalf("new primary has %d rows, the old one committed %d", got, committed)
	} else {
		t.Logf("committed on the old primary: %d, on the new primary after promotion: %d (lost in the last sync interval: %d)", committed, got, lost)
	}
	for i := 0; i < 100; i++ {
		mustExec(t, nb, `INSERT INTO log(v) VALUES ('after promotion')`)
	}
	img := snapshotImage(t, nb)
	txid := b.waitShippedAt(t, img.checksum)

	restored := c.restoreStore(t)
	if got := fileChecksum(t, restored); got != img.checksum {
		t.Fatalf("restore of the store (TXID %s) has checksum %s, the new primary %s", txid, got, img.checksum)
	}
	integrityCheck(t, restored)
	// The promotion (its claim, the new primary's files) carries the
	// history's identity on.
	oneIdentity(t, c.store)
}

// rows counts the log table of a database.
func rows(t *testing.T, db *sql.DB) int {
	t.Helper()
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM log`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestPromotePlannedHandOff: under continuous writes, `understudy promote`
// (no -force) on a follower asks the live primary to hand over. Every
// transaction the app committed on the old primary is on the new primary;
// the old primary holds the app's writes (on-demote halt); a second
// follower keeps following the new primary without a re-bootstrap.
func TestPromotePlannedHandOff(t *testing.T) {
	c := newCluster(t)
	a := c.node("a", "", "halt", false)
	b := c.node("b", "", "halt", false)
	cc := c.node("c", "", "halt", false)
	ap := startApp(t, a.dbPath)
	a.replicate(t)
	a.waitPrimary(t)
	b.follow(t)
	cc.follow(t)
	ap.waitCommits(t, 300)
	b.waitFollowing(t)
	cc.waitFollowing(t)

	t0 := time.Now()
	res := run(t, nil, "promote", "-config", b.config, "-timeout", "30s")
	took := time.Since(t0)
	if res.code != 0 {
		t.Fatalf("promote: exit %d\n%s%s\nold primary:\n%s\nfollower:\n%s", res.code, res.stdout, res.stderr,
			tailLines(a.d.out.String(), 30), tailLines(b.d.out.String(), 30))
	}
	// The app's writes on the old primary are held: its next write fails.
	ap.waitHeld(t)
	committed := ap.commits()
	b.waitStatus(t, 10*time.Second, "primary", func(st nodeStatus) bool { return st.Role == "primary" })
	if st, err := a.status(); err != nil || st.Role != "halted" {
		t.Fatalf("old primary: %+v %v, want role halted", st, err)
	}
	// Consul names the writer: the primary-tagged instance is b's.
	eventually(t, 10*time.Second, "primary.understudy-app to name b", func() bool {
		ids, err := c.serviceIDs("primary")
		return err == nil && len(ids) == 1 && ids[0] == "understudy-app-b"
	})
	if ids, err := c.serviceIDs("replica"); err != nil || len(ids) != 1 || ids[0] != "understudy-app-c" {
		t.Fatalf("replica-tagged instances: %v %v, want understudy-app-c", ids, err)
	}
	nb := openDB(t, b.dbPath)
	if got := rows(t, nb); got != committed {
		t.Fatalf("the old primary's app committed %d transactions, the new primary has %d rows", committed, got)
	}
	t.Logf("planned hand-off: promote took %s (%s); %d committed transactions, none lost", took.Round(time.Millisecond), strings.TrimSpace(res.stdout), committed)
	if p := os.Getenv("UNDERSTUDY_HANDOFF_LOG"); p != "" {
		var ans struct {
			ElapsedMS int64 `json:"elapsed_ms"`
		}
		_ = json.Unmarshal([]byte(res.stdout), &ans)
		if f, err := os.OpenFile(p, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644); err == nil {
			// promote command wall time, node-side promotion time, transactions lost
			fmt.Fprintf(f, "%d %d %d\n", took.Milliseconds(), ans.ElapsedMS, committed-rows(t, nb))
			f.Close()
		}
	}

	// Writes resume on the new primary; the other follower follows it.
	for i := 0; i < 50; i++ {
		mustExec(t, nb, `INSERT INTO log(v) VALUES ('on b')`)
	}
	img := snapshotImage(t, nb)
	txid := b.waitShippedAt(t, img.checksum)
	cc.waitStatus(t, 30*time.Second, "following the new primary", func(st nodeStatus) bool { return st.TXID == txid && st.Checksum == img.checksum })
	if n := strings.Count(cc.d.out.String(), "bootstrapping the local database"); n != 1 {
		t.Fatalf("the second follower bootstrapped %d times, want once:\n%s", n, tailLines(cc.d.out.String(), 30))
	}
}

// TestAutoPromoteAfterKill: the primary (daemon and app) is killed; of two
// auto-promote followers exactly one becomes primary when the dead
// primary's session expires, accepts a write, and the other follows it
// without a re-bootstrap.
func TestAutoPromoteAfterKill(t *testing.T) {
	c := newCluster(t)
	a := c.node("a", "", "halt", false)
	b := c.node("b", "", "halt", true)
	cc := c.node("c", "", "halt", true)
	ap := startApp(t, a.dbPath)
	a.replicate(t)
	a.waitPrimary(t)
	b.follow(t)
	cc.follow(t)
	ap.waitCommits(t, 200)
	b.waitFollowing(t)
	cc.waitFollowing(t)

	// The machine dies: daemon and app at the same moment.
	killed := time.Now()
	go a.d.kill()
	ap.halt()
	<-a.d.done
	ap.db.Close()
	committed := ap.commits()

	var winner, loser *leaseNode
	eventually(t, 60*time.Second, "an auto-promote follower to become primary", func() bool {
		for _, n := range []*leaseNode{b, cc} {
			if st, err := n.status(); err == nil && st.Role == "primary" {
				winner = n
				return true
			}
		}
		return false
	})
	loser = b
	if winner == b {
		loser = cc
	}
	nw := openDB(t, winner.dbPath)
	mustExec(t, nw, `INSERT INTO log(v) VALUES ('first write on the new primary')`)
	failover := time.Since(killed)
	lost := committed - (rows(t, nw) - 1)
	t.Logf("failover: kill -9 to the first accepted write on %s: %s; %d of %d committed transactions lost (the last sync interval)",
		winner.name, failover.Round(time.Millisecond), lost, committed)
	if lost < 0 {
		t.Fatalf("the new primary has more rows than the app committed")
	}
	loser.waitStatus(t, 20*time.Second, "following again", func(st nodeStatus) bool { return st.Role == "follower" })
	img := snapshotImage(t, nw)
	txid := winner.waitShippedAt(t, img.checksum)
	loser.waitStatus(t, 30*time.Second, "following the new primary", func(st nodeStatus) bool { return st.TXID == txid && st.Checksum == img.checksum })
	if n := strings.Count(loser.d.out.String(), "bootstrapping the local database"); n != 1 {
		t.Fatalf("%s bootstrapped %d times, want once", loser.name, n)
	}
	if d := os.Getenv("UNDERSTUDY_FAILOVER_LOG"); d != "" {
		f, err := os.OpenFile(d, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err == nil {
			fmt.Fprintf(f, "%d %d\n", failover.Milliseconds(), lost)
			f.Close()
		}
	}
}

// TestPromoteRace: two followers asked to promote at the same moment, the
// lease free: exactly one wins, the other reports it lost and follows.
func TestPromoteRace(t *testing.T) {
	c := newCluster(t)
	a := c.node("a", "", "halt", false)
	b := c.node("b", "", "halt", false)
	cc := c.node("c", "", "halt", false)
	db := openDB(t, a.dbPath)
	mustExec(t, db, `CREATE TABLE IF NOT EXISTS log (id INTEGER PRIMARY KEY, v TEXT)`)
	a.replicate(t)
	for i := 0; i < 20; i++ {
		mustExec(t, db, `INSERT INTO log(v) VALUES ('x')`)
	}
	a.waitShippedAt(t, snapshotImage(t, db).checksum)
	b.follow(t)
	cc.follow(t)
	b.waitFollowing(t)
	cc.waitFollowing(t)
	// A clean stop releases the lease: it is free for the racers at once.
	if code := a.d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("old primary exited %d", code)
	}
	var wg sync.WaitGroup
	results := make([]result, 2)
	start := make(chan struct{})
	for i, n := range []*leaseNode{b, cc} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			results[i] = run(t, nil, "promote", "-config", n.config, "-timeout", "20s")
		}()
	}
	close(start)
	wg.Wait()
	wins := 0
	for i, r := range results {
		t.Logf("promote %d: exit %d %s%s", i, r.code, strings.TrimSpace(r.stdout), strings.TrimSpace(r.stderr))
		if r.code == 0 {
			wins++
		}
	}
	if wins != 1 {
		t.Fatalf("%d promotions succeeded, want exactly 1", wins)
	}
	primaries := 0
	for _, n := range []*leaseNode{b, cc} {
		st := n.waitStatus(t, 10*time.Second, "settled", func(st nodeStatus) bool { return st.Role == "primary" || st.Role == "follower" })
		if st.Role == "primary" {
			primaries++
		}
	}
	if primaries != 1 {
		t.Fatalf("%d nodes are primary", primaries)
	}
}

// storeWriters returns, for each L0 TXID in the store, the node named in
// its metadata.
func (c *cluster) storeWriters(t *testing.T) map[ltx.TXID]string {
	t.Helper()
	ctx := context.Background()
	r, err := config.ParseReplicaURL("file://" + c.store)
	if err != nil {
		t.Fatal(err)
	}
	client, err := replicaclient.New(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	it, err := client.List(ctx, storage.LevelL0, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	out := map[ltx.TXID]string{}
	for it.Next() {
		fi := it.Item()
		obj, err := client.Open(ctx, fi.Level, fi.MinTXID, fi.MaxTXID, 0, 0)
		if errors.Is(err, storage.ErrNotFound) {
			continue // compacted away meanwhile
		} else if err != nil {
			t.Fatal(err)
		}
		obj.Close()
		if obj.Info.Metadata != nil {
			out[fi.MinTXID] = obj.Info.Metadata.Node
		}
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestFrozenPrimaryRejoinsAndKeepsDivergedWrites: the primary daemon is
// frozen (SIGSTOP) past its TTL while its app keeps committing; an
// auto-promote follower takes over and writes. After SIGCONT the old
// primary creates no object past the new primary's claim, halts its app's
// writes, and (on-demote follow) saves its database with the unshipped
// transactions as <db>.diverged-<time> before following the new primary.
func TestFrozenPrimaryRejoinsAndKeepsDivergedWrites(t *testing.T) {
	c := newCluster(t)
	a := c.node("a", "", "follow", false)
	b := c.node("b", "", "halt", true)
	ap := startApp(t, a.dbPath)
	a.replicate(t)
	a.waitPrimary(t)
	b.follow(t)
	ap.waitCommits(t, 200)
	b.waitFollowing(t)

	if err := a.d.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	frozen := time.Now()
	b.waitStatus(t, 60*time.Second, "promoted", func(st nodeStatus) bool { return st.Role == "primary" })
	claimTXID := b.waitStatus(t, 10*time.Second, "claim", func(st nodeStatus) bool { return st.TXID > 0 }).TXID
	nb := openDB(t, b.dbPath)
	for i := 0; i < 20; i++ {
		mustExec(t, nb, `INSERT INTO log(v) VALUES ('on b')`)
	}
	t.Logf("b promoted %s after the freeze, claimed TXID %s", time.Since(frozen).Round(time.Millisecond), claimTXID)

	if err := a.d.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	st := a.waitStatus(t, 30*time.Second, "rejoined as follower", func(st nodeStatus) bool { return st.Role == "follower" && st.Diverged != "" })
	ap.waitHeld(t)
	if !strings.Contains(a.d.out.String(), "saved a copy before following the new primary") {
		t.Fatalf("old primary did not log the saved database:\n%s", tailLines(a.d.out.String(), 30))
	}
	// The diverged copy holds every transaction the app committed on a.
	saved := openDB(t, st.Diverged)
	if got, want := rows(t, saved), ap.commits(); got != want {
		t.Fatalf("diverged copy %s has %d rows, the app committed %d", st.Diverged, got, want)
	}
	// No object past the claim was written by a.
	for txid, node := range c.storeWriters(t) {
		if txid >= claimTXID && node != "b" {
			t.Fatalf("TXID %s at or after b's claim %s was written by %q", txid, claimTXID, node)
		}
	}
	// a follows b.
	img := snapshotImage(t, nb)
	txid := b.waitShippedAt(t, img.checksum)
	a.waitStatus(t, 30*time.Second, "following b", func(st nodeStatus) bool { return st.TXID == txid && st.Checksum == img.checksum })
}

// TestRestartedPrimaryWaitsAndKeepsNewHistory: the old primary is killed,
// its app writes a little more (never shipped), a follower is promoted and
// writes. `replicate` restarted on the old primary waits for the lease,
// naming the holder. When the new primary stops, the old node takes the
// lease, sets its database aside whole (it is not the store's history),
// replays the store and ships on: the new primary's transactions are kept.
// An app opening a connection per write runs on a from the kill to the
// end: the database path never goes missing or empty (the copy is saved
// under the write lock and the database rebuilt in place from the store),
// and each write it had acknowledged is in the store or the saved copy.
func TestRestartedPrimaryWaitsAndKeepsNewHistory(t *testing.T) {
	c := newCluster(t)
	a := c.node("a", "", "halt", false)
	b := c.node("b", "", "halt", false)
	ap := startApp(t, a.dbPath)
	mustExec(t, ap.db, `CREATE TABLE ia (id INTEGER PRIMARY KEY, v TEXT)`)
	a.replicate(t)
	a.waitPrimary(t)
	b.follow(t)
	ap.waitCommits(t, 100)
	b.waitFollowing(t)
	a.d.kill()
	time.Sleep(100 * time.Millisecond) // the app commits on, unshipped
	ap.halt()
	ap.db.Close()
	aCommits := ap.commits()
	onA := startIntruder(t, a.dbPath, "ia", 50*time.Millisecond)
	eventually(t, 10*time.Second, "the app's writes on the stopped node", func() bool { return countRows(t, a.dbPath, "ia") >= 20 })

	if r := run(t, nil, "promote", "-config", b.config, "-force", "-timeout", "30s"); r.code != 0 {
		t.Fatalf("promote: exit %d %s%s", r.code, r.stdout, r.stderr)
	}
	nb := openDB(t, b.dbPath)
	for i := 0; i < 30; i++ {
		mustExec(t, nb, `INSERT INTO log(v) VALUES ('on b')`)
	}
	want := snapshotImage(t, nb)
	b.waitShippedAt(t, want.checksum)
	bRows := rows(t, nb)

	a.replicate(t)
	eventually(t, 20*time.Second, "the restarted primary to name the holder it waits for", func() bool {
		return strings.Contains(a.d.out.String(), "waiting for the lease") && strings.Contains(a.d.out.String(), "holder=b")
	})
	if code := b.d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("new primary exited %d", code)
	}
	st := a.waitStatus(t, 30*time.Second, "primary again", func(st nodeStatus) bool { return st.Role == "primary" })
	if st.Diverged == "" {
		t.Fatalf("the old database was not set aside: %+v", st)
	}
	na := openDB(t, a.dbPath)
	if got := rows(t, na); got != bRows {
		t.Fatalf("restarted primary has %d rows, the new primary had %d (its own app committed %d)", got, bRows, aCommits)
	}
	if got := rows(t, openDB(t, st.Diverged)); got != aCommits {
		t.Fatalf("the set-aside database has %d rows, the app committed %d there", got, aCommits)
	}
	ra := onA.finish(t)
	t.Logf("app on the restarted primary: %+v", ra)
	ra.neverMissing(t, "app on the restarted primary")
	mustExec(t, na, `INSERT INTO log(v) VALUES ('on a again')`)
	img := snapshotImage(t, na)
	a.waitShippedAt(t, img.checksum)
	restored := c.restoreStore(t)
	if got := fileChecksum(t, restored); got != img.checksum {
		t.Fatalf("restore has checksum %s, the primary %s", got, img.checksum)
	}
	inStore, inCopy := countRows(t, restored, "ia"), countRows(t, st.Diverged, "ia")
	if inStore+inCopy != ra.Committed {
		t.Errorf("the app had %d writes acknowledged on a; %d are in the store and %d in the saved copy", ra.Committed, inStore, inCopy)
	}
}

// consulPut sends a PUT to the Consul agent's HTTP API.
func (c *cluster) consulPut(t *testing.T, path, body string) {
	t.Helper()
	if err := c.consul.Do(context.Background(), http.MethodPut, path, body, nil); err != nil {
		t.Fatal(err)
	}
}

// TestAppHealthCheckTriggersFailover: the application's Consul health check
// is attached to the primary's session (lease consul health-check). When
// the check fails, Consul ends the session; the primary halts the app's
// writes at once and an auto-promote follower takes over.
func TestAppHealthCheckTriggersFailover(t *testing.T) {
	c := newCluster(t)
	ap, nb := appCheckFailover(t, c, c.node("a", "", "halt", false, "        health-check: app-alive\n"), c.node("b", "", "halt", true))
	if got, committed := rows(t, nb), ap.commits(); got != committed {
		// The session ended with the check; the primary halted, shipped
		// nothing more, and had shipped everything before (100 ms syncs):
		// at most the last interval can be missing.
		t.Logf("new primary has %d rows, the app committed %d", got, committed)
	}
	mustExec(t, nb, `INSERT INTO log(v) VALUES ('on b')`)
}

// appCheckFailover registers the app's check app-alive (passing), runs a
// (its lease names the check) as primary with an app and b (auto-promote)
// as follower, fails the check and waits until a halted and b is primary.
// It returns the app and b's database.
func appCheckFailover(t *testing.T, c *cluster, a, b *leaseNode) (*app, *sql.DB) {
	t.Helper()
	c.consulPut(t, "/v1/agent/check/register", `{"ID":"app-alive","Name":"app-alive","TTL":"1h"}`)
	c.consulPut(t, "/v1/agent/check/pass/app-alive", "")
	ap := startPrimaryAndFollower(t, a, b, 100)

	failed := time.Now()
	c.consulPut(t, "/v1/agent/check/fail/app-alive", "")
	a.waitStatus(t, 20*time.Second, "halted", func(st nodeStatus) bool { return st.Role == "halted" })
	halted := time.Since(failed)
	b.waitStatus(t, 30*time.Second, "promoted", func(st nodeStatus) bool { return st.Role == "primary" })
	t.Logf("app check failed: old primary halted after %s, follower promoted after %s", halted.Round(time.Millisecond), time.Since(failed).Round(time.Millisecond))
	ap.waitHeld(t)
	nb := openDB(t, b.dbPath)
	if got, committed := rows(t, nb), ap.commits(); got > committed {
		t.Fatalf("new primary has %d rows, more than the %d the app committed", got, committed)
	}
	return ap, nb
}

// TestReplicateExecUnderLease: with a lease, `replicate -exec` still runs
// the application as its child: when it exits, the node ships, releases the
// lease and exits with the application's status.
func TestReplicateExecUnderLease(t *testing.T) {
	c := newCluster(t)
	a := c.node("a", "", "halt", false)
	db := openDB(t, a.dbPath)
	mustExec(t, db, `CREATE TABLE IF NOT EXISTS log (id INTEGER PRIMARY KEY, v TEXT)`)
	a.d = start(t, nil, "replicate", "-config", a.config, "-exec", "sleep 2; exit 3")
	a.waitPrimary(t)
	if code := a.d.wait(t, 30*time.Second); code != 3 {
		t.Fatalf("replicate exited %d, want the application's 3:\n%s", code, tailLines(a.d.out.String(), 20))
	}
	if s, err := c.leaseSession(); err != nil || s != "" {
		t.Fatalf("lease still held after exit: %q %v", s, err)
	}
}

// TestOnDemoteExit: with on-demote exit, a primary that loses its lease
// (here: its app's health check fails) exits non-zero.
func TestOnDemoteExit(t *testing.T) {
	c := newCluster(t)
	c.consulPut(t, "/v1/agent/check/register", `{"ID":"app-ok","Name":"app-ok","TTL":"1h"}`)
	c.consulPut(t, "/v1/agent/check/pass/app-ok", "")
	a := c.node("a", "", "exit", false, "        health-check: app-ok\n")
	db := openDB(t, a.dbPath)
	mustExec(t, db, `CREATE TABLE IF NOT EXISTS log (id INTEGER PRIMARY KEY, v TEXT)`)
	a.replicate(t)
	a.waitPrimary(t)
	c.consulPut(t, "/v1/agent/check/fail/app-ok", "")
	if code := a.d.wait(t, 20*time.Second); code == 0 {
		t.Fatalf("replicate exited 0 after losing the lease with on-demote exit")
	}
	if out := a.d.out.String(); !strings.Contains(out, "lease lost") || !strings.Contains(out, "on-demote: exit") {
		t.Fatalf("exit not explained:\n%s", tailLines(out, 20))
	}
}

// TestStaticLease: with lease type static the configured node is primary
// (fencing token 1) without Consul, and a follower refuses to promote.
func TestStaticLease(t *testing.T) {
	dir := t.TempDir()
	store := filepath.Join(dir, "store")
	mk := func(name string) *leaseNode {
		n := &leaseNode{name: name, dir: filepath.Join(dir, name)}
		if err := os.MkdirAll(n.dir, 0o755); err != nil {
			t.Fatal(err)
		}
		n.dbPath = filepath.Join(n.dir, "app.db")
		n.addr = fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
		n.config = filepath.Join(n.dir, "understudy.yml")
		writeFile(t, n.config, fmt.Sprintf(`addr: %s
dbs:
  - path: %s
    name: app
    replicas:
      - url: file://%s
        sync-interval: 100ms
    follower:
      poll-interval: 100ms
    lease:
      type: static
      node: %s
      primary: a
`, n.addr, n.dbPath, store, name))
		return n
	}
	a, b := mk("a"), mk("b")
	db := openDB(t, a.dbPath)
	mustExec(t, db, `CREATE TABLE IF NOT EXISTS log (id INTEGER PRIMARY KEY, v TEXT)`)
	a.replicate(t)
	st := a.waitPrimary(t)
	if st.FencingToken != 1 {
		t.Fatalf("static primary's fencing token %d, want 1", st.FencingToken)
	}
	mustExec(t, db, `INSERT INTO log(v) VALUES ('x')`)
	a.waitShippedAt(t, snapshotImage(t, db).checksum)
	b.follow(t)
	b.waitFollowing(t)
	r := run(t, nil, "promote", "-config", b.config, "-timeout", "10s")
	if r.code == 0 || !strings.Contains(r.stderr, "static") {
		t.Fatalf("promote on a static follower: exit %d %s%s, want a refusal naming the static lease", r.code, r.stdout, r.stderr)
	}
	if st, err := b.status(); err != nil || st.Role != "follower" {
		t.Fatalf("follower after the refused promotion: %+v %v", st, err)
	}
}
