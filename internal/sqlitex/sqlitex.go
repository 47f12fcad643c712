// Package sqlitex holds small helpers around single SQLite connections, as
// the primary and follower use them: each connection has one job (pin the
// WAL, notice commits, hold the write lock, read pages) and must stay the
// same physical connection for its life, so each Conn owns a database/sql
// pool limited to one connection that never expires.
//
// Why not open files directly: closing any descriptor of a file drops all of
// the process's POSIX locks on it, including the read mark that pins the WAL
// (SQLITE-NOTES.md). SQLite's own VFS knows this and defers such closes;
// code outside it does not. So the database and -shm files are only ever
// opened through connections from this package.
package sqlitex

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/mattn/go-sqlite3"
)

// DefaultBusyTimeout is how long a statement waits for a lock by default.
const DefaultBusyTimeout = 5 * time.Second

// Options configure a connection.
type Options struct {
	ReadOnly    bool          // open with mode=ro
	BusyTimeout time.Duration // 0 = DefaultBusyTimeout; < 0 = do not wait at all
	// CacheKiB caps the connection's page cache (0 = SQLite's default of
	// 2 MiB). A connection that reads each page once, or only the schema,
	// gains nothing from a cache and only holds memory.
	CacheKiB int
	// KeepWAL sets SQLITE_FCNTL_PERSIST_WAL: closing the connection never
	// deletes "<path>-wal" and "<path>-shm" by name. Without it, the last
	// connection of a process to a database file that was since replaced
	// (renamed over) deletes the new file's WAL on close.
	KeepWAL bool
	// VFS is the SQLite VFS to open the database with ("": the default);
	// HoldVFS and HoldableVFS are registered on first use.
	VFS string
}

// Conn is one physical SQLite connection.
type Conn struct {
	path string
	ino  uint64 // the database file's inode when it was opened (0: unknown)
	db   *sql.DB
	c    *sql.Conn
}

// Open opens one connection to the existing database at path (it is never
// created).
func Open(ctx context.Context, path string, opts Options) (*Conn, error) {
	bt := opts.BusyTimeout
	if bt == 0 {
		bt = DefaultBusyTimeout
	}
	if bt < 0 {
		bt = 0
	}
	mode := "rw"
	if opts.ReadOnly {
		mode = "ro"
	}
	q := url.Values{}
	q.Set("mode", mode)
	if opts.VFS != "" {
		if opts.VFS == HoldVFS || opts.VFS == HoldableVFS {
			if err := registerHoldVFS(); err != nil {
				return nil, err
			}
		}
		q.Set("vfs", opts.VFS)
	}
	q.Set("_busy_timeout", fmt.Sprint(bt.Milliseconds()))
	if opts.CacheKiB > 0 {
		q.Set("_cache_size", fmt.Sprint(-opts.CacheKiB))
	}
	db, err := OpenDB(ctx, DSN(path, q))
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	c, err := db.Conn(ctx)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	if opts.KeepWAL {
		err := c.Raw(func(dc any) error {
			sc, ok := dc.(*sqlite3.SQLiteConn)
			if !ok {
				return fmt.Errorf("unexpected driver connection %T", dc)
			}
			return sc.SetFileControlInt("main", sqlite3.SQLITE_FCNTL_PERSIST_WAL, 1)
		})
		if err != nil {
			c.Close()
			db.Close()
			return nil, fmt.Errorf("open database %s: keep the WAL on close: %w", path, err)
		}
	}
	return &Conn{path: path, ino: inode(path), db: db, c: c}, nil
}

// Path is the database path.
func (c *Conn) Path() string { return c.path }

// Exec runs a statement.
func (c *Conn) Exec(ctx context.Context, query string, args ...any) error {
	if _, err := c.c.ExecContext(ctx, query, args...); err != nil {
		return fmt.Errorf("%s: %s: %w", c.path, query, err)
	}
	return nil
}

// QueryRow runs a query that returns one row.
func (c *Conn) QueryRow(ctx context.Context, query string, args ...any) *sql.Row {
	return c.c.QueryRowContext(ctx, query, args...)
}

// Query runs a query.
func (c *Conn) Query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	rows, err := c.c.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %w", c.path, query, err)
	}
	return rows, nil
}

// Int runs a query returning one integer.
func (c *Conn) Int(ctx context.Context, query string, args ...any) (int64, error) {
	var n int64
	if err := c.c.QueryRowContext(ctx, query, args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("%s: %s: %w", c.path, query, err)
	}
	return n, nil
}

// DataVersion returns PRAGMA data_version: it changes when another
// connection commits. It does not change inside an open read transaction.
func (c *Conn) DataVersion(ctx context.Context) (int64, error) {
	return c.Int(ctx, "PRAGMA data_version")
}

// CheckpointResult is the row of PRAGMA wal_checkpoint.
type CheckpointResult struct {
	Busy         bool  // the checkpoint could not finish (a reader or writer in the way)
	Log          int64 // frames in the WAL
	Checkpointed int64 // frames copied back into the database
}

// Checkpoint runs PRAGMA wal_checkpoint(mode); mode is PASSIVE, FULL,
// RESTART, TRUNCATE or NOOP.
func (c *Conn) Checkpoint(ctx context.Context, mode string) (CheckpointResult, error) {
	var busy int
	var r CheckpointResult
	q := "PRAGMA wal_checkpoint(" + mode + ")"
	if err := c.c.QueryRowContext(ctx, q).Scan(&busy, &r.Log, &r.Checkpointed); err != nil {
		return r, fmt.Errorf("%s: %s: %w", c.path, q, err)
	}
	r.Busy = busy != 0
	return r, nil
}

// Close closes the connection.
func (c *Conn) Close() error {
	err1 := c.c.Close()
	err2 := c.db.Close()
	return errors.Join(err1, err2)
}

// IsBusy reports whether err is SQLITE_BUSY or SQLITE_LOCKED.
func IsBusy(err error) bool {
	var se sqlite3.Error
	if errors.As(err, &se) {
		return se.Code == sqlite3.ErrBusy || se.Code == sqlite3.ErrLocked
	}
	return false
}

// IsNotADB reports whether err says the file is not a SQLite database.
func IsNotADB(err error) bool {
	var se sqlite3.Error
	return errors.As(err, &se) && se.Code == sqlite3.ErrNotADB
}

// ErrNoDBPage says the binary was built without the sqlite_dbpage virtual
// table, through which pages are read and applied. mattn/go-sqlite3 has no
// build tag for it; only CGO_CFLAGS reaches its amalgamation.
var ErrNoDBPage = errors.New(`this binary's SQLite has no sqlite_dbpage virtual table: ` +
	`rebuild with CGO_CFLAGS="-O2 -g -DSQLITE_ENABLE_DBPAGE_VTAB" (make build does this)`)

// CheckDBPage returns ErrNoDBPage if sqlite_dbpage is missing (checked on
// an in-memory database).
func CheckDBPage(ctx context.Context) error {
	db, err := sql.Open("sqlite3", ":memory:")
	if err != nil {
		return fmt.Errorf("open in-memory SQLite: %w", err)
	}
	defer db.Close()
	var n int
	err = db.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_dbpage`).Scan(&n)
	if err != nil && strings.Contains(err.Error(), "no such table") {
		return ErrNoDBPage
	} else if err != nil {
		return fmt.Errorf("check for sqlite_dbpage: %w", err)
	}
	return nil
}

// DSN builds a mattn/go-sqlite3 URI for path with the given query parameters
// (mattn's own "_x" parameters and SQLite's URI parameters such as mode).
func DSN(path string, params url.Values) string {
	u := url.URL{Scheme: "file", Opaque: (&url.URL{Path: path}).EscapedPath()}
	u.RawQuery = params.Encode()
	return u.String()
}

// OpenDB opens a *sql.DB limited to one connection that is never closed
// for idleness, so that every statement runs on the same SQLite connection.
func OpenDB(ctx context.Context, dataSource string) (*sql.DB, error) {
	db, err := sql.Open("sqlite3", dataSource)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}
