package integration

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/superfly/ltx"
)

// pendingTXIDs reads the S3 replica's pending_txids and the DB's TXID
// from /status.
func (p *proxiedStack) pendingTXIDs(t *testing.T) (int, ltx.TXID) {
	t.Helper()
	pending, txid, err := p.tryPendingTXIDs()
	if err != nil {
		t.Fatal(err)
	}
	return pending, txid
}

func (p *proxiedStack) tryPendingTXIDs() (int, ltx.TXID, error) {
	var st struct {
		DBs []struct {
			TXID     ltx.TXID `json:"txid"`
			Replicas []struct {
				Pending int `json:"pending_txids"`
			} `json:"replicas"`
		} `json:"dbs"`
	}
	if err := getStatus(p.addr, &st); err != nil || len(st.DBs) != 1 || len(st.DBs[0].Replicas) != 1 {
		return 0, 0, fmt.Errorf("/status: %+v, %v", st, err)
	}
	return st.DBs[0].Replicas[0].Pending, st.DBs[0].TXID, nil
}

// TestReplicateBacklogBoundedWithSlowStore: with 1 s sync-interval and 2 s
// round trips to the store the replica keeps up: over 30 new TXIDs the
// pending backlog stays small. Uploading one L0 file per round trip, it
// grew by one TXID every 2 s for as long as the latency lasted.
func TestReplicateBacklogBoundedWithSlowStore(t *testing.T) {
	s := newProxiedStack(t, "1s")
	// Small commits every few milliseconds: one TXID per sync-interval.
	a := startApp(t, s.dbPath)
	d := s.replicate(t)
	eventually(t, time.Minute, "the replica to start shipping", func() bool {
		p, txid, err := s.tryPendingTXIDs()
		return err == nil && txid > 1 && p < 3
	})
	s.slowReplies(t, 2*time.Second)

	_, start := s.pendingTXIDs(t)
	maxPending, last := 0, start
	for last < start+30 {
		if d.exited() {
			t.Fatalf("replicate exited:\n%s", tailLines(d.out.String(), 40))
		}
		pending, txid := s.pendingTXIDs(t)
		if txid > start+5 { // past the round trips already under way at the start
			maxPending = max(maxPending, pending)
		}
		last = txid
		time.Sleep(200 * time.Millisecond) // a sampling period, not a synchronisation
	}
	t.Logf("TXIDs %d..%d: most pending %d", start, last, maxPending)
	// One TXID a second, 2 s a round trip: about 3 pending at a time when
	// files go up concurrently; one file per round trip passed 15.
	if maxPending > 10 {
		t.Errorf("the backlog reached %d pending TXIDs over 30 syncs at 2 s round trips: the replica does not keep up", maxPending)
	}
	a.halt()
	img := snapshotImage(t, a.db)
	s.waitShipped(t, img)
	if code := d.stop(t, syscall.SIGTERM, 90*time.Second); code != 0 {
		t.Fatalf("replicate: exit %d:\n%s", code, tailLines(d.out.String(), 40))
	}
	if got := fileChecksum(t, s.restore(t, s.direct)); got != img.checksum {
		t.Fatalf("restore: checksum %s, database %s", got, img.checksum)
	}
}
