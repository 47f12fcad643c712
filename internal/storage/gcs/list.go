package gcs

import (
	"context"
	"errors"
	"io"
	"strings"
	"time"

	gcstorage "cloud.google.com/go/storage"
	"github.com/superfly/ltx"
	"google.golang.org/api/iterator"

	"github.com/understudy-db/understudy/internal/storage"
)

var _ storage.KeyReader = (*Client)(nil)

// levelIterator walks a level in name order, which is MinTXID order (names
// are fixed-width hex). StartOffset "<prefix><seek %016x>" is inclusive and
// sorts just before "<seek>-....ltx", so the store skips every file below
// seek. The SDK fetches a page of ListPageSize when the last one is used up.
type levelIterator struct {
	ctx    context.Context // the caller's
	c      *Client
	level  int
	seek   ltx.TXID
	prefix string
	it     *gcstorage.ObjectIterator
	cancel context.CancelFunc
	item   storage.FileInfo
	err    error
}

func newIterator(ctx context.Context, c *Client, level int, seek ltx.TXID) *levelIterator {
	prefix := storage.LevelKeyPrefix(c.prefix, level)
	q := &gcstorage.Query{Prefix: prefix}
	if seek > 0 {
		q.StartOffset = prefix + seek.String()
	}
	_ = q.SetAttrSelection([]string{"Name", "Size", "Created"})
	lctx, cancel := context.WithCancel(ctx)
	it := c.bucket.Objects(lctx, q)
	it.PageInfo().MaxSize = c.opts.ListPageSize
	return &levelIterator{ctx: ctx, c: c, level: level, seek: seek, prefix: prefix, it: it, cancel: cancel}
}

func (it *levelIterator) Next() bool {
	for it.err == nil {
		// A Next that fetches a page must answer within the call deadline.
		timer := time.AfterFunc(it.c.opts.CallTimeout, it.cancel)
		attrs, err := it.it.Next()
		timer.Stop()
		if errors.Is(err, iterator.Done) {
			return false
		} else if err != nil {
			it.err = it.c.describe(it.ctx, "list", it.prefix, err)
			return false
		}
		minTXID, maxTXID, ok := storage.ParseFilename(strings.TrimPrefix(attrs.Name, it.prefix))
		if !ok || minTXID < it.seek {
			continue // not an LTX file of this level (or below seek)
		}
		it.item = storage.FileInfo{Level: it.level, MinTXID: minTXID, MaxTXID: maxTXID, Size: attrs.Size, CreatedAt: attrs.Created.UTC()}
		return true
	}
	return false
}

func (it *levelIterator) Item() storage.FileInfo { return it.item }
func (it *levelIterator) Err() error             { return it.err }
func (it *levelIterator) Close() error           { it.cancel(); return nil }

// ListKeys lists every object under <path>/<prefix>; keys are returned
// relative to <path>.
func (c *Client) ListKeys(ctx context.Context, prefix string) ([]storage.KeyInfo, error) {
	full := c.prefix + prefix
	q := &gcstorage.Query{Prefix: full}
	_ = q.SetAttrSelection([]string{"Name", "Size", "Updated"})
	it := c.bucket.Objects(ctx, q)
	it.PageInfo().MaxSize = c.opts.ListPageSize
	var out []storage.KeyInfo
	for {
		attrs, err := it.Next()
		if errors.Is(err, iterator.Done) {
			return out, nil
		} else if err != nil {
			return nil, c.describe(ctx, "list", full, err)
		}
		out = append(out, storage.KeyInfo{Key: strings.TrimPrefix(attrs.Name, c.prefix), Size: attrs.Size, ModTime: attrs.Updated.UTC()})
	}
}

// OpenKey reads the object at <path>/<key>.
func (c *Client) OpenKey(ctx context.Context, key string) (io.ReadCloser, error) {
	full := c.prefix + key
	return c.read(ctx, c.bucket.Object(full), full, 0, -1)
}
