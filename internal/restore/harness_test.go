package restore

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/internal/dbsum"
	"github.com/understudy-db/understudy/internal/ltxtest"
	"github.com/understudy-db/understudy/internal/storage"
	"github.com/understudy-db/understudy/internal/storage/file"
)

// testPageSize keeps test databases small but many pages long.
const testPageSize = 1024

// sourceStart is the commit time of TXID 0 in every source; TXID n commits
// n seconds later.
var sourceStart = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

// state is the database as of one TXID, kept to compare restores with.
type state struct {
	data []byte
	sum  ltx.Checksum
	time time.Time
}

// source is a real SQLite database in WAL mode replicated into a real file
// store the way the primary does it: after each change a TRUNCATE
// checkpoint puts every page in the main file, the pages that changed since
// the last TXID are encoded as one L0 file, and its metadata carries the
// database checksums before and after.
type source struct {
	t      *testing.T
	dbPath string
	db     *sql.DB
	client *file.Client
	dir    string

	txid   ltx.TXID
	prev   []byte // database bytes at txid
	states map[ltx.TXID]state
	l0     map[ltx.TXID][]byte // encoded L0 files, for compactions
	clock  time.Time
}

func newSource(t *testing.T) *source {
	t.Helper()
	dir := t.TempDir()
	s := &source{
		t:      t,
		dbPath: filepath.Join(dir, "src.db"),
		dir:    filepath.Join(dir, "replica"),
		states: map[ltx.TXID]state{},
		l0:     map[ltx.TXID][]byte{},
		clock:  sourceStart,
	}
	var err error
	if s.client, err = file.New(s.dir); err != nil {
		t.Fatal(err)
	}
	if s.db, err = sql.Open("sqlite3", s.dbPath); err != nil {
		t.Fatal(err)
	}
	s.db.SetMaxOpenConns(1)
	t.Cleanup(func() { s.db.Close() })
	s.exec(fmt.Sprintf("PRAGMA page_size=%d", testPageSize))
	s.exec("PRAGMA journal_mode=WAL")
	s.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
	s.exec("CREATE INDEX t_v ON t (v)")
	return s
}

func (s *source) exec(q string, args ...any) {
	s.t.Helper()
	if _, err := s.db.Exec(q, args...); err != nil {
		s.t.Fatalf("%s: %v", q, err)
	}
}

// insert adds n rows of about size bytes each.
func (s *source) insert(n, size int) {
	s.t.Helper()
	for i := 0; i < n; i++ {
		s.exec("INSERT INTO t (v) VALUES (?)", fmt.Sprintf("%0*d", size, int(s.txid)*100000+i))
	}
}

// pages checkpoints and returns the whole database file.
func (s *source) pages() []byte {
	s.t.Helper()
	s.exec("PRAGMA wal_checkpoint(TRUNCATE)")
	b, err := os.ReadFile(s.dbPath)
	if err != nil {
		s.t.Fatal(err)
	}
	if len(b)%testPageSize != 0 {
		s.t.Fatalf("database size %d is not a whole number of pages", len(b))
	}
	return b
}

func checksumOf(t *testing.T, b []byte) ltx.Checksum {
	t.Helper()
	sum, _, err := dbsum.Reader(bytes.NewReader(b), testPageSize)
	if err != nil {
		t.Fatal(err)
	}
	return sum
}

// encode writes an LTX file (Litestream 0.5 style: no header checksums) of
// the given pages of db, all of them when pgnos is nil.
func encode(t *testing.T, db []byte, minTXID, maxTXID ltx.TXID, ts time.Time, pgnos []uint32) []byte {
	t.Helper()
	commit := uint32(len(db) / testPageSize)
	if pgnos == nil {
		for p := uint32(1); p <= commit; p++ {
			pgnos = append(pgnos, p)
		}
	}
	return ltxtest.Encode(t, testPageSize, commit, minTXID, maxTXID, ts, pgnos, func(p uint32) []byte {
		off := int(p-1) * testPageSize
		return db[off : off+testPageSize]
	})
}

func (s *source) put(level int, minTXID, maxTXID ltx.TXID, data []byte, md storage.Metadata) {
	s.t.Helper()
	if _, err := s.client.Create(context.Background(), level, minTXID, maxTXID, bytes.NewReader(data), md); err != nil {
		s.t.Fatalf("create L%d %s-%s: %v", level, minTXID, maxTXID, err)
	}
}

// sync ships the changes since the last TXID as the next L0 file. The first
// sync also writes the snapshot 1-1.
func (s *source) sync() ltx.TXID {
	s.t.Helper()
	cur := s.pages()
	var changed []uint32
	for p := uint32(1); int(p)*testPageSize <= len(cur); p++ {
		off := int(p-1) * testPageSize
		if int(p)*testPageSize > len(s.prev) || !bytes.Equal(cur[off:off+testPageSize], s.prev[off:off+testPageSize]) {
			changed = append(changed, p)
		}
	}
	s.txid++
	s.clock = s.clock.Add(time.Second)
	st := state{data: cur, sum: checksumOf(s.t, cur), time: s.clock}
	var pre ltx.Checksum
	if s.txid > 1 {
		pre = s.states[s.txid-1].sum
	}
	data := encode(s.t, cur, s.txid, s.txid, s.clock, changed)
	s.l0[s.txid] = data
	s.put(0, s.txid, s.txid, data, storage.Metadata{Node: "test", CommitTime: s.clock, PreApplyChecksum: pre, PostApplyChecksum: st.sum})
	if s.txid == 1 {
		s.snapshot()
	}
	s.states[s.txid] = st
	s.prev = cur
	return s.txid
}

// snapshot writes a level-9 snapshot 1-txid of the current state.
func (s *source) snapshot() {
	s.t.Helper()
	cur := s.pages()
	sum := checksumOf(s.t, cur)
	s.put(storage.SnapshotLevel, 1, s.txid, encode(s.t, cur, 1, s.txid, s.clock, nil),
		storage.Metadata{Node: "test", CommitTime: s.clock, PostApplyChecksum: sum})
}

// compact merges L0 files min..max into one file at level with ltx's
// compactor, as the primary's compaction does.
func (s *source) compact(level int, minTXID, maxTXID ltx.TXID) {
	s.t.Helper()
	var rdrs []io.Reader
	for t := minTXID; t <= maxTXID; t++ {
		rdrs = append(rdrs, bytes.NewReader(s.l0[t]))
	}
	var buf bytes.Buffer
	c, err := ltx.NewCompactor(&buf, rdrs)
	if err != nil {
		s.t.Fatal(err)
	}
	c.HeaderFlags = ltx.HeaderFlagNoChecksum
	if err := c.Compact(context.Background()); err != nil {
		s.t.Fatalf("compact %s-%s: %v", minTXID, maxTXID, err)
	}
	var pre ltx.Checksum
	if minTXID > 1 {
		pre = s.states[minTXID-1].sum
	}
	last := s.states[maxTXID]
	s.put(level, minTXID, maxTXID, buf.Bytes(), storage.Metadata{Node: "test", CommitTime: last.time, PreApplyChecksum: pre, PostApplyChecksum: last.sum})
}

// path is a file's path in the store.
func (s *source) path(level int, minTXID, maxTXID ltx.TXID) string {
	return s.client.Path(level, minTXID, maxTXID)
}

// restoreTo runs a restore into a fresh output path in its own directory,
// given relative to the working directory as users give it.
func restoreTo(t *testing.T, client storage.Client, target Target, mutate func(*Options)) (string, Result, error) {
	t.Helper()
	dir := t.TempDir()
	t.Chdir(dir)
	opts := Options{OutputPath: "out.db", Target: target, Parallelism: 3, IntegrityCheck: IntegrityFull}
	if mutate != nil {
		mutate(&opts)
	}
	res, err := Restore(context.Background(), client, opts)
	return filepath.Join(dir, "out.db"), res, err
}

// assertRestored checks that out is byte for byte the state at txid and that
// the result reports its checksum.
func assertRestored(t *testing.T, s *source, out string, res Result, txid ltx.TXID) {
	t.Helper()
	want := s.states[txid]
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatalf("read restored file: %v", err)
	}
	if res.TXID != txid {
		t.Fatalf("restored TXID %s, want %s", res.TXID, txid)
	}
	if !bytes.Equal(got, want.data) {
		t.Fatalf("TXID %s: restored %d bytes differ from the source's %d bytes", txid, len(got), len(want.data))
	}
	sum, _, err := dbsum.File(out)
	if err != nil {
		t.Fatal(err)
	}
	if sum != want.sum || res.PostApplyChecksum != want.sum {
		t.Fatalf("TXID %s: checksum of file %s, reported %s, want %s", txid, sum, res.PostApplyChecksum, want.sum)
	}
}

// assertNothingLeft checks that a failed restore left no output and no temp
// file in the output's directory.
func assertNothingLeft(t *testing.T, out string) {
	t.Helper()
	entries, err := os.ReadDir(filepath.Dir(out))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		t.Errorf("left behind: %s", e.Name())
	}
}
