package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/urfave/cli/v2"

	"github.com/understudy-db/understudy/config"
	"github.com/understudy-db/understudy/followdir"
	"github.com/understudy-db/understudy/follower"
	"github.com/understudy-db/understudy/internal/dirstatus"
	"github.com/understudy-db/understudy/internal/heads"
	"github.com/understudy-db/understudy/internal/replicaclient"
	"github.com/understudy-db/understudy/internal/storage"
	"github.com/understudy-db/understudy/internal/storage/agecrypt"
)

// The flags of follow of a whole prefix.
var (
	followDirOutFlag = &cli.StringFlag{Name: "dir-out", Usage: "follow every database below the prefix REPLICA_URL into `DIR`, each at its path relative to the prefix " +
		"(a dir: entry's replica); new databases are picked up by a listing every -discover-interval"}
	discoverIntervalFlag = &cli.DurationFlag{Name: "discover-interval", Usage: fmt.Sprintf("with -dir-out or a dir: entry: how often one listing of the whole prefix looks for new and vanished databases (at least %s)", config.MinDiscoverInterval),
		DefaultText: fmt.Sprintf("the follower: section's discover-interval, else %s", config.DefaultDiscoverInterval)}
)

// dirTargetSpec is a prefix to follow into a local directory.
type dirTargetSpec struct {
	prefix   storage.Client
	location string
	outDir   string
	poll     time.Duration
	discover time.Duration
	perDB    bool
	explain  func(error) error // what in the config may explain a store error
}

// argFollowDir is `follow -dir-out DIR REPLICA_URL`: the prefix from the
// argument (a config file, when present, gives the logging, addr and
// default credentials).
func argFollowDir(c *cli.Context) (dirTargetSpec, string, hclog.Logger, error) {
	out := c.String("dir-out")
	if strings.TrimSpace(out) == "" {
		return dirTargetSpec{}, "", nil, errors.New("follow: -dir-out is empty: give the directory to follow the databases into")
	}
	if c.NArg() != 1 {
		return dirTargetSpec{}, "", nil, fmt.Errorf("follow -dir-out DIR: give the replica URL of the prefix, one argument (got %d); usage: understudy follow -dir-out DIR REPLICA_URL", c.NArg())
	}
	url := c.Args().First()
	if !isReplicaURL(url) {
		return dirTargetSpec{}, "", nil, fmt.Errorf("follow: %q is not a replica URL (s3://BUCKET/PREFIX, gcs://BUCKET/PREFIX, abs://ACCOUNT@CONTAINER/PREFIX, sftp://USER@HOST/DIR or file:///DIR); usage: understudy follow -dir-out DIR REPLICA_URL", url)
	}
	a, err := openArgReplica(c, url)
	if err != nil {
		return dirTargetSpec{}, "", nil, err
	}
	return dirTargetSpec{prefix: a.client, location: a.location, outDir: absOrSame(out), poll: c.Duration("poll-interval"),
		discover: c.Duration("discover-interval"), explain: a.explain}, a.addr, a.log, nil
}

// configFollowDirs is the config's dir: entries with a follower: section:
// each follows its replica's prefix into its dir.
func configFollowDirs(c *cli.Context, cfg *config.Config) ([]dirTargetSpec, error) {
	path, _ := configPath(c)
	var out []dirTargetSpec
	for _, db := range cfg.DBs {
		if !db.IsDir() || db.Follower == nil {
			continue
		}
		r := db.Replica(db.Follower.Replica)
		if r == nil {
			return nil, fmt.Errorf("follow: directory %s in %s: no replica named %q to follow", db.Dir, path, db.Follower.Replica)
		}
		client, err := replicaclient.New(c.Context, r, replicaclient.WithDefaultCredentials(cfg.AccessKeyID, cfg.SecretAccessKey))
		if err != nil {
			return nil, withEmptyEnv(fmt.Errorf("directory %s: replica %s: %w", db.Dir, r.Name, err), cfg, r)
		}
		t := dirTargetSpec{prefix: client, location: r.Location(), outDir: db.Dir, poll: db.Follower.PollInterval,
			discover: db.Follower.DiscoverInterval, perDB: db.PerDBMetrics,
			explain: func(err error) error { return withEmptyEnv(err, cfg, r) }}
		if c.IsSet("poll-interval") {
			t.poll = c.Duration("poll-interval")
		}
		if c.IsSet("discover-interval") {
			t.discover = c.Duration("discover-interval")
		}
		out = append(out, t)
	}
	return out, nil
}

// probeFollowDirs lists each prefix once before anything runs, as
// probeFollowStores does for one database: credentials that are missing
// or refused, or age keys that do not fit, fail the command at once; a
// store that does not answer is left to the directory follower, which
// retries.
func probeFollowDirs(ctx context.Context, dirs []dirTargetSpec, log hclog.Logger) error {
	for _, d := range dirs {
		kr, ok := d.prefix.(storage.KeyReader)
		if !ok {
			return fmt.Errorf("follow of a directory: a %s replica (%s) cannot be listed by prefix", d.prefix.Type(), d.location)
		}
		pctx, cancel := context.WithTimeout(ctx, storeProbeTimeout)
		rels, err := storage.FindDatabases(pctx, kr)
		if err == nil && len(rels) > 0 {
			// One database's newest file: an age identity that does not
			// fit fails here, not in every follower.
			var sub storage.Client
			if sub, err = replicaclient.Sub(d.prefix, rels[len(rels)-1]); err == nil {
				err = probeStore(pctx, sub)
			}
		}
		cancel()
		switch {
		case errors.Is(err, storage.ErrCredentials):
			return fmt.Errorf("follow %s: %w", d.location, d.explain(err))
		case agecrypt.IsKeyError(err):
			return fmt.Errorf("follow %s: %w", d.location, err)
		case err != nil && ctx.Err() == nil:
			log.Warn("the replica store does not answer yet; following will retry", "prefix", d.location, "error", err)
		}
	}
	return nil
}

// openFollowDirs makes the directory followers. Unless an entry asks for
// per-db-metrics, a directory's followers count their requests and
// applies under one label, the directory, and the directory adds a few
// gauges of its own: the series do not grow with the database count.
func openFollowDirs(specs []dirTargetSpec, log hclog.Logger, metrics *follower.Metrics, reg prometheus.Registerer) ([]*followdir.Dir, error) {
	var out []*followdir.Dir
	for _, s := range specs {
		kr, ok := s.prefix.(storage.KeyReader)
		if !ok {
			return nil, fmt.Errorf("follow of a directory: a %s replica (%s) cannot be listed by prefix", s.prefix.Type(), s.location)
		}
		d, err := followdir.New(followdir.Options{
			Prefix: s.prefix, Location: s.location, OutDir: s.outDir,
			PollInterval: s.poll, DiscoverInterval: s.discover,
			Logger: log.Named("dir"), Metrics: metrics, PerDBMetrics: s.perDB,
			// The replicating side's index of every database's head: one
			// GET a poll for the whole directory where it exists.
			Heads: func(ctx context.Context) (map[string]uint64, error) {
				ix, err := heads.Read(ctx, kr)
				return ix.Heads, err
			},
		})
		if err != nil {
			return nil, err
		}
		registerFollowDirMetrics(reg, d)
		out = append(out, d)
	}
	return out, nil
}

// registerFollowDirMetrics adds, per directory, the number of databases by
// state and the lag totals.
func registerFollowDirMetrics(reg prometheus.Registerer, d *followdir.Dir) {
	labels := prometheus.Labels{"dir": d.Dir()}
	for _, g := range []struct {
		state string
		value func(followdir.Status) int
	}{
		{"following", func(s followdir.Status) int { return s.Following }},
		{"starting", func(s followdir.Status) int { return s.Starting }},
		{"stalled", func(s followdir.Status) int { return s.Stalled }},
		{"stopped", func(s followdir.Status) int { return s.Stopped }},
		{"gone", func(s followdir.Status) int { return s.Gone }},
	} {
		l := prometheus.Labels{"state": g.state}
		for k, v := range labels {
			l[k] = v
		}
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "understudy", Subsystem: "follow_dir", Name: "databases",
			Help: "Databases of a followed directory by state.", ConstLabels: l,
		}, func() float64 { return float64(g.value(d.Status())) }))
	}
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "understudy", Subsystem: "follow_dir", Name: "lag_txids",
		Help: "TXIDs the databases of a followed directory are behind the store's head, summed.", ConstLabels: labels,
	}, func() float64 { return float64(d.Status().LagTXIDs) }))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "understudy", Subsystem: "follow_dir", Name: "max_lag_seconds",
		Help: "The largest lag of a database of a followed directory.", ConstLabels: labels,
	}, func() float64 { return d.Status().MaxLagSeconds }))
}

// followDirRoutes serves GET /status/db/NAME for the followed directories.
func followDirRoutes(dirs []*followdir.Dir) func(*http.ServeMux) {
	var lookups []dirstatus.Lookup
	for _, d := range dirs {
		lookups = append(lookups, func(name string) (any, bool) { return d.DB(name) })
	}
	return dirstatus.Routes(lookups...)
}
