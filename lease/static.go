package lease

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/superfly/ltx"
)

// staticToken is the fencing token of a static lease: there is never a second
// holder to fence off.
const staticToken = 1

// staticIndex is the only change index of a static lease: it never changes.
const staticIndex = 1

// staticLease is held by the configured primary and by nobody else; there is
// no election and it is never lost (only released).
type staticLease struct {
	node, primary, advertiseURL string
	logger                      hclog.Logger

	mu   sync.Mutex
	held bool
	lost chan struct{}
}

func newStatic(node, primary, advertiseURL string, logger hclog.Logger) *staticLease {
	return &staticLease{node: node, primary: primary, advertiseURL: advertiseURL, logger: logger}
}

func (s *staticLease) notPrimaryErr() error {
	return fmt.Errorf("lease: node %q cannot become primary: the static lease names %q (change lease static-primary or use a consul lease): %w",
		s.node, s.primary, ErrNotStaticPrimary)
}

func (s *staticLease) Acquire(ctx context.Context) (uint64, error) {
	tok, ok, err := s.TryAcquire(ctx)
	if ok || err == nil {
		return tok, err
	}
	// Not the primary: there is nothing to wait for but the caller's context.
	s.logger.Warn("waiting forever: this node is not the static primary", "node", s.node, "primary", s.primary)
	<-ctx.Done()
	return 0, fmt.Errorf("%w (%w)", err, ctx.Err())
}

func (s *staticLease) TryAcquire(ctx context.Context) (uint64, bool, error) {
	if err := ctx.Err(); err != nil {
		return 0, false, err
	}
	if s.node != s.primary {
		return 0, false, s.notPrimaryErr()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.held {
		s.held = true
		s.lost = make(chan struct{})
		s.logger.Info("static lease held", "node", s.node)
	}
	return staticToken, true, nil
}

func (s *staticLease) Release(ctx context.Context, txid ltx.TXID) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.held {
		s.held = false
		close(s.lost)
		s.logger.Info("static lease released", "node", s.node, "txid", txid)
	}
	return nil
}

// Holder always names the configured primary; its advertise URL is known only
// on the primary itself.
func (s *staticLease) Holder(ctx context.Context) (Holder, error) {
	if err := ctx.Err(); err != nil {
		return Holder{}, err
	}
	h := Holder{Value: Value{Node: s.primary}, Held: true, LockIndex: staticToken, Index: staticIndex}
	if s.node == s.primary {
		h.AdvertiseURL = s.advertiseURL
	}
	return h, nil
}

// Watch returns at once for an index other than the static one; otherwise
// nothing can change, so it waits for ctx.
func (s *staticLease) Watch(ctx context.Context, index uint64) (Holder, error) {
	if index != staticIndex {
		return s.Holder(ctx)
	}
	<-ctx.Done()
	return Holder{}, ctx.Err()
}

func (s *staticLease) Lost() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.held {
		return closedChan
	}
	return s.lost
}

// Safe is true while held: a static lease has no deadline.
func (s *staticLease) Safe() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.held
}

// staticSafeUntil stands for "no deadline".
var staticSafeUntil = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)

func (s *staticLease) SafeUntil() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.held {
		return time.Time{}
	}
	return staticSafeUntil
}

func (s *staticLease) Token() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.held {
		return 0
	}
	return staticToken
}
