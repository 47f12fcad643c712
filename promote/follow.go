package promote

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/follower"
	"github.com/understudy-db/understudy/internal/storage"
	"github.com/understudy-db/understudy/lease"
)

// runFollower follows until ctx ends or a promotion succeeds (true).
func (n *Node) runFollower(ctx context.Context) (bool, error) {
	f, err := follower.New(n.cfg.Follower)
	if err != nil {
		return false, err
	}
	n.mu.Lock()
	n.fol, n.db = f, nil
	n.mu.Unlock()
	n.setRole(ctx, RoleFollower, "following the replica")

	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- f.Run(fctx) }()
	stopFollowing := func() {
		cancel()
		<-done
	}
	var free chan struct{}
	var dead chan string
	if n.cfg.AutoPromote {
		free = make(chan struct{}, 1)
		go n.watchFree(fctx, f, free)
		if n.cfg.DeadAfter > 0 {
			dead = make(chan string, 1)
			go n.probeHolder(fctx, f, dead)
		}
	}
	for {
		select {
		case <-ctx.Done():
			<-done
			return false, nil
		case err := <-done:
			// Run returns early only when it cannot run at all.
			return false, err
		case req := <-n.promoteReq:
			stopFollowing()
			err := n.promote(ctx, f, req.force, req.timeout, false)
			if err != nil {
				req.reply <- err
				n.log.Error("promotion failed; following again", "error", err)
				return false, nil
			}
			// Answered once the database is open and shipping as primary.
			n.mu.Lock()
			n.pending = req.reply
			n.mu.Unlock()
			return true, nil
		case session := <-dead:
			stopFollowing()
			if err := n.breakDead(ctx, session); err != nil {
				n.log.Warn("not breaking the lease of the unresponsive primary", "error", err)
				return false, nil
			}
			err := n.promote(ctx, f, false, DefaultPromoteTimeout, true)
			if err == nil {
				return true, nil
			}
			n.log.Info("automatic promotion did not happen; following again", "error", err)
			return false, nil
		case <-free:
			stopFollowing()
			err := n.promote(ctx, f, false, DefaultPromoteTimeout, true)
			switch {
			case err == nil:
				return true, nil
			case errors.Is(err, ErrLostRace):
				n.log.Info("another follower won the lease; following the new primary", "error", err)
			default:
				n.log.Error("automatic promotion failed; following again", "error", err)
			}
			return false, nil
		}
	}
}

// watchFree follows the lease with blocking queries and signals free once
// it is free while the follower is healthy.
func (n *Node) watchFree(ctx context.Context, f *follower.Follower, free chan<- struct{}) {
	var index uint64
	for {
		h, err := n.cfg.Lease.Watch(ctx, index)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			n.log.Warn("watching the lease failed; retrying", "error", err)
			if !sleep(ctx, time.Second) {
				return
			}
			index = 0
			continue
		}
		index = h.Index
		st := f.Status()
		if ShouldContend(h, st.Healthy && st.State == follower.StateFollowing) {
			n.log.Info("the lease is free: racing to promote", "last_holder", h.Node, "last_token", h.LockIndex)
			free <- struct{}{}
			return
		}
		if !h.Held {
			// Free, but this follower is not ready: look again shortly.
			if !sleep(ctx, time.Second) {
				return
			}
			index = 0
		}
	}
}

// Promote asks a following node to become primary and waits for the
// outcome: planned (a live holder hands over), forced (wait for the lease
// to be free, or break it with force), then replay, claim and ship.
func (n *Node) Promote(ctx context.Context, force bool, timeout time.Duration) error {
	if timeout <= 0 {
		timeout = DefaultPromoteTimeout
	}
	if n.Status().Role == RolePrimary && n.holding() {
		return nil // already the primary: nothing to do
	}
	req := promoteRequest{force: force, timeout: timeout, reply: make(chan error, 1)}
	select {
	case n.promoteReq <- req:
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(5 * time.Second):
		return fmt.Errorf("database %s: this node is %s, not a follower that can promote", n.cfg.Name, n.Status().Role)
	}
	select {
	case err := <-req.reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// HandOff asks a primary node to hand over: it holds the app's writes,
// ships everything and releases the lease with the final TXID.
func (n *Node) HandOff(ctx context.Context) (ltx.TXID, error) { return n.HandOffTo(ctx, "") }

// HandOffTo is HandOff naming the node that asked for it: a lease that can
// name a successor (mode kv) lets only that node take it.
func (n *Node) HandOffTo(ctx context.Context, successor string) (ltx.TXID, error) {
	req := handoffRequest{ctx: ctx, successor: successor, reply: make(chan handoffResult, 1)}
	select {
	case n.handoffReq <- req:
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-time.After(5 * time.Second):
		return 0, fmt.Errorf("database %s: this node is %s, not a primary that can hand over", n.cfg.Name, n.Status().Role)
	}
	select {
	case res := <-req.reply:
		return res.txid, res.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// promote takes the lease, replays the store and claims the next TXID. On
// success the node holds the lease and the claim; the caller opens the
// database as primary.
func (n *Node) promote(ctx context.Context, f *follower.Follower, force bool, timeout time.Duration, auto bool) error {
	if n.cfg.Lease == nil {
		return fmt.Errorf("database %s: no lease section: promotion needs a lease (consul, or static naming this node)", n.cfg.Name)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	n.setRole(ctx, RolePromoting, "promotion requested")
	t0 := time.Now()
	l := n.cfg.Lease

	h, err := l.Holder(ctx)
	if err != nil {
		return fmt.Errorf("database %s: reading the lease: %w", n.cfg.Name, err)
	}
	step := PlanPromotion(h, n.holding(), force)
	if auto && step != StepAcquire {
		return fmt.Errorf("%w: %s holds it", ErrLostRace, h.Node)
	}
	n.log.Info("promoting", "step", step.String(), "holder", h.Node, "held", h.Held, "force", force)
	var until ltx.TXID
	switch step {
	case StepHandOff:
		txid, err := n.requestHandOff(ctx, h.AdvertiseURL)
		if errors.Is(err, ErrLostRace) {
			return fmt.Errorf("database %s: %w", n.cfg.Name, err)
		} else if err != nil {
			n.log.Warn("the primary did not hand over; waiting for its lease to expire (use -force to break it)", "holder", h.Node, "error", err)
		} else {
			until = txid
			n.log.Info("the primary handed over", "holder", h.Node, "final_txid", txid)
		}
	case StepBreak:
		if _, err := lease.Break(ctx, l); err != nil {
			return fmt.Errorf("database %s: breaking the lease of %s: %w", n.cfg.Name, h.Node, err)
		}
	}
	if step != StepHolding {
		if err := n.contend(ctx, step == StepAcquire); err != nil {
			return err
		}
	}

	if err := n.replayAndClaim(ctx, f, until); err != nil {
		return err
	}
	n.log.Info("promoted", "token", l.Token(), "elapsed", time.Since(t0))
	return nil
}

// replayAndClaim replays the store into the local database and claims the
// next TXID; the node holds the lease. A claim that finds its TXID taken
// means an upload of the old primary landed meanwhile: replay it and claim
// the next. On failure the lease is released.
func (n *Node) replayAndClaim(ctx context.Context, f *follower.Follower, until ltx.TXID) error {
	l := n.cfg.Lease
	for attempt := 1; ; attempt++ {
		at, err := f.CatchUp(ctx, until)
		if err != nil {
			n.release(ctx, 0)
			return fmt.Errorf("database %s: replaying the store: %w", n.cfg.Name, err)
		}
		if !n.holding() {
			return fmt.Errorf("database %s: the lease was lost while replaying the store", n.cfg.Name)
		}
		txid, err := Claim(ctx, n.cfg.Claim, at, n.cfg.Node, l.Token(), time.Now())
		if err == nil {
			n.mu.Lock()
			n.promos++
			n.claimed = txid
			n.mu.Unlock()
			n.log.Info("claimed the next TXID", "txid", txid, "token", l.Token())
			return nil
		}
		if !errors.Is(err, storage.ErrExists) || attempt == claimAttempts {
			n.release(ctx, 0)
			return fmt.Errorf("database %s: %w", n.cfg.Name, err)
		}
		n.log.Warn("the TXID to claim was taken meanwhile; replaying again", "txid", at.TXID+1)
	}
}

// contend takes the lease. startedFree: the lease was free when the
// promotion started, so finding it held by another node means losing a
// race (give up), not a holder to wait for.
func (n *Node) contend(ctx context.Context, startedFree bool) error {
	l := n.cfg.Lease
	for {
		_, ok, err := l.TryAcquire(ctx)
		if ok {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("database %s: gave up waiting for the lease: %w", n.cfg.Name, ctx.Err())
		}
		if errors.Is(err, lease.ErrNotStaticPrimary) {
			return fmt.Errorf("database %s: %w", n.cfg.Name, err)
		} else if err != nil {
			n.log.Warn("acquiring the lease failed; retrying", "error", err)
		} else if h, herr := l.Holder(ctx); herr == nil && LostRace(startedFree, h) {
			return fmt.Errorf("database %s: %w: %s (token %d)", n.cfg.Name, ErrLostRace, h.Node, h.LockIndex)
		}
		// Held by a node we wait for, or free under a lock-delay.
		if !sleep(ctx, 200*time.Millisecond) {
			return fmt.Errorf("database %s: gave up waiting for the lease: %w", n.cfg.Name, ctx.Err())
		}
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// probeHolder asks the lease holder's /healthz once a second and reports
// its session on dead once it has failed to answer healthy for DeadAfter:
// a primary that is gone (kill -9, a dead machine) keeps its Consul session
// for up to twice the TTL, and waiting for Consul to reap it would double
// the failover time.
func (n *Node) probeHolder(ctx context.Context, f *follower.Follower, dead chan<- string) {
	var session string
	var failingSince time.Time
	hc := &http.Client{Timeout: time.Second}
	for sleep(ctx, time.Second) {
		h, err := n.cfg.Lease.Holder(ctx)
		if err != nil || !h.Held || h.AdvertiseURL == "" {
			session, failingSince = "", time.Time{}
			continue
		}
		if h.Session != session {
			session, failingSince = h.Session, time.Time{}
		}
		now := time.Now()
		if holderAnswers(ctx, hc, h.AdvertiseURL, n.cfg.Name) {
			failingSince = time.Time{}
			continue
		}
		if failingSince.IsZero() {
			failingSince = now
			n.log.Warn("the primary does not answer its health check", "holder", h.Node, "url", h.AdvertiseURL)
		}
		st := f.Status()
		if HolderDead(failingSince, now, n.cfg.DeadAfter) && st.Healthy && st.State == follower.StateFollowing {
			n.log.Warn("the primary has not answered for too long: breaking its lease", "holder", h.Node, "failing_for", now.Sub(failingSince).Round(time.Millisecond))
			dead <- session
			return
		}
	}
}

func holderAnswers(ctx context.Context, hc *http.Client, advertise, db string) bool {
	u, err := EndpointURL(advertise, "healthz", db)
	if err != nil {
		return true // cannot judge: never break on a bad URL
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return true
	}
	resp, err := hc.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// breakDead destroys the session of a primary found dead, unless the lease
// changed hands meanwhile (another follower broke it first and the
// lock-delay keeps it free, or someone holds it anew).
func (n *Node) breakDead(ctx context.Context, session string) error {
	h, err := n.cfg.Lease.Holder(ctx)
	if err != nil {
		return err
	}
	if !h.Held || h.Session != session {
		return nil // already free or taken: promote decides
	}
	_, err = lease.Break(ctx, n.cfg.Lease)
	return err
}
