package primary

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/internal/storage"
)

// DefaultUploadWindow is how many L0 files a replica uploads at once when
// it is behind. One at a time, a store round trip longer than the sync
// interval made the backlog grow for as long as it lasted (at 2 s round
// trips and one TXID a second, pending_txids went 70 -> 92 in 45 s).
// Several at once is safe: creates are create-only, so a key is written
// once whatever the order of arrival, and readers need the chain
// contiguous, not created in order (a follower polls the next L0 key; a
// restore plans over a listing). The replica's position only moves over
// the contiguous prefix of files known to be in the store.
const DefaultUploadWindow = 8

// chainEnd is the replica's position from a listing of its levels: the end
// of the L0 chain (levels 0..8). A snapshot alone does not count, so that a
// replica that got the snapshot of a history break but not its L0 file
// still gets the L0 file (the chain stays whole). Above the newest file of
// levels 1..8 and of the snapshots, L0 files went up in windows of
// concurrent creates: a process that died with one in flight can have left
// a gap there (4 and 5 made it, 3 did not). The position ends before the
// first gap, so that the missing file is uploaded (and the ones above it
// are recognised as ours, ownedBy) instead of being skipped for good.
func chainEnd(levels map[int][]storage.FileInfo) ltx.TXID {
	var hi, floor ltx.TXID
	for lvl, files := range levels {
		for _, f := range files {
			if lvl != storage.SnapshotLevel {
				hi = max(hi, f.MaxTXID)
			}
			if lvl != storage.LevelL0 {
				floor = max(floor, f.MaxTXID)
			}
		}
	}
	if hi <= floor {
		return hi
	}
	have := map[ltx.TXID]bool{}
	for _, f := range levels[storage.LevelL0] {
		if f.MinTXID > floor {
			have[f.MinTXID] = true
		}
	}
	for t := floor + 1; t <= hi; t++ {
		if !have[t] {
			return t - 1
		}
	}
	return hi
}

// l0Upload is the outcome of one L0 create of a window.
type l0Upload struct {
	txid ltx.TXID
	md   fileMeta
	info storage.FileInfo
	err  error
}

// uploadL0s uploads the local L0 files after the replica's position, up
// to DefaultUploadWindow at once, and advances the position over each
// contiguous run that made it.
func (r *replica) uploadL0s(ctx context.Context) error {
	for {
		if err := r.d.fencedErr(); err != nil {
			return err
		}
		r.mu.Lock()
		from, need := r.pos+1, r.needSnapshot
		r.mu.Unlock()
		head := ltx.TXID(r.d.head.Load())
		if from > head {
			return nil
		}
		if !r.d.local.has(from) {
			r.noteMissing(from, need)
			return nil
		}
		n := 0
		for t := from; t <= head && n < DefaultUploadWindow && r.d.local.has(t); t++ {
			n++
		}
		if err := r.settleWindow(ctx, r.uploadWindow(ctx, from, n)); err != nil {
			return err
		}
	}
}

// noteMissing handles a local L0 file the replica needs that is gone: the
// replica can only catch up with a snapshot now.
func (r *replica) noteMissing(t ltx.TXID, alreadyNeeded bool) {
	if alreadyNeeded {
		return
	}
	r.mu.Lock()
	r.needSnapshot = true
	announced := r.dropWarned
	r.mu.Unlock()
	if announced { // capLocalLocked warned when it dropped the file
		r.log.Info("local L0 file to catch up was dropped; the replica needs a snapshot", "txid", t)
	} else {
		r.log.Warn("local L0 file to catch up is missing; the replica needs a snapshot", "txid", t)
	}
	r.d.requestSnapshot()
}

// uploadWindow creates the L0 files from..from+n-1 concurrently.
func (r *replica) uploadWindow(ctx context.Context, from ltx.TXID, n int) []l0Upload {
	out := make([]l0Upload, n)
	var wg sync.WaitGroup
	for i := range out {
		t := from + ltx.TXID(i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = r.uploadL0(ctx, t)
		}()
	}
	wg.Wait()
	return out
}

// uploadL0 creates one local L0 file in the store.
func (r *replica) uploadL0(ctx context.Context, t ltx.TXID) l0Upload {
	u := l0Upload{txid: t}
	md, err := r.d.local.meta(t)
	if err != nil {
		u.err = fmt.Errorf("replica %s: local metadata of TXID %s: %w", r.name, t, err)
		return u
	}
	u.md = md
	u.info, u.err = r.create(ctx, 0, t, t, r.d.local.path(t), md.Size, r.d.storeMetadata(md, true))
	return u
}

// windowPrefix decides what a window of creates (their errors, in TXID
// order) means for the position: it advances over the first n, the
// contiguous run that made it; fenced is the index of the first create
// that found another writer's object (-1: none), above which the files
// that made it must be withdrawn.
func windowPrefix(errs []error) (n, fenced int) {
	n, fenced = len(errs), -1
	for i, err := range errs {
		if err != nil && n == len(errs) {
			n = i
		}
		if errors.Is(err, ErrFenced) {
			return n, i
		}
	}
	return n, fenced
}

// settleWindow advances the position over the window's contiguous prefix
// of successful creates and returns the failure that ended it. Files that
// made it after a failure stay in the store and are recognised as ours
// when they are created again (ownedBy). A file dropped locally meanwhile
// (capLocalLocked) ends the prefix without an error: the caller's loop
// finds it missing.
func (r *replica) settleWindow(ctx context.Context, ups []l0Upload) error {
	errs := make([]error, len(ups))
	for i, u := range ups {
		errs[i] = u.err
	}
	n, fenced := windowPrefix(errs)
	if fenced >= 0 {
		r.withdrawAbove(ctx, ups[fenced+1:])
		return ups[fenced].err
	}
	for _, u := range ups[:n] {
		r.addFile(u.info)
		r.mu.Lock()
		r.pos, r.posSum, r.lastSync, r.lastErr = u.txid, u.md.Post, r.d.clock.Now(), nil
		r.mu.Unlock()
		r.d.m.syncs.WithLabelValues(r.d.metricsDB(), r.name).Inc()
		r.d.m.txid.WithLabelValues(r.d.metricsDB(), r.name).Set(float64(u.txid))
		r.log.Debug("uploaded", "txid", u.txid, "size", u.md.Size, "pages", u.md.Pages)
	}
	if n < len(ups) && r.d.local.has(ups[n].txid) {
		return ups[n].err
	}
	return nil // all made it, or the next one was dropped between the check and the open
}

// withdrawAbove deletes the window's files that made it into the store
// above a TXID another writer owns. They are provably ours (our create
// won their keys), and past the other writer's claim they are no history
// at all: left there, they would break its chain (its next create would
// find the key taken) and a follower polling the next key would get a file
// that does not continue what it applied. Each is read back first and
// deleted only if it is still ours: the other writer may have put its own
// file at the key since (one that replaced our orphan by a higher fencing
// token, or on a store without create-only writes a PUT over ours), and
// deleting that would cut its history. Best effort: the fencing stands
// whatever happens here.
func (r *replica) withdrawAbove(ctx context.Context, ups []l0Upload) {
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), RequestTimeout)
	defer cancel()
	var ours []storage.FileInfo
	for _, u := range ups {
		if u.err == nil && r.stillOurs(dctx, u.info) {
			ours = append(ours, u.info)
		}
	}
	if len(ours) == 0 {
		return
	}
	err := r.c.Delete(dctx, ours)
	r.count("delete", 0, err)
	first, last := ours[0].MinTXID, ours[len(ours)-1].MaxTXID
	if err != nil {
		r.log.Error("fenced: could not withdraw the L0 files this node uploaded above the other writer's TXID; delete them by hand",
			"first_txid", first, "last_txid", last, "error", err)
		return
	}
	r.log.Warn("fenced: withdrew the L0 files this node uploaded above the other writer's TXID", "first_txid", first, "last_txid", last, "files", len(ours))
}

// stillOurs reports whether the object at info's key is still the one our
// create put there (same writer and the same change, ownedBy), read back.
// Unknown (no metadata to compare, or the read failed) is false: leaving
// our file costs the other writer a fence, deleting its file costs it
// history.
func (r *replica) stillOurs(ctx context.Context, info storage.FileInfo) bool {
	if info.Metadata == nil {
		return false
	}
	got, err := r.readBack(ctx, info.Level, info.MinTXID, info.MaxTXID, info.Size)
	if err != nil {
		r.log.Warn("fenced: could not read back an L0 file this node uploaded above the other writer's TXID; leaving it", "txid", info.MinTXID, "error", err)
		return false
	}
	if ownedBy(upload{Size: info.Size, MD: *info.Metadata}, got) != ownedByUs {
		r.log.Warn("fenced: the L0 file this node uploaded above the other writer's TXID was replaced by another writer's; leaving it", "txid", info.MinTXID)
		return false
	}
	return true
}
