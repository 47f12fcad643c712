package gcs

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"

	gcstorage "cloud.google.com/go/storage"
	"google.golang.org/api/googleapi"

	"github.com/understudy-db/understudy/internal/storage"
	"github.com/understudy-db/understudy/internal/storage/objstore"
)

// describe turns an SDK error from op on key into one that names the bucket
// and object and says what to check. ctx is the caller's context: when it
// ended, the caller gave up, which is not the store's fault.
func (c *Client) describe(ctx context.Context, op, key string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("gcs replica: %s %s: %w", op, c.where(key), ctx.Err())
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("gcs replica: %s %s: %w (no answer from %s in time; check the endpoint and the network)", op, c.where(key), err, c.endpoint())
	}
	if errors.Is(err, gcstorage.ErrObjectNotExist) {
		return fmt.Errorf("gcs replica: %s: %w", c.where(key), storage.ErrNotFound)
	}
	if errors.Is(err, gcstorage.ErrBucketNotExist) {
		return c.noBucket(op, key)
	}
	var apiErr *googleapi.Error
	if errors.As(err, &apiErr) {
		switch apiErr.Code {
		case http.StatusPreconditionFailed:
			return fmt.Errorf("gcs replica: %s: %w", c.where(key), storage.ErrExists)
		case http.StatusUnauthorized:
			return &objstore.CredentialsError{Msg: fmt.Sprintf("gcs replica: %s %s: the store refused the credentials (%d %s): check %s", op, c.where(key), apiErr.Code, apiErr.Message, c.credDesc)}
		case http.StatusForbidden:
			return &objstore.CredentialsError{Msg: fmt.Sprintf("gcs replica: %s %s: access denied (%s): check %s and that they may read, write, list and delete objects in bucket %q (roles/storage.objectAdmin)", op, c.where(key), apiErr.Message, c.credDesc, c.opts.Bucket)}
		case http.StatusNotFound:
			// A missing object is ErrObjectNotExist; a 404 on an upload or
			// a listing is the bucket's.
			return c.noBucket(op, key)
		}
	}
	var opErr *net.OpError
	var netErr net.Error
	if errors.As(err, &opErr) || (errors.As(err, &netErr) && netErr.Timeout()) {
		return fmt.Errorf("gcs replica: %s %s: cannot reach %s: %w (check the endpoint and the network)", op, c.where(key), c.endpoint(), err)
	}
	return fmt.Errorf("gcs replica: %s %s: %w", op, c.where(key), err)
}

func (c *Client) noBucket(op, key string) error {
	return fmt.Errorf("gcs replica: %s %s: bucket %q does not exist at %s: create it, or fix the replica's bucket", op, c.where(key), c.opts.Bucket, c.endpoint())
}

// where names an object as gs://bucket/key, as gsutil and gcloud do.
func (c *Client) where(key string) string {
	return "gs://" + c.opts.Bucket + "/" + key
}

// endpoint names the store for messages.
func (c *Client) endpoint() string {
	switch {
	case c.opts.Endpoint != "":
		return c.opts.Endpoint
	case emulatorHost() != "":
		return emulatorHost() + " (STORAGE_EMULATOR_HOST)"
	}
	return "Google Cloud Storage"
}

func emulatorHost() string { return os.Getenv("STORAGE_EMULATOR_HOST") }
