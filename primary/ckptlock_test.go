package primary

import (
	"context"
	"os/exec"
	"testing"
	"time"
)

// lockState is whether the shipper holds the checkpoint lock and a pin.
func lockState(d *DB) (held, pinned bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ckl.isHeld(), d.pinIdx >= 0
}

// waitLockHeld waits until a step of the Run loop took the checkpoint lock
// and let the pin go.
func waitLockHeld(t *testing.T, d *DB) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; {
		if held, pinned := lockState(d); held && !pinned {
			return
		}
		if time.Now().After(deadline) {
			held, pinned := lockState(d)
			t.Fatalf("after 10 s: checkpoint lock held %v, pin held %v; want the lock instead of the pin", held, pinned)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestCheckpointLockProtectsUnshippedFrames: between syncs the shipper
// holds SQLite's checkpoint lock instead of a pin. Commits the shipper has
// not seen yet must survive the application's own TRUNCATE checkpoint
// (without the lock and without a pin it copies them back and resets the
// WAL, and the next sync would find a history break).
func TestCheckpointLockProtectsUnshippedFrames(t *testing.T) {
	e := newEnv(t, 1)
	d := e.open(e.options())
	defer d.Close()
	stop := run(t, d)
	e.exec("INSERT INTO t (v) VALUES ('first')")
	waitLockHeld(t, d)
	if err := stop(); err != nil { // nothing ships from here on
		t.Fatal(err)
	}
	for i := 0; i < 50; i++ {
		e.exec("INSERT INTO t (b) VALUES (randomblob(3000))")
	}
	var busy, log, ckpt int
	if err := e.app.QueryRow("PRAGMA wal_checkpoint(TRUNCATE)").Scan(&busy, &log, &ckpt); err != nil {
		t.Fatal(err)
	}
	if busy != 1 {
		t.Fatalf("the application's TRUNCATE checkpoint ran (busy %d, log %d, checkpointed %d) past unshipped frames", busy, log, ckpt)
	}
	if err := d.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if d.fullImages != 1 {
		t.Fatalf("%d full images; want only the first (no history break)", d.fullImages)
	}
	e.checkRestore(d)
}

// TestCheckpointLockLetsRecoveryThrough: a WAL recovery (after a writer
// died half-way through a commit, simulated by zeroing the wal-index
// headers from another process) needs the checkpoint lock. The shipper
// must let it go, or the application could not read or write again:
// SQLite's readers retry for about 10 s, then fail with "locking
// protocol". Also while the shipper is busy in a long step (an fsync on a
// loaded machine; simulated by holding its mutex): the lock must not wait
// for the next step (it once did, and the write failed under load).
func TestCheckpointLockLetsRecoveryThrough(t *testing.T) {
	for _, tc := range []struct {
		name     string
		busyStep bool
	}{
		{"idle shipper", false},
		{"shipper busy in a step", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, 1)
			d := e.open(e.options())
			defer d.Close()
			stop := run(t, d)
			for i := 0; i < 20; i++ {
				e.exec("INSERT INTO t (v) VALUES ('before')")
			}
			waitLockHeld(t, d)
			if tc.busyStep {
				d.mu.Lock()
			}
			out, err := exec.Command("dd", "if=/dev/zero", "of="+e.path+"-shm", "bs=96", "count=1", "conv=notrunc").CombinedOutput()
			if err != nil {
				t.Fatalf("zero the wal-index headers: %v\n%s", err, out)
			}
			// The application's busy timeout is 5 s (openApp).
			_, werr := e.app.Exec("INSERT INTO t (v) VALUES ('after the recovery')")
			if tc.busyStep {
				d.mu.Unlock()
			}
			if werr != nil {
				t.Fatalf("the application's write after a needed recovery: %v", werr)
			}
			var n int
			if err := e.app.QueryRow("SELECT count(*) FROM t").Scan(&n); err != nil || n != 21 {
				t.Fatalf("rows after the recovery: %d, %v; want 21", n, err)
			}
			if err := stop(); err != nil {
				t.Fatal(err)
			}
			if err := d.Sync(context.Background()); err != nil {
				t.Fatal(err)
			}
			e.checkRestore(d)
		})
	}
}

// TestPassiveWaitsForOtherCheckpointer: a PASSIVE checkpoint that finds
// another checkpointer holding the checkpoint lock (the application's
// autocheckpoint, in the moment the shipper lets its own lock go) tries
// again instead of giving up at once: SQLite never waits for that lock,
// and a catch-up round before a WAL restart that gave up left all of the
// copying to the write-locked window (or made the restart fail).
func TestPassiveWaitsForOtherCheckpointer(t *testing.T) {
	e := newEnv(t, 1)
	d := e.open(e.options())
	defer d.Close()
	for i := 0; i < 20; i++ {
		e.exec("INSERT INTO t (b) VALUES (randomblob(3000))")
	}
	// The other checkpointer: an OFD lock of its own on the byte SQLite
	// locks for checkpoints. Its descriptor stays open: closing a -shm
	// descriptor would drop this process's SQLite locks on the file.
	other, err := openCkptLock(e.path, nil)
	if err != nil {
		t.Fatal(err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.ckl.release()
	if !other.acquire(time.Second) {
		t.Fatal("could not take the checkpoint lock as the other checkpointer")
	}
	retries := 0
	passiveBusyHook = func() {
		retries++
		other.release() // the other checkpoint ends
	}
	defer func() { passiveBusyHook = nil }()
	r, err := d.passiveLocked(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if r.Log < 0 {
		t.Fatalf("PASSIVE gave up busy (log %d, checkpointed %d) while another checkpointer held the lock; want it to try again", r.Log, r.Checkpointed)
	}
	if retries == 0 {
		t.Fatal("the checkpoint never found the lock taken (the test did not set up its case)")
	}
}
