package main

import (
	"context"
	"errors"
	"fmt"
	"os/signal"
	"sync"
	"syscall"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/urfave/cli/v2"

	"github.com/understudy-db/understudy/config"
	"github.com/understudy-db/understudy/followdir"
	"github.com/understudy-db/understudy/follower"
	"github.com/understudy-db/understudy/internal/httpserver"
	"github.com/understudy-db/understudy/internal/replicaclient"
	"github.com/understudy-db/understudy/internal/storage"
)

func init() {
	registerCommand(&cli.Command{
		Name:  "follow",
		Usage: "keep a live, read-only, verified copy of a replicated database",
		Description: "Bootstraps LOCAL_DB_PATH from the replica if it does not exist (an existing one resumes\n" +
			"after its checksum is verified; one that does not match is kept aside), then applies every new\n" +
			"change set. Applications open the local file read-only (file:PATH?mode=ro).\n" +
			"Without arguments, follows every database of the config that has a follower: section; a dir: entry\n" +
			"with one follows every database below its replica's prefix into its dir. With -dir-out DIR, follows\n" +
			"every database below the prefix REPLICA_URL into DIR, each at its path relative to the prefix.",
		ArgsUsage: "[REPLICA_URL LOCAL_DB_PATH | -dir-out DIR REPLICA_URL]",
		Flags: commonFlags(
			&cli.StringFlag{Name: "addr", Usage: "serve /healthz, /readyz, /status and /metrics on `ADDR` (default: the config's addr)"},
			// 0 (not given) leaves it to the follower: section, then to the
			// default; DefaultText says so instead of urfave's "(default: 0s)".
			&cli.DurationFlag{Name: "poll-interval", Usage: fmt.Sprintf("how often to look for the next change set (at least %s)", config.MinPollInterval),
				DefaultText: fmt.Sprintf("the follower: section's poll-interval, else %s", config.DefaultPollInterval)},
			followDirOutFlag, discoverIntervalFlag,
		),
		Action: runFollow,
	})
}

func runFollow(c *cli.Context) error {
	ctx, stop := signal.NotifyContext(c.Context, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := follower.CheckDBPage(ctx); err != nil {
		return err
	}
	var targets []follower.Config
	var explain []func(error) error // per target: what in the config may explain a store error
	var dirSpecs []dirTargetSpec    // prefixes followed into a directory
	var addr string
	var log hclog.Logger
	if c.IsSet("discover-interval") && c.Duration("discover-interval") < config.MinDiscoverInterval {
		return fmt.Errorf("follow: -discover-interval %s is below the minimum %s", c.Duration("discover-interval"), config.MinDiscoverInterval)
	}
	if c.IsSet("dir-out") {
		spec, a, l, err := argFollowDir(c)
		if err != nil {
			return err
		}
		dirSpecs, addr, log = []dirTargetSpec{spec}, a, l
	} else if c.NArg() == 0 {
		cfg, err := loadConfig(c)
		if err != nil {
			return fmt.Errorf("follow: give REPLICA_URL LOCAL_DB_PATH, or a config with follower: sections: %w", err)
		}
		if log, err = newLogger(c, cfg.Logging.Level, cfg.Logging.Type); err != nil {
			return err
		}
		warnEmptyEnv(log, cfg)
		// Databases with a lease: section run as nodes that can promote.
		if hasLease(cfg) {
			stop()
			return runNodes(c, cfg, log, false, "")
		}
		if dirSpecs, err = configFollowDirs(c, cfg); err != nil {
			return err
		}
		if targets, explain, err = configFollowTargets(c, cfg, len(dirSpecs) > 0); err != nil {
			return err
		}
		addr = cfg.Addr
	} else {
		if c.IsSet("discover-interval") {
			return errors.New("follow: -discover-interval is only for a directory: give -dir-out DIR REPLICA_URL, or use a config with a dir: entry")
		}
		var err error
		if targets, explain, addr, log, err = argFollowTarget(c); err != nil {
			return err
		}
	}
	if c.IsSet("addr") {
		addr = c.String("addr")
	}
	if err := probeFollowStores(ctx, targets, explain, log); err != nil {
		return err
	}
	if err := probeFollowDirs(ctx, dirSpecs, log); err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := follower.NewMetrics(reg)
	var followers []*follower.Follower
	for _, t := range targets {
		t.Logger, t.Metrics = log, metrics
		f, err := follower.New(t)
		if err != nil {
			return err
		}
		followers = append(followers, f)
	}
	dirs, err := openFollowDirs(dirSpecs, log, metrics, reg)
	if err != nil {
		return err
	}

	if addr != "" {
		srv, err := httpserver.Start(httpserver.Options{
			Addr:     addr,
			Gatherer: reg,
			Healthy: func() error {
				return errors.Join(follower.HealthError(followers...), followDirsError(dirs, (*followdir.Dir).Healthy))
			},
			Ready: func() error {
				return errors.Join(follower.ReadyError(followers...), followDirsError(dirs, (*followdir.Dir).Ready))
			},
			Status: func() any { return followStatus(followers, dirs) },
			Routes: followDirRoutes(dirs),
		})
		if err != nil {
			return fmt.Errorf("follow: %w", err)
		}
		defer srv.Close()
		log.Info("serving health, status and metrics", "addr", srv.Addr())
	}

	// Each follower runs until the signal; one that stops on an error stays
	// up (unhealthy on /healthz) so that its database keeps serving reads.
	errs := make([]error, len(followers))
	var wg sync.WaitGroup
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for i, f := range followers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f.Run(rctx)
			if errors.Is(errs[i], follower.ErrNoDBPage) {
				cancel()
			}
		}()
	}
	dirErrs := make([]error, len(dirs))
	for i, d := range dirs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if dirErrs[i] = d.Run(rctx); dirErrs[i] != nil {
				cancel()
			}
		}()
	}
	wg.Wait()
	return errors.Join(append(errs, dirErrs...)...)
}

// followDirsError joins check (Healthy or Ready) of every directory.
func followDirsError(dirs []*followdir.Dir, check func(*followdir.Dir) error) error {
	var err error
	for _, d := range dirs {
		err = errors.Join(err, check(d))
	}
	return err
}

// followStatus is follow's /status: {"dbs": [...]} for the databases
// followed one by one, plus "dirs" with each followed directory's totals
// and worst databases (as replicate's dir: entries).
func followStatus(followers []*follower.Follower, dirs []*followdir.Dir) any {
	doc := follower.StatusDocument(followers...)
	if len(dirs) == 0 {
		return doc
	}
	m := doc.(map[string]any)
	st := make([]followdir.Status, 0, len(dirs))
	for _, d := range dirs {
		st = append(st, d.Status())
	}
	m["dirs"] = st
	return m
}

// argFollowTarget builds the follower's config from the arguments
// REPLICA_URL LOCAL_DB_PATH (a config file, when present, gives the
// logging, addr and default credentials).
func argFollowTarget(c *cli.Context) ([]follower.Config, []func(error) error, string, hclog.Logger, error) {
	if c.NArg() != 2 {
		return nil, nil, "", nil, fmt.Errorf("follow: give REPLICA_URL LOCAL_DB_PATH, or no arguments to use the config (got %d arguments)", c.NArg())
	}
	url, path := c.Args().Get(0), c.Args().Get(1)
	if !isReplicaURL(url) {
		return nil, nil, "", nil, fmt.Errorf("follow: %q is not a replica URL (s3://BUCKET/PATH, gcs://BUCKET/PATH, abs://ACCOUNT@CONTAINER/PATH, sftp://USER@HOST/PATH or file:///DIR); usage: understudy follow REPLICA_URL LOCAL_DB_PATH", url)
	}
	a, err := openArgReplica(c, url)
	if err != nil {
		return nil, nil, "", nil, err
	}
	client, addr, log, explain := a.client, a.addr, a.log, a.explain
	if err := refuseFollow03(c.Context, client, url, path); err != nil {
		return nil, nil, "", nil, cli.Exit(err, 2)
	}
	return []follower.Config{{Path: absOrSame(path), Client: client, PollInterval: c.Duration("poll-interval")}}, []func(error) error{explain}, addr, log, nil
}

// argReplica is what `follow` with a replica URL argument takes from
// around it: the config file, when present, for the logging, addr and
// default credentials; the logger; the store client of the URL; and
// explain, which adds to a store error what in the config may explain it
// (a ${VAR} of the top-level credentials that expanded empty).
type argReplica struct {
	addr     string
	log      hclog.Logger
	client   storage.Client
	location string
	explain  func(error) error
}

func openArgReplica(c *cli.Context, url string) (argReplica, error) {
	cfg, err := loadConfigIfPresent(c)
	if err != nil {
		return argReplica{}, err
	}
	var level, typ, addr string
	var opts []replicaclient.Option
	if cfg != nil {
		level, typ, addr = cfg.Logging.Level, cfg.Logging.Type, cfg.Addr
		opts = append(opts, replicaclient.WithDefaultCredentials(cfg.AccessKeyID, cfg.SecretAccessKey))
	}
	log, err := newLogger(c, level, typ)
	if err != nil {
		return argReplica{}, err
	}
	if cfg != nil {
		warnEmptyEnv(log, cfg)
	}
	r, err := config.ParseReplicaURL(url)
	if err != nil {
		return argReplica{}, err
	}
	client, err := replicaclient.New(c.Context, r, opts...)
	if err != nil {
		if cfg != nil {
			err = withEmptyEnv(err, cfg, r)
		}
		return argReplica{}, err
	}
	explain := func(err error) error { return err }
	if cfg != nil {
		explain = func(err error) error { return withEmptyEnv(err, cfg, r) }
	}
	return argReplica{addr: addr, log: log, client: client, location: r.Location(), explain: explain}, nil
}

// configFollowTargets builds the followers' configs from the config's
// follower: sections.
func configFollowTargets(c *cli.Context, cfg *config.Config, haveDirs bool) ([]follower.Config, []func(error) error, error) {
	poll := c.Duration("poll-interval")
	path, _ := configPath(c)
	var targets []follower.Config
	var explain []func(error) error
	for _, db := range cfg.DBs {
		if db.Follower == nil || db.IsDir() {
			continue // a dir: entry is configFollowDirs'
		}
		r := db.Replica(db.Follower.Replica)
		if r == nil {
			return nil, nil, fmt.Errorf("follow: database %s in %s: no replica named %q to follow", db.Path, path, db.Follower.Replica)
		}
		client, err := replicaclient.New(c.Context, r, replicaclient.WithDefaultCredentials(cfg.AccessKeyID, cfg.SecretAccessKey))
		if err != nil {
			return nil, nil, withEmptyEnv(err, cfg, r)
		}
		if err := refuseFollow03(c.Context, client, r.Location(), db.Path); err != nil {
			return nil, nil, cli.Exit(err, 2)
		}
		p := db.Follower.PollInterval
		if poll != 0 {
			p = poll
		}
		targets = append(targets, follower.Config{Path: db.Path, Name: db.Name(), Client: client, PollInterval: p})
		explain = append(explain, func(err error) error { return withEmptyEnv(err, cfg, r) })
	}
	if len(targets) == 0 && !haveDirs {
		return nil, nil, fmt.Errorf("follow: no database in %s has a follower: section; add one, or give REPLICA_URL LOCAL_DB_PATH", path)
	}
	return targets, explain, nil
}
