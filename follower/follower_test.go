package follower

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/superfly/ltx"
	"github.com/understudy-db/understudy/internal/httpserver"
	"github.com/understudy-db/understudy/internal/ltxtest"
	"github.com/understudy-db/understudy/internal/storage"
	"github.com/understudy-db/understudy/internal/storage/file"
)

// testPrimary plays the primary for loop tests: a source database whose
// changes are uploaded as L0 files to a real file store, a level-9 snapshot
// at TXID 1, and compactions on demand.
type testPrimary struct {
	t      *testing.T
	src    *source
	store  *file.Client
	states map[ltx.TXID][][]byte // database pages as of each TXID
	pgnos  map[ltx.TXID][]uint32 // pages each L0 file wrote
	// noMeta writes objects as Litestream does: the file alone, no metadata.
	noMeta bool
}

func newTestPrimary(t *testing.T, dir string) *testPrimary {
	t.Helper()
	src := newSource(t, dir)
	store, err := file.New(filepath.Join(dir, "replica"))
	if err != nil {
		t.Fatal(err)
	}
	p := &testPrimary{t: t, src: src, store: store, states: map[ltx.TXID][][]byte{1: src.pages}, pgnos: map[ltx.TXID][]uint32{}}
	p.putSnapshot(1)
	return p
}

// putSnapshot uploads the source's current state, every page, as the
// snapshot of TXIDs 1..maxTXID.
func (p *testPrimary) putSnapshot(maxTXID ltx.TXID) {
	p.t.Helper()
	pages := p.src.pages
	data := ltxtest.Encode(p.t, p.src.pageSize, uint32(len(pages)), 1, maxTXID, p.src.now, allPages(len(pages)), func(pg uint32) []byte { return pages[pg-1] })
	p.put(storage.SnapshotLevel, 1, maxTXID, data, storage.Metadata{Node: "test", CommitTime: p.src.now, PostApplyChecksum: p.src.sum})
}

func (p *testPrimary) put(level int, minTXID, maxTXID ltx.TXID, data []byte, md storage.Metadata) {
	p.t.Helper()
	if p.noMeta {
		path := p.store.Path(level, minTXID, maxTXID)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			p.t.Fatal(err)
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			p.t.Fatal(err)
		}
		return
	}
	if _, err := p.store.Create(context.Background(), level, minTXID, maxTXID, bytes.NewReader(data), md); err != nil {
		p.t.Fatal(err)
	}
}

// commit runs change on the source and ships the result as the next L0
// file; corrupt, if set, may damage the file's bytes first.
func (p *testPrimary) commit(change func(s *source), corrupt func([]byte)) ltxFile {
	p.t.Helper()
	prev := p.src.pages
	change(p.src)
	f := p.src.next()
	for i, pg := range p.src.pages {
		if i >= len(prev) || !bytes.Equal(pg, prev[i]) {
			p.pgnos[f.maxTXID] = append(p.pgnos[f.maxTXID], uint32(i+1))
		}
	}
	p.states[f.maxTXID] = p.src.pages
	data := f.data
	if corrupt != nil {
		data = append([]byte(nil), f.data...)
		corrupt(data)
	}
	p.put(storage.LevelL0, f.minTXID, f.maxTXID, data, f.md)
	return f // with the good bytes, to repair the store with
}

// replace puts f in the store in place of what is at its key.
func (p *testPrimary) replace(f ltxFile) {
	p.t.Helper()
	if err := p.store.Delete(context.Background(), []storage.FileInfo{{Level: storage.LevelL0, MinTXID: f.minTXID, MaxTXID: f.maxTXID}}); err != nil {
		p.t.Fatal(err)
	}
	p.put(storage.LevelL0, f.minTXID, f.maxTXID, f.data, f.md)
}

func (p *testPrimary) transfers(n int, rng *rand.Rand) {
	for i := 0; i < n; i++ {
		p.commit(func(s *source) { s.transfer(rng) }, nil)
	}
}

// compact writes files minTXID..maxTXID as one file at level (every page any
// of them wrote, as of maxTXID) and deletes those L0 files.
func (p *testPrimary) compact(level int, minTXID, maxTXID ltx.TXID) {
	p.t.Helper()
	final := p.states[maxTXID]
	seen := map[uint32]bool{}
	var pgnos []uint32
	for x := minTXID; x <= maxTXID; x++ {
		for _, pg := range p.pgnos[x] {
			if !seen[pg] && int(pg) <= len(final) {
				seen[pg] = true
				pgnos = append(pgnos, pg)
			}
		}
	}
	sortU32(pgnos)
	data := ltxtest.Encode(p.t, p.src.pageSize, uint32(len(final)), minTXID, maxTXID, p.src.now, pgnos, func(pg uint32) []byte { return final[pg-1] })
	p.put(level, minTXID, maxTXID, data, storage.Metadata{
		Node: "test", CommitTime: p.src.now, PreApplyChecksum: sumPages(p.states[minTXID-1]), PostApplyChecksum: sumPages(final),
	})
	var del []storage.FileInfo
	for x := minTXID; x <= maxTXID; x++ {
		del = append(del, storage.FileInfo{Level: storage.LevelL0, MinTXID: x, MaxTXID: x})
	}
	if err := p.store.Delete(context.Background(), del); err != nil {
		p.t.Fatal(err)
	}
}

func sortU32(a []uint32) {
	for i := 1; i < len(a); i++ {
		for j := i; j > 0 && a[j] < a[j-1]; j-- {
			a[j], a[j-1] = a[j-1], a[j]
		}
	}
}

// countingClient counts requests to the store by kind; while failGets is
// set, every GET fails as a store that cannot be read would.
type countingClient struct {
	storage.Client
	opens, lists atomic.Int64
	failGets     atomic.Bool
}

func (c *countingClient) Open(ctx context.Context, level int, minTXID, maxTXID ltx.TXID, offset, size int64) (*storage.Object, error) {
	c.opens.Add(1)
	if c.failGets.Load() {
		return nil, errors.New("test: GETs fail")
	}
	return c.Client.Open(ctx, level, minTXID, maxTXID, offset, size)
}

func (c *countingClient) List(ctx context.Context, level int, seek ltx.TXID) (storage.Iterator, error) {
	c.lists.Add(1)
	return c.Client.List(ctx, level, seek)
}

// runningFollower is a follower running in the background of a test.
type runningFollower struct {
	f          *Follower
	client     *countingClient
	bootstraps *atomic.Int64
	cancel     context.CancelFunc
	done       chan error
	reg        *prometheus.Registry
}

func startFollower(t *testing.T, p *testPrimary, path string) *runningFollower {
	t.Helper()
	return startFollowerWith(t, p, path, nil)
}

// startFollowerWith is startFollower with the config adjusted by adjust.
func startFollowerWith(t *testing.T, p *testPrimary, path string, adjust func(*Config)) *runningFollower {
	t.Helper()
	client := &countingClient{Client: p.store}
	boots := &atomic.Int64{}
	reg := prometheus.NewRegistry()
	boot := RestoreBootstrap(nil)
	cfg := Config{
		Path: path, Client: client, PollInterval: 50 * time.Millisecond, CheckpointInterval: 100 * time.Millisecond,
		Metrics: NewMetrics(reg),
		Logger:  hclog.New(&hclog.LoggerOptions{Level: hclog.Info, Output: testWriter{t}}),
		Bootstrap: func(ctx context.Context, c storage.Client, path string) (BootstrapResult, error) {
			boots.Add(1)
			return boot(ctx, c, path)
		},
	}
	if adjust != nil {
		adjust(&cfg)
	}
	f, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rf := &runningFollower{f: f, client: client, bootstraps: boots, cancel: cancel, done: make(chan error, 1), reg: reg}
	go func() { rf.done <- f.Run(ctx) }()
	t.Cleanup(func() { rf.stop() })
	return rf
}

func (rf *runningFollower) stop() error {
	if rf.cancel == nil {
		return nil
	}
	rf.cancel()
	rf.cancel = nil
	return <-rf.done
}

// waitTXID waits until the follower has applied txid (or stopped).
func (rf *runningFollower) waitTXID(t *testing.T, txid ltx.TXID) Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st, err := rf.f.Wait(ctx, func(st Status) bool { return st.TXID >= txid || st.State == StateStopped })
	if err != nil {
		t.Fatalf("follower did not reach TXID %s: %+v", txid, st)
	}
	if st.State == StateStopped {
		t.Fatalf("follower stopped: %s", st.Error)
	}
	return st
}

// waitState waits until the follower's status satisfies cond.
func (rf *runningFollower) waitState(t *testing.T, what string, cond func(Status) bool) Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st, err := rf.f.Wait(ctx, cond)
	if err != nil {
		t.Fatalf("follower did not reach %s: %+v", what, st)
	}
	return st
}

// waitStopped waits until the follower has stopped applying.
func (rf *runningFollower) waitStopped(t *testing.T) Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := rf.f.Wait(ctx, func(st Status) bool { return st.State == StateStopped })
	if err != nil {
		t.Fatalf("follower did not stop: %+v %v", st, err)
	}
	return st
}

// followedAndStopped sets up a primary with n transfers (drawn from a rand
// seeded with seed), follows it to its head and stops the follower at
// TXID at: the start of every test of what a follower finds on its return.
func followedAndStopped(t *testing.T, seed int64, n int) (p *testPrimary, rng *rand.Rand, path string, at ltx.TXID) {
	t.Helper()
	dir := t.TempDir()
	p = newTestPrimary(t, dir)
	rng = rand.New(rand.NewSource(seed))
	p.transfers(n, rng)
	path = filepath.Join(dir, "follower.db")
	rf := startFollower(t, p, path)
	at = rf.waitTXID(t, p.src.txid).TXID
	rf.stop()
	return p, rng, path, at
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// TestFollowLive: bootstrap by restore, then follow a primary that keeps
// writing (transfers, schema changes, shrinking VACUUM, big growth) while
// three reader processes check the invariant; the follower ends identical to the
// source, and an idle follower only GETs.
func TestFollowLive(t *testing.T) {
	dir := t.TempDir()
	p := newTestPrimary(t, dir)
	rng := rand.New(rand.NewSource(2))
	p.transfers(5, rng)
	path := filepath.Join(dir, "follower.db")
	rf := startFollower(t, p, path)
	rf.waitTXID(t, p.src.txid)

	readers := startReaderProcesses(t, path, 3)
	for i := 0; i < 60; i++ {
		switch i % 15 {
		case 3:
			p.commit(func(s *source) { s.exec(`INSERT INTO blobs (b) VALUES (randomblob(150000))`) }, nil)
		case 7:
			p.commit(func(s *source) {
				s.exec(`CREATE TABLE IF NOT EXISTS extra (a)`)
				s.exec(`CREATE INDEX IF NOT EXISTS extra_a ON extra (a)`)
			}, nil)
		case 11:
			p.commit(func(s *source) { s.exec(`DELETE FROM blobs`); s.exec(`DROP TABLE IF EXISTS extra`); s.exec(`VACUUM`) }, nil)
		default:
			p.transfers(1, rng)
		}
		if i%10 == 0 {
			rf.waitTXID(t, p.src.txid) // let readers see intermediate states
		}
	}
	rf.waitTXID(t, p.src.txid)
	reads, bad := readers.stop(t)
	if bad != 0 || reads == 0 {
		t.Fatalf("%d inconsistent reads of %d", bad, reads)
	}
	st := rf.f.Status()
	if st.Checksum != p.src.sum || rf.bootstraps.Load() != 1 {
		t.Fatalf("status %+v, source checksum %s, %d bootstraps", st, p.src.sum, rf.bootstraps.Load())
	}
	assertSame(t, p.src, path)

	// Idle: polls are GETs, and one LIST of L0 (the store's head) per
	// DefaultHeadListPolls of them.
	lists, opens := rf.client.lists.Load(), rf.client.opens.Load()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const polls = 3 * DefaultHeadListPolls
	if _, err := rf.f.Wait(ctx, func(Status) bool { return rf.client.opens.Load() >= opens+polls }); err != nil {
		t.Fatal(err)
	}
	if got := rf.client.lists.Load() - lists; got > polls/DefaultHeadListPolls+1 {
		t.Fatalf("idle follower listed the store %d times in %d polls", got, polls)
	}
	t.Logf("3 reader processes: %d read transactions, 0 inconsistent; %d GETs and %d LISTs in all", reads, rf.client.opens.Load(), rf.client.lists.Load())
}

// TestFollowRestartResumes: a follower stopped mid-stream resumes from its
// recorded position without a new bootstrap.
func TestFollowRestartResumes(t *testing.T) {
	dir := t.TempDir()
	p := newTestPrimary(t, dir)
	rng := rand.New(rand.NewSource(3))
	p.transfers(3, rng)
	path := filepath.Join(dir, "follower.db")
	rf := startFollower(t, p, path)
	rf.waitTXID(t, p.src.txid)
	p.transfers(20, rng)
	rf.waitTXID(t, p.src.txid-10)
	rf.stop()

	p.transfers(5, rng)
	rf2 := startFollower(t, p, path)
	rf2.waitTXID(t, p.src.txid)
	if n := rf2.bootstraps.Load(); n != 0 {
		t.Fatalf("restart bootstrapped %d times", n)
	}
	assertSame(t, p.src, path)
}

// TestFollowTamperedLocal: a local database changed while the follower was
// down is kept aside (with its WAL) and a fresh copy is bootstrapped.
func TestFollowTamperedLocal(t *testing.T) {
	p, rng, path, _ := followedAndStopped(t, 4, 3)
	writeBehind(t, path, `UPDATE accounts SET balance = 12345 WHERE id = 1`)

	p.transfers(2, rng)
	rf2 := startFollower(t, p, path)
	st := rf2.waitTXID(t, p.src.txid)
	if st.MovedAside == "" || rf2.bootstraps.Load() != 1 {
		t.Fatalf("tampered file not moved aside and re-bootstrapped: %+v", st)
	}
	var bal int
	adb, err := sql.Open("sqlite3", ReadOnlyDSN(st.MovedAside))
	if err != nil {
		t.Fatal(err)
	}
	defer adb.Close()
	if err := adb.QueryRow(`SELECT balance FROM accounts WHERE id = 1`).Scan(&bal); err != nil || bal != 12345 {
		t.Fatalf("kept-aside copy lost the local change: %d, %v", bal, err)
	}
	assertSame(t, p.src, path)
}

// TestFollowCorruptObject: a corrupt object stalls the follower with an
// error naming it, health turns unhealthy, and reads of the last good state
// go on; once the object is repaired the follower goes on by itself.
func TestFollowCorruptObject(t *testing.T) {
	dir := t.TempDir()
	p := newTestPrimary(t, dir)
	rng := rand.New(rand.NewSource(5))
	p.transfers(3, rng)
	path := filepath.Join(dir, "follower.db")
	rf := startFollower(t, p, path)
	good := rf.waitTXID(t, p.src.txid)
	bad := p.commit(func(s *source) { s.transfer(rng) }, func(b []byte) { b[len(b)-30] ^= 0x55 })

	st := rf.waitState(t, "stalled", func(st Status) bool { return st.State == StateStalled })
	name := objectName(0, bad.minTXID, bad.maxTXID)
	if !strings.Contains(st.Error, name) || !strings.Contains(st.Error, "corrupt object") || st.Healthy || st.TXID != good.TXID || !st.Ready {
		t.Fatalf("status after corrupt object: %+v", st)
	}
	srv := serve(t, rf)
	if code, body := httpGet(t, srv, "/healthz"); code != http.StatusServiceUnavailable || !strings.Contains(body, name) {
		t.Fatalf("/healthz: %d %s", code, body)
	}
	var total int
	db, err := sql.Open("sqlite3", ReadOnlyDSN(path))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.QueryRow(`SELECT sum(balance) FROM accounts`).Scan(&total); err != nil || total != testAccounts*testBalance {
		t.Fatalf("reads after the stop: %d, %v", total, err)
	}

	p.replace(bad)
	st = rf.waitTXID(t, bad.maxTXID)
	if st.State != StateFollowing || !st.Healthy || st.Error != "" {
		t.Fatalf("status after the repair: %+v", st)
	}
	if code, body := httpGet(t, srv, "/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz after the repair: %d %s", code, body)
	}
	assertSame(t, p.src, path)
	if err := rf.stop(); err != nil {
		t.Fatalf("Run returned %v", err)
	}
}

// TestFollowStallEndsWhenBadObjectRemoved: a follower stalled on a corrupt
// object with nothing after it is healthy again once the object is gone
// (the store then holds nothing it cannot apply).
func TestFollowStallEndsWhenBadObjectRemoved(t *testing.T) {
	dir := t.TempDir()
	p := newTestPrimary(t, dir)
	rng := rand.New(rand.NewSource(11))
	p.transfers(2, rng)
	rf := startFollower(t, p, filepath.Join(dir, "follower.db"))
	good := rf.waitTXID(t, p.src.txid)
	bad := p.commit(func(s *source) { s.transfer(rng) }, func(b []byte) { b[len(b)-30] ^= 0x55 })
	rf.waitState(t, "stalled", func(st Status) bool { return st.State == StateStalled })
	if err := p.store.Delete(context.Background(), []storage.FileInfo{{Level: storage.LevelL0, MinTXID: bad.minTXID, MaxTXID: bad.maxTXID}}); err != nil {
		t.Fatal(err)
	}
	st := rf.waitState(t, "healthy again", func(st Status) bool { return st.State == StateFollowing && st.Healthy })
	if st.TXID != good.TXID || st.Error != "" {
		t.Fatalf("after the bad object was removed: %+v", st)
	}
}

// failingClient fails every request while fail is set, as a store that
// does not answer.
type failingClient struct {
	storage.Client
	fail atomic.Bool
}

var errStoreDown = errors.New("store down (test)")

func (c *failingClient) Open(ctx context.Context, level int, minTXID, maxTXID ltx.TXID, offset, size int64) (*storage.Object, error) {
	if c.fail.Load() {
		return nil, errStoreDown
	}
	return c.Client.Open(ctx, level, minTXID, maxTXID, offset, size)
}

func (c *failingClient) List(ctx context.Context, level int, seek ltx.TXID) (storage.Iterator, error) {
	if c.fail.Load() {
		return nil, errStoreDown
	}
	return c.Client.List(ctx, level, seek)
}

// TestFollowStoreOutage: a store that fails every request for
// UnhealthyAfter stalls the follower (unhealthy, the error in the status);
// once it answers again the follower is healthy and goes on.
func TestFollowStoreOutage(t *testing.T) {
	dir := t.TempDir()
	p := newTestPrimary(t, dir)
	rng := rand.New(rand.NewSource(12))
	p.transfers(2, rng)
	client := &failingClient{Client: p.store}
	f, err := New(Config{Path: filepath.Join(dir, "follower.db"), Client: client, PollInterval: 50 * time.Millisecond,
		UnhealthyAfter: 300 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		Logger: hclog.New(&hclog.LoggerOptions{Level: hclog.Info, Output: testWriter{t}})})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	defer func() { cancel(); <-done }()
	rf := &runningFollower{f: f}
	rf.waitTXID(t, p.src.txid)

	client.fail.Store(true)
	st := rf.waitState(t, "stalled", func(st Status) bool { return st.State == StateStalled })
	if st.Healthy || !strings.Contains(st.Error, errStoreDown.Error()) || !strings.Contains(st.Error, "no progress for") {
		t.Fatalf("during the outage: %+v", st)
	}
	client.fail.Store(false)
	p.transfers(1, rng)
	st = rf.waitState(t, "healthy at the new TXID", func(st Status) bool { return st.Healthy && st.TXID == p.src.txid })
	if st.State != StateFollowing || st.Error != "" {
		t.Fatalf("after the outage: %+v", st)
	}
}

// TestFollowCompacted: a follower that was down while its next L0 files were
// compacted away catches up from the higher levels (including a compaction
// that straddles its position), then returns to L0.
func TestFollowCompacted(t *testing.T) {
	p, rng, path, at := followedAndStopped(t, 6, 4)
	p.transfers(10, rng)
	p.commit(func(s *source) { s.exec(`INSERT INTO blobs (b) VALUES (randomblob(100000))`) }, nil)
	p.transfers(10, rng)
	// L1 straddles the follower's position; L2 covers the rest of L1's span.
	p.compact(1, at-1, at+6)
	p.compact(2, at+7, at+18)
	p.transfers(3, rng)

	rf2 := startFollower(t, p, path)
	rf2.waitTXID(t, p.src.txid)
	if rf2.bootstraps.Load() != 0 {
		t.Fatal("caught up by bootstrapping, not from the levels")
	}
	assertSame(t, p.src, path)
}

// TestFollowFromSnapshot: when no level holds the next TXID but a newer
// snapshot exists, the follower applies the snapshot as a full image
// instead of bootstrapping again.
func TestFollowFromSnapshot(t *testing.T) {
	p, rng, path, at := followedAndStopped(t, 10, 2)
	p.transfers(5, rng)
	p.commit(func(s *source) { s.exec(`INSERT INTO blobs (b) VALUES (randomblob(100000))`) }, nil)
	snap := p.src.txid
	p.putSnapshot(snap)
	var del []storage.FileInfo
	for x := at + 1; x <= snap; x++ {
		del = append(del, storage.FileInfo{Level: 0, MinTXID: x, MaxTXID: x})
	}
	if err := p.store.Delete(context.Background(), del); err != nil {
		t.Fatal(err)
	}
	p.transfers(2, rng)
	rf2 := startFollower(t, p, path)
	rf2.waitTXID(t, p.src.txid)
	if rf2.bootstraps.Load() != 0 {
		t.Fatal("bootstrapped again instead of applying the snapshot")
	}
	assertSame(t, p.src, path)
}

// TestFollowGap: later L0 files appear while the next TXID's does not: the
// follower reports the store's head, its lag and the gap (unhealthy), and
// goes on by itself once the missing file is put back.
func TestFollowGap(t *testing.T) {
	dir := t.TempDir()
	p := newTestPrimary(t, dir)
	rng := rand.New(rand.NewSource(7))
	p.transfers(2, rng)
	path := filepath.Join(dir, "follower.db")
	rf := startFollower(t, p, path)
	at := rf.waitState(t, "caught up", func(st Status) bool { return st.TXID == p.src.txid && st.CaughtUp }).TXID

	missing := p.commit(func(s *source) { s.transfer(rng) }, nil)
	if err := p.store.Delete(context.Background(), []storage.FileInfo{{Level: 0, MinTXID: missing.minTXID, MaxTXID: missing.maxTXID}}); err != nil {
		t.Fatal(err)
	}
	p.transfers(2, rng)
	st := rf.waitState(t, "stalled", func(st Status) bool { return st.State == StateStalled })
	if !strings.Contains(st.Error, "gap in the history") || st.TXID != at || st.Healthy || st.CaughtUp ||
		st.HeadTXID != p.src.txid || st.LagTXIDs != uint64(p.src.txid-at) {
		t.Fatalf("%+v", st)
	}
	srv := serve(t, rf)
	if code, body := httpGet(t, srv, "/healthz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "gap in the history") {
		t.Fatalf("/healthz: %d %s", code, body)
	}

	p.put(storage.LevelL0, missing.minTXID, missing.maxTXID, missing.data, missing.md)
	st = rf.waitState(t, "caught up", func(st Status) bool { return st.TXID == p.src.txid && st.CaughtUp })
	if st.State != StateFollowing || !st.Healthy || st.Error != "" || st.LagTXIDs != 0 {
		t.Fatalf("after the missing file came back: %+v", st)
	}
	assertSame(t, p.src, path)
}

// TestFollowLagFromStoreHead: a follower that finds every next file but is
// behind reports the store's head and the TXIDs between, not 0.
func TestFollowLagFromStoreHead(t *testing.T) {
	dir := t.TempDir()
	p := newTestPrimary(t, dir)
	rng := rand.New(rand.NewSource(9))
	p.transfers(2, rng)
	path := filepath.Join(dir, "follower.db")
	rf := startFollower(t, p, path)
	rf.waitState(t, "caught up", func(st Status) bool { return st.TXID == p.src.txid && st.CaughtUp })
	// The follower's next apply is held up by GETs that fail (nobody else
	// can write its database to hold it up: it holds the write lock), so it
	// stays behind while the store grows and its listings see the head.
	rf.client.failGets.Store(true)
	hold := func() { rf.client.failGets.Store(false) }
	p.transfers(5, rng)
	st := rf.waitState(t, "the store's head", func(st Status) bool { return st.HeadTXID == p.src.txid })
	if st.CaughtUp || st.LagTXIDs != uint64(p.src.txid-st.TXID) || st.LagTXIDs == 0 {
		t.Fatalf("behind the store's head: %+v", st)
	}
	hold()
	rf.waitState(t, "caught up", func(st Status) bool { return st.TXID == p.src.txid && st.CaughtUp && st.LagTXIDs == 0 })
}

// TestFollowHTTP checks /status, /readyz and /metrics of a running follower.
func TestFollowHTTP(t *testing.T) {
	dir := t.TempDir()
	p := newTestPrimary(t, dir)
	rng := rand.New(rand.NewSource(8))
	p.transfers(2, rng)
	rf := startFollower(t, p, filepath.Join(dir, "follower.db"))
	rf.waitTXID(t, p.src.txid)
	p.transfers(1, rng)
	rf.waitTXID(t, p.src.txid)
	srv := serve(t, rf)
	get := func(path string) (int, string) { return httpGet(t, srv, path) }
	code, body := get("/status")
	var doc struct{ DBs []Status }
	if err := json.Unmarshal([]byte(body), &doc); err != nil || code != 200 || len(doc.DBs) != 1 {
		t.Fatalf("/status: %d %s %v", code, body, err)
	}
	st := doc.DBs[0]
	if st.Role != "follower" || st.TXID != p.src.txid || st.Checksum != p.src.sum || !strings.Contains(body, `"lag_seconds"`) {
		t.Fatalf("/status: %s", body)
	}
	if code, body := get("/readyz"); code != 200 {
		t.Fatalf("/readyz: %d %s", code, body)
	}
	if code, body := get("/healthz"); code != 200 {
		t.Fatalf("/healthz: %d %s", code, body)
	}
	_, body = get("/metrics")
	for _, m := range []string{"understudy_follower_txid", "understudy_follower_head_txid", "understudy_follower_lag_seconds", "understudy_follower_apply_duration_seconds", `understudy_follower_store_requests_total{db="follower.db",result="not_found",type="get"}`} {
		if !strings.Contains(body, m) {
			t.Fatalf("/metrics lacks %s", m)
		}
	}
}

// TestFollowMissingDBWithLeftovers: a -wal left beside a missing database is
// moved aside before bootstrapping (SQLite would replay it into the new file).
func TestFollowMissingDBWithLeftovers(t *testing.T) {
	dir := t.TempDir()
	p := newTestPrimary(t, dir)
	path := filepath.Join(dir, "follower.db")
	if err := os.WriteFile(path+"-wal", []byte("stale"), 0o644); err != nil {
		t.Fatal(err)
	}
	rf := startFollower(t, p, path)
	rf.waitTXID(t, p.src.txid)
	m, _ := filepath.Glob(path + ".orphan-*-wal")
	if len(m) != 1 {
		t.Fatalf("leftover -wal not moved aside: %v", m)
	}
}

// TestHelperFollowerProcess is the child of TestFollowKill9: a follower in
// its own process, killed with SIGKILL by the parent.
func TestHelperFollowerProcess(t *testing.T) {
	replica, path := os.Getenv("FOLLOWER_TEST_REPLICA"), os.Getenv("FOLLOWER_TEST_DB")
	if replica == "" {
		t.Skip("only run as the child of TestFollowKill9")
	}
	store, err := file.New(replica)
	if err != nil {
		t.Fatal(err)
	}
	f, err := New(Config{Path: path, Client: store, PollInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Fatal(f.Run(context.Background())) // runs until killed
}

// TestFollowKill9: a follower process killed with SIGKILL while it applies
// resumes from its recorded position without a new bootstrap, and ends
// identical to the source.
func TestFollowKill9(t *testing.T) {
	dir := t.TempDir()
	p := newTestPrimary(t, dir)
	rng := rand.New(rand.NewSource(9))
	p.transfers(2, rng)
	path := filepath.Join(dir, "follower.db")
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperFollowerProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), "FOLLOWER_TEST_REPLICA="+p.store.Dir(), "FOLLOWER_TEST_DB="+path)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	// Wait for the child's bootstrap, then give it a stream to apply.
	posAt := func() ltx.TXID {
		rec, err := readPosition(PositionPath(path))
		if err != nil {
			return 0
		}
		return rec.TXID
	}
	for posAt() == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	for i := 0; i < 200; i++ {
		p.commit(func(s *source) {
			s.exec(`INSERT INTO blobs (b) VALUES (randomblob(?))`, 2000+rng.Intn(20000))
			s.transfer(rng)
		}, nil)
		if i == 100 {
			p.commit(func(s *source) { s.exec(`DELETE FROM blobs`); s.exec(`VACUUM`) }, nil)
		}
	}
	for posAt() < 40 {
		time.Sleep(time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	killedAt := posAt()

	rf := startFollower(t, p, path)
	st := rf.waitTXID(t, p.src.txid)
	if rf.bootstraps.Load() != 0 || st.MovedAside != "" {
		t.Fatalf("restart after SIGKILL at TXID %s bootstrapped again: %+v", killedAt, st)
	}
	t.Logf("killed at recorded TXID %s of %s; resumed and caught up", killedAt, p.src.txid)
	assertSame(t, p.src, path)
}

// TestHelperReaderProcess is a reader child of startReaderProcesses: it runs
// readLoop on its own read-only connection until the stop file appears, then
// prints "reads N bad M".
func TestHelperReaderProcess(t *testing.T) {
	path, stopFile := os.Getenv("FOLLOWER_TEST_READ_DB"), os.Getenv("FOLLOWER_TEST_READ_STOP")
	if path == "" {
		t.Skip("only run as a child of startReaderProcesses")
	}
	stop := make(chan struct{})
	go func() {
		for {
			if _, err := os.Stat(stopFile); err == nil {
				close(stop)
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	var reads, bad atomic.Int64
	if err := readLoop(path, stop, &reads, &bad); err != nil {
		t.Fatalf("reader: %v", err)
	}
	fmt.Printf("reads %d bad %d\n", reads.Load(), bad.Load())
}

type readerProcesses struct {
	cmds     []*exec.Cmd
	outs     []*bytes.Buffer
	stopFile string
}

// startReaderProcesses starts n reader processes on the database at path.
func startReaderProcesses(t *testing.T, path string, n int) *readerProcesses {
	t.Helper()
	rp := &readerProcesses{stopFile: filepath.Join(t.TempDir(), "stop")}
	for i := 0; i < n; i++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperReaderProcess$", "-test.count=1", "-test.v")
		cmd.Env = append(os.Environ(), "FOLLOWER_TEST_READ_DB="+path, "FOLLOWER_TEST_READ_STOP="+rp.stopFile)
		out := &bytes.Buffer{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		rp.cmds, rp.outs = append(rp.cmds, cmd), append(rp.outs, out)
	}
	t.Cleanup(func() {
		for _, c := range rp.cmds {
			if c.ProcessState == nil {
				c.Process.Kill()
				c.Wait()
			}
		}
	})
	return rp
}

// stop ends the readers and sums their counts; a reader error fails t.
func (rp *readerProcesses) stop(t *testing.T) (reads, bad int64) {
	t.Helper()
	if err := os.WriteFile(rp.stopFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for i, c := range rp.cmds {
		err := c.Wait()
		var r, b int64
		out := rp.outs[i].String()
		idx := strings.Index(out, "reads ")
		if err != nil || idx < 0 {
			t.Fatalf("reader process %d: %v\n%s", i, err, out)
		}
		if _, err := fmt.Sscanf(out[idx:], "reads %d bad %d", &r, &b); err != nil {
			t.Fatalf("reader process %d output: %v\n%s", i, err, out)
		}
		reads += r
		bad += b
	}
	return reads, bad
}

// TestFollowWaitsForFirstUpload: a follower started before the primary's
// first upload waits, then bootstraps.
func TestFollowWaitsForFirstUpload(t *testing.T) {
	dir := t.TempDir()
	store, err := file.New(filepath.Join(dir, "replica"))
	if err != nil {
		t.Fatal(err)
	}
	f, err := New(Config{Path: filepath.Join(dir, "follower.db"), Client: store, PollInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	defer func() { cancel(); <-done }()
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	if st, err := f.Wait(wctx, func(st Status) bool { return st.Error != "" }); err != nil || st.Ready {
		t.Fatalf("%+v %v", st, err)
	}
	p := newTestPrimary(t, dir)
	p.transfers(2, rand.New(rand.NewSource(11)))
	st, err := f.Wait(wctx, func(st Status) bool { return st.TXID >= 1 && st.Ready })
	if err != nil || st.Healthy != true {
		t.Fatalf("%+v %v", st, err)
	}
}

// serve starts the endpoints of a running follower as the command does.
func serve(t *testing.T, rf *runningFollower) *httpserver.Server {
	t.Helper()
	srv, err := httpserver.Start(httpserver.Options{
		Addr: "127.0.0.1:0", Gatherer: rf.reg,
		Healthy: func() error { return HealthError(rf.f) },
		Ready:   func() error { return ReadyError(rf.f) },
		Status:  func() any { return StatusDocument(rf.f) },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}

func httpGet(t *testing.T, srv *httpserver.Server, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + srv.Addr() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestFollowLitestreamCompactedRebuilds: a follower of a replica written by
// Litestream (no database checksums) was down while its next L0 files were
// compacted into an L1 file that starts before its position and then
// removed (Litestream's defaults: L1 every 30 s, L0 kept 5 min). The L1 file
// cannot be verified against the local database, so the follower rebuilds
// at the store's newest position, in place: a reader connection opened
// before keeps working, the database file is never swapped, and the
// follower is healthy and follows on afterwards. It used to stay stuck with
// "/healthz" 503 until the local file was deleted by hand.
func TestFollowLitestreamCompactedRebuilds(t *testing.T) {
	dir := t.TempDir()
	p := newTestPrimary(t, dir)
	p.noMeta = true
	if err := p.store.Delete(context.Background(), []storage.FileInfo{{Level: storage.SnapshotLevel, MinTXID: 1, MaxTXID: 1}}); err != nil {
		t.Fatal(err)
	}
	p.putSnapshot(1)
	rng := rand.New(rand.NewSource(11))
	p.transfers(4, rng)
	path := filepath.Join(dir, "follower.db")
	rf := startFollower(t, p, path)
	at := rf.waitTXID(t, p.src.txid).TXID
	rf.stop()
	ino := inode(t, path)

	reader, err := sql.Open("sqlite3", ReadOnlyDSN(path))
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	reader.SetMaxOpenConns(1)
	var before int
	if err := reader.QueryRow(`SELECT count(*) FROM sqlite_master`).Scan(&before); err != nil {
		t.Fatal(err)
	}

	p.transfers(8, rng)
	p.compact(1, at-1, at+6) // starts before the follower's next TXID
	p.transfers(2, rng)

	rf2 := startFollower(t, p, path)
	st := rf2.waitState(t, "rebuilt and caught up", func(st Status) bool { return st.TXID == p.src.txid && st.CaughtUp })
	if !st.Healthy || st.State != StateFollowing || st.Error != "" {
		t.Fatalf("after the rebuild: %+v", st)
	}
	if rf2.bootstraps.Load() != 0 {
		t.Fatal("bootstrapped again (moving the database aside) instead of rebuilding in place")
	}
	if got := inode(t, path); got != ino {
		t.Fatalf("the database file was replaced (inode %d -> %d): open connections would read a removed file", ino, got)
	}
	if _, err := os.Stat(path + rebuildSuffix); !os.IsNotExist(err) {
		t.Fatalf("rebuild temp file left behind: %v", err)
	}
	var after int
	if err := reader.QueryRow(`SELECT count(*) FROM sqlite_master`).Scan(&after); err != nil || after != before {
		t.Fatalf("a reader opened before the rebuild: %d tables (before %d), %v", after, before, err)
	}
	assertSame(t, p.src, path)

	// And it follows on from there.
	p.transfers(2, rng)
	rf2.waitTXID(t, p.src.txid)
	assertSame(t, p.src, path)
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

// TestFollowWake: a follower given Config.Wake makes no store request while
// caught up and not woken (its idle poll is the sender's business, a
// directory's heads index), and catches up when woken: by a GET of the
// next L0 file, or, when the files were compacted away meanwhile, by the
// listing of every level that a known head past its position calls for.
func TestFollowWake(t *testing.T) {
	dir := t.TempDir()
	p := newTestPrimary(t, dir)
	rng := rand.New(rand.NewSource(11))
	p.transfers(2, rng)
	wake := make(chan ltx.TXID, 1)
	rf := startFollowerWith(t, p, filepath.Join(dir, "follower.db"), func(c *Config) { c.Wake = wake })
	st := rf.waitState(t, "caught up", func(st Status) bool { return st.TXID == p.src.txid && st.CaughtUp })

	// A wake that tells the head: one GET finds nothing new; then, idle
	// and not woken, 20 poll intervals without a request.
	wake <- p.src.txid
	polled := *st.LastPoll
	rf.waitState(t, "the GET after the wake", func(st Status) bool { return st.LastPoll != nil && st.LastPoll.After(polled) })
	requests := func() int64 { return rf.client.opens.Load() + rf.client.lists.Load() }
	before := requests()
	time.Sleep(20 * 50 * time.Millisecond)
	if got := requests() - before; got != 0 {
		t.Errorf("%d store requests while caught up and not woken, want 0", got)
	}

	// New files: woken, it applies them.
	p.transfers(3, rng)
	wake <- p.src.txid
	rf.waitState(t, "caught up after a wake", func(st Status) bool { return st.TXID == p.src.txid && st.CaughtUp })

	// New files compacted away before the wake: the head past the
	// position makes it list the levels and apply L1.
	at := p.src.txid
	p.transfers(4, rng)
	p.compact(1, at+1, p.src.txid)
	wake <- p.src.txid
	rf.waitState(t, "caught up from L1 after a wake", func(st Status) bool { return st.TXID == p.src.txid && st.CaughtUp })
	if rf.bootstraps.Load() != 1 {
		t.Errorf("%d bootstraps, want the first one only", rf.bootstraps.Load())
	}
	assertSame(t, p.src, filepath.Join(dir, "follower.db"))
}
