package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/urfave/cli/v2"

	"github.com/understudy-db/understudy/config"
	"github.com/understudy-db/understudy/fleet"
	"github.com/understudy-db/understudy/follower"
	"github.com/understudy-db/understudy/internal/replicaclient"
	"github.com/understudy-db/understudy/internal/storage"
	"github.com/understudy-db/understudy/lease"
	"github.com/understudy-db/understudy/primary"
	"github.com/understudy-db/understudy/promote"
)

// dirRescanInterval is how often a dir: entry under a lease with watch:
// and without follower: looks for new databases (with follower: its
// discover-interval): one walk of the directory and, for follow, one
// listing of the store (storage.FindDatabases). SIGHUP looks at once.
const dirRescanInterval = 10 * time.Second

// dirLease runs the databases of a dir: entry with lease: as one
// promote.Node each, every database on its own: its lease key is
// <key-prefix><entry name>/<path relative to dir>/primary, its replica the
// entry's replica plus that path, its local file dir plus that path (the
// fleet's rule, config.DB.Database). Which node is primary is decided per
// database, so one can be handed over while the others stay.
//
// replicate runs the databases the directory holds (fleet.Databases);
// follow also those the store holds that the directory lacks (one listing,
// storage.FindDatabases), so a standby with an empty directory follows
// every database and can take any over. A database found later (SIGHUP,
// every follower.discover-interval, or dirRescanInterval with watch:)
// gets its node then; a node is
// never stopped before the process is, even when its file goes: a
// follower's file may be mid-bootstrap, and a primary's final sync and
// release happen at the shutdown.
type dirLease struct {
	entry     *config.DB
	asPrimary bool
	log       hclog.Logger
	newNode   func(ctx context.Context, rel string) (*promote.Node, error)
	store     storage.KeyReader // the followed replica's prefix
	onFatal   func(error)       // an on-demote exit: the process stops

	rescan chan struct{}
	mu     sync.Mutex
	nodes  map[string]*promote.Node // by path relative to the directory
	failed map[string]error         // nodes that stopped, or could not be built
	warned bool                     // warnCost said so
	// services maps the Consul service names of the running nodes to
	// their paths.
	services map[string]string
	// requests counts each database's lease requests to Consul (by rel).
	requests map[string]*atomic.Uint64
	wg       sync.WaitGroup
}

// Rescan asks Run to look for new databases (SIGHUP).
func (d *dirLease) Rescan() {
	select {
	case d.rescan <- struct{}{}:
	default:
	}
}

// Dir is the entry's directory.
func (d *dirLease) Dir() string { return d.entry.Dir }

// find returns the databases of the entry: the directory's, and for a
// follower the store's too.
func (d *dirLease) find(ctx context.Context) ([]string, error) {
	rels, err := fleet.Databases(d.entry, d.log)
	if err != nil {
		return nil, err
	}
	if d.asPrimary {
		return rels, nil
	}
	stored, err := storage.FindDatabases(ctx, d.store)
	if err != nil {
		return nil, fmt.Errorf("directory %s: listing the databases of the store: %w", d.entry.Dir, err)
	}
	for _, rel := range stored {
		if rel == "" {
			d.log.Warn("the store holds a database at the prefix itself, not below it: not followed (a path: entry's replica?)")
			continue
		}
		if !filepath.IsLocal(filepath.FromSlash(rel)) || !matchesPattern(d.entry, rel) {
			continue
		}
		rels = append(rels, rel)
	}
	slices.Sort(rels)
	return slices.Compact(rels), nil
}

// matchesPattern: a database of the store is one of the entry's only if a
// scan of the directory would take its file (pattern, recursive:).
func matchesPattern(entry *config.DB, rel string) bool {
	if !entry.Recursive && strings.Contains(rel, "/") {
		return false
	}
	ok, _ := filepath.Match(entry.Pattern, path.Base(rel))
	return ok
}

// start builds and runs the nodes of the databases not running yet. It
// returns how many databases the entry has.
func (d *dirLease) start(ctx context.Context) (int, error) {
	rels, err := d.find(ctx)
	if err != nil {
		return 0, err
	}
	for _, rel := range rels {
		d.mu.Lock()
		_, running := d.nodes[rel]
		d.mu.Unlock()
		if running {
			continue
		}
		if !d.asPrimary {
			// A database only the store holds is bootstrapped at its path.
			if err := os.MkdirAll(filepath.Dir(filepath.Join(d.entry.Dir, filepath.FromSlash(rel))), 0o755); err != nil {
				d.fail(rel, fmt.Errorf("database %s: %w", rel, err))
				continue
			}
		}
		// Two paths can map to one Consul service name (eu/a.db and
		// eu-a.db both give understudy-tenants-eu-a-db): their
		// registrations would overwrite each other and DNS would name
		// the wrong writer, so the second is refused.
		svc := promote.ServiceName(dirNodeName(d.entry, rel))
		d.mu.Lock()
		other, taken := d.services[svc]
		d.mu.Unlock()
		if taken && other != rel && d.entry.Lease.Type == lease.TypeConsul {
			d.fail(rel, fmt.Errorf("database %s: its Consul service name %s is the one of %s (names are made DNS-safe): rename one of the two files", rel, svc, other))
			continue
		}
		n, err := d.newNode(ctx, rel)
		if err != nil {
			d.fail(rel, err)
			continue
		}
		d.mu.Lock()
		d.services[svc] = rel
		d.nodes[rel] = n
		delete(d.failed, rel)
		d.mu.Unlock()
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			err := n.Run(ctx, d.asPrimary)
			switch {
			case errors.Is(err, promote.ErrExitOnDemote):
				d.onFatal(err) // on-demote: exit stops the process
			case err != nil:
				// One database's failure stops it alone: the others go on.
				d.fail(rel, err)
			}
		}()
	}
	return len(rels), nil
}

func (d *dirLease) fail(rel string, err error) {
	d.log.Error("database stopped; the directory's others go on (fix it and restart, or SIGHUP to retry one that never started)", "db", rel, "error", err)
	d.mu.Lock()
	d.failed[rel] = err
	d.mu.Unlock()
}

// kvWritesWarn is the rate of Consul KV writes (renewals of every
// database's lease, mode kv) above which a directory warns: each is a Raft
// commit on the Consul servers, shared with everything else they serve.
const kvWritesWarn = 200

// warnCost logs, once, when the directory's leases renew at more than
// kvWritesWarn writes a second in all.
func (d *dirLease) warnCost(n int) {
	l := d.entry.Lease
	if d.warned || l.Type != lease.TypeConsul || l.Consul.Mode != lease.ModeKV {
		return
	}
	ttl := l.Consul.TTL
	if ttl <= 0 {
		ttl = lease.DefaultKVTTL
	}
	perDB := float64(time.Second) / float64(lease.KVRenewInterval(ttl))
	if rate := float64(n) * perDB; rate > kvWritesWarn {
		d.warned = true
		d.log.Warn("the directory's leases cost many Consul writes: each primary renews each database's lease "+
			"every ttl/4 in mode kv, and each follower reads it as often; consider mode: session (a renewal every few seconds) or a longer ttl",
			"dir", d.entry.Dir, "databases", n, "kv_writes_per_second", rate, "ttl", ttl)
	}
}

// Run starts a node per database (the first look must succeed), looks for
// new ones on Rescan (and periodically, see dirRescanInterval) and returns
// once ctx ends and every node has stopped.
func (d *dirLease) Run(ctx context.Context, first int) {
	var tick <-chan time.Time
	every := time.Duration(0)
	if f := d.entry.Follower; f != nil && f.DiscoverInterval > 0 {
		every = f.DiscoverInterval
	} else if d.entry.Watch {
		every = dirRescanInterval
	}
	if every > 0 {
		t := time.NewTicker(every)
		defer t.Stop()
		tick = t.C
	}
	d.log.Info("running a node per database of the directory", "dir", d.entry.Dir, "databases", first, "start_as_primary", d.asPrimary)
	d.warnCost(first)
	for {
		select {
		case <-ctx.Done():
			d.wg.Wait()
			return
		case <-d.rescan:
		case <-tick:
		}
		n, err := d.start(ctx)
		if err != nil {
			d.log.Error("rescan", "error", err)
			continue
		}
		d.log.Debug("rescanned directory", "databases", n)
		d.warnCost(n)
	}
}

// all returns the running nodes, in the order of their paths.
func (d *dirLease) all() []*promote.Node {
	d.mu.Lock()
	defer d.mu.Unlock()
	rels := make([]string, 0, len(d.nodes))
	for rel := range d.nodes {
		rels = append(rels, rel)
	}
	slices.Sort(rels)
	out := make([]*promote.Node, 0, len(rels))
	for _, rel := range rels {
		out = append(out, d.nodes[rel])
	}
	return out
}

// leaseRequests returns the Consul requests of the lease of each running
// database (by node name), and their sum.
func (d *dirLease) leaseRequests() (map[string]uint64, uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make(map[string]uint64, len(d.requests))
	var sum uint64
	for rel, n := range d.requests {
		v := n.Load()
		out[dirNodeName(d.entry, rel)] = v
		sum += v
	}
	return out, sum
}

// registerMetrics adds the directory's lease cost: one series for the
// whole directory, however many databases it has.
func (d *dirLease) registerMetrics(reg prometheus.Registerer) {
	if reg == nil {
		return
	}
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Namespace: "understudy", Subsystem: "dir", Name: "lease_consul_requests_total",
		Help:        "HTTP requests the leases of a dir: entry's databases sent to Consul (renewals, reads, watches), summed over its databases.",
		ConstLabels: prometheus.Labels{"dir": d.entry.Dir},
	}, func() float64 { _, sum := d.leaseRequests(); return float64(sum) }))
}

// byRel returns the node of the database at rel (its path relative to the
// directory, or its absolute path).
func (d *dirLease) byRel(name string) *promote.Node {
	if filepath.IsAbs(name) {
		rel, err := filepath.Rel(d.entry.Dir, name)
		if err != nil || !filepath.IsLocal(rel) {
			return nil
		}
		name = filepath.ToSlash(rel)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.nodes[name]
}

// healthy joins the failed databases' errors (the nodes' own are asked by
// the caller).
func (d *dirLease) healthy() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var err error
	for rel, e := range d.failed {
		err = errors.Join(err, fmt.Errorf("%s/%s: stopped: %w", d.entry.Name(), rel, e))
	}
	return err
}

// dirNodeName is the node's (and lease key's) name of the database at rel
// of entry: the entry's name, '/', rel.
func dirNodeName(entry *config.DB, rel string) string { return entry.Name() + "/" + rel }

// newDirLease builds the node set of a dir: entry with lease:. Each
// replica gets one client for the entry's prefix, probed once for
// create-only uploads; every database's node uses a client below it
// (replicaclient.Sub) that shares its connections.
func newDirLease(ctx context.Context, c *cli.Context, cfg *config.Config, entry *config.DB, logger hclog.Logger,
	reg prometheus.Registerer, metrics *follower.Metrics, asPrimary bool, onFatal func(error)) (*dirLease, error) {
	leased := entry.Lease.Type == lease.TypeConsul
	type prefix struct {
		rc      *config.Replica
		client  storage.Client
		fencing storage.Fencing
	}
	var prefixes []prefix
	for _, rc := range entry.Replicas {
		client, err := replicaclient.New(ctx, rc, replicaclient.WithDefaultCredentials(cfg.AccessKeyID, cfg.SecretAccessKey), replicaclient.ForPrimary())
		if err != nil {
			return nil, withEmptyEnv(fmt.Errorf("directory %s: replica %s: %w", entry.Dir, rc.Name, err), cfg, rc)
		}
		client, fencing, err := fencedClient(ctx, client, rc, leased)
		if err != nil {
			return nil, withEmptyEnv(fmt.Errorf("directory %s: replica %s (%s): %w", entry.Dir, rc.Name, rc.Location(), err), cfg, rc)
		}
		if _, err := replicaclient.Sub(client, "probe"); err != nil {
			return nil, fmt.Errorf("directory %s: replica %s (%s): %w", entry.Dir, rc.Name, rc.Location(), err)
		}
		prefixes = append(prefixes, prefix{rc, client, fencing})
	}
	followName, poll, auto := "", time.Duration(0), false
	if entry.Follower != nil {
		followName, poll, auto = entry.Follower.Replica, entry.Follower.PollInterval, entry.Follower.AutoPromote
	}
	if c.IsSet("poll-interval") {
		poll = c.Duration("poll-interval")
	}
	followed := -1
	for i, p := range prefixes {
		if p.rc.Name == followName || (followName == "" && i == 0) {
			followed = i
			break
		}
	}
	if followed < 0 {
		return nil, fmt.Errorf("directory %s: no replica named %q to follow", entry.Dir, followName)
	}
	store, ok := prefixes[followed].client.(storage.KeyReader)
	if !ok {
		if store, ok = storage.Unwrap(prefixes[followed].client).(storage.KeyReader); !ok {
			return nil, fmt.Errorf("directory %s: a %s replica cannot be listed by prefix, so the databases only the store holds cannot be found", entry.Dir, prefixes[followed].client.Type())
		}
	}
	label := entry.Name()
	if entry.PerDBMetrics {
		label = ""
	}
	d := &dirLease{entry: entry, asPrimary: asPrimary, log: logger.Named(entry.Name()), store: store, onFatal: onFatal,
		rescan: make(chan struct{}, 1), nodes: map[string]*promote.Node{}, failed: map[string]error{}, services: map[string]string{},
		requests: map[string]*atomic.Uint64{}}
	d.registerMetrics(reg)
	d.newNode = func(ctx context.Context, rel string) (*promote.Node, error) {
		dbc, err := entry.Database(filepath.Join(entry.Dir, filepath.FromSlash(rel)))
		if err != nil {
			return nil, err
		}
		name := dirNodeName(entry, rel)
		node := nodeName(c, dbc)
		requests := &atomic.Uint64{}
		l, err := lease.New(dbc.Lease, name, logger.Named(name), lease.WithRequestCount(requests))
		if err != nil {
			return nil, fmt.Errorf("database %s: %w", dbc.Path, err)
		}
		d.mu.Lock()
		d.requests[rel] = requests
		d.mu.Unlock()
		opts := baseOptions(c, dbc, logger, reg)
		opts.MetricsLabel = label
		var claim []storage.Client
		for i, p := range prefixes {
			client, err := replicaclient.Sub(p.client, rel)
			if err != nil {
				return nil, fmt.Errorf("database %s: replica %s: %w", dbc.Path, p.rc.Name, err)
			}
			r := dbc.Replicas[i]
			opts.Replicas = append(opts.Replicas, primary.ReplicaOptions{
				Fencing: p.fencing, Name: r.Name, Location: r.Location(), Client: client,
				SyncInterval: r.SyncInterval, SnapshotInterval: r.SnapshotInterval,
				Retention: r.Retention, RetentionCheckInterval: r.RetentionCheckInterval,
			})
			if i == followed {
				claim = append([]storage.Client{client}, claim...)
			} else {
				claim = append(claim, client)
			}
		}
		var publish func(context.Context, string) error
		var deadAfter time.Duration
		if leased {
			deadAfter = dbc.Lease.Consul.TTL
			if dbc.Lease.Consul.Mode == lease.ModeKV {
				deadAfter = 0 // see newNode
			}
			if publish, err = promote.ConsulPublisher(dbc.Lease.Consul, name, node, dbc.Lease.AdvertiseURL); err != nil {
				return nil, fmt.Errorf("database %s: %w", dbc.Path, err)
			}
		}
		return promote.New(promote.Config{
			Published: publish,
			DeadAfter: deadAfter,
			Name:      name, Node: node, Lease: l,
			OnDemote: dbc.Lease.OnDemote, OnPromote: dbc.Lease.OnPromote, AutoPromote: auto,
			Primary: opts,
			Follower: follower.Config{Path: dbc.Path, Name: name, Client: claim[0], PollInterval: poll,
				Logger: logger, Metrics: metrics},
			Claim:  claim,
			Logger: logger,
		})
	}
	return d, nil
}
