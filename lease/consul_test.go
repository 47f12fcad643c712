package lease_test

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/understudy-db/understudy/config"
	"github.com/understudy-db/understudy/integration/harness"
	"github.com/understudy-db/understudy/lease"
	"github.com/understudy-db/understudy/lease/leasetest"
)

// TestConsul runs every Consul lease test against one real dev agent; the
// subtests run in parallel, each on its own key (derived from its name), so
// the package's wall time is that of the slowest (the cut-off test, ~2x TTL).
func TestConsul(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Consul agent")
	}
	c := harness.StartConsul(t)
	t.Run("Conformance", func(t *testing.T) {
		t.Parallel()
		leasetest.Run(t, leasetest.Setup{
			New: func(t *testing.T, node string) lease.Lease {
				return newConsulLease(t, c.HTTPAddr, node, config.ConsulLease{})
			},
			Primary: "n1", Other: "n2", AdvertiseURL: advertiseURL,
		})
	})
	// Not parallel: it sets the environment, and runs before the parallel
	// subtests resume.
	t.Run("AddressFromEnvironment", func(t *testing.T) {
		t.Setenv("CONSUL_HTTP_ADDR", c.HTTPAddr)
		l, err := lease.New(&config.Lease{Node: "env"}, dbName(t), testLogger(t))
		if err != nil {
			t.Fatalf("lease.New: %v", err)
		}
		ctx := leasetest.Context(t, 20*time.Second)
		mustAcquire(t, ctx, l)
		if err := l.Release(ctx, 0); err != nil {
			t.Fatalf("Release: %v", err)
		}
	})
	tests := []struct {
		name string
		fn   func(t *testing.T, c *harness.Consul)
	}{
		{"ValueSessionAndRelease", testValueSessionAndRelease},
		{"SecondNodeWaitsForRelease", testSecondNodeWaits},
		{"RenewalsOutlastTTL", testRenewalsOutlastTTL},
		{"CutOffHolderStepsDownFirst", testCutOff},
		{"FakeClockStepDown", testFakeClockStepDown},
		{"SafeAnswersAtTheDeadline", testSafeAtDeadline},
		{"Break", testBreak},
		{"LockDelay", testLockDelay},
		{"HealthCheckFailure", testHealthCheck},
		{"RacingAcquirers", testRacing},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.fn(t, c)
		})
	}
}

func advertiseURL(node string) string { return "http://" + node + ".test:9090/status" }

// newConsulLease makes node's lease on the test's key, talking to addr.
func newConsulLease(t *testing.T, addr, node string, cc config.ConsulLease, opts ...lease.Option) lease.Lease {
	t.Helper()
	cc.Address = addr
	if cc.Mode == "" {
		cc.Mode = lease.ModeSession // this file's tests are of the session lease
	}
	cfg := &config.Lease{Type: lease.TypeConsul, Node: node, AdvertiseURL: advertiseURL(node), Consul: &cc}
	l, err := lease.New(cfg, dbName(t), testLogger(t).Named(node), opts...)
	if err != nil {
		t.Fatalf("lease.New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = l.Release(ctx, 0)
	})
	return l
}

func rawClient(t *testing.T, c *harness.Consul) *api.Client {
	t.Helper()
	client, err := api.NewClient(&api.Config{Address: c.HTTPAddr})
	if err != nil {
		t.Fatal(err)
	}
	return client
}

func mustAcquire(t *testing.T, ctx context.Context, l lease.Lease) uint64 {
	t.Helper()
	tok, err := l.Acquire(ctx)
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	return tok
}

// waitClosed waits (real time, generously) for c; it fails the test if c
// stays open.
func waitClosed(t *testing.T, c <-chan struct{}, d time.Duration, what string) time.Time {
	t.Helper()
	select {
	case <-c:
		return time.Now()
	case <-time.After(d):
		t.Fatalf("%s: still open after %v", what, d)
		return time.Time{}
	}
}

func testValueSessionAndRelease(t *testing.T, c *harness.Consul) {
	ctx := leasetest.Context(t, 30*time.Second)
	raw := rawClient(t, c)
	a := newConsulLease(t, c.HTTPAddr, "a", config.ConsulLease{})
	tok := mustAcquire(t, ctx, a)

	key := lease.DefaultKeyPrefix + dbName(t) + "/primary"
	pair, _, err := raw.KV().Get(key, nil)
	if err != nil || pair == nil {
		t.Fatalf("raw read of %s: %v %v", key, pair, err)
	}
	var v map[string]any
	if err := json.Unmarshal(pair.Value, &v); err != nil {
		t.Fatalf("value %q is not JSON: %v", pair.Value, err)
	}
	want := map[string]any{"node": "a", "advertise_url": advertiseURL("a"), "txid": "0000000000000000"}
	for k, w := range want {
		if v[k] != w {
			t.Errorf("value[%q] = %v, want %v (value %s)", k, v[k], w, pair.Value)
		}
	}
	if pair.LockIndex != tok {
		t.Errorf("token %d, key's LockIndex %d", tok, pair.LockIndex)
	}

	se, _, err := raw.Session().Info(pair.Session, nil)
	if err != nil || se == nil {
		t.Fatalf("session %s: %v %v", pair.Session, se, err)
	}
	if se.Behavior != api.SessionBehaviorRelease || se.TTL != "10s" || se.LockDelay != lease.DefaultLockDelay {
		t.Errorf("session = behavior %q ttl %q lock-delay %v; want release, 10s, %v", se.Behavior, se.TTL, se.LockDelay, lease.DefaultLockDelay)
	}
	if checks := append(se.Checks, se.NodeChecks...); !slices.Contains(checks, "serfHealth") {
		t.Errorf("session checks %v lack serfHealth", checks)
	}

	if err := a.Release(ctx, 7); err != nil {
		t.Fatalf("Release: %v", err)
	}
	h, err := a.Holder(ctx)
	if err != nil {
		t.Fatalf("Holder: %v", err)
	}
	if h.Held || h.Node != "a" || h.TXID != 7 || h.LockIndex != tok {
		t.Errorf("after Release(7): Holder %+v, want free, last node a, txid 7, lock index %d", h, tok)
	}
	if se, _, err := raw.Session().Info(pair.Session, nil); err != nil || se != nil {
		t.Errorf("session %s after Release: %+v %v; want destroyed", pair.Session, se, err)
	}
}

// testSecondNodeWaits: a waiting node gets the lease when the holder
// releases it, and the token grows with every new holder.
func testSecondNodeWaits(t *testing.T, c *harness.Consul) {
	ctx := leasetest.Context(t, 30*time.Second)
	a := newConsulLease(t, c.HTTPAddr, "a", config.ConsulLease{})
	b := newConsulLease(t, c.HTTPAddr, "b", config.ConsulLease{})
	tokens := []uint64{mustAcquire(t, ctx, a)}

	holders := []lease.Lease{a, b}
	for i := 1; i <= 3; i++ {
		prev, next := holders[(i-1)%2], holders[i%2]
		got := make(chan uint64, 1)
		go func() {
			tok, err := next.Acquire(ctx)
			if err != nil {
				t.Errorf("Acquire: %v", err)
			}
			got <- tok
		}()
		select {
		case tok := <-got:
			t.Fatalf("round %d: Acquire returned %d while the other node held the lease", i, tok)
		case <-time.After(500 * time.Millisecond):
		}
		if err := prev.Release(ctx, 0); err != nil {
			t.Fatalf("Release: %v", err)
		}
		tok := <-got
		if tok <= tokens[len(tokens)-1] {
			t.Fatalf("tokens %v then %d: the fencing token must grow with every new holder", tokens, tok)
		}
		tokens = append(tokens, tok)
	}
	t.Logf("tokens of successive holders: %v", tokens)
}

// testRenewalsOutlastTTL: the renew loop keeps one tenure alive past the TTL
// (and past the 8 s safe window that would end it without renewals).
func testRenewalsOutlastTTL(t *testing.T, c *harness.Consul) {
	ctx := leasetest.Context(t, 30*time.Second)
	a := newConsulLease(t, c.HTTPAddr, "a", config.ConsulLease{})
	tok := mustAcquire(t, ctx, a)
	first := lease.SafeUntilOf(a)
	select {
	case <-a.Lost():
		t.Fatal("lease lost although Consul was reachable")
	case <-time.After(lease.DefaultTTL + 2*time.Second):
	}
	h, err := a.Holder(ctx)
	if err != nil || !h.Held || h.Node != "a" || h.LockIndex != tok {
		t.Fatalf("after more than a TTL: Holder (%+v, %v), want still a with token %d", h, err, tok)
	}
	if later := lease.SafeUntilOf(a); !later.After(first.Add(lease.DefaultTTL)) {
		t.Errorf("safe deadline moved from %v to %v only; renewals should have pushed it past a TTL", first, later)
	}
}

// testCutOff: the holder loses its path to Consul (a black hole: calls hang
// rather than fail). It must report Lost before Consul frees the key, and so
// before any other node can take the lease.
func testCutOff(t *testing.T, c *harness.Consul) {
	ctx := leasetest.Context(t, 50*time.Second)
	proxy := startProxy(t, c.HTTPAddr)
	a := newConsulLease(t, proxy.Addr(), "a", config.ConsulLease{})
	b := newConsulLease(t, c.HTTPAddr, "b", config.ConsulLease{})
	tokA := mustAcquire(t, ctx, a)
	first, err := b.Holder(ctx)
	if err != nil {
		t.Fatal(err)
	}

	proxy.Cut()
	cutAt := time.Now()
	var wg sync.WaitGroup
	var lostAt, freeAt, acquiredAt time.Time
	var tokB uint64
	wg.Add(3)
	go func() {
		defer wg.Done()
		select {
		case <-a.Lost():
			lostAt = time.Now()
		case <-ctx.Done():
		}
	}()
	go func() { // when does Consul itself free the key?
		defer wg.Done()
		for index := first.Index; ctx.Err() == nil; {
			h, err := b.Watch(ctx, index)
			if err != nil {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			if !h.Held {
				freeAt = time.Now()
				return
			}
			index = h.Index
		}
	}()
	go func() {
		defer wg.Done()
		tok, err := b.Acquire(ctx)
		if err != nil {
			t.Errorf("b: Acquire after a was cut off: %v", err)
			return
		}
		acquiredAt, tokB = time.Now(), tok
	}()
	wg.Wait()
	if t.Failed() || lostAt.IsZero() || freeAt.IsZero() {
		t.Fatalf("lost at %v, key free at %v, b acquired at %v (cut at %v)", lostAt, freeAt, acquiredAt, cutAt)
	}
	t.Logf("after the cut: a lost the lease at +%v, Consul freed the key at +%v, b acquired at +%v",
		lostAt.Sub(cutAt).Round(time.Millisecond), freeAt.Sub(cutAt).Round(time.Millisecond), acquiredAt.Sub(cutAt).Round(time.Millisecond))
	if !lostAt.Before(freeAt) || !freeAt.Before(acquiredAt) {
		t.Errorf("order: a lost at %v, key free at %v, b acquired at %v; a must step down before the key is free",
			lostAt, freeAt, acquiredAt)
	}
	if tokB <= tokA {
		t.Errorf("b's token %d is not above a's %d", tokB, tokA)
	}
	if a.Token() != tokA {
		t.Errorf("a's Token() after the loss = %d, want %d (kept until Release)", a.Token(), tokA)
	}
	// a cannot reach Consul: give its Release a short context rather than
	// the cleanup's long one.
	rctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if err := a.Release(rctx, 0); err == nil {
		t.Error("Release through a black hole reported success")
	}
}

// testFakeClockStepDown drives the step-down deadline with a fake clock: the
// deadline counts from the renewal's send time, moves with successful
// renewals, and Lost closes exactly when the clock reaches it, although
// Consul still lists the holder.
func testFakeClockStepDown(t *testing.T, c *harness.Consul) {
	ctx := leasetest.Context(t, 30*time.Second)
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := newFakeClock(start)
	proxy := startProxy(t, c.HTTPAddr)
	a := newConsulLease(t, proxy.Addr(), "a", config.ConsulLease{}, lease.WithClock(clock))
	tok := mustAcquire(t, ctx, a)
	ttl, margin := lease.DefaultTTL, lease.Margin(lease.DefaultTTL)
	interval := lease.RenewInterval(ttl, margin)

	if got, want := lease.SafeUntilOf(a), lease.SafeUntil(start, ttl, margin); !got.Equal(want) {
		t.Fatalf("deadline after Acquire = %v, want %v (from the session's send time)", got, want)
	}

	clock.BlockUntil(t, 2)  // renew loop and watchdog
	clock.Advance(interval) // the renew loop wakes and renews through the proxy
	want := lease.SafeUntil(start.Add(interval), ttl, margin)
	for deadline := time.Now().Add(10 * time.Second); !lease.SafeUntilOf(a).Equal(want); {
		if time.Now().After(deadline) {
			t.Fatalf("deadline %v did not move to %v after a renewal", lease.SafeUntilOf(a), want)
		}
		time.Sleep(10 * time.Millisecond)
	}

	proxy.Cut()
	clock.BlockUntil(t, 2)
	clock.Advance(interval) // this renewal hangs in the black hole
	clock.Advance(want.Sub(clock.Now()) - time.Nanosecond)
	time.Sleep(200 * time.Millisecond)
	if leasetest.IsClosed(a.Lost()) {
		t.Fatalf("Lost closed at %v, before the deadline %v", clock.Now(), want)
	}
	clock.Advance(time.Nanosecond)
	waitClosed(t, a.Lost(), 5*time.Second, "Lost at the deadline")

	// Consul, on real time, still has a as the holder: the step-down came first.
	h, err := newConsulLease(t, c.HTTPAddr, "observer", config.ConsulLease{}).Holder(ctx)
	if err != nil || !h.Held || h.Node != "a" || h.LockIndex != tok {
		t.Errorf("Consul's view when a stepped down: (%+v, %v); want still held by a", h, err)
	}
}

// testSafeAtDeadline: Safe compares the deadline with the clock when it
// is asked, before the renew loop or the watchdog ran: with the clock moved
// past the deadline and no timer fired (a process woken from SIGSTOP), Safe
// is false at once, and Lost closes with it.
func testSafeAtDeadline(t *testing.T, c *harness.Consul) {
	ctx := leasetest.Context(t, 30*time.Second)
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := newFakeClock(start)
	a := newConsulLease(t, c.HTTPAddr, "a", config.ConsulLease{}, lease.WithClock(clock))
	mustAcquire(t, ctx, a)
	deadline := lease.SafeUntilOf(a)
	if !a.SafeUntil().Equal(deadline) || !a.Safe() {
		t.Fatalf("just acquired: Safe %v, SafeUntil %v, want true and %v", a.Safe(), a.SafeUntil(), deadline)
	}
	clock.Set(deadline.Add(-time.Nanosecond))
	if !a.Safe() || leasetest.IsClosed(a.Lost()) {
		t.Fatalf("1ns before the deadline: Safe %v, Lost closed %v; want safe", a.Safe(), leasetest.IsClosed(a.Lost()))
	}
	clock.Set(deadline)
	if a.Safe() {
		t.Fatal("Safe at the deadline itself, before any timer fired")
	}
	if !leasetest.IsClosed(a.Lost()) {
		t.Fatal("Safe found the deadline passed but Lost is still open")
	}
}

// testBreak: Break destroys the holder's session; the holder notices at its
// next renewal, and the breaker can take the lease after the lock-delay.
func testBreak(t *testing.T, c *harness.Consul) {
	ctx := leasetest.Context(t, 30*time.Second)
	a := newConsulLease(t, c.HTTPAddr, "a", config.ConsulLease{})
	b := newConsulLease(t, c.HTTPAddr, "b", config.ConsulLease{})
	tokA := mustAcquire(t, ctx, a)
	lostAt := make(chan time.Time, 1)
	go func() {
		<-a.Lost()
		lostAt <- time.Now()
	}()

	h, err := lease.Break(ctx, b)
	if err != nil {
		t.Fatalf("Break: %v", err)
	}
	if h.Node != "a" || h.LockIndex != tokA || h.Session == "" {
		t.Errorf("Break reported %+v, want a's tenure with token %d", h, tokA)
	}
	after, err := b.Holder(ctx)
	if err != nil || after.Held {
		t.Errorf("Holder after Break: (%+v, %v), want free", after, err)
	}
	tokB := mustAcquire(t, ctx, b)
	acquiredAt := time.Now()
	select {
	case at := <-lostAt:
		if !at.Before(acquiredAt) {
			t.Errorf("a noticed the break at %v, not before b acquired at %v", at, acquiredAt)
		}
	case <-time.After(2 * lease.DefaultTTL):
		t.Fatal("a's Lost still open after its session was destroyed")
	}
	if tokB <= tokA {
		t.Errorf("token after Break %d is not above the broken holder's %d", tokB, tokA)
	}
	// The deposed holder's Release must leave the new holder's key alone.
	if err := a.Release(ctx, 99); err != nil {
		t.Errorf("Release by the deposed holder: %v", err)
	}
	if h, err := b.Holder(ctx); err != nil || !h.Held || h.Node != "b" || h.TXID != 0 || h.LockIndex != tokB {
		t.Errorf("after the deposed holder's Release: (%+v, %v), want b's tenure untouched", h, err)
	}
	if h, err := lease.Break(ctx, a); err != nil || h.Node != "b" {
		t.Errorf("a breaking b: (%+v, %v)", h, err)
	}
}

// testLockDelay: after a session is invalidated, its key stays free for the
// lock-delay: an attempt right away fails, a waiting Acquire succeeds after.
func testLockDelay(t *testing.T, c *harness.Consul) {
	const delay = 3 * time.Second
	ctx := leasetest.Context(t, 30*time.Second)
	cc := config.ConsulLease{LockDelay: delay}
	a := newConsulLease(t, c.HTTPAddr, "a", cc)
	b := newConsulLease(t, c.HTTPAddr, "b", cc)
	mustAcquire(t, ctx, a)

	breakStart := time.Now()
	if _, err := lease.Break(ctx, b); err != nil {
		t.Fatalf("Break: %v", err)
	}
	if h, err := b.Holder(ctx); err != nil || h.Held {
		t.Fatalf("Holder after Break: (%+v, %v), want free", h, err)
	}
	if tok, ok, err := b.TryAcquire(ctx); ok || err != nil {
		t.Fatalf("TryAcquire right after Break = (%d, %v, %v); want refused by the lock-delay", tok, ok, err)
	}
	mustAcquire(t, ctx, b)
	if waited := time.Since(breakStart); waited < delay {
		t.Errorf("b acquired %v after the break, within the %v lock-delay", waited, delay)
	}
}

// testHealthCheck: a health check attached to the session (the app's) going
// critical invalidates the session: the holder loses the lease, the key frees.
func testHealthCheck(t *testing.T, c *harness.Consul) {
	ctx := leasetest.Context(t, 30*time.Second)
	raw := rawClient(t, c)
	checkID := "app-" + dbName(t)
	if err := raw.Agent().CheckRegister(&api.AgentCheckRegistration{
		ID: checkID, Name: "app health",
		AgentServiceCheck: api.AgentServiceCheck{TTL: "10m", Status: api.HealthPassing},
	}); err != nil {
		t.Fatalf("register check: %v", err)
	}
	t.Cleanup(func() { _ = raw.Agent().CheckDeregister(checkID) })

	a := newConsulLease(t, c.HTTPAddr, "a", config.ConsulLease{HealthCheck: checkID})
	b := newConsulLease(t, c.HTTPAddr, "b", config.ConsulLease{})
	mustAcquire(t, ctx, a)
	pair, _, err := raw.KV().Get(lease.DefaultKeyPrefix+dbName(t)+"/primary", nil)
	if err != nil || pair == nil {
		t.Fatalf("raw read: %v %v", pair, err)
	}
	se, _, err := raw.Session().Info(pair.Session, nil)
	if err != nil || se == nil {
		t.Fatalf("session info: %v %v", se, err)
	}
	checks := append(se.Checks, se.NodeChecks...)
	if !slices.Contains(checks, "serfHealth") || !slices.Contains(checks, checkID) {
		t.Errorf("session checks %v, want serfHealth and %s", checks, checkID)
	}

	if err := raw.Agent().UpdateTTL(checkID, "app down", api.HealthCritical); err != nil {
		t.Fatalf("fail check: %v", err)
	}
	lostAt := waitClosed(t, a.Lost(), 2*lease.DefaultTTL, "Lost after the attached health check went critical")
	mustAcquire(t, ctx, b)
	if acquiredAt := time.Now(); !lostAt.Before(acquiredAt) {
		t.Errorf("a noticed at %v, not before b acquired at %v", lostAt, acquiredAt)
	}
}

// testRacing: two nodes try at the same moment, 20 times: exactly one wins
// each round, and tokens grow round over round.
func testRacing(t *testing.T, c *harness.Consul) {
	ctx := leasetest.Context(t, 40*time.Second)
	nodes := []lease.Lease{
		newConsulLease(t, c.HTTPAddr, "a", config.ConsulLease{}),
		newConsulLease(t, c.HTTPAddr, "b", config.ConsulLease{}),
	}
	var last uint64
	wins := map[int]int{}
	for round := range 20 {
		var wg sync.WaitGroup
		start := make(chan struct{})
		ok := make([]bool, len(nodes))
		toks := make([]uint64, len(nodes))
		for i, l := range nodes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				var err error
				if toks[i], ok[i], err = l.TryAcquire(ctx); err != nil {
					t.Errorf("round %d node %d: %v", round, i, err)
				}
			}()
		}
		close(start)
		wg.Wait()
		winner := slices.Index(ok, true)
		if n := len(slices.DeleteFunc(slices.Clone(ok), func(b bool) bool { return !b })); n != 1 {
			t.Fatalf("round %d: %d winners (%v), want exactly 1", round, n, ok)
		}
		if toks[winner] <= last {
			t.Fatalf("round %d: token %d not above the previous %d", round, toks[winner], last)
		}
		last = toks[winner]
		wins[winner]++
		if err := nodes[winner].Release(ctx, 0); err != nil {
			t.Fatalf("round %d: Release: %v", round, err)
		}
	}
	t.Logf("wins per node over 20 rounds: %v", wins)
}
