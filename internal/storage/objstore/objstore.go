// Package objstore holds what the object-store clients (s3, gcs, abs) share
// beside the key layout: call deadlines sized by the transfer, upload ids
// that tell a retried create's own object from another writer's, and the
// error type of refused or missing credentials.
package objstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/internal/storage"
)

// Defaults for Timing fields left zero.
const (
	DefaultMaxAttempts   = 5
	DefaultMaxBackoff    = 5 * time.Second
	DefaultCallTimeout   = 30 * time.Second
	DefaultMinThroughput = 1 << 20 // bytes/s assumed when sizing a transfer's deadline
)

// MetaPrefix prefixes each storage.Meta* field in an object's metadata
// ("understudy-<field>"); MetaUploadID names the field of the UploadID.
const (
	MetaPrefix   = "understudy-"
	MetaUploadID = MetaPrefix + "upload-id"
)

// Timing bounds a client's calls.
type Timing struct {
	MaxAttempts   int           // attempts per call, retries included (default 5)
	MaxBackoff    time.Duration // most a retry waits (jittered exponential backoff)
	CallTimeout   time.Duration // deadline of each call, plus transfer time
	MinThroughput int64         // bytes/s a transfer's deadline allows for
}

// WithDefaults returns t with every zero field at its default.
func (t Timing) WithDefaults() Timing {
	if t.MaxAttempts <= 0 {
		t.MaxAttempts = DefaultMaxAttempts
	}
	if t.MaxBackoff <= 0 {
		t.MaxBackoff = DefaultMaxBackoff
	}
	if t.CallTimeout <= 0 {
		t.CallTimeout = DefaultCallTimeout
	}
	if t.MinThroughput <= 0 {
		t.MinThroughput = DefaultMinThroughput
	}
	return t
}

// TransferTimeout is CallTimeout plus the time size bytes take at
// MinThroughput.
func (t Timing) TransferTimeout(size int64) time.Duration {
	return t.CallTimeout + time.Duration(size/t.MinThroughput)*time.Second
}

// CallContext bounds one call that moves size bytes.
func (t Timing) CallContext(ctx context.Context, size int64) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, t.TransferTimeout(size))
}

// UploadID returns a fresh random id for one create call, stored with the
// object: a retry that finds the key taken reads it back to learn whether
// the earlier attempt landed.
func UploadID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// BodyCloser ends a read's deadline when the body is closed.
type BodyCloser struct {
	io.ReadCloser
	Stop func()
}

// Close closes the body, then stops the deadline.
func (b *BodyCloser) Close() error {
	err := b.ReadCloser.Close()
	b.Stop()
	return err
}

// Put is a client's create-only upload of r at key with md; it returns the
// object's size.
type Put func(ctx context.Context, key string, r io.Reader, md storage.Metadata) (int64, error)

// CreateLTX is storage.Client.Create for a client named store ("s3") whose
// keys start with prefix: it checks the key, uploads with put, and
// describes the object created.
func CreateLTX(ctx context.Context, store, prefix string, level int, minTXID, maxTXID ltx.TXID, r io.Reader, md storage.Metadata, put Put) (storage.FileInfo, error) {
	if err := storage.CheckKey(level, minTXID, maxTXID); err != nil {
		return storage.FileInfo{}, fmt.Errorf("%s replica: %w", store, err)
	}
	size, err := put(ctx, storage.ObjectKey(prefix, level, minTXID, maxTXID), r, md)
	if err != nil {
		return storage.FileInfo{}, err
	}
	return storage.CreatedInfo(level, minTXID, maxTXID, size, md), nil
}

// DeleteLTX is storage.Client.Delete for a client named store whose keys
// start with prefix and whose store deletes one object per call (del, for
// which a missing object is no error): DeleteParallelism at a time.
func DeleteLTX(ctx context.Context, store, prefix string, files []storage.FileInfo, del func(ctx context.Context, key string) error) error {
	keys := make([]string, 0, len(files))
	for _, fi := range files {
		if err := storage.CheckKey(fi.Level, fi.MinTXID, fi.MaxTXID); err != nil {
			return fmt.Errorf("%s replica: %w", store, err)
		}
		keys = append(keys, storage.ObjectKey(prefix, fi.Level, fi.MinTXID, fi.MaxTXID))
	}
	return DeleteEach(ctx, keys, DeleteParallelism, del)
}

// DeleteParallelism is how many deletes DeleteLTX runs at once.
const DeleteParallelism = 16

// DeleteEach runs del on every key, parallel at a time (stores that delete
// one object per call), and returns the first error; after one it hands
// out no further keys.
func DeleteEach(ctx context.Context, keys []string, parallel int, del func(ctx context.Context, key string) error) error {
	work := make(chan string)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	failed := func() bool { mu.Lock(); defer mu.Unlock(); return firstErr != nil }
	for range min(parallel, len(keys)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for key := range work {
				if err := del(ctx, key); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for _, key := range keys {
		if failed() {
			break
		}
		work <- key
	}
	close(work)
	wg.Wait()
	return firstErr
}

// ProbeKey is the key of a create-only probe under prefix: a leaf outside
// the level directories.
func ProbeKey(prefix string) string { return prefix + "understudy-probe-" + UploadID() }

// ProbeCreateOnly is storage.Client.ProbeCreateOnly for a client with a
// create-only put: it creates key twice (the second must fail with
// ErrExists) and then deletes it with del, within timeout even when ctx has
// ended. notHonoured is the error for a second create that succeeded.
func ProbeCreateOnly(ctx context.Context, key string, put Put, del func(ctx context.Context, key string) error, timeout time.Duration, notHonoured func() error) error {
	md := storage.Metadata{Node: "probe", CommitTime: time.Now()}
	if _, err := put(ctx, key, strings.NewReader("probe"), md); err != nil {
		return fmt.Errorf("create-only probe could not write: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
		defer cancel()
		_ = del(cctx, key)
	}()
	_, err := put(ctx, key, strings.NewReader("probe"), md)
	switch {
	case errors.Is(err, storage.ErrExists):
		return nil
	case err == nil:
		return notHonoured()
	default:
		return fmt.Errorf("create-only probe: second create: %w", err)
	}
}

// CheckHeaderMetadata rejects metadata that HTTP headers cannot carry
// (S3's and Azure's metadata travel as headers; the other fields are
// ASCII by construction). store names the store's metadata in the message.
func CheckHeaderMetadata(md storage.Metadata, store string) error {
	for _, r := range md.Node {
		if r < 0x20 || r > 0x7e {
			return fmt.Errorf("node name %q has characters %s metadata cannot carry; use printable ASCII", md.Node, store)
		}
	}
	return nil
}

// ObjectSize is the whole object's size: from a ranged read's Content-Range
// ("bytes 0-9/1234"), else the body's length.
func ObjectSize(contentRange string, length int64) int64 {
	if i := strings.LastIndexByte(contentRange, '/'); i >= 0 {
		if n, err := strconv.ParseInt(contentRange[i+1:], 10, 64); err == nil {
			return n
		}
	}
	return length
}

// CredentialsError is a described error that wraps storage.ErrCredentials
// (the message is the description alone).
type CredentialsError struct{ Msg string }

func (e *CredentialsError) Error() string { return e.Msg }
func (e *CredentialsError) Unwrap() error { return storage.ErrCredentials }
