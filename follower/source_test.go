package follower

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"math/rand"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/superfly/ltx"
	"github.com/understudy-db/understudy/internal/dbsum"
	"github.com/understudy-db/understudy/internal/ltxtest"
	"github.com/understudy-db/understudy/internal/sqlitex"
	"github.com/understudy-db/understudy/internal/storage"
)

// source is a stand-in for a primary in tests: a real WAL-mode SQLite
// database whose successive states are turned into LTX files by diffing its
// pages (read through sqlite_dbpage), each with the dbsum checksums before
// and after, as the primary puts them in the object's metadata.
type source struct {
	t        *testing.T
	path     string
	db       *sql.DB
	pageSize uint32
	pages    [][]byte // state at txid, page i+1 at index i
	txid     ltx.TXID
	sum      ltx.Checksum
	now      time.Time
}

// The accounts span many pages (a filler column), so that a transfer
// usually changes two pages and a torn apply would show in the total.
const testAccounts = 400
const testBalance = 1000

// newSource creates a database with an accounts table (testAccounts rows of
// testBalance each), and records it as TXID 1.
func newSource(t *testing.T, dir string) *source {
	t.Helper()
	path := filepath.Join(dir, "source.db")
	db, err := sql.Open("sqlite3", sqlitex.DSN(path, url.Values{"_journal_mode": {"WAL"}, "_busy_timeout": {"5000"}}))
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	s := &source{t: t, path: path, db: db, now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	s.exec(`CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL, filler BLOB)`)
	s.exec(`CREATE TABLE blobs (id INTEGER PRIMARY KEY, b BLOB)`)
	s.exec(`WITH RECURSIVE g(v) AS (SELECT 1 UNION ALL SELECT v+1 FROM g WHERE v < ?)
		INSERT INTO accounts SELECT v, ?, randomblob(300) FROM g`, testAccounts, testBalance)
	s.pages = s.snapshot()
	s.pageSize = uint32(len(s.pages[0]))
	s.txid = 1
	s.sum = sumPages(s.pages)
	return s
}

func (s *source) exec(q string, args ...any) {
	s.t.Helper()
	if _, err := s.db.Exec(q, args...); err != nil {
		s.t.Fatalf("source: %s: %v", q, err)
	}
}

// transfer moves an amount between two accounts in one transaction.
func (s *source) transfer(rng *rand.Rand) {
	s.t.Helper()
	a, b := rng.Intn(testAccounts)+1, rng.Intn(testAccounts)+1
	amt := rng.Intn(100)
	tx, err := s.db.Begin()
	if err != nil {
		s.t.Fatal(err)
	}
	if _, err := tx.Exec(`UPDATE accounts SET balance = balance - ? WHERE id = ?`, amt, a); err != nil {
		s.t.Fatal(err)
	}
	if _, err := tx.Exec(`UPDATE accounts SET balance = balance + ? WHERE id = ?`, amt, b); err != nil {
		s.t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		s.t.Fatal(err)
	}
}

// snapshot reads every page of the source's current state.
func (s *source) snapshot() [][]byte {
	s.t.Helper()
	rows, err := s.db.Query(`SELECT pgno, data FROM sqlite_dbpage`)
	if err != nil {
		s.t.Fatal(err)
	}
	defer rows.Close()
	var pages [][]byte
	for rows.Next() {
		var pgno int
		var data []byte
		if err := rows.Scan(&pgno, &data); err != nil {
			s.t.Fatal(err)
		}
		if pgno != len(pages)+1 {
			s.t.Fatalf("source page %d out of order", pgno)
		}
		pages = append(pages, data)
	}
	if err := rows.Err(); err != nil {
		s.t.Fatal(err)
	}
	return pages
}

func sumPages(pages [][]byte) ltx.Checksum {
	var s dbsum.Sum
	if len(pages) == 0 {
		return s.Checksum()
	}
	lock := ltx.LockPgno(uint32(len(pages[0])))
	for i, p := range pages {
		if uint32(i+1) != lock {
			s = s.Add(dbsum.Page(uint32(i+1), p))
		}
	}
	return s.Checksum()
}

// ltxFile is one generated file with its metadata.
type ltxFile struct {
	minTXID, maxTXID ltx.TXID
	data             []byte
	md               storage.Metadata
}

func (f ltxFile) name() string { return fmt.Sprintf("L0/%s", ltx.FormatFilename(f.minTXID, f.maxTXID)) }

// next captures the source's changes since the last call as the next TXID.
func (s *source) next() ltxFile {
	s.t.Helper()
	cur := s.snapshot()
	var pgnos []uint32
	for i, p := range cur {
		if i >= len(s.pages) || !bytes.Equal(p, s.pages[i]) {
			pgnos = append(pgnos, uint32(i+1))
		}
	}
	return s.emit(cur, pgnos, s.txid+1, s.txid+1)
}

// fullImage captures the source's current state with every page.
func (s *source) fullImage() ltxFile {
	s.t.Helper()
	cur := s.snapshot()
	return s.emit(cur, allPages(len(cur)), s.txid+1, s.txid+1)
}

// allPages lists page numbers 1..n.
func allPages(n int) []uint32 {
	pgnos := make([]uint32, n)
	for i := range pgnos {
		pgnos[i] = uint32(i + 1)
	}
	return pgnos
}

func (s *source) emit(cur [][]byte, pgnos []uint32, minTXID, maxTXID ltx.TXID) ltxFile {
	s.t.Helper()
	s.now = s.now.Add(time.Second)
	f := ltxFile{minTXID: minTXID, maxTXID: maxTXID}
	f.data = ltxtest.Encode(s.t, s.pageSize, uint32(len(cur)), minTXID, maxTXID, s.now, pgnos, func(pgno uint32) []byte { return cur[pgno-1] })
	post := sumPages(cur)
	f.md = storage.Metadata{Node: "test", CommitTime: s.now, PreApplyChecksum: s.sum, PostApplyChecksum: post}
	s.pages, s.txid, s.sum = cur, maxTXID, post
	return f
}

// bootstrapCopy writes the source's current state as a new database at path
// (what a restore produces) and starts an applier on it.
func (s *source) bootstrapCopy(t *testing.T, path string) *Applier {
	t.Helper()
	writeImage(t, path, s.pages)
	a, err := InitApplier(context.Background(), path, s.txid, s.sum, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

func writeImage(t *testing.T, path string, pages [][]byte) {
	t.Helper()
	var buf bytes.Buffer
	for _, p := range pages {
		buf.Write(p)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}
