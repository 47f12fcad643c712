package primary

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/understudy-db/understudy/internal/storage"
)

// TestSnapshotReadDoesNotStopShipping: a snapshot's image is read without
// the shipper's lock, on a read transaction of its own. Commits made while
// it is being read are shipped meanwhile (reading a large database takes
// seconds per GiB: with the lock held, nothing was shipped for that long),
// and the snapshot that lands is exactly the TXID it began at.
func TestSnapshotReadDoesNotStopShipping(t *testing.T) {
	e := newEnv(t, 1)
	e.exec("INSERT INTO t (b) VALUES (randomblob(50000))")
	d := e.open(e.options())
	defer d.Close()
	started, release := make(chan struct{}), make(chan struct{})
	d.snapshotReadHook = func() { close(started); <-release }
	stop := run(t, d)
	ctx := context.Background()
	e.exec("INSERT INTO t (v) VALUES ('before the snapshot')")
	if err := d.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	r := d.replicas[0]
	r.mu.Lock()
	r.snapDue = true
	r.mu.Unlock()
	d.requestSnapshot()
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("no snapshot started within 10 s of the request")
	}
	at := d.Status()

	// The image read is blocked in the hook. Commits are shipped anyway.
	for i := 0; i < 5; i++ {
		e.exec("INSERT INTO t (v) VALUES ('while the snapshot is read')")
	}
	synced := make(chan error, 1)
	go func() { synced <- d.Sync(ctx) }()
	select {
	case err := <-synced:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		close(release)
		t.Fatal("Sync waited for the snapshot's image read: the shipper's lock is held while reading")
	}
	if head := d.Status().TXID; head <= at.TXID {
		t.Fatalf("head %s after commits during the snapshot; want past %s", head, at.TXID)
	}
	for _, f := range listLevel(t, e.stores[0], storage.SnapshotLevel) {
		if f.MaxTXID == at.TXID {
			t.Fatalf("snapshot 1-%s in the store before its image was read", at.TXID)
		}
	}

	close(release)
	var snap *storage.FileInfo
	for deadline := time.Now().Add(10 * time.Second); snap == nil; {
		for _, f := range listLevel(t, e.stores[0], storage.SnapshotLevel) {
			if f.MaxTXID == at.TXID {
				snap = &f
			}
		}
		if snap == nil {
			if time.Now().After(deadline) {
				t.Fatalf("snapshot 1-%s not in the store 10 s after its read was released", at.TXID)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(e.dir, "from-snapshot.db")
	if txid, sum := restoreFiles(t, e.stores[0], []storage.FileInfo{*snap}, out); txid != at.TXID || sum != at.Checksum {
		t.Fatalf("snapshot restores to %s %s; want %s %s (the point it began at)", txid, sum, at.TXID, at.Checksum)
	}
	checkIntegrity(t, out)
	e.checkRestore(d)
}
