package abs

import (
	"context"
	"io"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/internal/storage"
	"github.com/understudy-db/understudy/internal/storage/objstore"
)

var _ storage.KeyReader = (*Client)(nil)

// levelIterator walks a level in name order, which is MinTXID order (names
// are fixed-width hex), one List Blobs page per fetch. StartFrom
// "<prefix><seek %016x>" is inclusive and sorts just before
// "<seek>-....ltx", so the store skips every file below seek; names below
// seek are skipped here too, for a store that ignores it.
type levelIterator struct {
	ctx    context.Context
	c      *Client
	level  int
	seek   ltx.TXID
	prefix string
	pager  *runtime.Pager[container.ListBlobsFlatResponse]
	page   []storage.FileInfo
	i      int
	item   storage.FileInfo
	err    error
}

func newIterator(ctx context.Context, c *Client, level int, seek ltx.TXID) *levelIterator {
	prefix := storage.LevelKeyPrefix(c.prefix, level)
	opts := &container.ListBlobsFlatOptions{Prefix: to.Ptr(prefix), MaxResults: to.Ptr(int32(c.opts.ListPageSize))}
	if seek > 0 {
		opts.StartFrom = to.Ptr(prefix + seek.String())
	}
	return &levelIterator{ctx: ctx, c: c, level: level, seek: seek, prefix: prefix, pager: c.container.NewListBlobsFlatPager(opts)}
}

func (it *levelIterator) Next() bool {
	for it.err == nil {
		if it.i < len(it.page) {
			it.item = it.page[it.i]
			it.i++
			return true
		}
		if !it.pager.More() {
			return false
		}
		it.fetch()
	}
	return false
}

// fetch loads the next page.
func (it *levelIterator) fetch() {
	ctx, cancel := it.c.opts.CallContext(it.ctx, 0)
	defer cancel()
	resp, err := it.pager.NextPage(ctx)
	if err != nil {
		it.err = it.c.describe(it.ctx, "list", it.prefix, err)
		return
	}
	it.page, it.i = it.page[:0], 0
	if resp.Segment == nil {
		return
	}
	for _, b := range resp.Segment.BlobItems {
		name, size, mod := blobInfo(b)
		minTXID, maxTXID, ok := storage.ParseFilename(strings.TrimPrefix(name, it.prefix))
		if !ok || minTXID < it.seek {
			continue // not an LTX file of this level (or below seek)
		}
		it.page = append(it.page, storage.FileInfo{Level: it.level, MinTXID: minTXID, MaxTXID: maxTXID, Size: size, CreatedAt: mod})
	}
}

func (it *levelIterator) Item() storage.FileInfo { return it.item }
func (it *levelIterator) Err() error             { return it.err }
func (it *levelIterator) Close() error           { return nil }

func blobInfo(b *container.BlobItem) (name string, size int64, mod time.Time) {
	name = deref(b.Name)
	if p := b.Properties; p != nil {
		size, mod = deref(p.ContentLength), deref(p.LastModified).UTC()
	}
	return name, size, mod
}

// ListKeys lists every blob under <path>/<prefix>; keys are returned
// relative to <path>.
func (c *Client) ListKeys(ctx context.Context, prefix string) ([]storage.KeyInfo, error) {
	full := c.prefix + prefix
	pager := c.container.NewListBlobsFlatPager(&container.ListBlobsFlatOptions{Prefix: to.Ptr(full), MaxResults: to.Ptr(int32(c.opts.ListPageSize))})
	var out []storage.KeyInfo
	for pager.More() {
		cctx, cancel := c.opts.CallContext(ctx, 0)
		resp, err := pager.NextPage(cctx)
		cancel()
		if err != nil {
			return nil, c.describe(ctx, "list", full, err)
		}
		if resp.Segment == nil {
			continue
		}
		for _, b := range resp.Segment.BlobItems {
			name, size, mod := blobInfo(b)
			out = append(out, storage.KeyInfo{Key: strings.TrimPrefix(name, c.prefix), Size: size, ModTime: mod})
		}
	}
	return out, nil
}

// OpenKey reads the blob at <path>/<key>. The deadline covers reading the
// body, sized once the blob's length is known.
func (c *Client) OpenKey(ctx context.Context, key string) (io.ReadCloser, error) {
	full := c.prefix + key
	cctx, cancel := context.WithCancel(ctx)
	timer := time.AfterFunc(c.opts.CallTimeout, cancel)
	resp, err := c.container.NewBlobClient(full).DownloadStream(cctx, nil)
	if err != nil {
		timer.Stop()
		cancel()
		return nil, c.describe(ctx, "open", full, err)
	}
	timer.Reset(c.opts.TransferTimeout(deref(resp.ContentLength)))
	return &objstore.BodyCloser{ReadCloser: resp.Body, Stop: func() { timer.Stop(); cancel() }}, nil
}
