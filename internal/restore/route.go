package restore

import (
	"errors"
	"fmt"
	"strings"

	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/internal/storage"
)

// A store can hold more than one way to reach a TXID: a snapshot and the
// first L0 file (a full image) both restore TXID 1; an L1 file and the L0
// files it compacts both lead over the same range. When one object turns
// out to be bad (its bytes fail the file checksum, it is not an LTX file,
// it belongs to another history), Restore plans again without it and takes
// any other path. The decisions are pure functions over a listing, in this
// file; restore.go does the I/O.

// ObjectError is a failure that one object of a plan caused: it does not
// decode, fails its file checksum, is gone, or does not fit the history
// (wrong TXIDs, a page gap, another database's checksums). Restore plans
// around the object. The message names the object.
type ObjectError struct {
	File storage.FileInfo
	Err  error
}

func (e *ObjectError) Error() string { return e.Err.Error() }
func (e *ObjectError) Unwrap() error { return e.Err }

// blame wraps err as an ObjectError of f when err is a verdict on f's
// content or existence (ErrCorrupt, ErrForeignObject, ErrMissingFile,
// ErrChecksumChain), and returns it unchanged otherwise (I/O errors,
// cancellation), or when it already blames an object.
func blame(f storage.FileInfo, err error) error {
	var oe *ObjectError
	if err == nil || errors.As(err, &oe) {
		return err
	}
	for _, kind := range []error{ErrCorrupt, ErrForeignObject, ErrMissingFile, ErrChecksumChain} {
		if errors.Is(err, kind) {
			return &ObjectError{File: f, Err: err}
		}
	}
	return err
}

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

// soleUnproven returns the one file of a plan that carries no database
// checksums, when exactly one does: the file a malformed result can be
// blamed on.
func soleUnproven(files []storage.FileInfo, headers []FileHeader) (storage.FileInfo, bool) {
	var found []storage.FileInfo
	for i, h := range headers {
		if h.Metadata == nil {
			found = append(found, files[i])
		}
	}
	if len(found) != 1 {
		return storage.FileInfo{}, false
	}
	return found[0], true
}

// describeFiles names a few files for a message: "L0 a-a, L0 b-b and 3 more".
func describeFiles(files []storage.FileInfo, n int) string {
	var s []string
	for i, f := range files {
		if i == n {
			s = append(s, fmt.Sprintf("and %d more", len(files)-n))
			break
		}
		s = append(s, FileName(f))
	}
	return strings.Join(s, ", ")
}
