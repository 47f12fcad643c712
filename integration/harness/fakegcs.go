package harness

import (
	"context"
	"strings"
	"testing"
)

// GCSServer is a running fake-gcs-server, a Google Cloud Storage emulator
// serving the JSON and XML APIs from memory, without authentication.
type GCSServer struct {
	Endpoint string // http://127.0.0.1:PORT, for the gcs replica's endpoint
	Addr     string // 127.0.0.1:PORT
}

// StartFakeGCS starts fake-gcs-server on a free loopback port with an empty
// in-memory store and stops it at test end.
func StartFakeGCS(t testing.TB) *GCSServer {
	t.Helper()
	bin := Tool(t, "fake-gcs-server")
	port := freePorts(t, 1)[0]
	s := &GCSServer{Addr: "127.0.0.1:" + itoa(port)}
	s.Endpoint = "http://" + s.Addr
	// -public-host and -external-url make the XML reads and the resumable
	// upload sessions it hands out point back at this address.
	p := start(t, "fake-gcs-server", bin,
		"-backend", "memory", "-scheme", "http", "-host", "127.0.0.1", "-port", itoa(port),
		"-public-host", s.Addr, "-external-url", s.Endpoint, "-log-level", "error")
	p.waitReady(t, func(ctx context.Context) error {
		return call(ctx, "GET", s.Endpoint, "/storage/v1/b", nil, nil)
	})
	return s
}

// CreateBucket makes a bucket through the JSON API and returns its name.
func (s *GCSServer) CreateBucket(t testing.TB, name string) string {
	t.Helper()
	if err := call(context.Background(), "POST", s.Endpoint, "/storage/v1/b?project=test",
		strings.NewReader(`{"name":"`+name+`"}`), nil); err != nil {
		t.Fatalf("harness: create gcs bucket %s: %v", name, err)
	}
	return name
}

// NewBucket creates a bucket with a fresh name derived from the test name.
func (s *GCSServer) NewBucket(t testing.TB) string {
	t.Helper()
	return s.CreateBucket(t, BucketName(t.Name(), bucketSeq.Add(1)))
}
