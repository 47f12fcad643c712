package s3

import (
	"context"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/internal/storage"
)

// iterator walks a level with ListObjectsV2, one page per fetch. Key names
// are fixed-width hex, so S3's lexicographic order is MinTXID order, and
// StartAfter "<prefix><seek %016x>" skips every file below seek: it sorts
// after all names with a smaller MinTXID and before "<seek>-....ltx".
type iterator struct {
	ctx    context.Context
	c      *Client
	level  int
	seek   ltx.TXID
	prefix string

	page  []storage.FileInfo
	i     int
	token *string
	done  bool // no further pages
	err   error
	item  storage.FileInfo
}

func newIterator(ctx context.Context, c *Client, level int, seek ltx.TXID) *iterator {
	return &iterator{ctx: ctx, c: c, level: level, seek: seek, prefix: c.LevelPrefix(level)}
}

func (it *iterator) Next() bool {
	for it.err == nil {
		if it.i < len(it.page) {
			it.item = it.page[it.i]
			it.i++
			return true
		}
		if it.done {
			return false
		}
		it.fetch()
	}
	return false
}

// fetch loads the next page.
func (it *iterator) fetch() {
	in := &awss3.ListObjectsV2Input{
		Bucket:  aws.String(it.c.opts.Bucket),
		Prefix:  aws.String(it.prefix),
		MaxKeys: aws.Int32(int32(it.c.opts.ListPageSize)),
	}
	if it.token != nil {
		in.ContinuationToken = it.token
	} else if it.seek > 0 {
		in.StartAfter = aws.String(it.prefix + it.seek.String())
	}
	ctx, cancel := it.c.callContext(it.ctx, 0)
	defer cancel()
	out, err := it.c.s3.ListObjectsV2(ctx, in)
	if err != nil {
		it.err = it.c.describe(it.ctx, "list", it.prefix, err)
		return
	}
	it.page, it.i = it.page[:0], 0
	for _, obj := range out.Contents {
		name := strings.TrimPrefix(aws.ToString(obj.Key), it.prefix)
		minTXID, maxTXID, ok := storage.ParseFilename(name)
		if !ok || minTXID < it.seek {
			continue // not an LTX file of this level (or below seek)
		}
		it.page = append(it.page, storage.FileInfo{
			Level: it.level, MinTXID: minTXID, MaxTXID: maxTXID,
			Size: aws.ToInt64(obj.Size), CreatedAt: aws.ToTime(obj.LastModified).UTC(),
		})
	}
	it.token = out.NextContinuationToken
	it.done = !aws.ToBool(out.IsTruncated) || it.token == nil
}

func (it *iterator) Item() storage.FileInfo { return it.item }
func (it *iterator) Err() error             { return it.err }
func (it *iterator) Close() error           { return nil }
