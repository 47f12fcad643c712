// Package walock holds SQLite's WAL write lock on a database from outside
// SQLite, as an open file description (OFD) lock on byte 120 of "<db>-shm"
// (WAL_WRITE_LOCK in SQLite's unix VFS: the WAL locks start at 120).
//
// While it is held every SQLite connection's write, in any process, this
// one included, fails with SQLITE_BUSY ("database is locked"); readers need
// no write lock and read on. An OFD lock conflicts with the POSIX locks
// SQLite's connections take, even those of the same process (a classic
// POSIX lock would merge with them, and their unlock would drop ours), and
// it ends only by Unlock or by closing its descriptor.
//
// Closing the descriptor, like closing any descriptor of "-shm", also drops
// this process's POSIX locks on the file (SQLITE-NOTES.md): Close only once
// every SQLite connection of this process to the database is closed. The
// descriptor is a raw one, not an *os.File, so that no finalizer closes it.
package walock

import (
	"context"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// writeLockOffset is the byte of "-shm" SQLite locks for WAL_WRITE_LOCK.
const writeLockOffset = 120

// DefaultSpin is how long Lock tries without pausing before it sleeps
// between tries: a writer between two transactions leaves the lock free
// for only microseconds.
const DefaultSpin = 2 * time.Millisecond

// Lock is the write lock of one database.
type Lock struct {
	fd   int
	path string
	held bool
}

// Open opens "<dbPath>-shm", which must exist (SQLite creates it with the
// first connection in WAL mode). The lock is not taken.
func Open(dbPath string) (*Lock, error) {
	fd, err := unix.Open(dbPath+"-shm", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s-shm to hold the write lock: %w", dbPath, err)
	}
	return &Lock{fd: fd, path: dbPath}, nil
}

func (l *Lock) fcntl(typ int16) error {
	lk := unix.Flock_t{Type: typ, Whence: 0, Start: writeLockOffset, Len: 1}
	return unix.FcntlFlock(uintptr(l.fd), unix.F_OFD_SETLK, &lk)
}

// TryLock makes one attempt; it reports whether the lock is held.
func (l *Lock) TryLock() bool {
	if l.held {
		return true
	}
	if l.fcntl(unix.F_WRLCK) == nil {
		l.held = true
	}
	return l.held
}

// Lock takes the lock, waiting up to wait for a writer that holds it (or
// until ctx ends).
func (l *Lock) Lock(ctx context.Context, wait time.Duration) error {
	start := time.Now()
	for i := 0; ; i++ {
		if l.TryLock() {
			return nil
		}
		if i%64 != 0 {
			continue
		}
		waited := time.Since(start)
		if waited >= wait || ctx.Err() != nil {
			return fmt.Errorf("take the write lock of %s: another connection held it for %s", l.path, waited.Round(time.Millisecond))
		}
		if waited > DefaultSpin {
			time.Sleep(100 * time.Microsecond)
		}
	}
}

// Unlock releases the lock (the descriptor stays open).
func (l *Lock) Unlock() {
	if !l.held {
		return
	}
	_ = l.fcntl(unix.F_UNLCK)
	l.held = false
}

// Held reports whether the lock is held.
func (l *Lock) Held() bool { return l != nil && l.held }

// Close releases the lock and closes the descriptor; see the package doc
// for when that is safe.
func (l *Lock) Close() {
	if l == nil || l.fd < 0 {
		return
	}
	l.Unlock()
	unix.Close(l.fd)
	l.fd = -1
}

// Fd is the descriptor of "-shm", for a caller that locks or unlocks the
// byte itself next to SQLite calls in C (see Assume); WriteLockOffset is
// the byte.
func (l *Lock) Fd() int { return l.fd }

// WriteLockOffset is the byte of "-shm" the lock is on.
const WriteLockOffset = writeLockOffset

// Assume records that the lock was taken (or let go) through Fd by the
// caller.
func (l *Lock) Assume(held bool) { l.held = held }
