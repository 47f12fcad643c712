package litestream03

import (
	"fmt"
	"strings"
	"time"
)

// NoIndex is Target.Index when no index was asked for.
const NoIndex = -1

// Target is what to restore, as Litestream 0.3's restore flags say it:
// the newest state (zero Target), the newest state at or before Timestamp,
// or up to WAL Index (inclusive) of Generation. Index needs Generation.
type Target struct {
	Generation string
	Index      int // NoIndex, or the last WAL index to apply
	Timestamp  time.Time
}

// Latest is the zero target: the newest state.
var Latest = Target{Index: NoIndex}

func (t Target) String() string {
	var parts []string
	if t.Generation != "" {
		parts = append(parts, "generation "+t.Generation)
	}
	if t.Index != NoIndex {
		parts = append(parts, fmt.Sprintf("index %08x", t.Index))
	}
	if !t.Timestamp.IsZero() {
		parts = append(parts, "at or before "+t.Timestamp.UTC().Format(time.RFC3339Nano))
	}
	if len(parts) == 0 {
		return "newest"
	}
	return strings.Join(parts, ", ")
}

// Plan is one restore: a snapshot and the WAL segments to apply on top of
// it, in (index, offset) order; the segments of each index start at offset 0.
type Plan struct {
	Generation string
	Snapshot   Snapshot
	Segments   []Segment
}

// LastIndex is the highest WAL index the plan applies (the snapshot's if none).
func (p Plan) LastIndex() int {
	if n := len(p.Segments); n > 0 {
		return p.Segments[n-1].Index
	}
	return p.Snapshot.Index
}

// Bytes is the compressed size the plan downloads.
func (p Plan) Bytes() int64 {
	n := p.Snapshot.Size
	for _, s := range p.Segments {
		n += s.Size
	}
	return n
}

// PlanRestore picks the generation, the snapshot and the segments that
// restore t, as Litestream 0.3 does, and checks that the chain is complete.
//
// Generation: the one named, else for a timestamp the newest generation
// begun at or before it (so a time after the last write restores the newest
// state, like Understudy's own -timestamp; 0.3 refused such a time), else
// the generation updated last. Snapshot: the highest index not above
// t.Index and not created after t.Timestamp. Segments: from the snapshot's
// index on, up to t.Index, stopping at the first created after t.Timestamp.
func PlanRestore(r Replica, t Target) (Plan, error) {
	if t.Index != NoIndex && t.Generation == "" {
		return Plan{}, fmt.Errorf("an index (%08x) needs a generation: give -generation too (`understudy snapshots` lists them)", t.Index)
	}
	if len(r.Generations) == 0 {
		return Plan{}, ErrNoGenerations
	}
	g, err := pickGeneration(r, t)
	if err != nil {
		return Plan{}, err
	}
	snap, ok := pickSnapshot(g, t)
	if !ok {
		return Plan{}, fmt.Errorf("%w: generation %s has no snapshot at or before %s (its snapshots: %s)", ErrNotFound, g.Name, t, snapshotList(g))
	}
	p := Plan{Generation: g.Name, Snapshot: snap}
	for _, s := range g.Segments {
		if s.Index < snap.Index {
			continue
		}
		if t.Index != NoIndex && s.Index > t.Index {
			break
		}
		if !t.Timestamp.IsZero() && s.CreatedAt.After(t.Timestamp) {
			break // later segments of the WAL chain would leave a gap
		}
		p.Segments = append(p.Segments, s)
	}
	if err := checkChain(p); err != nil {
		return Plan{}, err
	}
	if t.Index != NoIndex && p.LastIndex() != t.Index {
		return Plan{}, fmt.Errorf("%w: generation %s has no WAL index %08x (it reaches %08x)", ErrNotFound, g.Name, t.Index, g.MaxIndex())
	}
	return p, nil
}

func pickGeneration(r Replica, t Target) (Generation, error) {
	if t.Generation != "" {
		if g := r.Generation(t.Generation); g != nil {
			return *g, nil
		}
		return Generation{}, fmt.Errorf("%w: generation %q (the replica has: %s)", ErrNotFound, t.Generation, strings.Join(r.Names(), ", "))
	}
	var best *Generation
	for i := range r.Generations {
		g := &r.Generations[i]
		if !t.Timestamp.IsZero() {
			if g.CreatedAt.After(t.Timestamp) {
				continue
			}
			if best == nil || g.CreatedAt.After(best.CreatedAt) {
				best = g
			}
			continue
		}
		if best == nil || g.UpdatedAt.After(best.UpdatedAt) {
			best = g
		}
	}
	if best == nil {
		earliest := r.Generations[0].CreatedAt
		for _, g := range r.Generations {
			if g.CreatedAt.Before(earliest) {
				earliest = g.CreatedAt
			}
		}
		return Generation{}, fmt.Errorf("%w: %s is before the oldest generation, which begins at %s",
			ErrNotFound, t.Timestamp.UTC().Format(time.RFC3339Nano), earliest.Format(time.RFC3339Nano))
	}
	return *best, nil
}

func pickSnapshot(g Generation, t Target) (Snapshot, bool) {
	var best Snapshot
	found := false
	for _, s := range g.Snapshots {
		if t.Index != NoIndex && s.Index > t.Index {
			continue
		}
		if !t.Timestamp.IsZero() && s.CreatedAt.After(t.Timestamp) {
			continue
		}
		if !found || s.Index >= best.Index {
			best, found = s, true
		}
	}
	return best, found
}

// checkChain requires every WAL index from the snapshot's to the last to
// have segments, each index's starting at offset 0 with offsets rising.
// (Whether each segment starts where the one before ended is known only
// once decompressed; Build checks that.)
func checkChain(p Plan) error {
	next := p.Snapshot.Index
	var prev *Segment
	for i := range p.Segments {
		s := &p.Segments[i]
		switch {
		case prev != nil && s.Index == prev.Index:
			if s.Offset <= prev.Offset {
				return fmt.Errorf("%w: %s and %s overlap", ErrCorrupt, prev.Key(), s.Key())
			}
		case s.Index != next:
			return fmt.Errorf("%w: generation %s has no segment of WAL index %08x, needed between the snapshot at %08x and %s",
				ErrMissing, p.Generation, next, p.Snapshot.Index, s.Key())
		case s.Offset != 0:
			return fmt.Errorf("%w: WAL index %08x of generation %s starts at %s, not at offset 0", ErrMissing, s.Index, p.Generation, s.Key())
		default:
			next = s.Index + 1
		}
		prev = s
	}
	return nil
}

func snapshotList(g Generation) string {
	if len(g.Snapshots) == 0 {
		return "none"
	}
	var parts []string
	for _, s := range g.Snapshots {
		parts = append(parts, fmt.Sprintf("%08x at %s", s.Index, s.CreatedAt.Format(time.RFC3339)))
	}
	return strings.Join(parts, ", ")
}
