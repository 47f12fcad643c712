package config

import (
	"bytes"
	"encoding/json"
	"time"

	"gopkg.in/yaml.v3"
)

// RedactedMarker is what a secret prints as.
const RedactedMarker = "REDACTED"

// The printable forms below mirror the file's keys. Every way of printing a
// Config, Replica or ConsulLease (%v, %+v, %#v, JSON, YAML, hclog) goes
// through them, so a secret cannot reach a log line by accident. The methods
// have value receivers so that printing a value, not only a pointer, is safe.

type printConfig struct {
	Addr            string       `yaml:"addr,omitempty" json:"addr,omitempty"`
	AccessKeyID     string       `yaml:"access-key-id,omitempty" json:"access-key-id,omitempty"`
	SecretAccessKey string       `yaml:"secret-access-key,omitempty" json:"secret-access-key,omitempty"`
	Logging         printLogging `yaml:"logging" json:"logging"`
	DBs             []printDB    `yaml:"dbs" json:"dbs"`
}

type printLogging struct {
	Level string `yaml:"level,omitempty" json:"level,omitempty"`
	Type  string `yaml:"type,omitempty" json:"type,omitempty"`
}

type printDB struct {
	Name                   string         `yaml:"name,omitempty" json:"name,omitempty"`
	Path                   string         `yaml:"path" json:"path"`
	Replicas               []printReplica `yaml:"replicas" json:"replicas"`
	MinCheckpointPageCount int            `yaml:"min-checkpoint-page-count,omitempty" json:"min-checkpoint-page-count,omitempty"`
	MaxCheckpointPageCount int            `yaml:"max-checkpoint-page-count,omitempty" json:"max-checkpoint-page-count,omitempty"`
	Levels                 []string       `yaml:"levels,omitempty" json:"levels,omitempty"`
	L0Retention            string         `yaml:"l0-retention,omitempty" json:"l0-retention,omitempty"`
	MaxShadowSize          int64          `yaml:"max-shadow-size,omitempty" json:"max-shadow-size,omitempty"`
	AdoptReplica           bool           `yaml:"adopt-replica,omitempty" json:"adopt-replica,omitempty"`
	Follower               *printFollower `yaml:"follower,omitempty" json:"follower,omitempty"`
	Dir                    string         `yaml:"dir,omitempty" json:"dir,omitempty"`
	Pattern                string         `yaml:"pattern,omitempty" json:"pattern,omitempty"`
	Lease                  *printLease    `yaml:"lease,omitempty" json:"lease,omitempty"`
}

type printReplica struct {
	Name                   string    `yaml:"name,omitempty" json:"name,omitempty"`
	Type                   string    `yaml:"type,omitempty" json:"type,omitempty"`
	Path                   string    `yaml:"path,omitempty" json:"path,omitempty"`
	Bucket                 string    `yaml:"bucket,omitempty" json:"bucket,omitempty"`
	Region                 string    `yaml:"region,omitempty" json:"region,omitempty"`
	Endpoint               string    `yaml:"endpoint,omitempty" json:"endpoint,omitempty"`
	ForcePathStyle         bool      `yaml:"force-path-style,omitempty" json:"force-path-style,omitempty"`
	SkipVerify             bool      `yaml:"skip-verify,omitempty" json:"skip-verify,omitempty"`
	AccessKeyID            string    `yaml:"access-key-id,omitempty" json:"access-key-id,omitempty"`
	SecretAccessKey        string    `yaml:"secret-access-key,omitempty" json:"secret-access-key,omitempty"`
	Host                   string    `yaml:"host,omitempty" json:"host,omitempty"`
	User                   string    `yaml:"user,omitempty" json:"user,omitempty"`
	Password               string    `yaml:"password,omitempty" json:"password,omitempty"`
	KeyPath                string    `yaml:"key-path,omitempty" json:"key-path,omitempty"`
	KnownHostsPath         string    `yaml:"known-hosts-path,omitempty" json:"known-hosts-path,omitempty"`
	AccountName            string    `yaml:"account-name,omitempty" json:"account-name,omitempty"`
	AccountKey             string    `yaml:"account-key,omitempty" json:"account-key,omitempty"`
	SyncInterval           string    `yaml:"sync-interval,omitempty" json:"sync-interval,omitempty"`
	SnapshotInterval       string    `yaml:"snapshot-interval,omitempty" json:"snapshot-interval,omitempty"`
	Retention              string    `yaml:"retention,omitempty" json:"retention,omitempty"`
	RetentionCheckInterval string    `yaml:"retention-check-interval,omitempty" json:"retention-check-interval,omitempty"`
	Age                    *printAge `yaml:"age,omitempty" json:"age,omitempty"`
	SSE                    string    `yaml:"sse,omitempty" json:"sse,omitempty"`
	SSEKMSKeyID            string    `yaml:"sse-kms-key-id,omitempty" json:"sse-kms-key-id,omitempty"`
	SSECustomerKey         string    `yaml:"sse-customer-key,omitempty" json:"sse-customer-key,omitempty"`
	SSECustomerKeyPath     string    `yaml:"sse-customer-key-path,omitempty" json:"sse-customer-key-path,omitempty"`
}

type printFollower struct {
	Replica      string `yaml:"replica,omitempty" json:"replica,omitempty"`
	PollInterval string `yaml:"poll-interval,omitempty" json:"poll-interval,omitempty"`
	AutoPromote  bool   `yaml:"auto-promote" json:"auto-promote"`
}

type printLease struct {
	Type          string       `yaml:"type,omitempty" json:"type,omitempty"`
	Node          string       `yaml:"node,omitempty" json:"node,omitempty"`
	AdvertiseURL  string       `yaml:"advertise-url,omitempty" json:"advertise-url,omitempty"`
	OnDemote      string       `yaml:"on-demote,omitempty" json:"on-demote,omitempty"`
	OnPromote     string       `yaml:"on-promote,omitempty" json:"on-promote,omitempty"`
	Consul        *printConsul `yaml:"consul,omitempty" json:"consul,omitempty"`
	StaticPrimary string       `yaml:"primary,omitempty" json:"primary,omitempty"`
}

type printConsul struct {
	Address     string `yaml:"address,omitempty" json:"address,omitempty"`
	Token       string `yaml:"token,omitempty" json:"token,omitempty"`
	KeyPrefix   string `yaml:"key-prefix,omitempty" json:"key-prefix,omitempty"`
	Mode        string `yaml:"mode,omitempty" json:"mode,omitempty"`
	TTL         string `yaml:"ttl,omitempty" json:"ttl,omitempty"`
	LockDelay   string `yaml:"lock-delay,omitempty" json:"lock-delay,omitempty"`
	HealthCheck string `yaml:"health-check,omitempty" json:"health-check,omitempty"`
}

func redact(s string) string {
	if s == "" {
		return ""
	}
	return RedactedMarker
}

func dur(d time.Duration) string {
	if d == 0 {
		return ""
	}
	return formatDuration(d)
}

func (c Config) printable() printConfig {
	p := printConfig{
		Addr:            c.Addr,
		AccessKeyID:     c.AccessKeyID,
		SecretAccessKey: redact(c.SecretAccessKey),
		Logging:         printLogging(c.Logging),
		DBs:             []printDB{},
	}
	for _, db := range c.DBs {
		if db != nil {
			p.DBs = append(p.DBs, db.printable())
		}
	}
	return p
}

func (db *DB) printable() printDB {
	p := printDB{
		Name:                   db.name,
		Path:                   db.Path,
		Replicas:               []printReplica{},
		MinCheckpointPageCount: db.MinCheckpointPageCount,
		MaxCheckpointPageCount: db.MaxCheckpointPageCount,
		L0Retention:            dur(db.L0Retention),
		MaxShadowSize:          db.MaxShadowSize,
		AdoptReplica:           db.AdoptReplica,
		Dir:                    db.Dir,
		Pattern:                db.Pattern,
	}
	for _, r := range db.Replicas {
		if r != nil {
			p.Replicas = append(p.Replicas, r.printable())
		}
	}
	for _, l := range db.Levels {
		p.Levels = append(p.Levels, formatDuration(l))
	}
	if f := db.Follower; f != nil {
		p.Follower = &printFollower{Replica: f.Replica, PollInterval: dur(f.PollInterval), AutoPromote: f.AutoPromote}
	}
	if l := db.Lease; l != nil {
		p.Lease = &printLease{Type: l.Type, Node: l.Node, AdvertiseURL: l.AdvertiseURL, OnDemote: l.OnDemote,
			OnPromote: l.OnPromote, StaticPrimary: l.StaticPrimary}
		if l.Consul != nil {
			pc := l.Consul.printable()
			p.Lease.Consul = &pc
		}
	}
	return p
}

func (r Replica) printable() printReplica {
	return printReplica{
		Name: r.Name, Type: r.Type, Path: r.Path, Bucket: r.Bucket, Region: r.Region, Endpoint: r.Endpoint,
		ForcePathStyle: r.ForcePathStyle, SkipVerify: r.SkipVerify,
		AccessKeyID: r.AccessKeyID, SecretAccessKey: redact(r.SecretAccessKey),
		Host: r.Host, User: r.User, Password: redact(r.Password), KeyPath: r.KeyPath, KnownHostsPath: r.KnownHostsPath,
		AccountName: r.AccountName, AccountKey: redact(r.AccountKey),
		SyncInterval: dur(r.SyncInterval), SnapshotInterval: dur(r.SnapshotInterval),
		Retention: dur(r.Retention), RetentionCheckInterval: dur(r.RetentionCheckInterval),
		Age: printableAge(r.Age), SSE: r.SSE, SSEKMSKeyID: redact(r.SSEKMSKeyID), SSECustomerKey: redact(r.SSECustomerKey),
		SSECustomerKeyPath: r.SSECustomerKeyPath,
	}
}

func (c ConsulLease) printable() printConsul {
	return printConsul{Address: c.Address, Token: redact(c.Token), KeyPrefix: c.KeyPrefix, Mode: c.Mode,
		TTL: dur(c.TTL), LockDelay: dur(c.LockDelay), HealthCheck: c.HealthCheck}
}

// Redacted renders the configuration as YAML in the file's own keys, with
// every default filled in and secret-access-key and the consul token shown
// as REDACTED: for -log-level debug and for people checking what Understudy
// understood. Without secrets it parses back to the same Config.
func (c Config) Redacted() string {
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(c.printable()); err != nil {
		return "config: " + err.Error() // cannot happen: plain strings, ints and bools
	}
	_ = enc.Close()
	return b.String()
}

// String is Redacted.
func (c Config) String() string { return c.Redacted() }

// GoString keeps %#v from printing secrets.
func (c Config) GoString() string { return c.Redacted() }

// MarshalJSON renders the redacted form.
func (c Config) MarshalJSON() ([]byte, error) { return json.Marshal(c.printable()) }

// MarshalYAML renders the redacted form.
func (c Config) MarshalYAML() (any, error) { return c.printable(), nil }

// String is the replica's name and store, e.g. `s3 (s3://bucket/db)`.
func (r Replica) String() string {
	if r.Name == "" {
		return r.Location()
	}
	return r.Name + " (" + r.Location() + ")"
}

// GoString keeps %#v from printing secrets.
func (r Replica) GoString() string { return r.String() }

// MarshalJSON renders the replica with its secret redacted.
func (r Replica) MarshalJSON() ([]byte, error) { return json.Marshal(r.printable()) }

// MarshalYAML renders the replica with its secret redacted.
func (r Replica) MarshalYAML() (any, error) { return r.printable(), nil }

// String shows the Consul settings with the token redacted.
func (c ConsulLease) String() string {
	b, _ := json.Marshal(c.printable())
	return string(b)
}

// GoString keeps %#v from printing the token.
func (c ConsulLease) GoString() string { return c.String() }

// MarshalJSON renders the settings with the token redacted.
func (c ConsulLease) MarshalJSON() ([]byte, error) { return json.Marshal(c.printable()) }

// MarshalYAML renders the settings with the token redacted.
func (c ConsulLease) MarshalYAML() (any, error) { return c.printable(), nil }
