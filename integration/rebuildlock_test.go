package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/integration/harness"
)

// TestKilledPrimaryFollowsWithStoreCutKeepsWrites: a primary killed with
// kill -9 and restarted with follow while its store (a file replica behind
// a symbolic link) is unreachable keeps its database in place, saves it
// as diverged and sets it for a rebuild that fails until the store is
// back. An app opening a connection per write runs throughout. While the
// rebuild is retried the write lock stays held: every write in the outage
// fails with SQLITE_BUSY, and each write the app saw acknowledged is in a
// diverged copy or the store afterwards. Before, the applier let go of the
// lock between retries: writes committed in the gaps were acknowledged and
// then overwritten by the rebuild.
func TestKilledPrimaryFollowsWithStoreCutKeepsWrites(t *testing.T) {
	dir := t.TempDir()
	store, link := filepath.Join(dir, "store"), filepath.Join(dir, "store-link")
	blocker := filepath.Join(dir, "blocker")
	if err := os.MkdirAll(store, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, blocker, "a file, so that nothing can exist below it\n")
	pointLink := func(target string) {
		t.Helper()
		tmp := link + ".tmp"
		os.Remove(tmp)
		if err := os.Symlink(target, tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, link); err != nil {
			t.Fatal(err)
		}
	}
	pointLink(store)
	dbPath := filepath.Join(dir, "app.db")
	addr := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	cfg := writeConfig(t, "addr: "+addr, "dbs:", "  - path: "+dbPath, "    replicas:",
		"      - name: file", "        url: file://"+link, "        sync-interval: 100ms",
		"    follower:", "      poll-interval: 100ms")

	db := openDB(t, dbPath)
	mustExec(t, db, `CREATE TABLE ia (id INTEGER PRIMARY KEY, v TEXT)`)
	for i := 0; i < 20; i++ {
		mustExec(t, db, `INSERT INTO ia(v) VALUES ('shipped')`)
	}
	db.Close()
	primary := start(t, nil, "replicate", "-config", cfg)
	eventually(t, 30*time.Second, "the primary's writes shipped", func() bool {
		st, err := statusDB[nodeStatus](addr)
		return err == nil && st.TXID > 0 && len(st.Replicas) == 1 && st.Replicas[0].TXID == st.TXID
	})
	primary.kill()

	// The app writes on: on the killed primary these are diverged.
	app := startIntruder(t, dbPath, "ia", 50*time.Millisecond)
	eventually(t, 10*time.Second, "the app's writes on the killed primary", func() bool {
		return countRows(t, dbPath, "ia") >= 40
	})
	pointLink(filepath.Join(blocker, "store"))
	f := start(t, nil, "follow", "-config", cfg)
	type followStatus struct {
		State    string   `json:"state"`
		TXID     ltx.TXID `json:"txid"`
		Diverged string   `json:"diverged_saved_to"`
		Error    string   `json:"error"`
	}
	st := func() followStatus {
		s, _ := statusDB[followStatus](addr)
		return s
	}
	eventually(t, 30*time.Second, "the diverged copy saved", func() bool { return st().Diverged != "" })
	// A second app writer, only in the outage: everything it tries must be
	// refused.
	outage := startIntruder(t, dbPath, "ia", 50*time.Millisecond)
	eventually(t, 30*time.Second, "three failed rebuilds", func() bool {
		return strings.Count(f.out.String(), "cannot start following; will retry") >= 3
	})
	ro := outage.finish(t)
	t.Logf("app in the outage: %+v", ro)
	if ro.Committed != 0 || ro.Busy == 0 {
		t.Errorf("app in the outage: %d writes committed (first at %s), %d refused with SQLITE_BUSY; want every write refused while the rebuild is retried",
			ro.Committed, ro.FirstOKAt, ro.Busy)
	}
	pointLink(store)
	eventually(t, 30*time.Second, "following after the store is back", func() bool {
		s := st()
		return s.State == "following" && s.TXID > 0
	})
	ra := app.finish(t)
	t.Logf("app throughout: %+v", ra)
	ra.neverMissing(t, "app throughout")

	// Every acknowledged write is in the store (the rebuilt database) or in
	// a diverged copy; a row saved twice counts once.
	kept := map[int64]bool{}
	var copies []string
	all, _ := filepath.Glob(dbPath + ".diverged-*")
	for _, p := range all {
		if !strings.HasSuffix(p, "-understudy") {
			copies = append(copies, p)
		}
	}
	for _, p := range append(copies, dbPath) {
		c := openDB(t, p)
		r, err := c.Query(`SELECT id FROM ia WHERE v = 'intruder'`)
		if err != nil {
			t.Fatalf("read %s: %v", p, err)
		}
		for r.Next() {
			var id int64
			if err := r.Scan(&id); err != nil {
				t.Fatal(err)
			}
			kept[id] = true
		}
		r.Close()
		c.Close()
	}
	if acked := ra.Committed + ro.Committed; len(kept) != acked {
		t.Errorf("%d app writes acknowledged, %d in the store or a diverged copy (%v): %d lost",
			acked, len(kept), copies, acked-len(kept))
	}
	t.Logf("%d app writes acknowledged, kept in %d diverged copies", len(kept), len(copies))
}
