package primary

import (
	"context"
	"testing"
)

func TestDecideResume(t *testing.T) {
	const a, b, c = 0x8000000000000aaa, 0x8000000000000bbb, 0x8000000000000ccc
	for _, tc := range []struct {
		name     string
		in       resumeInput
		action   resumeAction
		txid     uint64
		useLocal bool
	}{
		{"empty store", resumeInput{DBChecksum: a}, resumeFull, 0, false},
		{"empty store ignores a stale local position", resumeInput{HaveLocal: true, LocalTXID: 9, LocalChecksum: a, DBChecksum: a}, resumeFull, 0, false},
		{"at the store's position", resumeInput{StoreTXID: 5, StoreChecksum: a, StoreHasSum: true, DBChecksum: a}, resumeContinue, 5, false},
		{"moved on, no local position", resumeInput{StoreTXID: 5, StoreChecksum: a, StoreHasSum: true, DBChecksum: b}, resumeFull, 5, false},
		{"moved on, WAL continues", resumeInput{StoreTXID: 5, StoreChecksum: a, StoreHasSum: true,
			HaveLocal: true, LocalTXID: 5, LocalChecksum: a, WALContinues: true, DBChecksum: b}, resumeDelta, 5, true},
		{"moved on, WAL restarted", resumeInput{StoreTXID: 5, StoreChecksum: a, StoreHasSum: true,
			HaveLocal: true, LocalTXID: 5, LocalChecksum: a, DBChecksum: b}, resumeFull, 5, true},
		{"local ahead of every store", resumeInput{StoreTXID: 5, StoreChecksum: a, StoreHasSum: true,
			HaveLocal: true, LocalTXID: 7, LocalChecksum: c, DBChecksum: c}, resumeContinue, 7, true},
		{"store ahead of local (another writer or lost shadow dir)", resumeInput{StoreTXID: 9, StoreChecksum: a, StoreHasSum: true,
			HaveLocal: true, LocalTXID: 7, LocalChecksum: c, WALContinues: true, DBChecksum: b}, resumeFull, 9, false},
		{"same TXID, different checksum: the store wins", resumeInput{StoreTXID: 7, StoreChecksum: a, StoreHasSum: true,
			HaveLocal: true, LocalTXID: 7, LocalChecksum: c, WALContinues: true, DBChecksum: b}, resumeFull, 7, false},
		{"newest file without metadata", resumeInput{StoreTXID: 3, DBChecksum: a}, resumeFull, 3, false},
		{"power loss rolled back a shipped transaction", resumeInput{StoreTXID: 5, StoreChecksum: a, StoreHasSum: true,
			HaveLocal: true, LocalTXID: 5, LocalChecksum: a, WALContinues: false, DBChecksum: c}, resumeFull, 5, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := decideResume(tc.in)
			if d.Action != tc.action || uint64(d.TXID) != tc.txid || d.UseLocal != tc.useLocal || d.Reason == "" {
				t.Errorf("decideResume = %+v, want action %v txid %d useLocal %v", d, tc.action, tc.txid, tc.useLocal)
			}
		})
	}
}

// TestResumeAfterWALRestartDuringOpen: the application wrote while the
// shipper was down and checkpointed every frame back; at Open the pin
// holds read mark 0, so the application's next write restarts the WAL
// while the image is read. The frames since the last position were in
// the WAL at the capture: they ship as one TXID, no full image (Open used
// to read them again after the image and find them overwritten).
func TestResumeAfterWALRestartDuringOpen(t *testing.T) {
	e := newEnv(t, 1)
	ctx := context.Background()
	d := e.open(e.options())
	e.exec("INSERT INTO t (v) VALUES ('one')")
	if err := d.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	d.Close()
	for i := 0; i < 20; i++ {
		e.exec("INSERT INTO t (v) VALUES ('while down')")
	}
	e.exec("PRAGMA wal_checkpoint(PASSIVE)") // every frame back; the WAL restarts at the next write

	d, err := New(e.options())
	if err != nil {
		t.Fatal(err)
	}
	var salt uint32
	d.openCaptureHook = func() {
		salt = d.walHdr.Salt1
		e.exec("INSERT INTO t (v) VALUES ('restarts the WAL during Open')")
	}
	if err := d.Open(ctx); err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	f, hdr, ok, err := d.openWAL()
	if err != nil || !ok {
		t.Fatalf("no WAL after Open: %v", err)
	}
	f.Close()
	if salt == 0 || hdr.Salt1 == salt {
		t.Fatalf("the WAL did not restart during Open (salt %08x, before %08x); the test does not test what it says", hdr.Salt1, salt)
	}
	if d.fullImages != 0 {
		t.Fatalf("%d full images at Open; the WAL proved the history at the capture", d.fullImages)
	}
	if got := d.Status().TXID; got != 3 {
		t.Fatalf("TXID after Open = %d, want 3 (the frames written while down as one TXID)", got)
	}
	if err := d.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if d.fullImages != 0 {
		t.Fatalf("%d full images after the restart was followed", d.fullImages)
	}
	e.checkRestore(d)
}

// TestResumeAfterRestartWhileCaughtUp: the shipper had shipped everything
// and copied every frame back; the application's next write restarted the
// WAL before the shipper's next sync, and the shipper died then. The old
// WAL provably ended at the last position (it holds nothing after it), so
// the new WAL's frames ship as the next TXID: no full image.
func TestResumeAfterRestartWhileCaughtUp(t *testing.T) {
	e := newEnv(t, 1)
	ctx := context.Background()
	d := e.open(e.options())
	for i := 0; i < 30; i++ {
		e.exec("INSERT INTO t (v) VALUES ('before')")
	}
	if err := d.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	d.mu.Lock()
	d.lastCkptAt = 0
	d.opts.MinCheckpointPageCount = 1
	err := d.checkpointLocked(ctx) // PASSIVE: every frame back
	salt := d.walHdr.Salt1
	d.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	for i := 0; i < 3; i++ {
		e.exec("INSERT INTO t (v) VALUES ('restarts the WAL')")
	}
	d = e.open(e.options())
	defer d.Close()
	if d.walHdr.Salt1 != salt+1 {
		t.Fatalf("WAL salt-1 %08x, was %08x: the WAL did not restart once; the test does not test what it says", d.walHdr.Salt1, salt)
	}
	if d.fullImages != 0 {
		t.Fatalf("%d full images at Open; the old WAL ended at the last position", d.fullImages)
	}
	if got := d.Status().TXID; got != 3 {
		t.Fatalf("TXID after Open = %d, want 3", got)
	}
	e.exec("INSERT INTO t (v) VALUES ('after')")
	if err := d.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	e.checkRestore(d)
}
