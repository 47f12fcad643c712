package primary

import (
	"context"
	"fmt"
	"time"

	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/internal/storage"
)

// planRetention returns the files no restore within retention needs:
//   - the snapshot kept is the newest one taken at or before now-retention
//     (a restore to any time in the window starts from it or a later one);
//     with none that old, the oldest snapshot. Older snapshots, and every
//     file of levels 0..8 ending at or before the kept snapshot, go.
//   - L0 files already compacted into L1 (MaxTXID <= l1Max) go once they
//     are older than l0Retention.
//
// Nothing after the kept snapshot is removed by the first rule, and the
// newest snapshot is never removed.
func planRetention(levels map[int][]storage.FileInfo, now time.Time, retention, l0Retention time.Duration, l1Max ltx.TXID) []storage.FileInfo {
	var out []storage.FileInfo
	snaps := levels[storage.SnapshotLevel]
	var keep *storage.FileInfo
	cutoff := now.Add(-retention)
	for i := range snaps {
		s := &snaps[i]
		if !s.CreatedAt.After(cutoff) && (keep == nil || s.MaxTXID > keep.MaxTXID) {
			keep = s
		}
	}
	if keep == nil {
		for i := range snaps {
			if keep == nil || snaps[i].MaxTXID < keep.MaxTXID {
				keep = &snaps[i]
			}
		}
	}
	removed := map[[3]uint64]bool{}
	add := func(f storage.FileInfo) {
		k := [3]uint64{uint64(f.Level), uint64(f.MinTXID), uint64(f.MaxTXID)}
		if !removed[k] {
			removed[k] = true
			out = append(out, f)
		}
	}
	if keep != nil {
		for lvl, files := range levels {
			for _, f := range files {
				if lvl == storage.SnapshotLevel {
					if f.MaxTXID < keep.MaxTXID {
						add(f)
					}
				} else if f.MaxTXID <= keep.MaxTXID {
					add(f)
				}
			}
		}
	}
	l0cut := now.Add(-l0Retention)
	for _, f := range levels[0] {
		if f.MaxTXID <= l1Max && f.CreatedAt.Before(l0cut) {
			add(f)
		}
	}
	storage.SortFileInfos(out)
	return out
}

// enforceRetention deletes what planRetention returns.
func (r *replica) enforceRetention(ctx context.Context) error {
	r.mu.Lock()
	levels := map[int][]storage.FileInfo{}
	var l1Max ltx.TXID
	for lvl, fs := range r.levels {
		levels[lvl] = append([]storage.FileInfo(nil), fs...)
	}
	for _, f := range r.levels[1] {
		l1Max = max(l1Max, f.MaxTXID)
	}
	if len(r.d.opts.Levels) == 0 {
		l1Max = 0
	}
	r.mu.Unlock()
	del := planRetention(levels, r.d.clock.Now(), r.opts.Retention, r.d.opts.L0Retention, l1Max)
	if len(del) == 0 {
		return nil
	}
	dctx, cancel := context.WithTimeout(ctx, RequestTimeout+time.Duration(len(del))*100*time.Millisecond)
	err := r.c.Delete(dctx, del)
	cancel()
	r.count("delete", 0, err)
	if err != nil {
		return fmt.Errorf("replica %s: retention: delete %d files: %w", r.name, len(del), err)
	}
	gone := map[[3]uint64]bool{}
	for _, f := range del {
		gone[[3]uint64{uint64(f.Level), uint64(f.MinTXID), uint64(f.MaxTXID)}] = true
	}
	r.mu.Lock()
	for lvl, fs := range r.levels {
		kept := fs[:0]
		for _, f := range fs {
			if !gone[[3]uint64{uint64(lvl), uint64(f.MinTXID), uint64(f.MaxTXID)}] {
				kept = append(kept, f)
			}
		}
		r.levels[lvl] = kept
	}
	r.mu.Unlock()
	r.log.Debug("retention", "deleted", len(del))
	return nil
}

// snapshotDue reports whether the newest snapshot is older than the
// snapshot interval.
func (r *replica) snapshotDue(now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	var newest time.Time
	for _, s := range r.levels[storage.SnapshotLevel] {
		if s.CreatedAt.After(newest) {
			newest = s.CreatedAt
		}
	}
	return len(r.levels[storage.SnapshotLevel]) == 0 || !now.Before(newest.Add(r.opts.SnapshotInterval))
}
