package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/integration/harness"
	"github.com/understudy-db/understudy/internal/storage"
	"github.com/understudy-db/understudy/internal/storage/objstore"
	"github.com/understudy-db/understudy/internal/storage/storagetest"
)

// isolateAWSEnv keeps the developer's AWS settings out of a test, but keeps
// (and if missing, sets) AWS_CA_BUNDLE: the client must work with it set.
func isolateAWSEnv(t *testing.T) {
	t.Helper()
	dir := t.TempDir()
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "config"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "credentials"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	if os.Getenv("AWS_CA_BUNDLE") == "" {
		if _, err := os.Stat("/etc/ssl/certs/ca-certificates.crt"); err == nil {
			t.Setenv("AWS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
		}
	}
}

func serverOptions(s *harness.S3Server, bucket, path string) Options {
	return Options{
		Bucket: bucket, Path: path, Region: s.Region, Endpoint: s.Endpoint, ForcePathStyle: true,
		AccessKeyID: s.AccessKey, SecretAccessKey: s.SecretKey,
		Timing: objstore.Timing{MaxBackoff: 200 * time.Millisecond},
	}
}

func mustNew(t *testing.T, opts Options) *Client {
	t.Helper()
	c, err := New(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestConformance runs the suite against a real versitygw, each case in its
// own bucket under a nested path.
func TestConformance(t *testing.T) {
	isolateAWSEnv(t)
	s := harness.StartVersityGW(t)
	storagetest.Run(t, func(t *testing.T) storage.Client {
		return mustNew(t, serverOptions(s, s.NewBucket(t), "dbs/app.db"))
	})
}

// TestLayout pins the Litestream 0.5 key layout and the metadata names.
func TestLayout(t *testing.T) {
	isolateAWSEnv(t)
	s := harness.StartVersityGW(t)
	bucket := s.NewBucket(t)
	c := mustNew(t, serverOptions(s, bucket, "/db/"))
	md := storagetest.TestMetadata(1)
	storagetest.MustCreate(t, c, 0, 0xa1, 0xa1, []byte("hello"), md)
	storagetest.MustCreate(t, c, storage.SnapshotLevel, 1, 0xa1, []byte("snap"), md)
	for _, key := range []string{"db/0000/00000000000000a1-00000000000000a1.ltx", "db/0009/0000000000000001-00000000000000a1.ltx"} {
		if _, err := os.Stat(filepath.Join(s.DataDir, bucket, key)); err != nil {
			t.Errorf("key %s: %v", key, err)
		}
	}
	out, err := c.s3.HeadObject(context.Background(), &awss3.HeadObjectInput{
		Bucket: aws.String(bucket), Key: aws.String("db/0000/00000000000000a1-00000000000000a1.ltx"),
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"understudy-node":                md.Node,
		"understudy-fencing-token":       "1007",
		"understudy-commit-time":         md.CommitTime.Format(time.RFC3339Nano),
		"understudy-pre-apply-checksum":  md.PreApplyChecksum.String(),
		"understudy-post-apply-checksum": md.PostApplyChecksum.String(),
	}
	for k, v := range want {
		if got := out.Metadata[k]; got != v {
			t.Errorf("metadata %s = %q, want %q (all: %v)", k, got, v, out.Metadata)
		}
	}
}

// TestSmallPages forces many ListObjectsV2 pages and seeks inside them.
func TestSmallPages(t *testing.T) {
	isolateAWSEnv(t)
	s := harness.StartVersityGW(t)
	opts := serverOptions(s, s.NewBucket(t), "")
	opts.ListPageSize = 7
	c := mustNew(t, opts)
	const n = 60
	for id := ltx.TXID(1); id <= n; id++ {
		storagetest.MustCreate(t, c, 1, id, id, []byte("x"), storagetest.TestMetadata(uint64(id)))
	}
	// A foreign object in the level prefix is skipped.
	if err := os.WriteFile(filepath.Join(s.DataDir, opts.Bucket, "0001", "README"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, seek := range []ltx.TXID{0, 1, 7, 8, 14, 15, 59, 60, 61} {
		got := storagetest.ListAll(t, c, 1, seek)
		start := max(seek, 1)
		wantN := 0
		if start <= n {
			wantN = int(n - start + 1)
		}
		if len(got) != wantN {
			t.Fatalf("seek %d: %d items, want %d", seek, len(got), wantN)
		}
		for i, fi := range got {
			if fi.MinTXID != start+ltx.TXID(i) {
				t.Fatalf("seek %d: item %d is %s, want %s", seek, i, fi.MinTXID, start+ltx.TXID(i))
			}
		}
	}
}

// TestWrongCredentials: a wrong secret and an unknown key each fail every
// operation with a message naming the credentials, never the secret.
func TestWrongCredentials(t *testing.T) {
	isolateAWSEnv(t)
	s := harness.StartVersityGW(t)
	bucket := s.NewBucket(t)
	for _, tc := range []struct {
		name, key, secret string
	}{
		{"wrong secret", s.AccessKey, "not-the-secret-1234567890"},
		{"unknown key", "NOSUCHKEY", "not-the-secret-1234567890"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := serverOptions(s, bucket, "db")
			opts.AccessKeyID, opts.SecretAccessKey = tc.key, tc.secret
			storagetest.RunFailingStore(t, mustNew(t, opts),
				[]string{"refused the credentials", fmt.Sprintf("access-key-id %q", tc.key), "s3://" + bucket + "/db/"},
				[]string{tc.secret, s.SecretKey})
		})
	}
}

// TestCredentialsFromEnvironment: without credentials in the options the
// SDK's chain is used, and errors then say where credentials came from.
func TestCredentialsFromEnvironment(t *testing.T) {
	isolateAWSEnv(t)
	s := harness.StartVersityGW(t)
	opts := serverOptions(s, s.NewBucket(t), "db")
	opts.AccessKeyID, opts.SecretAccessKey = "", ""
	t.Setenv("AWS_ACCESS_KEY_ID", s.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", s.SecretKey)
	storagetest.MustCreate(t, mustNew(t, opts), 0, 1, 1, []byte("x"), storagetest.TestMetadata(1))

	t.Setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-from-env")
	_, err := mustNew(t, opts).Create(context.Background(), 0, 2, 2, strings.NewReader("x"), storagetest.TestMetadata(1))
	storagetest.CheckError(t, "create with a wrong env secret", err,
		[]string{"refused the credentials", "AWS_ACCESS_KEY_ID"}, []string{"wrong-secret-from-env"})
}

func TestMissingBucket(t *testing.T) {
	isolateAWSEnv(t)
	s := harness.StartVersityGW(t)
	c := mustNew(t, serverOptions(s, "no-such-bucket", "db"))
	storagetest.RunFailingStore(t, c,
		[]string{`bucket "no-such-bucket" does not exist at ` + s.Endpoint, "create it, or fix the replica's bucket"},
		[]string{s.SecretKey})
}

func TestNewValidates(t *testing.T) {
	isolateAWSEnv(t)
	for _, tc := range []struct {
		name    string
		opts    Options
		wantErr string
	}{
		{"no bucket", Options{}, "s3 replica: bucket is empty; set the replica's bucket"},
		{"key without secret", Options{Bucket: "b", AccessKeyID: "AK"},
			"s3 replica: bucket b: set both access-key-id and secret-access-key, or neither to use the environment or shared profile"},
		{"secret without key", Options{Bucket: "b", SecretAccessKey: "shh"},
			"s3 replica: bucket b: set both access-key-id and secret-access-key, or neither to use the environment or shared profile"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(context.Background(), tc.opts)
			if err == nil || err.Error() != tc.wantErr {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
		})
	}
	c, err := New(context.Background(), Options{Bucket: "b", Path: "/a/b/", Endpoint: "minio.local:9000"})
	if err != nil {
		t.Fatal(err)
	}
	if c.opts.Endpoint != "https://minio.local:9000" || c.Key(3, 1, 2) != "a/b/0003/0000000000000001-0000000000000002.ltx" || c.opts.Region != DefaultRegion {
		t.Fatalf("endpoint %q key %q region %q", c.opts.Endpoint, c.Key(3, 1, 2), c.opts.Region)
	}
	if c.Key(10, 1, 1) != "a/b/000a/0000000000000001-0000000000000001.ltx" {
		t.Fatalf("level 10 key %q: levels are hex", c.Key(10, 1, 1))
	}
}

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		code   string
		status int
		want   errClass
	}{
		{"NoSuchKey", 404, classNotFound},
		{"NotFound", 404, classOther}, // a HEAD's 404 could be a missing user or bucket
		{"XAdminUserNotFound", 404, classCredentials},
		{"SignatureDoesNotMatch", 403, classCredentials},
		{"InvalidAccessKeyId", 403, classCredentials},
		{"AccessDenied", 403, classAccessDenied},
		{"NoSuchBucket", 404, classNoBucket},
		{"PreconditionFailed", 412, classExists},
		{"", 412, classExists},
		{"ConditionalRequestConflict", 409, classExists},
		{"BucketAlreadyExists", 409, classOther},
		{"InvalidRange", 416, classInvalidRange},
		{"SlowDown", 503, classOther},
		{"NotImplemented", 501, classNotImplemented},
		{"", 501, classNotImplemented},
	} {
		if got := classify(tc.code, tc.status); got != tc.want {
			t.Errorf("classify(%q, %d) = %d, want %d", tc.code, tc.status, got, tc.want)
		}
	}
}

// TestRetries: 5xx answers are retried, and a conditional PUT whose first
// attempt landed but whose answer was lost is recognised as our own on the
// retry's 412, not reported as losing to another writer.
func TestRetries(t *testing.T) {
	isolateAWSEnv(t)
	s := harness.StartVersityGW(t)
	var puts, gets atomic.Int32
	front := harness.FaultyFront(t, s.Endpoint,
		func(r *http.Request) int {
			if r.Method == http.MethodGet && r.URL.Query().Get("list-type") == "" && gets.Add(1) <= 2 {
				return http.StatusServiceUnavailable
			}
			return 0
		},
		func(r *http.Request) int {
			if r.Method == http.MethodPut && puts.Add(1) == 1 {
				return http.StatusInternalServerError
			}
			return 0
		})
	opts := serverOptions(s, s.NewBucket(t), "db")
	opts.Endpoint = front
	c := mustNew(t, opts)
	body := storagetest.Body(3000, 1)
	storagetest.MustCreate(t, c, 0, 1, 1, body, storagetest.TestMetadata(1))
	if n := puts.Load(); n != 2 {
		t.Fatalf("%d PUTs, want 2 (one lost answer, one retry)", n)
	}
	got, _ := storagetest.ReadAll(t, c, 0, 1, 1, 0, -1)
	if !bytes.Equal(got, body) {
		t.Fatal("content differs")
	}
	// Another writer's object is still ErrExists.
	_, err := c.Create(context.Background(), 0, 1, 1, bytes.NewReader(body), storagetest.TestMetadata(2))
	if !errors.Is(err, storage.ErrExists) {
		t.Fatalf("second create: %v", err)
	}
}

// TestHungAttemptRetried: an attempt whose answer never starts is abandoned
// after half the call deadline and retried, and the call succeeds.
func TestHungAttemptRetried(t *testing.T) {
	isolateAWSEnv(t)
	s := harness.StartVersityGW(t)
	var gets atomic.Int32
	front := harness.FaultyFront(t, s.Endpoint,
		func(r *http.Request) int {
			if r.Method == http.MethodGet && gets.Add(1) == 1 {
				<-r.Context().Done() // hold the answer until the client gives up
				return http.StatusServiceUnavailable
			}
			return 0
		},
		func(*http.Request) int { return 0 })
	opts := serverOptions(s, s.NewBucket(t), "db")
	c := mustNew(t, opts)
	storagetest.MustCreate(t, c, 0, 1, 1, []byte("x"), storagetest.TestMetadata(1))
	opts.Endpoint = front
	opts.CallTimeout = 3 * time.Second
	c = mustNew(t, opts)
	if got, _ := storagetest.ReadAll(t, c, 0, 1, 1, 0, -1); string(got) != "x" {
		t.Fatalf("read %q", got)
	}
	if n := gets.Load(); n != 2 {
		t.Fatalf("%d GETs, want 2 (one hung, one retry)", n)
	}
}

// TestUnreachableEndpoint: a dead endpoint fails within the retry budget with
// a message pointing at the endpoint.
func TestUnreachableEndpoint(t *testing.T) {
	isolateAWSEnv(t)
	opts := Options{
		Bucket: "b", Endpoint: fmt.Sprintf("http://127.0.0.1:%d", harness.FreePort(t)), ForcePathStyle: true,
		AccessKeyID: "AK", SecretAccessKey: "shh-secret", Timing: objstore.Timing{MaxAttempts: 2, MaxBackoff: 10 * time.Millisecond},
	}
	_, err := mustNew(t, opts).Open(context.Background(), 0, 1, 1, 0, -1)
	storagetest.CheckError(t, "open", err, []string{"cannot reach " + opts.Endpoint, "check the endpoint"}, []string{"shh-secret"})
	if errors.Is(err, storage.ErrNotFound) {
		t.Fatal("an unreachable store must not look like a missing key")
	}
}

// TestCallerCancels: a caller that gives up gets its context error, not a
// message blaming the store.
func TestCallerCancels(t *testing.T) {
	isolateAWSEnv(t)
	s := harness.StartVersityGW(t)
	c := mustNew(t, serverOptions(s, s.NewBucket(t), "db"))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := c.Open(ctx, 0, 1, 1, 0, -1)
	if !errors.Is(err, context.Canceled) || strings.Contains(err.Error(), "in time") || errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("open with a canceled context: %v", err)
	}
	_, err = c.Create(ctx, 0, 1, 1, strings.NewReader("x"), storagetest.TestMetadata(1))
	if !errors.Is(err, context.Canceled) || errors.Is(err, storage.ErrExists) {
		t.Fatalf("create with a canceled context: %v", err)
	}
}

// TestCallDeadline: a store that never answers fails the call at its
// deadline rather than hanging (toxiproxy's timeout toxic holds the data).
func TestCallDeadline(t *testing.T) {
	isolateAWSEnv(t)
	s := harness.StartVersityGW(t)
	tp := harness.StartToxiproxy(t)
	p := tp.NewProxy(t, "s3", s.Addr)
	opts := serverOptions(s, s.NewBucket(t), "db")
	opts.Endpoint = "http://" + p.Listen
	opts.CallTimeout = 500 * time.Millisecond
	opts.MaxAttempts = 2
	c := mustNew(t, opts)
	storagetest.MustCreate(t, c, 0, 1, 1, []byte("x"), storagetest.TestMetadata(1))
	if err := p.AddToxic(harness.Toxic{Name: "hang", Type: "timeout", Stream: "upstream", Attributes: map[string]any{"timeout": 0}}); err != nil {
		t.Fatal(err)
	}
	_, err := c.Open(context.Background(), 0, 1, 1, 0, -1)
	storagetest.CheckError(t, "open through a black hole", err, []string{"s3://" + opts.Bucket + "/db/0000/", "check the endpoint"}, []string{s.SecretKey})
	if err := p.RemoveToxic("hang"); err != nil {
		t.Fatal(err)
	}
	storagetest.ReadAll(t, c, 0, 1, 1, 0, -1)
}

// TestSkipVerifyWithCABundle: a custom HTTP client (skip-verify) still loads
// with AWS_CA_BUNDLE set, which Litestream 0.5.16 trips over.
func TestSkipVerifyWithCABundle(t *testing.T) {
	isolateAWSEnv(t)
	bundle := os.Getenv("AWS_CA_BUNDLE")
	if bundle == "" {
		t.Skip("no CA bundle file on this machine to point AWS_CA_BUNDLE at")
	}
	s := harness.StartVersityGW(t)
	opts := serverOptions(s, s.NewBucket(t), "db")
	opts.SkipVerify = true
	c := mustNew(t, opts)
	if err := c.ProbeCreateOnly(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// headerLog records the server-side encryption headers of each request
// that passes a recording front.
type headerLog struct {
	mu   sync.Mutex
	reqs []sseRequest
}

type sseRequest struct {
	method, path string
	bucket       bool        // a call on the bucket (list, versioning), not on an object
	h            http.Header // the x-amz-server-side-encryption* headers
}

func (l *headerLog) record(r *http.Request) int {
	h := http.Header{}
	for k, v := range r.Header {
		if strings.HasPrefix(strings.ToLower(k), "x-amz-server-side-encryption") {
			h[k] = v
		}
	}
	l.mu.Lock()
	_, key, _ := strings.Cut(strings.Trim(r.URL.Path, "/"), "/") // path-style: /bucket/key
	l.reqs = append(l.reqs, sseRequest{method: r.Method, path: r.URL.Path, bucket: key == "" || r.URL.Query().Has("list-type"), h: h})
	l.mu.Unlock()
	return 0
}

// TestSSEHeaders: the server-side encryption options reach every request
// that needs them, as a recording proxy in front of versitygw sees them:
// x-amz-server-side-encryption (and the KMS key id) on each PUT, SSE-C's
// algorithm, key and key MD5 on each PUT and GET. versitygw does not
// encrypt with them (it stores what it gets), so only the headers are
// tested here, not what AWS S3 does with them.
func TestSSEHeaders(t *testing.T) {
	isolateAWSEnv(t)
	s := harness.StartVersityGW(t)
	const (
		customerKey = "U1NFLUMtY3VzdG9tZXIta2V5LTMyLWJ5dGVzLWxvbmc=" // base64 of 32 bytes
		customerMD5 = "HEeNUnjiZuOsdvxMD/xiXQ=="                     // base64 of their MD5
		kmsKey      = "arn:aws:kms:us-east-1:111122223333:key/test-key"
	)
	for _, tc := range []struct {
		name    string
		opts    func(*Options)
		onPut   map[string]string
		onGet   map[string]string
		missing []string // headers no request may carry
	}{
		{"AES256", func(o *Options) { o.SSE = SSEAES256 }, map[string]string{"X-Amz-Server-Side-Encryption": "AES256"}, nil,
			[]string{"X-Amz-Server-Side-Encryption-Customer-Key"}},
		{"KMS", func(o *Options) { o.SSE, o.SSEKMSKeyID = SSEKMS, kmsKey },
			map[string]string{"X-Amz-Server-Side-Encryption": "aws:kms", "X-Amz-Server-Side-Encryption-Aws-Kms-Key-Id": kmsKey}, nil,
			[]string{"X-Amz-Server-Side-Encryption-Customer-Key"}},
		{"SSE-C", func(o *Options) { o.SSECustomerKey = customerKey },
			map[string]string{"X-Amz-Server-Side-Encryption-Customer-Algorithm": "AES256", "X-Amz-Server-Side-Encryption-Customer-Key": customerKey, "X-Amz-Server-Side-Encryption-Customer-Key-Md5": customerMD5},
			map[string]string{"X-Amz-Server-Side-Encryption-Customer-Algorithm": "AES256", "X-Amz-Server-Side-Encryption-Customer-Key": customerKey, "X-Amz-Server-Side-Encryption-Customer-Key-Md5": customerMD5},
			[]string{"X-Amz-Server-Side-Encryption"}},
		{"none", func(o *Options) {}, nil, nil,
			[]string{"X-Amz-Server-Side-Encryption", "X-Amz-Server-Side-Encryption-Customer-Key", "X-Amz-Server-Side-Encryption-Aws-Kms-Key-Id"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var log headerLog
			front := harness.FaultyFront(t, s.Endpoint, log.record, func(*http.Request) int { return 0 })
			opts := serverOptions(s, s.NewBucket(t), "db")
			opts.Endpoint = front
			tc.opts(&opts)
			c := mustNew(t, opts)
			body := storagetest.Body(5000, 1)
			storagetest.MustCreate(t, c, 0, 1, 1, body, storagetest.TestMetadata(1))
			got, _ := storagetest.ReadAll(t, c, 0, 1, 1, 0, -1)
			storagetest.ReadAll(t, c, 0, 1, 1, 100, 10)
			if !bytes.Equal(got, body) {
				t.Fatal("read back differs")
			}
			if err := c.ProbeCreateOnly(context.Background()); err != nil {
				t.Fatal(err)
			}
			if _, err := c.OpenKey(context.Background(), "0000/"+storage.FormatFilename(1, 1)); err != nil {
				t.Fatal(err)
			}
			var puts, gets int
			log.mu.Lock()
			defer log.mu.Unlock()
			for _, r := range log.reqs {
				var want map[string]string
				switch {
				case r.method == http.MethodPut:
					want, puts = tc.onPut, puts+1
				case r.method == http.MethodGet && !r.bucket:
					want, gets = tc.onGet, gets+1
				}
				for k, v := range want {
					if r.h.Get(k) != v {
						t.Errorf("%s %s: %s = %q, want %q", r.method, r.path, k, r.h.Get(k), v)
					}
				}
				for _, k := range tc.missing {
					if r.h.Get(k) != "" {
						t.Errorf("%s %s carries %s", r.method, r.path, k)
					}
				}
			}
			if puts < 3 || gets < 3 { // the create and two probe PUTs; two reads and OpenKey
				t.Fatalf("the front saw %d PUTs and %d GETs, want at least 3 of each", puts, gets)
			}
		})
	}
}

// TestSSEOptionsChecked: New refuses inconsistent server-side encryption
// options without showing the key.
func TestSSEOptionsChecked(t *testing.T) {
	const key = "U1NFLUMtY3VzdG9tZXIta2V5LTMyLWJ5dGVzLWxvbmc="
	for _, tc := range []struct {
		opts Options
		want string
	}{
		{Options{Bucket: "b", SSE: "aws:kmz"}, `unknown server-side encryption "aws:kmz"`},
		{Options{Bucket: "b", SSE: SSEAES256, SSEKMSKeyID: "k"}, "sse-kms-key-id needs sse: aws:kms"},
		{Options{Bucket: "b", SSE: SSEAES256, SSECustomerKey: key}, "exclude each other"},
		{Options{Bucket: "b", SSECustomerKey: key[:20]}, "sse-customer-key must be a 256-bit key in base64"},
	} {
		_, err := New(context.Background(), tc.opts)
		storagetest.CheckError(t, tc.want, err, []string{tc.want}, []string{key[:20]})
	}
}
