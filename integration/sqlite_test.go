package integration

import (
	"database/sql"
	"fmt"
	"os"
	"testing"

	_ "github.com/mattn/go-sqlite3"
	"github.com/superfly/ltx"
	"github.com/understudy-db/understudy/internal/dbsum"
)

// openDB opens a database the way an application would: WAL mode, NORMAL
// sync, a busy timeout, one connection so every statement sees its own writes.
func openDB(t testing.TB, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+path+"?_journal_mode=WAL&_synchronous=NORMAL&_busy_timeout=5000&_txlock=immediate")
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	if _, err := db.Exec(`SELECT 1`); err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	return db
}

// image is a transaction-consistent copy of a database: its pages as the
// current read snapshot sees them (main file + WAL), read via sqlite_dbpage.
type image struct {
	pages    [][]byte
	checksum ltx.Checksum
}

// snapshotImage reads every page of db in one read transaction.
func snapshotImage(t testing.TB, db *sql.DB) image {
	t.Helper()
	var img image
	img.checksum, _ = scanPages(t, db, func(data []byte) { img.pages = append(img.pages, data) })
	return img
}

// scanPages reads every page of db in order in one read transaction, hands
// each to keep (the lock page as zeros of page size), and returns the
// database checksum and the page count.
func scanPages(t testing.TB, db *sql.DB, keep func(data []byte)) (ltx.Checksum, uint32) {
	t.Helper()
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	var pageSize int
	if err := tx.QueryRow(`PRAGMA page_size`).Scan(&pageSize); err != nil {
		t.Fatal(err)
	}
	rows, err := tx.Query(`SELECT pgno, data FROM sqlite_dbpage ORDER BY pgno`)
	if err != nil {
		t.Fatalf("read pages (is the binary built with -DSQLITE_ENABLE_DBPAGE_VTAB?): %v", err)
	}
	defer rows.Close()
	var sum dbsum.Sum
	var n uint32
	lock := ltx.LockPgno(uint32(pageSize))
	for rows.Next() {
		var pgno uint32
		var data []byte
		if err := rows.Scan(&pgno, &data); err != nil {
			t.Fatal(err)
		}
		if pgno != n+1 {
			t.Fatalf("sqlite_dbpage skipped from page %d to %d", n, pgno)
		}
		n = pgno
		if len(data) != pageSize { // the lock page reads as zeros of page size
			data = make([]byte, pageSize)
		}
		keep(data)
		if pgno != lock {
			sum = sum.Add(dbsum.Page(pgno, data))
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return sum.Checksum(), n
}

// fileChecksum is the database checksum of a file at rest (no WAL).
func fileChecksum(t testing.TB, path string) ltx.Checksum {
	t.Helper()
	sum, _, err := dbsum.File(path)
	if err != nil {
		t.Fatal(err)
	}
	return sum
}

// integrityCheck runs PRAGMA integrity_check on a database file.
func integrityCheck(t testing.TB, path string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite3", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var res string
	if err := db.QueryRow(`PRAGMA integrity_check`).Scan(&res); err != nil {
		t.Fatalf("integrity_check %s: %v", path, err)
	}
	if res != "ok" {
		t.Fatalf("integrity_check %s: %s", path, res)
	}
}

func mustExec(t testing.TB, db *sql.DB, q string, args ...any) {
	t.Helper()
	if _, err := db.Exec(q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func hex16(txid ltx.TXID) string { return fmt.Sprintf("%016x", uint64(txid)) }
