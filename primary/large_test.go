package primary

import (
	"context"
	"os"
	"testing"

	"github.com/superfly/ltx"
)

// TestLockPage replicates a database that grows past 1 GiB, across the
// lock-byte page (never written, skipped by checksums and snapshots), then
// writes a full image of it after a checkpoint while the shipper was down.
// It writes several GiB of temp files: run with UNDERSTUDY_LONG_TESTS=1.
func TestLockPage(t *testing.T) {
	if os.Getenv("UNDERSTUDY_LONG_TESTS") == "" {
		t.Skip("set UNDERSTUDY_LONG_TESTS=1 to run (writes several GiB)")
	}
	e := newEnv(t, 1)
	ctx := context.Background()
	opts := e.options()
	opts.MaxCheckpointPageCount = 1 << 30 // keep this test about the lock page
	d := e.open(opts)
	for i := 0; i < 11; i++ {
		e.exec("INSERT INTO t (b) VALUES (zeroblob(100*1024*1024))")
		if err := d.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	lock := ltx.LockPgno(d.pageSize)
	if d.table.commit() <= lock {
		t.Fatalf("database has %d pages, lock page is %d: not crossed", d.table.commit(), lock)
	}
	e.exec("UPDATE t SET v = 'touched' WHERE id % 2 = 0")
	e.exec("DELETE FROM t WHERE id = 3")
	if err := d.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	e.checkRestore(d)
	d.Close()

	// Checkpoint while down: the next TXID is a full image across the lock page.
	e.exec("PRAGMA wal_checkpoint(TRUNCATE)")
	e.exec("INSERT INTO t (v) VALUES ('after')")
	d = e.open(opts)
	defer d.Close()
	if d.fullImages != 1 {
		t.Fatalf("full images at open = %d, want 1", d.fullImages)
	}
	if err := d.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	e.checkRestoreAndFile(d)
}
