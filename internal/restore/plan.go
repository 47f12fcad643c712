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
	"strings"

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

// A store can hold more than one way to reach a TXID: a snapshot and the
// first L0 file (a full image) both restore TXID 1; an L1 file and the L0
// files it compacts both lead over the same range. When one object turns
// out to be bad (its bytes fail the file checksum, it is not an LTX file,
// it belongs to another history), Restore plans again without it and takes
// any other path. The decisions are pure functions over a listing, below;
// restore.go does the I/O, blame.go says which object a failure is on.

// BadObject is an object a restore found unusable, and why.
type BadObject struct {
	File storage.FileInfo
	Err  error
	// Location is where the object is (a path or an s3:// URL), so that an
	// operator can move it aside; empty when the store cannot say.
	Location string
}

// fileKey identifies a file of a listing.
type fileKey struct {
	level    int
	min, max ltx.TXID
}

func keyOf(f storage.FileInfo) fileKey { return fileKey{f.Level, f.MinTXID, f.MaxTXID} }

// NoPathError says that every path to the target needs one of the bad
// objects. It names them and the ways out: an earlier TXID that avoids
// them (Newest, 0 when there is none), or moving an object aside.
type NoPathError struct {
	Target ltx.TXID
	Bad    []BadObject
	Newest ltx.TXID // newest position at or before Target restorable without Bad
	Err    error    // why the planner found no path without them
}

func (e *NoPathError) Error() string {
	var objs, locs []string
	for _, b := range e.Bad {
		objs = append(objs, b.Err.Error())
		if b.Location != "" {
			locs = append(locs, b.Location)
		}
	}
	it := "it"
	if len(e.Bad) > 1 {
		it = "them"
	}
	var way []string
	if e.Newest != 0 {
		way = append(way, fmt.Sprintf("restore TXID %s, the newest position that does not need %s, with -txid %s", e.Newest, it, e.Newest))
	} else {
		way = append(way, fmt.Sprintf("no position up to TXID %s can be restored without %s", e.Target, it))
	}
	aside := "move the bad object aside if it does not belong to this replica's history, or put a good copy in its place"
	if len(locs) > 0 {
		aside += " (" + strings.Join(locs, ", ") + ")"
	}
	way = append(way, aside)
	why := fmt.Sprintf("without %s: %v", it, e.Err)
	if errors.Is(e.Err, ErrAfterNewest) {
		why = "no other file reaches TXID " + e.Target.String()
	}
	return fmt.Sprintf("%s; no restore path to TXID %s avoids %s (%s); way out: %s",
		strings.Join(objs, "; "), e.Target, it, why, strings.Join(way, "; or "))
}

// Unwrap gives the bad objects' errors (ErrCorrupt, ErrForeignObject, ...),
// not the planner's: a replica whose only snapshot is corrupt does not
// "hold nothing to restore".
func (e *NoPathError) Unwrap() []error {
	errs := make([]error, len(e.Bad))
	for i, b := range e.Bad {
		errs[i] = b.Err
	}
	return errs
}

// PlanAvoiding is PlanTXID without the bad objects: the plan for target (0
// = the newest position in the whole listing, bad objects included, so
// that a bad newest file is not silently skipped to an older position)
// that uses none of them. Without a path it returns a *NoPathError.
func PlanAvoiding(files []storage.FileInfo, target ltx.TXID, bad []BadObject) (Plan, error) {
	if len(bad) == 0 {
		return PlanTXID(files, target)
	}
	if target == 0 {
		target = ListingBounds(files).Newest
	}
	good := withoutBad(files, bad)
	plan, err := PlanTXID(good, target)
	if err == nil {
		return plan, nil
	}
	return Plan{}, &NoPathError{Target: target, Bad: bad, Newest: NewestRestorable(good, target), Err: err}
}

func withoutBad(files []storage.FileInfo, bad []BadObject) []storage.FileInfo {
	skip := map[fileKey]bool{}
	for _, b := range bad {
		skip[keyOf(b.File)] = true
	}
	var good []storage.FileInfo
	for _, f := range files {
		if !skip[keyOf(f)] {
			good = append(good, f)
		}
	}
	return good
}

// NewestRestorable is the newest position at or before limit that a plan
// over files can reach (a snapshot, then contiguous files), 0 if none.
func NewestRestorable(files []storage.FileInfo, limit ltx.TXID) ltx.TXID {
	var rest []storage.FileInfo
	reached := map[ltx.TXID]bool{}
	var queue []ltx.TXID
	for _, f := range files {
		switch {
		case f.MaxTXID > limit:
		case isSnapshot(f):
			if !reached[f.MaxTXID] {
				reached[f.MaxTXID] = true
				queue = append(queue, f.MaxTXID)
			}
		case f.Level != storage.SnapshotLevel:
			rest = append(rest, f)
		}
	}
	g := newChainGraph(rest)
	var newest ltx.TXID
	for len(queue) > 0 {
		pos := queue[0]
		queue = queue[1:]
		newest = max(newest, pos)
		for _, f := range g.from[pos+1] {
			if !reached[f.MaxTXID] {
				reached[f.MaxTXID] = true
				queue = append(queue, f.MaxTXID)
			}
		}
	}
	return newest
}
