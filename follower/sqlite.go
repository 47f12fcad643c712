package follower

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"

	_ "github.com/mattn/go-sqlite3" // registers the "sqlite3" driver
	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/internal/dbsum"
	"github.com/understudy-db/understudy/internal/sqlitex"
)

// ErrNoDBPage says the binary was built without the sqlite_dbpage virtual
// table, through which every page is applied.
var ErrNoDBPage = sqlitex.ErrNoDBPage

// CheckDBPage returns ErrNoDBPage if sqlite_dbpage is missing.
var CheckDBPage = sqlitex.CheckDBPage

// ReadOnlyDSN is how applications (and tests) should open a follower's
// database: read-only, with a few seconds of busy timeout (notes rule 9).
func ReadOnlyDSN(path string) string {
	return sqlitex.DSN(path, url.Values{"mode": {"ro"}, "_busy_timeout": {"5000"}})
}

// pageTable holds the dbsum checksum of every page of the local database, so
// that the checksum after an apply costs O(pages changed), not a re-read of
// the whole file. Index 0 is unused; the lock page's entry stays 0.
type pageTable struct {
	pageSize uint32
	sums     []ltx.Checksum
	total    dbsum.Sum
}

// count is the database size in pages.
func (t *pageTable) count() uint32 { return uint32(len(t.sums) - 1) }

// checksum is the database checksum.
func (t *pageTable) checksum() ltx.Checksum { return t.total.Checksum() }

// sum returns a page's checksum, 0 beyond the end.
func (t *pageTable) sum(pgno uint32) ltx.Checksum {
	if int(pgno) >= len(t.sums) {
		return 0
	}
	return t.sums[pgno]
}

// set replaces a page's checksum, growing the table as needed.
func (t *pageTable) set(pgno uint32, c ltx.Checksum) {
	for int(pgno) >= len(t.sums) {
		t.sums = append(t.sums, 0)
	}
	t.total = t.total.Add(t.sums[pgno]).Add(c)
	t.sums[pgno] = c
}

// truncate drops every page above n.
func (t *pageTable) truncate(n uint32) {
	for int(n)+1 < len(t.sums) {
		last := len(t.sums) - 1
		t.total = t.total.Add(t.sums[last])
		t.sums = t.sums[:last]
	}
}

// loadPageTable reads every page of the database through sqlite_dbpage on q
// (so that frames still in the WAL count, which reading the main file would
// miss, and so that no descriptor of the database file is opened and closed
// beside SQLite's: closing one drops the process's POSIX locks on it).
func loadPageTable(ctx context.Context, q *sql.Conn) (*pageTable, error) {
	tx, err := q.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	var pageSize, pageCount uint32
	if err := tx.QueryRowContext(ctx, `PRAGMA page_size`).Scan(&pageSize); err != nil {
		return nil, fmt.Errorf("read page size: %w", err)
	}
	if err := tx.QueryRowContext(ctx, `PRAGMA page_count`).Scan(&pageCount); err != nil {
		return nil, fmt.Errorf("read page count: %w", err)
	}
	if !ltx.IsValidPageSize(pageSize) {
		return nil, fmt.Errorf("invalid page size %d", pageSize)
	}
	t := &pageTable{pageSize: pageSize, sums: make([]ltx.Checksum, pageCount+1)}
	if err := scanPages(ctx, tx, pageSize, pageCount, func(pgno uint32, c ltx.Checksum) error {
		t.set(pgno, c)
		return nil
	}); err != nil {
		return nil, err
	}
	return t, nil
}

// scanPages reads every page of the database in tx through sqlite_dbpage and
// calls fn with each page's dbsum checksum, in page order, passing over the
// lock page. The pages must be 1..pageCount in sequence, of pageSize bytes.
func scanPages(ctx context.Context, tx *sql.Tx, pageSize, pageCount uint32, fn func(pgno uint32, c ltx.Checksum) error) error {
	lock := ltx.LockPgno(pageSize)
	rows, err := tx.QueryContext(ctx, `SELECT pgno, data FROM sqlite_dbpage`)
	if err != nil {
		return fmt.Errorf("read pages: %w", err)
	}
	defer rows.Close()
	var n uint32
	for rows.Next() {
		var pgno uint32
		var data sql.RawBytes
		if err := rows.Scan(&pgno, &data); err != nil {
			return fmt.Errorf("read pages: %w", err)
		}
		n++
		if pgno != n || pgno > pageCount {
			return fmt.Errorf("read pages: page %d out of sequence (expected %d of %d)", pgno, n, pageCount)
		}
		if pgno == lock {
			continue
		}
		if uint32(len(data)) != pageSize {
			return fmt.Errorf("read pages: page %d has %d bytes, page size is %d", pgno, len(data), pageSize)
		}
		if err := fn(pgno, dbsum.Page(pgno, data)); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read pages: %w", err)
	}
	if n != pageCount {
		return fmt.Errorf("read pages: got %d pages, page_count says %d", n, pageCount)
	}
	return nil
}

// Checksum returns the dbsum checksum and page count of the database at
// path, read through SQLite (WAL included) on a read-only connection. It is
// safe to call while other connections in this process use the file.
func Checksum(ctx context.Context, path string) (ltx.Checksum, uint32, error) {
	t, err := readPageTable(ctx, path)
	if err != nil {
		return 0, 0, fmt.Errorf("checksum: %w", err)
	}
	return t.checksum(), t.count(), nil
}
