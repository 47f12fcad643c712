package sqlitex

/*
#include <stdlib.h>
#include <string.h>

// The public declarations of sqlite3.h this file needs (mattn's driver
// compiles SQLite into the binary; these link against it).
typedef long long us_int64;
typedef struct sqlite3_file sqlite3_file;
typedef struct sqlite3_io_methods sqlite3_io_methods;
typedef struct sqlite3_vfs sqlite3_vfs;
typedef void (*us_syscall_ptr)(void);
struct sqlite3_file { const sqlite3_io_methods *pMethods; };
struct sqlite3_io_methods {
	int iVersion;
	int (*xClose)(sqlite3_file*);
	int (*xRead)(sqlite3_file*, void*, int, us_int64);
	int (*xWrite)(sqlite3_file*, const void*, int, us_int64);
	int (*xTruncate)(sqlite3_file*, us_int64);
	int (*xSync)(sqlite3_file*, int);
	int (*xFileSize)(sqlite3_file*, us_int64*);
	int (*xLock)(sqlite3_file*, int);
	int (*xUnlock)(sqlite3_file*, int);
	int (*xCheckReservedLock)(sqlite3_file*, int*);
	int (*xFileControl)(sqlite3_file*, int, void*);
	int (*xSectorSize)(sqlite3_file*);
	int (*xDeviceCharacteristics)(sqlite3_file*);
	int (*xShmMap)(sqlite3_file*, int, int, int, void volatile**);
	int (*xShmLock)(sqlite3_file*, int, int, int);
	void (*xShmBarrier)(sqlite3_file*);
	int (*xShmUnmap)(sqlite3_file*, int);
	int (*xFetch)(sqlite3_file*, us_int64, int, void**);
	int (*xUnfetch)(sqlite3_file*, us_int64, void*);
};
struct sqlite3_vfs {
	int iVersion;
	int szOsFile;
	int mxPathname;
	sqlite3_vfs *pNext;
	const char *zName;
	void *pAppData;
	int (*xOpen)(sqlite3_vfs*, const char*, sqlite3_file*, int, int*);
	int (*xDelete)(sqlite3_vfs*, const char*, int);
	int (*xAccess)(sqlite3_vfs*, const char*, int, int*);
	int (*xFullPathname)(sqlite3_vfs*, const char*, int, char*);
	void *(*xDlOpen)(sqlite3_vfs*, const char*);
	void (*xDlError)(sqlite3_vfs*, int, char*);
	void (*(*xDlSym)(sqlite3_vfs*, void*, const char*))(void);
	void (*xDlClose)(sqlite3_vfs*, void*);
	int (*xRandomness)(sqlite3_vfs*, int, char*);
	int (*xSleep)(sqlite3_vfs*, int);
	int (*xCurrentTime)(sqlite3_vfs*, double*);
	int (*xGetLastError)(sqlite3_vfs*, int, char*);
	int (*xCurrentTimeInt64)(sqlite3_vfs*, us_int64*);
	int (*xSetSystemCall)(sqlite3_vfs*, const char*, us_syscall_ptr);
	us_syscall_ptr (*xGetSystemCall)(sqlite3_vfs*, const char*);
	const char *(*xNextSystemCall)(sqlite3_vfs*, const char*);
};
extern sqlite3_vfs *sqlite3_vfs_find(const char*);
extern int sqlite3_vfs_register(sqlite3_vfs*, int);

#define US_SHM_UNLOCK 1
#define US_SHM_LOCK 2
#define US_SHM_EXCLUSIVE 8
#define US_WRITE_LOCK 0

// US_FCNTL_KEEP is this VFS's own file control: *arg 1 keeps the write
// lock from now on, 0 lets it go (now if no transaction of the connection
// holds it, else at that transaction's end).
#define US_FCNTL_KEEP 0x75534b50

// holdFile wraps a unix file. keep: SQLite's unlocks of the WAL write lock
// are kept from the unix layer. held: the lock was taken for real and is
// held only because of keep. locked: SQLite believes the connection holds
// it (a write transaction is open).
typedef struct holdFile {
	sqlite3_file base;
	sqlite3_file *real;
	int keep;
	int held;
	int locked;
} holdFile;

static sqlite3_vfs *us_unix;
static sqlite3_vfs us_hold, us_holdable;
static sqlite3_io_methods us_methods;

#define REAL(f) (((holdFile*)(f))->real)
static int h_close(sqlite3_file *f) { int rc = REAL(f)->pMethods->xClose(REAL(f)); return rc; }
static int h_read(sqlite3_file *f, void *b, int n, us_int64 o) { return REAL(f)->pMethods->xRead(REAL(f), b, n, o); }
static int h_write(sqlite3_file *f, const void *b, int n, us_int64 o) { return REAL(f)->pMethods->xWrite(REAL(f), b, n, o); }
static int h_truncate(sqlite3_file *f, us_int64 s) { return REAL(f)->pMethods->xTruncate(REAL(f), s); }
static int h_sync(sqlite3_file *f, int fl) { return REAL(f)->pMethods->xSync(REAL(f), fl); }
static int h_size(sqlite3_file *f, us_int64 *s) { return REAL(f)->pMethods->xFileSize(REAL(f), s); }
static int h_lock(sqlite3_file *f, int l) { return REAL(f)->pMethods->xLock(REAL(f), l); }
static int h_unlock(sqlite3_file *f, int l) { return REAL(f)->pMethods->xUnlock(REAL(f), l); }
static int h_reserved(sqlite3_file *f, int *r) { return REAL(f)->pMethods->xCheckReservedLock(REAL(f), r); }
static int h_fcntl(sqlite3_file *f, int op, void *a) {
	holdFile *p = (holdFile*)f;
	if (op == US_FCNTL_KEEP) {
		p->keep = *(int*)a != 0;
		if (!p->keep && p->held) {
			p->held = 0;
			// A transaction in progress needs the lock: its end lets it go.
			if (!p->locked) REAL(f)->pMethods->xShmLock(REAL(f), US_WRITE_LOCK, 1, US_SHM_UNLOCK | US_SHM_EXCLUSIVE);
		}
		return 0;
	}
	return REAL(f)->pMethods->xFileControl(REAL(f), op, a);
}
static int h_sector(sqlite3_file *f) { return REAL(f)->pMethods->xSectorSize(REAL(f)); }
static int h_devchar(sqlite3_file *f) { return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f)); }
static int h_shmmap(sqlite3_file *f, int pg, int sz, int ext, void volatile **pp) { return REAL(f)->pMethods->xShmMap(REAL(f), pg, sz, ext, pp); }
static void h_shmbarrier(sqlite3_file *f) { REAL(f)->pMethods->xShmBarrier(REAL(f)); }
static int h_fetch(sqlite3_file *f, us_int64 o, int n, void **pp) { return REAL(f)->pMethods->xFetch(REAL(f), o, n, pp); }
static int h_unfetch(sqlite3_file *f, us_int64 o, void *p) { return REAL(f)->pMethods->xUnfetch(REAL(f), o, p); }

// The point of this VFS: the WAL write lock, once taken while keep is
// set, is not let go until keep is cleared or the shared memory is unmapped
// (the connection closes).
static int h_shmlock(sqlite3_file *f, int ofst, int n, int flags) {
	holdFile *p = (holdFile*)f;
	if (ofst == US_WRITE_LOCK && n == 1 && (flags & US_SHM_EXCLUSIVE)) {
		if (flags & US_SHM_LOCK) {
			if (p->held) { p->locked = 1; return 0; }
			int rc = REAL(f)->pMethods->xShmLock(REAL(f), ofst, n, flags);
			if (rc == 0) p->locked = 1;
			return rc;
		}
		if (flags & US_SHM_UNLOCK) {
			p->locked = 0;
			if (p->held) return 0;
			if (p->keep) { p->held = 1; return 0; }
		}
	}
	return REAL(f)->pMethods->xShmLock(REAL(f), ofst, n, flags);
}

static int h_shmunmap(sqlite3_file *f, int del) {
	holdFile *p = (holdFile*)f;
	if (p->held) {
		p->held = 0;
		REAL(f)->pMethods->xShmLock(REAL(f), US_WRITE_LOCK, 1, US_SHM_UNLOCK | US_SHM_EXCLUSIVE);
	}
	return REAL(f)->pMethods->xShmUnmap(REAL(f), del);
}

static int h_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags, int *out) {
	holdFile *p = (holdFile*)f;
	memset(p, 0, sizeof *p);
	p->real = (sqlite3_file*)&p[1];
	p->keep = vfs->pAppData != 0;
	int rc = us_unix->xOpen(us_unix, name, p->real, flags, out);
	p->base.pMethods = p->real->pMethods ? &us_methods : 0;
	return rc;
}

static int us_register_hold_vfs(const char *hold, const char *holdable) {
	us_unix = sqlite3_vfs_find("unix");
	if (!us_unix) return 1;
	us_hold = *us_unix;
	us_hold.pNext = 0;
	us_hold.zName = hold;
	us_hold.pAppData = (void*)1; // keep from the start
	us_hold.szOsFile = (int)sizeof(holdFile) + us_unix->szOsFile;
	us_hold.xOpen = h_open;
	us_holdable = us_hold;
	us_holdable.zName = holdable;
	us_holdable.pAppData = 0;
	memset(&us_methods, 0, sizeof us_methods);
	us_methods.iVersion = 3;
	us_methods.xClose = h_close; us_methods.xRead = h_read; us_methods.xWrite = h_write;
	us_methods.xTruncate = h_truncate; us_methods.xSync = h_sync; us_methods.xFileSize = h_size;
	us_methods.xLock = h_lock; us_methods.xUnlock = h_unlock; us_methods.xCheckReservedLock = h_reserved;
	us_methods.xFileControl = h_fcntl; us_methods.xSectorSize = h_sector; us_methods.xDeviceCharacteristics = h_devchar;
	us_methods.xShmMap = h_shmmap; us_methods.xShmLock = h_shmlock; us_methods.xShmBarrier = h_shmbarrier;
	us_methods.xShmUnmap = h_shmunmap; us_methods.xFetch = h_fetch; us_methods.xUnfetch = h_unfetch;
	int rc = sqlite3_vfs_register(&us_hold, 0);
	if (rc == 0) rc = sqlite3_vfs_register(&us_holdable, 0);
	return rc;
}
*/
import "C"

import (
	"fmt"
	"sync"
)

// HoldVFS is the SQLite VFS a connection that must keep the write lock
// opens the database with (a follower's applier, HoldWriteLock): the unix
// VFS, except that SQLite's WAL write lock, once the connection took it,
// is never let go (SQLite's unlocks of it are kept from the unix layer)
// until the connection closes or SetKeepWriteLock(false). Commits,
// rollbacks and new transactions of that connection go on as usual; every
// other connection's write, in any process, fails with SQLITE_BUSY.
const HoldVFS = "understudy-hold"

// HoldableVFS is HoldVFS starting as the plain unix VFS: the connection
// keeps the write lock only from SetKeepWriteLock(true) on. A primary's
// writer opens with it, so that the write lock it takes to halt the
// application's writes can outlive its transaction and pass to the
// follower the node becomes, with no moment in which another process
// could write.
const HoldableVFS = "understudy-holdable"

// fcntlKeep is US_FCNTL_KEEP.
const fcntlKeep = 0x75534b50

var (
	holdVFSOnce sync.Once
	holdVFSErr  error
)

// registerHoldVFS registers HoldVFS and HoldableVFS once per process.
func registerHoldVFS() error {
	holdVFSOnce.Do(func() {
		// Kept for the life of the process: SQLite keeps the pointers.
		hold, holdable := C.CString(HoldVFS), C.CString(HoldableVFS)
		if rc := C.us_register_hold_vfs(hold, holdable); rc != 0 {
			holdVFSErr = fmt.Errorf("register the SQLite VFS %s: code %d", HoldVFS, int(rc))
		}
	})
	return holdVFSErr
}
