package replicaclient

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/understudy-db/understudy/config"
	"github.com/understudy-db/understudy/integration/harness"
	"github.com/understudy-db/understudy/internal/storage/abs"
	"github.com/understudy-db/understudy/internal/storage/file"
	"github.com/understudy-db/understudy/internal/storage/gcs"
	"github.com/understudy-db/understudy/internal/storage/s3"
	"github.com/understudy-db/understudy/internal/storage/sftp"
	"github.com/understudy-db/understudy/internal/storage/storagetest"
)

func TestFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "replica")
	c, err := New(context.Background(), &config.Replica{Name: "file", Type: "file", Path: dir})
	if err != nil {
		t.Fatal(err)
	}
	fc, ok := c.(*file.Client)
	if !ok || fc.Dir() != dir {
		t.Fatalf("got %T %+v", c, c)
	}
	if _, err := New(context.Background(), &config.Replica{Name: "file", Type: "file", Path: "rel"}); err == nil {
		t.Fatal("relative path accepted")
	}
}

func TestUnknownType(t *testing.T) {
	_, err := New(context.Background(), &config.Replica{Name: "r1", Type: "webdav"})
	want := `replica "r1": unknown type "webdav"; use "s3", "gcs", "abs", "file" or "sftp"`
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v, want %q", err, want)
	}
}

// TestS3 builds an S3 client from a replica against versitygw: the fields
// reach the client (a probe works), and default credentials fill in only
// where the replica has none.
func TestS3(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	s := harness.StartVersityGW(t)
	bucket := s.NewBucket(t)
	r := &config.Replica{
		Name: "s3", Type: "s3", Bucket: bucket, Path: "db", Region: s.Region,
		Endpoint: s.Endpoint, ForcePathStyle: true,
	}
	for _, tc := range []struct {
		name      string
		id, sec   string
		defaults  []string
		wantProbe bool
	}{
		{"replica credentials", s.AccessKey, s.SecretKey, nil, true},
		{"default credentials", "", "", []string{s.AccessKey, s.SecretKey}, true},
		{"replica credentials win over defaults", s.AccessKey, "wrong-secret-xyz", []string{s.AccessKey, s.SecretKey}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rr := *r
			rr.AccessKeyID, rr.SecretAccessKey = tc.id, tc.sec
			opts := []Option{WithS3Options(func(o *s3.Options) { o.MaxAttempts = 1 })}
			if tc.defaults != nil {
				opts = append(opts, WithDefaultCredentials(tc.defaults[0], tc.defaults[1]))
			}
			c, err := New(context.Background(), &rr, opts...)
			if err != nil {
				t.Fatal(err)
			}
			if c.Type() != "s3" || c.(*s3.Client).Bucket() != bucket {
				t.Fatalf("client %T", c)
			}
			err = c.ProbeCreateOnly(context.Background())
			if tc.wantProbe && err != nil {
				t.Fatal(err)
			}
			if !tc.wantProbe {
				storagetest.CheckError(t, "probe", err, []string{"refused the credentials"}, []string{"wrong-secret-xyz"})
			}
		})
	}
}

// TestSFTP builds an SFTP client from a replica parsed from its URL and
// keys, against a real sshd: the fields reach the client (a probe works).
func TestSFTP(t *testing.T) {
	s := harness.StartSSHD(t)
	dir := s.NewDir(t)
	r, err := config.ParseReplicaURL(s.URL(dir))
	if err != nil {
		t.Fatal(err)
	}
	r.Name, r.KeyPath, r.KnownHostsPath = "sftp", s.KeyPath, s.KnownHostsPath
	c, err := New(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	sc, ok := c.(*sftp.Client)
	if !ok || sc.Dir() != dir || sc.Addr() != s.Addr {
		t.Fatalf("got %T %+v", c, c)
	}
	defer sc.Close()
	if err := c.ProbeCreateOnly(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestSSECustomerKeyPath: the SSE-C key file is read when the client is
// built; a missing or malformed one fails naming the replica, never showing
// the content.
func TestSSECustomerKeyPath(t *testing.T) {
	dir := t.TempDir()
	good, bad := filepath.Join(dir, "good.key"), filepath.Join(dir, "bad.key")
	os.WriteFile(good, []byte("U1NFLUMtY3VzdG9tZXIta2V5LTMyLWJ5dGVzLWxvbmc=\n"), 0o600)
	os.WriteFile(bad, []byte("c2hvcnQta2V5LXZhbHVl\n"), 0o600)
	r := config.Replica{Name: "s3", Type: "s3", Bucket: "b", Region: "us-east-1", Endpoint: "http://127.0.0.1:1"}
	for _, tc := range []struct {
		path string
		want string
	}{
		{good, ""},
		{bad, "sse-customer-key must be a 256-bit key in base64"},
		{filepath.Join(dir, "missing.key"), `replica "s3": read sse-customer-key-path`},
	} {
		rr := r
		rr.SSECustomerKeyPath = tc.path
		_, err := New(context.Background(), &rr)
		if tc.want == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.path, err)
			}
			continue
		}
		storagetest.CheckError(t, tc.path, err, []string{tc.want}, []string{"c2hvcnQta2V5LXZhbHVl"})
	}
}

// TestGCS builds a gcs client from a replica against fake-gcs-server: the
// fields reach the client (a probe works at the replica's path).
func TestGCS(t *testing.T) {
	t.Setenv("STORAGE_EMULATOR_HOST", "")
	s := harness.StartFakeGCS(t)
	r := &config.Replica{Name: "gcs", Type: "gcs", Bucket: s.NewBucket(t), Path: "db", Endpoint: s.Endpoint}
	c, err := New(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	if gc, ok := c.(*gcs.Client); !ok || gc.Bucket() != r.Bucket || gc.Key(0, 1, 1) != "db/0000/0000000000000001-0000000000000001.ltx" {
		t.Fatalf("got %T %+v", c, c)
	}
	if err := c.ProbeCreateOnly(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestABS builds an abs client from a replica parsed from its URL against
// Azurite, with the key from LITESTREAM_AZURE_ACCOUNT_KEY: the fields reach
// the client (a probe works at the replica's path).
func TestABS(t *testing.T) {
	s := harness.StartAzurite(t)
	ctr := s.NewContainer(t)
	r, err := config.ParseReplicaURL("abs://" + s.Account + "@" + ctr + "/db?endpoint=" + s.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(abs.AccountKeyEnv, s.Key)
	c, err := New(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	if ac, ok := c.(*abs.Client); !ok || ac.Container() != ctr || ac.Key(0, 1, 1) != "db/0000/0000000000000001-0000000000000001.ltx" {
		t.Fatalf("got %T %+v", c, c)
	}
	if err := c.ProbeCreateOnly(context.Background()); err != nil {
		t.Fatal(err)
	}
}
