package storage

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// See the package doc, "Stores without create-only writes", for the design.

// Condition is what a store does with a create-only (conditional) write.
type Condition int

const (
	// ConditionHonoured: a second create of a key fails (create-only).
	ConditionHonoured Condition = iota
	// ConditionIgnored: the store performs a conditional PUT as a plain
	// one, overwriting the key (older Ceph RGW, some gateways).
	ConditionIgnored
	// ConditionRefused: the store refuses the conditional PUT as not
	// implemented (Backblaze B2's S3 API).
	ConditionRefused
)

func (c Condition) String() string {
	switch c {
	case ConditionHonoured:
		return "honoured"
	case ConditionIgnored:
		return "ignored"
	case ConditionRefused:
		return "refused as not implemented"
	}
	return fmt.Sprintf("Condition(%d)", int(c))
}

// ConditionError is ProbeCreateOnly's error for a store that does not
// honour create-only writes; it wraps ErrNoCreateOnly.
type ConditionError struct {
	Condition Condition // ConditionIgnored or ConditionRefused
	Msg       string
}

func (e *ConditionError) Error() string { return e.Msg }
func (e *ConditionError) Unwrap() error { return ErrNoCreateOnly }

// ConditionOf classifies ProbeCreateOnly's result: nil is
// ConditionHonoured; an error wrapping ErrNoCreateOnly is the condition it
// names (ConditionIgnored when it names none, as NoCreateOnly's do). ok is
// false for any other error: the probe could not tell (the store could not
// be written at all).
func ConditionOf(probeErr error) (c Condition, ok bool) {
	if probeErr == nil {
		return ConditionHonoured, true
	}
	var ce *ConditionError
	if errors.As(probeErr, &ce) {
		return ce.Condition, true
	}
	if errors.Is(probeErr, ErrNoCreateOnly) {
		return ConditionIgnored, true
	}
	return 0, false
}

// PlainWriter is implemented by a client whose store can be written
// without create-only writes (see the section above).
type PlainWriter interface {
	// PlainWrites returns a client of the same replica whose Create sends
	// no condition and checks the key before and after the PUT, and whose
	// readers resolve object versions where the bucket keeps them;
	// versioned says whether it does.
	PlainWrites(ctx context.Context) (c Client, versioned bool, err error)
}

// Fencing names what keeps a second writer out of a replica's history:
// the writer's guard ("lease": the lease's fencing token; "lock": the
// per-database lock and the database identity only) and the store's
// ("create-only"; "versions": plain writes read back, readers resolve
// versions by fencing token; "read-back": plain writes read back).
type Fencing string

// The fencings ChooseFencing gives.
const (
	FencingLeaseCreateOnly = Fencing("lease+create-only")
	FencingLockCreateOnly  = Fencing("lock+create-only")
	FencingLeaseVersions   = Fencing("lease+read-back+versions")
	FencingLeaseReadBack   = Fencing("lease+read-back")
	FencingLockReadBack    = Fencing("lock+read-back")
)

// CreateOnly reports whether the store itself refuses a second create.
func (f Fencing) CreateOnly() bool { return strings.HasSuffix(string(f), "+create-only") }

// Warning is what to tell the operator about f at start, "" for a fencing
// as strong as create-only.
func (f Fencing) Warning() string {
	switch f {
	case FencingLeaseReadBack:
		return "the store does not honour create-only writes and keeps no object versions: the lease guards the writer and every upload is read back, but a deposed primary's upload that lands after the new primary's read-back can replace its file (followers then stall at that TXID); turn on bucket versioning to close that window"
	case FencingLockReadBack:
		return "the store does not honour create-only writes and there is no lease: only the per-database lock and the database identity guard the history, and a second writer from another host cannot be refused by the store (uploads are read back, so a writer that loses a race stops, but one that wins it unseen replaces the other's file)"
	}
	return ""
}

// ChooseFencing decides the fencing of a replica given what its store does
// with conditional writes (cond), whether the replica accepts a store
// without them (accept: conditional-writes: if-supported), whether the
// bucket keeps versions, and whether a lease guards the writer. A fencing
// that is not CreateOnly means writing through PlainWrites. A store without
// create-only writes that is not accepted gives an error that names the
// key to set (acceptKey) and what it costs.
func ChooseFencing(cond Condition, accept, versioned, leased bool, acceptKey string) (Fencing, error) {
	guard := func(lease, lock Fencing) Fencing {
		if leased {
			return lease
		}
		return lock
	}
	switch {
	case cond == ConditionHonoured:
		return guard(FencingLeaseCreateOnly, FencingLockCreateOnly), nil
	case !accept:
		return "", fmt.Errorf("refused because a store whose conditional PUT is %s cannot refuse a second writer; to run on it anyway set %s: uploads are then plain PUTs checked before and after (three requests each, four where the bucket keeps versions), fenced by the lease if there is one and by object versions if the bucket keeps them, and without a lease a second writer from another host cannot be refused",
			cond, acceptKey)
	case versioned && leased:
		// Without a lease every writer's token is 0: versions resolve to
		// the newest, as a plain GET does, and add nothing.
		return FencingLeaseVersions, nil
	default:
		return guard(FencingLeaseReadBack, FencingLockReadBack), nil
	}
}

// Version is one version of an object, as a versioned store lists it:
// newest first.
type Version struct {
	ID           string
	FencingToken uint64 // from its metadata; 0 without Understudy metadata
	Seconds      int64  // LastModified in Unix seconds
}

// PickVersion resolves a key of a versioned store to the version a reader
// uses (see the section above): versions is the key's versions newest
// first, markerLatest whether a delete marker is the key's newest entry,
// and markerSeconds the newest delete marker's LastModified in Unix seconds
// (0: none). Versions in the marker's own second count as written after it:
// stores list LastModified to the second, so order within a second is
// unknown, and taking a deleted version back is safer than hiding a live
// one (a writer that replaces an orphan deletes it and creates at once).
// ok is false when no version is live: the key is deleted or absent.
func PickVersion(versions []Version, markerLatest bool, markerSeconds int64) (int, bool) {
	if markerLatest {
		return 0, false
	}
	best := -1
	for i, v := range versions {
		if markerSeconds > 0 && v.Seconds < markerSeconds {
			continue
		}
		if best < 0 || v.FencingToken > versions[best].FencingToken {
			best = i // strictly higher only: among equals the newest, listed first, stays
		}
	}
	return best, best >= 0
}
