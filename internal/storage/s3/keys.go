package s3

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/understudy-db/understudy/internal/storage"
	"github.com/understudy-db/understudy/internal/storage/objstore"
	"github.com/understudy-db/understudy/internal/storage/spool"
)

var _ storage.KeyReader = (*Client)(nil)

// ListKeys lists every key under <path>/<prefix>, one ListObjectsV2 page
// at a time; keys are returned relative to <path>.
func (c *Client) ListKeys(ctx context.Context, prefix string) ([]storage.KeyInfo, error) {
	full := c.prefix + prefix
	var out []storage.KeyInfo
	var token *string
	for {
		in := &awss3.ListObjectsV2Input{
			Bucket:            aws.String(c.opts.Bucket),
			Prefix:            aws.String(full),
			MaxKeys:           aws.Int32(int32(c.opts.ListPageSize)),
			ContinuationToken: token,
		}
		cctx, cancel := c.callContext(ctx, 0)
		page, err := c.s3.ListObjectsV2(cctx, in)
		cancel()
		if err != nil {
			return nil, c.describe(ctx, "list", full, err)
		}
		for _, obj := range page.Contents {
			out = append(out, storage.KeyInfo{
				Key:     strings.TrimPrefix(aws.ToString(obj.Key), c.prefix),
				Size:    aws.ToInt64(obj.Size),
				ModTime: aws.ToTime(obj.LastModified).UTC(),
			})
		}
		token = page.NextContinuationToken
		if !aws.ToBool(page.IsTruncated) || token == nil {
			return out, nil
		}
	}
}

// OpenKey reads the object at <path>/<key>. The deadline covers reading the
// body, sized once the object's length is known.
func (c *Client) OpenKey(ctx context.Context, key string) (io.ReadCloser, error) {
	full := c.prefix + key
	cctx, cancel := context.WithCancel(ctx)
	timer := time.AfterFunc(c.opts.CallTimeout, cancel)
	in := &awss3.GetObjectInput{Bucket: aws.String(c.opts.Bucket), Key: aws.String(full)}
	c.sseOnGet(in)
	out, err := c.s3.GetObject(cctx, in)
	if err != nil {
		timer.Stop()
		cancel()
		return nil, c.describe(ctx, "open", full, err)
	}
	timer.Reset(c.transferTimeout(aws.ToInt64(out.ContentLength)))
	return &objstore.BodyCloser{ReadCloser: out.Body, Stop: func() { timer.Stop(); cancel() }}, nil
}

var _ storage.KeyWriter = (*Client)(nil)

// PutKey writes r at <path>/<key> with a plain PUT (no condition: the
// object is replaced as it changes), with the replica's server-side
// encryption. In a bucket that keeps versions each PutKey adds one.
func (c *Client) PutKey(ctx context.Context, key string, r io.Reader) error {
	full := c.prefix + key
	body, err := spool.New(r)
	if err != nil {
		return fmt.Errorf("s3 replica: %s: read the object to upload: %w", c.where(full), err)
	}
	defer body.Close()
	if err := c.putObject(ctx, full, body, nil, false); err != nil {
		return c.describe(ctx, "put", full, err)
	}
	return nil
}
