// Package objstore holds what the object-store clients (s3, gcs, abs) share
// beside the key layout: call deadlines sized by the transfer, upload ids
// that tell a retried create's own object from another writer's, and the
// error type of refused or missing credentials.
package objstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
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

// CredentialsError is a described error that wraps storage.ErrCredentials
// (the message is the description alone).
type CredentialsError struct{ Msg string }

func (e *CredentialsError) Error() string { return e.Msg }
func (e *CredentialsError) Unwrap() error { return storage.ErrCredentials }
