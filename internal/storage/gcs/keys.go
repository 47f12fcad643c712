package gcs

import (
	"context"
	"fmt"
	"io"

	gcstorage "cloud.google.com/go/storage"

	"github.com/understudy-db/understudy/internal/storage"
	"github.com/understudy-db/understudy/internal/storage/spool"
)

var _ storage.KeyWriter = (*Client)(nil)

// PutKey writes r at <path>/<key> without a precondition (the object is
// replaced as it changes); see storage.KeyWriter. The SDK retries it: a
// replayed upload of the same bytes leaves the same object.
func (c *Client) PutKey(ctx context.Context, key string, r io.Reader) error {
	full := c.prefix + key
	body, err := spool.New(r)
	if err != nil {
		return fmt.Errorf("gcs replica: %s: read the object to upload: %w", c.where(full), err)
	}
	defer body.Close()
	cctx, cancel := c.opts.CallContext(ctx, body.Size)
	defer cancel()
	w := c.bucket.Object(full).Retryer(gcstorage.WithPolicy(gcstorage.RetryAlways)).NewWriter(cctx)
	w.ContentType = "application/json"
	w.ChunkSize = int(min(body.Size+1, spool.MaxMemoryBody))
	if _, err := io.Copy(w, body); err != nil {
		cancel()
		_ = w.Close()
		return c.describe(ctx, "put", full, err)
	}
	if err := w.Close(); err != nil {
		return c.describe(ctx, "put", full, err)
	}
	return nil
}
