package primary

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// An application that sets PRAGMA locking_mode=EXCLUSIVE keeps the
// database's SQLite lock for as long as it runs and, in WAL mode, keeps
// its wal-index in its own memory instead of "-shm". With the shipper
// started first, every one of its writes then fails ("database is locked":
// it waits for an exclusive lock our connections' shared locks deny it);
// started after it, the shipper cannot open the database. Neither side
// said why. Such a process is seen in /proc/locks (no descriptor of the
// database is opened for it: closing one would drop our own locks): it
// holds a lock on the database file's lock bytes but none on "-shm",
// which every connection in normal locking mode holds.

// exclusiveHint says what to change; every message about it ends with it.
const exclusiveHint = "WAL replication needs the application to use the default PRAGMA locking_mode=NORMAL: " +
	"remove PRAGMA locking_mode=EXCLUSIVE (and the unix-excl VFS) from the application and restart it"

// The database file's lock bytes (SQLite's os.h): PENDING, RESERVED, then
// the SHARED range of 510 bytes.
const (
	pendingByte = 0x40000000
	lockBytes   = 512
)

// procLock is one line of /proc/locks.
type procLock struct {
	pid        int
	write      bool
	major      uint32
	minor      uint32
	ino        uint64
	start, end int64 // end -1: to the end of the file
}

// parseProcLocks reads /proc/locks lines ("1: POSIX  ADVISORY  WRITE 5594
// fe:00:9981471 1073741824 1073742335"); waiters ("-> ...") and lines it
// cannot read are skipped.
func parseProcLocks(r io.Reader) []procLock {
	var out []procLock
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 8 || f[1] == "->" {
			continue
		}
		pid, err := strconv.Atoi(f[4])
		if err != nil {
			continue
		}
		id := strings.Split(f[5], ":")
		if len(id) != 3 {
			continue
		}
		maj, err1 := strconv.ParseUint(id[0], 16, 32)
		min, err2 := strconv.ParseUint(id[1], 16, 32)
		ino, err3 := strconv.ParseUint(id[2], 10, 64)
		start, err4 := strconv.ParseInt(f[6], 10, 64)
		end, err5 := int64(-1), error(nil)
		if f[7] != "EOF" {
			end, err5 = strconv.ParseInt(f[7], 10, 64)
		}
		if err1 != nil || err2 != nil || err3 != nil || err4 != nil || err5 != nil {
			continue
		}
		out = append(out, procLock{pid: pid, write: f[3] == "WRITE", major: uint32(maj), minor: uint32(min), ino: ino, start: start, end: end})
	}
	return out
}

// fileID is a file as /proc/locks names it.
type fileID struct {
	major, minor uint32
	ino          uint64
}

func statID(path string) (fileID, bool) {
	st, err := os.Stat(path)
	if err != nil {
		return fileID{}, false
	}
	s := st.Sys().(*syscall.Stat_t)
	return fileID{unix.Major(s.Dev), unix.Minor(s.Dev), s.Ino}, true
}

func (l procLock) on(id fileID) bool {
	return l.major == id.major && l.minor == id.minor && l.ino == id.ino
}

// exclusiveHolders returns the processes other than self that hold a lock
// on db's lock bytes and none on shm (zero fileID: there is no "-shm").
func exclusiveHolders(locks []procLock, db, shm fileID, self int) []int {
	onShm := map[int]bool{}
	for _, l := range locks {
		if shm.ino != 0 && l.on(shm) {
			onShm[l.pid] = true
		}
	}
	var out []int
	for _, l := range locks {
		if l.pid <= 0 || l.pid == self || onShm[l.pid] || !l.on(db) || slices.Contains(out, l.pid) {
			continue
		}
		if (l.end < 0 || l.end >= pendingByte) && l.start < pendingByte+lockBytes {
			out = append(out, l.pid)
		}
	}
	slices.Sort(out)
	return out
}

// exclusiveProcesses looks in /proc/locks for processes holding the
// database at path in exclusive locking mode; nil if none (or if it cannot
// tell). gen is the reading of /proc/locks it looked at (see procLocks):
// two calls with one gen saw the same moment.
func exclusiveProcesses(path string) (pids []int, gen uint64) {
	db, ok := statID(path)
	if !ok {
		return nil, 0
	}
	shm, _ := statID(path + "-shm")
	locks, gen, ok := procLocks.get(time.Now())
	if !ok {
		return nil, 0
	}
	return exclusiveHolders(locks, db, shm, os.Getpid()), gen
}

// procLocks is the process's one reading of /proc/locks, shared by every
// database. Reading it takes a kernel lock that every POSIX lock call on
// the machine (SQLite's included, the application's too) waits for, and
// the file has a line per lock held: with 1,000 databases open, 1,000
// checks every exclusiveCheckEvery, each reading some 800 lines in 4 KiB
// reads (63 ms each), kept most of the daemon's and the application's
// threads waiting on that lock (TestManyBusyBench). So one reading serves
// every check made within procLocksMaxAge, and it is read in large
// reads (1.2 ms for the same file).
var procLocks procLocksCache

// procLocksMaxAge is how old a shared reading may be. It is below
// exclusiveRecheck, so a recheck sees a newer reading.
const procLocksMaxAge = 200 * time.Millisecond

type procLocksCache struct {
	mu    sync.Mutex
	at    time.Time
	gen   uint64
	locks []procLock
	ok    bool
}

func (c *procLocksCache) get(now time.Time) ([]procLock, uint64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen == 0 || now.Sub(c.at) >= procLocksMaxAge || now.Before(c.at) {
		b, err := readAll("/proc/locks")
		c.at, c.gen, c.ok = now, c.gen+1, err == nil
		c.locks = nil
		if err == nil {
			c.locks = parseProcLocks(bytes.NewReader(b))
		}
	}
	return c.locks, c.gen, c.ok
}

// readAll reads a file in reads of at least 1 MiB: a /proc file has no
// size to go by, and each of its reads starts over from its first line.
func readAll(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, 0, 1<<20)
	for {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, cap(buf))
		}
		n, err := f.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if errors.Is(err, io.EOF) || (err == nil && n == 0) {
			return buf, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// describeProcesses names pids with their command names.
func describeProcesses(pids []int) string {
	var parts []string
	for _, pid := range pids {
		name := "?"
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); err == nil {
			name = strings.TrimSpace(string(b))
		}
		parts = append(parts, fmt.Sprintf("%d (%s)", pid, name))
	}
	return strings.Join(parts, ", ")
}

// explainLocked turns a "database is locked" at Open into what to do: an
// exclusive-mode application is named when one is seen, and the hint is
// given either way (it is the common cause of a lock held for good).
func explainLocked(path string, err error) error {
	if pids, _ := exclusiveProcesses(path); len(pids) > 0 {
		return fmt.Errorf("database %s is held in exclusive locking mode by process %s: understudy cannot read or pin its WAL while it does; %s: %w",
			path, describeProcesses(pids), exclusiveHint, err)
	}
	return fmt.Errorf("%w (the database stayed locked by another process; an application with PRAGMA locking_mode=EXCLUSIVE holds the lock for as long as it runs: %s)",
		err, exclusiveHint)
}

// exclusiveCheckEvery is how often the ship loop looks for an
// exclusive-mode application: reading /proc/locks costs a few hundred
// microseconds on a busy machine; such an application fails every write
// until it is fixed, so seconds of delay in saying so cost nothing.
const exclusiveCheckEvery = 5 * time.Second

// exclusiveRecheck is how soon a process seen is looked for again.
const exclusiveRecheck = 250 * time.Millisecond

// checkExclusiveLocked logs (once per set of processes) and reports in
// Status an application holding the database in exclusive locking mode.
// A process seen only once is not reported: a connection in normal mode
// takes its database lock an instant before it maps "-shm".
func (d *DB) checkExclusiveLocked() {
	now := time.Now()
	wait := exclusiveCheckEvery
	if d.exclSeen != nil {
		wait = exclusiveRecheck
	}
	if now.Sub(d.exclCheckedAt) < wait {
		return
	}
	pids, gen := exclusiveProcesses(d.realPath)
	if gen != 0 && gen == d.exclGen {
		return // the same reading as last time: nothing new to compare
	}
	d.exclCheckedAt, d.exclGen = now, gen
	var stable []int
	for _, p := range pids {
		if slices.Contains(d.exclSeen, p) {
			stable = append(stable, p)
		}
	}
	d.exclSeen = pids
	msg := ""
	if len(stable) > 0 {
		msg = fmt.Sprintf("process %s holds the database in exclusive locking mode: its writes fail with \"database is locked\" while understudy replicates; %s",
			describeProcesses(stable), exclusiveHint)
	}
	prev := d.exclusive.Load()
	switch {
	case msg != "" && (prev == nil || *prev != msg):
		d.log.Error(msg)
		d.exclusive.Store(&msg)
	case msg == "" && prev != nil && len(pids) == 0:
		d.log.Info("no process holds the database in exclusive locking mode any more")
		d.exclusive.Store(nil)
	}
}
