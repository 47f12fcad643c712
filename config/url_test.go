package config

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestParseReplicaURL(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	t.Setenv("HOME", "/home/u")
	for _, tc := range []struct {
		url  string
		want Replica // location fields only
	}{
		{"s3://bkt/db", Replica{Type: "s3", Bucket: "bkt", Path: "db"}},
		{"s3://bkt", Replica{Type: "s3", Bucket: "bkt"}},
		{"s3://bkt/", Replica{Type: "s3", Bucket: "bkt"}},
		{"s3://bkt//a/b/", Replica{Type: "s3", Bucket: "bkt", Path: "a/b"}},
		{"s3://bkt/db?region=eu-west-1", Replica{Type: "s3", Bucket: "bkt", Path: "db", Region: "eu-west-1"}},
		{"s3://bkt/db?endpoint=http://127.0.0.1:7070&force-path-style=true&skip-verify=true&region=us-east-1",
			Replica{Type: "s3", Bucket: "bkt", Path: "db", Endpoint: "http://127.0.0.1:7070", Region: "us-east-1", ForcePathStyle: true, SkipVerify: true}},
		{"s3://bkt/db?conditional-writes=if-supported", Replica{Type: "s3", Bucket: "bkt", Path: "db", ConditionalWrites: "if-supported"}},
		{"s3://bkt/db?conditional-writes=require", Replica{Type: "s3", Bucket: "bkt", Path: "db", ConditionalWrites: "require"}},
		{"s3://bkt/db?endpoint=https%3A%2F%2Fminio.example.com&force-path-style=false",
			Replica{Type: "s3", Bucket: "bkt", Path: "db", Endpoint: "https://minio.example.com"}},
		// Litestream's own forms: a bucket name with dots, and its
		// BUCKET.localhost:PORT for a local store (MinIO).
		{"s3://mybkt.litestream.io/db", Replica{Type: "s3", Bucket: "mybkt.litestream.io", Path: "db"}},
		{"s3://mybkt.localhost:9000/fruits.db", Replica{Type: "s3", Bucket: "mybkt", Path: "fruits.db", Endpoint: "http://localhost:9000", Region: "us-east-1", ForcePathStyle: true}},
		{"s3://mybkt.localhost:9000/db?region=eu-west-1", Replica{Type: "s3", Bucket: "mybkt", Path: "db", Endpoint: "http://localhost:9000", Region: "eu-west-1", ForcePathStyle: true}},
		{"gcs://bkt/db", Replica{Type: "gcs", Bucket: "bkt", Path: "db"}},
		{"gcs://bkt//a/b/?endpoint=http://127.0.0.1:4443", Replica{Type: "gcs", Bucket: "bkt", Path: "a/b", Endpoint: "http://127.0.0.1:4443"}},
		{"abs://acct@ctr/db", Replica{Type: "abs", AccountName: "acct", Bucket: "ctr", Path: "db"}},
		{"abs://ctr", Replica{Type: "abs", Bucket: "ctr"}},
		{"abs://devstoreaccount1@ctr/a/db?endpoint=http://127.0.0.1:10000/devstoreaccount1",
			Replica{Type: "abs", AccountName: "devstoreaccount1", Bucket: "ctr", Path: "a/db", Endpoint: "http://127.0.0.1:10000/devstoreaccount1"}},
		{"file:///var/backups/db", Replica{Type: "file", Path: "/var/backups/db"}},
		{"file:///var/backups/db/", Replica{Type: "file", Path: "/var/backups/db"}},
		{"/var/backups/db", Replica{Type: "file", Path: "/var/backups/db"}},
		{"backups/db", Replica{Type: "file", Path: filepath.Join(dir, "backups/db")}},
		{"~/backups", Replica{Type: "file", Path: "/home/u/backups"}},
		{"sftp://backup@host.example/srv/backups/db", Replica{Type: "sftp", Host: "host.example", User: "backup", Path: "/srv/backups/db"}},
		{"sftp://backup@10.0.0.5:2222/srv//db/", Replica{Type: "sftp", Host: "10.0.0.5:2222", User: "backup", Path: "/srv/db"}},
		{"sftp://host.example/srv/db", Replica{Type: "sftp", Host: "host.example", Path: "/srv/db"}},
	} {
		r, err := ParseReplicaURL(tc.url)
		if err != nil {
			t.Errorf("ParseReplicaURL(%q): %v", tc.url, err)
			continue
		}
		want := tc.want
		want.applyDefaults()
		if *r != want {
			t.Errorf("ParseReplicaURL(%q) =\n%s\nwant\n%s", tc.url, dumpReplica(r), dumpReplica(&want))
		}
		// Location is a URL that parses back to the same store.
		back, err := ParseReplicaURL(r.Location())
		if err != nil || *back != *r {
			t.Errorf("ParseReplicaURL(Location() = %q) = %v, %v; want %v", r.Location(), back, err, r)
		}
	}
}

func TestParseReplicaURLErrors(t *testing.T) {
	for _, tc := range []struct{ url, want string }{
		{"", `replica URL "": empty: use s3://BUCKET/PATH, file:///ABS/PATH or a directory path`},
		{"gs://bkt/db", `replica URL "gs://bkt/db": unsupported scheme "gs": use gcs://BUCKET/PATH for Google Cloud Storage`},
		{"s3:///db", `replica URL "s3:///db": s3 URL has no bucket: use s3://BUCKET/PATH`},
		{"sftp://u@h", `replica URL "sftp://u@h": sftp URL has no path: use sftp://USER@HOST[:PORT]/PATH`},
		{"sftp:///srv/db", `replica URL "sftp:///srv/db": sftp URL has no host: use sftp://USER@HOST[:PORT]/PATH`},
		{"sftp://u@h/db?key-path=/k", `replica URL "sftp://u@h/db?key-path=/k": sftp URL takes no query parameters: set key-path, password and known-hosts-path as keys of the replica`},
		{"sftp://u:pw@h/db", `replica URL (not shown: it contains credentials): a password in the URL is not supported: write sftp://USER@HOST/PATH and set password (e.g. password: ${SFTP_PASSWORD}) or key-path`},
		{"s3://bkt/db?regoin=x", `replica URL "s3://bkt/db?regoin=x": unknown query parameter "regoin" (did you mean "region"?)`},
		{"s3://bkt/db?acl=private", `replica URL "s3://bkt/db?acl=private": unknown query parameter "acl" (known: endpoint, region, force-path-style, skip-verify, conditional-writes)`},
		{"s3://bkt/db?conditional-writes=off", `replica URL "s3://bkt/db?conditional-writes=off": conditional-writes: unknown value "off": use require or if-supported`},
		{"s3://bkt/db?region=a&region=b", `replica URL "s3://bkt/db?region=a&region=b": query parameter "region" given 2 times`},
		{"s3://bkt/db?force-path-style=yes", `replica URL "s3://bkt/db?force-path-style=yes": force-path-style: invalid boolean "yes": use true or false`},
		{"s3://bkt/db?endpoint=minio:9000", `replica URL "s3://bkt/db?endpoint=minio:9000": endpoint: invalid URL "minio:9000": use http://HOST:PORT or https://HOST`},
		{"s3://bkt/db?region=", `replica URL "s3://bkt/db?region=": region: empty`},
		{"s3://bkt/db#x", `replica URL "s3://bkt/db#x": unexpected #fragment`},
		{"s3://bkt/db?a=%zz", `replica URL "s3://bkt/db?a=%zz": invalid query: invalid URL escape "%zz"`},
		{"s3://b kt/db", `replica URL "s3://b kt/db": invalid URL: invalid character " " in host name`},
		{"s3://minio:9000/db", `replica URL "s3://minio:9000/db": s3 URL bucket "minio:9000" has a port: give the bucket's name, and the store's address as ?endpoint=http://HOST:PORT`},
		{"s3://.localhost:9000/db", `replica URL "s3://.localhost:9000/db": s3 URL bucket ".localhost:9000" has a port: give the bucket's name, and the store's address as ?endpoint=http://HOST:PORT`},
		{"gcs:///db", `replica URL "gcs:///db": gcs URL has no bucket: use gcs://BUCKET/PATH`},
		{"gcs://bkt/db?region=x", `replica URL "gcs://bkt/db?region=x": unknown query parameter "region" (known: endpoint)`},
		{"gcs://bkt:4443/db", `replica URL "gcs://bkt:4443/db": gcs URL bucket "bkt:4443" has a port: give the bucket's name, and the store's address as ?endpoint=http://HOST:PORT`},
		{"gcs://bkt/db?endpoint=localhost", `replica URL "gcs://bkt/db?endpoint=localhost": endpoint: invalid URL "localhost": use http://HOST:PORT or https://HOST`},
		{"abs://ctr/db?endpoint=http://a&endpoint=http://b", `replica URL "abs://ctr/db?endpoint=http://a&endpoint=http://b": query parameter "endpoint" given 2 times`},
		{"abs://acct@/db", `replica URL (not shown: it contains credentials): abs URL has no container: use abs://ACCOUNT@CONTAINER/PATH`},
		{"abs://acct:s3cr3t@ctr/db", `replica URL (not shown: it contains credentials): an account key in the URL is not supported: use account-key or LITESTREAM_AZURE_ACCOUNT_KEY`},
		{"file://host/db", `replica URL "file://host/db": file URL must be file:///ABS/PATH, not host "host" (write a relative path without file://)`},
		{"file:///db?x=1", `replica URL "file:///db?x=1": file URL takes no query parameters`},
		{"file://", `replica URL "file://": file URL has no path: use file:///ABS/PATH`},
	} {
		_, err := ParseReplicaURL(tc.url)
		if err == nil || err.Error() != tc.want {
			t.Errorf("ParseReplicaURL(%q) error:\n%v\nwant:\n%s", tc.url, err, tc.want)
		}
	}
}

// Credentials in a URL are refused without echoing the URL.
func TestParseReplicaURLCredentials(t *testing.T) {
	for _, u := range []string{
		"s3://AKID:s3cr3t@bkt/db",
		"s3://AKID:s3cr3t@bkt/db?endpoint=http://x",
		"s3://bkt/db?endpoint=http://AKID:s3cr3t@minio:9000",
		"s3://AKID:s3cr3t%zz@bkt/db",
	} {
		_, err := ParseReplicaURL(u)
		if err == nil {
			t.Fatalf("ParseReplicaURL(%q) succeeded", u)
		}
		if strings.Contains(err.Error(), "s3cr3t") {
			t.Errorf("error for %q shows the secret: %v", u, err)
		}
		if !strings.HasPrefix(err.Error(), "replica URL (not shown: it contains credentials): ") {
			t.Errorf("error for %q = %v", u, err)
		}
	}
}

func TestLocation(t *testing.T) {
	for _, tc := range []struct {
		r    Replica
		want string
	}{
		{Replica{Type: "s3", Bucket: "b", Path: "db"}, "s3://b/db"},
		{Replica{Type: "s3", Bucket: "b"}, "s3://b"},
		{Replica{Type: "s3", Bucket: "b", Path: "db", Endpoint: "http://127.0.0.1:7070", ForcePathStyle: true, SecretAccessKey: "s3cr3t", AccessKeyID: "AKID"},
			"s3://b/db?endpoint=http://127.0.0.1:7070&force-path-style=true"},
		{Replica{Type: "file", Path: "/var/backups/my db"}, "file:///var/backups/my%20db"},
	} {
		if got := tc.r.Location(); got != tc.want {
			t.Errorf("Location() = %q, want %q", got, tc.want)
		}
	}
}
