// Package abs is the replica store in an Azure Blob Storage container, in
// Litestream 0.5's key layout (the same as the s3 store's):
//
//	<path>/<level %04x>/<minTXID %016x>-<maxTXID %016x>.ltx
//
// Each LTX file is one block blob written by a single Put Blob with
// If-None-Match: *: Azure writes the blob only if no blob has the name and
// answers 409 BlobAlreadyExists (or 412) otherwise, atomically, so that of
// two writers racing for a key exactly one wins. The metadata rides on the
// same request as blob metadata. Azure metadata names must be C#
// identifiers, so a field "pre-apply-checksum" is stored as
// understudy_pre_apply_checksum.
//
// Credentials are the storage account's shared key: the replica's
// account-key, else $LITESTREAM_AZURE_ACCOUNT_KEY, as Litestream 0.3 reads it.
package abs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/internal/storage"
	"github.com/understudy-db/understudy/internal/storage/objstore"
	"github.com/understudy-db/understudy/internal/storage/spool"
)

// Type is the value of Client.Type.
const Type = "abs"

// AccountKeyEnv is read for the account key when the replica has none
// (Litestream 0.3's variable).
const AccountKeyEnv = "LITESTREAM_AZURE_ACCOUNT_KEY"

// Defaults for Options left zero (and objstore's, for the Timing).
const (
	DefaultListPageSize = 5000 // the List Blobs maximum
	// MaxUploadSize is the largest file one Put Blob may carry (5000 MiB).
	MaxUploadSize = 5000 << 20
)

// Options configure a Client.
type Options struct {
	AccountName string
	AccountKey  string // the shared key, base64; "" = $LITESTREAM_AZURE_ACCOUNT_KEY
	Container   string
	Path        string // key prefix of the database's replica; may be empty
	// Endpoint is the account's blob service URL; "" is
	// https://ACCOUNT.blob.core.windows.net/. Azurite's is
	// http://127.0.0.1:10000/devstoreaccount1.
	Endpoint string

	ListPageSize int // blobs per List Blobs page (default 5000)
	objstore.Timing
}

// Client is a replica store in one container prefix.
type Client struct {
	opts      Options
	container *container.Client
	prefix    string // Path with a trailing "/", or ""
	credDesc  string
}

var _ storage.Client = (*Client)(nil)

// New validates opts and returns a client. It does not contact the store.
func New(opts Options) (*Client, error) {
	if opts.AccountName == "" {
		return nil, errors.New("abs replica: account-name is empty; set the storage account's name (account-name, or abs://ACCOUNT@CONTAINER/PATH)")
	}
	if opts.Container == "" {
		return nil, fmt.Errorf("abs replica: account %s: the container is empty; set the replica's bucket to the container's name", opts.AccountName)
	}
	credDesc := "the replica's account-key"
	if opts.AccountKey == "" {
		opts.AccountKey = os.Getenv(AccountKeyEnv)
		credDesc = AccountKeyEnv
	}
	if opts.AccountKey == "" {
		return nil, &objstore.CredentialsError{Msg: fmt.Sprintf("abs replica: account %s: no account key: set the replica's account-key or %s to the storage account's access key", opts.AccountName, AccountKeyEnv)}
	}
	cred, err := azblob.NewSharedKeyCredential(opts.AccountName, opts.AccountKey)
	if err != nil {
		// The SDK's message is about the key's encoding; it never shows it.
		return nil, &objstore.CredentialsError{Msg: fmt.Sprintf("abs replica: account %s: %s is not an account key (base64, as the portal shows it): %v", opts.AccountName, credDesc, err)}
	}
	if opts.ListPageSize <= 0 || opts.ListPageSize > DefaultListPageSize {
		opts.ListPageSize = DefaultListPageSize
	}
	opts.Timing = opts.Timing.WithDefaults()
	if opts.Endpoint == "" {
		opts.Endpoint = "https://" + opts.AccountName + ".blob.core.windows.net"
	}
	opts.Endpoint = strings.TrimRight(opts.Endpoint, "/")
	opts.Path = strings.Trim(opts.Path, "/")
	cc, err := container.NewClientWithSharedKeyCredential(opts.Endpoint+"/"+url.PathEscape(opts.Container), cred, &container.ClientOptions{
		ClientOptions: azcore.ClientOptions{Retry: policy.RetryOptions{
			MaxRetries:    int32(opts.MaxAttempts - 1),
			RetryDelay:    100 * time.Millisecond,
			MaxRetryDelay: opts.MaxBackoff,
		}},
	})
	if err != nil {
		return nil, fmt.Errorf("abs replica: container %s at %s: %w", opts.Container, opts.Endpoint, err)
	}
	return &Client{opts: opts, container: cc, prefix: storage.KeyPrefix(opts.Path), credDesc: credDesc}, nil
}

// Sub is a client of the same container for the key prefix rel below this
// client's (one database of a directory entry). It shares the SDK client,
// its connections and credentials, so thousands of databases cost one.
func (c *Client) Sub(rel string) storage.Client {
	o := c.opts
	o.Path = strings.Trim(path.Join(c.opts.Path, rel), "/")
	return &Client{opts: o, container: c.container, prefix: storage.KeyPrefix(o.Path), credDesc: c.credDesc}
}

// Type returns "abs".
func (c *Client) Type() string { return Type }

// Container returns the container's name.
func (c *Client) Container() string { return c.opts.Container }

// Key is the blob name of one LTX file.
func (c *Client) Key(level int, minTXID, maxTXID ltx.TXID) string {
	return storage.ObjectKey(c.prefix, level, minTXID, maxTXID)
}

// Create uploads the file with If-None-Match: *; see storage.Client.
func (c *Client) Create(ctx context.Context, level int, minTXID, maxTXID ltx.TXID, r io.Reader, md storage.Metadata) (storage.FileInfo, error) {
	return objstore.CreateLTX(ctx, Type, c.prefix, level, minTXID, maxTXID, r, md, c.put)
}

// put is a create-only Put Blob of r at key with md; it returns the size.
func (c *Client) put(ctx context.Context, key string, r io.Reader, md storage.Metadata) (int64, error) {
	if err := objstore.CheckHeaderMetadata(md, "blob"); err != nil {
		return 0, fmt.Errorf("abs replica: %s: %w", c.where(key), err)
	}
	body, err := spool.New(r)
	if err != nil {
		return 0, fmt.Errorf("abs replica: %s: read the file to upload: %w", c.where(key), err)
	}
	defer body.Close()
	if body.Size > MaxUploadSize {
		return 0, fmt.Errorf("abs replica: %s: %d bytes is more than one Put Blob carries (%d)", c.where(key), body.Size, MaxUploadSize)
	}
	uploadID := objstore.UploadID()
	meta := map[string]*string{metaName(uploadIDField): to.Ptr(uploadID)}
	for k, v := range md.Fields() {
		meta[metaName(k)] = to.Ptr(v)
	}
	cctx, cancel := c.opts.CallContext(ctx, body.Size)
	defer cancel()
	_, err = c.container.NewBlockBlobClient(key).Upload(cctx, streaming.NopCloser(body), &blockblob.UploadOptions{
		Metadata:    meta,
		HTTPHeaders: &blob.HTTPHeaders{BlobContentType: to.Ptr("application/octet-stream")},
		AccessConditions: &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{
			IfNoneMatch: to.Ptr(azcore.ETagAny),
		}},
	})
	if err == nil {
		return body.Size, nil
	}
	err = c.describe(ctx, "create", key, err)
	if errors.Is(err, storage.ErrExists) {
		// Our own earlier attempt may have landed before a retry.
		if props, perr := c.properties(ctx, key); perr == nil && metaValue(props.Metadata, uploadIDField) == uploadID {
			return body.Size, nil
		}
	}
	return 0, err
}

func (c *Client) properties(ctx context.Context, key string) (blob.GetPropertiesResponse, error) {
	cctx, cancel := c.opts.CallContext(ctx, 0)
	defer cancel()
	return c.container.NewBlobClient(key).GetProperties(cctx, nil)
}

// Open reads a blob or a range of it with one Get Blob, which returns the
// metadata too; see storage.Client. The deadline covers reading the body,
// sized once the blob's length is known.
func (c *Client) Open(ctx context.Context, level int, minTXID, maxTXID ltx.TXID, offset, size int64) (*storage.Object, error) {
	if err := storage.CheckKey(level, minTXID, maxTXID); err != nil {
		return nil, fmt.Errorf("abs replica: %w", err)
	}
	key := c.Key(level, minTXID, maxTXID)
	if offset < 0 {
		return nil, fmt.Errorf("abs replica: open %s: negative offset %d", c.where(key), offset)
	}
	info := storage.FileInfo{Level: level, MinTXID: minTXID, MaxTXID: maxTXID}
	if size == 0 {
		props, err := c.properties(ctx, key)
		if err != nil {
			return nil, c.describe(ctx, "open", key, err)
		}
		info.Size, info.CreatedAt = deref(props.ContentLength), deref(props.LastModified).UTC()
		if err := c.withMetadata(&info, props.Metadata); err != nil {
			return nil, fmt.Errorf("abs replica: open %s: %w", c.where(key), err)
		}
		return &storage.Object{ReadCloser: io.NopCloser(strings.NewReader("")), Info: info}, nil
	}
	rng := blob.HTTPRange{Offset: offset}
	if size > 0 {
		rng.Count = size
	}
	cctx, cancel := context.WithCancel(ctx)
	timer := time.AfterFunc(c.opts.CallTimeout, cancel)
	resp, err := c.container.NewBlobClient(key).DownloadStream(cctx, &blob.DownloadStreamOptions{Range: rng})
	if err != nil {
		timer.Stop()
		cancel()
		if offset > 0 && hasCode(err, "InvalidRange") {
			// A range at or past the end is served as the file store
			// serves it: an empty read with the blob's info.
			return c.Open(ctx, level, minTXID, maxTXID, 0, 0)
		}
		return nil, c.describe(ctx, "open", key, err)
	}
	length := deref(resp.ContentLength)
	timer.Reset(c.opts.TransferTimeout(length))
	info.Size, info.CreatedAt = objstore.ObjectSize(deref(resp.ContentRange), length), deref(resp.LastModified).UTC()
	if err := c.withMetadata(&info, resp.Metadata); err != nil {
		resp.Body.Close()
		timer.Stop()
		cancel()
		return nil, fmt.Errorf("abs replica: open %s: %w", c.where(key), err)
	}
	return &storage.Object{
		ReadCloser: &objstore.BodyCloser{ReadCloser: resp.Body, Stop: func() { timer.Stop(); cancel() }},
		Info:       info,
	}, nil
}

// withMetadata decodes a blob's metadata into info; the commit time, where
// there is one, is the file's time.
func (c *Client) withMetadata(info *storage.FileInfo, m map[string]*string) error {
	md, err := decodeMetadata(m)
	if err != nil {
		return err
	}
	info.Metadata = md
	if md != nil && !md.CommitTime.IsZero() {
		info.CreatedAt = md.CommitTime
	}
	return nil
}

// List lists one level from seek, one List Blobs page at a time.
func (c *Client) List(ctx context.Context, level int, seek ltx.TXID) (storage.Iterator, error) {
	if level < 0 {
		return nil, fmt.Errorf("abs replica: list: negative level %d", level)
	}
	return newIterator(ctx, c, level, seek), nil
}

// Delete removes files, objstore.DeleteParallelism at a time; see
// storage.Client.
func (c *Client) Delete(ctx context.Context, files []storage.FileInfo) error {
	return objstore.DeleteLTX(ctx, Type, c.prefix, files, c.deleteKey)
}

// deleteKey deletes one blob; a missing one is not an error.
func (c *Client) deleteKey(ctx context.Context, key string) error {
	cctx, cancel := c.opts.CallContext(ctx, 0)
	defer cancel()
	_, err := c.container.NewBlobClient(key).Delete(cctx, nil)
	if err == nil {
		return nil
	}
	if err = c.describe(ctx, "delete", key, err); errors.Is(err, storage.ErrNotFound) {
		return nil
	}
	return err
}

// ProbeCreateOnly creates <path>/understudy-probe-<random> twice (the second
// must be refused) and deletes it; see storage.Client.
func (c *Client) ProbeCreateOnly(ctx context.Context) error {
	key := objstore.ProbeKey(c.prefix)
	return objstore.ProbeCreateOnly(ctx, key, c.put, c.deleteKey, c.opts.CallTimeout, func() error {
		return storage.NoCreateOnly(fmt.Sprintf("abs replica: create-only probe: a second Put Blob of %s with If-None-Match: * succeeded; the store at %s does not honour conditional writes, so two writers could overwrite each other's history",
			c.where(key), c.opts.Endpoint))
	})
}

// uploadIDField is the metadata field of the create's upload id.
const uploadIDField = "upload-id"

// metaName is the blob metadata name of a storage.Meta* field (or of
// uploadIDField): a C# identifier, as Azure requires.
func metaName(field string) string {
	return strings.ReplaceAll(objstore.MetaPrefix+field, "-", "_")
}

// metaValue reads a field from blob metadata, whose names come back in
// any case (Go's canonical header form capitalises them).
func metaValue(m map[string]*string, field string) string {
	want := metaName(field)
	for k, v := range m {
		if strings.EqualFold(k, want) && v != nil {
			return *v
		}
	}
	return ""
}

// decodeMetadata reads our fields from blob metadata.
func decodeMetadata(m map[string]*string) (*storage.Metadata, error) {
	lower := make(map[string]string, len(m))
	for k, v := range m {
		if v != nil {
			lower[strings.ToLower(k)] = *v
		}
	}
	return storage.MetadataFromFields(func(f string) (string, bool) {
		v, ok := lower[metaName(f)]
		return v, ok
	})
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}
