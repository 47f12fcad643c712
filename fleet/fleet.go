// Package fleet replicates a directory of databases (a dbs: entry with
// dir:) in one process, at a cost per idle database of a few hundred bytes.
//
// A running primary.DB holds five SQLite connections (a dozen file
// descriptors), three or more goroutines and timers that wake it several
// times a second. Ten thousand of those would need 120,000 descriptors and
// keep a core busy doing nothing. So a database here runs only while it is
// written: once it has been quiet for IdleAfter with everything uploaded,
// it is synced and closed ("parked"), and it holds nothing but its entry in
// a map. One inotify watch per directory sees the
// application's next write to the database or its -wal and opens it again:
// the reopen is primary.Open's resume, which finds the WAL continuing the
// shipped position (the connections keep the WAL on close) and ships what
// was written meanwhile as the next TXID, with no snapshot. The watch is
// there with watch: false too; watch: only decides whether files that
// appear are taken as new databases at once (else on SIGHUP).
//
// A parked database makes no store requests, runs no timer and holds no
// descriptor. The background work of a running one, compaction, retention
// and the snapshot interval, is done for it by a low-rate scheduler
// (maintenance.go): it is opened briefly when that work is due, one at a
// time, and parked again.
package fleet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/hashicorp/go-hclog"

	"github.com/understudy-db/understudy/config"
	"github.com/understudy-db/understudy/internal/dirstatus"
	"github.com/understudy-db/understudy/primary"
)

// Defaults for Options left zero.
const (
	// DefaultIdleAfter is how long a database must be quiet, with every
	// replica caught up, before it is parked.
	DefaultIdleAfter = 10 * time.Second
	// DefaultConcurrency is how many databases are opened or parked at
	// once: opening reads the database and lists its stores.
	DefaultConcurrency = 4
	// DefaultWorst is how many databases Status lists by lag.
	DefaultWorst = dirstatus.DefaultWorst
	// DefaultParkTimeout bounds the final sync of a database being parked.
	DefaultParkTimeout = time.Minute
	// DefaultPollInterval is the data_version poll of an open database of
	// a directory (primary.Options.PollInterval): the directory's watch
	// wakes it at each write of its WAL, so the poll only catches the
	// commits that were not visible yet when the watch fired.
	DefaultPollInterval = 100 * time.Millisecond
)

// recheckAfter: a file matching the pattern without the SQLite header yet
// (created, first commit still to come) is looked at again on its next
// write, but at most this often.
const recheckAfter = 200 * time.Millisecond

// maxRetryBackoff bounds the wait before a database that failed to open
// (locked by the application, say) is tried again.
const (
	minRetryBackoff = 100 * time.Millisecond
	maxRetryBackoff = time.Minute
)

// Opener returns the opened primary of the database whose configuration
// is dbc (config.DB.Database of the entry); rel is its path relative to
// the directory.
// wake is the database's primary.Options.Wake: the fleet's watch sends on
// it when the database's -wal is written.
type Opener func(ctx context.Context, dbc *config.DB, rel string, wake <-chan struct{}) (*primary.DB, error)

// Options configure a Fleet.
type Options struct {
	Entry       *config.DB // the dir: entry
	Open        Opener
	Logger      hclog.Logger // nil = none
	IdleAfter   time.Duration
	Concurrency int
	// MaxOpen caps how many databases are open (not parked) at once; 0 =
	// no cap. At the cap, a database that must open waits in the queue
	// while the least recently written caught-up one is parked to make
	// room: its commits wait in its WAL meanwhile, and the open ships them.
	MaxOpen int
	// Heads are the replicas whose heads index the fleet keeps (heads.go);
	// none: no index.
	Heads         []HeadsReplica
	HeadsObserver HeadsObserver // nil = none
}

type state int

const (
	parked state = iota
	opening
	active
	parking
	failed
)

func (s state) String() string {
	return [...]string{"parked", "opening", "active", "parking", "failed"}[s]
}

// member is one database of the directory. Its fields are guarded by the
// fleet's mu.
type member struct {
	path, rel string
	state     state
	want      state // active, parked, or failed for "remove it"
	gone      bool  // the file was removed: stop and forget it
	stopping  bool  // parked for the shutdown
	queued    bool
	visit     bool // found by a scan: park as soon as it has shipped
	wake      chan struct{}
	db        *primary.DB
	stop      context.CancelFunc // ends db.Run
	runDone   chan struct{}
	lastTXID  uint64
	lastSeen  time.Time         // last write event, TXID change or pending upload
	last      primary.StatusDoc // the status when it was parked
	err       error             // why it failed
	retryAt   time.Time         // when a database that failed to open is tried again
	backoff   time.Duration
	failedAt  time.Time // the first failed open since the last good one
	// maintainAt: when the parked database must be opened for its
	// compaction, retention or snapshot (zero: never, until written);
	// maintain: it is being opened for that (maintenance.go).
	maintainAt time.Time
	maintain   bool
}

// Fleet runs the databases of one directory entry.
type Fleet struct {
	opts Options
	log  hclog.Logger

	mu       sync.Mutex
	members  map[string]*member // by absolute path
	rejected map[string]*check  // files matching the pattern that are not databases (yet)
	// recheckPending: a timer will look at the rejected files written
	// since (recheck).
	recheckPending bool
	queue          []*member // opens
	parkQ          []*member // parks and removals, before any open
	// maintaining is the member opened for its maintenance, nil for
	// none: one at a time. nextDue is the earliest maintainAt of the
	// parked members (zero: none due ever), so that a tick with nothing
	// due looks at no member.
	maintaining *member
	nextDue     time.Time
	// opened: the members holding a database or being opened (MaxOpen).
	opened   map[*member]struct{}
	kick     chan struct{}
	rescanCh chan struct{}
	errs     chan error

	watcher *fsnotify.Watcher
	// parksSinceTrim counts the parks since the C heap was last trimmed
	// (trimHeap), which tick does when the queue is empty.
	parksSinceTrim int
	ctx            context.Context // Run's, for the workers
	runWG          sync.WaitGroup  // members' Run goroutines

	heads headsState
}

type check struct {
	at    time.Time
	dirty bool // an event came within recheckAfter of the last look
}

// New validates opts and returns a Fleet that has not scanned yet.
func New(opts Options) (*Fleet, error) {
	if opts.Entry == nil || !opts.Entry.IsDir() {
		return nil, errors.New("fleet: the entry is not a dir: entry")
	}
	if opts.Open == nil {
		return nil, fmt.Errorf("fleet: directory %s: no opener", opts.Entry.Dir)
	}
	if opts.IdleAfter <= 0 {
		opts.IdleAfter = DefaultIdleAfter
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = DefaultConcurrency
	}
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	return &Fleet{
		opts:     opts,
		log:      opts.Logger.With("dir", opts.Entry.Dir),
		members:  map[string]*member{},
		rejected: map[string]*check{},
		opened:   map[*member]struct{}{},
		kick:     make(chan struct{}, 1),
		rescanCh: make(chan struct{}, 1),
		errs:     make(chan error, 1),
	}, nil
}

// Dir is the directory.
func (f *Fleet) Dir() string { return f.opts.Entry.Dir }

// Rescan asks Run to look at the directory again (SIGHUP): new databases
// start, removed ones stop.
func (f *Fleet) Rescan() {
	select {
	case f.rescanCh <- struct{}{}:
	default:
	}
}

// Run scans the directory, replicates every database in it and, with
// watch:, follows the directory until ctx ends; then it stops every
// database after a final sync (Close) and returns nil. It returns an
// error only when the directory cannot be read at all.
func (f *Fleet) Run(ctx context.Context) error {
	f.ctx = ctx
	// The watch wakes parked databases, watch: or not; watch: adds the
	// new files it sees.
	if w, err := fsnotify.NewWatcher(); err != nil {
		f.log.Warn("inotify unavailable: databases are never parked, and new ones are picked up on SIGHUP only", "error", err)
	} else {
		f.watcher = w
		defer w.Close()
	}
	t0 := time.Now()
	n, err := f.scan()
	if err != nil {
		return err
	}
	f.log.Info("scanned directory", "databases", n, "pattern", f.opts.Entry.Pattern, "recursive", f.opts.Entry.Recursive,
		"watch", f.opts.Entry.Watch, "took", time.Since(t0).Round(time.Millisecond))
	f.startHeads(ctx)
	var workers sync.WaitGroup
	for range f.opts.Concurrency {
		workers.Add(1)
		go func() { defer workers.Done(); f.worker(ctx) }()
	}
	var events <-chan fsnotify.Event
	var werrs <-chan error
	if f.watcher != nil {
		events, werrs = f.watcher.Events, f.watcher.Errors
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			f.event(ev)
		case err, ok := <-werrs:
			if !ok {
				werrs = nil
				continue
			}
			// An overflowed queue lost events: look at everything again.
			f.log.Warn("directory watch", "error", err)
			if _, err := f.scan(); err != nil {
				f.log.Error("rescan", "error", err)
			}
		case <-f.rescanCh:
			n, err := f.scan()
			if err != nil {
				f.log.Error("rescan", "error", err)
			} else {
				f.log.Info("rescanned directory", "databases", n)
			}
		case <-tick.C:
			f.tick(time.Now())
		}
	}
	workers.Wait()
	f.stopAll()
	f.stopHeads()
	return nil
}

// ownName tells the files and directories of SQLite and of Understudy that
// are never databases of their own, whatever the pattern: the WAL, the
// shared memory and rollback journal, the shadow directory, files kept
// aside, and temporary files of restore and follow.
func ownName(name string) bool {
	for _, s := range []string{"-wal", "-shm", "-journal", "-understudy"} {
		if strings.HasSuffix(name, s) {
			return true
		}
	}
	for _, s := range []string{".diverged-", ".demoted-", ".mismatch-", ".orphan-", ".tmp"} {
		if strings.Contains(name, s) {
			return true
		}
	}
	return false
}

// sqliteHeader starts every SQLite database file.
const sqliteHeader = "SQLite format 3\x00"

// isDatabase tells whether the file at path starts with the SQLite header.
// Only for files this process has no SQLite connection to: closing a
// descriptor drops the process's POSIX locks on the file.
func isDatabase(path string) bool {
	fh, err := os.Open(path)
	if err != nil {
		return false
	}
	defer fh.Close()
	var b [len(sqliteHeader)]byte
	_, err = io.ReadFull(fh, b[:])
	return err == nil && string(b[:]) == sqliteHeader
}

// matches tells whether the base name matches the entry's pattern and is
// not one of the own names.
func (f *Fleet) matches(name string) bool { return matchesEntry(f.opts.Entry, name) }

func matchesEntry(entry *config.DB, name string) bool {
	if ownName(name) {
		return false
	}
	ok, _ := filepath.Match(entry.Pattern, name)
	return ok
}

// scan walks the directory: it adds the databases not known yet, removes
// known ones that are gone, and watches every directory it walks. It
// returns how many databases the directory has.
func (f *Fleet) scan() (int, error) {
	seen := map[string]bool{}
	onDir := func(p string) {
		if f.watcher != nil {
			if err := f.watcher.Add(p); err != nil {
				f.log.Warn("cannot watch directory; its new databases are picked up on SIGHUP", "path", p, "error", err)
			}
		}
	}
	onFile := func(p string) {
		f.mu.Lock()
		_, known := f.members[p]
		f.mu.Unlock()
		if known || isDatabase(p) {
			seen[p] = true
			f.add(p, true)
		}
	}
	if err := walk(f.opts.Entry, f.log, onDir, onFile); err != nil {
		return 0, err
	}
	f.mu.Lock()
	for p, m := range f.members {
		if !seen[p] && !m.gone {
			f.removeLocked(m, "no longer in the directory")
		}
	}
	f.mu.Unlock()
	return len(seen), nil
}

// walk visits the directory of entry as a scan does: onDir for the
// directory and each subdirectory it descends into (recursive:, skipping
// hidden and Understudy's own), onFile for each regular file whose name
// matches the pattern (not yet checked for the SQLite header).
func walk(entry *config.DB, log hclog.Logger, onDir, onFile func(p string)) error {
	root := entry.Dir
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == root {
				return err
			}
			log.Warn("skipping unreadable path", "path", p, "error", err)
			return nil
		}
		if d.IsDir() {
			if p != root && (!entry.Recursive || ownName(d.Name()) || strings.HasPrefix(d.Name(), ".")) {
				return filepath.SkipDir
			}
			onDir(p)
			return nil
		}
		if d.Type().IsRegular() && matchesEntry(entry, d.Name()) {
			onFile(p)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("directory %s: %w", root, err)
	}
	return nil
}

// Databases returns the paths relative to the directory (slash-separated,
// sorted) of the databases a fleet of entry would replicate now: the files
// a scan finds that start with the SQLite header. A dir: entry under a
// lease runs one node per database and finds them with it.
func Databases(entry *config.DB, log hclog.Logger) ([]string, error) {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	var out []string
	err := walk(entry, log, func(string) {}, func(p string) {
		if !isDatabase(p) {
			return
		}
		if rel, err := filepath.Rel(entry.Dir, p); err == nil {
			out = append(out, filepath.ToSlash(rel))
		}
	})
	slices.Sort(out)
	return out, err
}

// add starts replicating the database at p, if it is not known yet.
func (f *Fleet) add(p string, visit bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.members[p]; ok {
		return
	}
	rel, err := filepath.Rel(f.Dir(), p)
	if err != nil {
		return
	}
	delete(f.rejected, p)
	m := &member{path: p, rel: filepath.ToSlash(rel), want: active, lastSeen: time.Now(), visit: visit, wake: make(chan struct{}, 1)}
	f.members[p] = m
	f.markHeadsLocked()
	if was, ok := parkedNote(p); visit && ok {
		// Not written since it was parked (park.go): nothing to ship.
		m.state, m.want, m.visit, m.lastTXID = parked, parked, false, uint64(was.Status.TXID)
		m.last = was.Status
		f.setMaintainAtLocked(m, was.MaintainAt)
		return
	}
	f.enqueueLocked(m)
}

// removeLocked stops replicating m for good (the file is gone).
func (f *Fleet) removeLocked(m *member, why string) {
	m.gone = true
	f.markHeadsLocked()
	f.log.Info("database left the directory: stopping its replication; its history stays in the store",
		"db", m.rel, "why", why, "txid", m.lastTXIDString())
	f.enqueueLocked(m)
}

func (m *member) lastTXIDString() string { return fmt.Sprintf("%016x", m.lastTXID) }

func (f *Fleet) enqueueLocked(m *member) {
	if m.queued {
		return
	}
	m.queued = true
	if m.gone || m.want == parked {
		f.parkQ = append(f.parkQ, m)
	} else {
		f.queue = append(f.queue, m)
	}
	select {
	case f.kick <- struct{}{}:
	default:
	}
}

// event handles one inotify event of a watched directory.
func (f *Fleet) event(ev fsnotify.Event) {
	name := filepath.Base(ev.Name)
	if ev.Has(fsnotify.Create) && f.opts.Entry.Watch && f.opts.Entry.Recursive && !ownName(name) && !strings.HasPrefix(name, ".") {
		if st, err := os.Lstat(ev.Name); err == nil && st.IsDir() {
			// A new subdirectory: watch it and take what it holds.
			if _, err := f.scan(); err != nil {
				f.log.Error("rescan", "error", err)
			}
			return
		}
	}
	p, isWAL := strings.CutSuffix(ev.Name, "-wal")
	if !isWAL && (ownName(name) || !f.matches(name)) {
		return
	}
	now := time.Now()
	f.mu.Lock()
	m := f.members[p]
	if m != nil && !m.gone {
		switch {
		case !isWAL && (ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename)):
			if _, err := os.Lstat(p); errors.Is(err, fs.ErrNotExist) {
				f.removeLocked(m, "removed or renamed")
			}
		case m.state == active && isWAL:
			select { // a commit, or one on its way: look now
			case m.wake <- struct{}{}:
			default:
			}
		case m.want == active || m.state == failed:
		case isWAL && (ev.Has(fsnotify.Write) || ev.Has(fsnotify.Create)), !isWAL && ev.Has(fsnotify.Create):
			// The application wrote the WAL (or put another file in
			// place). Writes to the database file alone are checkpoints,
			// of frames already shipped: among them the one SQLite runs
			// when the parked database's last connection closes, which
			// must not wake it again.
			m.want = active
			f.enqueueLocked(m)
		}
		f.mu.Unlock()
		return
	}
	switch {
	case !f.opts.Entry.Watch:
		f.mu.Unlock()
		return
	case ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename):
		if !isWAL {
			delete(f.rejected, p)
		}
		f.mu.Unlock()
		return
	case isWAL && !f.matches(filepath.Base(p)):
		f.mu.Unlock()
		return
	}
	// A write to a file, or to the WAL of one (a new database in WAL
	// mode writes nothing else until a checkpoint), that is not known.
	c := f.rejected[p]
	if c != nil && now.Sub(c.at) < recheckAfter {
		c.dirty = true
		if !f.recheckPending {
			// Looked at again soon, not at the next tick: a new
			// database's first commit comes right after its creation.
			f.recheckPending = true
			time.AfterFunc(recheckAfter, func() {
				f.mu.Lock()
				f.recheckPending = false
				f.mu.Unlock()
				f.recheck(time.Now())
			})
		}
		f.mu.Unlock()
		return
	}
	f.mu.Unlock()
	f.consider(p, now)
}

// consider adds the file at p when it is a database, else remembers that
// it was not (yet).
func (f *Fleet) consider(p string, now time.Time) {
	st, err := os.Lstat(p)
	if err != nil || !st.Mode().IsRegular() {
		return
	}
	if isDatabase(p) {
		f.log.Info("new database in the directory", "db", p)
		f.add(p, false)
		return
	}
	f.mu.Lock()
	f.rejected[p] = &check{at: now}
	f.mu.Unlock()
}

// tick parks the databases that have been quiet for IdleAfter and looks
// again at files that had no SQLite header yet.
func (f *Fleet) tick(now time.Time) {
	f.recheck(now)
	f.mu.Lock()
	f.maintainDueLocked(now)
	for _, m := range f.members {
		if m.state == failed && m.db == nil && !m.gone && !now.Before(m.retryAt) {
			f.enqueueLocked(m)
		}
	}
	if f.watcher != nil {
		for _, m := range f.members {
			if m.state != active || m.want != active || m.gone {
				continue
			}
			st := m.db.Status()
			busy := uint64(st.TXID) != m.lastTXID
			for _, r := range st.Replicas {
				busy = busy || r.Pending > 0 || r.LastError != ""
			}
			m.lastTXID = uint64(st.TXID)
			if busy {
				m.lastSeen = now
			} else if now.Sub(m.lastSeen) >= f.opts.IdleAfter {
				m.want = parked
				f.enqueueLocked(m)
			}
		}
	}
	trim := f.parksSinceTrim > 0 && len(f.queue) == 0 && len(f.parkQ) == 0
	if trim {
		f.parksSinceTrim = 0
	}
	if len(f.queue) > 0 {
		// Opens waiting at MaxOpen: an open database may have caught up
		// since (makeRoomLocked).
		select {
		case f.kick <- struct{}{}:
		default:
		}
	}
	f.mu.Unlock()
	if trim {
		trimHeap()
	}
}

// recheck looks again at the files written since they were found without
// the SQLite header.
func (f *Fleet) recheck(now time.Time) {
	var again []string
	f.mu.Lock()
	for p, c := range f.rejected {
		if c.dirty && now.Sub(c.at) >= recheckAfter {
			again = append(again, p)
		}
	}
	f.mu.Unlock()
	for _, p := range again {
		f.consider(p, now)
	}
}

// worker carries out the members' transitions, Concurrency at a time.
func (f *Fleet) worker(ctx context.Context) {
	for {
		f.mu.Lock()
		m := f.nextLocked()
		f.mu.Unlock()
		if m == nil {
			select {
			case <-ctx.Done():
				return
			case <-f.kick:
			}
			continue
		}
		if ctx.Err() != nil {
			return
		}
		f.transition(ctx, m)
		// Other workers may be waiting on a queue that is not empty.
		select {
		case f.kick <- struct{}{}:
		default:
		}
	}
}

// pop takes the first member of q.
func pop(q *[]*member) *member {
	m := (*q)[0]
	(*q)[0] = nil
	*q = (*q)[1:]
	m.queued = false
	return m
}

// nextLocked is the next member for a worker, nil for none: parks and
// removals first, then opens while fewer than MaxOpen databases are open.
// A member to be opened is marked opening (and counted open) here, under
// the lock, so that workers together never pass the cap.
func (f *Fleet) nextLocked() *member {
	for {
		if len(f.parkQ) > 0 {
			return pop(&f.parkQ)
		}
		if len(f.queue) == 0 {
			return nil
		}
		if f.opts.MaxOpen > 0 && len(f.opened) >= f.opts.MaxOpen && !f.queue[0].gone {
			if f.makeRoomLocked() {
				continue // the park is in parkQ now
			}
			return nil // woken by a park's end or the next tick
		}
		m := pop(&f.queue)
		if !m.gone && m.want == active && (m.state == parked || m.state == failed && m.db == nil) {
			m.state = opening
			f.opened[m] = struct{}{}
		}
		return m
	}
}

// makeRoomLocked parks early, for an open waiting at MaxOpen, the least
// recently written open database whose replicas have every TXID. It
// reports whether it queued one; it does not while a park is under way
// (that one makes the room) or while every open database is still
// uploading.
func (f *Fleet) makeRoomLocked() bool {
	var victim *member
	for m := range f.opened {
		if m.want == parked || m.state == parking || m.gone {
			return false
		}
		if m.state != active || m.db == nil || caughtUp(m.db.Status()) != nil {
			continue
		}
		if victim == nil || m.lastSeen.Before(victim.lastSeen) {
			victim = m
		}
	}
	if victim == nil {
		return false
	}
	f.log.Debug("parking a database early: max-open reached", "db", victim.rel, "max_open", f.opts.MaxOpen, "waiting", len(f.queue))
	victim.want = parked
	f.enqueueLocked(victim)
	return true
}

// transition moves m one step towards what it should be.
func (f *Fleet) transition(ctx context.Context, m *member) {
	f.mu.Lock()
	switch {
	case m.gone:
		m.state = parking
		f.mu.Unlock()
		f.park(m, "removed")
		f.mu.Lock()
		delete(f.members, m.path)
		delete(f.opened, m)
		f.maintainDoneLocked(m)
		f.markHeadsLocked()
		f.mu.Unlock()
		return
	case m.state == opening: // by nextLocked
		f.mu.Unlock()
		f.open(ctx, m)
	case m.want == parked && m.state == active:
		m.state = parking
		f.mu.Unlock()
		f.park(m, "idle")
	default:
		f.mu.Unlock()
		return
	}
	f.mu.Lock()
	if (m.want != m.state && m.state != failed) || m.gone {
		f.enqueueLocked(m)
	}
	f.mu.Unlock()
}

// open opens m's database and runs it.
func (f *Fleet) open(ctx context.Context, m *member) {
	dbc, err := f.opts.Entry.Database(m.path)
	var db *primary.DB
	if err == nil {
		err = removeNote(m.path)
	}
	if err == nil {
		db, err = f.opts.Open(ctx, dbc, m.rel, m.wake)
	}
	f.mu.Lock()
	maintain := m.maintain
	f.mu.Unlock()
	if err == nil && maintain {
		if merr := db.Maintain(ctx); merr != nil {
			f.log.Warn("maintenance of a parked database failed; it is tried again at its next due time", "db", m.rel, "error", merr)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.markHeadsLocked()
	if err != nil {
		delete(f.opened, m)
		f.maintainDoneLocked(m)
		m.state, m.err = failed, err
		if m.failedAt.IsZero() {
			m.failedAt = time.Now()
		}
		m.backoff = min(max(2*m.backoff, minRetryBackoff), maxRetryBackoff)
		m.retryAt = time.Now().Add(m.backoff)
		if ctx.Err() == nil {
			f.log.Error("cannot replicate database; trying again", "db", m.rel, "in", m.backoff, "error", err)
		}
		return
	}
	m.backoff, m.failedAt = 0, time.Time{}
	if m.maintain {
		// Opened for its maintenance (done above): parked again at once,
		// as a visit is.
		m.db, m.err, m.maintain = db, nil, false
		m.state, m.want, m.lastSeen = active, parked, time.Now()
		m.lastTXID = uint64(db.Status().TXID)
		return
	}
	if m.visit {
		// Found by a scan (the first start, a restart without a parked
		// note): it is parked as soon as every replica has what Open
		// wrote, by the park that follows at once (park's Sync uploads
		// it and checks every replica caught up). Its Run is not started:
		// its goroutines, its 100 ms poll and its first step cost the
		// first start of ten thousand databases more than their uploads.
		// A write meanwhile is seen by the watch and wakes it again.
		m.db, m.err, m.visit = db, nil, false
		m.state, m.want, m.lastSeen = active, parked, time.Now()
		m.lastTXID = uint64(db.Status().TXID)
		return
	}
	runCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	m.db, m.stop, m.runDone, m.err = db, stop, make(chan struct{}), nil
	m.state, m.lastSeen = active, time.Now()
	m.lastTXID = uint64(db.Status().TXID)
	f.runWG.Add(1)
	go func() {
		defer f.runWG.Done()
		defer close(m.runDone)
		err := db.Run(runCtx)
		if err == nil || errors.Is(err, context.Canceled) || runCtx.Err() != nil {
			return
		}
		// Fenced (the write halt holds until Close) or stopped: the
		// database stays as it is until a rescan or a restart.
		f.mu.Lock()
		m.state, m.err = failed, err
		f.mu.Unlock()
		f.log.Error("replication of a database stopped; the others go on", "db", m.rel, "error", err)
	}()
}

// park ends m's Run, ships what is committed and closes it. A database
// whose final sync fails is run again: it has something to upload.
func (f *Fleet) park(m *member, why string) {
	f.mu.Lock()
	db, stop, done := m.db, m.stop, m.runDone
	f.mu.Unlock()
	if db == nil {
		f.mu.Lock()
		m.state = parked
		delete(f.opened, m)
		f.mu.Unlock()
		return
	}
	if stop != nil {
		stop()
		<-done
	}
	// The note's stamps are taken before the final sync: a commit after
	// them changes the WAL, so the note cannot match it (park.go).
	before := stampsOf(m.path)
	ctx, cancel := context.WithTimeout(context.Background(), DefaultParkTimeout)
	err := db.Sync(ctx)
	cancel()
	if err == nil {
		err = caughtUp(db.Status())
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.markHeadsLocked()
	if err != nil && !m.gone && !m.stopping && m.state != failed {
		f.log.Warn("final sync before parking failed; the database keeps running", "db", m.rel, "error", err)
		m.db = nil
		delete(f.opened, m)
		f.maintainDoneLocked(m)
		db.Close()
		m.state, m.want = parked, active
		return
	}
	if err != nil {
		f.log.Warn("final sync failed", "db", m.rel, "why", why, "error", err)
	}
	m.last = db.Status().Document()
	m.lastTXID = uint64(m.last.TXID)
	next := time.Time{}
	if err == nil && !m.gone {
		next = db.NextMaintenance()
		if !next.IsZero() && f.maintaining == m {
			// A maintenance that left work due (failed, say) is not
			// repeated at once.
			next = maxTime(next, time.Now().Add(minMaintainGap))
		}
	}
	db.Close()
	f.maintainDoneLocked(m)
	if err == nil && !m.gone {
		f.setMaintainAtLocked(m, next)
		if err := writeNoteAt(m.path, before, m.last, next); err != nil {
			f.log.Warn("cannot leave the parked note; the database is opened at the next start", "db", m.rel, "error", err)
		}
	}
	m.db, m.stop, m.runDone = nil, nil, nil
	delete(f.opened, m)
	if m.state != failed {
		m.state = parked
	}
	f.parksSinceTrim++
	f.log.Debug("parked database", "db", m.rel, "why", why, "txid", m.lastTXIDString())
}

// caughtUp tells, after a successful Sync, that every replica has every
// TXID: a database is parked only then (a replica still waiting for a
// catch-up snapshot, say, keeps it running).
func caughtUp(st primary.Status) error {
	for _, r := range st.Replicas {
		if r.Pending > 0 {
			return fmt.Errorf("replica %s is %d TXIDs behind after the sync", r.Name, r.Pending)
		}
	}
	return nil
}

// stopAll parks every database (the final sync of a shutdown).
func (f *Fleet) stopAll() {
	f.mu.Lock()
	var open []*member
	for _, m := range f.members {
		if m.db != nil {
			open = append(open, m)
		}
	}
	f.mu.Unlock()
	sem := make(chan struct{}, f.opts.Concurrency)
	var wg sync.WaitGroup
	for _, m := range open {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			f.mu.Lock()
			m.stopping = true // no retry: the process is stopping
			f.mu.Unlock()
			f.park(m, "shutdown")
		}()
	}
	wg.Wait()
	f.runWG.Wait()
}

// names returns the members' relative paths, sorted (tests, messages).
func (f *Fleet) names() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, m := range f.members {
		out = append(out, m.rel)
	}
	slices.Sort(out)
	return out
}
