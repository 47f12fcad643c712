// Package agecrypt encrypts a replica's objects on the client with age
// (filippo.io/age), as Litestream 0.3's replica option age: {recipients,
// identities} does. It is a storage.Client decorator, so every store gets it
// the same way: Create encrypts the LTX file to the recipients before the
// inner client uploads it, Open decrypts with the identities before anyone
// reads it, and the object's metadata (node, fencing token, checksums of the
// plaintext LTX, commit time) travels unencrypted beside it, as the inner
// store keeps it.
//
// What each call gives:
//
//   - Create refuses to write without a recipient: a replica with an age:
//     section never receives a plaintext object. FileInfo.Size is the
//     plaintext size.
//   - Open always decrypts from the start of the object, because age's STREAM
//     nonces count chunks from the first one; a range [offset, offset+size)
//     fetches only the 64 KiB chunks up to its end and skips the first offset
//     bytes. Info.Size is the plaintext size, computed from the ciphertext
//     size and the header's length (age's overhead is exactly known), so a
//     metadata-only Open (size 0) fetches the header and decrypts nothing.
//   - List and Delete pass through: List's sizes are the stored (ciphertext)
//     sizes, a few hundred bytes more than the plaintext. No caller needs
//     them exact (they size buffers and rank files of equal TXIDs).
//
// Errors name the replica and the object and say what to set:
// ErrNoIdentity (an encrypted object, no identity configured),
// ErrWrongIdentity (none of the identities opens it), ErrNotEncrypted (a
// plaintext object in a replica configured for age), ErrDecrypt (the
// ciphertext was changed or damaged: age authenticates the header and every
// chunk) and ErrNoRecipient (Create without a recipient).
package agecrypt

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"filippo.io/age"
	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/internal/storage"
)

// Magic starts every age-encrypted object (the version line that follows
// is "v1\n").
const Magic = "age-encryption.org/"

// The age v1 format's sizes (age-encryption.org/v1, the STREAM payload).
const (
	chunkSize    = 64 << 10              // plaintext bytes per chunk
	tagSize      = 16                    // ChaCha20-Poly1305 tag after each chunk
	encChunkSize = chunkSize + tagSize   // ciphertext bytes per full chunk
	nonceSize    = 16                    // payload nonce between header and chunks
	footerPrefix = "--- "                // the header's last line: "--- " MAC
	maxHeader    = 1 << 20               // more than age's 20 recipient stanzas ever take
	headerProbe  = 4 << 10               // bytes fetched for the header at first (one X25519 recipient: ~200)
	ltxMagic     = ltx.Magic             // a plaintext LTX file starts with it
	ageKeyHint   = "AGE-SECRET-KEY-1..." // what an identity looks like, for messages
)

var (
	// ErrNoIdentity: the object is encrypted and the replica has no age
	// identity to decrypt it.
	ErrNoIdentity = errors.New("object is age-encrypted and no age identity is configured")
	// ErrWrongIdentity: none of the replica's identities matches the
	// object's recipients.
	ErrWrongIdentity = errors.New("no configured age identity matches the object's recipients")
	// ErrNotEncrypted: the object is not age-encrypted although the replica
	// is configured for age.
	ErrNotEncrypted = errors.New("object is not age-encrypted")
	// ErrDecrypt: the ciphertext fails age's authentication (changed,
	// truncated or damaged).
	ErrDecrypt = errors.New("age decryption failed")
	// ErrNoRecipient: Create on a replica without an age recipient.
	ErrNoRecipient = errors.New("no age recipient to encrypt to")
)

// IsKeyError reports whether err comes from the replica's age keys not
// fitting its objects (ErrNoIdentity, ErrWrongIdentity, ErrNotEncrypted,
// ErrNoRecipient): retrying cannot help until the config changes.
func IsKeyError(err error) bool {
	return errors.Is(err, ErrNoIdentity) || errors.Is(err, ErrWrongIdentity) ||
		errors.Is(err, ErrNotEncrypted) || errors.Is(err, ErrNoRecipient)
}

// Options configure a Client.
type Options struct {
	// Replica names the replica in errors ("s3", "backup").
	Replica string
	// Recipients encrypt what Create writes (required to write).
	Recipients []age.Recipient
	// Identities decrypt what Open reads (required to read).
	Identities []age.Identity
}

// Client is a storage.Client whose objects are age-encrypted in the inner
// store.
type Client struct {
	inner      storage.Client
	replica    string
	recipients []age.Recipient
	identities []age.Identity
}

var _ storage.Client = (*Client)(nil)

// New wraps inner. It needs at least one recipient or identity. When inner
// also reads raw keys (storage.KeyReader, the Litestream 0.3 tree), so does
// the result, decrypting what it opens.
func New(inner storage.Client, opts Options) (storage.Client, error) {
	if inner == nil {
		return nil, errors.New("agecrypt: no inner client")
	}
	if len(opts.Recipients) == 0 && len(opts.Identities) == 0 {
		return nil, fmt.Errorf("replica %s: age: set recipients (age1..., to encrypt) and identities (%s, to decrypt)", opts.Replica, ageKeyHint)
	}
	c := &Client{inner: inner, replica: opts.Replica, recipients: opts.Recipients, identities: opts.Identities}
	if kr, ok := inner.(storage.KeyReader); ok {
		return &keyClient{Client: c, kr: kr}, nil
	}
	return c, nil
}

// Type is the inner store's type.
func (c *Client) Type() string { return c.inner.Type() }

// Unwrap returns the inner client.
func (c *Client) Unwrap() storage.Client { return c.inner }

var _ storage.PlainWriter = (*Client)(nil)

// PlainWrites is the inner store's storage.PlainWriter form, encrypted and
// decrypted as c is: an encrypted replica on a store without create-only
// writes (Backblaze B2). An inner store without that form gives an error
// wrapping storage.ErrNoCreateOnly.
func (c *Client) PlainWrites(ctx context.Context) (storage.Client, bool, error) {
	pw, ok := c.inner.(storage.PlainWriter)
	if !ok {
		return nil, false, storage.NoCreateOnly(fmt.Sprintf("replica %s: a %s store cannot be written without create-only writes", c.replica, c.inner.Type()))
	}
	inner, versioned, err := pw.PlainWrites(ctx)
	if err != nil {
		return nil, false, err
	}
	wrapped, err := c.wrap(inner)
	return wrapped, versioned, err
}

// wrap is inner encrypted and decrypted with c's keys.
func (c *Client) wrap(inner storage.Client) (storage.Client, error) {
	return New(inner, Options{Replica: c.replica, Recipients: c.recipients, Identities: c.identities})
}

// Sub is the inner store's client of the prefix rel below this one's (one
// database of a directory entry), encrypted and decrypted with the same
// keys. The inner client must have a Sub method (every store does;
// replicaclient.Sub checks the store under the decorators first).
func (c *Client) Sub(rel string) storage.Client {
	s, ok := c.inner.(interface{ Sub(string) storage.Client })
	if !ok {
		panic(fmt.Sprintf("agecrypt: replica %s: a %s store has no Sub", c.replica, c.inner.Type()))
	}
	sub, err := c.wrap(s.Sub(rel))
	if err != nil {
		panic(err) // c has keys and a client, so New cannot fail
	}
	return sub
}

// Create encrypts r to the recipients and creates the object; see
// storage.Client. The returned Size is the plaintext's.
func (c *Client) Create(ctx context.Context, level int, minTXID, maxTXID ltx.TXID, r io.Reader, md storage.Metadata) (storage.FileInfo, error) {
	if len(c.recipients) == 0 {
		return storage.FileInfo{}, fmt.Errorf("%s: %w: set age: recipients: [age1...] on replica %s (Understudy never writes an unencrypted object to a replica with an age: section)",
			c.where(level, minTXID, maxTXID), ErrNoRecipient, c.replica)
	}
	src := &countingReader{r: r}
	enc, err := age.EncryptReader(src, c.recipients...)
	if err != nil {
		return storage.FileInfo{}, fmt.Errorf("%s: age: %w", c.where(level, minTXID, maxTXID), err)
	}
	info, err := c.inner.Create(ctx, level, minTXID, maxTXID, enc, md)
	if err != nil {
		return info, err
	}
	info.Size = src.n
	return info, nil
}

// Open decrypts the object and returns [offset, offset+size) of the
// plaintext (size < 0: to the end); see storage.Client and the package doc.
func (c *Client) Open(ctx context.Context, level int, minTXID, maxTXID ltx.TXID, offset, size int64) (*storage.Object, error) {
	if offset < 0 {
		return nil, fmt.Errorf("%s: open: negative offset %d", c.where(level, minTXID, maxTXID), offset)
	}
	fetch := int64(-1) // ciphertext bytes to fetch; -1: the whole object
	if size >= 0 {
		fetch = headerProbe + nonceSize + chunksFor(offset+size)*encChunkSize
	}
	for {
		obj, retry, err := c.open(ctx, level, minTXID, maxTXID, offset, size, fetch)
		if retry < 0 || retry == fetch {
			return obj, err
		}
		fetch = retry // the header was longer than headerProbe
	}
}

// open is one attempt of Open that fetches fetch ciphertext bytes. When
// they turn out too few (a header longer than headerProbe), it returns the
// fetch that suffices instead of an object.
func (c *Client) open(ctx context.Context, level int, minTXID, maxTXID ltx.TXID, offset, size, fetch int64) (*storage.Object, int64, error) {
	obj, err := c.inner.Open(ctx, level, minTXID, maxTXID, 0, fetch)
	if err != nil {
		return nil, -1, err
	}
	where := c.where(level, minTXID, maxTXID)
	fail := func(err error) (*storage.Object, int64, error) {
		obj.Close()
		return nil, -1, err
	}
	stored := obj.Info.Size
	truncated := fetch >= 0 && stored > fetch // the fetch ends before the object does
	br := bufio.NewReaderSize(obj, 4096)
	hdr, err := readHeader(br)
	switch {
	case err != nil && truncated && errors.Is(err, io.ErrUnexpectedEOF):
		obj.Close()
		return nil, stored, nil // the header goes on past the probe: fetch it all
	case err != nil:
		return fail(c.headerError(where, err))
	}
	payload := stored - int64(len(hdr)) - nonceSize
	plain, ok := plaintextSize(payload)
	if !ok {
		return fail(fmt.Errorf("%s: %w: %d stored bytes do not fit age's format after a %d-byte header (truncated or damaged)", where, ErrDecrypt, stored, len(hdr)))
	}
	info := obj.Info
	info.Size = plain
	if size == 0 || offset >= plain {
		obj.Close()
		return &storage.Object{ReadCloser: io.NopCloser(strings.NewReader("")), Info: info}, -1, nil
	}
	need := stored
	if size > 0 {
		need = int64(len(hdr)) + nonceSize + chunksFor(min(offset+size, plain))*encChunkSize
		need = min(need, stored)
	}
	if truncated && need > fetch {
		obj.Close()
		return nil, need, nil
	}
	if len(c.identities) == 0 {
		return fail(fmt.Errorf("%s: %w: set age: identities: [%s] on replica %s in the config (the identity whose recipient encrypted the replica)",
			where, ErrNoIdentity, ageKeyHint, c.replica))
	}
	// Stop at a chunk boundary: the chunks read are whole, so each one is
	// authenticated, and the fetch's end is never taken for a truncation.
	src := io.LimitReader(io.MultiReader(bytes.NewReader(hdr), br), need)
	pr, err := age.Decrypt(src, c.identities...)
	if err != nil {
		return fail(c.decryptError(where, err))
	}
	rd := &decryptReader{r: pr, where: where}
	if offset > 0 {
		if _, err := io.CopyN(io.Discard, rd, offset); err != nil {
			return fail(err)
		}
	}
	var r io.Reader = rd
	if size > 0 {
		r = io.LimitReader(rd, size)
	}
	return &storage.Object{ReadCloser: readCloser{Reader: r, Closer: obj}, Info: info}, -1, nil
}

// List lists the inner store; Size is the stored (ciphertext) size.
func (c *Client) List(ctx context.Context, level int, seek ltx.TXID) (storage.Iterator, error) {
	return c.inner.List(ctx, level, seek)
}

// Delete removes files from the inner store.
func (c *Client) Delete(ctx context.Context, files []storage.FileInfo) error {
	return c.inner.Delete(ctx, files)
}

// ProbeCreateOnly probes the inner store (its probe object holds no data).
func (c *Client) ProbeCreateOnly(ctx context.Context) error { return c.inner.ProbeCreateOnly(ctx) }

func (c *Client) where(level int, minTXID, maxTXID ltx.TXID) string {
	return fmt.Sprintf("replica %s: level %d %s", c.replica, level, storage.FormatFilename(minTXID, maxTXID))
}

// headerError explains an object whose age header cannot be read.
func (c *Client) headerError(where string, err error) error {
	var ne *notAgeError
	if !errors.As(err, &ne) {
		return fmt.Errorf("%s: %w: cannot read its age header: %v", where, ErrDecrypt, err)
	}
	what := fmt.Sprintf("starts with %q", ne.head)
	if bytes.HasPrefix(ne.head, []byte(ltxMagic)) {
		what = "is a plaintext LTX file"
	}
	return fmt.Errorf("%s: %w: it %s, but replica %s has an age: section, so every object must be encrypted (written before age was configured, or by another tool such as Litestream 0.5?); give the encrypted replica its own path, or remove age: to read this one",
		where, ErrNotEncrypted, what, c.replica)
}

// decryptError explains a failed age.Decrypt.
func (c *Client) decryptError(where string, err error) error {
	var nm *age.NoIdentityMatchError
	if errors.As(err, &nm) {
		return fmt.Errorf("%s: %w (%d identities tried, the object has %d recipient stanzas of type %s): set the identity that matches the recipient the primary encrypts to in age: identities on replica %s",
			where, ErrWrongIdentity, len(c.identities), len(nm.StanzaTypes), strings.Join(nm.StanzaTypes, ", "), c.replica)
	}
	return fmt.Errorf("%s: %w: %v (the object was changed or damaged after it was written)", where, ErrDecrypt, err)
}

// chunksFor is how many STREAM chunks hold the first n plaintext bytes.
func chunksFor(n int64) int64 { return (n + chunkSize - 1) / chunkSize }

// plaintextSize is the plaintext size of a STREAM payload of n bytes (the
// ciphertext after the header and nonce): every chunk is chunkSize bytes
// plus a tag, except the last, which may be shorter but not empty unless it
// is the only one.
func plaintextSize(n int64) (int64, bool) {
	if n < tagSize {
		return 0, false
	}
	chunks := (n + encChunkSize - 1) / encChunkSize
	plain := n - chunks*tagSize
	if last := n - (chunks-1)*encChunkSize; last < tagSize || (last == tagSize && chunks > 1) {
		return 0, false
	}
	return plain, true
}

// notAgeError is readHeader's verdict on an object without age's intro.
type notAgeError struct{ head []byte }

func (e *notAgeError) Error() string {
	return fmt.Sprintf("not age-encrypted (starts with %q)", e.head)
}

// readHeader reads an age header from br, up to and including its
// "--- MAC" line, and returns its bytes; br is left at the payload nonce.
// Decrypt parses it again: this only finds where it ends.
func readHeader(br *bufio.Reader) ([]byte, error) {
	head, err := br.Peek(len(Magic))
	if !bytes.Equal(head, []byte(Magic)) {
		if len(head) == 0 && err != nil {
			return nil, io.ErrUnexpectedEOF
		}
		return nil, &notAgeError{head: bytes.Clone(head)}
	}
	var hdr []byte
	for {
		line, err := br.ReadSlice('\n')
		hdr = append(hdr, line...)
		switch {
		case len(hdr) > maxHeader:
			return nil, fmt.Errorf("header longer than %d bytes", maxHeader)
		case errors.Is(err, bufio.ErrBufferFull):
			continue // a line longer than the buffer: read on
		case errors.Is(err, io.EOF):
			return nil, io.ErrUnexpectedEOF
		case err != nil:
			return nil, err
		}
		if bytes.HasPrefix(lastLine(hdr), []byte(footerPrefix)) {
			return hdr, nil
		}
	}
}

// lastLine is the last "\n"-terminated line of b.
func lastLine(b []byte) []byte {
	i := bytes.LastIndexByte(b[:len(b)-1], '\n')
	return b[i+1:]
}

// decryptReader names the object in errors of the decrypting reader.
type decryptReader struct {
	r     io.Reader
	where string
}

func (d *decryptReader) Read(p []byte) (int, error) {
	n, err := d.r.Read(p)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("%s: %w: %v (the object was changed, truncated or damaged after it was written)", d.where, ErrDecrypt, err)
	}
	return n, err
}

type readCloser struct {
	io.Reader
	io.Closer
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// keyClient is a Client over a store that also reads raw keys: OpenKey
// decrypts an age-encrypted object (Litestream 0.3's segments and
// snapshots with its age: option) and passes any other through as it is,
// for its reader to judge (Litestream 0.3's own replicas are LZ4 frames).
type keyClient struct {
	*Client
	kr storage.KeyReader
}

var _ storage.KeyReader = (*keyClient)(nil)

// ListKeys lists the inner store's keys (stored sizes).
func (k *keyClient) ListKeys(ctx context.Context, prefix string) ([]storage.KeyInfo, error) {
	return k.kr.ListKeys(ctx, prefix)
}

// OpenKey opens a raw key, decrypting it when it is age-encrypted.
func (k *keyClient) OpenKey(ctx context.Context, key string) (io.ReadCloser, error) {
	rc, err := k.kr.OpenKey(ctx, key)
	if err != nil {
		return nil, err
	}
	br := bufio.NewReader(rc)
	if head, _ := br.Peek(len(Magic)); !bytes.Equal(head, []byte(Magic)) {
		return readCloser{Reader: br, Closer: rc}, nil
	}
	where := fmt.Sprintf("replica %s: %s", k.replica, key)
	if len(k.identities) == 0 {
		rc.Close()
		return nil, fmt.Errorf("%s: %w: set age: identities: [%s] on replica %s in the config", where, ErrNoIdentity, ageKeyHint, k.replica)
	}
	pr, err := age.Decrypt(br, k.identities...)
	if err != nil {
		rc.Close()
		return nil, k.decryptError(where, err)
	}
	return readCloser{Reader: &decryptReader{r: pr, where: where}, Closer: rc}, nil
}

var _ storage.KeyWriter = (*keyClient)(nil)

// PutKey encrypts r to the recipients and writes it at key in the inner
// store (the heads index of a dir: entry: its database paths are often
// tenant names, so a replica with an age: section never holds them in
// plaintext). OpenKey decrypts it.
func (k *keyClient) PutKey(ctx context.Context, key string, r io.Reader) error {
	where := fmt.Sprintf("replica %s: %s", k.replica, key)
	kw, ok := k.kr.(storage.KeyWriter)
	if !ok {
		return fmt.Errorf("%s: a %s store cannot write a key outside the LTX layout", where, k.inner.Type())
	}
	if len(k.recipients) == 0 {
		return fmt.Errorf("%s: %w: set age: recipients: [age1...] on replica %s (Understudy never writes an unencrypted object to a replica with an age: section)",
			where, ErrNoRecipient, k.replica)
	}
	enc, err := age.EncryptReader(r, k.recipients...)
	if err != nil {
		return fmt.Errorf("%s: age: %w", where, err)
	}
	return kw.PutKey(ctx, key, enc)
}
