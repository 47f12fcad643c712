package s3

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/smithy-go"

	"github.com/understudy-db/understudy/internal/storage"
	"github.com/understudy-db/understudy/internal/storage/objstore"
)

// errClass is what an S3 error means for the user.
type errClass int

const (
	classOther errClass = iota
	classNotFound
	classExists
	classCredentials
	classAccessDenied
	classNoBucket
	classUnreachable
	classInvalidRange
	classNotImplemented
)

// errNotImplemented marks a request the store answered 501 Not Implemented
// (Backblaze B2's S3 API does so for a conditional PUT).
var errNotImplemented = errors.New("not implemented by the store")

// classify maps an S3 error code and HTTP status to a class. It is a pure
// function so the table of codes can be tested without a server.
func classify(code string, status int) errClass {
	switch code {
	case "NoSuchKey":
		return classNotFound
	case "PreconditionFailed", "ConditionalRequestConflict":
		return classExists
	case "SignatureDoesNotMatch", "InvalidAccessKeyId", "XAdminUserNotFound",
		"ExpiredToken", "InvalidToken", "TokenRefreshRequired", "AuthorizationHeaderMalformed":
		return classCredentials
	case "AccessDenied", "AllAccessDisabled":
		return classAccessDenied
	case "NoSuchBucket":
		return classNoBucket
	case "InvalidRange":
		return classInvalidRange
	case "NotImplemented":
		return classNotImplemented
	}
	switch status {
	case http.StatusPreconditionFailed:
		return classExists
	case http.StatusRequestedRangeNotSatisfiable:
		return classInvalidRange
	case http.StatusNotImplemented:
		return classNotImplemented
	}
	return classOther
}

// describe turns an SDK error from op on key into one that names the bucket
// and key and says what to check. It never includes the secret key.
// ctx is the caller's context: when it ended, the caller gave up, which is
// not the store's fault.
func (c *Client) describe(ctx context.Context, op, key string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("s3 replica: %s %s: %w", op, c.where(key), ctx.Err())
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("s3 replica: %s %s: %w (no answer from %s in time; check the endpoint and the network)", op, c.where(key), err, c.endpoint())
	}
	var nc *noCredentialsError
	if errors.As(err, &nc) {
		return &objstore.CredentialsError{Msg: fmt.Sprintf("s3 replica: %s %s: no credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY%s, or the replica's access-key-id and secret-access-key (or AWS_PROFILE, or give the machine an instance role) (%v)",
			op, c.where(key), emptyEnvNote("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"), nc.err)}
	}
	code, status := "", 0
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		code = apiErr.ErrorCode()
	}
	var respErr *awshttp.ResponseError
	if errors.As(err, &respErr) {
		status = respErr.HTTPStatusCode()
	}
	detail := code
	if apiErr != nil && apiErr.ErrorMessage() != "" {
		detail = code + ": " + apiErr.ErrorMessage()
	}
	switch classify(code, status) {
	case classNotFound:
		return fmt.Errorf("s3 replica: %s: %w", c.where(key), storage.ErrNotFound)
	case classExists:
		return fmt.Errorf("s3 replica: %s: %w", c.where(key), storage.ErrExists)
	case classCredentials:
		return &objstore.CredentialsError{Msg: fmt.Sprintf("s3 replica: %s %s: the store refused the credentials (%s): check %s", op, c.where(key), detail, c.credDesc)}
	case classAccessDenied:
		return &objstore.CredentialsError{Msg: fmt.Sprintf("s3 replica: %s %s: access denied (%s): check %s and that they may read, write, list and delete in bucket %q", op, c.where(key), detail, c.credDesc, c.opts.Bucket)}
	case classNoBucket:
		return fmt.Errorf("s3 replica: %s %s: bucket %q does not exist at %s: create it, or fix the replica's bucket (and endpoint/region)", op, c.where(key), c.opts.Bucket, c.endpoint())
	case classInvalidRange:
		return fmt.Errorf("s3 replica: %s %s: %s", op, c.where(key), detail)
	case classNotImplemented:
		return fmt.Errorf("s3 replica: %s %s: %w (%s)", op, c.where(key), errNotImplemented, detail)
	}
	var netErr net.Error
	var opErr *net.OpError
	if errors.As(err, &opErr) || (errors.As(err, &netErr) && netErr.Timeout()) {
		return fmt.Errorf("s3 replica: %s %s: cannot reach %s: %w (check the endpoint and the network)", op, c.where(key), c.endpoint(), err)
	}
	return fmt.Errorf("s3 replica: %s %s: %w", op, c.where(key), err)
}

// noCredentialsError marks a failure of the SDK's credential chain to find
// any credentials, as opposed to credentials the store refused.
type noCredentialsError struct{ err error }

func (e *noCredentialsError) Error() string { return "no credentials: " + e.err.Error() }
func (e *noCredentialsError) Unwrap() error { return e.err }

// markNoCredentials wraps the SDK's default credential chain so that its
// failures can be told apart from the store's answers.
type markNoCredentials struct{ aws.CredentialsProvider }

func (m markNoCredentials) Retrieve(ctx context.Context) (aws.Credentials, error) {
	creds, err := m.CredentialsProvider.Retrieve(ctx)
	if err != nil && ctx.Err() == nil {
		err = &noCredentialsError{err}
	}
	return creds, err
}

// emptyEnvNote names the variables among names that are set but empty
// (a config or unit that expanded nothing into them), as a note for a
// message: "" when there are none. Values are never shown.
func emptyEnvNote(names ...string) string {
	var empty []string
	for _, n := range names {
		if v, ok := os.LookupEnv(n); ok && v == "" {
			empty = append(empty, n)
		}
	}
	if len(empty) == 0 {
		return ""
	}
	return " (" + strings.Join(empty, " and ") + " set but empty)"
}

func isInvalidRange(err error) bool {
	var apiErr smithy.APIError
	code := ""
	if errors.As(err, &apiErr) {
		code = apiErr.ErrorCode()
	}
	status := 0
	var respErr *awshttp.ResponseError
	if errors.As(err, &respErr) {
		status = respErr.HTTPStatusCode()
	}
	return classify(code, status) == classInvalidRange
}

// where names an object as s3://bucket/key.
func (c *Client) where(key string) string {
	return "s3://" + c.opts.Bucket + "/" + key
}

// endpoint names the store for messages.
func (c *Client) endpoint() string {
	if c.opts.Endpoint != "" {
		return c.opts.Endpoint
	}
	return "AWS S3 (region " + c.opts.Region + ")"
}
