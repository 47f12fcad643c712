package lease_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/understudy-db/understudy/config"
	"github.com/understudy-db/understudy/integration/harness"
	"github.com/understudy-db/understudy/lease"
	"github.com/understudy-db/understudy/lease/leasetest"
)

// kvTTL is the ttl of the KV lease tests: the shortest allowed, so that the
// waits for a dead holder stay short.
const kvTTL = lease.MinKVTTL

// TestConsulKV runs the KV lease (mode kv) against one real dev agent; the
// subtests run in parallel on their own keys.
func TestConsulKV(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Consul agent")
	}
	c := harness.StartConsul(t)
	t.Run("Conformance", func(t *testing.T) {
		t.Parallel()
		leasetest.Run(t, leasetest.Setup{
			New: func(t *testing.T, node string) lease.Lease {
				return newKVLease(t, c.HTTPAddr, node)
			},
			Primary: "n1", Other: "n2", AdvertiseURL: advertiseURL,
		})
	})
	tests := []struct {
		name string
		fn   func(t *testing.T, c *harness.Consul)
	}{
		{"RecordAndRenewals", testKVRecordAndRenewals},
		{"CutOffHolderStepsDownFirst", testKVCutOff},
		{"HandOffNamesSuccessor", testKVHandOff},
		{"HandOffSuccessorNeverComes", testKVHandOffAbandoned},
		{"Break", testKVBreak},
		{"SessionHolderExcludes", testKVSessionHolder},
		{"SafeAnswersAtTheDeadline", testKVSafeAtDeadline},
		{"HealthCheckStepsDown", testKVHealthCheck},
		{"SessionRefusesKVHolder", testSessionRefusesKVHolder},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.fn(t, c)
		})
	}
}

func newKVLease(t *testing.T, addr, node string, opts ...lease.Option) lease.Lease {
	t.Helper()
	cc := config.ConsulLease{Mode: lease.ModeKV, TTL: kvTTL}
	return newConsulLease(t, addr, node, cc, opts...)
}

// rawRecord reads the key as stored.
func rawRecord(t *testing.T, c *harness.Consul, l lease.Lease) (lease.KVRecord, uint64) {
	t.Helper()
	pair, _, err := rawClient(t, c).KV().Get(lease.KVKeyOf(l), nil)
	if err != nil || pair == nil {
		t.Fatalf("raw read of %s: %v %v", lease.KVKeyOf(l), pair, err)
	}
	var r lease.KVRecord
	if err := json.Unmarshal(pair.Value, &r); err != nil {
		t.Fatalf("value %q: %v", pair.Value, err)
	}
	return r, pair.ModifyIndex
}

// testKVRecordAndRenewals: the key holds node, token, ttl and a renewal
// count that the holder bumps every ttl/4, so the safe deadline moves on
// past the ttl. It logs the KV writes per second.
func testKVRecordAndRenewals(t *testing.T, c *harness.Consul) {
	ctx := leasetest.Context(t, 30*time.Second)
	a := newKVLease(t, c.HTTPAddr, "a")
	tok := mustAcquire(t, ctx, a)
	r0, i0 := rawRecord(t, c, a)
	if r0.Node != "a" || r0.Token != tok || r0.State != "held" || r0.TTLMillis != kvTTL.Milliseconds() || r0.AdvertiseURL != advertiseURL("a") {
		t.Fatalf("record after Acquire: %+v, want held by a with token %d, ttl %s", r0, tok, kvTTL)
	}
	first := lease.KVSafeUntilOf(a)
	start := time.Now()
	select {
	case <-a.Lost():
		t.Fatal("lease lost although Consul was reachable")
	case <-time.After(3 * kvTTL):
	}
	r1, i1 := rawRecord(t, c, a)
	elapsed := time.Since(start)
	if r1.Token != tok || r1.Renewals <= r0.Renewals || i1 <= i0 {
		t.Errorf("after 3 ttl: record %+v (index %d), first %+v (index %d): want the same token, more renewals, a new index", r1, i1, r0, i0)
	}
	if later := lease.KVSafeUntilOf(a); !later.After(first.Add(kvTTL)) {
		t.Errorf("safe deadline moved from %v to %v only; renewals should push it past a ttl", first, later)
	}
	t.Logf("ttl %s: %d renewals in %s = %.1f KV writes/s", kvTTL, r1.Renewals-r0.Renewals, elapsed.Round(time.Millisecond),
		float64(r1.Renewals-r0.Renewals)/elapsed.Seconds())
}

// testKVCutOff: the holder loses its path to Consul (calls hang). It steps
// down at its deadline, before the challenger, which watched the key stop
// changing, takes over with the next token.
func testKVCutOff(t *testing.T, c *harness.Consul) {
	ctx := leasetest.Context(t, 30*time.Second)
	proxy := startProxy(t, c.HTTPAddr)
	a := newKVLease(t, proxy.Addr(), "a")
	b := newKVLease(t, c.HTTPAddr, "b")
	tokA := mustAcquire(t, ctx, a)
	if _, ok, err := b.TryAcquire(ctx); ok || err != nil {
		t.Fatalf("b.TryAcquire while a renews: ok %v err %v, want refused", ok, err)
	}
	proxy.Cut()
	cutAt := time.Now()
	lostAt := make(chan time.Time, 1)
	go func() {
		<-a.Lost()
		lostAt <- time.Now()
	}()
	tokB := mustAcquire(t, ctx, b)
	acquiredAt := time.Now()
	var lost time.Time
	select {
	case lost = <-lostAt:
	default:
		t.Fatalf("b acquired at +%v while a has not stepped down", acquiredAt.Sub(cutAt))
	}
	t.Logf("after the cut: a stepped down at +%v, b acquired at +%v", lost.Sub(cutAt).Round(time.Millisecond), acquiredAt.Sub(cutAt).Round(time.Millisecond))
	if tokB != tokA+1 {
		t.Errorf("b's token %d, want a's %d + 1", tokB, tokA)
	}
	if h, err := b.Holder(ctx); err != nil || !h.Held || h.Node != "b" || h.LockIndex != tokB {
		t.Errorf("Holder after the takeover: (%+v, %v)", h, err)
	}
}

// testKVHandOff: a hands off to c; b (an eager challenger) cannot take the
// lease meanwhile, c takes it at once with the next token and the final TXID.
func testKVHandOff(t *testing.T, c *harness.Consul) {
	ctx := leasetest.Context(t, 30*time.Second)
	a := newKVLease(t, c.HTTPAddr, "a")
	b := newKVLease(t, c.HTTPAddr, "b")
	s := newKVLease(t, c.HTTPAddr, "c")
	tokA := mustAcquire(t, ctx, a)
	if err := lease.ReleaseTo(ctx, a, 17, "c"); err != nil {
		t.Fatalf("ReleaseTo: %v", err)
	}
	if _, ok, err := b.TryAcquire(ctx); ok || err != nil {
		t.Fatalf("b.TryAcquire during a hand-off to c: ok %v err %v, want refused", ok, err)
	}
	hb, err := b.Holder(ctx)
	if err != nil || !hb.Held || hb.Successor != "c" || hb.TXID != 17 {
		t.Errorf("b sees (%+v, %v) during the hand-off, want held for successor c with txid 17", hb, err)
	}
	hc, err := s.Holder(ctx)
	if err != nil || hc.Held || hc.TXID != 17 {
		t.Errorf("c sees (%+v, %v) during its hand-off, want free for it, txid 17", hc, err)
	}
	tokC, ok, err := s.TryAcquire(ctx)
	if err != nil || !ok || tokC != tokA+1 {
		t.Fatalf("c.TryAcquire of its hand-off = (%d, %v, %v), want (%d, true, nil)", tokC, ok, err, tokA+1)
	}
	if h, err := b.Holder(ctx); err != nil || !h.Held || h.Node != "c" || h.Successor != "" {
		t.Errorf("after the hand-off b sees (%+v, %v), want held by c", h, err)
	}
}

// testKVHandOffAbandoned: a successor that never takes its hand-off does not
// block the lease for good: another node takes it once it waited as for a
// dead holder.
func testKVHandOffAbandoned(t *testing.T, c *harness.Consul) {
	ctx := leasetest.Context(t, 30*time.Second)
	a := newKVLease(t, c.HTTPAddr, "a")
	b := newKVLease(t, c.HTTPAddr, "b")
	tokA := mustAcquire(t, ctx, a)
	if err := lease.ReleaseTo(ctx, a, 3, "gone"); err != nil {
		t.Fatalf("ReleaseTo: %v", err)
	}
	at := time.Now()
	tokB := mustAcquire(t, ctx, b)
	if waited, need := time.Since(at), kvTTL; waited < need {
		t.Errorf("b took a hand-off meant for another node after %v, before a whole ttl %v", waited, need)
	}
	if tokB != tokA+1 {
		t.Errorf("b's token %d, want %d", tokB, tokA+1)
	}
}

// testKVBreak: promote -force marks the holder deposed; the holder notices
// at its next renewal and steps down before the breaker may take over.
func testKVBreak(t *testing.T, c *harness.Consul) {
	ctx := leasetest.Context(t, 30*time.Second)
	a := newKVLease(t, c.HTTPAddr, "a")
	b := newKVLease(t, c.HTTPAddr, "b")
	tokA := mustAcquire(t, ctx, a)
	lostAt := make(chan time.Time, 1)
	go func() {
		<-a.Lost()
		lostAt <- time.Now()
	}()
	h, err := lease.Break(ctx, b)
	if err != nil || h.Node != "a" || h.LockIndex != tokA {
		t.Fatalf("Break = (%+v, %v), want a's tenure with token %d", h, err, tokA)
	}
	tokB := mustAcquire(t, ctx, b)
	acquiredAt := time.Now()
	select {
	case at := <-lostAt:
		if !at.Before(acquiredAt) {
			t.Errorf("a stepped down at %v, not before b acquired at %v", at, acquiredAt)
		}
	default:
		t.Fatal("b acquired a broken lease while a had not stepped down")
	}
	if tokB != tokA+1 {
		t.Errorf("token after Break %d, want %d", tokB, tokA+1)
	}
	// The deposed holder's Release leaves the new holder's key alone.
	if err := a.Release(ctx, 99); err != nil {
		t.Errorf("Release by the deposed holder: %v", err)
	}
	if h, err := b.Holder(ctx); err != nil || !h.Held || h.Node != "b" || h.TXID != 0 || h.LockIndex != tokB {
		t.Errorf("after the deposed holder's Release: (%+v, %v), want b's tenure untouched", h, err)
	}
}

// testKVSessionHolder: a node in mode session holds the key; a KV node never
// takes it by waiting (mixed modes must not give two primaries).
func testKVSessionHolder(t *testing.T, c *harness.Consul) {
	ctx := leasetest.Context(t, 30*time.Second)
	s := newConsulLease(t, c.HTTPAddr, "s", config.ConsulLease{})
	mustAcquire(t, ctx, s)
	k := newKVLease(t, c.HTTPAddr, "k")
	wait := 2*kvTTL + time.Second
	_, err := k.Acquire(leasetest.Context(t, wait))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("KV Acquire while a session holds the key for %v: %v, want context.DeadlineExceeded", wait, err)
	}
	if leasetest.IsClosed(s.Lost()) {
		t.Error("the session holder lost its lease to a KV node")
	}
}

// testKVSafeAtDeadline: the holder's deadline is the send time of the write
// that took the lease + ttl - ttl/4 on its clock, and Safe compares it with
// the clock when asked, before any timer ran (a process woken from SIGSTOP):
// 1ns before it the lease is safe, at it Safe is false and Lost closes.
func testKVSafeAtDeadline(t *testing.T, c *harness.Consul) {
	ctx := leasetest.Context(t, 30*time.Second)
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := newFakeClock(start)
	a := newKVLease(t, c.HTTPAddr, "a", lease.WithClock(clock))
	mustAcquire(t, ctx, a)
	deadline := lease.KVSafeUntilOf(a)
	if want := lease.KVSafeUntil(start, kvTTL); !deadline.Equal(want) || !a.SafeUntil().Equal(want) {
		t.Fatalf("deadline %v (SafeUntil %v), want the send time + %s = %v", deadline, a.SafeUntil(), kvTTL-lease.KVMargin(kvTTL), want)
	}
	clock.Set(deadline.Add(-time.Nanosecond))
	if !a.Safe() || leasetest.IsClosed(a.Lost()) {
		t.Fatalf("1ns before the deadline: Safe %v, Lost closed %v; want safe", a.Safe(), leasetest.IsClosed(a.Lost()))
	}
	clock.Set(deadline)
	if a.Safe() {
		t.Fatal("Safe at the deadline itself")
	}
	if !leasetest.IsClosed(a.Lost()) {
		t.Fatal("Safe found the deadline passed but Lost is still open")
	}
}

// testKVHealthCheck: a holder whose application's health check turns
// critical steps down within a renew interval, without anyone taking the
// key from it, and releases it; a node whose check is critical does not
// take the lease; once it passes again, it does.
func testKVHealthCheck(t *testing.T, c *harness.Consul) {
	ctx := leasetest.Context(t, 30*time.Second)
	check := "app-" + dbName(t)
	agent := func(path string) {
		t.Helper()
		body := ""
		if path == "register" {
			body = `{"ID":"` + check + `","Name":"` + check + `","TTL":"1h"}`
			path = "/v1/agent/check/register"
		} else {
			path = "/v1/agent/check/" + path + "/" + check
		}
		if err := c.Do(ctx, "PUT", path, body, nil); err != nil {
			t.Fatalf("consul %s: %v", path, err)
		}
	}
	agent("register")
	agent("pass")
	cc := config.ConsulLease{Mode: lease.ModeKV, TTL: kvTTL, HealthCheck: check}
	a := newConsulLease(t, c.HTTPAddr, "a", cc)
	b := newConsulLease(t, c.HTTPAddr, "b", cc)
	tokA := mustAcquire(t, ctx, a)
	agent("fail")
	select {
	case <-a.Lost():
	case <-time.After(5 * kvTTL):
		t.Fatal("the holder kept the lease with its health check critical")
	}
	if a.Safe() {
		t.Fatal("Safe after the step-down")
	}
	if err := a.Release(ctx, 0); err != nil {
		t.Fatalf("release after the step-down: %v", err)
	}
	if _, ok, err := b.TryAcquire(ctx); ok || !errors.Is(err, lease.ErrUnhealthy) {
		t.Fatalf("TryAcquire with the check critical: ok %v err %v, want ErrUnhealthy", ok, err)
	}
	agent("pass")
	if tokB := mustAcquire(t, ctx, b); tokB != tokA+1 {
		t.Errorf("b's token %d, want %d", tokB, tokA+1)
	}
}

// testSessionRefusesKVHolder: a node in mode session does not take a key a
// KV node holds (it locks no session, so Consul's acquire would succeed
// beside it), and says why; once the KV node released it, it does.
func testSessionRefusesKVHolder(t *testing.T, c *harness.Consul) {
	ctx := leasetest.Context(t, 30*time.Second)
	k := newKVLease(t, c.HTTPAddr, "k")
	s := newConsulLease(t, c.HTTPAddr, "s", config.ConsulLease{Mode: lease.ModeSession})
	mustAcquire(t, ctx, k)
	if _, ok, err := s.TryAcquire(ctx); ok || err == nil || !strings.Contains(err.Error(), "mode kv") {
		t.Fatalf("session TryAcquire of a KV-held key: ok %v err %v, want refused naming mode kv", ok, err)
	}
	if err := k.Release(ctx, 0); err != nil {
		t.Fatal(err)
	}
	mustAcquire(t, ctx, s)
}
