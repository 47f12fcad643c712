package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/understudy-db/understudy/config"
	"github.com/understudy-db/understudy/fleet"
	"github.com/understudy-db/understudy/internal/dirstatus"
	"github.com/understudy-db/understudy/internal/replicaclient"
	"github.com/understudy-db/understudy/internal/storage"
	"github.com/understudy-db/understudy/primary"
	"github.com/urfave/cli/v2"
)

// openFleets builds one fleet per dir: entry of the config. Each replica
// of an entry gets one client for its prefix, probed once for create-only
// uploads; every database of the directory uses a client below it
// (replicaclient.Sub) that shares its connections.
func openFleets(ctx context.Context, c *cli.Context, cfg *config.Config, logger hclog.Logger, reg prometheus.Registerer) ([]*fleet.Fleet, error) {
	var out []*fleet.Fleet
	for _, entry := range cfg.DBs {
		if !entry.IsDir() {
			continue
		}
		var prefixes []storage.Client
		var fencings []storage.Fencing
		var headsReps []fleet.HeadsReplica
		for _, rc := range entry.Replicas {
			client, err := replicaclient.New(ctx, rc, replicaclient.WithDefaultCredentials(cfg.AccessKeyID, cfg.SecretAccessKey), replicaclient.ForPrimary())
			if err != nil {
				return nil, cli.Exit(withEmptyEnv(fmt.Errorf("directory %s: replica %s: %w", entry.Dir, rc.Name, err), cfg, rc), 1)
			}
			client, fencing, err := fencedClient(ctx, client, rc, false)
			if err != nil {
				err = withEmptyEnv(fmt.Errorf("directory %s: replica %s (%s): %w", entry.Dir, rc.Name, rc.Location(), err), cfg, rc)
				if errors.Is(err, storage.ErrNoCreateOnly) {
					return nil, cli.Exit(err, 2)
				}
				return nil, cli.Exit(err, 1)
			}
			if _, err := replicaclient.Sub(client, "probe"); err != nil {
				return nil, cli.Exit(fmt.Errorf("directory %s: replica %s (%s): %w", entry.Dir, rc.Name, rc.Location(), err), 2)
			}
			prefixes, fencings = append(prefixes, client), append(fencings, fencing)
			if hs, ok := client.(fleet.HeadsStore); ok {
				headsReps = append(headsReps, fleet.HeadsReplica{Name: rc.Name, Store: hs, Interval: rc.SyncInterval})
			} else {
				logger.Warn("this store cannot hold the heads index: followers of the directory poll each database", "dir", entry.Dir, "replica", rc.Name, "type", client.Type())
			}
		}
		label := entry.Name()
		if entry.PerDBMetrics {
			label = ""
		}
		open := func(ctx context.Context, dbc *config.DB, rel string, wake <-chan struct{}) (*primary.DB, error) {
			opts := baseOptions(c, dbc, logger, reg)
			opts.MetricsLabel = label
			opts.Wake, opts.PollInterval = wake, fleet.DefaultPollInterval
			for i, rc := range dbc.Replicas {
				client, err := replicaclient.Sub(prefixes[i], rel)
				if err != nil {
					return nil, fmt.Errorf("database %s: replica %s: %w", dbc.Path, rc.Name, err)
				}
				opts.Replicas = append(opts.Replicas, primary.ReplicaOptions{
					Fencing: fencings[i], Name: rc.Name, Location: rc.Location(), Client: client,
					SyncInterval: rc.SyncInterval, SnapshotInterval: rc.SnapshotInterval,
					Retention: rc.Retention, RetentionCheckInterval: rc.RetentionCheckInterval,
				})
			}
			db, err := primary.New(opts)
			if err != nil {
				return nil, err
			}
			if err := db.Open(ctx); err != nil {
				return nil, err
			}
			return db, nil
		}
		requests := primary.StoreRequests(reg)
		headsLabel := entry.Name()
		f, err := fleet.New(fleet.Options{
			Entry: entry, Open: open, Logger: logger.Named(entry.Name()), IdleAfter: entry.IdleAfter, MaxOpen: entry.MaxOpen,
			Heads: headsReps,
			// The index's requests count with the databases' own, so that
			// understudy_primary_store_requests_total is every request.
			HeadsObserver: func(replica string, op fleet.HeadsOp, _ error) {
				requests.WithLabelValues(headsLabel, replica, string(op)).Inc()
			},
		})
		if err != nil {
			return nil, cli.Exit(err, 1)
		}
		registerFleetMetrics(reg, f)
		out = append(out, f)
		logger.Info("replicating directory", "dir", entry.Dir, "pattern", entry.Pattern, "replicas", len(prefixes), "watch", entry.Watch, "max_open", entry.MaxOpen)
	}
	return out, nil
}

// registerFleetMetrics adds, per directory, the number of databases by
// state: a few series per directory, whatever its size.
func registerFleetMetrics(reg prometheus.Registerer, f *fleet.Fleet) {
	if reg == nil {
		return
	}
	labels := prometheus.Labels{"dir": f.Dir()}
	for _, g := range []struct {
		state string
		value func(fleet.Status) int
	}{
		{"active", func(s fleet.Status) int { return s.Active }},
		{"parked", func(s fleet.Status) int { return s.Parked }},
		{"opening", func(s fleet.Status) int { return s.Opening }},
		{"failed", func(s fleet.Status) int { return s.Failed }},
	} {
		l := prometheus.Labels{"state": g.state}
		for k, v := range labels {
			l[k] = v
		}
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "understudy", Subsystem: "dir", Name: "databases",
			Help: "Databases of a dir: entry by state.", ConstLabels: l,
		}, func() float64 { return float64(g.value(f.Status())) }))
	}
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "understudy", Subsystem: "dir", Name: "pending_txids",
		Help: "TXIDs written locally and not uploaded yet, summed over the databases of a dir: entry.", ConstLabels: labels,
	}, func() float64 { return float64(f.Status().PendingTXIDs) }))
}

// rescanOnHUP makes SIGHUP rescan every directory until the returned
// function is called.
func rescanOnHUP[T interface {
	Rescan()
	Dir() string
}](fleets []T, logger hclog.Logger) func() {
	if len(fleets) == 0 {
		return func() {}
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-done:
				return
			case <-hup:
				logger.Info("SIGHUP: rescanning directories", "dirs", len(fleets))
				for _, f := range fleets {
					f.Rescan()
				}
			}
		}
	}()
	return func() { signal.Stop(hup); close(done) }
}

// fleetsHealthy joins the directories' /healthz errors.
func fleetsHealthy(fleets []*fleet.Fleet) error {
	var err error
	for _, f := range fleets {
		err = errors.Join(err, f.Healthy())
	}
	return err
}

// replicateStatus is replicate's /status: {"dbs": [...]} for path:
// entries, plus "dirs" with each directory's totals and worst databases.
func replicateStatus(dbs []*primary.DB, fleets []*fleet.Fleet) any {
	doc := primary.StatusDocument(dbs...)
	if len(fleets) == 0 {
		return doc
	}
	m := doc.(map[string]any)
	dirs := make([]fleet.Status, 0, len(fleets))
	for _, f := range fleets {
		dirs = append(dirs, f.Status())
	}
	m["dirs"] = dirs
	return m
}

// fleetRoutes serves GET /status/db/NAME: one database of a directory in
// full (status -db NAME), NAME being its path relative to the directory
// or its absolute path.
func fleetRoutes(fleets []*fleet.Fleet) func(mux *http.ServeMux) {
	var lookups []dirstatus.Lookup
	for _, f := range fleets {
		lookups = append(lookups, func(name string) (any, bool) { return f.DB(name) })
	}
	return dirstatus.Routes(lookups...)
}
