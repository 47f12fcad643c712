package harness

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

// Credentials and region of every test S3 server.
const (
	S3AccessKey = "understudy-test-key"
	S3SecretKey = "understudy-test-secret-do-not-print"
	S3Region    = "us-east-1"
)

// S3Server is a running versitygw serving a POSIX directory.
type S3Server struct {
	Endpoint  string // http://127.0.0.1:PORT
	Addr      string // 127.0.0.1:PORT
	AccessKey string
	SecretKey string
	Region    string
	DataDir   string // a bucket is a directory in here
}

var bucketSeq atomic.Int64

// StartVersityGW starts versitygw on a free loopback port with a fresh data
// directory and stops it at test end.
func StartVersityGW(t testing.TB) *S3Server {
	t.Helper()
	return startVersityGW(t, false)
}

// StartVersityGWVersioning is StartVersityGW with bucket versioning
// available (--versioning-dir): a bucket keeps object versions once
// versioning is enabled on it (PutBucketVersioning), as on AWS S3.
func StartVersityGWVersioning(t testing.TB) *S3Server {
	t.Helper()
	return startVersityGW(t, true)
}

func startVersityGW(t testing.TB, versioning bool) *S3Server {
	t.Helper()
	bin := Tool(t, "versitygw")
	s := &S3Server{
		AccessKey: S3AccessKey,
		SecretKey: S3SecretKey,
		Region:    S3Region,
		DataDir:   t.TempDir(),
	}
	port := freePorts(t, 1)[0]
	s.Addr = "127.0.0.1:" + itoa(port)
	s.Endpoint = "http://" + s.Addr
	// --keep-alive: without it versitygw closes the connection after every
	// response, which costs a TCP handshake per request.
	args := []string{"--port", s.Addr, "--access", s.AccessKey, "--secret", s.SecretKey,
		"--quiet", "--keep-alive", "posix"}
	if versioning {
		args = append(args, "--versioning-dir", t.TempDir())
	}
	p := start(t, "versitygw", bin, append(args, s.DataDir)...)
	p.waitReady(t, func(ctx context.Context) error {
		// Any HTTP answer (an anonymous ListBuckets is refused) means the
		// server is serving.
		_, _, err := httpGet(ctx, s.Endpoint+"/")
		return err
	})
	return s
}

// CreateBucket makes a bucket (a directory of the POSIX backend) and returns
// its name.
func (s *S3Server) CreateBucket(t testing.TB, name string) string {
	t.Helper()
	if err := os.Mkdir(filepath.Join(s.DataDir, name), 0o755); err != nil {
		t.Fatalf("harness: create bucket %s: %v", name, err)
	}
	return name
}

// NewBucket creates a bucket with a fresh name derived from the test name.
func (s *S3Server) NewBucket(t testing.TB) string {
	t.Helper()
	return s.CreateBucket(t, BucketName(t.Name(), bucketSeq.Add(1)))
}

// BucketName makes a valid S3 bucket name (3-63 characters of [a-z0-9-],
// starting and ending alphanumeric) from a test name and a sequence number.
func BucketName(testName string, seq int64) string {
	var b strings.Builder
	for _, r := range strings.ToLower(testName) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	base := strings.Trim(b.String(), "-")
	for strings.Contains(base, "--") {
		base = strings.ReplaceAll(base, "--", "-")
	}
	suffix := fmt.Sprintf("-%d", seq)
	if max := 63 - len(suffix); len(base) > max {
		base = strings.TrimRight(base[:max], "-")
	}
	if base == "" {
		base = "bucket"
	}
	return base + suffix
}
