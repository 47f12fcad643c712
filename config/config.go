// Package config reads Understudy's YAML configuration. The keys follow
// Litestream's (dbs, replicas, sync-interval, retention, ...) so a Litestream
// user feels at home; follower: and lease: sections add the standby roles.
//
// Every key, with its default (a key without one is shown with an example):
//
//	addr: 127.0.0.1:9090             # /metrics, /healthz, /readyz, /status (no default: without addr nothing is served, as in Litestream)
//	access-key-id: AKIA...           # for s3 replicas that set neither key
//	secret-access-key: ${AWS_SECRET_ACCESS_KEY}
//	logging: {level: info, type: text}
//	dbs:
//	  - path: /var/lib/app/app.db    # relative: to the current directory; ~ = home
//	    name: app                    # for logs, metrics, lease keys (default: base name of path)
//	    min-checkpoint-page-count: 1000
//	    max-checkpoint-page-count: 10000
//	    levels: [30s, 5m, 1h]        # compaction intervals of L1, L2, L3 (up to L8)
//	    l0-retention: 5m
//	    max-shadow-size: 1GiB        # L0 files kept beside the db for lagging replicas (default: the db's size, at least 64MiB)
//	    adopt-replica: false         # take over a replica holding another database's history (default: refuse it)
//	    replicas:                    # or Litestream's single replica: {...}
//	      - url: s3://bucket/app?endpoint=http://127.0.0.1:7070&region=us-east-1&force-path-style=true&skip-verify=false
//	        # or: type: s3, bucket, path, region, endpoint, force-path-style, skip-verify
//	        name: s3                 # default: the type, or replica<N> when two share one
//	        access-key-id: ...
//	        secret-access-key: ...
//	        sync-interval: 1s
//	        snapshot-interval: 24h
//	        retention: 24h
//	        retention-check-interval: 1h
//	        conditional-writes: require   # s3: a store without create-only writes (B2, old Ceph RGW) is refused; if-supported runs on it with weaker fencing (README)
//	        # age: {recipients: [age1...], identities: [AGE-SECRET-KEY-1...]}   # client-side encryption (see encryption.go)
//	        sse: AES256              # s3: server-side encryption, or aws:kms with sse-kms-key-id; or sse-customer-key (SSE-C)
//	      - url: file:///var/backups/app    # or a plain directory path, or type: file + path
//	      - url: sftp://backup@host.example:22/srv/backups/app  # or type: sftp, host, user, path
//	        key-path: ~/.ssh/id_ed25519     # and/or password: ${SFTP_PASSWORD}
//	        known-hosts-path: ~/.ssh/known_hosts   # the server's host key must be in it
//	      # url: gcs://bucket/app         # or type: gcs, bucket, path; endpoint: an emulator's URL
//	      # url: abs://account@container/app  # or type: abs, account-name, bucket (the container), path, endpoint
//	      #   account-key: ...            # default: $LITESTREAM_AZURE_ACCOUNT_KEY
//	    follower:
//	      replica: s3                # default: the first replica
//	      poll-interval: 1s          # at least 50ms
//	      auto-promote: false        # needs a consul lease
//	    lease:
//	      type: consul               # or static (default static when only primary: is set)
//	      node: host-a               # default: the host name
//	      advertise-url: http://host-a:9090
//	      on-demote: halt            # halt, exit or follow
//	      on-promote: /usr/local/bin/promoted
//	      consul:                    # empty values fall back to CONSUL_HTTP_*
//	        address: 127.0.0.1:8500
//	        token: ...
//	        key-prefix: understudy/
//	        mode: kv                 # kv (a check-and-set key, renewed every ttl/4) or session
//	        ttl: 2s                  # kv: 2s by default, at least 1s; session: 10s, at least 10s
//	        # lock-delay: 1s         # mode session only (an error in mode kv)
//	        health-check: service:app # a local agent check: critical = step down
//	      # primary: host-a          # type static only: the node that is primary
//
// $VAR and ${VAR} are expanded in the whole file unless -no-expand-env; the
// ones that expand to nothing outside comments are listed (EmptyEnv) and
// named in the errors about their keys.
// Durations are Go durations (500ms, 10s, 5m, 24h). Sizes are bytes, or a
// number with a unit: kB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB
// (powers of 1024). Unknown keys are errors,
// and every error names the file, line and key (see Error).
package config

import (
	"path/filepath"
	"time"
)

// Defaults for keys a config may leave out. The roles take theirs from here
// (primary.DefaultSyncInterval is DefaultSyncInterval, ...), so that a config
// without the key and a role's options without the field cannot drift apart.
// config imports no role: it sits at the bottom of the dependency order.
const (
	DefaultPath                   = "/etc/understudy.yml"
	DefaultSyncInterval           = 1 * time.Second
	DefaultSnapshotInterval       = 24 * time.Hour
	DefaultRetention              = 24 * time.Hour
	DefaultRetentionCheckInterval = 1 * time.Hour
	DefaultMinCheckpointPageCount = 1000
	DefaultMaxCheckpointPageCount = 10000
	DefaultL0Retention            = 5 * time.Minute
	// DefaultPollInterval is the follower's poll-interval (not the
	// primary's data_version poll, primary.DefaultPollInterval).
	DefaultPollInterval = 1 * time.Second
	MinPollInterval     = 50 * time.Millisecond
	// DefaultDiscoverInterval is the follower's discover-interval on a
	// dir: entry: a LIST of the whole prefix this often finds new
	// databases, at a cost that does not grow with the poll rate.
	DefaultDiscoverInterval = 30 * time.Second
	MinDiscoverInterval     = time.Second

	DefaultLogLevel = "info"
	DefaultLogType  = "text"

	DefaultLeaseType       = "consul"
	DefaultOnDemote        = "halt"
	DefaultConsulKeyPrefix = "understudy/"
	DefaultConsulTTL       = 10 * time.Second // mode session
	MinConsulTTL           = 10 * time.Second // Consul refuses a shorter session TTL
	DefaultConsulLockDelay = 1 * time.Second

	// The consul lease's modes (lease.consul.mode); kv is the default.
	ConsulModeSession  = "session"
	ConsulModeKV       = "kv"
	DefaultConsulMode  = ConsulModeKV
	DefaultConsulKVTTL = 2 * time.Second // see lease.DefaultKVTTL
	MinConsulKVTTL     = 1 * time.Second

	// The replica's conditional-writes values: a store without create-only
	// writes is refused (require, the default) or run on (if-supported).
	ConditionalWritesRequire     = "require"
	ConditionalWritesIfSupported = "if-supported"
	DefaultConditionalWrites     = ConditionalWritesRequire

	// MaxLevels is how many compaction levels (L1..L8) fit below the
	// snapshot level 9 of Litestream's layout.
	MaxLevels = 8
)

// DefaultLevels are the compaction intervals of L1, L2 and L3
// (applyDefaults gives each db a copy).
var DefaultLevels = []time.Duration{30 * time.Second, 5 * time.Minute, time.Hour}

// Config is a whole configuration file.
type Config struct {
	Addr            string // address for /metrics and health endpoints ("" = nothing is served)
	AccessKeyID     string // default S3 credentials for replicas that have none
	SecretAccessKey string
	Logging         Logging
	DBs             []*DB

	emptyEnv     []EnvRef            // see EmptyEnv
	replicaPaths map[*Replica]string // each replica's path in the file, for EmptyEnvOf
}

// Logging is the logging: section.
type Logging struct {
	Level string // trace, debug, info, warn, error
	Type  string // text or json
}

// DB is one database under replication.
type DB struct {
	// Path is the absolute path of the SQLite file. A relative path in the
	// file is resolved against the current directory of the process (as
	// Litestream does), and a leading ~ against the home directory.
	Path                   string
	Replicas               []*Replica
	MinCheckpointPageCount int
	MaxCheckpointPageCount int
	Levels                 []time.Duration // compaction interval of L1, L2, ... (L0 is every sync)
	L0Retention            time.Duration
	// MaxShadowSize bounds, in bytes, the L0 files the primary keeps in the
	// shadow directory beside the database until every replica has them;
	// past it the oldest are dropped and a replica that still needed them
	// gets a snapshot. 0 (not set) leaves the default to the primary: the
	// larger of the database's size and 64 MiB, which depends on the
	// database and so cannot be filled in here.
	MaxShadowSize int64
	// AdoptReplica lets the primary take over a replica that holds another
	// database's history (refused otherwise): adopt-replica: true.
	AdoptReplica bool
	Follower     *Follower // nil when absent
	Lease        *Lease    // nil when absent

	// A directory of databases (dir: instead of path:; see dir.go): Dir
	// is absolute, Pattern a glob on base names (DefaultPattern when
	// left out), Recursive looks in subdirectories, Watch picks up new
	// and removed databases as they come. PerDBMetrics gives each
	// database its own metric series instead of one for the entry.
	// IdleAfter is how long a database must be quiet before it is closed
	// until its next write. MaxOpen caps how many of its databases are
	// open at once (0 = no cap).
	Dir          string
	Pattern      string
	Recursive    bool
	Watch        bool
	PerDBMetrics bool
	IdleAfter    time.Duration // 0 = the fleet's default
	MaxOpen      int

	name string // the optional name: key; see Name
}

// Replica is one replica store of a database.
type Replica struct {
	Name string // defaults to the type ("s3", "file") or "replica<N>" when ambiguous
	Type string // "s3", "file", "gcs" or "abs"

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

	// sftp (Path is the directory on the server)
	Host           string // HOST or HOST:PORT
	User           string
	Password       string // secret
	KeyPath        string // private key file on this machine
	KnownHostsPath string // "" = ~/.ssh/known_hosts

	// abs (Bucket is the container)
	AccountName string
	AccountKey  string // "" = $LITESTREAM_AZURE_ACCOUNT_KEY

	SyncInterval           time.Duration
	SnapshotInterval       time.Duration
	Retention              time.Duration
	RetentionCheckInterval time.Duration

	// Age encrypts the replica's objects on the client (nil: not
	// encrypted); see encryption.go.
	Age *Age
	// S3 server-side encryption: SSE is "", AES256 or aws:kms (with
	// SSEKMSKeyID, sensitive); SSECustomerKey is an SSE-C key in base64
	// (secret), sent on every PUT and GET.
	SSE            string
	SSEKMSKeyID    string
	SSECustomerKey string
	// SSECustomerKeyPath is a file holding the SSE-C key (read when the
	// client is built), instead of SSECustomerKey.
	SSECustomerKeyPath string

	// Required makes a replica the create-only probe refuses at start-up
	// stop the database; without it the database's other replicas go on.
	Required bool

	// ConditionalWrites says what to do with an s3 store that does not
	// honour create-only writes (If-None-Match: *): ConditionalWritesRequire
	// refuses it (""), ConditionalWritesIfSupported runs on it with plain
	// writes checked before and after (see AcceptsPlainWrites).
	ConditionalWrites string
}

// AcceptsPlainWrites reports whether the replica runs on a store without
// create-only writes (conditional-writes: if-supported): uploads are then
// plain PUTs read back after, fenced by the lease and the bucket's object
// versions where there are some, and readers resolve versions.
func (r *Replica) AcceptsPlainWrites() bool {
	return r.ConditionalWrites == ConditionalWritesIfSupported
}

// Follower is a db's follower: section.
type Follower struct {
	Replica      string // name of the replica to follow ("" = the only/first one)
	PollInterval time.Duration
	AutoPromote  bool
	// DiscoverInterval is how often the follower of a dir: entry lists the
	// prefix to find databases that appeared or vanished (one listing of
	// the whole prefix, whatever its size).
	DiscoverInterval time.Duration
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
	Mode        string // kv or session; "" = DefaultConsulMode (kv)
	TTL         time.Duration
	LockDelay   time.Duration
	HealthCheck string
}

// Name is a short name for the database in logs, metrics and lease keys: the
// db's name: key when set, else the base name of its path ("app.db").
func (db *DB) Name() string {
	if db.name != "" {
		return db.name
	}
	if db.Dir != "" {
		return filepath.Base(db.Dir)
	}
	return filepath.Base(db.Path)
}

// Replica returns the db's replica with the given name, or nil.
func (db *DB) Replica(name string) *Replica {
	for _, r := range db.Replicas {
		if r.Name == name {
			return r
		}
	}
	return nil
}

// DB returns the configured database at path (resolved like the path: key:
// relative to the current directory, ~ to the home directory), or nil.
func (c *Config) DB(path string) *DB {
	abs, err := absPath(path)
	if err != nil {
		return nil
	}
	for _, db := range c.DBs {
		if db.Path == abs {
			return db
		}
	}
	return nil
}
