// Package followdir follows a directory of databases: every database below
// a replica prefix (a dir: entry's replica, where each database lives at
// the prefix plus its path relative to the directory, Litestream 0.5's
// rule) gets a follower.Follower that keeps OutDir/<that path>.
//
// Finding the databases costs one listing of the whole prefix
// (storage.FindDatabases) every DiscoverInterval, whatever their number:
// never a listing per database per poll. A database that appears in the
// store gets a follower at the next listing; one whose objects are gone
// from the store has its follower stopped, the local file kept as it is.
// Each follower polls its own database's next object (one GET per poll
// interval when idle, follower/loop.go).
package followdir

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/config"
	"github.com/understudy-db/understudy/follower"
	"github.com/understudy-db/understudy/internal/dirstatus"
	"github.com/understudy-db/understudy/internal/replicaclient"
	"github.com/understudy-db/understudy/internal/storage"
)

// Defaults for Options left zero.
const (
	DefaultDiscoverInterval = config.DefaultDiscoverInterval
	// DefaultConcurrency is how many followers start (bootstrap or resume,
	// each a restore or a checksum of the whole file and a listing of
	// every level) at once, so that a thousand databases do not all hit
	// the store and the disk in the same second.
	DefaultConcurrency = 8
	// DefaultUnhealthyAfter is how long discovery must have failed before
	// /healthz says so: the store may only be restarting.
	DefaultUnhealthyAfter = follower.DefaultUnhealthyAfter
)

// startHold is the longest a follower keeps its start slot: one waiting for
// its replica's first upload must not hold up the others.
const startHold = 10 * time.Second

// StateGone is the Status.State of a database whose objects vanished from
// the store: its follower is stopped, its local file kept.
const StateGone = "gone"

// Options configure a Dir.
type Options struct {
	// Prefix is the store of the prefix: it must list by key
	// (storage.KeyReader) and give each database a client below it
	// (replicaclient.Sub).
	Prefix   storage.Client
	Location string // the prefix's location, for logs and status
	OutDir   string // local directory of the followers' files

	PollInterval     time.Duration // each follower's; default follower.DefaultPollInterval
	DiscoverInterval time.Duration // default DefaultDiscoverInterval
	Concurrency      int           // followers starting at once; default DefaultConcurrency

	Logger hclog.Logger
	// Metrics, if set, counts the followers' store requests and applies
	// under the single label MetricsLabel (default OutDir) unless
	// PerDBMetrics, which gives each database its own series.
	Metrics      *follower.Metrics
	MetricsLabel string
	PerDBMetrics bool

	// Heads, if set, reads the prefix's heads index: the newest TXID
	// shipped of each database by path relative to the prefix (an error
	// wrapping storage.ErrNotFound when the prefix has none). It is read
	// once per PollInterval instead of each follower polling its own
	// objects: only a database whose head moved past its follower's
	// position is woken (follower.Config.Wake) to GET its next file. While
	// there is no index (a replica written by Litestream) or it cannot be
	// read, every follower is woken each PollInterval, which is the poll
	// of a follower without Heads.
	Heads func(ctx context.Context) (map[string]uint64, error)

	// Follower, if set, adjusts each database's follower.Config before
	// the follower is made (tests).
	Follower func(rel string, cfg *follower.Config)
}

// member is one database of the prefix.
type member struct {
	rel     string
	f       *follower.Follower
	cancel  context.CancelFunc
	done    chan struct{} // closed when Run returned
	err     error         // what Run returned; set before done is closed
	gone    bool          // its objects vanished; the follower is stopped
	initial bool          // found by the first listing
	wake    chan ltx.TXID // the follower's Config.Wake (Options.Heads); nil without
}

// Dir follows every database below a prefix. Create it with New and call
// Run.
type Dir struct {
	opts  Options
	kr    storage.KeyReader
	log   hclog.Logger
	start chan struct{} // start slots

	mu           sync.Mutex
	members      map[string]*member
	listed       bool      // a listing succeeded
	lastList     time.Time // last successful listing
	listErr      error     // last listing's error; nil once one succeeds
	failingSince time.Time // first of the current run of failed listings
	rootWarned   bool
	polling      string // how the followers are polled (Status.Polling)
}

// Status.Polling values.
const (
	PollingEach  = "each database"           // every follower GETs its next file each poll interval
	PollingIndex = "heads index"             // one GET of the heads index a poll interval
	PollingNoIdx = "each database, no index" // Options.Heads set, and the prefix has no index (or it cannot be read)
)

// New checks opts and returns a Dir.
func New(opts Options) (*Dir, error) {
	if opts.Prefix == nil {
		return nil, errors.New("followdir: no store for the prefix")
	}
	if opts.OutDir == "" {
		return nil, fmt.Errorf("followdir %s: no local directory to follow into", opts.Location)
	}
	abs, err := filepath.Abs(opts.OutDir)
	if err != nil {
		return nil, fmt.Errorf("followdir: %s: %w", opts.OutDir, err)
	}
	opts.OutDir = abs
	kr, ok := opts.Prefix.(storage.KeyReader)
	if !ok {
		return nil, fmt.Errorf("followdir %s: a %s replica cannot be listed by prefix, so its databases cannot be found", opts.Location, opts.Prefix.Type())
	}
	if _, err := replicaclient.Sub(opts.Prefix, "probe"); err != nil {
		return nil, fmt.Errorf("followdir %s: %w", opts.Location, err)
	}
	if opts.PollInterval == 0 {
		opts.PollInterval = follower.DefaultPollInterval
	}
	if opts.PollInterval < config.MinPollInterval {
		return nil, fmt.Errorf("followdir %s: poll interval %s is below the minimum %s", opts.Location, opts.PollInterval, config.MinPollInterval)
	}
	if opts.DiscoverInterval == 0 {
		opts.DiscoverInterval = DefaultDiscoverInterval
	}
	if opts.DiscoverInterval < config.MinDiscoverInterval {
		return nil, fmt.Errorf("followdir %s: discover interval %s is below the minimum %s", opts.Location, opts.DiscoverInterval, config.MinDiscoverInterval)
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = DefaultConcurrency
	}
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	if opts.MetricsLabel == "" {
		opts.MetricsLabel = opts.OutDir
	}
	if opts.Location == "" {
		opts.Location = opts.Prefix.Type()
	}
	d := &Dir{
		opts: opts, kr: kr, log: opts.Logger,
		start:   make(chan struct{}, opts.Concurrency),
		members: map[string]*member{},
		polling: PollingEach,
	}
	if opts.Heads != nil {
		d.polling = PollingNoIdx // until an index is read
	}
	return d, nil
}

// Dir is the local directory the databases are followed into.
func (d *Dir) Dir() string { return d.opts.OutDir }

// Run lists the prefix at once and then every DiscoverInterval, starting a
// follower for each database that appears and stopping the follower of
// each that vanishes, until ctx ends; then it stops every follower and
// returns nil. It returns early only on an error no retry can fix (no
// sqlite_dbpage in this build). A failed listing is logged and retried.
func (d *Dir) Run(ctx context.Context) error {
	if err := follower.CheckDBPage(ctx); err != nil {
		return err
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer d.stopAll()
	defer cancel(nil) // before stopAll: the followers' contexts end with it
	if d.opts.Heads != nil {
		done := make(chan struct{})
		defer func() { <-done }()
		go func() {
			defer close(done)
			d.headsLoop(ctx)
		}()
	}
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			if err := context.Cause(ctx); errors.Is(err, follower.ErrNoDBPage) {
				return err
			}
			return nil
		case <-t.C:
		}
		d.discover(ctx, cancel)
		t.Reset(d.opts.DiscoverInterval)
	}
}

// discover lists the prefix once and starts and stops followers to match.
func (d *Dir) discover(ctx context.Context, fatal context.CancelCauseFunc) {
	listed, err := storage.DatabaseHeads(ctx, d.kr)
	found := slices.Sorted(maps.Keys(listed))
	d.request(result(err))
	if ctx.Err() != nil {
		return
	}
	if err != nil {
		d.mu.Lock()
		if d.failingSince.IsZero() {
			d.failingSince = time.Now()
		}
		d.listErr = fmt.Errorf("list the prefix %s: %w", d.opts.Location, err)
		d.mu.Unlock()
		d.log.Warn("cannot list the prefix to find its databases; the followers keep following, retrying", "prefix", d.opts.Location, "error", err, "retry_in", d.opts.DiscoverInterval)
		return
	}
	if len(found) > 0 && found[0] == "" {
		// One database at the prefix itself: not a directory of them.
		found = found[1:]
		d.mu.Lock()
		warned := d.rootWarned
		d.rootWarned = true
		d.mu.Unlock()
		if !warned {
			d.log.Warn("the prefix holds one database at its root, which a directory follower does not follow: follow it with `understudy follow URL PATH`", "prefix", d.opts.Location)
		}
	}

	d.mu.Lock()
	first := !d.listed
	d.listed, d.lastList, d.listErr, d.failingSince = true, time.Now(), nil, time.Time{}
	var running []string
	for rel, m := range d.members {
		if !m.gone {
			running = append(running, rel)
		}
	}
	d.mu.Unlock()

	added, gone := Diff(running, found)
	for _, rel := range gone {
		d.vanished(rel)
	}
	d.wakeListed(listed)
	for _, rel := range added {
		if err := d.follow(ctx, rel, first, fatal); err != nil {
			d.log.Error("cannot follow a database of the prefix", "db", rel, "error", err)
		}
	}
	if first {
		d.log.Info("following the databases of the prefix", "prefix", d.opts.Location, "dir", d.opts.OutDir, "databases", len(found), "discover_interval", d.opts.DiscoverInterval)
	} else if len(added)+len(gone) > 0 {
		d.log.Info("databases of the prefix changed", "prefix", d.opts.Location, "new", len(added), "gone", len(gone), "databases", len(found))
	}
}

// Diff compares the databases a listing found with the ones followed
// (running, in any order): added are the ones to start following, gone
// the ones whose objects vanished, both sorted.
func Diff(running, found []string) (added, gone []string) {
	have := make(map[string]bool, len(running))
	for _, rel := range running {
		have[rel] = true
	}
	seen := make(map[string]bool, len(found))
	for _, rel := range found {
		if seen[rel] {
			continue
		}
		seen[rel] = true
		if !have[rel] {
			added = append(added, rel)
		}
	}
	for rel := range have {
		if !seen[rel] {
			gone = append(gone, rel)
		}
	}
	slices.Sort(added)
	slices.Sort(gone)
	return added, gone
}

// follow starts the follower of the database rel (again, if it was gone).
func (d *Dir) follow(ctx context.Context, rel string, initial bool, fatal context.CancelCauseFunc) error {
	client, err := replicaclient.Sub(d.opts.Prefix, rel)
	if err != nil {
		return err
	}
	path := filepath.Join(d.opts.OutDir, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("create the directory of %s: %w", path, err)
	}
	cfg := follower.Config{Path: path, Name: rel, Client: client, PollInterval: d.opts.PollInterval, Logger: d.log, Metrics: d.opts.Metrics}
	if !d.opts.PerDBMetrics {
		cfg.MetricsLabel = d.opts.MetricsLabel
	}
	if d.opts.Follower != nil {
		d.opts.Follower(rel, &cfg)
	}
	var wake chan ltx.TXID
	if d.opts.Heads != nil {
		wake = make(chan ltx.TXID, 1)
		cfg.Wake = wake
	}
	f, err := follower.New(cfg)
	if err != nil {
		return err
	}
	fctx, cancel := context.WithCancel(ctx)
	m := &member{rel: rel, f: f, cancel: cancel, done: make(chan struct{}), initial: initial, wake: wake}
	d.mu.Lock()
	if old := d.members[rel]; old != nil {
		m.initial = old.initial
	}
	d.members[rel] = m
	d.mu.Unlock()
	go func() {
		defer close(m.done)
		d.holdStart(fctx, f)
		m.err = f.Run(fctx)
		if errors.Is(m.err, follower.ErrNoDBPage) {
			fatal(m.err)
		}
	}()
	return nil
}

// holdStart takes a start slot for f and gives it back once f serves a
// database, gave up, or startHold passed, so that at most Concurrency
// followers bootstrap or resume at once.
func (d *Dir) holdStart(ctx context.Context, f *follower.Follower) {
	select {
	case d.start <- struct{}{}:
	case <-ctx.Done():
		return
	}
	go func() {
		defer func() { <-d.start }()
		wctx, cancel := context.WithTimeout(ctx, startHold)
		defer cancel()
		_, _ = f.Wait(wctx, func(st follower.Status) bool {
			return st.Ready || st.State == follower.StateStopped || st.Error != ""
		})
	}()
}

// headsLoop reads the heads index every PollInterval and wakes the
// followers it shows behind, or every follower while there is no index.
func (d *Dir) headsLoop(ctx context.Context) {
	t := time.NewTicker(d.opts.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		heads, err := d.opts.Heads(ctx)
		d.countRequest("get_heads", result(err))
		if ctx.Err() != nil {
			return
		}
		polling := PollingIndex
		if err != nil {
			polling = PollingNoIdx
		}
		d.mu.Lock()
		was := d.polling
		d.polling = polling
		ms := make([]*member, 0, len(d.members))
		for _, m := range d.members {
			if !m.gone {
				ms = append(ms, m)
			}
		}
		d.mu.Unlock()
		switch {
		case polling == was:
		case err == nil:
			d.log.Info("the prefix has a heads index: one GET of it a poll interval, and only the databases it shows behind poll their own files", "prefix", d.opts.Location)
		case errors.Is(err, storage.ErrNotFound):
			d.log.Info("the prefix has no heads index (written by Litestream or an older Understudy): every database polls its own files", "prefix", d.opts.Location)
		default:
			d.log.Warn("cannot read the prefix's heads index: every database polls its own files meanwhile", "prefix", d.opts.Location, "error", err)
		}
		positions := make(map[string]uint64, len(ms))
		for _, m := range ms {
			positions[m.rel] = uint64(m.f.Status().TXID)
		}
		behind := Behind(heads, positions, err != nil)
		for _, m := range ms {
			h, ok := behind[m.rel]
			if !ok {
				continue
			}
			m.wakeUp(ltx.TXID(h))
		}
	}
}

// wakeUp tells a follower (one with Config.Wake) to poll, with the head
// to expect. The newest news replaces a wake still pending; if the other
// sender (headsLoop or wakeListed) fills the slot meanwhile, that wake
// stands, and a wake is all the follower needs.
func (m *member) wakeUp(head ltx.TXID) {
	select {
	case <-m.wake:
	default:
	}
	select {
	case m.wake <- head:
	default:
	}
}

// wakeListed wakes the followers whose database the discovery listing
// shows past their position. The heads index is only a hint: a writer
// that stopped updating it (a crash between an upload and the index, an
// older Understudy, a lease node, another tool) would otherwise leave
// its followers asleep and showing no lag. The listing is made anyway
// for discovery, so this bounds how stale a follower can fall behind
// silently to DiscoverInterval, at no extra request.
func (d *Dir) wakeListed(listed map[string]ltx.TXID) {
	if d.opts.Heads == nil {
		return
	}
	d.mu.Lock()
	var ms []*member
	for _, m := range d.members {
		if !m.gone && m.wake != nil {
			ms = append(ms, m)
		}
	}
	d.mu.Unlock()
	for _, m := range ms {
		if h := listed[m.rel]; h > m.f.Status().TXID {
			m.wakeUp(h)
		}
	}
}

// Behind is which followers to wake, by path relative to the prefix, each
// with the head to tell it (0: none known): those whose head in the
// index is past their position (positions), those the index does not
// name (their writer keeps no index entry for them: a lease node, or a
// database new since the index was written), or all of them when there
// is no index (noIndex).
func Behind(heads map[string]uint64, positions map[string]uint64, noIndex bool) map[string]uint64 {
	out := map[string]uint64{}
	for rel, pos := range positions {
		switch h, ok := heads[rel]; {
		case noIndex || !ok:
			out[rel] = 0
		case ok && h > pos:
			out[rel] = h
		}
	}
	return out
}

// vanished stops the follower of rel, whose objects are gone from the
// store; the local database stays as it is.
func (d *Dir) vanished(rel string) {
	d.mu.Lock()
	m := d.members[rel]
	d.mu.Unlock()
	if m == nil || m.gone {
		return
	}
	m.cancel()
	<-m.done
	st := m.f.Status()
	d.log.Warn("the database's objects are gone from the store; its follower stopped, the local file is kept at its last position",
		"db", rel, "path", st.DB, "txid", st.TXID.String())
	// Gone in the status once stopped and logged. Only discover, which
	// calls this, reads gone without the lock.
	d.mu.Lock()
	m.gone = true
	d.mu.Unlock()
}

// stopAll stops every follower and waits for them.
func (d *Dir) stopAll() {
	d.mu.Lock()
	ms := make([]*member, 0, len(d.members))
	for _, m := range d.members {
		ms = append(ms, m)
	}
	d.mu.Unlock()
	for _, m := range ms {
		m.cancel()
	}
	for _, m := range ms {
		<-m.done
	}
}

// request counts a listing of the prefix.
func (d *Dir) request(result string) { d.countRequest("list_prefix", result) }

// countRequest counts a request of the directory's own (not a follower's).
func (d *Dir) countRequest(typ, result string) {
	if m := d.opts.Metrics; m != nil {
		m.Requests.WithLabelValues(d.opts.MetricsLabel, typ, result).Inc()
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

// Status is the directory in /status: totals, and the databases furthest
// behind, so that the document stays small with thousands of databases.
type Status struct {
	Role      string `json:"role"` // "follower"
	Dir       string `json:"dir"`
	Replica   string `json:"replica"` // the prefix
	Polling   string `json:"polling"` // PollingEach, PollingIndex or PollingNoIdx
	Databases int    `json:"databases"`
	Following int    `json:"following"` // applying changes (caught up or catching up)
	Starting  int    `json:"starting"`  // bootstrapping or resuming
	Stalled   int    `json:"stalled"`   // cannot advance for now (follower.StateStalled)
	Stopped   int    `json:"stopped"`   // stopped for good (the local file is not a copy any more)
	Gone      int    `json:"gone"`      // objects vanished from the store; follower stopped
	CaughtUp  int    `json:"caught_up"`
	// LagTXIDs is the sum over the databases of the TXIDs they are behind
	// the store's head as they know it; MaxLagSeconds the worst lag.
	LagTXIDs      uint64     `json:"lag_txids"`
	MaxLagSeconds float64    `json:"max_lag_seconds"`
	LastDiscover  *time.Time `json:"last_discover,omitempty"`
	DiscoverError string     `json:"discover_error,omitempty"`
	// Worst lists up to dirstatus.DefaultWorst databases: stopped, then
	// stalled, then starting, then by lag.
	Worst []follower.Status `json:"worst"`
}

// memberStatus is m's follower status, its state "gone" once it is.
func memberStatus(m *member) follower.Status {
	st := m.f.Status()
	if m.gone {
		st.State, st.Ready = StateGone, false
	}
	return st
}

// rank orders states worst first.
func rank(state string) int {
	switch state {
	case follower.StateStopped:
		return 0
	case follower.StateStalled:
		return 1
	case follower.StateStarting, follower.StateBootstrapping:
		return 2
	case StateGone:
		return 4
	}
	return 3
}

// worse orders databases worst first.
func worse(a, b follower.Status) int {
	if c := cmp.Compare(rank(a.State), rank(b.State)); c != 0 {
		return c
	}
	if c := cmp.Compare(b.LagSeconds, a.LagSeconds); c != 0 {
		return c
	}
	if c := cmp.Compare(b.LagTXIDs, a.LagTXIDs); c != 0 {
		return c
	}
	return cmp.Compare(a.Name, b.Name)
}

// Status is the directory's totals and its worst databases.
func (d *Dir) Status() Status {
	d.mu.Lock()
	s := Status{Role: "follower", Dir: d.opts.OutDir, Replica: d.opts.Location, Polling: d.polling, Databases: len(d.members)}
	if d.listed {
		t := d.lastList
		s.LastDiscover = &t
	}
	if d.listErr != nil {
		s.DiscoverError = d.listErr.Error()
	}
	all := make([]follower.Status, 0, len(d.members))
	for _, m := range d.members {
		all = append(all, memberStatus(m))
	}
	d.mu.Unlock()
	for _, st := range all {
		switch st.State {
		case follower.StateFollowing:
			s.Following++
		case follower.StateStalled:
			s.Stalled++
		case follower.StateStopped:
			s.Stopped++
		case StateGone:
			s.Gone++
		default:
			s.Starting++
		}
		if st.State == StateGone {
			continue
		}
		if st.CaughtUp {
			s.CaughtUp++
		}
		s.LagTXIDs += st.LagTXIDs
		s.MaxLagSeconds = max(s.MaxLagSeconds, st.LagSeconds)
	}
	s.Worst = dirstatus.Worst(all, dirstatus.DefaultWorst, worse)
	return s
}

// DB is the status of the database called name (its path relative to the
// directory, or its local path), and whether there is one.
func (d *Dir) DB(name string) (follower.Status, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if m := d.members[name]; m != nil {
		return memberStatus(m), true
	}
	for _, m := range d.members {
		if m.f.Status().DB == name {
			return memberStatus(m), true
		}
	}
	return follower.Status{}, false
}

// Healthy is nil unless listing the prefix has failed for
// DefaultUnhealthyAfter, or a follower is unhealthy (follower.HealthError);
// it names up to dirstatus.DefaultWorst databases and counts the rest. A
// database gone from the store is not unhealthy: its follower was stopped
// on purpose.
func (d *Dir) Healthy() error {
	d.mu.Lock()
	var errs []error
	n := 0
	if d.listErr != nil && time.Since(d.failingSince) >= DefaultUnhealthyAfter {
		errs, n = append(errs, d.listErr), 1
	}
	ms := d.sortedLocked()
	d.mu.Unlock()
	for _, m := range ms {
		if m.gone {
			continue
		}
		if st := m.f.Status(); !st.Healthy {
			if n++; n <= dirstatus.DefaultWorst {
				errs = append(errs, fmt.Errorf("%s: %s", st.Name, st.Error))
			}
		}
	}
	return dirstatus.Unhealthy(errs, n, d.opts.OutDir)
}

// Ready is nil once the prefix was listed and every database found by
// that first listing serves a verified local copy; databases that appear
// later do not make the directory unready while they bootstrap.
func (d *Dir) Ready() error {
	d.mu.Lock()
	if !d.listed {
		err := fmt.Errorf("%s: the prefix %s was not listed yet", d.opts.OutDir, d.opts.Location)
		if d.listErr != nil {
			err = fmt.Errorf("%s: %w", d.opts.OutDir, d.listErr)
		}
		d.mu.Unlock()
		return err
	}
	ms := d.sortedLocked()
	d.mu.Unlock()
	var errs []error
	n := 0
	for _, m := range ms {
		if !m.initial || m.gone {
			continue
		}
		if st := m.f.Status(); !st.Ready {
			if n++; n <= dirstatus.DefaultWorst {
				msg := st.State
				if st.Error != "" {
					msg += ": " + st.Error
				}
				errs = append(errs, fmt.Errorf("%s: %s", st.Name, msg))
			}
		}
	}
	return dirstatus.Unhealthy(errs, n, d.opts.OutDir)
}

// sortedLocked is the members by name.
func (d *Dir) sortedLocked() []*member {
	ms := make([]*member, 0, len(d.members))
	for _, m := range d.members {
		ms = append(ms, m)
	}
	slices.SortFunc(ms, func(a, b *member) int { return cmp.Compare(a.rel, b.rel) })
	return ms
}
