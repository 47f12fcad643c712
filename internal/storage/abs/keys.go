package abs

import (
	"context"
	"fmt"
	"io"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"

	"github.com/understudy-db/understudy/internal/storage"
	"github.com/understudy-db/understudy/internal/storage/spool"
)

var _ storage.KeyWriter = (*Client)(nil)

// PutKey writes r at <path>/<key> with one Put Blob without a condition
// (the blob is replaced as it changes); see storage.KeyWriter.
func (c *Client) PutKey(ctx context.Context, key string, r io.Reader) error {
	full := c.prefix + key
	body, err := spool.New(r)
	if err != nil {
		return fmt.Errorf("abs replica: %s: read the object to upload: %w", c.where(full), err)
	}
	defer body.Close()
	if body.Size > MaxUploadSize {
		return fmt.Errorf("abs replica: %s: %d bytes is more than one Put Blob carries (%d)", c.where(full), body.Size, MaxUploadSize)
	}
	cctx, cancel := c.opts.CallContext(ctx, body.Size)
	defer cancel()
	if _, err := c.container.NewBlockBlobClient(full).Upload(cctx, streaming.NopCloser(body), nil); err != nil {
		return c.describe(ctx, "put", full, err)
	}
	return nil
}
