package config

import (
	"fmt"
	"net/url"
	"strings"
)

// Replica types of the object stores beside S3: Google Cloud Storage and
// Azure Blob Storage. Both keep Litestream 0.5's S3 key layout under
// <bucket>/<path>/ (an Azure container is the bucket).
const (
	TypeGCS = "gcs"
	TypeABS = "abs"
)

// objectStore tells whether a replica type keeps its history as objects in
// a bucket (s3, gcs, abs), under the same key layout.
func objectStore(typ string) bool {
	return typ == TypeS3 || typ == TypeGCS || typ == TypeABS
}

// parseGCSURL reads gcs://BUCKET/PATH?endpoint=URL.
func parseGCSURL(u *url.URL) (*Replica, error) {
	if u.User != nil {
		return nil, fmt.Errorf("credentials in the URL are not supported: gcs replicas use Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS)")
	}
	if u.Host == "" {
		return nil, fmt.Errorf("gcs URL has no bucket: use gcs://BUCKET/PATH")
	}
	r := &Replica{Type: TypeGCS, Bucket: u.Host, Path: cleanKeyPrefix(u.Path)}
	return r, r.endpointQuery(u)
}

// parseABSURL reads abs://[ACCOUNT@]CONTAINER/PATH?endpoint=URL, Litestream's
// form: the user part is the storage account's name (never its key).
func parseABSURL(u *url.URL) (*Replica, error) {
	if _, hasKey := u.User.Password(); hasKey {
		return nil, fmt.Errorf("an account key in the URL is not supported: use account-key or LITESTREAM_AZURE_ACCOUNT_KEY")
	}
	if u.Host == "" {
		return nil, fmt.Errorf("abs URL has no container: use abs://ACCOUNT@CONTAINER/PATH")
	}
	r := &Replica{Type: TypeABS, Bucket: u.Host, Path: cleanKeyPrefix(u.Path)}
	if u.User != nil {
		r.AccountName = u.User.Username()
	}
	return r, r.endpointQuery(u)
}

// endpointQuery reads the query of a gcs:// or abs:// URL, which may only
// name an endpoint (an emulator, or a sovereign cloud's host).
func (r *Replica) endpointQuery(u *url.URL) error {
	if u.Port() != "" {
		return fmt.Errorf("%s URL bucket %q has a port: give the bucket's name, and the store's address as ?endpoint=http://HOST:PORT", r.Type, u.Host)
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return fmt.Errorf("invalid query: %v", err)
	}
	for k, vals := range q {
		if k != "endpoint" {
			return fmt.Errorf("unknown query parameter %q (known: endpoint)", k)
		}
		if len(vals) > 1 {
			return fmt.Errorf("query parameter %q given %d times", k, len(vals))
		}
		if err := checkEndpoint(vals[0]); err != nil {
			return fmt.Errorf("endpoint: %v", err)
		}
		r.Endpoint = vals[0]
	}
	return nil
}

// objectLocation is the Location of a gcs or abs replica.
func (r *Replica) objectLocation() string {
	u := url.URL{Scheme: r.Type, Host: r.Bucket, Path: "/" + r.Path}
	if r.Path == "" {
		u.Path = ""
	}
	if r.AccountName != "" {
		u.User = url.User(r.AccountName)
	}
	if r.Endpoint != "" {
		u.RawQuery = "endpoint=" + strings.NewReplacer("%3A", ":", "%2F", "/").Replace(url.QueryEscape(r.Endpoint))
	}
	return u.String()
}
