package s3

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/integration/harness"
	"github.com/understudy-db/understudy/internal/storage"
	"github.com/understudy-db/understudy/internal/storage/storagetest"
)

// rawPut writes body at key as another writer would: a plain PUT with md
// as Understudy metadata (and no upload id of ours).
func rawPut(t *testing.T, c *Client, key string, body []byte, md storage.Metadata) {
	t.Helper()
	meta := map[string]string{}
	for k, v := range md.Fields() {
		meta[metaPrefix+k] = v
	}
	_, err := c.s3.PutObject(context.Background(), &awss3.PutObjectInput{
		Bucket: aws.String(c.opts.Bucket), Key: aws.String(key), Body: bytes.NewReader(body), Metadata: meta,
	})
	if err != nil {
		t.Fatalf("raw PUT %s: %v", key, err)
	}
}

// intruderFront passes every request on to upstream, and once, around the
// first plain PUT of an .ltx key, lets another writer in: before it is
// forwarded (before == true: the other's PUT lands between our check and
// ours) or after (ours lands first, the other's before our read-back).
func intruderFront(t *testing.T, upstream string, before bool, intrude func(key string)) string {
	t.Helper()
	u, _ := url.Parse(upstream)
	rp := httputil.NewSingleHostReverseProxy(u)
	var done atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		target := r.Method == http.MethodPut && strings.HasSuffix(r.URL.Path, ".ltx") && r.Header.Get("If-None-Match") == ""
		if !target || !done.CompareAndSwap(false, true) {
			rp.ServeHTTP(w, r)
			return
		}
		key := strings.SplitN(strings.TrimPrefix(r.URL.Path, "/"), "/", 2)[1] // path-style: /bucket/key
		if before {
			intrude(key)
			rp.ServeHTTP(w, r)
			return
		}
		harness.ServeThen(rp, w, r, func() { intrude(key) })
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func plainClient(t *testing.T, opts Options) (*Client, bool) {
	t.Helper()
	pc, versioned, err := mustNew(t, opts).PlainWrites(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return pc.(*Client), versioned
}

func enableVersioning(t *testing.T, c *Client) {
	t.Helper()
	_, err := c.s3.PutBucketVersioning(context.Background(), &awss3.PutBucketVersioningInput{
		Bucket:                  aws.String(c.opts.Bucket),
		VersioningConfiguration: &types.VersioningConfiguration{Status: types.BucketVersioningStatusEnabled},
	})
	if err != nil {
		t.Fatalf("enable versioning: %v", err)
	}
}

// TestPlainWrites: without versions, a plain create refuses a taken key
// without writing (the check before), and finds another writer's PUT that
// landed after ours (the read-back): both are ErrExists, as a refused
// conditional PUT is.
func TestPlainWrites(t *testing.T) {
	isolateAWSEnv(t)
	s := harness.StartVersityGW(t)
	opts := serverOptions(s, s.NewBucket(t), "db")
	c, versioned := plainClient(t, opts)
	if versioned {
		t.Fatal("an unversioned bucket reported as versioned")
	}
	if c.versions != nil {
		t.Fatal("reads resolve versions in a bucket without them")
	}
	body := storagetest.Body(2000, 1)
	storagetest.MustCreate(t, c, 0, 1, 1, body, storagetest.TestMetadata(1))
	_, err := c.Create(context.Background(), 0, 1, 1, bytes.NewReader(storagetest.Body(2000, 2)), storagetest.TestMetadata(2))
	if !errors.Is(err, storage.ErrExists) {
		t.Fatalf("create of a taken key: %v, want ErrExists", err)
	}
	if got, info := storagetest.ReadAll(t, c, 0, 1, 1, 0, -1); !bytes.Equal(got, body) || info.Metadata.Node != storagetest.TestMetadata(1).Node {
		t.Fatal("the taken key was overwritten")
	}

	// Another writer's PUT lands after ours, before our read-back.
	intruder := storagetest.Body(1500, 3)
	front := opts
	front.Endpoint = intruderFront(t, s.Endpoint, false, func(key string) { rawPut(t, c, key, intruder, storagetest.TestMetadata(3)) })
	fc, _ := plainClient(t, front)
	_, err = fc.Create(context.Background(), 0, 2, 2, bytes.NewReader(storagetest.Body(2000, 4)), storagetest.TestMetadata(4))
	if !errors.Is(err, storage.ErrExists) || !strings.Contains(err.Error(), "read back") {
		t.Fatalf("create overwritten before its read-back: %v, want ErrExists from the read-back", err)
	}
	if got, _ := storagetest.ReadAll(t, c, 0, 2, 2, 0, -1); !bytes.Equal(got, intruder) {
		t.Fatal("the store does not hold the last PUT: the test did not race as meant")
	}
}

// TestPlainWritesVersioned: in a bucket that keeps versions, a deposed
// primary's PUT that lands after the new primary's file (a lower fencing
// token, newer version) loses: readers keep the new primary's file, and
// the deposed writer's read-back reports ErrExists. A key deleted and
// created again in the same second (a deposed writer's orphan replaced)
// reads as the new file; deleted, it reads as absent.
func TestPlainWritesVersioned(t *testing.T) {
	isolateAWSEnv(t)
	s := harness.StartVersityGWVersioning(t)
	opts := serverOptions(s, s.NewBucket(t), "db")
	enableVersioning(t, mustNew(t, opts))
	c, versioned := plainClient(t, opts)
	if !versioned {
		t.Fatal("a versioned bucket reported as unversioned")
	}
	reader := opts
	reader.ResolveVersions = true
	rc := mustNew(t, reader)

	newMD, deposedMD := storagetest.TestMetadata(5), storagetest.TestMetadata(4) // tokens 5007 and 4007
	newBody, deposedBody := storagetest.Body(2000, 5), storagetest.Body(1800, 4)

	// The deposed writer's create: the new primary's PUT lands between its
	// check and its PUT, so its own version is the newest.
	front := opts
	front.Endpoint = intruderFront(t, s.Endpoint, true, func(key string) { rawPut(t, c, key, newBody, newMD) })
	deposed, _ := plainClient(t, front)
	_, err := deposed.Create(context.Background(), 0, 1, 1, bytes.NewReader(deposedBody), deposedMD)
	if !errors.Is(err, storage.ErrExists) {
		t.Fatalf("deposed writer's create: %v, want ErrExists (its version loses by fencing token)", err)
	}
	for name, cl := range map[string]*Client{"writer": c, "reader": rc} {
		got, info := storagetest.ReadAll(t, cl, 0, 1, 1, 0, -1)
		if !bytes.Equal(got, newBody) || info.Metadata.FencingToken != newMD.FencingToken || info.Size != int64(len(newBody)) {
			t.Errorf("%s reads token %d (%d bytes), want the new primary's file (token %d)", name, info.Metadata.FencingToken, len(got), newMD.FencingToken)
		}
	}
	// A plain GET would have given the deposed writer's newer version.
	out, err := c.s3.GetObject(context.Background(), &awss3.GetObjectInput{Bucket: aws.String(opts.Bucket), Key: aws.String(c.Key(0, 1, 1))})
	if err != nil {
		t.Fatal(err)
	}
	out.Body.Close()
	if md, _ := decodeMetadata(out.Metadata); md == nil || md.FencingToken != deposedMD.FencingToken {
		t.Fatalf("the newest version is not the deposed writer's: the test did not race as meant")
	}

	// A reader without ResolveVersions is what the new code changes.
	plainReader := mustNew(t, opts)
	if _, info := storagetest.ReadAll(t, plainReader, 0, 1, 1, 0, -1); info.Metadata.FencingToken != deposedMD.FencingToken {
		t.Fatalf("a plain reader reads token %d", info.Metadata.FencingToken)
	}

	// Replacing an orphan: delete, then create at once (same second).
	if err := c.Delete(context.Background(), []storage.FileInfo{{Level: 0, MinTXID: 1, MaxTXID: 1}}); err != nil {
		t.Fatal(err)
	}
	if _, err := rc.Open(context.Background(), 0, 1, 1, 0, -1); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("open of a deleted key: %v, want ErrNotFound", err)
	}
	next := storagetest.Body(900, 6)
	storagetest.MustCreate(t, c, 0, 1, 1, next, storagetest.TestMetadata(6))
	if got, _ := storagetest.ReadAll(t, rc, 0, 1, 1, 0, -1); !bytes.Equal(got, next) {
		t.Fatal("the file created after a delete does not read back")
	}
	if _, err := rc.Open(context.Background(), 0, 2, 2, 0, -1); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("open of an absent key: %v, want ErrNotFound", err)
	}
}

// TestResolveVersionsUnversioned: a reader told to resolve versions reads a
// bucket that never had versioning with plain GETs.
func TestResolveVersionsUnversioned(t *testing.T) {
	isolateAWSEnv(t)
	s := harness.StartVersityGW(t)
	opts := serverOptions(s, s.NewBucket(t), "db")
	opts.ResolveVersions = true
	c := mustNew(t, opts)
	body := storagetest.Body(100, 1)
	storagetest.MustCreate(t, c, 0, 1, 1, body, storagetest.TestMetadata(1))
	if got, _ := storagetest.ReadAll(t, c, 0, 1, 1, 0, -1); !bytes.Equal(got, body) {
		t.Fatal("content differs")
	}
	if !c.versions.noAPI.Load() {
		t.Error("reads of an unversioned bucket still list versions")
	}
}

// BenchmarkCreate is what a create costs on each kind of store: create-only
// (one conditional PUT), plain (a read, the PUT, a read back) and plain in a
// bucket that keeps versions (listings of the key's versions instead of the
// reads), with the requests each makes (requests/op), against versitygw on
// loopback.
func BenchmarkCreate(b *testing.B) {
	for _, mode := range []string{"create-only", "plain", "plain+versions"} {
		b.Run(mode, func(b *testing.B) {
			var s *harness.S3Server
			if mode == "plain+versions" {
				s = harness.StartVersityGWVersioning(b)
			} else {
				s = harness.StartVersityGW(b)
			}
			var requests atomic.Int64
			u, _ := url.Parse(s.Endpoint)
			rp := httputil.NewSingleHostReverseProxy(u)
			front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				requests.Add(1)
				rp.ServeHTTP(w, r)
			}))
			b.Cleanup(front.Close)
			opts := Options{Bucket: s.NewBucket(b), Path: "db", Region: s.Region, Endpoint: front.URL, ForcePathStyle: true,
				AccessKeyID: s.AccessKey, SecretAccessKey: s.SecretKey}
			base, err := New(context.Background(), opts)
			if err != nil {
				b.Fatal(err)
			}
			var c storage.Client = base
			switch mode {
			case "plain+versions":
				if _, err := base.s3.PutBucketVersioning(context.Background(), &awss3.PutBucketVersioningInput{
					Bucket:                  aws.String(opts.Bucket),
					VersioningConfiguration: &types.VersioningConfiguration{Status: types.BucketVersioningStatusEnabled},
				}); err != nil {
					b.Fatal(err)
				}
				fallthrough
			case "plain":
				if c, _, err = base.PlainWrites(context.Background()); err != nil {
					b.Fatal(err)
				}
			}
			body := storagetest.Body(4096, 1)
			md := storagetest.TestMetadata(1)
			requests.Store(0)
			b.ResetTimer()
			for i := range b.N {
				txid := ltx.TXID(i + 1)
				if _, err := c.Create(context.Background(), 0, txid, txid, bytes.NewReader(body), md); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(requests.Load())/float64(b.N), "requests/op")
		})
	}
}
