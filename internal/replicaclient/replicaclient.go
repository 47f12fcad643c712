// Package replicaclient turns a configured replica into its storage client.
package replicaclient

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/understudy-db/understudy/config"
	"github.com/understudy-db/understudy/internal/storage"
	"github.com/understudy-db/understudy/internal/storage/abs"
	"github.com/understudy-db/understudy/internal/storage/agecrypt"
	"github.com/understudy-db/understudy/internal/storage/file"
	"github.com/understudy-db/understudy/internal/storage/gcs"
	"github.com/understudy-db/understudy/internal/storage/s3"
	"github.com/understudy-db/understudy/internal/storage/sftp"
)

// Option adjusts how clients are built.
type Option func(*options)

type options struct {
	accessKeyID, secretAccessKey string
	s3Tweaks                     []func(*s3.Options)
	primary                      bool
}

// ForPrimary is for the primary, which both writes and reads back what it
// wrote (compaction, a taken key's owner): a replica with an age: section
// must then have recipients and identities both.
func ForPrimary() Option {
	return func(o *options) { o.primary = true }
}

// WithDefaultCredentials gives S3 replicas without credentials of their own
// these (the config's top-level access-key-id / secret-access-key).
func WithDefaultCredentials(accessKeyID, secretAccessKey string) Option {
	return func(o *options) { o.accessKeyID, o.secretAccessKey = accessKeyID, secretAccessKey }
}

// WithS3Options adjusts the S3 client options after they are filled from
// the replica (retries, page size, deadlines).
func WithS3Options(f func(*s3.Options)) Option {
	return func(o *options) { o.s3Tweaks = append(o.s3Tweaks, f) }
}

// New returns the storage client of replica r, encrypting and decrypting
// with age when r has an age: section.
func New(ctx context.Context, r *config.Replica, opts ...Option) (storage.Client, error) {
	var o options
	for _, f := range opts {
		f(&o)
	}
	c, err := newStore(ctx, r, o)
	if err != nil || r.Age == nil {
		return c, err
	}
	rcps, ids, err := r.Age.Parsed()
	if err != nil {
		return nil, fmt.Errorf("replica %q: %w", r.Name, err)
	}
	if o.primary && (len(rcps) == 0 || len(ids) == 0) {
		return nil, fmt.Errorf("replica %q: age: the primary needs recipients (to encrypt what it uploads) and identities (to read back what it uploaded, for compaction): set both", r.Name)
	}
	return agecrypt.New(c, agecrypt.Options{Replica: r.Name, Recipients: rcps, Identities: ids})
}

// newStore returns the client of r's store.
func newStore(ctx context.Context, r *config.Replica, o options) (storage.Client, error) {
	switch r.Type {
	case file.Type:
		return file.New(r.Path)
	case s3.Type:
		so := s3.Options{
			Bucket: r.Bucket, Path: r.Path, Region: r.Region, Endpoint: r.Endpoint,
			ForcePathStyle: r.ForcePathStyle, SkipVerify: r.SkipVerify,
			AccessKeyID: r.AccessKeyID, SecretAccessKey: r.SecretAccessKey,
			// A replica that accepts a store without create-only writes may
			// hold several versions of a key: every reader resolves them.
			ResolveVersions: r.AcceptsPlainWrites(),
			SSE:             r.SSE, SSEKMSKeyID: r.SSEKMSKeyID, SSECustomerKey: r.SSECustomerKey,
		}
		if r.SSECustomerKeyPath != "" {
			b, err := os.ReadFile(r.SSECustomerKeyPath)
			if err != nil {
				return nil, fmt.Errorf("replica %q: read sse-customer-key-path: %w", r.Name, err)
			}
			so.SSECustomerKey = strings.TrimSpace(string(b))
		}
		if so.AccessKeyID == "" && so.SecretAccessKey == "" {
			so.AccessKeyID, so.SecretAccessKey = o.accessKeyID, o.secretAccessKey
		}
		for _, f := range o.s3Tweaks {
			f(&so)
		}
		return s3.New(ctx, so)
	case sftp.Type:
		return sftp.New(sftp.Options{
			Host: r.Host, User: r.User, Password: r.Password, KeyPath: r.KeyPath,
			KnownHostsPath: r.KnownHostsPath, Path: r.Path,
		})
	case gcs.Type:
		return gcs.New(ctx, gcs.Options{Bucket: r.Bucket, Path: r.Path, Endpoint: r.Endpoint})
	case abs.Type:
		return abs.New(abs.Options{AccountName: r.AccountName, AccountKey: r.AccountKey, Container: r.Bucket, Path: r.Path, Endpoint: r.Endpoint})
	default:
		return nil, fmt.Errorf("replica %q: unknown type %q; use %q, %q, %q, %q or %q", r.Name, r.Type, s3.Type, gcs.Type, abs.Type, file.Type, sftp.Type)
	}
}

// Sub returns the client of the store below c at the relative path rel
// (slash-separated): a directory entry's database, whose replica is the
// entry's prefix plus the database's path relative to the directory. The
// client shares c's connections and credentials.
func Sub(c storage.Client, rel string) (storage.Client, error) {
	type subber interface{ Sub(string) storage.Client }
	// A decorator (agecrypt) has Sub whatever it wraps: the store decides.
	_, inner := storage.Unwrap(c).(subber)
	s, ok := c.(subber)
	if !ok || !inner {
		return nil, fmt.Errorf("a %s replica cannot hold a directory of databases", c.Type())
	}
	return s.Sub(rel), nil
}
