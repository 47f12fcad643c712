package primary

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/superfly/ltx"
	"golang.org/x/sys/unix"

	"github.com/understudy-db/understudy/internal/sqlitex"
	"github.com/understudy-db/understudy/internal/wal"
)

// DB ships one database to its replicas.
type DB struct {
	opts  Options
	log   hclog.Logger
	m     *metrics
	clock Clock
	local *localStore

	replicas []*replica

	// head is the newest TXID written locally (read by the uploaders),
	// headSum its post-apply checksum.
	head    atomic.Uint64
	headSum atomic.Uint64
	// fenced is set once a create-only upload found its key taken.
	fenced    atomic.Pointer[error]
	fencedCh  chan struct{}
	fenceOnce sync.Once
	// stopErr is set by stop: Run ends with it (no write halt).
	stopErr  atomic.Pointer[error]
	stopCh   chan struct{}
	stopOnce sync.Once

	snapReq chan struct{} // snapshot requests to the ship loop

	syncFails *failures // the ship loop's run of failed syncs (log rate, /healthz)

	snapMu    sync.Mutex
	snapshots []*snapshotJob // level-9 files waiting for upload

	// mu guards the shipper state below: the connections, the WAL position
	// and the page table. Every sync, checkpoint and snapshot holds it.
	mu     sync.Mutex
	opened bool
	closed bool
	writer *sqlitex.Conn    // BEGIN IMMEDIATE: quiesce and write halt
	ckpt   *sqlitex.Conn    // checkpoints; never in a transaction
	pins   [2]*sqlitex.Conn // the WAL pin, rotated between the two
	pinIdx int              // active pin, -1 none
	// ckl is the checkpoint lock held between our own checkpoints instead
	// of a pin (ckptlock.go); nil if "-shm" could not be opened. oldCkl
	// are those of closed connections, closed with the DB.
	ckl    *ckptLock
	oldCkl []*ckptLock
	// dbf is a read-only descriptor of the database file for reading
	// images directly (imagefile.go), dbfIno its inode. Like ckl's it is
	// never closed while a connection of this process may be open (closing
	// any descriptor of the file drops every POSIX lock the process holds
	// on it): those of replaced files wait in oldDBF until Close.
	dbf    *os.File
	dbfIno uint64
	oldDBF []*os.File
	// view is how the pin started by the last capture sees the image
	// (imagefile.go), valid while pinSeq == viewSeq; pinSeq counts pin
	// starts.
	view            imageView
	viewOK          bool
	pinSeq, viewSeq uint64
	halted          bool // writer holds the write lock for good
	// writerHeld: the writer came from Options.Locks holding the write lock,
	// which Open lets go once the database ships.
	writerHeld bool
	// sideInodes are the inodes of "<path>-wal" and "<path>-shm" when the
	// connections were opened (0: absent): after the database file is
	// replaced, new connections wait until neither is still there.
	sideInodes  [2]uint64
	staleWarned bool         // the wait for stale side files was logged
	connGen     atomic.Int64 // bumped when the connections are reopened

	// realPath is the file the database path resolves to (symbolic links
	// followed once, at Open): SQLite keeps "-wal" and "-shm" beside it,
	// so every file operation uses it. walPath is its "-wal", shadowDir
	// the shadow directory (beside it unless configured).
	realPath  string
	walPath   string
	shadowDir string
	// mainFile reads the database file itself at Open (fileproof.go); it
	// stays open until Close, after the connections.
	mainFile *os.File
	// dbID is the identity of the database history (identity.go),
	// written with every object.
	dbID     string
	inode    uint64
	pageSize uint32
	table    *pageTable
	txid     ltx.TXID
	checksum ltx.Checksum // == table.checksum()

	haveWAL bool
	walHdr  wal.Header
	walPos  wal.Position // after the last shipped commit frame
	// An application in exclusive locking mode (exclusive.go): when it was
	// last looked for, the processes seen then, and the message while one
	// is seen (Status.Warning).
	exclCheckedAt time.Time
	exclSeen      []int
	exclGen       uint64 // the procLocks reading exclSeen came from
	exclusive     atomic.Pointer[string]

	// proof: at Open, what the capture proved about the WAL since the
	// local position.
	proof walProof
	// expectRestart: we saw, under the write lock, that the current WAL
	// generation ends at walPos, so a new generation starts from a database
	// file equal to our position.
	expectRestart bool
	// imagePending: a history break's full image was not written (a full
	// disk, say). Its capture moved the shipped WAL position to the end of
	// the WAL, past frames that only the image holds, so until the image is
	// written every sync must retry it instead of following the WAL from
	// there (which would ship the newer frames on a page table that lacks
	// the older ones). The reason, for the log.
	imagePending string

	lastSync        time.Time
	framesShipped   int64 // WAL frames read and shipped since Open
	walRestarts     int   // quiesced WAL restarts since Open
	walRestartsSeen int   // WAL generations followed since Open
	fullImages      int   // full images written since Open
	maxHold         time.Duration
	lastCkptAt      int64 // WAL frame count at the last PASSIVE checkpoint
	// truncatePending: a quiesced restart left the WAL file at its size;
	// truncate it when the database is quiet.
	truncatePending bool
	// stage holds the WAL pages shipped since the last L0 file (stage.go).
	stage stage

	// snapshotting: a snapshot's image is being read in the background
	// (startSnapshotAsyncLocked); snapWG waits for it.
	snapshotting bool
	snapWG       sync.WaitGroup
	// snapshotReadHook, if set (tests), runs before a snapshot's image is
	// read; openCaptureHook, at Open, after the capture.
	snapshotReadHook func()
	openCaptureHook  func()
}

// New validates the options and returns an unopened DB.
func New(opts Options) (*DB, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	d := &DB{
		opts:     o,
		log:      o.Logger.With("db", o.Path),
		m:        newMetrics(o.Registerer),
		clock:    o.Clock,
		pinIdx:   -1,
		fencedCh: make(chan struct{}),
		stopCh:   make(chan struct{}),
		snapReq:  make(chan struct{}, 1),
	}
	d.syncFails = newFailures("sync", d.log)
	for _, ro := range o.Replicas {
		d.replicas = append(d.replicas, newReplica(d, ro))
	}
	return d, nil
}

// Path is the database path.
func (d *DB) Path() string { return d.opts.Path }

// checkFile gives a clear error for a path that cannot be a database we can
// replicate. It only stats the file: opening and closing a descriptor of the
// database would drop the process's SQLite locks on it.
func checkFile(path string) (uint64, error) {
	st, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, fmt.Errorf("database %s does not exist; create it (start the application once) or fix the path", path)
	} else if errors.Is(err, fs.ErrPermission) {
		return 0, fmt.Errorf("database %s: permission denied; run as a user that can read and write it and its directory", path)
	} else if err != nil {
		return 0, fmt.Errorf("database %s: %w", path, err)
	}
	if st.IsDir() {
		return 0, fmt.Errorf("database %s is a directory, not a SQLite database file", path)
	}
	if !st.Mode().IsRegular() {
		return 0, fmt.Errorf("database %s is not a regular file", path)
	}
	if err := unix.Access(path, unix.R_OK|unix.W_OK); err != nil {
		return 0, fmt.Errorf("database %s: no read/write permission (%v); the shipper needs write access for checkpoints and to halt writes", path, err)
	}
	return st.Sys().(*syscall.Stat_t).Ino, nil
}

// checkDatabaseDir refuses a database whose directory this process cannot
// create files in while SQLite still has to create the -wal or -shm file
// there: SQLite's own error for that, "attempt to write a readonly
// database", blames the database file, which may well be writable. A
// missing database is left to primary.Open, which says so.
func checkDatabaseDir(path string) error {
	if _, err := os.Stat(path); err != nil {
		return nil
	}
	dir := filepath.Dir(path)
	if unix.Access(dir, unix.W_OK|unix.X_OK) == nil {
		return nil
	}
	var missing []string
	for _, p := range []string{path + "-wal", path + "-shm"} {
		if _, err := os.Lstat(p); errors.Is(err, fs.ErrNotExist) {
			missing = append(missing, filepath.Base(p))
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return fmt.Errorf("database %s: cannot create %s in directory %s (not writable by this user): SQLite keeps the -wal and -shm files beside the database, "+
		"and understudy its shadow directory; make the directory writable for the user running understudy and the application",
		path, strings.Join(missing, " and "), dir)
}

// Open opens the database, puts it in WAL mode, pins the WAL, and decides
// how to continue the history in the replica stores.
func (d *DB) Open(ctx context.Context) (err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.opened {
		return fmt.Errorf("database %s: already open", d.opts.Path)
	}
	if err := d.resolvePath(); err != nil {
		return err
	}
	path := d.realPath
	if err := checkDatabaseDir(path); err != nil {
		return err
	}
	if d.inode, err = checkFile(path); err != nil {
		return err
	}
	defer func() {
		if err != nil && sqlitex.IsBusy(err) {
			err = explainLocked(path, err)
		}
		if err != nil {
			d.closeConnsLocked()
			d.local.close()
			d.local = nil
			if d.mainFile != nil {
				d.mainFile.Close()
				d.mainFile = nil
			}
		}
	}()
	if err := d.openConnsLocked(ctx); err != nil {
		return err
	}
	if d.local, err = openLocalStore(d.shadowDir, d.opts.Path, d.realPath); err != nil {
		return err
	}

	// What the stores hold.
	for _, r := range d.replicas {
		if err := r.load(ctx); err != nil {
			return err
		}
	}

	// The database as it is now: capture an image at a known WAL position.
	// The application may hold the write lock for a while (a TRUNCATE
	// checkpoint waits for readers with the lock held): retry.
	lp, haveLP, err := d.local.position()
	if err != nil {
		return err
	}
	for attempt := 1; ; attempt++ {
		// Under the capture's write lock no writer can restart the WAL: the
		// frames since the local position are proven (and their page
		// numbers kept) there. Read later, they could be gone: a pin taken
		// on a fully checkpointed WAL holds read mark 0, which does not
		// stop the next writer's restart, and the image read takes
		// seconds (seen: "the WAL history since cannot be proven" after a
		// kill -9 although it held every frame at the capture).
		d.proof = walProof{}
		err := d.captureThenLocked(ctx, false, func() error {
			if haveLP && lp.PageSize == d.pageSize {
				d.proof = d.proveWALLocked(lp)
				if d.proof.batch == nil {
					d.proof = d.proveFromFileLocked(lp, d.proof)
				}
			}
			return nil
		})
		if err == nil {
			break
		}
		if !sqlitex.IsBusy(err) || attempt == 6 || ctx.Err() != nil {
			return fmt.Errorf("database %s: %w", path, err)
		}
		d.log.Warn("database is busy; retrying", "error", err)
	}
	if d.openCaptureHook != nil {
		d.openCaptureHook()
	}
	in, stores, err := d.resumeInputLocked(ctx)
	if err != nil {
		return err
	}
	// The database's checksum decides how to resume a history; with every
	// store empty there is none, and the first full image (the next step)
	// reads the pages anyway: one read of a large database, not two.
	img := &image{table: newPageTable(d.pageSize)}
	if in.StoreTXID != 0 {
		if img, err = d.readImageLocked(ctx, nil); err != nil {
			return err
		}
		in.DBChecksum = img.table.checksum()
	}
	d.table = img.table
	adopting, err := d.settleIdentityLocked(stores, in.DBChecksum)
	if err != nil {
		return err
	}
	if adopting {
		// The local files belong to this database's own history, not to
		// the adopted replica's: its next TXID is a full image.
		in.HaveLocal, in.LocalTXID, in.LocalChecksum, in.WALContinues = false, 0, 0, false
		in.Adopting = true
	}
	dec := decideResume(in)
	args := []any{"page_size", d.pageSize, "pages", d.table.commit(), "store_txid", in.StoreTXID,
		"local_txid", in.LocalTXID, "decision", dec.Action.String(), "base_txid", dec.TXID, "reason", dec.Reason, "database_id", d.dbID}
	if d.realPath != d.opts.Path {
		args = append(args, "real_path", d.realPath)
	}
	d.log.Info("opened", args...)
	if !dec.UseLocal {
		// The local files do not continue the store's history.
		if err := d.local.remove(^ltx.TXID(0)); err != nil {
			return err
		}
		for _, md := range d.local.snapshots() {
			d.local.removeSnapshot(md.TXID)
		}
	}
	d.txid, d.checksum = dec.TXID, dec.Checksum
	d.head.Store(uint64(d.txid))
	switch dec.Action {
	case resumeContinue:
		d.checksum = d.table.checksum()
		d.headSum.Store(uint64(d.checksum))
	case resumeDelta:
		if err := d.shipDeltaLocked(ctx, img.table); err != nil {
			return err
		}
	case resumeFull:
		if err := d.writeFullImageCapturedLocked(ctx, dec.Reason); err != nil {
			return err
		}
	}
	if err := d.savePositionLocked(); err != nil {
		return err
	}
	for _, r := range d.replicas {
		r.afterOpen()
	}
	d.requeueSnapshots()
	if d.writerHeld {
		// Open to ship: the application's writes may commit from now on.
		if err := d.writer.SetKeepWriteLock(ctx, false); err != nil {
			return err
		}
		d.writerHeld = false
		d.log.Info("let go of the write lock handed over by the follower: the application may write")
	}
	d.opened = true
	// The first look for an exclusive-mode application is one interval
	// after Open, not at the first step: Open itself explains a lock held
	// for good (explainLocked), and /proc/locks, read whole, grows with
	// every database open on the machine, so the first start of a
	// directory of thousands, each opened for a moment, spent a tenth of
	// its CPU reading it.
	d.exclCheckedAt = time.Now()
	return nil
}

// connCacheKiB is the page cache of each of the shipper's connections. They
// read the schema, page 1 and, for snapshots, every page once through
// sqlite_dbpage: a cache only holds memory (SQLite's default is 2 MiB per
// connection, filled by every snapshot).
const connCacheKiB = 128

// pinBusyTimeout is the busy timeout of the pin connections.
const pinBusyTimeout = 100 * time.Millisecond

// connOpts are the options of every connection of the shipper. KeepWAL:
// after the database file was replaced, closing a connection to the old
// one must not delete the new file's "-wal" and "-shm" by name.
func connOpts(busyTimeout time.Duration) sqlitex.Options {
	return sqlitex.Options{BusyTimeout: busyTimeout, CacheKiB: connCacheKiB, KeepWAL: true}
}

func (d *DB) openConnsLocked(ctx context.Context) error {
	path := d.realPath
	var err error
	// The writer has no busy handler: lockLocked retries on its own terms.
	// HoldableVFS: the lock it takes to halt the application's writes is
	// kept past its transaction (keepWrites), for the follower the node may
	// become. A lock handed over by the node's follower is held already.
	if d.writer = d.opts.Locks.Take(path); d.writer != nil {
		d.writerHeld = true
		err = d.writer.Exec(ctx, fmt.Sprintf("PRAGMA busy_timeout=0; PRAGMA cache_size=-%d", connCacheKiB))
	} else {
		wo := connOpts(-1)
		wo.VFS = sqlitex.HoldableVFS
		d.writer, err = sqlitex.Open(ctx, path, wo)
	}
	if err != nil {
		if sqlitex.IsNotADB(err) {
			return fmt.Errorf("database %s is not a SQLite database (file is not a database); check the path", path)
		}
		return fmt.Errorf("database %s: cannot open: %w", path, err)
	}
	mode, err := d.journalMode(ctx)
	if err != nil {
		if sqlitex.IsNotADB(err) {
			return fmt.Errorf("database %s is not a SQLite database (file is not a database); check the path", path)
		}
		return fmt.Errorf("database %s: cannot read it: %w", path, err)
	}
	if err := sqlitex.CheckDBPage(ctx); err != nil {
		return err
	}
	if mode != "wal" {
		var got string
		for attempt := 0; ; attempt++ {
			err := d.writer.QueryRow(ctx, "PRAGMA journal_mode=WAL").Scan(&got)
			if err == nil {
				break
			}
			if !sqlitex.IsBusy(err) || attempt == 100 {
				return fmt.Errorf("database %s: set WAL mode: %w", path, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
		if got != "wal" {
			return fmt.Errorf("database %s: could not switch to WAL mode (journal_mode is %q); stop other users of the database and retry", path, got)
		}
		d.log.Info("switched database to WAL mode", "previous_journal_mode", mode)
	}
	n, err := d.writer.Int(ctx, "PRAGMA page_size")
	if err != nil {
		return err
	}
	d.pageSize = uint32(n)
	if d.ckpt, err = sqlitex.Open(ctx, path, connOpts(-1)); err != nil {
		return err
	}
	for i := range d.pins {
		// A short busy timeout: a pin that cannot start is mostly one
		// waiting for a WAL recovery that our checkpoint lock blocks
		// (startPinLocked then releases it).
		if d.pins[i], err = sqlitex.Open(ctx, path, connOpts(pinBusyTimeout)); err != nil {
			return err
		}
	}
	d.sideInodes = sideInodes(path)
	if f, err := os.Open(path); err != nil {
		d.log.Warn("images are read through SQLite (slower)", "error", err)
	} else if st, err := f.Stat(); err == nil {
		d.dbf, d.dbfIno = f, st.Sys().(*syscall.Stat_t).Ino
	} else {
		d.oldDBF = append(d.oldDBF, f) // never closed before Close
	}
	// Taken at the end of a step (relaxPinLocked), not here: Open must not
	// stand in the way of a WAL recovery.
	if d.ckl, err = openCkptLock(path, d.log); err != nil {
		d.log.Warn("holding a WAL pin between syncs instead of the checkpoint lock", "error", err)
		d.ckl = nil
	}
	return nil
}

// sideInodes returns the inodes of "<path>-wal" and "<path>-shm" (0 where
// absent).
func sideInodes(path string) [2]uint64 {
	var out [2]uint64
	for i, suffix := range []string{"-wal", "-shm"} {
		if st, err := os.Stat(path + suffix); err == nil {
			out[i] = st.Sys().(*syscall.Stat_t).Ino
		}
	}
	return out
}

// staleSideFiles names the side files of a replaced database that still
// belong to the old one: the same inodes as when the old file was opened.
func staleSideFiles(old, now [2]uint64) []string {
	var out []string
	for i, suffix := range []string{"-wal", "-shm"} {
		if old[i] != 0 && now[i] == old[i] {
			out = append(out, suffix)
		}
	}
	return out
}

// errReplacedWaiting: the database file was replaced, but its old "-wal"
// or "-shm" is still beside it. Opening the new file now would pair it
// with the old WAL (SQLite reads a "-wal" by name) and snapshot a mix of
// both; the shipper waits, shipping nothing, until they are gone.
type errReplacedWaiting struct {
	path  string
	stale []string
}

func (e *errReplacedWaiting) Error() string {
	names := make([]string, len(e.stale))
	for i, s := range e.stale {
		names[i] = e.path + s
	}
	verb := "is"
	if len(names) > 1 {
		verb = "are"
	}
	list := strings.Join(names, " and ")
	return fmt.Sprintf("database %s was replaced, but %s of the old file %s still beside it; "+
		"stop the application and remove %s: until then nothing is shipped (SQLite would read the old WAL into the new file)",
		e.path, list, verb, list)
}

func (d *DB) journalMode(ctx context.Context) (string, error) {
	var mode string
	if err := d.writer.QueryRow(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return "", err
	}
	return mode, nil
}

func (d *DB) closeConnsLocked() {
	for i, c := range d.pins {
		if c != nil {
			c.Close()
			d.pins[i] = nil
		}
	}
	for _, c := range []**sqlitex.Conn{&d.ckpt, &d.writer} {
		if *c != nil {
			(*c).Close()
			*c = nil
		}
	}
	d.pinIdx = -1
	d.halted = false
	d.viewOK = false
	if d.dbf != nil {
		d.oldDBF = append(d.oldDBF, d.dbf)
		d.dbf = nil
	}
	if d.ckl != nil {
		// Its descriptor is closed with the DB (Close): closing it drops
		// every POSIX lock of this process on "-shm", and connections of
		// the watcher or a snapshot may still be open.
		d.ckl.release()
		d.oldCkl = append(d.oldCkl, d.ckl)
		d.ckl = nil
	}
}

// Close releases the pin, any write halt, and the connections. It does not
// sync; call Sync first to ship what is committed.
func (d *DB) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	d.mu.Unlock()
	// A snapshot being read ends first: it uses the shadow directory, and
	// finishing it needs d.mu.
	d.snapWG.Wait()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.halted {
		d.writer.Exec(context.Background(), "ROLLBACK")
	}
	d.closeConnsLocked()
	for _, l := range d.oldCkl {
		l.close()
	}
	d.oldCkl = nil
	for _, f := range d.oldDBF {
		f.Close()
	}
	d.oldDBF = nil
	d.stage.close() // staged pages not in an L0 file are read from the WAL again
	d.local.close()
	if d.mainFile != nil {
		// After every connection: closing it drops the process's locks.
		d.mainFile.Close()
		d.mainFile = nil
	}
	d.snapMu.Lock()
	d.snapshots = nil // their files stay in the shadow directory for the next Open
	d.snapMu.Unlock()
	return nil
}

// resumeInputLocked gathers what decideResume needs but the database's
// checksum (DBChecksum).
func (d *DB) resumeInputLocked(ctx context.Context) (resumeInput, []storeIdentity, error) {
	var in resumeInput
	var stores []storeIdentity
	for _, r := range d.replicas {
		txid, md, err := r.newest(ctx)
		if err != nil {
			return in, nil, err
		}
		si := storeIdentity{Replica: r.name, Location: r.opts.Location, TXID: txid}
		if md != nil {
			si.HasSum, si.Checksum = true, md.PostApplyChecksum
			si.ID, si.Path, si.Node = md.DatabaseID, md.DatabasePath, md.Node
		}
		stores = append(stores, si)
		switch {
		case txid > in.StoreTXID:
			in.StoreTXID = txid
			in.StoreHasSum = md != nil
			if md != nil {
				in.StoreChecksum = md.PostApplyChecksum
			}
		case txid == in.StoreTXID && txid > 0 && md != nil && in.StoreHasSum && md.PostApplyChecksum != in.StoreChecksum:
			return in, nil, fmt.Errorf("database %s: replicas disagree at TXID %s (checksums %s and %s): two writers forked the history; "+
				"keep the replica you trust and empty the others", d.opts.Path, txid, in.StoreChecksum, md.PostApplyChecksum)
		}
	}
	lp, ok, err := d.local.position()
	if err != nil {
		return in, nil, err
	}
	if ok && lp.PageSize == d.pageSize {
		in.HaveLocal, in.LocalTXID, in.LocalChecksum = true, lp.TXID, lp.Checksum
		in.WALContinues, in.WALReason = d.proof.batch != nil, d.proof.reason
	}
	return in, stores, nil
}

// proveRestartLocked is proveWALLocked for a WAL that restarted since the
// local position. A restart needs every frame of the old generation copied
// back, so the new generation starts from the database at the old one's
// end. That end is the local position when the old generation holds no
// commit after it, which can be seen only while the new generation has
// not overwritten it: frames are rewritten from the start of the file, so
// everything from the local position's offset on is still the old
// generation's while the new one is shorter. This is the common case of a
// shipper killed while caught up: its own checkpoint copied everything
// back and the application's next write restarted the WAL before the
// shipper's next sync. Exactly one restart (salt-1 is incremented by
// each) is required; once the new frames reach past the position, or the
// file was truncated (then what followed the position is gone: the file
// must be longer than what the new generation wrote, and reach the
// position), nothing is proven.
func (d *DB) proveRestartLocked(lp localPosition) walProof {
	restarted := fmt.Sprintf("the WAL restarted since the last position (salts %08x/%08x, then %08x/%08x)",
		d.walHdr.Salt1, d.walHdr.Salt2, lp.Salt1, lp.Salt2)
	if d.walHdr.Salt1 != lp.Salt1+1 {
		return walProof{reason: restarted + " more than once"}
	}
	f, err := os.Open(d.walPath)
	if err != nil {
		return walProof{reason: err.Error()}
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return walProof{reason: err.Error()}
	}
	// The new generation to the end of the file (no commit can come after
	// the capture: the write lock is held).
	delta, err := wal.Scan(f, d.walHdr, wal.Start(d.walHdr), lp.Commit, 0)
	if err != nil {
		return walProof{reason: err.Error()}
	}
	frame := wal.FrameSize(d.pageSize)
	extent := delta.End.Offset + int64(delta.Tail)*frame // what the new generation wrote
	size, at := st.Size(), lp.WALOffset
	switch {
	case delta.End != d.walPos || delta.Grown:
		return walProof{reason: restarted + fmt.Sprintf(" and the new WAL does not lead to the captured position (end %d/%d, grown %v)",
			delta.End.Offset, d.walPos.Offset, delta.Grown)}
	case extent > at:
		return walProof{reason: restarted + " and its new frames overwrote where the old WAL went on"}
	case size <= extent || size < at:
		// A truncation (wal_checkpoint(TRUNCATE), journal_size_limit)
		// removed what followed the position, if anything did.
		return walProof{reason: restarted + " and was truncated"}
	case size > at && size < at+frame:
		return walProof{reason: restarted + " and a partial frame follows the last position"}
	}
	if size > at {
		oldHdr := d.walHdr
		oldHdr.Salt1, oldHdr.Salt2 = lp.Salt1, lp.Salt2
		old, err := wal.Scan(f, oldHdr, lp.walPosition(), lp.Commit, 0)
		if err != nil {
			return walProof{reason: err.Error()}
		}
		if old.Commits > 0 {
			return walProof{reason: restarted + fmt.Sprintf(" after %d more committed frames that were not shipped", old.Frames)}
		}
	}
	return walProof{batch: delta}
}

// walProof is what the WAL proved, under the capture's write lock at
// Open, about the frames since the local position: batch holds them (their
// page numbers and the database size after them), nil if they do not
// continue the shipped history (reason says why).
type walProof struct {
	batch  *wal.Batch
	reason string
}

// proveWALLocked checks, with the write lock held (captureThenLocked), that
// the WAL holds every frame up to the local position with the same salts
// and checksum chain and the database size there matches: then the frames
// after it, up to the captured position, are the exact continuation of
// what was shipped, and it returns them.
func (d *DB) proveWALLocked(lp localPosition) walProof {
	switch {
	case !lp.HaveWAL:
		return walProof{reason: "the last position was not in a WAL"}
	case !d.haveWAL:
		return walProof{reason: "there is no WAL now"}
	case d.walHdr.Salt1 != lp.Salt1 || d.walHdr.Salt2 != lp.Salt2:
		return d.proveRestartLocked(lp)
	case lp.WALOffset > d.walPos.Offset:
		return walProof{reason: fmt.Sprintf("the WAL's last commit ends at %d, before the last position's %d", d.walPos.Offset, lp.WALOffset)}
	}
	f, err := os.Open(d.walPath)
	if err != nil {
		return walProof{reason: err.Error()}
	}
	defer f.Close()
	b, err := wal.Scan(f, d.walHdr, wal.Start(d.walHdr), 0, lp.WALOffset)
	if err != nil {
		return walProof{reason: err.Error()}
	}
	if b.End != lp.walPosition() || (b.Commits != 0 && b.Commit != lp.Commit) {
		return walProof{reason: fmt.Sprintf("the WAL up to the last position does not match it (end %d, then %d; pages %d, then %d)",
			b.End.Offset, lp.WALOffset, b.Commit, lp.Commit)}
	}
	delta, err := wal.Scan(f, d.walHdr, lp.walPosition(), lp.Commit, d.walPos.Offset)
	if err != nil {
		return walProof{reason: err.Error()}
	}
	if delta.End != d.walPos || delta.Grown {
		return walProof{reason: fmt.Sprintf("the WAL after the last position does not lead to the captured position (end %d/%d, grown %v)",
			delta.End.Offset, d.walPos.Offset, delta.Grown)}
	}
	return walProof{batch: delta}
}

func (d *DB) savePositionLocked() error {
	return d.local.setPosition(localPosition{
		TXID: d.txid, Checksum: d.checksum, PageSize: d.pageSize, Commit: d.table.commit(),
		Salt1: d.walHdr.Salt1, Salt2: d.walHdr.Salt2, HaveWAL: d.haveWAL,
		WALOffset: d.walPos.Offset, WALChecksum: [2]uint32{d.walPos.Checksum.S1, d.walPos.Checksum.S2},
	})
}

// ReplicaStatus is one replica's state.
type ReplicaStatus struct {
	Name      string
	TXID      ltx.TXID     // newest TXID in the store
	Checksum  ltx.Checksum // its post-apply checksum
	LastSync  time.Time    // last successful upload
	LastError string       // last error, "" after a success
	Pending   int          // TXIDs written locally but not in the store yet
	Fencing   string       // storage.Fencing in force ("" unknown)
}

// Status is the DB's state.
type Status struct {
	Path     string
	TXID     ltx.TXID     // newest TXID written (locally)
	Checksum ltx.Checksum // database checksum at TXID
	Fenced   bool
	// Warning names a condition that stops the application or the shipper
	// although nothing failed here (an application in exclusive locking
	// mode); "" when there is none.
	Warning  string
	Replicas []ReplicaStatus
}

// Status returns the current positions. It does not wait for a sync.
func (d *DB) Status() Status {
	s := Status{Path: d.opts.Path, TXID: ltx.TXID(d.head.Load()), Checksum: ltx.Checksum(d.headSum.Load()),
		Fenced: d.fenced.Load() != nil}
	if w := d.exclusive.Load(); w != nil {
		s.Warning = *w
	}
	for _, r := range d.replicas {
		s.Replicas = append(s.Replicas, r.status(s.TXID))
	}
	return s
}

// ShippingError is nil while the DB can ship; otherwise it says what has
// been failing for longer than UnhealthyAfter its sync interval: the ship
// loop's syncs (the WAL cannot be read or the local file not written, e.g.
// a full disk) or a replica's uploads (the store is unreachable or refuses
// them). A single failed attempt is not enough: the next one may succeed.
// It does not cover fencing (Status().Fenced).
func (d *DB) ShippingError() error {
	now := d.clock.Now()
	err := healthError("sync", d.syncFails.state(), now, UnhealthyAfter(d.opts.minSyncInterval()))
	for _, r := range d.replicas {
		err = errors.Join(err, healthError("replica "+r.name+": upload", r.upFails.state(), now, UnhealthyAfter(r.opts.SyncInterval)))
	}
	if err != nil {
		return fmt.Errorf("database %s: %w", d.opts.Path, err)
	}
	return nil
}

// fence records that another writer owns the history and wakes Run.
func (d *DB) fence(err error) {
	d.fenceOnce.Do(func() {
		e := fmt.Errorf("database %s: %w", d.opts.Path, err)
		d.fenced.Store(&e)
		close(d.fencedCh)
	})
}

// fencedErr returns the fencing error, or nil.
func (d *DB) fencedErr() error {
	if p := d.fenced.Load(); p != nil {
		return *p
	}
	return nil
}

// reopenLocked closes the connections to a database file that was
// replaced and opens new ones to the file now at the path, once the old
// file's "-wal" and "-shm" are gone (errReplacedWaiting until then). The
// next capture reads the new file's WAL from its start.
func (d *DB) reopenLocked(ctx context.Context) error {
	if d.halted {
		return fmt.Errorf("database %s was replaced while writes were halted", d.opts.Path)
	}
	ino, err := checkFile(d.realPath)
	if err != nil {
		return err
	}
	if stale := staleSideFiles(d.sideInodes, sideInodes(d.realPath)); len(stale) > 0 {
		werr := &errReplacedWaiting{path: d.realPath, stale: stale}
		if !d.staleWarned {
			d.log.Warn("waiting for the replaced database's old files to be removed", "error", werr.Error())
			d.staleWarned = true
		}
		return werr
	}
	d.staleWarned = false
	d.log.Warn("database file replaced; reconnecting", "txid", d.txid)
	// KeepWAL (connOpts): closing them never deletes the new file's
	// "-wal" or "-shm" by name.
	d.closeConnsLocked()
	old := d.pageSize
	if err := d.openConnsLocked(ctx); err != nil {
		return err
	}
	d.inode = ino
	d.connGen.Add(1)
	d.haveWAL, d.walPos, d.expectRestart = false, wal.Position{}, true
	if d.pageSize != old {
		d.table = newPageTable(d.pageSize)
	}
	return nil
}
