package abs

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"

	"github.com/understudy-db/understudy/internal/storage"
	"github.com/understudy-db/understudy/internal/storage/objstore"
)

// describe turns an SDK error from op on key into one that names the
// container and blob and says what to check. It never includes the key.
// ctx is the caller's context: when it ended, the caller gave up, which is
// not the store's fault.
func (c *Client) describe(ctx context.Context, op, key string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("abs replica: %s %s: %w", op, c.where(key), ctx.Err())
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("abs replica: %s %s: %w (no answer from %s in time; check the endpoint and the network)", op, c.where(key), err, c.opts.Endpoint)
	}
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		code, status := re.ErrorCode, re.StatusCode
		switch {
		case code == "ContainerNotFound":
			return fmt.Errorf("abs replica: %s %s: container %q does not exist in account %s at %s: create it, or fix the replica's bucket (the container) and account-name",
				op, c.where(key), c.opts.Container, c.opts.AccountName, c.opts.Endpoint)
		case code == "BlobNotFound" || status == http.StatusNotFound && code == "":
			return fmt.Errorf("abs replica: %s: %w", c.where(key), storage.ErrNotFound)
		case code == "BlobAlreadyExists" || code == "ConditionNotMet" || status == http.StatusPreconditionFailed:
			return fmt.Errorf("abs replica: %s: %w", c.where(key), storage.ErrExists)
		case status == http.StatusUnauthorized || status == http.StatusForbidden:
			// A wrong key is 403 AuthenticationFailed on Azure (Azurite
			// says AuthorizationFailure); a right key without the rights,
			// 403 too.
			return &objstore.CredentialsError{Msg: fmt.Sprintf("abs replica: %s %s: the store refused the credentials (%d %s): check %s for account %s, and that it may read, write, list and delete blobs in container %q",
				op, c.where(key), status, code, c.credDesc, c.opts.AccountName, c.opts.Container)}
		}
		return fmt.Errorf("abs replica: %s %s: %d %s", op, c.where(key), status, code)
	}
	var opErr *net.OpError
	var netErr net.Error
	if errors.As(err, &opErr) || (errors.As(err, &netErr) && netErr.Timeout()) {
		return fmt.Errorf("abs replica: %s %s: cannot reach %s: %w (check the endpoint and the network)", op, c.where(key), c.opts.Endpoint, err)
	}
	return fmt.Errorf("abs replica: %s %s: %w", op, c.where(key), err)
}

// hasCode tells whether err is the store's answer with the error code.
func hasCode(err error, code string) bool {
	var re *azcore.ResponseError
	return errors.As(err, &re) && re.ErrorCode == code
}

// where names a blob as abs://account@container/key, the replica URL form.
func (c *Client) where(key string) string {
	return "abs://" + c.opts.AccountName + "@" + c.opts.Container + "/" + key
}
