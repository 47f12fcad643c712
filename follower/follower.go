// Package follower keeps a live, read-only, verified copy of a replicated
// SQLite database: it polls the replica store for the next LTX file, checks
// it, applies it in one write transaction through sqlite_dbpage, proves the
// result by checksum and records the position. Applications open the local
// file read-only and always see a transaction-consistent state.
package follower

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/superfly/ltx"
	"github.com/understudy-db/understudy/config"
	"github.com/understudy-db/understudy/internal/dbid"
	"github.com/understudy-db/understudy/internal/restore"
	"github.com/understudy-db/understudy/internal/sqlitex"
	"github.com/understudy-db/understudy/internal/storage"
	"github.com/understudy-db/understudy/internal/storage/agecrypt"
)

// Defaults of Config.
const (
	DefaultPollInterval       = config.DefaultPollInterval
	DefaultCheckpointInterval = time.Second
	// DefaultHeadCheckInterval is how often an idle follower lists the
	// store to make sure the next L0 file was not compacted away while it
	// was not looking. Listing also happens at start and after errors; a
	// running follower cannot otherwise miss an L0 file, which lives for the
	// primary's l0-retention (minutes).
	DefaultHeadCheckInterval = 5 * time.Minute
	// DefaultHeadListPolls is how many poll intervals pass between listings
	// of L0 past the position (HeadListInterval), busy or idle: they learn
	// the store's head, which the lag is measured against, and find a
	// next file that is missing while later ones exist. One LIST per ten
	// GETs at most.
	DefaultHeadListPolls = 10
	// DefaultMaxBackoff caps the wait between retries of a failing store.
	DefaultMaxBackoff = 30 * time.Second
	// DefaultUnhealthyAfter is the shortest run of failed store requests (or
	// applies) without progress that makes a follower unhealthy, as the
	// primary's primary.DefaultUnhealthyAfter: long enough for a store to
	// restart, short enough for an alert to mean something.
	DefaultUnhealthyAfter = 10 * time.Second
)

// emptyReplicaWait is the longest wait between bootstrap attempts while the
// replica is still empty.
const emptyReplicaWait = 5 * time.Second

// Follower states in Status.State.
const (
	StateStarting      = "starting"
	StateBootstrapping = "bootstrapping"
	StateFollowing     = "following"
	StateStopped       = "stopped"

	// StateStalled: the follower cannot advance (a gap no level bridges, a
	// corrupt object, a file that does not verify) and retries with
	// backoff; it is unhealthy, the reason is in Status.Error, and the local
	// database keeps serving reads at its last good state.
	StateStalled = "stalled"
)

// BootstrapResult is the position of a freshly restored database.
type BootstrapResult struct {
	TXID       ltx.TXID
	Checksum   ltx.Checksum // dbsum of the restored file; 0 if unknown
	DatabaseID string       // identity of the history restored ("" none)
}

// Bootstrapper materialises the replica's newest state as a new database
// file at path (which does not exist). It returns an error wrapping
// restore.ErrEmptyReplica when there is nothing to restore yet.
type Bootstrapper func(ctx context.Context, client storage.Client, path string) (BootstrapResult, error)

// RestoreBootstrap bootstraps with internal/restore (verified, written to a
// temp file and renamed).
func RestoreBootstrap(logger hclog.Logger) Bootstrapper {
	return func(ctx context.Context, client storage.Client, path string) (BootstrapResult, error) {
		res, err := restore.Restore(ctx, client, restore.Options{OutputPath: path, Logger: logger, IntegrityCheck: restore.IntegrityQuick})
		if err != nil {
			return BootstrapResult{}, err
		}
		return BootstrapResult{TXID: res.TXID, Checksum: res.PostApplyChecksum, DatabaseID: res.DatabaseID}, nil
	}
}

// Config configures a Follower.
type Config struct {
	Path   string         // local database path
	Name   string         // name in logs and metrics (default: the path's base name)
	Client storage.Client // the replica store to follow

	Bootstrap          Bootstrapper  // default RestoreBootstrap
	PollInterval       time.Duration // default DefaultPollInterval, at least config.MinPollInterval
	CheckpointInterval time.Duration // default DefaultCheckpointInterval
	HeadCheckInterval  time.Duration // default DefaultHeadCheckInterval
	HeadListInterval   time.Duration // default DefaultHeadListPolls poll intervals
	GapGrace           time.Duration // how long a gap must last to be reported; default HeadListInterval
	MaxBackoff         time.Duration // default DefaultMaxBackoff
	UnhealthyAfter     time.Duration // default 3 poll intervals, at least DefaultUnhealthyAfter

	Logger  hclog.Logger
	Metrics *Metrics // optional
	// Wake, if set, replaces the idle poll: once caught up (a GET of the
	// next file found nothing), the follower makes no request until a
	// receive from Wake (or ctx ends), and then GETs the next file again.
	// The sender learns from something cheaper than a GET per database
	// (a directory's heads index, package followdir) which databases
	// moved, and sends the store's head of this one. A wake with head 0
	// (the sender knows nothing: no index) is the poll of a follower
	// without Wake, with its periodic listings of the store's head. A
	// stalled follower retries on its own backoff, Wake or not.
	Wake <-chan ltx.TXID
	// MetricsLabel, if set, is the db label of the counters and the apply
	// histogram instead of Name, shared by many followers (a directory's,
	// whose metrics must not grow with its database count); the gauges,
	// which such followers would overwrite in turn, are then not set.
	MetricsLabel string
	// PrimaryShadowDir is the primary's shadow directory of this database
	// (default: the primary's default, dbid.ShadowDir); see setAside.
	PrimaryShadowDir string
	Now              func() time.Time // clock for lag and timestamps (default time.Now)
	// Locks, if set, hands the connection that holds the database's write
	// lock from one role of a node to the next: the applier writes through
	// the lock found there (a demoted primary's) and leaves it there when
	// it closes (for the primary a promotion opens), so that the lock is
	// never free in between. Nil: the applier takes and lets go its own.
	Locks *sqlitex.LockSlot
}

// Status is a follower's state for /status, logs and tests.
type Status struct {
	Role       string       `json:"role"`
	DB         string       `json:"db"`
	Name       string       `json:"name"`
	Replica    string       `json:"replica"`
	State      string       `json:"state"`
	Ready      bool         `json:"ready"`
	Healthy    bool         `json:"healthy"`
	TXID       ltx.TXID     `json:"txid"`
	Checksum   ltx.Checksum `json:"checksum"`
	PageCount  uint32       `json:"page_count"`
	HeadTXID   ltx.TXID     `json:"head_txid"` // newest TXID known in the store (listed or applied)
	CaughtUp   bool         `json:"caught_up"` // the last GET found no next file and nothing newer is known
	LagSeconds float64      `json:"lag_seconds"`
	LagTXIDs   uint64       `json:"lag_txids"` // HeadTXID - TXID
	LastApply  *time.Time   `json:"last_apply,omitempty"`
	LastCommit *time.Time   `json:"last_commit,omitempty"` // primary's commit time of the last applied file
	LastPoll   *time.Time   `json:"last_poll,omitempty"`
	// ApplyDelaySeconds is how long after its commit on the primary the
	// last applied file became visible here.
	ApplyDelaySeconds float64 `json:"apply_delay_seconds"`
	Applied           uint64  `json:"applied_files"`
	MovedAside        string  `json:"moved_aside,omitempty"`
	// DivergedSavedTo is where a former primary's database, with the
	// transactions it committed that the store lacks, was saved (divergedaside.go).
	DivergedSavedTo string `json:"diverged_saved_to,omitempty"`
	Error           string `json:"error,omitempty"`
}

// Follower follows one database. Create it with New and call Run.
type Follower struct {
	cfg Config
	log hclog.Logger

	mu      sync.Mutex
	st      Status
	changed chan struct{} // closed and replaced on every status change

	dbID  string // database identity recorded beside the database (noteIdentity); the apply loop only
	label string // db label of the counters (Config.MetricsLabel, else Name)
}

// gauges is the metrics whose series are this database's own, nil when
// there are none (no Metrics, or a shared MetricsLabel).
func (f *Follower) gauges() *Metrics {
	if f.cfg.MetricsLabel != "" {
		return nil
	}
	return f.cfg.Metrics
}

// New validates cfg and returns a follower.
func New(cfg Config) (*Follower, error) {
	if cfg.Path == "" {
		return nil, errors.New("follower: no local database path")
	}
	if !filepath.IsAbs(cfg.Path) {
		abs, err := filepath.Abs(cfg.Path)
		if err != nil {
			return nil, fmt.Errorf("follower: %s: %w", cfg.Path, err)
		}
		cfg.Path = abs
	}
	if cfg.Client == nil {
		return nil, fmt.Errorf("follower %s: no replica store", cfg.Path)
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.PollInterval < config.MinPollInterval {
		return nil, fmt.Errorf("follower %s: poll interval %s is below the minimum %s", cfg.Path, cfg.PollInterval, config.MinPollInterval)
	}
	if cfg.CheckpointInterval <= 0 {
		cfg.CheckpointInterval = DefaultCheckpointInterval
	}
	if cfg.HeadCheckInterval <= 0 {
		cfg.HeadCheckInterval = DefaultHeadCheckInterval
	}
	if cfg.HeadListInterval <= 0 {
		cfg.HeadListInterval = DefaultHeadListPolls * cfg.PollInterval
	}
	if cfg.GapGrace <= 0 {
		cfg.GapGrace = cfg.HeadListInterval
	}
	if cfg.UnhealthyAfter <= 0 {
		cfg.UnhealthyAfter = max(3*cfg.PollInterval, DefaultUnhealthyAfter)
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	if cfg.Name == "" {
		cfg.Name = filepath.Base(cfg.Path)
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Bootstrap == nil {
		cfg.Bootstrap = RestoreBootstrap(cfg.Logger.Named("restore"))
	}
	f := &Follower{cfg: cfg, log: cfg.Logger.With("db", cfg.Name), changed: make(chan struct{}), label: cfg.Name}
	f.st = Status{Role: "follower", DB: cfg.Path, Name: cfg.Name, Replica: cfg.Client.Type(), State: StateStarting, Healthy: true}
	if cfg.MetricsLabel != "" {
		f.label = cfg.MetricsLabel
	}
	if m := f.gauges(); m != nil {
		m.Healthy.WithLabelValues(cfg.Name).Set(1)
	}
	return f, nil
}

// Name is the database's name in logs and metrics.
func (f *Follower) Name() string { return f.cfg.Name }

// Status returns the current status, with lag computed now.
func (f *Follower) Status() Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.statusLocked()
}

func (f *Follower) statusLocked() Status {
	st := f.st
	var lastCommit time.Time
	if st.LastCommit != nil {
		lastCommit = *st.LastCommit
	}
	lag, txids := lagOf(f.cfg.Now(), st.CaughtUp, lastCommit, st.HeadTXID, st.TXID)
	st.LagSeconds, st.LagTXIDs = lag.Seconds(), txids
	return st
}

// Wait blocks until cond holds for the status, or ctx ends.
func (f *Follower) Wait(ctx context.Context, cond func(Status) bool) (Status, error) {
	for {
		f.mu.Lock()
		st, ch := f.statusLocked(), f.changed
		f.mu.Unlock()
		if cond(st) {
			return st, nil
		}
		select {
		case <-ctx.Done():
			return st, ctx.Err()
		case <-ch:
		}
	}
}

func (f *Follower) update(fn func(st *Status)) {
	f.mu.Lock()
	fn(&f.st)
	close(f.changed)
	f.changed = make(chan struct{})
	st := f.statusLocked()
	f.mu.Unlock()
	if m := f.gauges(); m != nil {
		m.TXID.WithLabelValues(f.cfg.Name).Set(float64(st.TXID))
		m.HeadTXID.WithLabelValues(f.cfg.Name).Set(float64(st.HeadTXID))
		m.LagSeconds.WithLabelValues(f.cfg.Name).Set(st.LagSeconds)
		m.LagTXIDs.WithLabelValues(f.cfg.Name).Set(float64(st.LagTXIDs))
		h := 0.0
		if st.Healthy {
			h = 1
		}
		m.Healthy.WithLabelValues(f.cfg.Name).Set(h)
	}
}

// get opens the whole store object fi names and counts the request.
func (f *Follower) get(ctx context.Context, fi storage.FileInfo) (*storage.Object, error) {
	obj, err := f.cfg.Client.Open(ctx, fi.Level, fi.MinTXID, fi.MaxTXID, 0, -1)
	f.request("get", result(err))
	return obj, err
}

func (f *Follower) request(typ, result string) {
	if m := f.cfg.Metrics; m != nil {
		m.Requests.WithLabelValues(f.label, typ, result).Inc()
	}
}

// Run follows until ctx ends. It starts from the local database (resumed
// after its checksum is verified, or moved aside and bootstrapped again when
// it does not match) and then applies every new file. A file that does not
// verify, or a gap, makes it unhealthy (StateStalled) and retried with
// backoff until it can advance again. When the local database itself can no
// longer be trusted it stops applying, marks itself unhealthy and waits for
// ctx: the local database stays at its last good state and keeps serving
// reads. It returns that error, or nil when ctx ended first, or an error
// from start-up that retrying cannot fix (no sqlite_dbpage).
func (f *Follower) Run(ctx context.Context) error {
	if err := sqlitex.CheckDBPage(ctx); err != nil {
		return err
	}
	a, err := f.start(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return f.stop(ctx, err)
	}
	defer a.Close()

	fctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		f.checkpointLoop(fctx, a, cancel)
	}()
	err = f.follow(fctx, a)
	if err == nil && ctx.Err() == nil {
		err = context.Cause(fctx) // the checkpointer stopped us
	}
	cancel(nil)
	wg.Wait()
	if ctx.Err() != nil && err == nil {
		return nil
	}
	return f.stop(ctx, err)
}

// stop records a fatal error and waits for ctx: the process stays up to
// report it on /healthz and /status while the database keeps serving reads.
func (f *Follower) stop(ctx context.Context, err error) error {
	f.log.Error("follower stopped applying; the local database stays at its last good state and keeps serving reads", "error", err)
	f.update(func(st *Status) {
		st.State, st.Healthy, st.Ready, st.Error = StateStopped, false, false, err.Error()
	})
	<-ctx.Done()
	return err
}

// start opens the local database, moving it aside and bootstrapping when it
// is missing or cannot be resumed. Transient failures are retried.
//
// The write lock an attempt took stays held until the next one (slot): a
// database set for an in-place rebuild whose rebuild failed (the store
// unreachable, say) must take no write before the retry, which would
// overwrite it, acknowledged and saved nowhere.
func (f *Follower) start(ctx context.Context) (*Applier, error) {
	path := f.cfg.Path
	slot := f.cfg.Locks
	if slot == nil {
		slot = &sqlitex.LockSlot{}
		defer slot.Release() // a lock no applier took
	}
	for attempt := 1; ; attempt++ {
		a, err := f.open(ctx, path, slot)
		if err == nil && a.Position().TXID == 0 {
			// Set for an in-place rebuild (a deposed primary's database,
			// saved aside): the store's newest state replaces it in place.
			err = f.rebuildInPlace(ctx, a)
		}
		if err == nil {
			if f.cfg.Locks == nil {
				a.slot = nil // the applier lets go of the lock when it closes
			}
			pos := a.Position()
			f.update(func(st *Status) {
				st.State, st.Ready, st.Healthy, st.Error = StateFollowing, true, true, ""
				st.TXID, st.Checksum, st.PageCount = pos.TXID, pos.Checksum, a.PageCount()
			})
			return a, nil
		}
		if errors.Is(err, ErrNoDBPage) || ctx.Err() != nil {
			return nil, err
		}
		var ve *VerifyError
		if errors.As(err, &ve) {
			return nil, err
		}
		if agecrypt.IsKeyError(err) {
			return nil, err // the replica's age keys do not fit its objects: only a new config helps
		}
		wait := backoff(f.cfg.PollInterval, attempt, f.cfg.MaxBackoff)
		if errors.Is(err, restore.ErrEmptyReplica) || errors.Is(err, restore.ErrNoSnapshot) {
			// Not a failure: the primary has not uploaded yet. Look again
			// soon, without hammering the store with listings.
			wait = min(wait, max(f.cfg.PollInterval, emptyReplicaWait))
			f.log.Info("the replica holds no files yet; waiting for the primary's first upload", "retry_in", wait)
		} else {
			f.log.Warn("cannot start following; will retry", "error", err, "retry_in", wait)
		}
		f.update(func(st *Status) { st.Error = err.Error() })
		if !sleep(ctx, wait) {
			return nil, ctx.Err()
		}
	}
}

func (f *Follower) open(ctx context.Context, path string, slot *sqlitex.LockSlot) (*Applier, error) {
	if _, err := os.Stat(path); err == nil {
		a, err := resumeApplier(ctx, path, f.log, slot)
		var me *MismatchError
		if !errors.As(err, &me) {
			if err == nil {
				pos := a.Position()
				f.log.Info("resuming from the local database", "path", path, "txid", pos.TXID.String(), "checksum", pos.Checksum.String())
			}
			return a, err
		}
		if a := f.keepDivergedInPlace(ctx, path, me, slot); a != nil {
			return a, nil
		}
		if err := f.setAside(path, me); err != nil {
			return nil, err
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("stat local database: %w", err)
	} else if aside, err := moveAside(path, "orphan", f.cfg.Now()); err != nil {
		// A -wal beside a missing database would be replayed into the new one.
		return nil, err
	} else if aside != "" {
		f.log.Warn("moved leftover -wal/-shm/position files of a missing database aside", "moved_to", aside)
	}

	f.update(func(st *Status) { st.State = StateBootstrapping })
	f.log.Info("bootstrapping the local database from the replica", "path", path)
	start := time.Now()
	res, err := f.cfg.Bootstrap(ctx, f.cfg.Client, path)
	if err != nil {
		return nil, fmt.Errorf("bootstrap %s: %w", path, err)
	}
	a, err := initApplier(ctx, path, res.TXID, res.Checksum, f.log, slot)
	if err != nil {
		// Keep the bad copy for inspection, out of the way of the next try.
		if aside, merr := moveAside(path, "bootstrap-failed", f.cfg.Now()); merr == nil && aside != "" {
			f.log.Warn("bootstrapped database kept aside", "moved_to", aside)
		}
		return nil, err
	}
	f.noteIdentity(&storage.Metadata{DatabaseID: res.DatabaseID})
	f.log.Info("bootstrapped", "txid", res.TXID.String(), "pages", a.PageCount(), "elapsed", time.Since(start))
	return a, nil
}

func (f *Follower) applied(a *Applier, res ApplyResult) {
	now := f.cfg.Now()
	commit := res.CommitTime
	if m := f.cfg.Metrics; m != nil {
		m.ApplyDuration.WithLabelValues(f.label).Observe(res.ApplyTime.Seconds())
		m.AppliedFiles.WithLabelValues(f.label).Inc()
		m.AppliedPages.WithLabelValues(f.label).Add(float64(res.Pages))
	}
	lvl := hclog.Debug
	if res.FullImage || res.MaxTXID != res.MinTXID {
		lvl = hclog.Info
	}
	f.log.Log(lvl, "applied", "object", res.Object, "txid", res.Pos.TXID.String(), "pages", res.Pages,
		"commit", res.Commit, "full_image", res.FullImage, "elapsed", res.ApplyTime)
	f.update(func(st *Status) {
		st.TXID, st.Checksum, st.PageCount = res.Pos.TXID, res.Pos.Checksum, res.Commit
		if st.HeadTXID < res.Pos.TXID {
			st.HeadTXID = res.Pos.TXID
		}
		st.CaughtUp = false
		st.LastApply, st.LastCommit = &now, &commit
		st.ApplyDelaySeconds = now.Sub(commit).Seconds()
		st.Applied++
		st.Error = ""
		if st.State == StateStalled {
			st.State, st.Healthy = StateFollowing, true
		}
	})
}

// raiseHead records that the store holds TXIDs up to head.
func (f *Follower) raiseHead(head ltx.TXID) {
	f.update(func(st *Status) {
		if head > st.HeadTXID {
			st.HeadTXID = head
		}
		if st.HeadTXID > st.TXID {
			st.CaughtUp = false
		}
	})
}

// planCatchUp lists the levels and decides where to go from txid.
func (f *Follower) planCatchUp(ctx context.Context, txid ltx.TXID) (CatchUp, error) {
	var listings []Listing
	for _, level := range catchUpLevels {
		seek := ltx.TXID(0)
		if level == storage.LevelL0 {
			seek = txid // L0 files hold one TXID each; txid itself proves the store reaches us
		}
		files, err := listLevel(ctx, f.cfg.Client, level, seek)
		f.request("list", result(err))
		if err != nil {
			return CatchUp{}, err
		}
		listings = append(listings, Listing{Level: level, Files: files})
	}
	return planCatchUp(txid, listings), nil
}

func listLevel(ctx context.Context, c storage.Client, level int, seek ltx.TXID) ([]storage.FileInfo, error) {
	it, err := c.List(ctx, level, seek)
	if err != nil {
		return nil, fmt.Errorf("list level %d: %w", level, err)
	}
	defer it.Close()
	var files []storage.FileInfo
	for it.Next() {
		files = append(files, it.Item())
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("list level %d: %w", level, err)
	}
	return files, nil
}

// checkpointLoop checkpoints the local database every CheckpointInterval.
// A checkpoint that finds the database damaged stops the follower.
func (f *Follower) checkpointLoop(ctx context.Context, a *Applier, stop context.CancelCauseFunc) {
	t := time.NewTicker(f.cfg.CheckpointInterval)
	defer t.Stop()
	// clean is the position at the last checkpoint that copied every
	// frame back: until the next apply (which moves the position; nobody
	// else can write, the applier holds the write lock) there is nothing
	// to checkpoint, and an idle follower of a directory of a thousand
	// databases would otherwise run a thousand checkpoints a second.
	var clean *Position
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pos := a.Position()
		if clean != nil && *clean == pos {
			continue
		}
		res, err := a.Checkpoint(ctx)
		if err == nil && !res.Busy && res.Log == res.Checkpointed {
			clean = &pos
		} else {
			clean = nil
		}
		r := "ok"
		switch {
		case err != nil:
			r = "error"
		case res.Busy:
			r = "busy"
		}
		if m := f.cfg.Metrics; m != nil {
			m.Checkpoints.WithLabelValues(f.label, r).Inc()
			if err == nil && f.gauges() != nil {
				m.WALFrames.WithLabelValues(f.cfg.Name).Set(float64(res.Log))
			}
		}
		var ve *VerifyError
		if errors.As(err, &ve) {
			stop(err)
			return
		} else if err != nil && ctx.Err() == nil {
			f.log.Warn("checkpoint failed", "error", err)
		}
	}
}

func result(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, storage.ErrNotFound):
		return "not_found"
	}
	return "error"
}

// sleep waits d or until ctx ends; it reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// noteIdentity records the identity of the history followed beside the
// database (dbid.RecordFor) when a file carries one not recorded yet, so
// that a primary started on this file later continues that history.
func (f *Follower) noteIdentity(md *storage.Metadata) {
	if md == nil || md.DatabaseID == "" || md.DatabaseID == f.dbID {
		return
	}
	if err := dbid.RecordFor(f.cfg.Path, md.DatabaseID, "followed replica"); err != nil {
		f.log.Warn("could not record the followed history's database identity", "error", err)
		return
	}
	f.dbID = md.DatabaseID
}

// identity is the identity of the history followed: noted from its files,
// else as recorded beside the database by an earlier process.
func (f *Follower) identity() string {
	if f.dbID == "" {
		if rec, err := dbid.Read(dbid.ShadowDir(f.cfg.Path)); err == nil {
			f.dbID = rec.ID
		}
	}
	return f.dbID
}
