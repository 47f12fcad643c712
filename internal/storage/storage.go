// Package storage is the seam between Understudy and a replica store: one
// database's LTX files, laid out as Litestream 0.5 lays them out, written
// create-only so that a TXID can be written once and never overwritten.
//
// # Stores without create-only writes
//
// Create is create-only wherever the store can do it (the file store
// always, S3 with If-None-Match: *). Some S3-compatible stores cannot:
// Backblaze B2 answers a conditional PUT 501 Not Implemented ("A header you
// provided implies functionality that is not implemented"), and older Ceph
// RGW and some gateways ignore the header and overwrite. ProbeCreateOnly
// tells the three cases apart (ConditionOf). A store that does not honour
// the condition is refused unless its replica accepts it explicitly; then
// the client's PlainWrites form is used, and the fencing in force is the
// strongest that store allows (ChooseFencing):
//
//   - Every create is checked before and after. Before: a key that is
//     already there gives ErrExists without writing, exactly as a refused
//     conditional PUT does, so the primary's read-back (our own earlier
//     upload, a deposed writer's orphan, or another writer) decides as
//     with a create-only store. The PUT carries no condition at all (B2
//     refuses the header). After: the key is read back and the object a
//     reader would get must carry this call's upload id; another writer's
//     object there gives ErrExists, so the primary fences itself as on a
//     lost create-only race.
//   - Where the bucket keeps object versions (S3 with versioning on; B2
//     keeps them by default), a second PUT at a key does not destroy the
//     first: both stay as versions. Every reader of such a replica (the
//     writer's read-back, restore, follow) resolves a key to one version
//     with PickVersion: among the versions written after the key's newest
//     delete marker, the one with the highest fencing token; among equal
//     tokens, the newest (what a plain GET returns). A deposed primary's
//     late overwrite carries a lower token than the new primary's file at
//     the same key, so readers keep the new primary's file and the deposed
//     writer's read-back finds a foreign object and fences it. With a lease
//     this closes the window the read-back leaves open. Without one every
//     writer's token is 0, the newest version wins as with a plain GET, and
//     versions add nothing: the fencing is then lock+read-back.
//   - Without versions, the last PUT at a key wins. The read-back catches a
//     writer that lost, but a second writer's PUT that lands after the
//     first writer's read-back replaces the file unseen: followers then
//     stall at that TXID (the next file's pre-apply checksum does not
//     match) rather than apply a wrong history, and a restore through it
//     fails naming the file (the chain of database checksums breaks
//     there). With a lease only a deposed primary within its last safe
//     window can do that; without one (a plain backup), only the
//     per-database lock and the database identity stop a second writer,
//     and neither reaches another host. The primary warns about it at
//     start.
//
// Resolving versions costs a reader one ListObjectVersions per object
// opened (plus a metadata read per version where a key has several),
// instead of nothing; readers of a bucket that never had versioning
// (GetBucketVersioning) and of a store without the call (501) read with
// plain GETs. A delete in a versioned bucket adds a delete marker: a key
// whose newest entry is a marker reads as absent, and a key replaced after
// a delete (an orphan removed and created again) reads as the new file,
// since versions from the marker's own second on count as after it (stores
// list LastModified to the second). A plain create costs three requests
// (a read, the PUT, a read; four with versions: two listings and a read
// besides the PUT) where a create-only one costs one (bench/RESULTS.md).
//
// The fencing in force is logged at start and shown per replica in /status
// ("fencing") and by the status command.
package storage

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/superfly/ltx"
)

// Levels used by the store. L0 holds one file per sync (exactly one TXID);
// L1..L3 are compactions of the level below; L9 holds full snapshots.
const (
	LevelL0       = 0
	SnapshotLevel = 9
)

// ErrExists is returned by Client.Create when the key already exists: another
// writer owns this part of the history.
var ErrExists = errors.New("object already exists")

// ErrNoCreateOnly is wrapped by Client.ProbeCreateOnly's error when the
// store does not honour create-only writes (it ignores the condition, or
// refuses conditional writes as not implemented): such a store can never
// fence two writers apart, whatever is retried, so the caller should stop
// rather than restart (replicate exits with the config-error status, 2).
var ErrNoCreateOnly = errors.New("store does not honour create-only writes")

// NoCreateOnly is an error that says msg and wraps ErrNoCreateOnly.
func NoCreateOnly(msg string) error { return &noCreateOnlyError{msg} }

type noCreateOnlyError struct{ msg string }

func (e *noCreateOnlyError) Error() string { return e.msg }
func (e *noCreateOnlyError) Unwrap() error { return ErrNoCreateOnly }

// ErrNotFound is returned by Client.Open for a missing object.
var ErrNotFound = errors.New("object not found")

// ErrCredentials is wrapped by errors of a store that refused the
// credentials it was given, or of a client that found none to give: retrying
// cannot help until the operator fixes them.
var ErrCredentials = errors.New("credentials missing or refused")

// Metadata travels with every object Understudy writes. A file written by
// another tool has none; readers then verify by file checksum only.
type Metadata struct {
	Node              string       // node name of the writer
	FencingToken      uint64       // lease fencing token of the writer (0 without a lease)
	CommitTime        time.Time    // commit time of the newest transaction in the file
	PreApplyChecksum  ltx.Checksum // database checksum before applying the file (0 for a snapshot)
	PostApplyChecksum ltx.Checksum // database checksum after applying the file

	// DatabaseID names the database history the object belongs to: minted
	// by the primary that started the history and carried on by every
	// writer that continues it (a restored, followed or promoted copy).
	// "" in objects of another tool or an older Understudy. Optional.
	DatabaseID string
	// DatabasePath is the path of the database its writer ships, for
	// messages only ("" where unknown). Optional.
	DatabasePath string
}

// FileInfo describes one LTX object in the store.
type FileInfo struct {
	Level     int
	MinTXID   ltx.TXID
	MaxTXID   ltx.TXID
	Size      int64
	CreatedAt time.Time // commit time where known, else the object's modification time
	// Metadata is nil where the object carries none (written by another tool),
	// and from List, which does not fetch metadata.
	Metadata *Metadata
}

// Object is an open LTX object. Close must be called.
type Object struct {
	io.ReadCloser
	Info FileInfo
}

// Client is one database's replica store. Implementations are safe for
// concurrent use.
type Client interface {
	// Type names the implementation ("file", "s3") for logs and metrics.
	Type() string

	// Create writes the LTX file read from r at (level, minTXID, maxTXID),
	// create-only: if the key exists, it returns an error wrapping ErrExists and
	// leaves the existing object untouched. Readers never see a partial object.
	Create(ctx context.Context, level int, minTXID, maxTXID ltx.TXID, r io.Reader, md Metadata) (FileInfo, error)

	// Open opens an object for reading. size < 0 reads to the end. A missing
	// object gives an error wrapping ErrNotFound.
	Open(ctx context.Context, level int, minTXID, maxTXID ltx.TXID, offset, size int64) (*Object, error)

	// List returns the files of a level with MinTXID >= seek, ordered by
	// MinTXID, fetching further pages from the store as the iterator advances.
	List(ctx context.Context, level int, seek ltx.TXID) (Iterator, error)

	// Delete removes files; missing ones are not an error.
	Delete(ctx context.Context, files []FileInfo) error

	// ProbeCreateOnly checks at start-up that the store really honours
	// create-only writes: it creates a probe object (a leaf key outside the
	// level directories) twice and deletes it. It returns an error if the
	// second create succeeded or the store could not be written at all.
	ProbeCreateOnly(ctx context.Context) error
}

// Iterator walks a listing. Next must be called before the first Item.
type Iterator interface {
	Next() bool
	Item() FileInfo
	Err() error
	Close() error
}
