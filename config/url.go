package config

import (
	"fmt"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

// Replica types.
const (
	TypeS3   = "s3"
	TypeFile = "file"
	TypeSFTP = "sftp"
)

// s3URLParams are the query parameters an s3:// URL may carry, in the order
// error messages list them.
var s3URLParams = []string{"endpoint", "region", "force-path-style", "skip-verify", "conditional-writes"}

// conditionalWrites are the values of a replica's conditional-writes.
var conditionalWrites = []string{ConditionalWritesRequire, ConditionalWritesIfSupported}

// ParseReplicaURL parses a replica location given on the command line or as a
// replica's url: key:
//
//	s3://BUCKET/PATH?endpoint=URL&region=R&force-path-style=true&skip-verify=true&conditional-writes=if-supported
//	file:///ABS/PATH
//	sftp://USER@HOST[:PORT]/ABS/PATH
//	PATH                       (a directory; relative to the current directory, ~ = home)
//
// The result has Type and the location fields set and the interval fields at
// their defaults; Name is empty. Errors never repeat credentials written into
// the URL (which are refused: use access-key-id / secret-access-key).
func ParseReplicaURL(u string) (*Replica, error) {
	r, err := parseReplicaURL(u)
	if err != nil {
		return nil, fmt.Errorf("replica URL %s: %s", quoteURL(u), err)
	}
	r.applyDefaults()
	return r, nil
}

// quoteURL quotes u for an error message unless it may hold a password.
func quoteURL(u string) string {
	if p, err := url.Parse(u); err == nil && p.Scheme == TypeSFTP && p.User != nil {
		if _, hasPassword := p.User.Password(); !hasPassword {
			return fmt.Sprintf("%q", u) // sftp://USER@HOST: a user name is no secret
		}
	}
	if strings.Contains(u, "@") {
		return "(not shown: it contains credentials)"
	}
	return fmt.Sprintf("%q", u)
}

// parseReplicaURL does the work of ParseReplicaURL with messages meant to
// follow a location ("replica URL ...: " or "dbs[0].replicas[0].url: ").
func parseReplicaURL(s string) (*Replica, error) {
	if s == "" {
		return nil, fmt.Errorf("empty: use s3://BUCKET/PATH, file:///ABS/PATH or a directory path")
	}
	if !strings.Contains(s, "://") {
		p, err := absPath(s)
		if err != nil {
			return nil, err
		}
		return &Replica{Type: TypeFile, Path: p}, nil
	}
	u, err := url.Parse(s)
	if err != nil {
		if ue, ok := err.(*url.Error); ok && !strings.Contains(s, "@") {
			return nil, fmt.Errorf("invalid URL: %v", ue.Err)
		}
		return nil, fmt.Errorf("invalid URL")
	}
	if _, hasPassword := u.User.Password(); hasPassword && u.Scheme == TypeSFTP {
		return nil, fmt.Errorf("a password in the URL is not supported: write sftp://USER@HOST/PATH and set password (e.g. password: ${SFTP_PASSWORD}) or key-path")
	} else if u.User != nil && u.Scheme != TypeSFTP && u.Scheme != TypeABS && u.Scheme != TypeGCS {
		return nil, fmt.Errorf("credentials in the URL are not supported: use access-key-id and secret-access-key")
	}
	if u.Fragment != "" {
		return nil, fmt.Errorf("unexpected #fragment")
	}
	switch u.Scheme {
	case TypeS3:
		return parseS3URL(u)
	case TypeSFTP:
		return parseSFTPURL(u)
	case TypeGCS:
		return parseGCSURL(u)
	case TypeABS:
		return parseABSURL(u)
	case TypeFile:
		if u.Host != "" {
			return nil, fmt.Errorf("file URL must be file:///ABS/PATH, not host %q (write a relative path without file://)", u.Host)
		}
		if u.RawQuery != "" {
			return nil, fmt.Errorf("file URL takes no query parameters")
		}
		if u.Path == "" || u.Path == "/" {
			return nil, fmt.Errorf("file URL has no path: use file:///ABS/PATH")
		}
		return &Replica{Type: TypeFile, Path: filepath.Clean(u.Path)}, nil
	default:
		if u.Scheme == "gs" { // gsutil's form
			return nil, fmt.Errorf("unsupported scheme %q: use gcs://BUCKET/PATH for Google Cloud Storage", u.Scheme)
		}
		return nil, fmt.Errorf("unsupported scheme %q: use s3://BUCKET/PATH, gcs://BUCKET/PATH, abs://ACCOUNT@CONTAINER/PATH, sftp://USER@HOST/PATH, file:///ABS/PATH or a directory path", u.Scheme)
	}
}

// parseSFTPURL reads sftp://USER@HOST[:PORT]/PATH, Litestream's form
// without its password.
func parseSFTPURL(u *url.URL) (*Replica, error) {
	if u.Host == "" {
		return nil, fmt.Errorf("sftp URL has no host: use sftp://USER@HOST[:PORT]/PATH")
	}
	if u.RawQuery != "" {
		return nil, fmt.Errorf("sftp URL takes no query parameters: set key-path, password and known-hosts-path as keys of the replica")
	}
	if u.Path == "" || u.Path == "/" {
		return nil, fmt.Errorf("sftp URL has no path: use sftp://USER@HOST[:PORT]/PATH")
	}
	return &Replica{Type: TypeSFTP, Host: u.Host, User: u.User.Username(), Path: path.Clean(u.Path)}, nil
}

func parseS3URL(u *url.URL) (*Replica, error) {
	if u.Host == "" {
		return nil, fmt.Errorf("s3 URL has no bucket: use s3://BUCKET/PATH")
	}
	r := &Replica{Type: TypeS3, Bucket: u.Host, Path: cleanKeyPrefix(u.Path)}
	if err := r.litestreamLocalhost(u); err != nil {
		return nil, err
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return nil, fmt.Errorf("invalid query: %v", err)
	}
	// Report parameters in a stable order.
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		vals := q[k]
		if len(vals) > 1 {
			return nil, fmt.Errorf("query parameter %q given %d times", k, len(vals))
		}
		v := vals[0]
		switch k {
		case "endpoint":
			if err := checkEndpoint(v); err != nil {
				return nil, fmt.Errorf("endpoint: %v", err)
			}
			r.Endpoint = v
		case "region":
			if v == "" {
				return nil, fmt.Errorf("region: empty")
			}
			r.Region = v
		case "force-path-style", "skip-verify":
			b, err := parseBool(v)
			if err != nil {
				return nil, fmt.Errorf("%s: %v", k, err)
			}
			if k == "force-path-style" {
				r.ForcePathStyle = b
			} else {
				r.SkipVerify = b
			}
		case "conditional-writes":
			if !slices.Contains(conditionalWrites, v) {
				return nil, fmt.Errorf("conditional-writes: unknown value %q: use %s", v, orList(conditionalWrites))
			}
			r.ConditionalWrites = v
		default:
			if s := suggest(k, s3URLParams); s != "" {
				return nil, fmt.Errorf("unknown query parameter %q (did you mean %q?)", k, s)
			}
			return nil, fmt.Errorf("unknown query parameter %q (known: %s)", k, strings.Join(s3URLParams, ", "))
		}
	}
	return r, nil
}

// litestreamLocalhost reads Litestream's form for a local S3-compatible
// store, s3://BUCKET.localhost:PORT/PATH (its MinIO guide's): the bucket
// BUCKET at http://localhost:PORT, path-style, region us-east-1. Any other
// host with a port is refused: a bucket is a name, not an address.
func (r *Replica) litestreamLocalhost(u *url.URL) error {
	port := u.Port()
	if port == "" {
		return nil
	}
	bucket, ok := strings.CutSuffix(u.Hostname(), ".localhost")
	if !ok || bucket == "" {
		return fmt.Errorf("s3 URL bucket %q has a port: give the bucket's name, and the store's address as ?endpoint=http://HOST:PORT", u.Host)
	}
	r.Bucket, r.Endpoint, r.Region, r.ForcePathStyle = bucket, "http://localhost:"+port, "us-east-1", true
	return nil
}

// cleanKeyPrefix turns an S3 path into the key prefix Litestream uses: no
// leading or trailing slash.
func cleanKeyPrefix(p string) string {
	p = strings.Trim(p, "/")
	if p == "" {
		return ""
	}
	return path.Clean(p)
}

// checkEndpoint accepts an http(s) URL with a host, as the S3 client needs.
func checkEndpoint(v string) error {
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		if strings.Contains(v, "@") {
			return fmt.Errorf("invalid URL: use http://HOST:PORT or https://HOST")
		}
		return fmt.Errorf("invalid URL %q: use http://HOST:PORT or https://HOST", v)
	}
	return nil
}

func parseBool(v string) (bool, error) {
	switch strings.ToLower(v) {
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	return false, fmt.Errorf("invalid boolean %q: use true or false", v)
}

// absPath resolves a database or directory path as Litestream does: a
// leading ~ is the home directory, and a relative path is relative to the
// current directory of the process (not to the config file).
func absPath(p string) (string, error) {
	if p == "~" || strings.HasPrefix(p, "~/") {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("cannot expand ~: %v", err)
		}
		p = filepath.Join(home, p[1:])
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("cannot resolve %q: %v", p, err)
	}
	return abs, nil
}

// Location is the replica's store as a URL without credentials, e.g.
// "s3://bucket/db?endpoint=http://127.0.0.1:7070" or "file:///var/backups/db":
// for logs, and equal for two replicas exactly when they share a store.
func (r *Replica) Location() string {
	switch r.Type {
	case TypeS3:
		u := url.URL{Scheme: TypeS3, Host: r.Bucket, Path: "/" + r.Path}
		if r.Path == "" {
			u.Path = ""
		}
		q := url.Values{}
		if r.Endpoint != "" {
			q.Set("endpoint", r.Endpoint)
		}
		if r.Region != "" {
			q.Set("region", r.Region)
		}
		if r.ForcePathStyle {
			q.Set("force-path-style", "true")
		}
		if r.SkipVerify {
			q.Set("skip-verify", "true")
		}
		if r.ConditionalWrites != "" {
			q.Set("conditional-writes", r.ConditionalWrites)
		}
		// Keep ':' and '/' of an endpoint readable in logs; both are legal
		// in a query and ParseReplicaURL reads them back.
		u.RawQuery = strings.NewReplacer("%3A", ":", "%2F", "/").Replace(q.Encode())
		return u.String()
	case TypeFile:
		return (&url.URL{Scheme: TypeFile, Path: r.Path}).String()
	case TypeSFTP:
		u := url.URL{Scheme: TypeSFTP, Host: r.Host, Path: r.Path}
		if r.User != "" {
			u.User = url.User(r.User)
		}
		if !strings.HasPrefix(r.Path, "/") {
			u.Path = "/~/" + r.Path // relative to the login directory
		}
		return u.String()
	case TypeGCS, TypeABS:
		return r.objectLocation()
	}
	return r.Type + ":" + r.Path
}

// storeKey identifies the store a replica writes to; two replicas with the
// same key would overwrite each other's history.
func (r *Replica) storeKey() string {
	if r.Type == TypeS3 {
		return "s3\x00" + r.Endpoint + "\x00" + r.Bucket + "\x00" + r.Path
	}
	if r.Type == TypeSFTP {
		return "sftp\x00" + r.Host + "\x00" + r.Path
	}
	if objectStore(r.Type) {
		return r.Type + "\x00" + r.Endpoint + "\x00" + r.AccountName + "\x00" + r.Bucket + "\x00" + r.Path
	}
	return r.Type + "\x00" + r.Path
}

// applyDefaults fills the intervals a replica left out.
func (r *Replica) applyDefaults() {
	if r.SyncInterval == 0 {
		r.SyncInterval = DefaultSyncInterval
	}
	if r.SnapshotInterval == 0 {
		r.SnapshotInterval = DefaultSnapshotInterval
	}
	if r.Retention == 0 {
		r.Retention = DefaultRetention
	}
	if r.RetentionCheckInterval == 0 {
		r.RetentionCheckInterval = DefaultRetentionCheckInterval
	}
}
