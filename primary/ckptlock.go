package primary

import (
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"
)

// ckptLockOffset is the byte of "<db>-shm" that SQLite's unix VFS locks for
// WAL_CKPT_LOCK: the WAL locks start at 120 (two wal-index headers of 48
// bytes and the 24-byte checkpoint info) and the checkpoint lock is the
// second of them.
const ckptLockOffset = 121

// ckptLock holds SQLite's WAL checkpoint lock on behalf of the shipper
// between its own checkpoints.
//
// Why: while a reader holds an old read mark (the pin) the WAL cannot
// restart, so it grows past the application's wal_autocheckpoint (1000
// pages) and the application's SQLite then tries a checkpoint after every
// commit. Each try takes the checkpoint lock, finds the pinned read mark in
// the way and gives up: three lock calls per commit, and the application
// also fails to take the pinned read-mark slot when it begins each
// transaction. Measured with a 1-row-insert loop: 6 fcntl calls per
// transaction alone, 10 with a pinned reader, 7 with the checkpoint lock
// held instead, and 18.8-21.2 / 26.1-26.7 / 22.1-22.7 µs of CPU per
// transaction.
//
// Why it is safe to hold it instead of a pin: a WAL restart needs every
// frame copied back (nBackfill == mxFrame), and only a checkpointer copies
// frames back. While no one else can checkpoint, no one can copy back, so
// no one can restart past a frame we have not shipped. Our own checkpoints
// release the lock and run with a pin at or before the shipped position,
// as before. So at every moment the lock or a pin protects the WAL, and
// the pin is only held while the lock is not (shipper.go, relaxPinLocked).
//
// It is an open file description (OFD) lock: it conflicts with the POSIX
// locks of SQLite's connections in this same process too (a classic POSIX
// lock would merge with them, and their unlock would drop ours), and it is
// released only by unlocking it or closing its descriptor. Closing the
// descriptor, like closing any descriptor of "-shm", also drops this
// process's POSIX locks on the file: close is only called once every
// SQLite connection of the shipper to that file is closed.
//
// The descriptor is a raw one, not an *os.File: an *os.File that becomes
// unreachable is closed by its finalizer, and that close dropped the write
// lock a halted, detached DB holds for the life of the process (seen in
// TestFrozenPrimaryRejoinsAndKeepsDivergedWrites).
//
// A WAL recovery needs the lock too (walIndexNeedsRecovery). The shipper
// looks before each pin, but a step can take long (an L0 file's fsync
// under load) and steps come only every MonitorInterval when nothing is
// committed, while SQLite's readers give up after about 10 s of retries
// ("locking protocol", SQLITE_PROTOCOL; no busy handler is consulted). So
// while the lock is held a watchdog goroutine, which never waits for the
// shipper or for SQLite, looks every recoveryCheckEvery and lets it go
// (recoveryWatchdog).
type ckptLock struct {
	fd  int
	log hclog.Logger

	mu   sync.Mutex // guards held: the watchdog releases too
	held bool
}

// recoveryCheckEvery is how often the watchdog reads the wal-index
// headers of every held checkpoint lock (one pread(2) of 96 bytes each):
// far below SQLite's ~10 s of retries, even when a loaded machine runs the
// goroutine late, and cheap for a fleet of 10,000 idle databases (one
// goroutine and one wake-up a second for all of them, not one each).
const recoveryCheckEvery = time.Second

// heldLocks are the checkpoint locks of this process that are held: the
// watchdog's list.
var heldLocks struct {
	sync.Mutex
	set   map[*ckptLock]struct{}
	start sync.Once
}

// watchHeld puts l on the watchdog's list (l.mu held).
func watchHeld(l *ckptLock, on bool) {
	heldLocks.Lock()
	defer heldLocks.Unlock()
	if !on {
		delete(heldLocks.set, l)
		return
	}
	if heldLocks.set == nil {
		heldLocks.set = map[*ckptLock]struct{}{}
	}
	heldLocks.set[l] = struct{}{}
	heldLocks.start.Do(func() { go recoveryWatchdog() })
}

// recoveryWatchdog lets a held checkpoint lock go as soon as its
// wal-index needs a recovery. It runs for the life of the process.
func recoveryWatchdog() {
	tick := time.NewTicker(recoveryCheckEvery)
	defer tick.Stop()
	var locks []*ckptLock
	for range tick.C {
		heldLocks.Lock()
		locks = locks[:0]
		for l := range heldLocks.set {
			locks = append(locks, l)
		}
		heldLocks.Unlock()
		for _, l := range locks {
			l.releaseIfRecoveryNeeded()
		}
	}
}

func (l *ckptLock) releaseIfRecoveryNeeded() {
	l.mu.Lock()
	if !l.held || !l.walIndexNeedsRecovery() {
		l.mu.Unlock()
		return
	}
	l.releaseLocked()
	l.mu.Unlock()
	if l.log != nil {
		l.log.Warn("the wal-index needs a recovery; let the checkpoint lock go")
	}
}

// openCkptLock opens "<db>-shm" (it must exist: SQLite creates it with the
// first connection in WAL mode).
func openCkptLock(dbPath string, log hclog.Logger) (*ckptLock, error) {
	fd, err := unix.Open(dbPath+"-shm", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s-shm for the checkpoint lock: %w", dbPath, err)
	}
	return &ckptLock{fd: fd, log: log}, nil
}

func (l *ckptLock) fcntl(typ int16) error {
	lk := unix.Flock_t{Type: typ, Whence: 0, Start: ckptLockOffset, Len: 1}
	return unix.FcntlFlock(uintptr(l.fd), unix.F_OFD_SETLK, &lk)
}

// acquire takes the lock, retrying for up to wait while another
// checkpointer (the application's autocheckpoint) holds it. It reports
// whether the lock is held. It does not keep the lock while the wal-index
// needs a recovery (looked at once it is taken, so that a recovery that
// became needed just before is not missed).
func (l *ckptLock) acquire(wait time.Duration) bool {
	if l == nil {
		return false
	}
	deadline := time.Now().Add(wait)
	for {
		if held, busy := l.tryAcquire(); !busy {
			return held
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(lockRetryEvery)
	}
}

// tryAcquire makes one try; busy means another checkpointer has the lock.
func (l *ckptLock) tryAcquire() (held, busy bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.held {
		return true, false
	}
	if err := l.fcntl(unix.F_WRLCK); err != nil {
		return false, true
	}
	if l.walIndexNeedsRecovery() {
		_ = l.fcntl(unix.F_UNLCK)
		return false, false
	}
	l.held = true
	watchHeld(l, true)
	return true, false
}

// release unlocks (the descriptor stays open).
func (l *ckptLock) release() {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.releaseLocked()
}

func (l *ckptLock) releaseLocked() {
	if !l.held {
		return
	}
	_ = l.fcntl(unix.F_UNLCK)
	l.held = false
	watchHeld(l, false)
}

// close releases the lock and closes the descriptor: only after every
// SQLite connection of this process to the database is closed.
func (l *ckptLock) close() {
	if l == nil {
		return
	}
	l.release()
	unix.Close(l.fd)
}

// walWriteLockOffset is the byte of "-shm" locked for WAL_WRITE_LOCK.
const walWriteLockOffset = 120

// grabWriteLock tries to take SQLite's WAL write lock as an OFD lock, with
// no pause between tries, for up to spin; it reports whether it got it.
// A writer that commits in a tight loop leaves the lock free for only
// microseconds between two transactions: BEGIN IMMEDIATE (a read
// transaction, then the lock, then a check that no commit came in between)
// tried every 100 µs waited up to seconds against 100-row transactions.
// One fcntl call per try catches the gap. The caller hands the lock over
// to its SQLite connection (dropWriteLock, then BEGIN IMMEDIATE): a writer
// that tried meanwhile got SQLITE_BUSY and sleeps in its busy handler for
// at least a millisecond.
func (l *ckptLock) grabWriteLock(spin time.Duration) bool {
	if l == nil {
		return false
	}
	deadline := time.Now().Add(spin)
	for i := 0; ; i++ {
		lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: walWriteLockOffset, Len: 1}
		if unix.FcntlFlock(uintptr(l.fd), unix.F_OFD_SETLK, &lk) == nil {
			return true
		}
		if i%64 == 0 && time.Now().After(deadline) {
			return false
		}
	}
}

// dropWriteLock releases what grabWriteLock took.
func (l *ckptLock) dropWriteLock() {
	lk := unix.Flock_t{Type: unix.F_UNLCK, Whence: 0, Start: walWriteLockOffset, Len: 1}
	_ = unix.FcntlFlock(uintptr(l.fd), unix.F_OFD_SETLK, &lk)
}

// walIndexNeedsRecovery reads the two copies of the wal-index header at
// the start of "-shm" and reports whether a connection would have to
// rebuild the wal-index from the WAL (a writer died half-way through a
// commit): the copies differ or are not initialised. That recovery takes
// the checkpoint lock, and readers wait for it (up to ~10 s in SQLite's
// retry loop, then "locking protocol"), so the lock must be let go first.
func (l *ckptLock) walIndexNeedsRecovery() bool {
	if l == nil {
		return false
	}
	// A writer updates the two copies one after the other: a read that
	// lands in between sees them differ. A header that needs a recovery
	// stays that way; look three times.
	for i := 0; i < 3; i++ {
		if i > 0 {
			time.Sleep(200 * time.Microsecond)
		}
		if !l.walIndexHdrBad() {
			return false
		}
	}
	return true
}

func (l *ckptLock) walIndexHdrBad() bool {
	var b [walIndexHdrSize * 2]byte
	if n, err := unix.Pread(l.fd, b[:], 0); err != nil || n < len(b) {
		return false // a -shm shorter than the headers is rebuilt by SQLite anyway
	}
	h0, h1 := b[:walIndexHdrSize], b[walIndexHdrSize:]
	const isInit = 12 // offset of isInit in WalIndexHdr
	return string(h0) != string(h1) || h0[isInit] == 0
}

// walIndexHdrSize is the size of one copy of SQLite's WalIndexHdr.
const walIndexHdrSize = 48

// isHeld reports whether the lock is held (false for no lock).
func (l *ckptLock) isHeld() bool {
	if l == nil {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.held
}
