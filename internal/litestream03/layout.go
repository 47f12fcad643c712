// Package litestream03 reads replicas that Litestream 0.3 wrote, so that its
// users can restore them with Understudy and move over (issue 11). Its
// layout, the same on a file replica (below the directory) and on S3 (below
// the replica's path):
//
//	generations/<generation>/snapshots/<index %08x>.snapshot.lz4
//	generations/<generation>/wal/<index %08x>_<offset %08x>.wal.lz4
//
// A generation (16 lowercase hex digits) is one unbroken WAL history of the
// database; Litestream starts a new one whenever it loses track of the WAL.
// An index is one WAL file of the generation (a new one after every WAL
// restart); a WAL segment holds the bytes of that WAL file from offset on
// (the first, at offset 0, starts with the WAL header), LZ4-framed. A
// snapshot at index N is the database file LZ4-framed, taken while WAL N was
// current: restoring it means applying WAL N, N+1, ... on top. Objects carry
// no metadata; their time is the file's mtime or the object's LastModified.
//
// Deciding what to restore is plain functions over a listing (this file and
// plan.go); build.go does the I/O.
package litestream03

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/understudy-db/understudy/internal/storage"
)

// Prefix is the key prefix of the whole 0.3 tree.
const Prefix = "generations/"

// Errors the package returns; each returned error wraps one and names the
// object in its text.
var (
	// ErrNoGenerations: the store holds no 0.3 generation.
	ErrNoGenerations = errors.New("no Litestream 0.3 generations in replica")
	// ErrNotFound: the requested generation, index or time is not there.
	ErrNotFound = errors.New("not in the Litestream 0.3 replica")
	// ErrMissing: the WAL chain from the snapshot has a gap.
	ErrMissing = errors.New("missing WAL segment")
	// ErrCorrupt: an object cannot be decoded or does not fit its place.
	ErrCorrupt = errors.New("corrupt Litestream 0.3 object")
	// ErrEncrypted: an object is age-encrypted.
	ErrEncrypted = errors.New("age-encrypted Litestream 0.3 object")
)

// Snapshot is one snapshot object.
type Snapshot struct {
	Generation string
	Index      int
	Size       int64
	CreatedAt  time.Time
}

// Key is the object key of s.
func (s Snapshot) Key() string {
	return fmt.Sprintf("%s%s/snapshots/%08x.snapshot.lz4", Prefix, s.Generation, s.Index)
}

// Segment is one WAL segment object.
type Segment struct {
	Generation string
	Index      int
	Offset     int64
	Size       int64
	CreatedAt  time.Time
}

// Key is the object key of s.
func (s Segment) Key() string {
	return fmt.Sprintf("%s%s/wal/%08x_%08x.wal.lz4", Prefix, s.Generation, s.Index, s.Offset)
}

// Generation is one generation's objects, each list in (index, offset) order.
type Generation struct {
	Name      string
	Snapshots []Snapshot
	Segments  []Segment
	// CreatedAt and UpdatedAt are the oldest and newest object times.
	CreatedAt, UpdatedAt time.Time
}

// MaxIndex is the highest WAL index of any object in g (-1 if none).
func (g Generation) MaxIndex() int {
	m := -1
	for _, s := range g.Snapshots {
		m = max(m, s.Index)
	}
	for _, s := range g.Segments {
		m = max(m, s.Index)
	}
	return m
}

// Replica is a parsed 0.3 tree: its generations in name order.
type Replica struct {
	Generations []Generation
}

// Generation returns the generation named name, or nil.
func (r Replica) Generation(name string) *Generation {
	for i := range r.Generations {
		if r.Generations[i].Name == name {
			return &r.Generations[i]
		}
	}
	return nil
}

// Names lists the generation names.
func (r Replica) Names() []string {
	var out []string
	for _, g := range r.Generations {
		out = append(out, g.Name)
	}
	return out
}

// IsGenerationName reports whether s is 16 lowercase hex digits.
func IsGenerationName(s string) bool {
	if len(s) != 16 {
		return false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// Kind of an object of the 0.3 layout.
type Kind int

// Kinds of objects.
const (
	KindOther Kind = iota // not part of the layout (temp files, other names)
	KindSnapshot
	KindSegment
)

// ParseKey parses a key relative to the replica's root. Anything that is not
// exactly a snapshot or a WAL segment name of a generation is KindOther.
func ParseKey(key string) (kind Kind, generation string, index int, offset int64) {
	rest, ok := strings.CutPrefix(key, Prefix)
	if !ok {
		return KindOther, "", 0, 0
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 3 || !IsGenerationName(parts[0]) {
		return KindOther, "", 0, 0
	}
	gen, dir, name := parts[0], parts[1], parts[2]
	switch dir {
	case "snapshots":
		hex, ok := strings.CutSuffix(name, ".snapshot.lz4")
		if i, ok2 := parseHex8(hex); ok && ok2 {
			return KindSnapshot, gen, int(i), 0
		}
	case "wal":
		base, ok := strings.CutSuffix(name, ".wal.lz4")
		idx, off, ok2 := strings.Cut(base, "_")
		i, ok3 := parseHex8(idx)
		o, ok4 := parseHex8(off)
		if ok && ok2 && ok3 && ok4 {
			return KindSegment, gen, int(i), o
		}
	}
	return KindOther, "", 0, 0
}

// parseHex8 parses exactly 8 lowercase hex digits, as 0.3 formats them.
func parseHex8(s string) (int64, bool) {
	if len(s) != 8 || strings.ToLower(s) != s {
		return 0, false
	}
	v, err := strconv.ParseUint(s, 16, 32)
	if err != nil {
		return 0, false
	}
	return int64(v), true
}

// Parse builds a Replica from a listing of Prefix; keys outside the layout
// are ignored. Generations without any snapshot or segment do not appear.
func Parse(keys []storage.KeyInfo) Replica {
	gens := map[string]*Generation{}
	get := func(name string) *Generation {
		if g, ok := gens[name]; ok {
			return g
		}
		g := &Generation{Name: name}
		gens[name] = g
		return g
	}
	for _, k := range keys {
		kind, gen, index, offset := ParseKey(k.Key)
		switch kind {
		case KindSnapshot:
			g := get(gen)
			g.Snapshots = append(g.Snapshots, Snapshot{Generation: gen, Index: index, Size: k.Size, CreatedAt: k.ModTime})
		case KindSegment:
			g := get(gen)
			g.Segments = append(g.Segments, Segment{Generation: gen, Index: index, Offset: offset, Size: k.Size, CreatedAt: k.ModTime})
		default:
			continue
		}
		g := gens[gen]
		if g.CreatedAt.IsZero() || k.ModTime.Before(g.CreatedAt) {
			g.CreatedAt = k.ModTime
		}
		if k.ModTime.After(g.UpdatedAt) {
			g.UpdatedAt = k.ModTime
		}
	}
	var r Replica
	for _, g := range gens {
		sort.Slice(g.Snapshots, func(i, j int) bool { return g.Snapshots[i].Index < g.Snapshots[j].Index })
		sort.Slice(g.Segments, func(i, j int) bool {
			a, b := g.Segments[i], g.Segments[j]
			return a.Index < b.Index || (a.Index == b.Index && a.Offset < b.Offset)
		})
		r.Generations = append(r.Generations, *g)
	}
	sort.Slice(r.Generations, func(i, j int) bool { return r.Generations[i].Name < r.Generations[j].Name })
	return r
}
