// Package leasetest is the conformance suite every lease.Lease implementation
// passes: the behaviour callers (primary, follower, promote) rely on whatever
// the lease is made of.
package leasetest

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/lease"
)

// Setup describes the implementation under test.
type Setup struct {
	// New returns a lease for node. Leases made within one test share one
	// database (one lease key); different tests must get different databases,
	// e.g. derived from t.Name(). New registers the lease's cleanup.
	New func(t *testing.T, node string) lease.Lease

	// Primary may acquire a free lease; Other is a second node.
	Primary, Other string

	// AdvertiseURL returns the advertise URL New configured for node.
	AdvertiseURL func(node string) string
}

// short is how long the suite lets a call that must block run before
// cancelling it. The assertions never depend on it being exact.
const short = 300 * time.Millisecond

// Run runs the suite; each case is a parallel subtest.
func Run(t *testing.T, s Setup) {
	t.Helper()
	cases := []struct {
		name string
		fn   func(t *testing.T, s Setup)
	}{
		{"NotHeldBeforeAcquire", testNotHeldBeforeAcquire},
		{"AcquireRelease", testAcquireRelease},
		{"OtherNodeExcluded", testOtherNodeExcluded},
		{"NewTenureNewLostChannel", testNewTenure},
		{"ConcurrentTryAcquireSameNode", testConcurrentSameNode},
		{"Watch", testWatch},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.fn(t, s)
		})
	}
}

// Context is a context that ends after d or with the test, whichever is first.
func Context(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// IsClosed reports whether c is closed (a Lost channel), without blocking.
func IsClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

func testNotHeldBeforeAcquire(t *testing.T, s Setup) {
	l := s.New(t, s.Primary)
	if tok := l.Token(); tok != 0 {
		t.Errorf("Token before Acquire = %d, want 0", tok)
	}
	if !IsClosed(l.Lost()) {
		t.Error("Lost() before Acquire is open; want closed (not held = lost)")
	}
	if err := l.Release(Context(t, 10*time.Second), 0); err != nil {
		t.Errorf("Release of a lease never held: %v", err)
	}
}

func testAcquireRelease(t *testing.T, s Setup) {
	ctx := Context(t, 20*time.Second)
	l := s.New(t, s.Primary)
	tok, err := l.Acquire(ctx)
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	if tok == 0 {
		t.Fatal("Acquire returned token 0; tokens start at 1")
	}
	if got := l.Token(); got != tok {
		t.Errorf("Token() = %d, want %d", got, tok)
	}
	lost := l.Lost()
	if IsClosed(lost) {
		t.Fatal("Lost() closed right after Acquire")
	}
	again, ok, err := l.TryAcquire(ctx)
	if err != nil || !ok || again != tok {
		t.Errorf("TryAcquire by the holder = (%d, %v, %v), want (%d, true, nil)", again, ok, err, tok)
	}

	h, err := s.New(t, s.Other).Holder(ctx)
	if err != nil {
		t.Fatalf("Holder: %v", err)
	}
	if !h.Held || h.Node != s.Primary || h.LockIndex != tok {
		t.Errorf("Holder = %+v, want held by %q with token %d", h, s.Primary, tok)
	}
	// A static lease knows the primary's advertise URL only on the primary.
	own, err := l.Holder(ctx)
	if err != nil {
		t.Fatalf("Holder: %v", err)
	}
	if want := s.AdvertiseURL(s.Primary); own.AdvertiseURL != want {
		t.Errorf("Holder advertise URL = %q, want %q", own.AdvertiseURL, want)
	}

	if err := l.Release(ctx, ltx.TXID(42)); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if !IsClosed(lost) {
		t.Error("the tenure's Lost channel is open after Release")
	}
	if got := l.Token(); got != 0 {
		t.Errorf("Token after Release = %d, want 0", got)
	}
	if err := l.Release(ctx, 42); err != nil {
		t.Errorf("second Release: %v", err)
	}
}

func testOtherNodeExcluded(t *testing.T, s Setup) {
	ctx := Context(t, 20*time.Second)
	p := s.New(t, s.Primary)
	if _, err := p.Acquire(ctx); err != nil {
		t.Fatalf("Acquire by %s: %v", s.Primary, err)
	}
	o := s.New(t, s.Other)
	if tok, ok, _ := o.TryAcquire(ctx); ok {
		t.Fatalf("TryAcquire by %s succeeded (token %d) while %s holds the lease", s.Other, tok, s.Primary)
	}
	if o.Token() != 0 || !IsClosed(o.Lost()) {
		t.Errorf("after a failed TryAcquire: Token %d, Lost closed %v; want 0, true", o.Token(), IsClosed(o.Lost()))
	}
	tok, err := o.Acquire(Context(t, short))
	if err == nil {
		t.Fatalf("Acquire by %s returned token %d while %s holds the lease", s.Other, tok, s.Primary)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Acquire by %s until its context ends: error %v, want one wrapping context.DeadlineExceeded", s.Other, err)
	}
	if IsClosed(p.Lost()) {
		t.Error("the holder's Lost() closed because another node tried to acquire")
	}
}

func testNewTenure(t *testing.T, s Setup) {
	ctx := Context(t, 20*time.Second)
	l := s.New(t, s.Primary)
	if _, err := l.Acquire(ctx); err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	first := l.Lost()
	if err := l.Release(ctx, 1); err != nil {
		t.Fatalf("Release: %v", err)
	}
	tok, err := l.Acquire(ctx)
	if err != nil {
		t.Fatalf("second Acquire: %v", err)
	}
	if !IsClosed(first) {
		t.Error("first tenure's Lost channel is open after its Release")
	}
	if IsClosed(l.Lost()) {
		t.Error("second tenure's Lost channel is closed right after Acquire")
	}
	if l.Token() != tok {
		t.Errorf("Token() = %d, want %d", l.Token(), tok)
	}
}

func testConcurrentSameNode(t *testing.T, s Setup) {
	ctx := Context(t, 20*time.Second)
	l := s.New(t, s.Primary)
	const n = 4
	toks := make([]uint64, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			toks[i], errs[i] = l.Acquire(ctx)
		}()
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("Acquire %d: %v", i, errs[i])
		}
		if toks[i] != toks[0] {
			t.Errorf("concurrent Acquire on one lease gave tokens %v; want one tenure", toks)
		}
	}
}

func testWatch(t *testing.T, s Setup) {
	ctx := Context(t, 20*time.Second)
	p := s.New(t, s.Primary)
	tok, err := p.Acquire(ctx)
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	o := s.New(t, s.Other)
	h, err := o.Watch(ctx, 0)
	if err != nil {
		t.Fatalf("Watch(0): %v", err)
	}
	if h.Index == 0 || !h.Held || h.Node != s.Primary || h.LockIndex != tok {
		t.Fatalf("Watch(0) = %+v, want index > 0 and held by %s with token %d", h, s.Primary, tok)
	}
	// Nothing changes: Watch blocks until its context ends.
	if h2, err := o.Watch(Context(t, short), h.Index); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Watch(%d) without a change = (%+v, %v), want context.DeadlineExceeded", h.Index, h2, err)
	}
}
