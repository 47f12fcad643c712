package follower

/*
#define _GNU_SOURCE
#include <fcntl.h>
#include <string.h>

#include <stdio.h>

typedef struct sqlite3 sqlite3;
typedef struct sqlite3_stmt sqlite3_stmt;
extern int sqlite3_exec(sqlite3*, const char*, int (*)(void*,int,char**,char**), void*, char**);
extern const char *sqlite3_errmsg(sqlite3*);
extern int sqlite3_prepare_v2(sqlite3*, const char*, int, sqlite3_stmt**, const char**);
extern int sqlite3_step(sqlite3_stmt*);
extern int sqlite3_column_int(sqlite3_stmt*, int);
extern int sqlite3_finalize(sqlite3_stmt*);

static int us_ofd(int fd, int off, short typ) {
	struct flock fl;
	memset(&fl, 0, sizeof fl);
	fl.l_type = typ;
	fl.l_whence = SEEK_SET;
	fl.l_start = off;
	fl.l_len = 1;
	return fcntl(fd, F_OFD_SETLK, &fl);
}

// COMMIT, then the guard takes the write lock at once; *locked says
// whether it got it.
static int us_commit_guard(sqlite3 *db, int fd, int off, int *locked) {
	int rc = sqlite3_exec(db, "COMMIT", 0, 0, 0);
	*locked = 0;
	if (rc == 0 && us_ofd(fd, off, F_WRLCK) == 0) *locked = 1;
	return rc;
}

// BEGIN and a read (the snapshot, taken under the guard), then the guard
// lets go and a write that changes nothing takes the lock: setting
// user_version to its value (page 1 is written again; only the bytes the
// pager rewrites on every commit differ, which every checksum masks). The
// write is prepared before the guard lets go, so that between the unlock
// and the lock there is only the start of its step. *released says whether
// the guard let go. On an error the transaction is rolled back.
static int us_begin_take(sqlite3 *db, int fd, int off, int *released) {
	sqlite3_stmt *get = 0, *set = 0;
	char sql[64];
	int v = 0;
	*released = 0;
	int rc = sqlite3_exec(db, "BEGIN", 0, 0, 0);
	if (rc) return rc;
	rc = sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &get, 0);
	if (rc == 0) {
		rc = sqlite3_step(get);
		if (rc == 100) { v = sqlite3_column_int(get, 0); rc = 0; }
		sqlite3_finalize(get);
	}
	if (rc == 0) {
		snprintf(sql, sizeof sql, "PRAGMA user_version=%d", v);
		rc = sqlite3_prepare_v2(db, sql, -1, &set, 0);
	}
	if (rc == 0) {
		us_ofd(fd, off, F_UNLCK);
		*released = 1;
		rc = sqlite3_step(set);
		if (rc == 101) rc = 0;
		sqlite3_finalize(set);
	}
	if (rc != 0) sqlite3_exec(db, "ROLLBACK", 0, 0, 0);
	return rc;
}
*/
import "C"

import (
	"fmt"
	"reflect"
	"unsafe"

	sqlite3 "github.com/mattn/go-sqlite3"

	"github.com/understudy-db/understudy/internal/walock"
)

// The hand-overs between the apply connection's transactions and the guard
// run in C, each in one call: between COMMIT's unlock and the guard's
// lock, and between the guard's unlock and the next transaction's lock,
// there is no return to Go, whose scheduler can park a goroutine for
// milliseconds after a long call into C (a COMMIT waits for fsync). Seen
// in TestFollowerRefusesAppWrites: with the calls made from Go, writers
// with a busy timeout got in about once in three runs.

// sqliteHandle is the sqlite3* of a connection of mattn's driver, which
// does not export it. The symbols called on it are the ones the driver
// links in.
func sqliteHandle(c *sqlite3.SQLiteConn) *C.sqlite3 {
	return (*C.sqlite3)(unsafe.Pointer(reflect.ValueOf(c).Elem().FieldByName("db").Pointer()))
}

// sqliteErr describes a failed call on db.
func sqliteErr(db *C.sqlite3, what string, rc C.int) error {
	return fmt.Errorf("%s: %s (SQLite code %d)", what, C.GoString(C.sqlite3_errmsg(db)), int(rc))
}

// commitGuard commits on c and has g take the write lock in the same call.
func commitGuard(c *sqlite3.SQLiteConn, g *walock.Lock) error {
	db := sqliteHandle(c)
	var locked C.int
	rc := C.us_commit_guard(db, C.int(g.Fd()), C.int(walock.WriteLockOffset), &locked)
	g.Assume(locked != 0)
	if rc != 0 {
		return sqliteErr(db, "COMMIT", rc)
	}
	return nil
}

// beginTake begins a transaction on c, takes its snapshot, and hands the
// write lock from g (which must hold it) to it, in one call.
func beginTake(c *sqlite3.SQLiteConn, g *walock.Lock) error {
	db := sqliteHandle(c)
	var released C.int
	rc := C.us_begin_take(db, C.int(g.Fd()), C.int(walock.WriteLockOffset), &released)
	if released != 0 {
		g.Assume(false)
	}
	if rc != 0 {
		return sqliteErr(db, "begin the held write transaction", rc)
	}
	return nil
}
