package promote

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/follower"
	"github.com/understudy-db/understudy/internal/dbid"
	"github.com/understudy-db/understudy/internal/sqlitex"
	"github.com/understudy-db/understudy/internal/storage"
	"github.com/understudy-db/understudy/lease"
	"github.com/understudy-db/understudy/primary"
)

// Roles of a node in Status.
const (
	RoleFollower  = "follower"
	RolePromoting = "promoting"
	RolePrimary   = "primary"
	RoleHalted    = "halted"  // app writes held after a demotion (on-demote halt)
	RoleWaiting   = "waiting" // replicate: waiting for the lease another node holds
)

// Defaults of Config.
const (
	// DefaultPromoteTimeout bounds a promotion requested without a timeout.
	DefaultPromoteTimeout = time.Minute
	// DefaultFinalSyncTimeout bounds the last sync when the node stops.
	DefaultFinalSyncTimeout = time.Minute
	// DefaultReleaseTimeout bounds releasing the lease after a demotion,
	// so that an unreachable Consul cannot delay the demotion much.
	DefaultReleaseTimeout = 3 * time.Second
	// claimAttempts bounds how often a promotion catches up again after
	// its claim found the TXID taken (an old primary's upload in flight).
	claimAttempts = 5
)

// ErrExitOnDemote is returned by Run when the node stepped down and its
// on-demote says exit: the process should exit non-zero.
var ErrExitOnDemote = errors.New("stepped down as primary (on-demote: exit)")

// ErrJustPromoted is a primary's refusal to hand over within HandOffGrace of
// its own promotion: the request comes from a rival promotion that lost
// the race, not from an operator's planned hand-off.
var ErrJustPromoted = errors.New("this node became primary moments ago; a simultaneous promotion lost the race")

// HandOffGrace is how long after its promotion a primary refuses to hand
// over (see ErrJustPromoted).
const HandOffGrace = 2 * time.Second

// ErrLostRace is returned by a promotion that found the lease taken by
// another node that promoted at the same time.
var ErrLostRace = errors.New("another node took the lease first")

// Config configures a Node.
type Config struct {
	Name     string      // database name (lease key, requests, logs)
	Node     string      // this node's name
	Lease    lease.Lease // nil: no lease; the node never promotes nor steps down
	OnDemote string      // halt (default), exit, follow
	// OnPromote is a shell command run (in the background) after each
	// promotion, with UNDERSTUDY_DB, UNDERSTUDY_ROLE and
	// UNDERSTUDY_FENCING_TOKEN in its environment.
	OnPromote   string
	AutoPromote bool // follow the lease and race for it when it is free
	// DeadAfter: an auto-promote follower breaks the lease of a holder whose
	// /healthz (at its advertise URL) has not answered healthy for this
	// long (0: wait for Consul to expire the holder's session, which takes
	// up to twice its TTL). The lease TTL is the usual value.
	DeadAfter time.Duration

	Primary  primary.Options // the database as primary; FencingToken is set by the node
	Follower follower.Config // the database as follower
	// Claim are the replicas a promotion claims the next TXID in, the
	// followed one first (it arbitrates races).
	Claim []storage.Client

	// Published, if set, is called with the role on every change (Consul
	// service tags), and with "" when the node stops; errors are logged.
	Published func(ctx context.Context, role string) error

	Logger     hclog.Logger
	HTTPClient *http.Client // for hand-off requests (default: 30 s timeout)
}

// Status is a node's state for /status.
type Status struct {
	Role         string
	Name         string
	Node         string
	FencingToken uint64
	Reason       string // why the role last changed
	Promotions   int    // promotions of this process
	Primary      *primary.Status
	Follower     *follower.Status
	Diverged     string // where a deposed primary's unshipped transactions were saved
	// SafeUntil is the primary's lease deadline (zero unless primary): it
	// stops calling itself primary, and stops writing, at that moment.
	SafeUntil time.Time
}

// Node is one database on this node, as primary or follower.
type Node struct {
	cfg      Config
	log      hclog.Logger
	onDemote OnDemote

	promoteReq chan promoteRequest
	handoffReq chan handoffRequest

	mu     sync.Mutex
	role   string
	reason string
	db     *primary.DB
	fol    *follower.Follower
	promos int
	// claimed is the TXID this node last claimed to take the history over,
	// for the primary it opens next (primary.Options.ClaimedTXID); 0 once used.
	claimed ltx.TXID
	saved   string
	// pending is the reply of a requested promotion, answered once the
	// database ships as primary.
	pending chan error
	publish chan string // newest role to publish (capacity 1)
	// held are connections holding the write lock of databases set aside,
	// kept open for the life of the process.
	held []*sqlitex.Conn
}

type promoteRequest struct {
	force   bool
	timeout time.Duration
	reply   chan error
}

type handoffRequest struct {
	ctx       context.Context
	successor string // the node that asked; "" = whoever takes the lease
	reply     chan handoffResult
}

type handoffResult struct {
	txid ltx.TXID
	err  error
}

// New validates cfg.
func New(cfg Config) (*Node, error) {
	if cfg.Name == "" || cfg.Node == "" {
		return nil, errors.New("promote: database and node names are required")
	}
	od, err := ParseOnDemote(cfg.OnDemote)
	if err != nil {
		return nil, err
	}
	if cfg.AutoPromote && cfg.Lease == nil {
		return nil, fmt.Errorf("database %s: auto-promote needs a lease section", cfg.Name)
	}
	if cfg.Lease != nil && cfg.Follower.Client != nil && len(cfg.Claim) == 0 {
		cfg.Claim = []storage.Client{cfg.Follower.Client}
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	// One write lock passes from role to role (sqlitex.LockSlot): the
	// database takes no write but the primary's at any moment of a
	// promotion or a step-down.
	locks := &sqlitex.LockSlot{}
	cfg.Primary.Locks, cfg.Follower.Locks = locks, locks
	return &Node{
		cfg: cfg, log: cfg.Logger.With("db", cfg.Name), onDemote: od,
		promoteReq: make(chan promoteRequest), handoffReq: make(chan handoffRequest),
		publish: make(chan string, 1),
	}, nil
}

// Name is the database name.
func (n *Node) Name() string { return n.cfg.Name }

// Status returns the node's current state.
func (n *Node) Status() Status {
	n.mu.Lock()
	st := Status{Role: n.role, Name: n.cfg.Name, Node: n.cfg.Node, Reason: n.reason, Promotions: n.promos, Diverged: n.saved}
	db, fol := n.db, n.fol
	n.mu.Unlock()
	if n.cfg.Lease != nil {
		st.FencingToken = n.cfg.Lease.Token()
		// Compared with the clock now, not when the loop last looked
		// (issue 15: a primary woken from SIGSTOP said primary for 4-19 ms).
		if st.Role == RolePrimary {
			st.SafeUntil = n.cfg.Lease.SafeUntil()
			if role := ReportedRole(st.Role, n.cfg.Lease.Safe()); role != st.Role {
				st.Role, st.Reason, st.SafeUntil = role, "the lease's safe window ended; stepping down", time.Time{}
			}
		}
	}
	if db != nil {
		s := db.Status()
		st.Primary = &s
	}
	if fol != nil {
		s := fol.Status()
		st.Follower = &s
	}
	return st
}

// Healthy is nil while the node does its job: a primary ships, a follower
// follows. A halted node is unhealthy (it must not be the writer).
func (n *Node) Healthy() error {
	st := n.Status()
	switch {
	case st.Role == RoleHalted:
		return fmt.Errorf("%s: halted: %s", n.cfg.Name, st.Reason)
	case st.Primary != nil && st.Primary.Fenced:
		return fmt.Errorf("%s: fenced: another writer owns the replica history", n.cfg.Name)
	case st.Follower != nil && !st.Follower.Healthy:
		return fmt.Errorf("%s: follower stopped: %s", n.cfg.Name, st.Follower.Error)
	}
	return nil
}

func (n *Node) setRole(ctx context.Context, role, reason string) {
	n.mu.Lock()
	changed := n.role != role
	n.role, n.reason = role, reason
	n.mu.Unlock()
	if changed {
		n.log.Info("role", "role", role, "reason", reason)
		if role != RolePromoting {
			select {
			case <-n.publish: // replace a role not yet published
			default:
			}
			n.publish <- role
		}
	}
}

// publishLoop publishes the newest role, apart from the role changes
// themselves: a slow or unreachable Consul must never delay a step-down.
func (n *Node) publishLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			// Stopping: withdraw this node's entry rather than leave a
			// stale role behind a failing check.
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			if err := n.cfg.Published(dctx, ""); err != nil {
				n.log.Warn("withdrawing the published role failed", "error", err)
			}
			cancel()
			return
		case role := <-n.publish:
			if err := n.cfg.Published(ctx, role); err != nil && ctx.Err() == nil {
				n.log.Warn("publishing the role failed", "role", role, "error", err)
			}
		}
	}
}

// Run runs the node, starting as primary or follower, until ctx ends (nil)
// or an error it cannot recover from; ErrExitOnDemote after a demotion with
// on-demote exit.
func (n *Node) Run(ctx context.Context, startAsPrimary bool) error {
	if n.cfg.Published != nil {
		pctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); n.publishLoop(pctx) }()
		defer func() { cancel(); <-done }()
	}
	primaryNext, promoted := startAsPrimary, false
	for ctx.Err() == nil {
		var err error
		if primaryNext {
			primaryNext, err = n.runPrimary(ctx, promoted)
			promoted = false
		} else {
			primaryNext, err = n.runFollower(ctx)
			promoted = primaryNext
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// answer replies to a pending promotion request.
func (n *Node) answer(err error) {
	n.mu.Lock()
	reply := n.pending
	n.pending = nil
	n.mu.Unlock()
	if reply != nil {
		reply <- err
	}
}

// holding reports whether this node holds the lease now.
func (n *Node) holding() bool {
	if n.cfg.Lease == nil {
		return false
	}
	select {
	case <-n.cfg.Lease.Lost():
		return false
	default:
		return true
	}
}

// acquire waits for the lease, naming the holder it waits for.
func (n *Node) acquire(ctx context.Context) error {
	l := n.cfg.Lease
	if h, err := l.Holder(ctx); err == nil && h.Held {
		n.log.Info("waiting for the lease: another node is primary", "holder", h.Node, "holder_url", h.AdvertiseURL, "token", h.LockIndex)
		n.setRole(ctx, RoleWaiting, "waiting for the lease held by "+h.Node)
	}
	tok, err := l.Acquire(ctx)
	if err != nil {
		return err
	}
	n.log.Info("lease held: this node is primary", "token", tok)
	return nil
}

// release frees the lease (if held), recording txid for the next holder.
func (n *Node) release(ctx context.Context, txid ltx.TXID) { n.releaseTo(ctx, txid, "") }

// releaseTo frees the lease for successor (a planned hand-off: with a lease
// that can name it, no other node may take the lease meanwhile).
func (n *Node) releaseTo(ctx context.Context, txid ltx.TXID, successor string) {
	if n.cfg.Lease == nil {
		return
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), DefaultReleaseTimeout)
	defer cancel()
	if err := lease.ReleaseTo(rctx, n.cfg.Lease, txid, successor); err != nil {
		n.log.Warn("releasing the lease", "error", err)
	}
}

// runPrimary ships until ctx ends, the lease is lost or the history is
// fenced. It reports whether the node goes on as primary (a hand-off that
// failed resumes) or as follower.
func (n *Node) runPrimary(ctx context.Context, promoted bool) (bool, error) {
	if promoted && !n.holding() {
		err := fmt.Errorf("database %s: the lease was lost right after the promotion", n.cfg.Name)
		n.answer(err)
		n.log.Error("promotion undone", "error", err)
		return false, nil
	}
	if n.cfg.Lease != nil && !n.holding() {
		if err := n.acquire(ctx); err != nil {
			if ctx.Err() != nil {
				return false, nil
			}
			return false, err
		}
	}
	if n.cfg.Lease != nil && !promoted {
		var err error
		if promoted, err = n.takeOverFromStore(ctx); err != nil {
			if ctx.Err() != nil {
				return false, nil
			}
			return false, err
		}
	}
	opts := n.cfg.Primary
	if n.cfg.Lease != nil {
		opts.FencingToken = n.cfg.Lease.Token
		opts.LeaseSafe = n.cfg.Lease.Safe
	}
	n.mu.Lock()
	opts.ClaimedTXID, n.claimed = n.claimed, 0
	n.mu.Unlock()
	db, err := primary.New(opts)
	if err == nil {
		err = db.Open(ctx)
	}
	if err != nil {
		n.release(ctx, 0)
		n.answer(err)
		if ctx.Err() != nil {
			return false, nil
		}
		return false, err
	}
	n.mu.Lock()
	n.db, n.fol = db, nil
	n.mu.Unlock()
	n.setRole(ctx, RolePrimary, "holding the lease")
	since := time.Now()
	n.answer(nil)
	if promoted {
		n.runHook(ctx)
	}

	rctx, stop := context.WithCancel(ctx)
	defer stop()
	runErr := make(chan error, 1)
	go func() { runErr <- db.Run(rctx) }()
	var lost <-chan struct{}
	if n.cfg.Lease != nil {
		lost = n.cfg.Lease.Lost()
	}
	for {
		select {
		case <-ctx.Done():
			<-runErr
			if n.cfg.Lease != nil && !n.holding() {
				// Lost at the same moment: no final upload without the lease.
				n.log.Error("stopping without a final sync: the lease was lost")
				db.Close()
				return false, nil
			}
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), DefaultFinalSyncTimeout)
			err := db.Sync(sctx)
			cancel()
			if err != nil {
				n.log.Error("final sync failed", "error", err)
			} else {
				n.log.Info("all committed transactions shipped")
			}
			txid := db.Status().TXID
			db.Close()
			n.release(ctx, txid)
			return false, err
		case <-lost:
			reason := "the lease was lost (not renewed in time, or taken away)"
			n.log.Error("lease lost: stopping shipping and halting the application's writes", "token", n.cfg.Lease.Token())
			// Say so (Consul tag) before the halt, which waits for the
			// application's transaction in progress.
			n.setRole(ctx, RoleHalted, reason)
			if err := db.Halt(reason); err != nil {
				n.log.Error("could not halt the application's writes", "error", err)
			}
			<-runErr
			return n.demote(ctx, db, reason)
		case err := <-runErr:
			if errors.Is(err, primary.ErrFenced) || errors.Is(err, primary.ErrHalted) {
				n.log.Error("fenced: another writer owns the history; application writes halted", "error", err)
				return n.demote(ctx, db, err.Error())
			}
			// Not a question of who is primary: stop and report, as
			// replicate without a lease does.
			db.Close()
			n.release(ctx, 0)
			return false, err
		case req := <-n.handoffReq:
			if promoted && time.Since(since) < HandOffGrace {
				// A rival promotion asks a node that won the race moments
				// ago: it lost, it is not a planned hand-off.
				req.reply <- handoffResult{err: fmt.Errorf("database %s: promoted %s ago: %w", n.cfg.Name, time.Since(since).Round(time.Millisecond), ErrJustPromoted)}
				continue
			}
			n.log.Info("hand-off requested: holding the application's writes and shipping the rest")
			t0 := time.Now()
			txid, err := db.HandOff(req.ctx)
			if err != nil {
				req.reply <- handoffResult{err: err}
				n.log.Error("hand-off failed; resuming as primary", "error", err)
				stop()
				<-runErr
				db.Close()
				return true, nil
			}
			stop()
			<-runErr
			n.releaseTo(ctx, txid, req.successor)
			n.log.Info("handed over", "final_txid", txid, "successor", req.successor, "writes_held_for", time.Since(t0))
			req.reply <- handoffResult{txid: txid}
			return n.demote(ctx, db, fmt.Sprintf("handed over at TXID %s", txid))
		}
	}
}

// takeOverFromStore runs when replicate starts under a lease: if another
// node wrote the store's newest file (it was primary since this node last
// shipped), the local database is not that history. Unless it equals the
// store's head, a copy of it is saved whole as "<db>.diverged-<time>"
// under its write lock, held for good, and the database is rebuilt in place
// from the store through that lock and the next TXID claimed, as in a
// promotion (follower/inplace.go). It reports whether it did so.
func (n *Node) takeOverFromStore(ctx context.Context) (bool, error) {
	if len(n.cfg.Claim) == 0 {
		return false, nil
	}
	head, err := StoreHead(ctx, n.cfg.Claim[0])
	if err != nil {
		n.release(ctx, 0)
		return false, fmt.Errorf("database %s: reading the store's newest file: %w", n.cfg.Name, err)
	}
	if !WrittenByOther(head, n.cfg.Node) {
		return false, nil
	}
	path := n.cfg.Primary.Path
	if local, _, err := follower.Checksum(ctx, path); err == nil && local == head.Metadata.PostApplyChecksum {
		return false, nil // at the store's head: ship on from here
	}
	// Kept in place: hold the app's writes for good, save a copy, and let
	// the follower rebuild the database in place from the store through
	// that lock, which then passes to the primary (n.cfg.Follower.Locks).
	// The path never goes missing or empty (issue 15).
	if _, err := os.Stat(path); err == nil {
		hold, aside, err := follower.HoldAndSaveCopy(ctx, path, "diverged", time.Now())
		if err == nil {
			n.cfg.Follower.Locks.Put(hold)
			return n.replayInto(ctx, path, aside, head)
		}
		n.log.Warn("cannot keep the database in place; moving it aside", "error", err)
	}
	// Moved aside (a database not in WAL mode, say). Hold the app's writes
	// on the old file for good before moving it: its open connections move
	// with it and must not commit there.
	if _, err := os.Stat(path); err == nil {
		hold, err := sqlitex.Open(ctx, path, sqlitex.Options{})
		if err == nil {
			err = hold.Exec(ctx, "BEGIN IMMEDIATE")
		}
		if err != nil {
			n.release(ctx, 0)
			return false, fmt.Errorf("database %s: holding the application's writes before setting the database aside: %w", n.cfg.Name, err)
		}
		n.mu.Lock()
		n.held = append(n.held, hold) // never closed: see Detach in primary
		n.mu.Unlock()
	}
	aside, err := follower.SetAside(path, "diverged", time.Now())
	if err != nil {
		n.release(ctx, 0)
		return false, fmt.Errorf("database %s: %w", n.cfg.Name, err)
	}
	return n.replayInto(ctx, path, aside, head)
}

// replayInto is takeOverFromStore once the local database is saved as
// aside: it replays the store into the database and claims the next TXID.
func (n *Node) replayInto(ctx context.Context, path, aside string, head *storage.FileInfo) (bool, error) {
	n.moveShadowAside(path, aside)
	if aside != "" {
		n.mu.Lock()
		n.saved = aside
		n.mu.Unlock()
		n.log.Warn("node "+head.Metadata.Node+" was primary since this node last shipped, and the local database is not at the store's head: saved it whole and replaying the store",
			"saved_to", aside, "store_txid", head.MaxTXID)
	}
	f, err := follower.New(n.cfg.Follower)
	if err != nil {
		n.release(ctx, 0)
		return false, err
	}
	if err := n.replayAndClaim(ctx, f, 0); err != nil {
		return false, err
	}
	return true, nil
}

// demote does what on-demote says with a primary whose writes are halted.
func (n *Node) demote(ctx context.Context, db *primary.DB, reason string) (bool, error) {
	n.release(ctx, 0)
	switch n.onDemote {
	case DemoteExit:
		n.setRole(ctx, RoleHalted, reason)
		db.Close()
		return false, fmt.Errorf("database %s: %s: %w", n.cfg.Name, reason, ErrExitOnDemote)
	case DemoteFollow:
		n.rejoin(ctx, db)
		n.setRole(ctx, RoleFollower, "rejoined after stepping down: "+reason)
		return false, nil
	default:
		n.setRole(ctx, RoleHalted, reason)
		n.log.Warn("holding the application's writes until an operator stops this process (on-demote: halt)")
		<-ctx.Done()
		db.Close()
		n.mu.Lock()
		n.db = nil
		n.mu.Unlock()
		return false, nil
	}
}

// rejoin prepares a halted primary's database for following, in place: it
// stays at its path, and the write lock the halted primary holds passes to
// the follower's applier (Detach, Options.Locks), so that the application
// never finds the path missing or an empty file, and never commits on a
// node that is no longer primary (follower/inplace.go). A database at the
// last TXID every replica confirmed is resumed from there. One that holds
// transactions beyond it is saved first, whole, as "<db>.diverged-<time>",
// then rebuilt in place from the store's newest state.
func (n *Node) rejoin(ctx context.Context, db *primary.DB) {
	path := db.Path()
	st := db.Status()
	var confTXID ltx.TXID
	var confSum ltx.Checksum
	for i, r := range st.Replicas {
		if i == 0 || r.TXID < confTXID {
			confTXID, confSum = r.TXID, r.Checksum
		}
	}
	local, _, err := follower.Checksum(ctx, path)
	diverged := err != nil || Diverged(local, confTXID, confSum)
	db.Detach()
	n.mu.Lock()
	n.db = nil
	n.mu.Unlock()
	if !diverged {
		err := follower.ResumeInPlace(ctx, path, confTXID, confSum)
		if err == nil {
			n.clearShadow(path)
			n.log.Info("following the new primary in place: the database holds what the store holds", "txid", confTXID)
			return
		}
		n.log.Warn("cannot resume the database in place; saving it and rebuilding it", "error", err)
	}
	aside, err := follower.SaveCopy(ctx, path, "diverged", time.Now())
	if err == nil {
		err = follower.SetRebuild(ctx, path)
	}
	if err != nil {
		n.log.Error("could not save the database for an in-place rebuild; following will set it aside itself", "error", err)
		return
	}
	n.moveShadowAside(path, aside)
	n.mu.Lock()
	n.saved = aside
	n.mu.Unlock()
	n.log.Warn("this database holds transactions the store lacks: saved a copy before following the new primary, which rebuilds it in place",
		"saved_to", aside, "confirmed_txid", confTXID, "local_checksum", local, "confirmed_checksum", confSum)
}

// shadowDir is the primary's shadow directory of the database at path.
func (n *Node) shadowDir(path string) string {
	if n.cfg.Primary.ShadowDir != "" {
		return n.cfg.Primary.ShadowDir
	}
	return filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+"-understudy")
}

// clearShadow empties the primary's shadow directory of a database that
// follows in place, at a TXID every replica holds, but for the history's
// identity: its files are all in the store, and a later promotion must not
// resume from them.
func (n *Node) clearShadow(path string) {
	dir := n.shadowDir(path)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if e.Name() == dbid.FileName {
			continue
		}
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			n.log.Warn("clearing the shadow directory", "error", err)
		}
	}
}

// moveShadowAside moves the primary's shadow directory beside a database
// set aside: it belongs to the old history, and a later start as primary
// must not resume from (or upload) its files.
func (n *Node) moveShadowAside(path, aside string) {
	if aside == "" {
		return
	}
	if err := os.Rename(n.shadowDir(path), aside+"-understudy"); err != nil && !errors.Is(err, os.ErrNotExist) {
		n.log.Warn("moving the shadow directory aside", "error", err)
	}
}

// runHook runs on-promote in the background.
func (n *Node) runHook(ctx context.Context) {
	if n.cfg.OnPromote == "" {
		return
	}
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", n.cfg.OnPromote)
	tok := uint64(0)
	if n.cfg.Lease != nil {
		tok = n.cfg.Lease.Token()
	}
	cmd.Env = append(os.Environ(), "UNDERSTUDY_DB="+n.cfg.Primary.Path, "UNDERSTUDY_ROLE="+RolePrimary,
		"UNDERSTUDY_FENCING_TOKEN="+strconv.FormatUint(tok, 10), "UNDERSTUDY_NODE="+n.cfg.Node)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	go func() {
		if err := cmd.Run(); err != nil {
			n.log.Error("on-promote hook failed", "command", n.cfg.OnPromote, "error", err)
			return
		}
		n.log.Info("on-promote hook done", "command", n.cfg.OnPromote)
	}()
}
