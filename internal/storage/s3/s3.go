// Package s3 is the replica store in an S3 bucket (or any S3-compatible
// store), in Litestream 0.5's key layout:
//
//	<path>/<level %04x>/<minTXID %016x>-<maxTXID %016x>.ltx
//
// Creates are conditional (If-None-Match: *), so a key is written once; the
// metadata rides on the same PUT as user metadata. A store that does not
// honour the condition can be written through PlainWrites instead (see
// plain.go and the storage package's "Stores without create-only writes").
package s3

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/internal/storage"
	"github.com/understudy-db/understudy/internal/storage/objstore"
	"github.com/understudy-db/understudy/internal/storage/spool"
)

// Type is the value of Client.Type.
const Type = "s3"

// Defaults for Options left zero.
const (
	DefaultRegion        = "us-east-1"
	DefaultListPageSize  = 1000 // the S3 maximum
	DefaultMaxAttempts   = objstore.DefaultMaxAttempts
	DefaultMaxBackoff    = objstore.DefaultMaxBackoff
	DefaultCallTimeout   = objstore.DefaultCallTimeout
	DefaultMinThroughput = objstore.DefaultMinThroughput
	// DeleteBatchSize is the most keys one DeleteObjects call may carry.
	DeleteBatchSize = 1000
)

// metaPrefix prefixes each storage.Meta* field in user metadata
// (x-amz-meta-understudy-<field>); S3 returns the keys lower-cased.
const metaPrefix = objstore.MetaPrefix

// metaUploadID identifies one Create call: when a PUT is retried after a
// timeout and the first attempt did land, the retry gets 412 for our own
// object; the upload id tells that apart from losing to another writer.
const metaUploadID = objstore.MetaUploadID

// Options configure a Client.
type Options struct {
	Bucket         string
	Path           string // key prefix of the database's replica; may be empty
	Region         string // default: from the environment/profile, else us-east-1
	Endpoint       string // for S3-compatible stores, e.g. http://127.0.0.1:7070
	ForcePathStyle bool
	SkipVerify     bool // do not verify the endpoint's TLS certificate

	// Static credentials; when empty, the SDK's default chain is used
	// (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, shared profile, instance role).
	AccessKeyID     string
	SecretAccessKey string

	// Server-side encryption (sse.go): SSE is "", SSEAES256 or SSEKMS
	// (with SSEKMSKeyID, or the bucket's default KMS key); SSECustomerKey
	// is an SSE-C key in base64 (32 bytes), sent with its MD5 on every PUT
	// and GET. The key and the key id never reach an error message.
	SSE            string
	SSEKMSKeyID    string
	SSECustomerKey string

	ListPageSize int // keys per ListObjectsV2 page (default 1000)
	objstore.Timing

	// ResolveVersions makes readers resolve each key to one of its object
	// versions (storage.PickVersion) where the bucket keeps versions: set
	// for a replica that accepts a store without create-only writes
	// (conditional-writes: if-supported), whose keys may hold several.
	ResolveVersions bool
}

// Client is a replica store in one bucket prefix.
type Client struct {
	opts     Options
	s3       *awss3.Client
	prefix   string // Path with a trailing "/", or ""
	credDesc string // how credentials were given, for error messages

	plain    bool      // Create sends no condition (PlainWrites)
	versions *versions // how reads resolve object versions; nil: never
	// sseCKeyMD5 is the SSE-C key's MD5 in base64, "" without SSE-C.
	sseCKeyMD5 string
}

var _ storage.Client = (*Client)(nil)

// Sub is a client of the same store for the key prefix rel below this
// client's (one database of a directory entry). It shares the SDK client,
// its connections and credentials, so thousands of databases cost one.
func (c *Client) Sub(rel string) storage.Client {
	n := *c // the write mode, versions and SSE-C key are the store's
	n.opts.Path = strings.Trim(path.Join(c.opts.Path, rel), "/")
	n.prefix = ""
	if n.opts.Path != "" {
		n.prefix = n.opts.Path + "/"
	}
	return &n
}

// New validates opts and returns a client. It does not contact the store.
func New(ctx context.Context, opts Options) (*Client, error) {
	if opts.Bucket == "" {
		return nil, errors.New("s3 replica: bucket is empty; set the replica's bucket")
	}
	if (opts.AccessKeyID == "") != (opts.SecretAccessKey == "") {
		return nil, fmt.Errorf("s3 replica: bucket %s: set both access-key-id and secret-access-key, or neither to use the environment or shared profile", opts.Bucket)
	}
	sseCKeyMD5, err := checkSSE(opts)
	if err != nil {
		return nil, err
	}
	if opts.ListPageSize <= 0 || opts.ListPageSize > DefaultListPageSize {
		opts.ListPageSize = DefaultListPageSize
	}
	opts.Timing = opts.Timing.WithDefaults()
	if opts.Endpoint != "" && !strings.Contains(opts.Endpoint, "://") {
		opts.Endpoint = "https://" + opts.Endpoint
	}
	opts.Path = strings.Trim(opts.Path, "/")

	// The HTTP client must be the SDK's buildable one: the config loader
	// adds AWS_CA_BUNDLE through WithTransportOptions, which a plain
	// http.Client lacks (Litestream 0.5.16 fails to start there).
	httpClient := awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) {
		// An attempt whose answer does not start within half the call's
		// deadline is abandoned and retried on a fresh connection, leaving
		// time for the retry (a conditional PUT that did land is recognised
		// by its upload id).
		tr.ResponseHeaderTimeout = opts.CallTimeout / 2
		if opts.SkipVerify && tr.TLSClientConfig != nil {
			tr.TLSClientConfig.InsecureSkipVerify = true
		}
	})
	loadOpts := []func(*awsconfig.LoadOptions) error{
		awsconfig.WithHTTPClient(httpClient),
		awsconfig.WithRetryer(func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) {
				o.MaxAttempts = opts.MaxAttempts
				o.MaxBackoff = opts.MaxBackoff
				// A daemon must keep retrying through an outage rather
				// than run out of the client-wide retry quota.
				o.RateLimiter = ratelimit.None
			})
		}),
	}
	if opts.Region != "" {
		loadOpts = append(loadOpts, awsconfig.WithRegion(opts.Region))
	}
	credDesc := "credentials from the environment or shared profile (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE)"
	if opts.AccessKeyID != "" {
		loadOpts = append(loadOpts, awsconfig.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider(opts.AccessKeyID, opts.SecretAccessKey, "")))
		credDesc = fmt.Sprintf("access-key-id %q and its secret-access-key", opts.AccessKeyID)
	}
	cfg, err := awsconfig.LoadDefaultConfig(ctx, loadOpts...)
	if err != nil {
		return nil, fmt.Errorf("s3 replica: bucket %s: load AWS configuration: %w (check AWS_* variables and the shared config/credentials files)", opts.Bucket, err)
	}
	if cfg.Region == "" {
		cfg.Region = DefaultRegion
	}
	if opts.AccessKeyID == "" && cfg.Credentials != nil {
		cfg.Credentials = markNoCredentials{cfg.Credentials}
	}
	opts.Region = cfg.Region
	client := awss3.NewFromConfig(cfg, func(o *awss3.Options) {
		if opts.Endpoint != "" {
			o.BaseEndpoint = aws.String(opts.Endpoint)
		}
		o.UsePathStyle = opts.ForcePathStyle
		// S3-compatible stores differ in their support of the newer
		// default checksums; LTX files carry their own checksum.
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
	})
	c := &Client{opts: opts, s3: client, credDesc: credDesc, sseCKeyMD5: sseCKeyMD5}
	if opts.ResolveVersions {
		c.versions = &versions{}
	}
	if opts.Path != "" {
		c.prefix = opts.Path + "/"
	}
	return c, nil
}

// Type returns "s3".
func (c *Client) Type() string { return Type }

// Bucket returns the bucket name.
func (c *Client) Bucket() string { return c.opts.Bucket }

// LevelPrefix is the key prefix of one level: <path>/<level %04x>/.
func (c *Client) LevelPrefix(level int) string {
	return fmt.Sprintf("%s%04x/", c.prefix, level)
}

// Key is the object key of one LTX file.
func (c *Client) Key(level int, minTXID, maxTXID ltx.TXID) string {
	return c.LevelPrefix(level) + storage.FormatFilename(minTXID, maxTXID)
}

// callContext bounds one call: CallTimeout plus the time a transfer of size
// bytes takes at MinThroughput.
func (c *Client) callContext(ctx context.Context, size int64) (context.Context, context.CancelFunc) {
	return c.opts.CallContext(ctx, size)
}

func (c *Client) transferTimeout(size int64) time.Duration { return c.opts.TransferTimeout(size) }

// Create uploads the file with If-None-Match: * ; see storage.Client.
func (c *Client) Create(ctx context.Context, level int, minTXID, maxTXID ltx.TXID, r io.Reader, md storage.Metadata) (storage.FileInfo, error) {
	put := c.put
	if c.plain {
		put = c.plainPut
	}
	return objstore.CreateLTX(ctx, Type, c.prefix, level, minTXID, maxTXID, r, md, put)
}

// put is a conditional PUT of r at key with md; it returns the size.
func (c *Client) put(ctx context.Context, key string, r io.Reader, md storage.Metadata) (int64, error) {
	body, uploadID, meta, err := c.prepareUpload(key, r, md)
	if err != nil {
		return 0, err
	}
	defer body.Close()
	err = c.putObject(ctx, key, body, meta, true)
	if err == nil {
		return body.Size, nil
	}
	err = c.describe(ctx, "create", key, err)
	if errors.Is(err, storage.ErrExists) {
		// Our own earlier attempt may have landed before a retry.
		if mine, _ := c.hasUploadID(ctx, key, uploadID); mine {
			return body.Size, nil
		}
	}
	return 0, err
}

// prepareUpload checks md and makes r an upload body, with the metadata
// of a PUT that carries a new upload id (returned too).
func (c *Client) prepareUpload(key string, r io.Reader, md storage.Metadata) (*spool.Body, string, map[string]string, error) {
	if err := checkMetadata(md); err != nil {
		return nil, "", nil, fmt.Errorf("s3 replica: %s: %w", c.where(key), err)
	}
	b, err := spool.New(r)
	if err != nil {
		return nil, "", nil, fmt.Errorf("s3 replica: %s: read the file to upload: %w", c.where(key), err)
	}
	uploadID := objstore.UploadID()
	meta := map[string]string{metaUploadID: uploadID}
	for k, v := range md.Fields() {
		meta[metaPrefix+k] = v
	}
	return b, uploadID, meta, nil
}

// putObject PUTs b at key with meta, create-only (If-None-Match: *) when
// conditional. The error is the SDK's, undescribed.
func (c *Client) putObject(ctx context.Context, key string, b *spool.Body, meta map[string]string, conditional bool) error {
	in := &awss3.PutObjectInput{
		Bucket:        aws.String(c.opts.Bucket),
		Key:           aws.String(key),
		Body:          b,
		ContentLength: aws.Int64(b.Size),
		Metadata:      meta,
	}
	if conditional {
		in.IfNoneMatch = aws.String("*")
	}
	c.sseOnPut(in)
	cctx, cancel := c.callContext(ctx, b.Size)
	defer cancel()
	_, err := c.s3.PutObject(cctx, in)
	return err
}

// hasUploadID reports whether the object at key was written by the Create
// call that chose id.
func (c *Client) hasUploadID(ctx context.Context, key, id string) (bool, error) {
	meta, err := c.headMetadata(ctx, key, "")
	if err != nil {
		return false, err
	}
	return meta[metaUploadID] == id, nil
}

// Open reads an object or a range of it; see storage.Client. The deadline
// covers reading the body, sized once the object's length is known.
func (c *Client) Open(ctx context.Context, level int, minTXID, maxTXID ltx.TXID, offset, size int64) (*storage.Object, error) {
	if err := checkKey(level, minTXID, maxTXID); err != nil {
		return nil, err
	}
	key := c.Key(level, minTXID, maxTXID)
	if offset < 0 {
		return nil, fmt.Errorf("s3 replica: open %s: negative offset %d", c.where(key), offset)
	}
	in := &awss3.GetObjectInput{Bucket: aws.String(c.opts.Bucket), Key: aws.String(key)}
	c.sseOnGet(in)
	if v, err := c.resolveVersion(ctx, key); err != nil {
		return nil, err
	} else if v != "" {
		in.VersionId = aws.String(v)
	}
	empty := size == 0
	switch {
	case empty:
		in.Range = aws.String("bytes=0-0") // headers only
	case size > 0:
		in.Range = aws.String(fmt.Sprintf("bytes=%d-%d", offset, offset+size-1))
	case offset > 0:
		in.Range = aws.String(fmt.Sprintf("bytes=%d-", offset))
	}
	cctx, cancel := context.WithCancel(ctx)
	timer := time.AfterFunc(c.opts.CallTimeout, cancel)
	out, err := c.s3.GetObject(cctx, in)
	if err != nil {
		timer.Stop()
		cancel()
		if offset > 0 && isInvalidRange(err) {
			// A range at or past the end is served as the file store
			// serves it: an empty read with the object's info.
			return c.Open(ctx, level, minTXID, maxTXID, 0, 0)
		}
		return nil, c.describe(ctx, "open", key, err)
	}
	length := aws.ToInt64(out.ContentLength)
	timer.Reset(c.transferTimeout(length))
	info := storage.FileInfo{
		Level: level, MinTXID: minTXID, MaxTXID: maxTXID,
		Size: objectSize(out.ContentRange, length), CreatedAt: aws.ToTime(out.LastModified).UTC(),
	}
	if info.Metadata, err = decodeMetadata(out.Metadata); err != nil {
		out.Body.Close()
		timer.Stop()
		cancel()
		return nil, fmt.Errorf("s3 replica: open %s: %w", c.where(key), err)
	}
	if info.Metadata != nil && !info.Metadata.CommitTime.IsZero() {
		info.CreatedAt = info.Metadata.CommitTime
	}
	var rc io.ReadCloser = out.Body
	if empty {
		out.Body.Close()
		rc = io.NopCloser(strings.NewReader(""))
	}
	return &storage.Object{
		ReadCloser: &objstore.BodyCloser{ReadCloser: rc, Stop: func() { timer.Stop(); cancel() }},
		Info:       info,
	}, nil
}

// List lists one level from seek, one ListObjectsV2 page at a time.
func (c *Client) List(ctx context.Context, level int, seek ltx.TXID) (storage.Iterator, error) {
	if level < 0 {
		return nil, fmt.Errorf("s3 replica: list: negative level %d", level)
	}
	return newIterator(ctx, c, level, seek), nil
}

// Delete removes files in batches of DeleteBatchSize; see storage.Client.
func (c *Client) Delete(ctx context.Context, files []storage.FileInfo) error {
	for start := 0; start < len(files); start += DeleteBatchSize {
		batch := files[start:min(start+DeleteBatchSize, len(files))]
		ids := make([]types.ObjectIdentifier, 0, len(batch))
		for _, fi := range batch {
			if err := checkKey(fi.Level, fi.MinTXID, fi.MaxTXID); err != nil {
				return err
			}
			ids = append(ids, types.ObjectIdentifier{Key: aws.String(c.Key(fi.Level, fi.MinTXID, fi.MaxTXID))})
		}
		if err := c.deleteKeys(ctx, ids); err != nil {
			return err
		}
	}
	return nil
}

func (c *Client) deleteKeys(ctx context.Context, ids []types.ObjectIdentifier) error {
	first := aws.ToString(ids[0].Key)
	cctx, cancel := c.callContext(ctx, 0)
	defer cancel()
	out, err := c.s3.DeleteObjects(cctx, &awss3.DeleteObjectsInput{
		Bucket: aws.String(c.opts.Bucket),
		Delete: &types.Delete{Objects: ids, Quiet: aws.Bool(true)},
	})
	if err != nil {
		return c.describe(ctx, fmt.Sprintf("delete %d objects starting at", len(ids)), first, err)
	}
	for _, e := range out.Errors {
		if aws.ToString(e.Code) == "NoSuchKey" {
			continue
		}
		return fmt.Errorf("s3 replica: delete %s: %s: %s", c.where(aws.ToString(e.Key)), aws.ToString(e.Code), aws.ToString(e.Message))
	}
	return nil
}

// ProbeCreateOnly creates <path>/understudy-probe-<random> twice (the second
// must fail with 412) and deletes it; see storage.Client.
func (c *Client) ProbeCreateOnly(ctx context.Context) error {
	key := c.prefix + "understudy-probe-" + objstore.UploadID()
	md := storage.Metadata{Node: "probe", CommitTime: time.Now()}
	if _, err := c.put(ctx, key, strings.NewReader("probe"), md); errors.Is(err, errNotImplemented) {
		return c.noCreateOnly(storage.ConditionRefused, fmt.Sprintf("a conditional PUT (If-None-Match: *) of %s was answered 501 Not Implemented", c.where(key)))
	} else if err != nil {
		return fmt.Errorf("create-only probe could not write: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.opts.CallTimeout)
		defer cancel()
		c.deleteProbe(cctx, key)
	}()
	_, err := c.put(ctx, key, strings.NewReader("probe"), md)
	switch {
	case errors.Is(err, storage.ErrExists):
		return nil
	case err == nil:
		return c.noCreateOnly(storage.ConditionIgnored, fmt.Sprintf("a second conditional PUT (If-None-Match: *) of %s succeeded", c.where(key)))
	case errors.Is(err, errNotImplemented):
		return c.noCreateOnly(storage.ConditionRefused, fmt.Sprintf("a second conditional PUT (If-None-Match: *) of %s was answered 501 Not Implemented", c.where(key)))
	default:
		return fmt.Errorf("create-only probe: second create: %w", err)
	}
}

// noCreateOnly is the probe's verdict on a store without create-only
// writes, the same words whichever way the store showed it.
func (c *Client) noCreateOnly(cond storage.Condition, what string) error {
	return &storage.ConditionError{Condition: cond, Msg: fmt.Sprintf("s3 replica: create-only probe: %s; the store at %s does not honour conditional writes, so two writers could overwrite each other's history: use a store that does (AWS S3, versitygw, MinIO, ...)",
		what, c.endpoint())}
}

// checkKey is storage.CheckKey with this store's prefix.
func checkKey(level int, minTXID, maxTXID ltx.TXID) error {
	if err := storage.CheckKey(level, minTXID, maxTXID); err != nil {
		return fmt.Errorf("s3 replica: %w", err)
	}
	return nil
}

// checkMetadata rejects values HTTP headers cannot carry.
func checkMetadata(md storage.Metadata) error { return objstore.CheckHeaderMetadata(md, "S3") }

// decodeMetadata reads our fields from S3 user metadata (keys lower-cased).
func decodeMetadata(m map[string]string) (*storage.Metadata, error) {
	lower := lowerKeys(m)
	return storage.MetadataFromFields(func(f string) (string, bool) {
		v, ok := lower[metaPrefix+f]
		return v, ok
	})
}

// objectSize is the whole object's size: from Content-Range
// ("bytes 0-9/1234") on a ranged GET, else the body length.
func objectSize(contentRange *string, length int64) int64 {
	return objstore.ObjectSize(aws.ToString(contentRange), length)
}
