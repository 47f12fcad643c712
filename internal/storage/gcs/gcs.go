// Package gcs is the replica store in a Google Cloud Storage bucket, in
// Litestream 0.5's key layout (the same as the s3 store's):
//
//	<path>/<level %04x>/<minTXID %016x>-<maxTXID %016x>.ltx
//
// Creates carry the precondition DoesNotExist (ifGenerationMatch=0): GCS
// writes the object only if no live generation of the name exists, and
// answers 412 otherwise, atomically, so that of two writers racing for a
// key exactly one wins. The metadata rides on the same upload as custom
// object metadata ("understudy-<field>").
//
// Credentials follow the SDK's Application Default Credentials chain
// (GOOGLE_APPLICATION_CREDENTIALS, gcloud's user credentials, the metadata
// server of a GCE/GKE/Cloud Run machine). With an endpoint, or with
// STORAGE_EMULATOR_HOST set, the client talks to an emulator without
// authentication, as the SDK does for STORAGE_EMULATOR_HOST.
package gcs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"sync/atomic"
	"time"

	gcstorage "cloud.google.com/go/storage"
	"github.com/googleapis/gax-go/v2"
	"github.com/superfly/ltx"
	"google.golang.org/api/iterator"
	"google.golang.org/api/option"

	"github.com/understudy-db/understudy/internal/storage"
	"github.com/understudy-db/understudy/internal/storage/objstore"
	"github.com/understudy-db/understudy/internal/storage/spool"
)

// Type is the value of Client.Type.
const Type = "gcs"

// Defaults for Options left zero (and objstore's, for the Timing).
const (
	DefaultListPageSize = 1000 // the JSON API's maximum
)

// The object's custom metadata holds the fields of storage.Metadata under
// objstore.MetaPrefix, and the create's upload id: a retried upload whose
// first attempt did land gets 412 for our own object, and the id tells
// that apart from losing to another writer.
const (
	metaPrefix   = objstore.MetaPrefix
	metaUploadID = objstore.MetaUploadID
)

// Options configure a Client.
type Options struct {
	Bucket string
	Path   string // key prefix of the database's replica; may be empty
	// Endpoint is an emulator's address (http://127.0.0.1:4443 for
	// fake-gcs-server), used without authentication. "" is Google Cloud
	// Storage, or $STORAGE_EMULATOR_HOST when that is set.
	Endpoint string

	ListPageSize int // objects per list page (default 1000)
	objstore.Timing
}

// Client is a replica store in one bucket prefix.
type Client struct {
	opts     Options
	gcs      *gcstorage.Client
	bucket   *gcstorage.BucketHandle
	prefix   string // Path with a trailing "/", or ""
	credDesc string // how credentials were found, for error messages

	// bucketSeen: a listing found the bucket; see notFound. Shared with the
	// Sub clients, since they are all in the one bucket.
	bucketSeen *atomic.Bool
}

var _ storage.Client = (*Client)(nil)

// New validates opts and returns a client. It does not contact the store,
// but it does look for credentials: without an endpoint and with no
// Application Default Credentials to be found, it fails here.
func New(ctx context.Context, opts Options) (*Client, error) {
	if opts.Bucket == "" {
		return nil, errors.New("gcs replica: bucket is empty; set the replica's bucket")
	}
	if opts.ListPageSize <= 0 || opts.ListPageSize > DefaultListPageSize {
		opts.ListPageSize = DefaultListPageSize
	}
	opts.Timing = opts.Timing.WithDefaults()
	if opts.Endpoint != "" && !strings.Contains(opts.Endpoint, "://") {
		opts.Endpoint = "http://" + opts.Endpoint
	}
	opts.Endpoint = strings.TrimRight(opts.Endpoint, "/")
	opts.Path = strings.Trim(opts.Path, "/")

	credDesc := "Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS, gcloud auth application-default login, or the machine's service account)"
	var copts []option.ClientOption
	switch {
	case opts.Endpoint != "":
		copts = append(copts, option.WithEndpoint(opts.Endpoint+"/storage/v1/"), option.WithoutAuthentication())
		credDesc = "no credentials (emulator at " + opts.Endpoint + ")"
	case emulatorHost() != "":
		credDesc = "no credentials (emulator at STORAGE_EMULATOR_HOST " + emulatorHost() + ")"
	}
	client, err := gcstorage.NewClient(ctx, copts...)
	if err != nil {
		return nil, &objstore.CredentialsError{Msg: fmt.Sprintf("gcs replica: bucket %s: no credentials found: set GOOGLE_APPLICATION_CREDENTIALS to a service account key file, run `gcloud auth application-default login`, or run on a machine with a service account (%v)", opts.Bucket, err)}
	}
	client.SetRetry(
		gcstorage.WithBackoff(gax.Backoff{Initial: 100 * time.Millisecond, Max: opts.MaxBackoff, Multiplier: 2}),
		gcstorage.WithMaxAttempts(opts.MaxAttempts),
		// Creates are conditional and so idempotent; the SDK retries them
		// under the default policy, and a retry that finds our own object
		// is recognised by its upload id.
		gcstorage.WithPolicy(gcstorage.RetryIdempotent),
	)
	return &Client{
		opts: opts, gcs: client, bucket: client.Bucket(opts.Bucket),
		prefix: storage.KeyPrefix(opts.Path), credDesc: credDesc, bucketSeen: new(atomic.Bool),
	}, nil
}

// Sub is a client of the same bucket for the key prefix rel below this
// client's (one database of a directory entry). It shares the SDK client,
// its connections and credentials, so thousands of databases cost one.
func (c *Client) Sub(rel string) storage.Client {
	o := c.opts
	o.Path = strings.Trim(path.Join(c.opts.Path, rel), "/")
	return &Client{
		opts: o, gcs: c.gcs, bucket: c.bucket,
		prefix: storage.KeyPrefix(o.Path), credDesc: c.credDesc, bucketSeen: c.bucketSeen,
	}
}

// Type returns "gcs".
func (c *Client) Type() string { return Type }

// Bucket returns the bucket name.
func (c *Client) Bucket() string { return c.opts.Bucket }

// Key is the object name of one LTX file.
func (c *Client) Key(level int, minTXID, maxTXID ltx.TXID) string {
	return storage.ObjectKey(c.prefix, level, minTXID, maxTXID)
}

// Create uploads the file with the DoesNotExist precondition; see
// storage.Client.
func (c *Client) Create(ctx context.Context, level int, minTXID, maxTXID ltx.TXID, r io.Reader, md storage.Metadata) (storage.FileInfo, error) {
	return objstore.CreateLTX(ctx, Type, c.prefix, level, minTXID, maxTXID, r, md, c.put)
}

// put is a create-only upload of r at key with md; it returns the size. The
// body is spooled first so that a failing source sends nothing and the
// deadline fits the size.
func (c *Client) put(ctx context.Context, key string, r io.Reader, md storage.Metadata) (int64, error) {
	body, err := spool.New(r)
	if err != nil {
		return 0, fmt.Errorf("gcs replica: %s: read the file to upload: %w", c.where(key), err)
	}
	defer body.Close()

	uploadID := objstore.UploadID()
	meta := map[string]string{metaUploadID: uploadID}
	for k, v := range md.Fields() {
		meta[metaPrefix+k] = v
	}
	cctx, cancel := c.opts.CallContext(ctx, body.Size)
	defer cancel()
	w := c.bucket.Object(key).If(gcstorage.Conditions{DoesNotExist: true}).NewWriter(cctx)
	w.Metadata = meta
	w.ContentType = "application/octet-stream"
	// One request for a file up to the SDK's default chunk (16 MiB), with a
	// buffer no larger than the file; bigger ones go as a resumable upload,
	// whose precondition the store checks when it is finalised.
	w.ChunkSize = int(min(body.Size+1, spool.MaxMemoryBody))
	if _, err = io.Copy(w, body); err != nil {
		cancel()
		_ = w.Close()
		return 0, c.describe(ctx, "create", key, err)
	}
	if err = w.Close(); err == nil {
		return body.Size, nil
	}
	err = c.describe(ctx, "create", key, err)
	if errors.Is(err, storage.ErrExists) {
		// Our own earlier attempt may have landed before a retry.
		if attrs, aerr := c.attrs(ctx, key); aerr == nil && attrs.Metadata[metaUploadID] == uploadID {
			return body.Size, nil
		}
	}
	return 0, err
}

func (c *Client) attrs(ctx context.Context, key string) (*gcstorage.ObjectAttrs, error) {
	cctx, cancel := c.opts.CallContext(ctx, 0)
	defer cancel()
	return c.bucket.Object(key).Attrs(cctx)
}

// Open reads an object or a range of it; see storage.Client. It reads the
// object's attributes (size, metadata, generation) first and then that
// generation's bytes, so the two always belong together.
func (c *Client) Open(ctx context.Context, level int, minTXID, maxTXID ltx.TXID, offset, size int64) (*storage.Object, error) {
	if err := storage.CheckKey(level, minTXID, maxTXID); err != nil {
		return nil, fmt.Errorf("gcs replica: %w", err)
	}
	key := c.Key(level, minTXID, maxTXID)
	if offset < 0 {
		return nil, fmt.Errorf("gcs replica: open %s: negative offset %d", c.where(key), offset)
	}
	attrs, err := c.attrs(ctx, key)
	if errors.Is(err, gcstorage.ErrObjectNotExist) {
		return nil, c.notFound(ctx, "open", key)
	} else if err != nil {
		return nil, c.describe(ctx, "open", key, err)
	}
	info := storage.FileInfo{Level: level, MinTXID: minTXID, MaxTXID: maxTXID, Size: attrs.Size, CreatedAt: attrs.Created.UTC()}
	if info.Metadata, err = decodeMetadata(attrs.Metadata); err != nil {
		return nil, fmt.Errorf("gcs replica: open %s: %w", c.where(key), err)
	}
	if info.Metadata != nil && !info.Metadata.CommitTime.IsZero() {
		info.CreatedAt = info.Metadata.CommitTime
	}
	length := attrs.Size - offset
	if size >= 0 {
		length = min(length, size)
	}
	if length <= 0 {
		// Nothing to read (size 0, or a range at or past the end), served
		// as the file store serves it: an empty read with the object's info.
		return &storage.Object{ReadCloser: io.NopCloser(strings.NewReader("")), Info: info}, nil
	}
	rc, err := c.read(ctx, c.bucket.Object(key).Generation(attrs.Generation), key, offset, length)
	if err != nil {
		return nil, err
	}
	return &storage.Object{ReadCloser: rc, Info: info}, nil
}

// read opens length bytes of o from offset (length -1: to the end); the
// deadline covers reading the body.
func (c *Client) read(ctx context.Context, o *gcstorage.ObjectHandle, key string, offset, length int64) (io.ReadCloser, error) {
	cctx, cancel := context.WithCancel(ctx)
	timer := time.AfterFunc(c.opts.CallTimeout, cancel)
	r, err := o.NewRangeReader(cctx, offset, length)
	if err != nil {
		timer.Stop()
		cancel()
		return nil, c.describe(ctx, "open", key, err)
	}
	timer.Reset(c.opts.TransferTimeout(r.Remain()))
	return &objstore.BodyCloser{ReadCloser: r, Stop: func() { timer.Stop(); cancel() }}, nil
}

// List lists one level from seek, one page at a time.
func (c *Client) List(ctx context.Context, level int, seek ltx.TXID) (storage.Iterator, error) {
	if level < 0 {
		return nil, fmt.Errorf("gcs replica: list: negative level %d", level)
	}
	return newIterator(ctx, c, level, seek), nil
}

// Delete removes files, objstore.DeleteParallelism at a time; see
// storage.Client.
func (c *Client) Delete(ctx context.Context, files []storage.FileInfo) error {
	return objstore.DeleteLTX(ctx, Type, c.prefix, files, c.deleteKey)
}

// deleteKey deletes one object; a missing one is not an error.
func (c *Client) deleteKey(ctx context.Context, key string) error {
	cctx, cancel := c.opts.CallContext(ctx, 0)
	defer cancel()
	err := c.bucket.Object(key).Delete(cctx)
	if errors.Is(err, gcstorage.ErrObjectNotExist) {
		if err = c.notFound(ctx, "delete", key); errors.Is(err, storage.ErrNotFound) {
			return nil
		}
		return err
	}
	if err != nil {
		return c.describe(ctx, "delete", key, err)
	}
	return nil
}

// notFound is the error for a 404 on an object. GCS answers a missing
// bucket's objects with the same 404, so until the bucket has been seen to
// exist, a listing (which tells the two apart, and needs no more than the
// object permissions the replica needs anyway) checks it: a follower must
// not wait forever on a bucket that is not there.
func (c *Client) notFound(ctx context.Context, op, key string) error {
	if !c.bucketSeen.Load() {
		cctx, cancel := c.opts.CallContext(ctx, 0)
		defer cancel()
		it := c.bucket.Objects(cctx, &gcstorage.Query{Prefix: key})
		it.PageInfo().MaxSize = 1
		if _, err := it.Next(); err != nil && !errors.Is(err, iterator.Done) {
			return c.describe(ctx, op, key, err)
		}
		c.bucketSeen.Store(true)
	}
	return fmt.Errorf("gcs replica: %s: %w", c.where(key), storage.ErrNotFound)
}

// ProbeCreateOnly creates <path>/understudy-probe-<random> twice (the second
// must fail with 412) and deletes it; see storage.Client.
func (c *Client) ProbeCreateOnly(ctx context.Context) error {
	key := objstore.ProbeKey(c.prefix)
	return objstore.ProbeCreateOnly(ctx, key, c.put, c.deleteKey, c.opts.CallTimeout, func() error {
		return storage.NoCreateOnly(fmt.Sprintf("gcs replica: create-only probe: a second upload of %s with ifGenerationMatch=0 succeeded; the store at %s does not honour preconditions, so two writers could overwrite each other's history",
			c.where(key), c.endpoint()))
	})
}

// decodeMetadata reads our fields from the object's metadata.
func decodeMetadata(m map[string]string) (*storage.Metadata, error) {
	return storage.MetadataFromFields(func(f string) (string, bool) {
		v, ok := m[metaPrefix+f]
		return v, ok
	})
}
