package lease

// The KV lease (lease.consul.mode kv): one Consul KV key per database,
// <prefix><db>/primary, holding a KVRecord. It is written only by
// check-and-set on the ModifyIndex the writer last read, in a transaction
// that returns the new ModifyIndex.
//
// Safety argument. Let the holder H send a renewal at t_s on its monotonic
// clock and let it succeed: the write committed at some real moment after
// t_s, with ModifyIndex m. H stops acting as primary at t_s + ttl - margin
// (KVSafeUntil) on its own clock, unless a later renewal succeeds. A
// challenger C can see m only after it committed, so C's first sight of m
// (FirstSeen, on C's clock) is later than t_s in real time. C writes
// itself in only with a check-and-set on m, and only once it has seen m
// unchanged for ttl + drift on its own clock (KVMayTakeOver). If H's next
// renewal succeeded, C's write fails (m is gone); if C's succeeded, H's
// renewals fail and H steps down at its deadline for m. So H's deadline
// precedes C's takeover by at least margin + drift = 0.35 ttl (700ms at the
// default 2s) of real time, provided that:
//   - the two monotonic clocks run at rates within 0.35 ttl per ttl of each
//     other (35%; NTP-slewed or free-running clocks differ by < 0.1%);
//   - H's decisions to act (accept a write, upload) compare the deadline
//     with the clock at the moment they act, and H is never paused between
//     that comparison and the act for longer than margin + drift: a longer
//     pause (SIGSTOP, a frozen VM) can let one stale act through, and the
//     store's create-only claim of TXID head+1 is the guard that fences it;
//   - H's monotonic clock runs while H's process exists: a suspended VM
//     whose CLOCK_MONOTONIC stops while real time passes breaks the first
//     assumption (and is fenced by the store claim only).
// Consul itself only has to order the check-and-set writes (Raft does);
// nobody relies on its clock. While Consul has no leader every write fails:
// H steps down at its deadline and no challenger can write itself in.
//
// A planned hand-off writes state handoff naming the successor: that node
// may take the lease at once; any other waits as for a dead holder, so it
// takes over only if the successor never does.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"
	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/config"
)

// kvLease is the KV check-and-set lease; see the comment at the top.
type kvLease struct {
	kv      *api.KV // calls bounded by DefaultCallTimeout
	watchKV *api.KV // blocking queries
	agent   *api.Agent
	// healthCheck is the ID of a check of the local Consul agent (the
	// application's) that must not be critical for this node to take or
	// keep the lease ("": none); see consulkv_health.go.
	healthCheck string

	key, node, dbName string
	advertiseURL      string
	ttl               time.Duration
	clock             Clock
	logger            hclog.Logger

	acquireMu sync.Mutex // serializes TryAcquire, Release and Break

	mu    sync.Mutex
	t     *kvTenure // nil when not held
	obs   KVObservation
	views map[uint64]Holder // states Watch returned, by index (bounded)
}

// kvTenure is one holding of the KV lease.
type kvTenure struct {
	*tenure

	// Guarded by kvLease.mu.
	index    uint64 // ModifyIndex of this tenure's last write
	renewals uint64
}

// maxViews bounds kvLease.views: callers pass back one of the last few.
const maxViews = 16

func newConsulKV(cc *config.ConsulLease, node, advertiseURL, dbName string, logger hclog.Logger, o options) (*kvLease, error) {
	ttl := cc.TTL
	if ttl == 0 {
		ttl = DefaultKVTTL
	}
	if ttl < MinKVTTL || ttl > MaxKVTTL {
		return nil, fmt.Errorf("lease: consul ttl %s is out of range for mode kv: use %s to %s", ttl, MinKVTTL, MaxKVTTL)
	}
	if o.margin != 0 {
		return nil, errors.New("lease: mode kv derives its margin from the ttl (ttl/4); WithMargin is for mode session")
	}
	prefix := cc.KeyPrefix
	if prefix == "" {
		prefix = DefaultKeyPrefix
	}
	if strings.HasPrefix(prefix, "/") {
		return nil, fmt.Errorf("lease: consul key-prefix %q must not start with '/'", prefix)
	}
	cl, err := newConsulClients(cc, logger, o)
	if err != nil {
		return nil, err
	}
	return &kvLease{
		kv: cl.kv, watchKV: cl.watchKV, agent: cl.agent, healthCheck: cc.HealthCheck,
		key:  prefix + dbName + "/primary",
		node: node, dbName: dbName, advertiseURL: advertiseURL,
		ttl: ttl, clock: o.clock, logger: logger,
		views: make(map[uint64]Holder),
	}, nil
}

func (c *kvLease) record(state string, token, renewals uint64, txid ltx.TXID, successor string) []byte {
	b, err := json.Marshal(KVRecord{
		Value: Value{Node: c.node, AdvertiseURL: c.advertiseURL, TXID: txid},
		Token: token, Renewals: renewals, TTLMillis: c.ttl.Milliseconds(), State: state, Successor: successor,
	})
	if err != nil {
		panic(err) // strings and integers always marshal
	}
	return b
}

// cas writes value if the key's ModifyIndex is still index (0: the key must
// not exist) and returns the new ModifyIndex; ok is false when the key
// changed meanwhile.
func (c *kvLease) cas(ctx context.Context, index uint64, value []byte, timeout time.Duration) (uint64, bool, error) {
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	ok, resp, _, err := c.kv.Txn(api.KVTxnOps{{Verb: api.KVCAS, Key: c.key, Value: value, Index: index}},
		(&api.QueryOptions{}).WithContext(cctx))
	if err != nil {
		return 0, false, fmt.Errorf("lease: check-and-set of %s (is Consul reachable and has it a leader? does the token allow key:write?): %w", c.key, err)
	}
	if !ok {
		return 0, false, nil
	}
	if resp == nil || len(resp.Results) != 1 || resp.Results[0] == nil {
		return 0, false, fmt.Errorf("lease: check-and-set of %s: Consul's answer lacks the written entry", c.key)
	}
	return resp.Results[0].ModifyIndex, true, nil
}

// read is one read of the key (consistent, or blocking from index) and the
// observation it makes.
func (c *kvLease) read(ctx context.Context, kv *api.KV, q *api.QueryOptions) (KVObservation, uint64, error) {
	pair, meta, err := kv.Get(c.key, q.WithContext(ctx))
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return KVObservation{}, 0, fmt.Errorf("lease: reading %s: %w", c.key, err)
	}
	obs, err := c.observe(pair)
	return obs, max(meta.LastIndex, 1), err // Consul: never block on index 0
}

// observe records what a read returned; FirstSeen moves only when the
// ModifyIndex differs from the one seen before.
func (c *kvLease) observe(pair *api.KVPair) (KVObservation, error) {
	now := c.clock.Now()
	obs := KVObservation{FirstSeen: now}
	if pair != nil {
		obs.Exists, obs.Session, obs.LockIndex, obs.Index = true, pair.Session, pair.LockIndex, pair.ModifyIndex
		if len(pair.Value) > 0 {
			if err := json.Unmarshal(pair.Value, &obs.Record); err != nil {
				return obs, fmt.Errorf("lease: %s holds %q, not a lease value (another tool writes this key? change lease key-prefix): %w", c.key, pair.Value, err)
			}
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.obs.Exists == obs.Exists && c.obs.Index == obs.Index && c.obs.Session == obs.Session {
		obs.FirstSeen = c.obs.FirstSeen
	}
	c.obs = obs
	return obs, nil
}

// holder is the lease as this node judges it from obs at now: a key whose
// holder stopped renewing reads as free once this node may take it over.
func (c *kvLease) holder(obs KVObservation, index uint64, now time.Time) Holder {
	h := Holder{Index: index}
	if !obs.Exists {
		return h
	}
	h.Value, h.LockIndex = obs.Record.Value, obs.Record.Token
	if obs.Session != "" {
		h.Held, h.Session, h.LockIndex = true, obs.Session, obs.LockIndex
		return h
	}
	switch obs.Record.State {
	case kvReleased, "":
		return h
	case kvHandOff:
		h.Successor = obs.Record.Successor
	}
	if c.ownsTenure(obs) {
		h.Held, h.Session = true, kvSessionID(obs.Record)
		return h
	}
	if ok, _ := KVMayTakeOver(obs, c.node, now, c.ttl); !ok {
		// A stable name for this tenure, so that callers comparing
		// Session notice a new holder.
		h.Held, h.Session = true, kvSessionID(obs.Record)
	}
	return h
}

// kvSessionID names a KV tenure where a session lease gives its session.
func kvSessionID(r KVRecord) string { return fmt.Sprintf("kv:%s:%d", r.Node, r.Token) }

func (c *kvLease) ownsTenure(obs KVObservation) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t != nil && !c.t.isLost && obs.Record.State == kvHeld && obs.Record.Node == c.node && obs.Record.Token == c.t.token
}

func (c *kvLease) Holder(ctx context.Context) (Holder, error) {
	cctx, cancel := call(ctx)
	defer cancel()
	obs, index, err := c.read(cctx, c.kv, &api.QueryOptions{RequireConsistent: true})
	if err != nil {
		return Holder{}, err
	}
	return c.holder(obs, index, c.clock.Now()), nil
}

// Watch returns when the lease as this node judges it changes: a new holder
// or token, a release or hand-off, or a holder that stopped renewing for
// long enough (renewals alone are no change).
func (c *kvLease) Watch(ctx context.Context, index uint64) (Holder, error) {
	c.mu.Lock()
	base, known := c.views[index]
	c.mu.Unlock()
	if index == 0 || !known {
		h, err := c.Holder(ctx)
		if err == nil {
			c.remember(h)
		}
		return h, err
	}
	for {
		wait := DefaultWatchWait
		c.mu.Lock()
		obs := c.obs
		c.mu.Unlock()
		if ok, d := KVMayTakeOver(obs, c.node, c.clock.Now(), c.ttl); !ok && d > 0 {
			wait = min(wait, d)
		}
		obs, idx, err := c.read(ctx, c.watchKV, &api.QueryOptions{WaitIndex: index, WaitTime: wait})
		if err != nil {
			return Holder{}, err
		}
		h := c.holder(obs, idx, c.clock.Now())
		if !sameHolder(h, base) {
			c.remember(h)
			return h, nil
		}
		index = nextIndex(index, idx)
	}
}

func sameHolder(a, b Holder) bool {
	a.Index, b.Index = 0, 0
	return a == b
}

func (c *kvLease) remember(h Holder) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.views) >= maxViews {
		clear(c.views)
	}
	c.views[h.Index] = h
}

func (c *kvLease) Acquire(ctx context.Context) (uint64, error) {
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
			if err := sleepCtx(ctx, KVRetryInterval(c.ttl)); err != nil {
				return 0, fmt.Errorf("lease: gave up acquiring %s: %w", c.key, err)
			}
			continue
		}
		if err := c.waitChance(ctx); err != nil {
			return 0, fmt.Errorf("lease: gave up acquiring %s: %w", c.key, err)
		}
	}
}

// waitChance returns once this node may try again: the key changed, or its
// holder stopped renewing long enough.
func (c *kvLease) waitChance(ctx context.Context) error {
	h, err := c.Holder(ctx)
	if err == nil && h.Held {
		c.remember(h)
		_, err = c.Watch(ctx, h.Index)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err != nil || !h.Held {
		// Lost a race for a free key, or Consul answers errors: pause.
		return sleepCtx(ctx, KVRetryInterval(c.ttl))
	}
	return nil
}

// sleepCtx waits d of real time or until ctx ends. Both leases use it for
// retry pauses and lock-delays, which are politeness delays, never safety
// deadlines (those go through the injected clock).
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func (c *kvLease) TryAcquire(ctx context.Context) (uint64, bool, error) {
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
		if err := c.releaseLocked(ctx, 0, ""); err != nil {
			c.logger.Warn("cleaning up the lost lease", "key", c.key, "error", err)
		}
	}
	if err := c.checkHealth(ctx, DefaultCallTimeout); err != nil {
		return 0, false, err
	}
	cctx, cancel := call(ctx)
	obs, _, err := c.read(cctx, c.kv, &api.QueryOptions{RequireConsistent: true})
	cancel()
	if err != nil {
		return 0, false, err
	}
	if ok, _ := KVMayTakeOver(obs, c.node, c.clock.Now(), c.ttl); !ok {
		return 0, false, nil
	}
	token := KVNextToken(obs)
	// The safe window counts from before the write was sent: it committed
	// after this moment, so every challenger saw it after this moment.
	sent := c.clock.Now()
	index, ok, err := c.cas(ctx, obs.Index, c.record(kvHeld, token, 0, 0, ""), DefaultCallTimeout)
	if err != nil || !ok {
		return 0, false, err // !ok: another node wrote first
	}
	safeUntil := KVSafeUntil(sent, c.ttl)
	if IsLost(c.clock.Now(), safeUntil) {
		// Too slow to be of use; give it back so that nobody waits for it.
		if _, _, rerr := c.cas(context.WithoutCancel(ctx), index, c.record(kvReleased, token, 0, 0, ""), DefaultCallTimeout); rerr != nil {
			c.logger.Warn("giving back a lease taken too slowly", "key", c.key, "error", rerr)
		}
		return 0, false, fmt.Errorf("lease: taking %s took longer than the safe window %s; is Consul overloaded?", c.key, c.ttl-KVMargin(c.ttl))
	}
	lctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	t = &kvTenure{tenure: newTenure(token, safeUntil, stop, &c.mu, c.clock, c.logger, c.key), index: index}
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
	t.done.Add(2)
	go func() { defer t.done.Done(); c.renewLoop(lctx, t) }()
	go func() { defer t.done.Done(); t.watchdog(lctx, deadlineMissed) }()
	c.logger.Info("lease acquired", "key", c.key, "node", c.node, "token", token, "mode", "kv", "ttl", c.ttl,
		"safe_window", c.ttl-KVMargin(c.ttl), "previous", obs.Record.Node)
	return token, true, nil
}

func (c *kvLease) Release(ctx context.Context, txid ltx.TXID) error {
	c.acquireMu.Lock()
	defer c.acquireMu.Unlock()
	return c.releaseLocked(ctx, txid, "")
}

// ReleaseTo hands the lease to successor: only that node may take it at
// once; any other must wait as for a holder that died.
func (c *kvLease) ReleaseTo(ctx context.Context, txid ltx.TXID, successor string) error {
	c.acquireMu.Lock()
	defer c.acquireMu.Unlock()
	return c.releaseLocked(ctx, txid, successor)
}

// releaseLocked ends the tenure: Lost closes first, then the key records
// the release (or the hand-off) with the final TXID, if it is still ours.
func (c *kvLease) releaseLocked(ctx context.Context, txid ltx.TXID, successor string) error {
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
	state := kvReleased
	if successor != "" {
		state = kvHandOff
	}
	c.mu.Lock()
	index, renewals := t.index, t.renewals
	c.mu.Unlock()
	_, ok, err := c.casOwn(ctx, t, index, c.record(state, t.token, renewals, txid, successor), DefaultCallTimeout)
	if err != nil {
		return fmt.Errorf("lease: release: %w", err)
	}
	if !ok {
		c.logger.Info("lease ended; the key was no longer held by this node", "key", c.key, "token", t.token)
		return nil
	}
	c.logger.Info("lease released", "key", c.key, "token", t.token, "txid", txid, "successor", successor)
	return nil
}

// casOwn writes value over this tenure's last write. A renewal whose answer
// was lost may have committed: when the key still shows this tenure, the
// write is tried once more on its current index. ok is false when the key
// belongs to another tenure.
func (c *kvLease) casOwn(ctx context.Context, t *kvTenure, index uint64, value []byte, timeout time.Duration) (uint64, bool, error) {
	next, ok, err := c.cas(ctx, index, value, timeout)
	if err != nil || ok {
		return next, ok, err
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	obs, _, err := c.read(cctx, c.kv, &api.QueryOptions{RequireConsistent: true})
	cancel()
	if err != nil {
		return 0, false, err
	}
	if !obs.Exists || obs.Session != "" || obs.Record.State != kvHeld || obs.Record.Node != c.node || obs.Record.Token != t.token {
		return 0, false, nil
	}
	return c.cas(ctx, obs.Index, value, timeout)
}

// Break marks the holder deposed (promote -force): its next renewal fails
// and it steps down; others may take the lease once they have seen the
// broken key unchanged for KVTakeOverAfter, by when the deposed holder's
// safe window is over.
func (c *kvLease) Break(ctx context.Context) (Holder, error) {
	c.acquireMu.Lock()
	defer c.acquireMu.Unlock()
	cctx, cancel := call(ctx)
	obs, index, err := c.read(cctx, c.kv, &api.QueryOptions{RequireConsistent: true})
	cancel()
	if err != nil {
		return Holder{}, err
	}
	h := c.holder(obs, index, c.clock.Now())
	switch {
	case !obs.Exists || obs.Record.State == kvReleased || obs.Record.State == "" && obs.Session == "":
		return h, nil
	case obs.Session != "":
		return h, fmt.Errorf("lease: %s is held by a session (a node in mode session): %w", c.key, ErrBreakUnsupported)
	}
	rec := obs.Record
	rec.State = kvBroken
	b, _ := json.Marshal(rec)
	if _, ok, err := c.cas(ctx, obs.Index, b, DefaultCallTimeout); err != nil {
		return h, fmt.Errorf("lease: breaking %s held by %q: %w", c.key, rec.Node, err)
	} else if !ok {
		return h, fmt.Errorf("lease: breaking %s held by %q: the key changed meanwhile; try again", c.key, rec.Node)
	}
	c.logger.Warn("lease broken: marked the holder deposed", "key", c.key, "holder", rec.Node, "token", rec.Token)
	return h, nil
}

// NodeName is the node name this lease writes into the key.
func (c *kvLease) NodeName() string { return c.node }

func (c *kvLease) Lost() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.t == nil {
		return closedChan
	}
	return c.t.lost
}

// Safe reports whether this node may act on the lease at this very moment:
// it holds the lease and the deadline is still ahead on the lease's clock
// (read now, however late the renew loop and the watchdog run); a loss it
// finds ends the tenure at once.
func (c *kvLease) Safe() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t != nil && c.t.safeLocked()
}

// SafeUntil is the current tenure's step-down deadline (zero when not held).
func (c *kvLease) SafeUntil() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.t == nil {
		return time.Time{}
	}
	return c.t.safeUntil
}

func (c *kvLease) Token() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.t == nil {
		return 0
	}
	return c.t.token
}
