package lease_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/understudy-db/understudy/config"
	"github.com/understudy-db/understudy/lease"
	"github.com/understudy-db/understudy/lease/leasetest"
)

func staticURL(node string) string { return "http://" + node + ":9090/status" }

func newStatic(t *testing.T, node string) lease.Lease {
	t.Helper()
	l, err := lease.New(&config.Lease{Type: lease.TypeStatic, Node: node, AdvertiseURL: staticURL(node), StaticPrimary: "n1"}, dbName(t), testLogger(t))
	if err != nil {
		t.Fatalf("lease.New: %v", err)
	}
	t.Cleanup(func() { _ = l.Release(context.Background(), 0) })
	return l
}

func TestStaticConformance(t *testing.T) {
	leasetest.Run(t, leasetest.Setup{New: newStatic, Primary: "n1", Other: "n2", AdvertiseURL: staticURL})
}

func TestStaticNotPrimary(t *testing.T) {
	ctx := leasetest.Context(t, 10*time.Second)
	l := newStatic(t, "n2")
	if _, ok, err := l.TryAcquire(ctx); ok || !errors.Is(err, lease.ErrNotStaticPrimary) {
		t.Errorf("TryAcquire on a non-primary = (ok %v, %v), want ErrNotStaticPrimary", ok, err)
	}
	h, err := l.Holder(ctx)
	if err != nil || !h.Held || h.Node != "n1" || h.LockIndex != 1 {
		t.Errorf("Holder = (%+v, %v), want held by n1 with token 1", h, err)
	}
	if _, err := lease.Break(ctx, l); !errors.Is(err, lease.ErrBreakUnsupported) {
		t.Errorf("Break of a static lease: %v, want ErrBreakUnsupported", err)
	}
}

func TestStaticPrimaryNeverLost(t *testing.T) {
	ctx := leasetest.Context(t, 10*time.Second)
	l := newStatic(t, "n1")
	tok, err := l.Acquire(ctx)
	if err != nil || tok != 1 {
		t.Fatalf("Acquire = (%d, %v), want (1, nil)", tok, err)
	}
	// Nothing but Release ends a static tenure; a second handle (another
	// process on the same node) is no competition either.
	if tok2, ok, err := newStatic(t, "n1").TryAcquire(ctx); !ok || err != nil || tok2 != 1 {
		t.Errorf("second handle on the primary: (%d, %v, %v), want (1, true, nil)", tok2, ok, err)
	}
	if leasetest.IsClosed(l.Lost()) {
		t.Error("static lease reported lost")
	}
}
