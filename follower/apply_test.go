package follower

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/understudy-db/understudy/internal/ltxtest"
	"github.com/understudy-db/understudy/internal/sqlitex"
	"github.com/understudy-db/understudy/internal/storage"
)

func applyFile(t *testing.T, a *Applier, f ltxFile) ApplyResult {
	t.Helper()
	md := f.md
	res, err := a.Apply(context.Background(), f.name(), bytes.NewReader(f.data), &md)
	if err != nil {
		t.Fatalf("apply %s: %v", f.name(), err)
	}
	return res
}

// assertSame checks that the follower's database has the source's checksum
// and page count, read through SQLite.
func assertSame(t *testing.T, s *source, path string) {
	t.Helper()
	sum, n, err := Checksum(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	if sum != s.sum || int(n) != len(s.pages) {
		t.Fatalf("follower at checksum %s, %d pages; source %s, %d pages", sum, n, s.sum, len(s.pages))
	}
}

// writeBehind changes the database at path through a read-write connection
// of its own, behind the follower's back.
func writeBehind(t *testing.T, path, stmt string) {
	t.Helper()
	db, err := sql.Open("sqlite3", sqlitex.DSN(path, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(stmt); err != nil {
		t.Fatal(err)
	}
}

func TestCheckDBPage(t *testing.T) {
	if err := sqlitex.CheckDBPage(context.Background()); err != nil {
		t.Fatalf("this test binary lacks sqlite_dbpage (set CGO_CFLAGS as the Makefile does): %v", err)
	}
}

// TestApplyShapes applies one file of each shape the notes single out and
// checks byte-identity (by dbsum) with the source after each.
func TestApplyShapes(t *testing.T) {
	steps := []struct {
		name   string
		change func(s *source)
	}{
		{"update", func(s *source) { s.exec(`UPDATE accounts SET balance = balance + 1 WHERE id = 3`) }},
		{"zero pages (a node claiming the next TXID)", func(s *source) {}},
		{"grow by more than 64 KiB in one transaction", func(s *source) {
			s.exec(`INSERT INTO blobs (b) VALUES (randomblob(300000))`)
		}},
		{"schema change: new table and index", func(s *source) {
			s.exec(`CREATE TABLE t2 (a TEXT, b INTEGER)`)
			s.exec(`CREATE INDEX t2_b ON t2 (b)`)
			s.exec(`WITH RECURSIVE g(v) AS (SELECT 1 UNION ALL SELECT v+1 FROM g WHERE v < 500) INSERT INTO t2 SELECT hex(randomblob(20)), v FROM g`)
		}},
		{"shrinking VACUUM", func(s *source) {
			s.exec(`DELETE FROM blobs`)
			s.exec(`DROP TABLE t2`)
			s.exec(`VACUUM`)
		}},
		{"several transactions in one file", func(s *source) {
			s.exec(`INSERT INTO blobs (b) VALUES (randomblob(100000))`)
			s.exec(`DELETE FROM blobs`)
			s.exec(`UPDATE accounts SET balance = balance - 1 WHERE id = 3`)
		}},
	}
	dir := t.TempDir()
	s := newSource(t, dir)
	path := filepath.Join(dir, "follower.db")
	a := s.bootstrapCopy(t, path)
	assertSame(t, s, path)
	for _, st := range steps {
		before := len(s.pages)
		st.change(s)
		f := s.next()
		res := applyFile(t, a, f)
		t.Logf("%s: %d -> %d pages, %d written", st.name, before, len(s.pages), res.Pages)
		if res.Pos != (Position{TXID: s.txid, Checksum: s.sum}) {
			t.Fatalf("%s: applier at %s, source at TXID %s %s", st.name, res.Pos, s.txid, s.sum)
		}
		assertSame(t, s, path)
	}
	// After a full checkpoint, the main file alone must equal the source: a
	// skipped truncation would leave stale pages past the end.
	if _, err := a.Checkpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() != int64(len(s.pages))*int64(s.pageSize) {
		t.Fatalf("main file has %d bytes after a checkpoint, want %d pages of %d", st.Size(), len(s.pages), s.pageSize)
	}
}

// TestApplyRefuses feeds files that must not be applied and checks that each
// stops with a *VerifyError naming the problem and leaves the database as it
// was.
func TestApplyRefuses(t *testing.T) {
	type tc struct {
		name string
		make func(s *source) (ltxFile, *storage.Metadata)
		want string
	}
	tests := []tc{
		{"corrupt object", func(s *source) (ltxFile, *storage.Metadata) {
			s.exec(`UPDATE accounts SET balance = balance + 1 WHERE id = 1`)
			f := s.next()
			f.data = append([]byte(nil), f.data...)
			f.data[len(f.data)/2] ^= 0xff
			return f, &f.md
		}, "corrupt object"},
		{"truncated object", func(s *source) (ltxFile, *storage.Metadata) {
			s.exec(`UPDATE accounts SET balance = balance + 1 WHERE id = 1`)
			f := s.next()
			f.data = f.data[:len(f.data)-20]
			return f, &f.md
		}, "corrupt object"},
		{"gap", func(s *source) (ltxFile, *storage.Metadata) {
			s.exec(`UPDATE accounts SET balance = balance + 1 WHERE id = 1`)
			s.next()
			s.exec(`UPDATE accounts SET balance = balance + 1 WHERE id = 1`)
			f := s.next()
			return f, &f.md
		}, "gap in the history"},
		{"pre-apply mismatch", func(s *source) (ltxFile, *storage.Metadata) {
			s.exec(`UPDATE accounts SET balance = balance + 1 WHERE id = 1`)
			f := s.next()
			f.md.PreApplyChecksum ^= 1
			return f, &f.md
		}, "pre-apply checksum"},
		{"post-apply mismatch", func(s *source) (ltxFile, *storage.Metadata) {
			s.exec(`UPDATE accounts SET balance = balance + 1 WHERE id = 1`)
			f := s.next()
			f.md.PostApplyChecksum ^= 1
			return f, &f.md
		}, "post-apply checksum mismatch"},
		{"growth with a missing page", func(s *source) (ltxFile, *storage.Metadata) {
			old := len(s.pages)
			s.exec(`INSERT INTO blobs (b) VALUES (randomblob(200000))`)
			cur := s.snapshot()
			var pgnos []uint32
			for i := range cur {
				if i+1 != old+3 && (i >= old || !bytes.Equal(cur[i], s.pages[i])) {
					pgnos = append(pgnos, uint32(i+1))
				}
			}
			f := s.emit(cur, pgnos, s.txid+1, s.txid+1)
			return f, &f.md
		}, "gap past the end"},
		{"already applied", func(s *source) (ltxFile, *storage.Metadata) {
			f := ltxFile{minTXID: 1, maxTXID: 1, data: ltxtest.Encode(t, s.pageSize, uint32(len(s.pages)), 1, 1, s.now, []uint32{1}, func(uint32) []byte { return s.pages[0] })}
			return f, nil
		}, "already applied"},
		{"overlap without metadata", func(s *source) (ltxFile, *storage.Metadata) {
			s.exec(`UPDATE accounts SET balance = balance + 1 WHERE id = 1`)
			f := s.next()
			f.data = ltxtest.Encode(t, s.pageSize, uint32(len(s.pages)), s.txid-1, s.txid, s.now, []uint32{1}, func(uint32) []byte { return s.pages[0] })
			return f, nil
		}, "carries no database checksums"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s := newSource(t, dir)
			path := filepath.Join(dir, "follower.db")
			a := s.bootstrapCopy(t, path)
			before := a.Position()
			f, md := tt.make(s)
			_, err := a.Apply(context.Background(), f.name(), bytes.NewReader(f.data), md)
			var ve *VerifyError
			if !errors.As(err, &ve) {
				t.Fatalf("got %v, want a *VerifyError", err)
			}
			if !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), f.name()) {
				t.Fatalf("error %q should name %q and the object", err, tt.want)
			}
			if ve.Changed || a.Position() != before {
				t.Fatalf("the local database changed: %v", err)
			}
			sum, _, err := Checksum(context.Background(), path)
			if err != nil || sum != before.Checksum {
				t.Fatalf("local checksum %s (%v), want %s", sum, err, before.Checksum)
			}
		})
	}
}

// tryWrite runs stmt on a new connection with a short busy timeout, as an
// application would, and returns its error.
func tryWrite(path, stmt string) error {
	db, err := sql.Open("sqlite3", sqlitex.DSN(path, url.Values{"_busy_timeout": {"50"}}))
	if err != nil {
		return err
	}
	defer db.Close()
	_, err = db.Exec(stmt)
	return err
}

// TestApplyForeignWrite: the applier holds the write lock from open to
// close, across applies and checkpoints, so a write through another
// connection fails with SQLITE_BUSY; closing lets the lock go.
func TestApplyForeignWrite(t *testing.T) {
	dir := t.TempDir()
	s := newSource(t, dir)
	path := filepath.Join(dir, "follower.db")
	a := s.bootstrapCopy(t, path)
	// A checkpoint is not a write: it must not trip the check.
	if _, err := a.Checkpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
	s.exec(`UPDATE accounts SET balance = balance + 1 WHERE id = 1`)
	applyFile(t, a, s.next())
	if _, err := a.Checkpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
	s.exec(`UPDATE accounts SET balance = balance + 1 WHERE id = 1`)
	applyFile(t, a, s.next())

	if err := tryWrite(path, `UPDATE accounts SET balance = 0 WHERE id = 2`); err == nil || !strings.Contains(err.Error(), "database is locked") {
		t.Fatalf("a write on the follower's database: %v, want database is locked", err)
	}
	// Nothing got in: the next apply goes on.
	s.exec(`UPDATE accounts SET balance = balance + 1 WHERE id = 1`)
	applyFile(t, a, s.next())
	a.Close()
	if err := tryWrite(path, `UPDATE accounts SET balance = 0 WHERE id = 2`); err != nil {
		t.Fatalf("a write once the applier closed: %v, want the lock let go", err)
	}
}

// TestApplyFullImage: a full image after a history break applies although
// its pre-apply checksum does not match, and a Litestream file without
// metadata applies on file checksum alone.
func TestApplyFullImage(t *testing.T) {
	dir := t.TempDir()
	s := newSource(t, dir)
	path := filepath.Join(dir, "follower.db")
	a := s.bootstrapCopy(t, path)
	s.exec(`INSERT INTO blobs (b) VALUES (randomblob(50000))`)
	f := s.fullImage()
	f.md.PreApplyChecksum = 0x8000000000000001 // a history break: unrelated previous state
	res := applyFile(t, a, f)
	if !res.FullImage {
		t.Fatal("full image not recognised")
	}
	assertSame(t, s, path)

	s.exec(`UPDATE accounts SET balance = balance + 1 WHERE id = 7`)
	f = s.next()
	res, err := a.Apply(context.Background(), f.name(), bytes.NewReader(f.data), nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.ByMetadata || res.Pos.Checksum != s.sum {
		t.Fatalf("apply without metadata: %+v, want checksum %s", res, s.sum)
	}
}

// TestApplyOverlappingCompaction: a compacted file that starts before the
// local position (its range straddles it) applies, proven by its post-apply
// checksum.
func TestApplyOverlappingCompaction(t *testing.T) {
	dir := t.TempDir()
	s := newSource(t, dir)
	path := filepath.Join(dir, "follower.db")
	a := s.bootstrapCopy(t, path)
	base := s.pages
	baseSum, baseTXID := s.sum, s.txid
	s.exec(`UPDATE accounts SET balance = balance + 5 WHERE id = 1`)
	applyFile(t, a, s.next())
	states := [][][]byte{base, s.pages}
	s.exec(`INSERT INTO blobs (b) VALUES (randomblob(90000))`)
	s.next()
	states = append(states, s.pages)
	s.exec(`UPDATE accounts SET balance = balance - 5 WHERE id = 1`) // back to base's value
	s.next()
	states = append(states, s.pages)
	// Compaction of baseTXID+1 .. s.txid: every page any of those files
	// wrote, at its newest version (a page written and later reverted is
	// still in it).
	cur := s.pages
	var pgnos []uint32
	for i := range cur {
		for k := 1; k < len(states); k++ {
			prev, st := states[k-1], states[k]
			if i < len(st) && (i >= len(prev) || !bytes.Equal(st[i], prev[i])) {
				pgnos = append(pgnos, uint32(i+1))
				break
			}
		}
	}
	data := ltxtest.Encode(t, s.pageSize, uint32(len(cur)), baseTXID+1, s.txid, s.now, pgnos, func(p uint32) []byte { return cur[p-1] })
	md := storage.Metadata{CommitTime: s.now, PreApplyChecksum: baseSum, PostApplyChecksum: s.sum}
	res, err := a.Apply(context.Background(), "L1/compacted", bytes.NewReader(data), &md)
	if err != nil {
		t.Fatal(err)
	}
	if res.Pos.TXID != s.txid {
		t.Fatalf("at %s, want TXID %s", res.Pos, s.txid)
	}
	assertSame(t, s, path)
}

// TestResume: a reopened applier resumes from its recorded position; one
// whose database was changed behind its back is a mismatch.
func TestResume(t *testing.T) {
	dir := t.TempDir()
	s := newSource(t, dir)
	path := filepath.Join(dir, "follower.db")
	a := s.bootstrapCopy(t, path)
	s.exec(`UPDATE accounts SET balance = balance + 1 WHERE id = 1`)
	applyFile(t, a, s.next())
	a.Close()

	a, err := OpenApplier(context.Background(), path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := a.Position(); got != (Position{TXID: s.txid, Checksum: s.sum}) {
		t.Fatalf("resumed at %s, want TXID %s", got, s.txid)
	}
	s.exec(`UPDATE accounts SET balance = balance + 1 WHERE id = 1`)
	applyFile(t, a, s.next())
	a.Close()

	// A sidecar that recorded an apply that never committed: resume before it.
	rec, err := readPosition(PositionPath(path))
	if err != nil {
		t.Fatal(err)
	}
	ahead := positionRecord{Position: Position{TXID: rec.TXID + 1, Checksum: 0x8000000000000123}, Prev: &rec.Position, PageSize: rec.PageSize}
	if err := writePosition(PositionPath(path), ahead); err != nil {
		t.Fatal(err)
	}
	a, err = OpenApplier(context.Background(), path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := a.Position(); got != rec.Position {
		t.Fatalf("resumed at %s, want %s", got, rec.Position)
	}
	a.Close()

	writeBehind(t, path, `UPDATE accounts SET balance = 0 WHERE id = 9`)
	_, err = OpenApplier(context.Background(), path, nil)
	var me *MismatchError
	if !errors.As(err, &me) {
		t.Fatalf("got %v, want a *MismatchError", err)
	}
}

// TestApplyWithReaders applies a stream of changes (transfers, schema
// changes, shrinking VACUUMs, growth over 64 KiB at once) while three
// readers, each on its own read-only connection, check in long read
// transactions that the total balance never changes, and a checkpoint runs
// between applies. Zero inconsistent reads and zero reader errors.
func TestApplyWithReaders(t *testing.T) {
	dir := t.TempDir()
	s := newSource(t, dir)
	path := filepath.Join(dir, "follower.db")
	a := s.bootstrapCopy(t, path)
	files := 160
	if testing.Short() {
		files = 60
	}

	var reads, bad atomic.Int64
	var readErrs []error
	var mu sync.Mutex
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for r := 0; r < 3; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := readLoop(path, stop, &reads, &bad); err != nil {
				mu.Lock()
				readErrs = append(readErrs, err)
				mu.Unlock()
			}
		}()
	}

	rng := rand.New(rand.NewSource(1))
	var shrinks, bigGrowths, schema int
	for i := 0; i < files; i++ {
		for j := 0; j < 1+rng.Intn(5); j++ {
			s.transfer(rng)
		}
		switch i % 20 {
		case 5:
			s.exec(`INSERT INTO blobs (b) VALUES (randomblob(?))`, 70000+rng.Intn(200000))
			bigGrowths++
		case 9:
			s.exec(fmt.Sprintf(`CREATE TABLE IF NOT EXISTS x%d (a, b)`, i%3))
			s.exec(fmt.Sprintf(`CREATE INDEX IF NOT EXISTS x%d_a ON x%d (a)`, i%3, i%3))
			s.exec(fmt.Sprintf(`WITH RECURSIVE g(v) AS (SELECT 1 UNION ALL SELECT v+1 FROM g WHERE v < 200) INSERT INTO x%d SELECT v, randomblob(100) FROM g`, i%3))
			schema++
		case 14:
			s.exec(fmt.Sprintf(`DROP TABLE IF EXISTS x%d`, (i+1)%3))
			s.exec(`DELETE FROM blobs`)
			before := len(s.snapshot())
			s.exec(`VACUUM`)
			if len(s.snapshot()) < before {
				shrinks++
			}
			schema++
		}
		applyFile(t, a, s.next())
		if i%4 == 0 {
			if _, err := a.Checkpoint(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
	}
	close(stop)
	wg.Wait()
	t.Logf("%d files applied, %d shrinking VACUUMs, %d growths > 64 KiB, %d schema changes; %d read transactions, %d inconsistent; longest reader start %s",
		files, shrinks, bigGrowths, schema, reads.Load(), bad.Load(), time.Duration(maxStartWait.Load()))
	if len(readErrs) > 0 {
		t.Fatalf("reader errors: %v", readErrs)
	}
	if bad.Load() != 0 {
		t.Fatalf("%d inconsistent reads", bad.Load())
	}
	if reads.Load() == 0 || shrinks == 0 {
		t.Fatalf("test did not exercise readers (%d) or shrinks (%d)", reads.Load(), shrinks)
	}
	assertSame(t, s, path)
}

// maxStartWait is the longest time any reader took to begin a read
// transaction and run its first query, in nanoseconds.
var maxStartWait atomic.Int64

// readLoop runs read transactions on its own read-only connection until
// stop: the total balance must always be testAccounts*testBalance, and the
// schema must always be readable.
func readLoop(path string, stop <-chan struct{}, reads, bad *atomic.Int64) error {
	db, err := sql.Open("sqlite3", ReadOnlyDSN(path))
	if err != nil {
		return err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	for {
		select {
		case <-stop:
			return nil
		default:
		}
		start := time.Now()
		tx, err := db.Begin()
		if err != nil {
			return err
		}
		var total, n, tables int64
		if err := tx.QueryRow(`SELECT sum(balance), count(*) FROM accounts`).Scan(&total, &n); err != nil {
			tx.Rollback()
			return err
		}
		// The longest a reader waited to start reading (informational).
		for d := int64(time.Since(start)); ; {
			old := maxStartWait.Load()
			if d <= old || maxStartWait.CompareAndSwap(old, d) {
				break
			}
		}
		if err := tx.QueryRow(`SELECT count(*) FROM sqlite_master`).Scan(&tables); err != nil {
			tx.Rollback()
			return err
		}
		// Hold the read transaction across applies: a long reader must keep
		// seeing one state.
		time.Sleep(time.Millisecond)
		var total2 int64
		if err := tx.QueryRow(`SELECT sum(balance) FROM accounts`).Scan(&total2); err != nil {
			tx.Rollback()
			return err
		}
		if err := tx.Rollback(); err != nil {
			return err
		}
		reads.Add(1)
		if total != testAccounts*testBalance || total2 != total || n != testAccounts {
			bad.Add(1)
		}
	}
}

// TestApplyStoppedAtCommitStaysTrusted: a stop that comes while an
// apply commits must leave a trusted database at a known position. The
// read-back after the commit ran on the stopping context, failed with
// "context canceled", and marked the database as changed and no longer
// trusted: the follower exited 1 on SIGTERM and moved its database aside at
// the next start.
func TestApplyStoppedAtCommitStaysTrusted(t *testing.T) {
	dir := t.TempDir()
	s := newSource(t, dir)
	path := filepath.Join(dir, "follower.db")
	a := s.bootstrapCopy(t, path)
	var cancel context.CancelFunc
	a.afterCommit = func() { cancel() } // the stop arrives as COMMIT returns
	for i := 0; i < 5; i++ {
		s.exec(`UPDATE accounts SET balance = balance + 1 WHERE id = ?`, 1+i)
		f := s.next()
		var ctx context.Context
		ctx, cancel = context.WithCancel(context.Background())
		md := f.md
		res, err := a.Apply(ctx, f.name(), bytes.NewReader(f.data), &md)
		cancel()
		if err != nil {
			t.Fatalf("apply %d, stopped as it committed: %v", i, err)
		}
		if res.Pos.Checksum != s.sum {
			t.Fatalf("apply %d: at %s, source %s", i, res.Pos.Checksum, s.sum)
		}
	}
	assertSame(t, s, path)
}
