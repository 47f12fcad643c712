package s3

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/understudy-db/understudy/internal/storage"
)

// Writing and reading a store without create-only writes: see the
// storage package's "Stores without create-only writes" for the design.

var _ storage.PlainWriter = (*Client)(nil)

// versions is how a client's reads resolve object versions.
type versions struct {
	// noAPI is set once the store answered ListObjectVersions 501 Not
	// Implemented, or GetBucketVersioning said versioning was never turned
	// on: it keeps no versions, and reads are plain GETs.
	noAPI atomic.Bool
	// checked is whether a reader's client asked GetBucketVersioning yet.
	checked sync.Once
	// known: PlainWrites asked already.
	known bool
}

// PlainWrites returns a client of the same replica whose Create sends no
// If-None-Match (Backblaze B2 refuses the header) and checks the key
// before and after the PUT (plainPut). When the bucket keeps versions
// (GetBucketVersioning says Enabled or Suspended), its reads resolve them
// (storage.PickVersion). A store that cannot say (the call is refused or
// not implemented) is taken as one without versions: the weaker fencing.
func (c *Client) PlainWrites(ctx context.Context) (storage.Client, bool, error) {
	cctx, cancel := c.callContext(ctx, 0)
	defer cancel()
	out, err := c.s3.GetBucketVersioning(cctx, &awss3.GetBucketVersioningInput{Bucket: aws.String(c.opts.Bucket)})
	versioned := err == nil && (out.Status == types.BucketVersioningStatusEnabled || out.Status == types.BucketVersioningStatusSuspended)
	if err != nil && ctx.Err() != nil {
		return nil, false, c.describe(ctx, "read the versioning of bucket", c.prefix, err)
	}
	pc := *c
	pc.plain = true
	pc.versions = nil
	if versioned {
		pc.versions = &versions{known: true}
	}
	return &pc, versioned, nil
}

// plainPut writes r at key with md without a condition: it returns
// ErrExists without writing when a reader finds an object at key already,
// and after the PUT reads the key back: an object other than this call's
// (another writer's PUT landed after ours, or its version wins by fencing
// token) gives ErrExists too, and the primary's read-back judges it as it
// judges a refused create-only PUT.
func (c *Client) plainPut(ctx context.Context, key string, r io.Reader, md storage.Metadata) (int64, error) {
	body, uploadID, meta, err := c.prepareUpload(key, r, md)
	if err != nil {
		return 0, err
	}
	defer body.Close()
	if _, found, err := c.readerUploadID(ctx, key); err != nil {
		return 0, fmt.Errorf("s3 replica: check that %s is free before a plain PUT: %w", c.where(key), err)
	} else if found {
		return 0, fmt.Errorf("s3 replica: %s: %w", c.where(key), storage.ErrExists)
	}
	if err := c.putObject(ctx, key, body, meta, false); err != nil {
		return 0, c.describe(ctx, "create", key, err)
	}
	got, found, err := c.readerUploadID(ctx, key)
	switch {
	case err != nil:
		// Unknown: the next try finds the key taken and the primary's
		// read-back tells whether it is ours.
		return 0, fmt.Errorf("s3 replica: read back %s after a plain PUT (will retry): %w", c.where(key), err)
	case !found:
		return 0, fmt.Errorf("s3 replica: read back %s after a plain PUT: the object is gone (deleted meanwhile); will retry", c.where(key))
	case got != uploadID:
		return 0, fmt.Errorf("s3 replica: %s: read back after a plain PUT, readers get another upload than ours: %w", c.where(key), storage.ErrExists)
	}
	return body.Size, nil
}

// readerUploadID returns the upload id of the object a reader gets at key
// (resolving versions as Open does; "" for an object we did not write), and
// whether there is one.
func (c *Client) readerUploadID(ctx context.Context, key string) (string, bool, error) {
	v, err := c.resolveVersion(ctx, key)
	if errors.Is(err, storage.ErrNotFound) {
		return "", false, nil
	} else if err != nil {
		return "", false, err
	}
	meta, err := c.headMetadata(ctx, key, v)
	if errors.Is(err, storage.ErrNotFound) {
		return "", false, nil
	} else if err != nil {
		return "", false, err
	}
	return meta[metaUploadID], true, nil
}

// headMetadata reads the user metadata (keys lower-cased) of the object at
// key, of its version versionID unless "". It uses a one-byte GET rather
// than HEAD, whose error has no body to classify.
func (c *Client) headMetadata(ctx context.Context, key, versionID string) (map[string]string, error) {
	cctx, cancel := c.callContext(ctx, 0)
	defer cancel()
	in := &awss3.GetObjectInput{Bucket: aws.String(c.opts.Bucket), Key: aws.String(key), Range: aws.String("bytes=0-0")}
	c.sseOnGet(in)
	if versionID != "" {
		in.VersionId = aws.String(versionID)
	}
	out, err := c.s3.GetObject(cctx, in)
	if err != nil {
		return nil, c.describe(ctx, "read the metadata of", key, err)
	}
	out.Body.Close()
	return lowerKeys(out.Metadata), nil
}

// resolveVersion returns the version id a reader uses at key: "" for a
// plain GET (reads do not resolve versions, the store keeps none, or the
// key has a single version), else the one storage.PickVersion picks. A key
// with no live version gives an error wrapping ErrNotFound.
func (c *Client) resolveVersion(ctx context.Context, key string) (string, error) {
	if c.versions == nil {
		return "", nil
	}
	if !c.versions.known {
		c.versions.checked.Do(func() {
			// A bucket that never had versioning holds one object per key.
			cctx, cancel := c.callContext(ctx, 0)
			defer cancel()
			out, err := c.s3.GetBucketVersioning(cctx, &awss3.GetBucketVersioningInput{Bucket: aws.String(c.opts.Bucket)})
			if err == nil && out.Status == "" {
				c.versions.noAPI.Store(true)
			}
		})
	}
	if c.versions.noAPI.Load() {
		return "", nil
	}
	cctx, cancel := c.callContext(ctx, 0)
	out, err := c.s3.ListObjectVersions(cctx, &awss3.ListObjectVersionsInput{
		Bucket: aws.String(c.opts.Bucket), Prefix: aws.String(key),
	})
	cancel()
	if err != nil {
		err = c.describe(ctx, "list the versions of", key, err)
		if errors.Is(err, errNotImplemented) {
			c.versions.noAPI.Store(true)
			return "", nil
		}
		return "", err
	}
	var vs []storage.Version
	for _, ov := range out.Versions {
		if aws.ToString(ov.Key) == key {
			vs = append(vs, storage.Version{ID: aws.ToString(ov.VersionId), Seconds: aws.ToTime(ov.LastModified).Unix()})
		}
	}
	markerLatest, markerSeconds := false, int64(0)
	for _, m := range out.DeleteMarkers {
		if aws.ToString(m.Key) != key {
			continue
		}
		markerLatest = markerLatest || aws.ToBool(m.IsLatest)
		markerSeconds = max(markerSeconds, aws.ToTime(m.LastModified).Unix())
	}
	if live := liveVersions(vs, markerSeconds); live > 1 {
		// Only a key written more than once needs the fencing tokens.
		for i := range vs {
			meta, err := c.headMetadata(ctx, key, vs[i].ID)
			if err != nil {
				return "", err
			}
			if md, _ := decodeMetadata(meta); md != nil {
				vs[i].FencingToken = md.FencingToken
			}
		}
	}
	i, ok := storage.PickVersion(vs, markerLatest, markerSeconds)
	switch {
	case !ok:
		return "", fmt.Errorf("s3 replica: %s: %w", c.where(key), storage.ErrNotFound)
	case vs[i].ID == "null" || (len(vs) == 1 && markerSeconds == 0):
		return "", nil // the one object there is: a plain GET reads it
	}
	return vs[i].ID, nil
}

// liveVersions counts the versions PickVersion chooses among.
func liveVersions(vs []storage.Version, markerSeconds int64) int {
	n := 0
	for _, v := range vs {
		if v.Seconds >= markerSeconds {
			n++
		}
	}
	return n
}

// deleteProbe removes the probe object: every version of it where the
// bucket keeps versions (a plain delete there only adds a marker). Best
// effort.
func (c *Client) deleteProbe(ctx context.Context, key string) {
	var ids []types.ObjectIdentifier
	out, err := c.s3.ListObjectVersions(ctx, &awss3.ListObjectVersionsInput{Bucket: aws.String(c.opts.Bucket), Prefix: aws.String(key)})
	if err == nil {
		for _, v := range out.Versions {
			if aws.ToString(v.Key) == key && aws.ToString(v.VersionId) != "null" {
				ids = append(ids, types.ObjectIdentifier{Key: v.Key, VersionId: v.VersionId})
			}
		}
		for _, m := range out.DeleteMarkers {
			if aws.ToString(m.Key) == key {
				ids = append(ids, types.ObjectIdentifier{Key: m.Key, VersionId: m.VersionId})
			}
		}
	}
	if len(ids) == 0 {
		ids = []types.ObjectIdentifier{{Key: aws.String(key)}}
	}
	_ = c.deleteKeys(ctx, ids)
}

// lowerKeys is S3 user metadata with its keys lower-cased (stores differ
// in the case they return).
func lowerKeys(m map[string]string) map[string]string {
	lower := make(map[string]string, len(m))
	for k, v := range m {
		lower[strings.ToLower(k)] = v
	}
	return lower
}
