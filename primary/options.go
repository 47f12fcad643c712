// Package primary is the WAL shipper that runs next to the application
// writing a SQLite database: it pins the WAL, reads every committed frame,
// turns each sync into one L0 LTX file (one TXID), uploads it create-only to
// every replica, owns the checkpoints, takes snapshots, compacts and enforces
// retention, and halts the application's writes when another writer turns
// out to own the history (storage.ErrExists).
//
// SQLITE-NOTES.md ("Reading the WAL on the primary", "Noticing commits") is
// the specification of the parts that touch SQLite; comments cite it.
//
// Life cycle: New validates the options; Open connects, switches the
// database to WAL mode, pins the WAL and decides how to continue the
// history in the stores (continue, ship the WAL written while we were down,
// or write a full image as the next TXID); Run does the work until its
// context ends; Sync ships everything committed (the final sync on
// shutdown, after Run returned); Close releases the pin and any write halt.
//
// Layout of the work: every sync writes ONE L0 file (one TXID) into a
// shadow directory beside the database (".<name>-understudy", flock-ed so
// that only one shipper runs per database); each replica uploads the local
// files it does not have yet, in order, create-only, so a slow or failing
// replica never holds back the others and catches up with byte-identical
// files. A local file is deleted once every replica has uploaded it and
// compacted it into L1, or when the local files pass MaxShadowSize (the
// oldest go first; see DefaultMaxShadowSize). A replica whose catch-up
// files are gone gets a level-9 snapshot at the head instead.
package primary

import (
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/config"
	"github.com/understudy-db/understudy/internal/sqlitex"
	"github.com/understudy-db/understudy/internal/storage"
)

// Defaults for options left zero. Those a config file can set are the
// config package's, so that a config without the key and Options without the
// field cannot drift apart (config sits below the roles and cannot import them).
const (
	DefaultSyncInterval           = config.DefaultSyncInterval
	DefaultSnapshotInterval       = config.DefaultSnapshotInterval
	DefaultRetention              = config.DefaultRetention
	DefaultRetentionCheckInterval = config.DefaultRetentionCheckInterval
	DefaultMinCheckpointPageCount = config.DefaultMinCheckpointPageCount
	DefaultMaxCheckpointPageCount = config.DefaultMaxCheckpointPageCount
	DefaultL0Retention            = config.DefaultL0Retention
	// DefaultPollInterval is how often data_version is polled between inotify
	// wake-ups (inotify fires before the commit is visible in ~25% of events).
	DefaultPollInterval = 20 * time.Millisecond
	// DefaultMonitorInterval is how often the shipper looks at the WAL even
	// without a noticed commit (inode changes, checkpoints, snapshots due).
	DefaultMonitorInterval = 1 * time.Second
	// DefaultMaxShadowSize is the floor of the default bound on the L0
	// files kept in the shadow directory for replicas that have not
	// uploaded (or compacted) them yet: with MaxShadowSize 0 the bound is
	// the larger of the database's size and this. Past the database's size
	// a lagging replica catches up more cheaply with one snapshot than with
	// the backlog, so the oldest files are dropped and the replica gets a
	// snapshot when it is back. The 64 MiB floor keeps a small database's
	// catch-up files through a short outage of a store (minutes of a busy
	// application), and is small next to any disk a database lives on.
	DefaultMaxShadowSize = 64 << 20
)

// DefaultLevels are the compaction intervals of L1, L2 and L3
// (config.DefaultLevels).
var DefaultLevels = config.DefaultLevels

// ErrFenced means a create-only upload found its key taken: another writer
// owns the replica history. The application's writes are held until Close.
var ErrFenced = errors.New("another writer owns the replica history (create-only upload found the object present)")

// Clock tells the time; tests inject their own.
type Clock interface{ Now() time.Time }

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

// ReplicaOptions configure one replica store of the database.
type ReplicaOptions struct {
	Name                   string
	Location               string // the replica's URL, for messages ("" unknown)
	Client                 storage.Client
	SyncInterval           time.Duration // how often new L0 files are uploaded (0 = default)
	SnapshotInterval       time.Duration // how often a level-9 snapshot is written (0 = default)
	Retention              time.Duration // how far back restores must remain possible (0 = default)
	RetentionCheckInterval time.Duration // how often retention runs (0 = default)
	// Fencing names what keeps a second writer out of this replica's
	// history (storage.ChooseFencing), for /status; "" where not known.
	Fencing storage.Fencing
}

// Options configure a DB.
type Options struct {
	Path     string // database path
	Node     string // node name written into every object's metadata
	Replicas []ReplicaOptions

	MinCheckpointPageCount int             // PASSIVE checkpoint from this many WAL frames
	MaxCheckpointPageCount int             // quiesced WAL restart from this many WAL frames
	Levels                 []time.Duration // compaction intervals of L1, L2, ... (nil = DefaultLevels)
	L0Retention            time.Duration   // how long L0 files stay after compaction into L1

	// ClaimedTXID is set by a node that has just claimed this TXID to take
	// the history over (a promotion): the history ends at the claim. Store
	// files above it are uploads of the deposed writer that outran a missing
	// one; no chain reaches them, and this writer replaces them as it gets
	// to their keys (see supersedes).
	ClaimedTXID ltx.TXID

	// FencingToken returns the lease's fencing token written with every
	// upload; nil means 0 (no lease).
	FencingToken func() uint64
	// LeaseSafe reports whether the lease allows acting as primary at this
	// moment (lease.Lease.Safe); nil means always (no lease). Asked before
	// every sync and before the shipper lets go of the write lock it took:
	// past the safe window nothing more is uploaded and the lock is kept,
	// so the application's writes stay held from then on.
	LeaseSafe func() bool
	// Locks, if set, passes the connection that holds the database's write
	// lock between the roles of a node (sqlitex.LockSlot): Open takes a lock
	// found there as its writer and lets it go only once the database is
	// open to ship (a promoted follower's: the application cannot write
	// between the follower's last apply and the shipper), and Detach puts
	// the halted writer there, still holding the lock, for the follower the
	// node becomes.
	Locks *sqlitex.LockSlot

	PollInterval time.Duration // data_version poll (0 = DefaultPollInterval)
	// Wake, when set, replaces the database's own inotify watch of its
	// directory: a receive on it (the owner saw the -wal written) makes
	// the shipper look for a commit at once. A process with thousands of
	// databases has one watch per directory instead of one per database
	// (inotify instances are limited to 128 per user by default).
	Wake            <-chan struct{}
	MonitorInterval time.Duration // idle check interval (0 = DefaultMonitorInterval)

	// ShadowDir holds L0 files not yet on every replica, the local
	// position and the database identity; "" = ".<db name>-understudy"
	// beside the file the path resolves to (dbid.ShadowDir).
	ShadowDir string
	// AdoptReplica lets the database take over a replica that holds
	// another database's history (its objects carry another database
	// identity), which is refused otherwise: the operator's explicit
	// "this database replaces that history".
	AdoptReplica bool
	// MaxShadowSize bounds, in bytes, the L0 files kept in the shadow
	// directory (the newest file is always kept): past it the oldest are
	// dropped, and a replica that still needed them gets a snapshot when
	// it is back. 0 = the larger of the database's size and
	// DefaultMaxShadowSize. Queued snapshots are not counted.
	MaxShadowSize int64

	Logger     hclog.Logger          // nil = no logging
	Registerer prometheus.Registerer // metrics; nil = none
	// MetricsLabel is the db label of this database's metric series ("" =
	// Path). The databases of a directory share one (the entry's), so
	// that ten thousand of them make one series each, not ten thousand:
	// counters add up, gauges show the last writer's value.
	MetricsLabel string
	Clock        Clock // nil = real time
}

// withDefaults validates o and fills in defaults.
func (o Options) withDefaults() (Options, error) {
	if o.Path == "" {
		return o, errors.New("primary: database path is empty; set the db's path")
	}
	abs, err := filepath.Abs(o.Path)
	if err != nil {
		return o, fmt.Errorf("primary: database path %s: %w", o.Path, err)
	}
	o.Path = abs
	if len(o.Replicas) == 0 {
		return o, fmt.Errorf("primary: database %s has no replicas; configure at least one", o.Path)
	}
	if o.Node == "" {
		return o, fmt.Errorf("primary: database %s: node name is empty", o.Path)
	}
	names := map[string]bool{}
	for i := range o.Replicas {
		r := &o.Replicas[i]
		if r.Name == "" {
			r.Name = fmt.Sprintf("replica%d", i+1)
		}
		if names[r.Name] {
			return o, fmt.Errorf("primary: database %s: two replicas named %q; give each a unique name", o.Path, r.Name)
		}
		names[r.Name] = true
		if r.Client == nil {
			return o, fmt.Errorf("primary: database %s: replica %q has no storage client", o.Path, r.Name)
		}
		if r.SyncInterval <= 0 {
			r.SyncInterval = DefaultSyncInterval
		}
		if r.SnapshotInterval <= 0 {
			r.SnapshotInterval = DefaultSnapshotInterval
		}
		if r.Retention <= 0 {
			r.Retention = DefaultRetention
		}
		if r.RetentionCheckInterval <= 0 {
			r.RetentionCheckInterval = DefaultRetentionCheckInterval
		}
	}
	if o.MinCheckpointPageCount <= 0 {
		o.MinCheckpointPageCount = DefaultMinCheckpointPageCount
	}
	if o.MaxCheckpointPageCount <= 0 {
		o.MaxCheckpointPageCount = DefaultMaxCheckpointPageCount
	}
	if o.MaxCheckpointPageCount < o.MinCheckpointPageCount {
		return o, fmt.Errorf("primary: database %s: max-checkpoint-page-count %d is below min-checkpoint-page-count %d",
			o.Path, o.MaxCheckpointPageCount, o.MinCheckpointPageCount)
	}
	if o.Levels == nil {
		o.Levels = DefaultLevels
	}
	for i, d := range o.Levels {
		if d <= 0 {
			return o, fmt.Errorf("primary: database %s: compaction interval of level %d must be positive", o.Path, i+1)
		}
	}
	if len(o.Levels) > 8 {
		return o, fmt.Errorf("primary: database %s: at most 8 compaction levels (level 9 holds snapshots)", o.Path)
	}
	if o.L0Retention <= 0 {
		o.L0Retention = DefaultL0Retention
	}
	if o.FencingToken == nil {
		o.FencingToken = func() uint64 { return 0 }
	}
	if o.PollInterval <= 0 {
		o.PollInterval = DefaultPollInterval
	}
	if o.MonitorInterval <= 0 {
		o.MonitorInterval = DefaultMonitorInterval
	}
	if o.MaxShadowSize < 0 {
		return o, fmt.Errorf("primary: database %s: max shadow size %d is negative; use 0 for the default", o.Path, o.MaxShadowSize)
	}
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	if o.Clock == nil {
		o.Clock = realClock{}
	}
	return o, nil
}

// minSyncInterval is the shortest replica sync interval: how often the
// shipper cuts a new TXID while commits keep coming.
func (o Options) minSyncInterval() time.Duration {
	d := o.Replicas[0].SyncInterval
	for _, r := range o.Replicas[1:] {
		d = min(d, r.SyncInterval)
	}
	return d
}

// metricsDB is the db label of the database's metric series.
func (d *DB) metricsDB() string {
	if d.opts.MetricsLabel != "" {
		return d.opts.MetricsLabel
	}
	return d.opts.Path
}
