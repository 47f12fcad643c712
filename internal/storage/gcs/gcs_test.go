package gcs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/understudy-db/understudy/integration/harness"
	"github.com/understudy-db/understudy/internal/storage"
	"github.com/understudy-db/understudy/internal/storage/objstore"
	"github.com/understudy-db/understudy/internal/storage/spool"
	"github.com/understudy-db/understudy/internal/storage/storagetest"
)

func serverOptions(s *harness.GCSServer, bucket, path string) Options {
	return Options{Bucket: bucket, Path: path, Endpoint: s.Endpoint, Timing: objstore.Timing{MaxBackoff: 200 * time.Millisecond}}
}

func mustNew(t *testing.T, opts Options) *Client {
	t.Helper()
	t.Setenv("STORAGE_EMULATOR_HOST", "")
	c, err := New(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestConformance runs the suite against a real fake-gcs-server, each case
// in its own bucket under a nested path.
func TestConformance(t *testing.T) {
	s := harness.StartFakeGCS(t)
	storagetest.Run(t, func(t *testing.T) storage.Client {
		return mustNew(t, serverOptions(s, s.NewBucket(t), "dbs/app.db"))
	})
}

// TestCreateOnlyLargeObject: a file past one upload chunk goes as a
// resumable upload, and its precondition still holds: the second create of
// the key fails with ErrExists and leaves the first one's bytes.
func TestCreateOnlyLargeObject(t *testing.T) {
	s := harness.StartFakeGCS(t)
	c := mustNew(t, serverOptions(s, s.NewBucket(t), "db"))
	big := storagetest.Body(spool.MaxMemoryBody+300<<10, 1)
	storagetest.MustCreate(t, c, storage.SnapshotLevel, 1, 9, big, storagetest.TestMetadata(1))
	_, err := c.Create(context.Background(), storage.SnapshotLevel, 1, 9, bytes.NewReader(storagetest.Body(len(big), 2)), storagetest.TestMetadata(2))
	if !errors.Is(err, storage.ErrExists) {
		t.Fatalf("second create of a large object: err = %v, want ErrExists", err)
	}
	got, info := storagetest.ReadAll(t, c, storage.SnapshotLevel, 1, 9, 0, -1)
	if !bytes.Equal(got, big) || info.Metadata == nil || info.Metadata.Node != storagetest.TestMetadata(1).Node {
		t.Fatalf("after a refused second create: %d bytes (equal %v), metadata %+v", len(got), bytes.Equal(got, big), info.Metadata)
	}
}

// TestSmallPages forces many list pages and seeks inside them.
func TestSmallPages(t *testing.T) {
	s := harness.StartFakeGCS(t)
	opts := serverOptions(s, s.NewBucket(t), "")
	opts.ListPageSize = 7
	storagetest.CheckPagedListing(t, mustNew(t, opts), 30)
}

func TestMissingBucket(t *testing.T) {
	s := harness.StartFakeGCS(t)
	c := mustNew(t, serverOptions(s, "no-such-bucket", "db"))
	storagetest.RunFailingStore(t, c, []string{`bucket "no-such-bucket" does not exist at ` + s.Endpoint, "create it, or fix the replica's bucket"}, nil)
}

// TestUnreachableEndpoint: a dead endpoint fails within the retry budget with
// a message pointing at the endpoint, and never looks like a missing key.
func TestUnreachableEndpoint(t *testing.T) {
	opts := Options{Bucket: "b", Endpoint: fmt.Sprintf("http://127.0.0.1:%d", harness.FreePort(t)), Timing: objstore.Timing{MaxAttempts: 2, MaxBackoff: 10 * time.Millisecond}}
	_, err := mustNew(t, opts).Open(context.Background(), 0, 1, 1, 0, -1)
	storagetest.CheckError(t, "open", err, []string{"cannot reach " + opts.Endpoint, "check the endpoint"}, nil)
	if errors.Is(err, storage.ErrNotFound) {
		t.Fatal("an unreachable store must not look like a missing key")
	}
}

func TestNewValidates(t *testing.T) {
	if _, err := New(context.Background(), Options{}); err == nil || err.Error() != "gcs replica: bucket is empty; set the replica's bucket" {
		t.Fatalf("no bucket: %v", err)
	}
	c := mustNew(t, Options{Bucket: "b", Path: "/a/b/", Endpoint: "127.0.0.1:1/"})
	if c.opts.Endpoint != "http://127.0.0.1:1" || c.Key(10, 1, 2) != "a/b/000a/0000000000000001-0000000000000002.ltx" {
		t.Fatalf("endpoint %q key %q", c.opts.Endpoint, c.Key(10, 1, 2))
	}
}

// TestKeyReader: keys outside the LTX layout (Litestream 0.3's tree) are
// listed and read under the replica's path.
func TestKeyReader(t *testing.T) {
	s := harness.StartFakeGCS(t)
	c := mustNew(t, serverOptions(s, s.NewBucket(t), "db"))
	storagetest.CheckKeyReader(t, c)
}

// TestLostAnswerRetried: an upload whose answer is lost (it landed) is
// retried, and the retry's 412 is recognised as our own object.
func TestLostAnswerRetried(t *testing.T) {
	s := harness.StartFakeGCS(t)
	var uploads atomic.Int32
	// The emulator tells its XML reads by the Host header: forward its own.
	keepHost := func(r *http.Request) int { r.Host = s.Addr; return 0 }
	front := harness.FaultyFront(t, s.Endpoint, keepHost, func(r *http.Request) int {
		if strings.HasPrefix(r.URL.Path, "/upload/") && uploads.Add(1) == 1 {
			return http.StatusServiceUnavailable
		}
		return 0
	})
	c := mustNew(t, serverOptions(&harness.GCSServer{Endpoint: front}, s.NewBucket(t), "db"))
	storagetest.CheckLostAnswerRetried(t, c, func() int { return int(uploads.Load()) })
}

// TestCallDeadline: a store that never answers fails calls at their
// deadline rather than hanging (toxiproxy's timeout toxic holds the data).
func TestCallDeadline(t *testing.T) {
	s := harness.StartFakeGCS(t)
	tp := harness.StartToxiproxy(t)
	p := tp.NewProxy(t, "gcs", s.Addr)
	opts := serverOptions(&harness.GCSServer{Endpoint: "http://" + p.Listen}, s.NewBucket(t), "db")
	opts.CallTimeout, opts.MaxAttempts = 500*time.Millisecond, 2
	hang := harness.Toxic{Name: "hang", Type: "timeout", Stream: "upstream", Attributes: map[string]any{"timeout": 0}}
	storagetest.CheckHangingStore(t, mustNew(t, opts),
		func() { must(t, p.AddToxic(hang)) }, func() { must(t, p.RemoveToxic("hang")) },
		[]string{"gs://" + opts.Bucket + "/db/0000/", "check the endpoint"})
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestSub: the clients of a directory entry's databases, from one client
// of the prefix, each write under prefix/rel and list only their own.
func TestSub(t *testing.T) {
	s := harness.StartFakeGCS(t)
	bucket := s.NewBucket(t)
	storagetest.CheckSub(t, mustNew(t, serverOptions(s, bucket, "tenants")), func(rel string) storage.Client {
		return mustNew(t, serverOptions(s, bucket, "tenants/"+rel))
	})
}
