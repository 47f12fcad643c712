package fleet

import (
	"context"
	"errors"
	"maps"
	"sync"
	"time"

	"github.com/understudy-db/understudy/internal/heads"
	"github.com/understudy-db/understudy/internal/storage"
)

// The fleet keeps one heads index (package heads) per replica of the
// entry, at the replica's prefix root: every database's newest TXID in
// that store, so that a follower of the whole directory polls one object
// instead of one per database. It is rewritten at most once per sync
// interval of its replica, and only when a head moved, a database came or
// left: an idle directory writes nothing. A parked database keeps the head
// it had when it was parked; one whose position is not known yet (waiting
// to be opened at start, or failing to open) keeps the head of the index
// last read or written; a database that left the directory drops out.

// HeadsStore is what the index is written to: the client of a replica's
// prefix (every store implements both).
type HeadsStore interface {
	storage.KeyReader
	storage.KeyWriter
}

// HeadsReplica is one replica whose index the fleet keeps.
type HeadsReplica struct {
	Name     string // the replica's name, as in the databases' status
	Store    HeadsStore
	Interval time.Duration // the replica's sync interval: at most one write per interval
}

// HeadsOp says what a HeadsObserver saw: one request to the store.
type HeadsOp string

// The requests the index makes.
const (
	HeadsRead  HeadsOp = "get_heads"
	HeadsWrite HeadsOp = "put_heads"
)

// HeadsObserver is told of every request for the index (metrics).
type HeadsObserver func(replica string, op HeadsOp, err error)

// headsTimeout bounds one read or write of the index.
const headsTimeout = 30 * time.Second

// Bounds of the period at which the heads are looked at: the shortest
// sync interval of the replicas, but not busier than minHeadsPeriod, and
// at least once a second so that a long interval is kept to closely.
const (
	minHeadsPeriod = 50 * time.Millisecond
	maxHeadsPeriod = time.Second
)

// headsWriter is the index of one replica. Guarded by the fleet's headsMu.
type headsWriter struct {
	rep  HeadsReplica
	want map[string]uint64 // what the index should say now
	have map[string]uint64 // what the store holds (last written or read); nil: unknown
	at   time.Time         // the last write attempt
	fail error             // the last write's error, nil after a success
}

// headsState is the fleet's part for the indexes.
type headsState struct {
	mu      sync.Mutex // the writers; taken after the fleet's mu, never while holding it
	writers []*headsWriter
	// dirty is set, under the fleet's mu, when the heads may have changed
	// in a way the running databases' status does not show: a database
	// came, left, was parked (its final sync) or opened.
	dirty bool
	done  chan struct{} // closed when headsLoop returns
}

// markHeadsLocked notes a change of membership or state for the next look.
func (f *Fleet) markHeadsLocked() { f.heads.dirty = true }

// headsLoop keeps the indexes until ctx ends. It reads each index once at
// the start, so that a restart over unchanged databases writes nothing.
func (f *Fleet) headsLoop(ctx context.Context) {
	defer close(f.heads.done)
	f.mu.Lock()
	f.heads.dirty = true
	f.mu.Unlock()
	period := maxHeadsPeriod
	for _, r := range f.opts.Heads {
		period = min(period, max(r.Interval, minHeadsPeriod))
	}
	f.heads.mu.Lock()
	for _, w := range f.heads.writers {
		w.have = f.readHeads(ctx, w)
	}
	f.heads.mu.Unlock()
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		f.lookAtHeads(ctx, time.Now(), false)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// readHeads reads w's index as the store holds it; nil when it cannot be
// read (none yet, damaged, or the store failed): the first look writes it.
func (f *Fleet) readHeads(ctx context.Context, w *headsWriter) map[string]uint64 {
	cctx, cancel := context.WithTimeout(ctx, headsTimeout)
	defer cancel()
	ix, err := heads.Read(cctx, w.rep.Store)
	f.observe(w.rep.Name, HeadsRead, err)
	switch {
	case err == nil:
		return ix.Heads
	case errors.Is(err, storage.ErrNotFound):
		return map[string]uint64{}
	default:
		if ctx.Err() == nil {
			f.log.Warn("cannot read the heads index; writing it anew", "replica", w.rep.Name, "error", err)
		}
		return nil
	}
}

func (f *Fleet) observe(replica string, op HeadsOp, err error) {
	if f.opts.HeadsObserver != nil {
		f.opts.HeadsObserver(replica, op, err)
	}
}

// lookAtHeads works out the heads when they may have moved and writes the
// indexes that differ from the store and are due (final: all that differ,
// at the shutdown).
func (f *Fleet) lookAtHeads(ctx context.Context, now time.Time, final bool) {
	f.heads.mu.Lock()
	defer f.heads.mu.Unlock()
	ws := f.heads.writers
	f.mu.Lock()
	if f.heads.dirty || f.runningMovedLocked(ws) {
		f.heads.dirty = false
		for _, w := range ws {
			w.want = f.headsLocked(w)
		}
	}
	f.mu.Unlock()
	for _, w := range ws {
		if w.want == nil || maps.Equal(w.want, w.have) && w.have != nil {
			continue
		}
		if !final && now.Sub(w.at) < w.rep.Interval {
			continue
		}
		w.at = now
		cctx, cancel := context.WithTimeout(ctx, headsTimeout)
		err := heads.Write(cctx, w.rep.Store, heads.Index{Written: now, Heads: w.want})
		cancel()
		f.observe(w.rep.Name, HeadsWrite, err)
		switch {
		case err != nil && w.fail == nil && ctx.Err() == nil:
			f.log.Warn("cannot write the heads index; trying again at the next sync interval (followers of the directory see the old heads meanwhile)",
				"replica", w.rep.Name, "error", err)
		case err == nil && w.fail != nil:
			f.log.Info("heads index written again", "replica", w.rep.Name)
		}
		w.fail = err
		if err == nil {
			w.have = w.want
		}
	}
}

// runningMovedLocked tells whether a running database's head differs from
// what the indexes say: the only change no mark shows.
func (f *Fleet) runningMovedLocked(ws []*headsWriter) bool {
	for _, m := range f.members {
		if m.db == nil || m.gone {
			continue
		}
		st := m.db.Status()
		for _, w := range ws {
			for _, r := range st.Replicas {
				if r.Name == w.rep.Name && r.TXID != 0 && uint64(r.TXID) != w.want[m.rel] {
					return true
				}
			}
		}
	}
	return false
}

// headsLocked is the index w should hold now.
func (f *Fleet) headsLocked(w *headsWriter) map[string]uint64 {
	out := make(map[string]uint64, len(f.members))
	for _, m := range f.members {
		if m.gone {
			continue
		}
		txid := uint64(0)
		if m.db != nil {
			for _, r := range m.db.Status().Replicas {
				if r.Name == w.rep.Name {
					txid = uint64(r.TXID)
				}
			}
		} else {
			for _, r := range m.last.Replicas {
				if r.Name == w.rep.Name {
					txid = uint64(r.TXID)
				}
			}
		}
		if txid == 0 {
			// Not known yet (not opened since the start, or failing):
			// what the store's index said, if anything.
			txid = w.have[m.rel]
			if txid == 0 {
				txid = w.want[m.rel]
			}
		}
		if txid != 0 {
			out[m.rel] = txid
		}
	}
	return out
}

// startHeads starts headsLoop when the entry has indexes to keep; stopHeads
// waits for it (ctx has ended) and writes the final heads, after the
// shutdown's final syncs.
func (f *Fleet) startHeads(ctx context.Context) {
	if len(f.opts.Heads) == 0 {
		return
	}
	for _, r := range f.opts.Heads {
		f.heads.writers = append(f.heads.writers, &headsWriter{rep: r})
	}
	f.heads.done = make(chan struct{})
	go f.headsLoop(ctx)
}

func (f *Fleet) stopHeads() {
	if f.heads.done == nil {
		return
	}
	<-f.heads.done
	f.mu.Lock()
	f.heads.dirty = true
	f.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), headsTimeout)
	defer cancel()
	f.lookAtHeads(ctx, time.Now(), true)
}
