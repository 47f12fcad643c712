package restore

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/internal/storage"
)

// HeaderFunc returns the LTX header of a file (a small range read in
// practice; a map in tests).
type HeaderFunc func(ctx context.Context, f storage.FileInfo) (ltx.Header, error)

// Point is a restorable position and the commit time of its newest
// transaction, as the LTX header of a file ending there records it.
type Point struct {
	TXID      ltx.TXID
	Timestamp time.Time
}

// ResolveTimestamp finds the newest position at or before ts: the largest
// MaxTXID of any file (at or after the oldest snapshot) whose header
// Timestamp is not after ts. Only file boundaries are positions a restore can
// reach, so a time inside a compacted file resolves to the file before it.
//
// Commit times grow with TXIDs, so a binary search over the boundaries reads
// about log2(n) headers. (The listing's CreatedAt is only the object's
// mtime or upload time; the header is the authority.)
func ResolveTimestamp(ctx context.Context, files []storage.FileInfo, ts time.Time, header HeaderFunc) (Point, error) {
	if len(files) == 0 {
		return Point{}, ErrEmptyReplica
	}
	b := ListingBounds(files)
	if b.Earliest == 0 {
		return Point{}, fmt.Errorf("%w: level %d is empty, so no point in time can be restored", ErrNoSnapshot, storage.SnapshotLevel)
	}
	// One representative per boundary: the smallest file ending there.
	rep := map[ltx.TXID]storage.FileInfo{}
	for _, f := range files {
		if f.MaxTXID < b.Earliest {
			continue
		}
		if r, ok := rep[f.MaxTXID]; !ok || f.Size < r.Size {
			rep[f.MaxTXID] = f
		}
	}
	bounds := make([]ltx.TXID, 0, len(rep))
	for txid := range rep {
		bounds = append(bounds, txid)
	}
	sort.Slice(bounds, func(i, j int) bool { return bounds[i] < bounds[j] })

	cache := map[ltx.TXID]time.Time{}
	var searchErr error
	timeAt := func(i int) time.Time {
		txid := bounds[i]
		if t, ok := cache[txid]; ok {
			return t
		}
		hdr, err := header(ctx, rep[txid])
		if err != nil {
			if searchErr == nil {
				searchErr = fmt.Errorf("read header of %s: %w", FileName(rep[txid]), err)
			}
			return time.Time{}
		}
		t := time.UnixMilli(hdr.Timestamp).UTC()
		cache[txid] = t
		return t
	}
	// First boundary whose time is after ts; the one before it is the answer.
	n := sort.Search(len(bounds), func(i int) bool {
		return searchErr == nil && timeAt(i).After(ts)
	})
	if searchErr != nil {
		return Point{}, searchErr
	}
	if n == 0 {
		return Point{}, kindErrorf(ErrBeforeEarliest, "timestamp %s is before the earliest restorable point, TXID %s committed at %s",
			ts.UTC().Format(time.RFC3339Nano), bounds[0], timeAt(0).Format(time.RFC3339Nano))
	}
	return Point{TXID: bounds[n-1], Timestamp: timeAt(n - 1)}, nil
}
