// Package restore materialises a replica's database at its newest position or
// at any TXID or time: it plans which LTX files to apply (pure functions over
// a listing, in this file), downloads them in parallel with bounded memory,
// verifies every file checksum and the chain of database checksums carried
// in the objects' metadata, and renames a verified file into place. The
// follower bootstraps itself with Restore.
package restore

import (
	"errors"
	"fmt"
	"sort"

	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/internal/storage"
)

// Errors a restore can fail with. Every returned error wraps one of them (or
// an I/O error) and names the object and the problem in its text.
var (
	// ErrEmptyReplica: the store holds no LTX file at all.
	ErrEmptyReplica = errors.New("replica holds no LTX files")
	// ErrNoSnapshot: the store holds LTX files but no snapshot to start from.
	ErrNoSnapshot = errors.New("no snapshot in replica")
	// ErrBeforeEarliest: the target lies before the earliest restorable point.
	ErrBeforeEarliest = errors.New("target before the earliest restorable point")
	// ErrAfterNewest: the target lies after the newest position in the store.
	ErrAfterNewest = errors.New("target after the newest position")
	// ErrMissingFile: the chain of files from a snapshot to the target has a gap.
	ErrMissingFile = errors.New("missing file in the chain")
	// ErrCorrupt: an object failed its checksum or could not be decoded.
	ErrCorrupt = errors.New("corrupt object")
	// ErrForeignObject: an object under an LTX name is not an LTX file, or not
	// the one its name says.
	ErrForeignObject = errors.New("foreign object")
	// ErrChecksumChain: the database checksums in the metadata do not chain up,
	// or the restored database does not match the target's checksum.
	ErrChecksumChain = errors.New("database checksum mismatch")
	// ErrOutputExists: the output path (or a WAL/SHM file beside it) exists.
	ErrOutputExists = errors.New("output exists")
)

// kindError is an error of one of the kinds above whose message already
// says so in its own words.
type kindError struct {
	kind error
	msg  string
}

func (e *kindError) Error() string { return e.msg }
func (e *kindError) Unwrap() error { return e.kind }

func kindErrorf(kind error, format string, args ...any) error {
	return &kindError{kind: kind, msg: fmt.Sprintf(format, args...)}
}

// Plan is the list of files that restore one TXID: a snapshot, then files
// from any level whose TXID ranges continue it without gap up to Target.
type Plan struct {
	Target ltx.TXID
	Files  []storage.FileInfo // in apply order; Files[0] is the snapshot
}

// Bytes is the total size of the plan's files.
func (p Plan) Bytes() int64 {
	var n int64
	for _, f := range p.Files {
		n += f.Size
	}
	return n
}

// Levels counts the plan's files and bytes per level.
func (p Plan) Levels() map[int]LevelSummary {
	m := map[int]LevelSummary{}
	for _, f := range p.Files {
		s := m[f.Level]
		s.Files++
		s.Bytes += f.Size
		m[f.Level] = s
	}
	return m
}

// LevelSummary is one level's share of a plan.
type LevelSummary struct {
	Files int
	Bytes int64
}

// FileName names a file in messages: "L0 00000000000000a1-00000000000000a1".
func FileName(f storage.FileInfo) string {
	return fmt.Sprintf("L%d %s-%s", f.Level, f.MinTXID, f.MaxTXID)
}

// isSnapshot reports whether f is a restore starting point: a file that
// covers the history from TXID 1, and so holds every page of the database
// (ltx's rule for MinTXID 1). Usually a level-9 snapshot; also the first L0
// file (a full image) and the compactions that include it (L1 1-5, L2 1-20,
// ...), which remain after retention removes the L0 files inside them. A
// level-9 file not starting at 1 is not ours or Litestream's and is ignored.
func isSnapshot(f storage.FileInfo) bool {
	return f.MinTXID == 1
}

// Bounds summarises a listing: the newest TXID in any level and the earliest
// restorable TXID (the oldest snapshot's end), each 0 when absent.
type Bounds struct {
	Newest   ltx.TXID
	Earliest ltx.TXID
}

// ListingBounds computes the bounds of a listing.
func ListingBounds(files []storage.FileInfo) Bounds {
	var b Bounds
	for _, f := range files {
		if f.MaxTXID > b.Newest {
			b.Newest = f.MaxTXID
		}
		if isSnapshot(f) && (b.Earliest == 0 || f.MaxTXID < b.Earliest) {
			b.Earliest = f.MaxTXID
		}
	}
	return b
}

// PlanTXID chooses the files that restore target (0 = the newest position)
// from a listing of every level: the newest snapshot at or before target,
// then the fewest files that continue it contiguously to exactly target.
// An older snapshot is tried when the newest one's chain has a gap (retention
// may have removed files after it). Errors say why no plan exists.
func PlanTXID(files []storage.FileInfo, target ltx.TXID) (Plan, error) {
	if len(files) == 0 {
		return Plan{}, ErrEmptyReplica
	}
	b := ListingBounds(files)
	if target == 0 {
		target = b.Newest
	}
	if target > b.Newest {
		return Plan{}, kindErrorf(ErrAfterNewest, "target TXID %s is after the newest position %s in the replica", target, b.Newest)
	}
	if b.Earliest == 0 {
		return Plan{}, fmt.Errorf("%w: level %d is empty, so no TXID can be restored (files exist up to TXID %s)", ErrNoSnapshot, storage.SnapshotLevel, b.Newest)
	}
	if target < b.Earliest {
		return Plan{}, kindErrorf(ErrBeforeEarliest, "target TXID %s is before the earliest restorable point, TXID %s (the oldest snapshot)", target, b.Earliest)
	}

	var snaps, rest []storage.FileInfo
	for _, f := range files {
		if f.Level == storage.SnapshotLevel && !isSnapshot(f) {
			continue
		}
		switch {
		case isSnapshot(f):
			if f.MaxTXID <= target {
				snaps = append(snaps, f)
			}
		case f.Level != storage.SnapshotLevel && f.MaxTXID <= target:
			rest = append(rest, f)
		}
	}
	// Newest snapshot first; among equal ones level 9, then the smaller file.
	sort.Slice(snaps, func(i, j int) bool { return reachesFurther(snaps[i], snaps[j]) })
	g := newChainGraph(rest)
	var firstErr error
	for _, s := range snaps {
		chain, err := g.shortest(s.MaxTXID, target)
		if err == nil {
			return Plan{Target: target, Files: append([]storage.FileInfo{s}, chain...)}, nil
		}
		if firstErr == nil {
			firstErr = fmt.Errorf("from snapshot %s: %w", FileName(s), err)
		}
	}
	// A compacted file that spans the target means the L0 files inside it
	// are gone: the target is not a restorable point, but its ends are.
	// The narrowest such file names the nearest points.
	var span *storage.FileInfo
	for i, f := range files {
		if f.Level == storage.SnapshotLevel || f.MinTXID > target || target >= f.MaxTXID {
			continue
		}
		if span == nil || f.MaxTXID-f.MinTXID < span.MaxTXID-span.MinTXID {
			span = &files[i]
		}
	}
	if span != nil {
		return Plan{}, fmt.Errorf("%w (%s spans the target: TXID %s is not a restorable point any more; try TXID %s or %s)",
			firstErr, FileName(*span), target, span.MinTXID-1, span.MaxTXID)
	}
	return Plan{}, firstErr
}

// reachesFurther orders files by MaxTXID descending, then level
// descending, then size ascending: the order both the snapshots and the
// files starting at one TXID are tried in.
func reachesFurther(a, b storage.FileInfo) bool {
	if a.MaxTXID != b.MaxTXID {
		return a.MaxTXID > b.MaxTXID
	}
	if a.Level != b.Level {
		return a.Level > b.Level
	}
	return a.Size < b.Size
}

// chainGraph indexes files by the TXID they start at.
type chainGraph struct {
	from map[ltx.TXID][]storage.FileInfo
	all  []storage.FileInfo
}

func newChainGraph(files []storage.FileInfo) *chainGraph {
	g := &chainGraph{from: map[ltx.TXID][]storage.FileInfo{}, all: files}
	for _, f := range files {
		g.from[f.MinTXID] = append(g.from[f.MinTXID], f)
	}
	// Longest jumps first (then higher levels, then smaller files), so that
	// among equally short chains the search keeps the one with big files from
	// compacted levels.
	for k, fs := range g.from {
		sort.Slice(fs, func(i, j int) bool { return reachesFurther(fs[i], fs[j]) })
		g.from[k] = fs
	}
	return g
}

// shortest returns the fewest files leading from position start (the state
// after TXID start) to exactly target, by breadth-first search over TXID
// positions. Every file in the graph ends at or before target.
func (g *chainGraph) shortest(start, target ltx.TXID) ([]storage.FileInfo, error) {
	if start == target {
		return nil, nil
	}
	type step struct {
		prev ltx.TXID
		file storage.FileInfo
	}
	via := map[ltx.TXID]step{}
	queue := []ltx.TXID{start}
	furthest := start
	for len(queue) > 0 {
		pos := queue[0]
		queue = queue[1:]
		for _, f := range g.from[pos+1] {
			if _, seen := via[f.MaxTXID]; seen || f.MaxTXID == start {
				continue
			}
			via[f.MaxTXID] = step{prev: pos, file: f}
			if f.MaxTXID > furthest {
				furthest = f.MaxTXID
			}
			if f.MaxTXID == target {
				var chain []storage.FileInfo
				for p := target; p != start; p = via[p].prev {
					chain = append(chain, via[p].file)
				}
				for i, j := 0, len(chain)-1; i < j; i, j = i+1, j-1 {
					chain[i], chain[j] = chain[j], chain[i]
				}
				return chain, nil
			}
			queue = append(queue, f.MaxTXID)
		}
	}
	// Name the gap: from the furthest reachable position to the next file
	// that starts after it (or to the target).
	gapEnd := target
	for _, f := range g.all {
		if f.MinTXID > furthest+1 && f.MinTXID-1 < gapEnd {
			gapEnd = f.MinTXID - 1
		}
	}
	return nil, fmt.Errorf("%w: no file covers TXIDs %s-%s (the chain reaches TXID %s; target %s)",
		ErrMissingFile, furthest+1, gapEnd, furthest, target)
}
