package storage

import (
	"context"
	"io"
	"sort"
	"time"
)

// KeyInfo is an object found by KeyReader.ListKeys.
type KeyInfo struct {
	Key     string // relative to the replica's root, "/"-separated
	Size    int64
	ModTime time.Time // mtime (file) or LastModified (S3)
}

// KeyReader reads objects by key relative to the replica's root, outside the
// LTX layout: it is how Understudy reads trees other tools wrote there
// (Litestream 0.3's generations/). Both stores implement it; it is kept apart
// from Client so that Client stays about LTX files.
type KeyReader interface {
	// ListKeys returns every object whose key starts with prefix, in key
	// order. A prefix that matches nothing gives an empty list.
	ListKeys(ctx context.Context, prefix string) ([]KeyInfo, error)
	// OpenKey opens an object; a missing one gives an error wrapping ErrNotFound.
	OpenKey(ctx context.Context, key string) (io.ReadCloser, error)
}

// KeyWriter writes one small object by key relative to the replica's root,
// outside the LTX layout (the heads index of a dir: entry's prefix). Unlike
// Client.Create it overwrites: the object is a summary that is replaced as
// it changes, not part of a history. Readers (KeyReader.OpenKey) see the
// old object or the new one whole, never a part: the object stores' PUTs
// are atomic, and the file and sftp stores write a temp file and rename it
// over the key.
type KeyWriter interface {
	// PutKey writes the object read from r at key, replacing any object
	// there. The body is read to its end before anything is sent where the
	// store needs its length.
	PutKey(ctx context.Context, key string, r io.Reader) error
}

// SortKeyInfos orders a ListKeys result by key.
func SortKeyInfos(a []KeyInfo) {
	sort.Slice(a, func(i, j int) bool { return a[i].Key < a[j].Key })
}

// ContextReader returns a reader of r that fails with ctx's error once ctx
// is done, so that a long copy stops when its caller gives up.
func ContextReader(ctx context.Context, r io.Reader) io.Reader { return &ctxReader{ctx: ctx, r: r} }

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (r *ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}
