// Package config reads Understudy's YAML configuration. The keys follow
// Litestream's (dbs, replicas, sync-interval, retention, ...) so a Litestream
// user feels at home; follower: and lease: sections add the standby roles.
package config

import "time"

// Defaults for keys a config may leave out.
const (
	DefaultPath                   = "/etc/understudy.yml"
	DefaultSyncInterval           = 1 * time.Second
	DefaultSnapshotInterval       = 24 * time.Hour
	DefaultRetention              = 24 * time.Hour
	DefaultRetentionCheckInterval = 1 * time.Hour
	DefaultMinCheckpointPageCount = 1000
	DefaultMaxCheckpointPageCount = 10000
	DefaultL0Retention            = 5 * time.Minute
	DefaultPollInterval           = 1 * time.Second
	MinPollInterval               = 50 * time.Millisecond
)

// DefaultLevels are the compaction intervals of L1, L2 and L3.
var DefaultLevels = []time.Duration{30 * time.Second, 5 * time.Minute, time.Hour}

// Config is a whole configuration file.
type Config struct {
	Addr            string // address for /metrics and health endpoints ("" = off)
	AccessKeyID     string // default S3 credentials for replicas that have none
	SecretAccessKey string
	Logging         Logging
	DBs             []*DB
}

// Logging is the logging: section.
type Logging struct {
	Level string // trace, debug, info, warn, error
	Type  string // text or json
}

// DB is one database under replication.
type DB struct {
	Path                   string // absolute path of the SQLite file
	Replicas               []*Replica
	MinCheckpointPageCount int
	MaxCheckpointPageCount int
	Levels                 []time.Duration // compaction interval of L1, L2, ... (L0 is every sync)
	L0Retention            time.Duration
	Follower               *Follower // nil when absent
	Lease                  *Lease    // nil when absent
}

// Replica is one replica store of a database.
type Replica struct {
	Name string // defaults to the type ("s3", "file") or "replica<N>" when ambiguous
	Type string // "s3" or "file"

	// file
	Path string // directory (file) or key prefix inside the bucket (s3)

	// s3
	Bucket          string
	Region          string
	Endpoint        string
	ForcePathStyle  bool
	SkipVerify      bool
	AccessKeyID     string
	SecretAccessKey string

	SyncInterval           time.Duration
	SnapshotInterval       time.Duration
	Retention              time.Duration
	RetentionCheckInterval time.Duration
}

// Follower is a db's follower: section.
type Follower struct {
	Replica      string // name of the replica to follow ("" = the only/first one)
	PollInterval time.Duration
	AutoPromote  bool
}

// Lease is a db's lease: section (filled by the lease issue).
type Lease struct {
	Type          string // "consul" or "static"
	Node          string
	AdvertiseURL  string
	OnDemote      string // halt, exit, follow
	OnPromote     string // command run after promotion
	Consul        *ConsulLease
	StaticPrimary string // node name of the primary for type static
}

// ConsulLease holds Consul settings; empty values fall back to CONSUL_HTTP_*.
type ConsulLease struct {
	Address     string
	Token       string
	KeyPrefix   string
	TTL         time.Duration
	LockDelay   time.Duration
	HealthCheck string
}
