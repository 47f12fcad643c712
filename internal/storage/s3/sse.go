package s3

import (
	"crypto/md5"
	"encoding/base64"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// Server-side encryption modes of Options.SSE.
const (
	SSEAES256 = string(types.ServerSideEncryptionAes256) // S3-managed keys (SSE-S3)
	SSEKMS    = string(types.ServerSideEncryptionAwsKms) // KMS keys (SSE-KMS), Options.SSEKMSKeyID or the bucket's default
	// sseCAlgorithm is the only algorithm SSE-C has.
	sseCAlgorithm = "AES256"
)

// checkSSE validates the server-side encryption options and returns the
// SSE-C key's MD5 (base64), "" without SSE-C. Its messages never show the
// key or the KMS key id.
func checkSSE(opts Options) (string, error) {
	switch opts.SSE {
	case "", SSEAES256, SSEKMS:
	default:
		return "", fmt.Errorf("s3 replica: bucket %s: unknown server-side encryption %q: use %s or %s", opts.Bucket, opts.SSE, SSEAES256, SSEKMS)
	}
	if opts.SSEKMSKeyID != "" && opts.SSE != SSEKMS {
		return "", fmt.Errorf("s3 replica: bucket %s: sse-kms-key-id needs sse: %s", opts.Bucket, SSEKMS)
	}
	if opts.SSECustomerKey == "" {
		return "", nil
	}
	if opts.SSE != "" {
		return "", fmt.Errorf("s3 replica: bucket %s: SSE-C (sse-customer-key) and sse: %s exclude each other", opts.Bucket, opts.SSE)
	}
	raw, err := base64.StdEncoding.DecodeString(opts.SSECustomerKey)
	if err != nil || len(raw) != 32 {
		return "", fmt.Errorf("s3 replica: bucket %s: sse-customer-key must be a 256-bit key in base64 (the value is not shown)", opts.Bucket)
	}
	sum := md5.Sum(raw)
	return base64.StdEncoding.EncodeToString(sum[:]), nil
}

// sseOnPut adds the server-side encryption headers to an upload:
// x-amz-server-side-encryption (and its KMS key id), or SSE-C's three.
func (c *Client) sseOnPut(in *awss3.PutObjectInput) {
	if c.opts.SSE != "" {
		in.ServerSideEncryption = types.ServerSideEncryption(c.opts.SSE)
	}
	if c.opts.SSEKMSKeyID != "" {
		in.SSEKMSKeyId = aws.String(c.opts.SSEKMSKeyID)
	}
	if c.sseCKeyMD5 != "" {
		in.SSECustomerAlgorithm = aws.String(sseCAlgorithm)
		in.SSECustomerKey = aws.String(c.opts.SSECustomerKey)
		in.SSECustomerKeyMD5 = aws.String(c.sseCKeyMD5)
	}
}

// sseOnGet adds SSE-C's headers to a read: S3 needs the key to read an
// object written with it (SSE-S3 and SSE-KMS need nothing).
func (c *Client) sseOnGet(in *awss3.GetObjectInput) {
	if c.sseCKeyMD5 != "" {
		in.SSECustomerAlgorithm = aws.String(sseCAlgorithm)
		in.SSECustomerKey = aws.String(c.opts.SSECustomerKey)
		in.SSECustomerKeyMD5 = aws.String(c.sseCKeyMD5)
	}
}
