package s3

import (
	"context"
	"io"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/understudy-db/understudy/internal/storage"
	"github.com/understudy-db/understudy/internal/storage/objstore"
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
