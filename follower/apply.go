package follower

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/superfly/ltx"
	"github.com/understudy-db/understudy/internal/dbsum"
	"github.com/understudy-db/understudy/internal/sqlitex"
	"github.com/understudy-db/understudy/internal/storage"
)

// Default timeouts of the applier's connections.
const (
	// DefaultApplyBusyTimeout bounds how long an apply waits for SQLite's
	// write lock (only another writer, which should not exist, holds it).
	DefaultApplyBusyTimeout = 5 * time.Second
	// DefaultCheckpointBusyTimeout is how long a checkpoint waits for readers
	// (notes rule 10: 100 ms kept reader staleness p99 under 200 ms).
	DefaultCheckpointBusyTimeout = 100 * time.Millisecond
)

// VerifyError is a file or a local database that does not verify: a corrupt
// object, a gap in the history, a checksum that does not match, a write by
// someone else. Retrying cannot help, so the follower stops applying; the
// local database stays at Local and keeps serving reads.
type VerifyError struct {
	Object string   // the store object being applied ("" if none)
	Local  Position // the local database's position
	// Changed is true when the local database was modified before the
	// problem was found (a post-commit check failed): it must be moved aside.
	Changed bool
	Err     error
}

func (e *VerifyError) Error() string {
	state := "left unchanged"
	if e.Changed {
		state = "changed and no longer trusted; restart the follower to move it aside and bootstrap again"
	}
	if e.Object == "" {
		return fmt.Sprintf("%v (local database at %s, %s)", e.Err, e.Local, state)
	}
	return fmt.Sprintf("apply %s: %v (local database at %s, %s)", e.Object, e.Err, e.Local, state)
}

func (e *VerifyError) Unwrap() error { return e.Err }

// ErrUnverifiable is wrapped by the VerifyError of a file that would take
// the local database forward but cannot be proven to: a compaction that
// starts before the next TXID and carries no database checksums (Litestream
// writes none). The follower then rebuilds at the store's newest position
// instead (rebuild.go).
var ErrUnverifiable = errors.New("cannot be verified against the local database")

// MismatchError is returned by OpenApplier when an existing local database
// is not at its recorded position (or has none): it cannot be resumed and
// must be moved aside.
type MismatchError struct {
	Path   string
	Reason string
}

func (e *MismatchError) Error() string {
	return fmt.Sprintf("local database %s cannot be resumed: %s", e.Path, e.Reason)
}

// ApplyResult describes one applied file.
type ApplyResult struct {
	Object      string
	MinTXID     ltx.TXID
	MaxTXID     ltx.TXID
	Prev, Pos   Position
	Pages       int    // pages written (page 1 included)
	PrevCommit  uint32 // database size in pages before
	Commit      uint32 // and after
	FullImage   bool   // the file held every page of the database
	ByMetadata  bool   // database checksums came from the object's metadata
	Bytes       int64  // bytes of the LTX file read
	CommitTime  time.Time
	ApplyTime   time.Duration // from the first byte read to the verified commit
	VerifyTime  time.Duration // of that, the post-commit read-back
	PrePosMatch bool          // the file's pre-apply checksum matched the local position
}

// Applier applies LTX files to one local WAL-mode database through the
// sqlite_dbpage virtual table, following the rules in SQLITE-NOTES.md
// ("Applying pages on a follower"), and proves the result by checksum.
// Apply and Checkpoint are serialised; the applier is the only writer.
type Applier struct {
	path string
	log  hclog.Logger

	// afterCommit, set by tests only, runs right after an apply's COMMIT.
	afterCommit func()

	mu sync.Mutex
	// lock is the one write connection, which holds the write lock for as
	// long as it is open (sqlitex.HoldVFS); never queried for data (rule 7).
	// Taken from slot, and given back to it on Close, when there is one.
	lock     *sqlitex.Conn
	slot     *sqlitex.LockSlot
	apply    *sql.Conn // lock's connection
	insert   *sql.Stmt
	truncate *sql.Stmt
	verifyDB *sql.DB // read-only connection for read-back checks
	verify   *sql.Conn
	ckptDB   *sql.DB // checkpoints, with a short busy timeout (rule 10)

	table       *pageTable
	rd          *bufio.Reader // Apply's read buffer, kept from one file to the next
	page        []byte        // Apply's page buffer
	pos         Position
	dataVersion int64 // PRAGMA data_version on the apply connection after our last commit
	broken      error // set when the local database can no longer be trusted
}

// OpenApplier opens an existing local database that the follower wrote
// before, checks that its content (read through SQLite, WAL included) is at
// the position recorded in its sidecar, and loads the per-page checksums.
// A database that is not at its recorded position gives a *MismatchError.
func OpenApplier(ctx context.Context, path string, logger hclog.Logger) (*Applier, error) {
	return resumeApplier(ctx, path, logger, nil)
}

// resumeApplier is OpenApplier writing through the lock in slot, if any.
func resumeApplier(ctx context.Context, path string, logger hclog.Logger, slot *sqlitex.LockSlot) (*Applier, error) {
	if err := sqlitex.CheckDBPage(ctx); err != nil {
		return nil, err
	}
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("open local database: %w", err)
	}
	rec, err := readPosition(PositionPath(path))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, &MismatchError{Path: path, Reason: "it has no recorded follower position (" + PositionPath(path) + " is missing)"}
	} else if err != nil {
		return nil, &MismatchError{Path: path, Reason: err.Error()}
	}
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	return openApplier(ctx, path, logger, slot, func(t *pageTable) (Position, error) {
		sum := t.checksum()
		switch {
		case rec.Rebuild && t.count() > 0:
			// Set for an in-place rebuild (SetRebuild): at no position of
			// the history; start rebuilds it from the store's newest state.
			if sum != rec.Checksum {
				// Written since it was saved, while no process held its
				// lock (this one stopped before the rebuild): the rebuild
				// would overwrite those writes, so they are saved too.
				if err := saveWrittenSinceSaved(ctx, path, logger, rec.Checksum, sum); err != nil {
					return Position{}, err
				}
			}
			return Position{Checksum: sum}, nil
		case t.pageSize != rec.PageSize:
			return Position{}, &MismatchError{Path: path, Reason: fmt.Sprintf("page size %d, recorded %d", t.pageSize, rec.PageSize)}
		case t.count() == 0:
			return Position{}, &MismatchError{Path: path, Reason: "it is empty"}
		case sum == rec.Checksum:
			return rec.Position, nil
		case rec.Prev != nil && sum == rec.Prev.Checksum:
			// The last apply did not commit (or its commit was lost).
			return *rec.Prev, nil
		}
		return Position{}, &MismatchError{Path: path, Reason: fmt.Sprintf(
			"its checksum is %s but the recorded position is %s: it was changed outside the follower", sum, rec.Position)}
	})
}

// InitApplier starts following a freshly bootstrapped database at path (a
// restore of the replica at txid): it sets WAL mode, computes the database
// checksum, records the position and returns the applier. want, if nonzero,
// is the checksum the replica says the database has at txid. The pages are
// read once, by the applier's own page table.
func InitApplier(ctx context.Context, path string, txid ltx.TXID, want ltx.Checksum, logger hclog.Logger) (*Applier, error) {
	return initApplier(ctx, path, txid, want, logger, nil)
}

// initApplier is InitApplier writing through the lock in slot, if any.
func initApplier(ctx context.Context, path string, txid ltx.TXID, want ltx.Checksum, logger hclog.Logger, slot *sqlitex.LockSlot) (*Applier, error) {
	if err := sqlitex.CheckDBPage(ctx); err != nil {
		return nil, err
	}
	db, err := sqlitex.OpenDB(ctx, sqlitex.DSN(path, url.Values{"_busy_timeout": {"5000"}}))
	if err != nil {
		return nil, fmt.Errorf("open bootstrapped database %s: %w", path, err)
	}
	var mode string
	err = db.QueryRowContext(ctx, `PRAGMA journal_mode=WAL`).Scan(&mode)
	db.Close()
	if err != nil || mode != "wal" {
		return nil, fmt.Errorf("set WAL mode on %s: mode %q: %v", path, mode, err)
	}
	return openApplier(ctx, path, logger, slot, func(t *pageTable) (Position, error) {
		pos := Position{TXID: txid, Checksum: t.checksum()}
		if want != 0 && pos.Checksum != want {
			return Position{}, fmt.Errorf("bootstrapped database %s has checksum %s at TXID %s, the replica says %s", path, pos.Checksum, txid, want)
		}
		if t.count() == 0 {
			return Position{}, fmt.Errorf("bootstrapped database %s is empty", path)
		}
		if err := writePosition(PositionPath(path), positionRecord{
			Position: pos, PageSize: t.pageSize, UpdatedAt: time.Now().UTC(),
		}); err != nil {
			return Position{}, err
		}
		return pos, nil
	})
}

// openApplier opens the connections of an applier on the database at path,
// loads its page table and takes its position from at, which judges the
// table (a *MismatchError when the database cannot be resumed).
func openApplier(ctx context.Context, path string, logger hclog.Logger, slot *sqlitex.LockSlot, at func(*pageTable) (Position, error)) (*Applier, error) {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	a := &Applier{path: path, log: logger, slot: slot}
	if err := a.open(ctx, at); err != nil {
		a.Close()
		return nil, err
	}
	return a, nil
}

func (a *Applier) open(ctx context.Context, at func(*pageTable) (Position, error)) error {
	var err error
	// A node changing role hands the connection that holds the write lock
	// over (slot): taking it again would leave it free for a moment.
	if a.lock = a.slot.Take(a.path); a.lock == nil {
		if a.lock, err = sqlitex.Open(ctx, a.path, sqlitex.Options{
			BusyTimeout: DefaultApplyBusyTimeout, KeepWAL: true, VFS: sqlitex.HoldVFS,
		}); err != nil {
			return fmt.Errorf("open %s for applying: %w", a.path, err)
		}
	}
	a.apply = a.lock.SQL()
	var mode string
	if err := a.apply.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode); err != nil {
		return fmt.Errorf("read journal mode of %s: %w", a.path, err)
	}
	if mode != "wal" {
		return &MismatchError{Path: a.path, Reason: fmt.Sprintf("it is in journal mode %q, not WAL: someone else changed it", mode)}
	}
	// synchronous=FULL: a commit is durable before the next sidecar write
	// can name it as the "previous" position. The follower checkpoints on
	// its own schedule (Checkpoint); an automatic checkpoint would run
	// inside an apply and delay it.
	for _, q := range []string{
		fmt.Sprintf("PRAGMA busy_timeout=%d", DefaultApplyBusyTimeout.Milliseconds()),
		"PRAGMA synchronous=FULL", "PRAGMA wal_autocheckpoint=0",
	} {
		if _, err := a.apply.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("%s on %s: %w", q, a.path, err)
		}
	}
	// Take the write lock before the pages are read, for good: from here on
	// no other connection can write (sqlitex/writelock.go), and what the
	// page table reads stays put. A lock handed over is held already.
	if err := a.lock.TakeWriteLock(ctx); err != nil {
		return err
	}
	// Read data_version before the pages: a write by someone else after this
	// point changes it and is caught by the next apply.
	if a.dataVersion, err = a.readDataVersion(ctx); err != nil {
		return err
	}

	if a.verifyDB, err = sqlitex.OpenDB(ctx, ReadOnlyDSN(a.path)); err != nil {
		return fmt.Errorf("open %s read-only: %w", a.path, err)
	}
	if a.verify, err = a.verifyDB.Conn(ctx); err != nil {
		return err
	}
	if a.table, err = loadPageTable(ctx, a.verify); err != nil {
		return fmt.Errorf("read local database %s: %w", a.path, err)
	}
	if a.pos, err = at(a.table); err != nil {
		return err
	}

	if a.ckptDB, err = sqlitex.OpenDB(ctx, sqlitex.DSN(a.path, url.Values{
		"_busy_timeout": {fmt.Sprint(DefaultCheckpointBusyTimeout.Milliseconds())},
	})); err != nil {
		return fmt.Errorf("open %s for checkpoints: %w", a.path, err)
	}
	if a.insert, err = a.apply.PrepareContext(ctx, `INSERT INTO sqlite_dbpage(pgno,data) VALUES(?,?)`); err != nil {
		return fmt.Errorf("prepare page writes on %s: %w", a.path, err)
	}
	// Truncation is its own single-row statement, always the last one of a
	// transaction (rule 3: otherwise SQLite silently skips it).
	if a.truncate, err = a.apply.PrepareContext(ctx, `INSERT INTO sqlite_dbpage(pgno,data) VALUES(?,NULL)`); err != nil {
		return fmt.Errorf("prepare truncation on %s: %w", a.path, err)
	}
	return nil
}

// Close closes every connection.
func (a *Applier) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, s := range []*sql.Stmt{a.insert, a.truncate} {
		if s != nil {
			s.Close()
		}
	}
	if a.verify != nil {
		a.verify.Close()
	}
	var first error
	if a.lock != nil {
		if a.slot != nil {
			a.slot.Put(a.lock) // still held: the node's next role writes through it
		} else {
			first = a.lock.Close()
		}
	}
	for _, db := range []*sql.DB{a.verifyDB, a.ckptDB} {
		if db != nil {
			if err := db.Close(); err != nil && first == nil {
				first = err
			}
		}
	}
	a.insert, a.truncate, a.apply, a.verify, a.lock, a.verifyDB, a.ckptDB = nil, nil, nil, nil, nil, nil, nil
	return first
}

// Position is the local database's position.
func (a *Applier) Position() Position {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.pos
}

// PageCount is the local database's size in pages.
func (a *Applier) PageCount() uint32 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.table.count()
}

// Path is the local database's path.
func (a *Applier) Path() string { return a.path }

func (a *Applier) readDataVersion(ctx context.Context) (int64, error) {
	var v int64
	if err := a.apply.QueryRowContext(ctx, `PRAGMA data_version`).Scan(&v); err != nil {
		return 0, fmt.Errorf("read data_version of %s: %w", a.path, err)
	}
	return v, nil
}

// resetCache makes the apply connection drop the pages it cached: pages
// written through sqlite_dbpage bypass the b-tree layer, so its own view of
// the schema and pages goes stale (rule 7).
func (a *Applier) resetCache(ctx context.Context) error {
	for _, q := range []string{`PRAGMA shrink_memory`, `SELECT count(*) FROM sqlite_master`, `PRAGMA shrink_memory`} {
		rows, err := a.apply.QueryContext(ctx, q)
		if err != nil {
			return fmt.Errorf("reset page cache (%s): %w", q, err)
		}
		for rows.Next() {
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return fmt.Errorf("reset page cache (%s): %w", q, err)
		}
	}
	return nil
}

// readTracker remembers whether reading the object itself failed, which is
// worth retrying, as opposed to content that does not verify, which is not.
type readTracker struct {
	r   io.Reader
	err error
	n   int64
}

func (t *readTracker) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	t.n += int64(n)
	if err != nil && err != io.EOF && t.err == nil {
		t.err = err
	}
	return n, err
}

type pageSum struct {
	pgno uint32
	sum  ltx.Checksum
}

// Apply applies one LTX file, read from r, in one write transaction. object
// names it in errors and logs; md is its metadata (nil if it has none). The
// file must continue the local position: start at TXID+1, or, with metadata
// or as a full image, start at or before it and end after it (a compaction
// whose range overlaps what is already applied; its pages are the newest as
// of its last TXID, so applying them again is harmless and the post-apply
// checksum proves the result). A *VerifyError means the follower must stop;
// any other error is worth retrying.
func (a *Applier) Apply(ctx context.Context, object string, r io.Reader, md *storage.Metadata) (ApplyResult, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	res := ApplyResult{Object: object, Prev: a.pos, Pos: a.pos, PrevCommit: a.table.count(), ByMetadata: md != nil}
	if a.broken != nil {
		return res, a.broken
	}
	if a.apply == nil {
		return res, errors.New("applier is closed")
	}
	start := time.Now()
	verr := func(format string, args ...any) error {
		return &VerifyError{Object: object, Local: a.pos, Err: fmt.Errorf(format, args...)}
	}
	src := &readTracker{r: r}
	// fileErr classifies a decoding failure: a failed read of the object is
	// retried; bytes that do not decode or verify are a corrupt object.
	fileErr := func(what string, err error) error {
		if src.err != nil {
			return fmt.Errorf("read %s: %w", object, src.err)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return verr("corrupt object: %s: %w", what, err)
	}

	if a.rd == nil {
		a.rd = bufio.NewReaderSize(src, 128<<10)
	} else {
		a.rd.Reset(src)
	}
	defer a.rd.Reset(nil) // hold no reference to the object
	dec := ltx.NewDecoder(a.rd)
	dec.SetRetainPageIndex(false)
	if err := dec.DecodeHeader(); err != nil {
		return res, fileErr("decode header", err)
	}
	hdr := dec.Header()
	res.MinTXID, res.MaxTXID, res.Commit = hdr.MinTXID, hdr.MaxTXID, hdr.Commit
	res.CommitTime = time.UnixMilli(hdr.Timestamp).UTC()
	if md != nil && !md.CommitTime.IsZero() {
		res.CommitTime = md.CommitTime
	}
	prev := a.pos
	oldCount := a.table.count()
	switch {
	case hdr.PageSize != a.table.pageSize:
		return res, verr("page size %d, the local database has %d: bootstrap again", hdr.PageSize, a.table.pageSize)
	case hdr.MaxTXID <= prev.TXID:
		return res, verr("file ends at TXID %s, already applied", hdr.MaxTXID)
	case hdr.MinTXID > prev.TXID+1:
		return res, verr("gap in the history: file starts at TXID %s, the next TXID to apply is %s", hdr.MinTXID, prev.TXID+1)
	case hdr.Commit == 0:
		return res, verr("file deletes the database (commit 0)")
	}
	contiguous := hdr.MinTXID == prev.TXID+1

	if err := a.resetCache(ctx); err != nil {
		return res, err
	}
	if _, err := a.apply.ExecContext(ctx, `BEGIN IMMEDIATE`); err != nil {
		return res, fmt.Errorf("begin write transaction on %s: %w", a.path, err)
	}
	committed := false
	defer func() {
		if !committed {
			if _, err := a.apply.ExecContext(context.Background(), `ROLLBACK`); err != nil && !strings.Contains(err.Error(), "no transaction") {
				a.log.Warn("rollback failed", "db", a.path, "error", err)
			}
		}
	}()
	// Anyone else's commit since ours changes data_version on this
	// connection (our own commits do not): the database is no longer a copy
	// of the primary's, whatever the files say.
	if v, err := a.readDataVersion(ctx); err != nil {
		return res, err
	} else if v != a.dataVersion {
		return res, verr("the local database was written by another connection since the last apply (data_version %d -> %d); followers' databases must be opened read-only", a.dataVersion, v)
	}

	lock := ltx.LockPgno(hdr.PageSize)
	size := oldCount // pages the database has at this point of the transaction
	var (
		page1    []byte
		deltas   []pageSum
		prevPgno uint32
		inRange  uint32 // pages 1..Commit present in the file
		ph       ltx.PageHeader
	)
	if uint32(len(a.page)) != hdr.PageSize {
		a.page = make([]byte, hdr.PageSize)
	}
	data := a.page
	for {
		err := dec.DecodePage(&ph, data)
		if err == io.EOF {
			break
		} else if err != nil {
			return res, fileErr(fmt.Sprintf("decode page after page %d", prevPgno), err)
		}
		pgno := ph.Pgno
		if pgno <= prevPgno {
			return res, verr("corrupt object: page %d after page %d (pages must ascend)", pgno, prevPgno)
		}
		prevPgno = pgno
		if pgno > hdr.Commit || pgno == lock {
			continue // beyond the new size (rule 4), or the lock page, never written
		}
		inRange++
		deltas = append(deltas, pageSum{pgno, dbsum.Page(pgno, data)})
		if pgno == 1 {
			// Page 1 (schema cookie, page count) goes last, once every page
			// it points at is in place (rule 2).
			page1 = append([]byte(nil), data...)
			continue
		}
		next := size + 1
		if next == lock {
			next++
		}
		if pgno > next {
			// Rule 5: a gap past the end of the file breaks every later
			// checkpoint; a file that grows the database holds every new page.
			return res, verr("page %d would leave a gap past the end of the database (%d pages): a file that grows the database must contain every new page", pgno, size)
		}
		if _, err := a.insert.ExecContext(ctx, pgno, data); err != nil {
			return res, fmt.Errorf("write page %d to %s: %w", pgno, a.path, err)
		}
		if pgno > size {
			size = pgno
		}
	}
	if err := dec.Close(); err != nil {
		return res, fileErr("verify file", err)
	}
	res.Bytes = src.n

	last := hdr.Commit
	if last == lock {
		last-- // the lock page is never written
	}
	if hdr.Commit > oldCount && size < last {
		return res, verr("file grows the database from %d to %d pages but holds pages only up to %d", oldCount, hdr.Commit, size)
	}
	if hdr.Commit != oldCount && page1 == nil {
		return res, verr("file changes the database size from %d to %d pages without page 1, whose header records the size", oldCount, hdr.Commit)
	}
	res.FullImage = inRange == dbsum.ImagePages(hdr.PageSize, hdr.Commit)
	res.PrePosMatch = md != nil && md.PreApplyChecksum == prev.Checksum
	switch {
	case res.FullImage:
		if contiguous && !res.PrePosMatch && hdr.MinTXID != 1 {
			a.log.Info("applying a full image whose pre-apply checksum does not match the local position (history break on the primary)",
				"object", object, "local", prev.String())
		}
	case md == nil && !contiguous:
		return res, verr("file starts at TXID %s, before the next TXID %s, and carries no database checksums, so it %w", hdr.MinTXID, prev.TXID+1, ErrUnverifiable)
	case md != nil && contiguous && !res.PrePosMatch:
		return res, verr("pre-apply checksum %s does not match the local database (%s): it was not at the state this file applies to", md.PreApplyChecksum, prev.Checksum)
	}

	// The checksum the database will have: swap out the old checksums of the
	// pages written and of the pages truncated away.
	s := a.table.total
	for _, d := range deltas {
		s = s.Add(a.table.sum(d.pgno)).Add(d.sum)
	}
	for p := hdr.Commit + 1; p <= oldCount; p++ {
		s = s.Add(a.table.sum(p))
	}
	next := Position{TXID: hdr.MaxTXID, Checksum: s.Checksum()}
	if md != nil && md.PostApplyChecksum != next.Checksum {
		return res, verr("post-apply checksum mismatch: the object's metadata says %s, applying it to the local database gives %s", md.PostApplyChecksum, next.Checksum)
	}

	if page1 != nil {
		if _, err := a.insert.ExecContext(ctx, 1, page1); err != nil {
			return res, fmt.Errorf("write page 1 to %s: %w", a.path, err)
		}
	}
	if hdr.Commit < oldCount {
		if _, err := a.truncate.ExecContext(ctx, hdr.Commit+1); err != nil {
			return res, fmt.Errorf("truncate %s to %d pages: %w", a.path, hdr.Commit, err)
		}
	}
	res.Pages = len(deltas)

	// Record both the position this commit leads to and the one before it:
	// whichever the database matches after a crash is where it resumes.
	if err := writePosition(PositionPath(a.path), positionRecord{
		Position: next, Prev: &prev, PageSize: a.table.pageSize, UpdatedAt: time.Now().UTC(),
	}); err != nil {
		return res, err
	}
	// Not interruptible: after COMMIT returns, either it happened or not.
	if _, err := a.apply.ExecContext(context.Background(), `COMMIT`); err != nil {
		return res, fmt.Errorf("commit to %s: %w", a.path, err)
	}
	committed = true
	if a.afterCommit != nil {
		a.afterCommit()
	}
	for _, d := range deltas {
		a.table.set(d.pgno, d.sum)
	}
	a.table.truncate(hdr.Commit)
	a.pos = next
	res.Pos = next

	vstart := time.Now()
	// The commit happened: its read-back must finish even when the follower
	// is being stopped. A read-back cut short by the stop would fail, and a
	// failed read-back means a database no longer trusted (moved aside at
	// the next start), so SIGTERM during an apply made the follower exit 1
	// and bootstrap again.
	if err := a.verifyCommitted(context.WithoutCancel(ctx), deltas, hdr.Commit); err != nil {
		a.broken = &VerifyError{Object: object, Local: next, Changed: true, Err: err}
		return res, a.broken
	}
	now := time.Now()
	res.VerifyTime = now.Sub(vstart)
	res.ApplyTime = now.Sub(start)
	return res, nil
}

// verifyCommitted reads back what the database holds after a commit, through
// a separate read-only connection, and compares it with the checksums the
// applied file promised: the page count, and every page written (or, when
// most of the database was written, every page and the total).
func (a *Applier) verifyCommitted(ctx context.Context, deltas []pageSum, commit uint32) error {
	tx, err := a.verify.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("post-apply check: %w", err)
	}
	defer tx.Rollback()
	var count uint32
	if err := tx.QueryRowContext(ctx, `PRAGMA page_count`).Scan(&count); err != nil {
		return fmt.Errorf("post-apply check: read page count: %w", err)
	}
	if count != commit {
		return fmt.Errorf("post-apply check: the database has %d pages, the file says %d", count, commit)
	}
	if len(deltas)*8 >= int(commit) {
		// Cheaper as one scan, and it proves the whole checksum.
		var s dbsum.Sum
		if err := scanPages(ctx, tx, a.table.pageSize, count, func(pgno uint32, c ltx.Checksum) error {
			if c != a.table.sum(pgno) {
				return fmt.Errorf("page %d holds checksum %s, expected %s", pgno, c, a.table.sum(pgno))
			}
			s = s.Add(c)
			return nil
		}); err != nil {
			return fmt.Errorf("post-apply check: %w", err)
		}
		if s != a.table.total {
			return fmt.Errorf("post-apply check: database checksum is %s, expected %s", s.Checksum(), a.table.checksum())
		}
		return nil
	}
	read, err := tx.PrepareContext(ctx, `SELECT data FROM sqlite_dbpage WHERE pgno=?`)
	if err != nil {
		return fmt.Errorf("post-apply check: %w", err)
	}
	defer read.Close()
	for _, d := range deltas {
		var data []byte
		if err := read.QueryRowContext(ctx, d.pgno).Scan(&data); err != nil {
			return fmt.Errorf("post-apply check: read page %d: %w", d.pgno, err)
		}
		if c := dbsum.Page(d.pgno, data); c != d.sum {
			return fmt.Errorf("post-apply check: page %d holds checksum %s, the file wrote %s", d.pgno, c, d.sum)
		}
	}
	return nil
}

// CheckpointResult is what one checkpoint did, in WAL frames.
type CheckpointResult struct {
	Busy         bool // readers or a writer were in the way; it will be retried
	Log          int  // frames in the WAL
	Checkpointed int  // frames copied into the database
}

// Checkpoint copies the WAL back into the database file on its own
// connection, between applies. With readers always present SQLite's
// automatic checkpoints never complete and the WAL grows without bound
// (rule 10). The apply connection holds the write lock for good, so the
// checkpoint is PASSIVE (RESTART would wait for the lock and fall back to
// PASSIVE anyway); each apply begins a new transaction, and one that
// begins with every frame copied back starts the WAL over.
func (a *Applier) Checkpoint(ctx context.Context) (CheckpointResult, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var res CheckpointResult
	if a.ckptDB == nil {
		return res, errors.New("applier is closed")
	}
	var busy int
	if err := a.ckptDB.QueryRowContext(ctx, `PRAGMA wal_checkpoint(PASSIVE)`).Scan(&busy, &res.Log, &res.Checkpointed); err != nil {
		return res, fmt.Errorf("checkpoint %s: %w", a.path, err)
	}
	res.Busy = busy != 0
	if !res.Busy && res.Log == res.Checkpointed {
		// Every frame is in the main file now, which SQLite sizes to the
		// database: a stale tail means a truncation was skipped (rule 3).
		st, err := os.Stat(a.path)
		if err != nil {
			return res, fmt.Errorf("checkpoint %s: %w", a.path, err)
		}
		if want := int64(a.table.count()) * int64(a.table.pageSize); st.Size() != want {
			a.broken = &VerifyError{Local: a.pos, Changed: true, Err: fmt.Errorf(
				"after a full checkpoint %s has %d bytes, but the database is %d pages of %d bytes: stale pages past the end",
				a.path, st.Size(), a.table.count(), a.table.pageSize)}
			return res, a.broken
		}
	}
	return res, nil
}
