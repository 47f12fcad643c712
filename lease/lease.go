// Package lease decides which node may be primary for a database. A Lease is
// held by at most one node at a time; while it holds the lease a node may ship
// to the store and accept app writes, and every object it writes carries the
// lease's fencing token. Implementations: Consul in mode session (a session
// lock; the default), Consul in mode kv (check-and-set renewals that the
// challengers watch; failover in about the ttl, see consulkv.go for its
// safety argument) and static (the config names the primary; no election).
//
// A primary's loop: tok, err := l.Acquire(ctx); write tok into every object's
// metadata; when <-l.Lost() fires, stop shipping and halt app writes at once,
// then call Release (which frees the key sooner than letting it expire).
// Lost fires before Consul could give the lease to anyone else: at SafeUntil
// of the last successful renewal, or as soon as the key names another session.
package lease

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/config"
)

// Lease types accepted in the config's lease.type.
const (
	TypeConsul = "consul"
	TypeStatic = "static"

	// Modes of the consul lease (lease.consul.mode): a session lock (the
	// default) or check-and-set writes of a KV key (see consulkv.go).
	ModeSession = config.ConsulModeSession
	ModeKV      = config.ConsulModeKV

	// DefaultType is used when lease.type is empty.
	DefaultType = config.DefaultLeaseType
)

// ErrNotStaticPrimary is returned by a static lease's TryAcquire on a node
// that the config does not name as the primary.
var ErrNotStaticPrimary = errors.New("this node is not the configured static primary")

// ErrBreakUnsupported is returned by Break for a lease that cannot be broken
// (static: the config, not a lock, decides who is primary).
var ErrBreakUnsupported = errors.New("this lease type cannot be broken")

// Value is what the holder publishes with the lease: who it is, where its
// status endpoint answers, and the last TXID it recorded (0 while it holds the
// lease; its final TXID once it released the lease in a planned handoff).
type Value struct {
	Node         string   `json:"node"`
	AdvertiseURL string   `json:"advertise_url"`
	TXID         ltx.TXID `json:"txid"`
}

// Holder is the state of the lease as the lease store sees it.
type Holder struct {
	Value // as last written: by the current holder, or by the last one at release

	Held      bool   // some node holds the lease now
	Session   string // the holder's session ID (Consul; kv:<node>:<token> in mode kv); "" when free or static
	Successor string // mode kv, planned hand-off: the only node that may take the lease now
	LockIndex uint64 // fencing token of the current holder, or of the last one when free
	Index     uint64 // change index to pass to Watch
}

// Lease is one database's primary lease as seen from one node. Methods are
// safe for concurrent use.
type Lease interface {
	// Acquire blocks until this node holds the lease or ctx is done, then
	// returns the fencing token. It starts renewing the lease in the
	// background. Acquire on a node that already holds it returns its token.
	Acquire(ctx context.Context) (uint64, error)

	// TryAcquire makes one attempt; ok is false when another node holds the
	// lease (or a lock-delay is still running).
	TryAcquire(ctx context.Context) (token uint64, ok bool, err error)

	// Release stops renewing and frees the lease, recording txid (the last TXID
	// this node shipped) in the value for the next holder. It is a no-op when
	// the lease is not held; after a loss it still cleans up what it can.
	// Its calls use ctx: a cancelled ctx leaves the key to expire by itself.
	Release(ctx context.Context, txid ltx.TXID) error

	// Holder reads the current holder with a consistent read.
	Holder(ctx context.Context) (Holder, error)

	// Watch blocks until the lease state changes after index (0 returns at
	// once) or ctx is done, and returns the new state; pass Holder.Index on.
	Watch(ctx context.Context, index uint64) (Holder, error)

	// Lost returns a channel that is closed when this node must treat the lease
	// as lost: it may no longer ship or accept writes. The channel belongs to
	// the current tenure; it is already closed when the lease is not held.
	Lost() <-chan struct{}

	// Safe reports whether this node may act on the lease at this very
	// moment: it holds the lease and its step-down deadline is still ahead
	// on the lease's clock. It reads the clock when called, so it never
	// answers true past the deadline, however late the renew loop and the
	// watchdog run (a process woken from SIGSTOP answers requests before
	// they notice); a loss it finds ends the tenure at once, as theirs do.
	// Every "may this node act as primary now" decision asks it.
	Safe() bool

	// SafeUntil is the current tenure's step-down deadline (zero when the
	// lease is not held; far in the future for a lease without one).
	SafeUntil() time.Time

	// Token is the fencing token of the current tenure (kept after a loss,
	// until Release, so that logs can name it), 0 when there is none.
	Token() uint64
}

// Breaker is implemented by leases whose current holder can be forcibly
// deposed (promote -force).
type Breaker interface {
	// Break destroys the current holder's claim and returns who held it.
	Break(ctx context.Context) (Holder, error)
}

// Break deposes the current holder of l (for promote -force). The deposed
// holder notices at its next renewal; a lock-delay then keeps the lease free
// for a moment before anyone may take it.
func Break(ctx context.Context, l Lease) (Holder, error) {
	b, ok := l.(Breaker)
	if !ok {
		return Holder{}, ErrBreakUnsupported
	}
	return b.Break(ctx)
}

// HandOffer is implemented by leases whose release can name the next
// holder (mode kv): until that node takes the lease, no other may.
type HandOffer interface {
	ReleaseTo(ctx context.Context, txid ltx.TXID, successor string) error
}

// ReleaseTo releases l for a planned hand-off to successor; a lease that
// cannot name one (or an empty successor) is released as by Release.
func ReleaseTo(ctx context.Context, l Lease, txid ltx.TXID, successor string) error {
	if h, ok := l.(HandOffer); ok && successor != "" {
		return h.ReleaseTo(ctx, txid, successor)
	}
	return l.Release(ctx, txid)
}

// NodeName is the node name l writes into the lease ("" when l does not
// say): what a planned hand-off names as the successor.
func NodeName(l Lease) string {
	if n, ok := l.(interface{ NodeName() string }); ok {
		return n.NodeName()
	}
	return ""
}

// Option adjusts a lease built by New; for tests and embedding.
type Option func(*options)

type options struct {
	clock    Clock
	margin   time.Duration
	requests *atomic.Uint64
}

// WithRequestCount adds one to n for each HTTP request the lease sends to
// Consul (renewals, reads, watches, sessions, health checks): the lease's
// cost, reported per directory of databases. Not counted when the Consul
// address is a unix socket.
func WithRequestCount(n *atomic.Uint64) Option { return func(o *options) { o.requests = n } }

// WithClock makes the lease read time (for the step-down deadline) from c.
func WithClock(c Clock) Option { return func(o *options) { o.clock = c } }

// WithMargin overrides the safety margin subtracted from the TTL (see
// SafeUntil); it must leave a positive window.
func WithMargin(d time.Duration) Option { return func(o *options) { o.margin = d } }

// New builds the lease for database dbName described by cfg, validating it.
// dbName names the database in the lease key <prefix><dbName>/primary: the
// entry's name for a path: entry, and "<entry name>/<path relative to the
// directory>" for a database of a dir: entry (tenants/eu/a.db). Entry
// names hold no '/' (the config refuses one), so the keys of two
// databases never coincide.
func New(cfg *config.Lease, dbName string, logger hclog.Logger, opts ...Option) (Lease, error) {
	if cfg == nil {
		return nil, errors.New("lease: no lease section configured for this database")
	}
	if !validName(dbName) {
		return nil, fmt.Errorf("lease: database name %q must be non-empty, a name or name/relative/path without empty, '.' or '..' parts", dbName)
	}
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	o := options{clock: RealClock{}}
	for _, opt := range opts {
		opt(&o)
	}
	node, err := nodeName(cfg.Node)
	if err != nil {
		return nil, err
	}
	if cfg.AdvertiseURL != "" {
		u, err := url.Parse(cfg.AdvertiseURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("lease: advertise-url %q must be an absolute http(s) URL of this node's status endpoint", cfg.AdvertiseURL)
		}
	}
	typ := cfg.Type
	if typ == "" {
		typ = DefaultType
	}
	switch typ {
	case TypeStatic:
		if cfg.StaticPrimary == "" {
			return nil, errors.New("lease: type static needs the primary's node name (lease static-primary)")
		}
		return newStatic(node, cfg.StaticPrimary, cfg.AdvertiseURL, logger.Named("lease")), nil
	case TypeConsul:
		cc := cfg.Consul
		if cc == nil {
			cc = &config.ConsulLease{}
		}
		mode := cc.Mode
		if mode == "" {
			mode = config.DefaultConsulMode
		}
		switch mode {
		case ModeSession:
			return newConsul(cc, node, cfg.AdvertiseURL, dbName, logger.Named("lease"), o)
		case ModeKV:
			return newConsulKV(cc, node, cfg.AdvertiseURL, dbName, logger.Named("lease"), o)
		default:
			return nil, fmt.Errorf("lease: unknown consul mode %q: use %q or %q", cc.Mode, ModeSession, ModeKV)
		}
	default:
		return nil, fmt.Errorf("lease: unknown type %q: use %q or %q", cfg.Type, TypeConsul, TypeStatic)
	}
}

// nodeName is the configured node name, or the host name when none is set.
func nodeName(configured string) (string, error) {
	if configured != "" {
		return configured, nil
	}
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "", fmt.Errorf("lease: no node name configured and the host name is unavailable (%v): set lease node", err)
	}
	return h, nil
}

// closedChan is returned by Lost when the lease is not held.
var closedChan = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

// validName tells whether dbName can go into a lease key: slash-separated
// parts, none empty, "." or "..".
func validName(dbName string) bool {
	if dbName == "" {
		return false
	}
	for _, part := range strings.Split(dbName, "/") {
		if part == "" || part == "." || part == ".." {
			return false
		}
	}
	return true
}
