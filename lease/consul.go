package lease

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"
	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/config"
)

// serfHealthCheck is the agent's own liveness check. Consul attaches it to a
// session by default, but only when the request names no checks at all, so it
// is listed explicitly next to a configured health check.
const serfHealthCheck = "serfHealth"

// consulLease is a lock on the KV key <prefix><db>/primary held through a
// session with Behavior "release". The session is renewed by our own loop (not
// api.Lock, which can return nil, nil, nor RenewPeriodic, which gives up only
// after a whole TTL); a watchdog closes Lost at SafeUntil, and a blocking
// query on the key closes it as soon as the key names another session.
type consulLease struct {
	kv       *api.KV // calls bounded by callTimeout
	sessions *api.Session
	watchKV  *api.KV // blocking queries; its HTTP timeout allows DefaultWatchWait

	key          string
	node, dbName string
	advertiseURL string
	ttl          time.Duration
	lockDelay    time.Duration
	margin       time.Duration
	checks       []string
	clock        Clock
	logger       hclog.Logger

	acquireMu sync.Mutex // serializes TryAcquire and Release

	mu sync.Mutex
	t  *sessionTenure // nil when not held
}

// tenure is one holding of the lease, from acquisition to release.
type sessionTenure struct {
	*tenure
	session string
}

func newConsul(cc *config.ConsulLease, node, advertiseURL, dbName string, logger hclog.Logger, o options) (*consulLease, error) {
	if cc == nil {
		cc = &config.ConsulLease{}
	}
	ttl := cc.TTL
	if ttl == 0 {
		ttl = DefaultTTL
	}
	if ttl < MinTTL || ttl > MaxTTL {
		return nil, fmt.Errorf("lease: consul ttl %s is out of range: Consul accepts %s to %s", ttl, MinTTL, MaxTTL)
	}
	lockDelay := cc.LockDelay
	if lockDelay == 0 {
		lockDelay = DefaultLockDelay
	}
	if lockDelay < time.Millisecond || lockDelay > MaxLockDelay {
		return nil, fmt.Errorf("lease: consul lock-delay %s is out of range: use 1ms to %s (0 means the default %s)", lockDelay, MaxLockDelay, DefaultLockDelay)
	}
	margin := o.margin
	if margin == 0 {
		margin = Margin(ttl)
	}
	if margin <= 0 || RenewInterval(ttl, margin) <= 0 {
		return nil, fmt.Errorf("lease: safety margin %s must be positive and leave room within the ttl %s", margin, ttl)
	}
	prefix := cc.KeyPrefix
	if prefix == "" {
		prefix = DefaultKeyPrefix
	}
	if strings.HasPrefix(prefix, "/") {
		return nil, fmt.Errorf("lease: consul key-prefix %q must not start with '/'", prefix)
	}
	checks := []string(nil) // nil: Consul attaches serfHealth by itself
	if cc.HealthCheck != "" {
		checks = []string{serfHealthCheck, cc.HealthCheck}
	}

	cl, err := newConsulClients(cc, logger, o)
	if err != nil {
		return nil, err
	}
	return &consulLease{
		kv: cl.kv, sessions: cl.sessions, watchKV: cl.watchKV,
		key:  prefix + dbName + "/primary",
		node: node, dbName: dbName, advertiseURL: advertiseURL,
		ttl: ttl, lockDelay: lockDelay, margin: margin, checks: checks,
		clock: o.clock, logger: logger,
	}, nil
}

// consulClients are the Consul API endpoints a lease uses.
type consulClients struct {
	kv, watchKV *api.KV // watchKV: blocking queries
	sessions    *api.Session
	agent       *api.Agent
}

// newConsulClients builds two API clients sharing one transport. The API's
// default HTTP client has no overall timeout, so a call to a black-holed
// agent would hang forever; every call here also carries a context deadline,
// and the HTTP timeouts are the backstop. Address, token and TLS come from
// the config where set, else from the CONSUL_HTTP_* environment.
func newConsulClients(cc *config.ConsulLease, logger hclog.Logger, o options) (consulClients, error) {
	cfg := api.DefaultConfigWithLogger(logger.Named("consul-api"))
	if cc.Address != "" {
		cfg.Address = cc.Address
	}
	if cc.Token != "" {
		cfg.Token = cc.Token
	}
	hc, err := api.NewHttpClient(cfg.Transport, cfg.TLSConfig)
	if err != nil {
		return consulClients{}, fmt.Errorf("lease: consul TLS settings (CONSUL_CACERT, CONSUL_CLIENT_CERT, ...): %w", err)
	}
	hc.Timeout = 2 * DefaultCallTimeout
	if o.requests != nil {
		hc.Transport = countingTransport{hc.Transport, o.requests}
	}
	watchCfg := *cfg
	// Consul adds up to wait/16 of jitter to a blocking query.
	watchCfg.HttpClient = &http.Client{Transport: hc.Transport, Timeout: DefaultWatchWait + DefaultWatchWait/16 + DefaultCallTimeout}
	cfg.HttpClient = hc

	client, err := api.NewClient(cfg)
	if err != nil {
		return consulClients{}, fmt.Errorf("lease: consul client for %q: %w", cfg.Address, err)
	}
	watchClient, err := api.NewClient(&watchCfg)
	if err != nil {
		return consulClients{}, fmt.Errorf("lease: consul client for %q: %w", watchCfg.Address, err)
	}
	return consulClients{kv: client.KV(), watchKV: watchClient.KV(), sessions: client.Session(), agent: client.Agent()}, nil
}

func (c *consulLease) valueJSON(txid ltx.TXID) []byte {
	b, err := json.Marshal(Value{Node: c.node, AdvertiseURL: c.advertiseURL, TXID: txid})
	if err != nil {
		panic(err) // strings and an integer always marshal
	}
	return b
}

// call returns a context for one non-blocking Consul call: the caller's,
// bounded by DefaultCallTimeout.
func call(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, DefaultCallTimeout)
}

// cleanupCtx outlives a cancelled caller: undoing a half-done acquisition
// must happen even when the caller gave up.
func cleanupCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), DefaultCallTimeout)
}

func (c *consulLease) Acquire(ctx context.Context) (uint64, error) {
	for {
		tok, ok, err := c.TryAcquire(ctx)
		if ok {
			return tok, nil
		}
		if ctx.Err() != nil {
			return 0, fmt.Errorf("lease: gave up acquiring %s: %w", c.key, ctx.Err())
		}
		if err != nil {
			c.logger.Warn("acquiring the lease failed; retrying", "key", c.key, "error", err)
			if err := sleepCtx(ctx, time.Second); err != nil {
				return 0, fmt.Errorf("lease: gave up acquiring %s: %w", c.key, err)
			}
			continue
		}
		if err := c.waitFree(ctx); err != nil {
			return 0, fmt.Errorf("lease: gave up acquiring %s: %w", c.key, err)
		}
	}
}

// waitFree returns once the key looks free. A key that is free at the first
// look but could not be taken is under a lock-delay: pause briefly.
func (c *consulLease) waitFree(ctx context.Context) error {
	var index uint64
	for first := true; ; first = false {
		h, err := c.query(ctx, c.watchKV, index, DefaultWatchWait)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			c.logger.Warn("watching the lease failed; retrying", "key", c.key, "error", err)
			if err := sleepCtx(ctx, time.Second); err != nil {
				return err
			}
			index = 0
			continue
		}
		if !h.Held {
			if first {
				return sleepCtx(ctx, max(50*time.Millisecond, min(c.lockDelay/4, time.Second)))
			}
			return nil
		}
		index = nextIndex(index, h.Index)
	}
}

func (c *consulLease) TryAcquire(ctx context.Context) (uint64, bool, error) {
	c.acquireMu.Lock()
	defer c.acquireMu.Unlock()

	c.mu.Lock()
	t := c.t
	held := t != nil && !t.isLost
	c.mu.Unlock()
	if held {
		return t.token, true, nil
	}
	if t != nil {
		// A lost tenure nobody released: clean it up before starting anew.
		if err := c.releaseLocked(ctx, 0); err != nil {
			c.logger.Warn("cleaning up the lost lease", "key", c.key, "error", err)
		}
	}
	if err := ctx.Err(); err != nil {
		return 0, false, err
	}
	if err := c.refuseKVHolder(ctx); err != nil {
		return 0, false, err
	}

	// The session's TTL starts when Consul receives the create request, which
	// is after this moment: the first safe window counts from here.
	sent := c.clock.Now()
	cctx, cancel := call(ctx)
	session, _, err := c.sessions.Create(&api.SessionEntry{
		Name:      fmt.Sprintf("understudy %s primary on %s", c.dbName, c.node),
		Behavior:  api.SessionBehaviorRelease,
		TTL:       c.ttl.String(),
		LockDelay: c.lockDelay,
		Checks:    c.checks,
	}, (&api.WriteOptions{}).WithContext(cctx))
	cancel()
	if err != nil {
		return 0, false, fmt.Errorf("lease: creating a Consul session for %s (is the agent reachable, does the token allow session:write, are the health checks %v registered and passing?): %w", c.key, c.checks, err)
	}

	token, ok, err := c.acquireWith(ctx, session, sent)
	if !ok {
		dctx, cancel := cleanupCtx(ctx)
		if _, derr := c.sessions.Destroy(session, (&api.WriteOptions{}).WithContext(dctx)); derr != nil {
			// Unrenewed, it expires after twice the TTL.
			c.logger.Warn("destroying an unused session failed", "key", c.key, "error", derr)
		}
		cancel()
		return 0, false, err
	}
	return token, true, nil
}

// refuseKVHolder fails when the key is held by a node in mode kv: it
// takes no session lock, so a session's acquire would succeed beside it.
func (c *consulLease) refuseKVHolder(ctx context.Context) error {
	cctx, cancel := call(ctx)
	pair, _, err := c.kv.Get(c.key, (&api.QueryOptions{RequireConsistent: true}).WithContext(cctx))
	cancel()
	if err != nil {
		return fmt.Errorf("lease: reading %s: %w", c.key, err)
	}
	if pair == nil || pair.Session != "" {
		return nil
	}
	if node, held := KVHeldBy(pair.Value); held {
		return fmt.Errorf("lease: %s is held by node %q in mode kv: every node of a database must use the same consul mode (set mode on each; if no node runs in mode kv any more, delete the key)", c.key, node)
	}
	return nil
}

// acquireWith takes the key with session and reads the fencing token back;
// on success the tenure is installed and its loops run.
func (c *consulLease) acquireWith(ctx context.Context, session string, sent time.Time) (uint64, bool, error) {
	cctx, cancel := call(ctx)
	got, _, err := c.kv.Acquire(&api.KVPair{Key: c.key, Value: c.valueJSON(0), Session: session}, (&api.WriteOptions{}).WithContext(cctx))
	cancel()
	if err != nil {
		return 0, false, fmt.Errorf("lease: acquiring %s (does the token allow key:write on it?): %w", c.key, err)
	}
	if !got {
		return 0, false, nil // held by another node, or a lock-delay runs
	}

	// From here on the key is ours; any failure must release it again.
	undo := func(cause error) (uint64, bool, error) {
		rctx, cancel := cleanupCtx(ctx)
		defer cancel()
		if _, _, rerr := c.kv.Release(&api.KVPair{Key: c.key, Value: c.valueJSON(0), Session: session}, (&api.WriteOptions{}).WithContext(rctx)); rerr != nil {
			cause = errors.Join(cause, fmt.Errorf("releasing it again: %w", rerr))
		}
		return 0, false, cause
	}
	cctx, cancel = call(ctx)
	pair, _, err := c.kv.Get(c.key, (&api.QueryOptions{RequireConsistent: true}).WithContext(cctx))
	cancel()
	switch {
	case err != nil:
		return undo(fmt.Errorf("lease: reading the fencing token of %s: %w", c.key, err))
	case pair == nil || pair.Session != session:
		return undo(fmt.Errorf("lease: %s was acquired but a consistent read shows another holder; not using it", c.key))
	}
	safeUntil := SafeUntil(sent, c.ttl, c.margin)
	if IsLost(c.clock.Now(), safeUntil) {
		return undo(fmt.Errorf("lease: acquiring %s took longer than the safe window %s; is Consul overloaded?", c.key, c.ttl-c.margin))
	}

	ctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	t := &sessionTenure{tenure: newTenure(pair.LockIndex, safeUntil, stop, &c.mu, c.clock, c.logger, c.key), session: session}
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
	t.done.Add(3)
	go func() { defer t.done.Done(); c.renewLoop(ctx, t) }()
	go func() { defer t.done.Done(); t.watchdog(ctx, deadlineMissed) }()
	go func() { defer t.done.Done(); c.watchKey(ctx, t) }()
	c.logger.Info("lease acquired", "key", c.key, "node", c.node, "token", t.token, "ttl", c.ttl, "safe_window", c.ttl-c.margin)
	return t.token, true, nil
}

func (c *consulLease) Release(ctx context.Context, txid ltx.TXID) error {
	c.acquireMu.Lock()
	defer c.acquireMu.Unlock()
	return c.releaseLocked(ctx, txid)
}

// releaseLocked ends the tenure: Lost closes first (so the holder's own
// signal always precedes anyone else's chance), then the key is released with
// the final value and the session destroyed.
func (c *consulLease) releaseLocked(ctx context.Context, txid ltx.TXID) error {
	c.mu.Lock()
	t := c.t
	c.t = nil
	c.mu.Unlock()
	if t == nil {
		return nil
	}
	t.stop()
	t.done.Wait()
	t.markLost("released")

	var errs []error
	rctx, cancel := call(ctx)
	defer cancel()
	wo := (&api.WriteOptions{}).WithContext(rctx)
	// Consul refuses (false, no error) a release by a session that no longer
	// holds the key, leaving the new holder's value alone.
	released, _, err := c.kv.Release(&api.KVPair{Key: c.key, Value: c.valueJSON(txid), Session: t.session}, wo)
	if err != nil {
		errs = append(errs, fmt.Errorf("releasing %s: %w", c.key, err))
	}
	if _, err := c.sessions.Destroy(t.session, wo); err != nil {
		errs = append(errs, fmt.Errorf("destroying session %s (it expires by itself after twice the ttl): %w", t.session, err))
	}
	if len(errs) > 0 {
		return fmt.Errorf("lease: release: %w", errors.Join(errs...))
	}
	if !released {
		c.logger.Info("lease ended; the key was no longer held by this node", "key", c.key, "token", t.token)
		return nil
	}
	c.logger.Info("lease released", "key", c.key, "token", t.token, "txid", txid)
	return nil
}

// Break destroys the current holder's session; Behavior "release" frees the
// key and the lock-delay keeps it free for a moment.
func (c *consulLease) Break(ctx context.Context) (Holder, error) {
	h, err := c.Holder(ctx)
	if err != nil {
		return Holder{}, err
	}
	if !h.Held {
		return h, nil
	}
	cctx, cancel := call(ctx)
	defer cancel()
	if _, err := c.sessions.Destroy(h.Session, (&api.WriteOptions{}).WithContext(cctx)); err != nil {
		return h, fmt.Errorf("lease: destroying session %s of %q holding %s: %w", h.Session, h.Node, c.key, err)
	}
	c.logger.Warn("lease broken: destroyed the holder's session", "key", c.key, "holder", h.Node, "token", h.LockIndex, "session", h.Session)
	return h, nil
}

func (c *consulLease) Holder(ctx context.Context) (Holder, error) {
	cctx, cancel := call(ctx)
	defer cancel()
	pair, meta, err := c.kv.Get(c.key, (&api.QueryOptions{RequireConsistent: true}).WithContext(cctx))
	if err != nil {
		return Holder{}, fmt.Errorf("lease: reading %s: %w", c.key, err)
	}
	return c.holder(pair, meta)
}

func (c *consulLease) Watch(ctx context.Context, index uint64) (Holder, error) {
	for {
		h, err := c.query(ctx, c.watchKV, index, DefaultWatchWait)
		if err != nil || h.Index != index {
			return h, err
		}
	}
}

// query is one (blocking, for index > 0) read of the key.
func (c *consulLease) query(ctx context.Context, kv *api.KV, index uint64, wait time.Duration) (Holder, error) {
	pair, meta, err := kv.Get(c.key, (&api.QueryOptions{WaitIndex: index, WaitTime: wait}).WithContext(ctx))
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return Holder{}, fmt.Errorf("lease: watching %s: %w", c.key, err)
	}
	return c.holder(pair, meta)
}

func (c *consulLease) holder(pair *api.KVPair, meta *api.QueryMeta) (Holder, error) {
	h := Holder{Index: max(meta.LastIndex, 1)} // Consul: never block on index 0
	if pair == nil {
		return h, nil
	}
	h.Held = pair.Session != ""
	h.Session = pair.Session
	h.LockIndex = pair.LockIndex
	if len(pair.Value) > 0 {
		if err := json.Unmarshal(pair.Value, &h.Value); err != nil {
			return h, fmt.Errorf("lease: %s holds %q, not a lease value (another tool writes this key? change lease key-prefix): %w", c.key, pair.Value, err)
		}
	}
	return h, nil
}

// nextIndex is the index for the next blocking query: Consul's indexes can go
// backwards (snapshot restore, leader change), and then the watch restarts.
func nextIndex(prev, got uint64) uint64 {
	if got < prev {
		return 0
	}
	return got
}

func (c *consulLease) Lost() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.t == nil {
		return closedChan
	}
	return c.t.lost
}

func (c *consulLease) Safe() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t != nil && c.t.safeLocked()
}

func (c *consulLease) SafeUntil() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.t == nil {
		return time.Time{}
	}
	return c.t.safeUntil
}

func (c *consulLease) Token() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.t == nil {
		return 0
	}
	return c.t.token
}

// countingTransport counts the requests it sends (WithRequestCount).
type countingTransport struct {
	next http.RoundTripper
	n    *atomic.Uint64
}

func (t countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	t.n.Add(1)
	return t.next.RoundTrip(r)
}
