package primary

import (
	"bytes"
	"context"
	"fmt"
	"io"

	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/internal/storage"
)

// A create-only upload that reached the store but whose reply was lost (a
// timeout, a cancelled context at shutdown, the SDK's own retry of a PUT
// that did land, a process restart) finds its key taken on the next try.
// That must not be taken for another writer: the object is read back and
// compared with what we would upload. Only an object that is not ours
// fences the DB.

// upload is what a create is about to write, as far as telling our own
// object from another writer's goes.
type upload struct {
	Size    int64
	Trailer []byte // the LTX trailer (ltx.TrailerSize bytes): holds the file checksum over all the bytes before it
	MD      storage.Metadata
}

// found is the object read back at a key that was taken.
type found struct {
	Size    int64
	Trailer []byte            // its last ltx.TrailerSize bytes (at our size's offset)
	MD      *storage.Metadata // nil: no Understudy metadata
}

// ownership is the verdict on an object found at the key we create.
type ownership int

const (
	ownedByUs         ownership = iota // the object is our upload: the create succeeded
	foreignWriter                      // another writer (another node, or another tool) wrote it
	foreignSameWriter                  // our node name and token, but a different change: not ours either
)

// ownedBy decides whether an object found at a taken key is our own
// upload. It is ours when the writer identity (node name, fencing token
// and database id) is ours and either the bytes are ours (same size and same LTX
// trailer, whose file checksum covers the whole file, header timestamp
// included) or it is the same state transition (same pre- and post-apply
// database checksums: a compaction redone over the same inputs).
func ownedBy(want upload, got found) ownership {
	if got.MD == nil || got.MD.Node != want.MD.Node || got.MD.FencingToken != want.MD.FencingToken ||
		got.MD.DatabaseID != want.MD.DatabaseID {
		return foreignWriter
	}
	sameBytes := got.Size == want.Size && len(want.Trailer) == ltx.TrailerSize && bytes.Equal(got.Trailer, want.Trailer)
	sameChange := want.MD.PostApplyChecksum != 0 && got.MD.PostApplyChecksum == want.MD.PostApplyChecksum &&
		got.MD.PreApplyChecksum == want.MD.PreApplyChecksum
	if sameBytes || sameChange {
		return ownedByUs
	}
	return foreignSameWriter
}

// describe says who wrote the object, for the fencing error.
func (o ownership) describe(got found) string {
	switch {
	case o == ownedByUs:
		return "our own upload"
	case got.MD == nil:
		return "an object without Understudy metadata (written by another tool)"
	case o == foreignSameWriter:
		return fmt.Sprintf("a different file written under this node's name %q and fencing token %d (another process with the same node name?)",
			got.MD.Node, got.MD.FencingToken)
	default:
		return fmt.Sprintf("a file written by node %q with fencing token %d", got.MD.Node, got.MD.FencingToken)
	}
}

// readTrailer reads the last ltx.TrailerSize bytes of a local file of size
// bytes.
func readTrailer(f io.ReaderAt, size int64) ([]byte, error) {
	if size < ltx.TrailerSize {
		return nil, fmt.Errorf("%d bytes is too short for an LTX file", size)
	}
	b := make([]byte, ltx.TrailerSize)
	if _, err := f.ReadAt(b, size-ltx.TrailerSize); err != nil {
		return nil, err
	}
	return b, nil
}

// readBack reads the metadata and the bytes where our trailer would be of
// the object at a taken key. An error means the verdict is unknown (the
// store could not be read): the create is retried, never fenced on.
func (r *replica) readBack(ctx context.Context, level int, minTX, maxTX ltx.TXID, size int64) (found, error) {
	ctx, cancel := context.WithTimeout(ctx, RequestTimeout)
	defer cancel()
	off := max(size-ltx.TrailerSize, 0)
	obj, err := r.c.Open(ctx, level, minTX, maxTX, off, ltx.TrailerSize)
	r.count("get", 0, err)
	if err != nil {
		return found{}, err
	}
	defer obj.Close()
	b, err := io.ReadAll(io.LimitReader(obj, ltx.TrailerSize))
	if err != nil {
		return found{}, err
	}
	return found{Size: obj.Info.Size, Trailer: b, MD: obj.Info.Metadata}, nil
}

// supersedes reports whether an object another writer left at a key we
// create is an orphan of a deposed writer of this same history, which the
// writer holding the newer lease may replace. A node that took over claimed
// the TXID after the history it had replayed; from that claim on, every key
// is its to write. An old primary that uploaded several files at once
// (DefaultUploadWindow) and then died or was cut off can leave files above
// that claim: no chain reaches them (the claim took the TXID below), so
// they hold no restorable transaction, but they take the keys the new
// primary needs, and it would fence itself on the first. Only a strictly
// lower fencing token of the same database qualifies: equal tokens (no
// lease: 0) or another database's object still fence.
func supersedes(ours storage.Metadata, theirs *storage.Metadata) bool {
	return theirs != nil && ours.FencingToken > theirs.FencingToken &&
		ours.DatabaseID != "" && theirs.DatabaseID == ours.DatabaseID
}
