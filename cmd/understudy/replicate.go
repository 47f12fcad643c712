package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/understudy-db/understudy/config"
	"github.com/understudy-db/understudy/fleet"
	"github.com/understudy-db/understudy/internal/httpserver"
	"github.com/understudy-db/understudy/internal/replicaclient"
	"github.com/understudy-db/understudy/internal/storage"
	"github.com/understudy-db/understudy/lease"
	"github.com/understudy-db/understudy/primary"
	"github.com/urfave/cli/v2"
)

func init() {
	registerCommand(&cli.Command{
		Name:      "replicate",
		Usage:     "ship every committed transaction of the configured databases to their replicas",
		ArgsUsage: "[DB_PATH REPLICA_URL...]",
		Description: "Runs as a daemon next to the application. With no arguments it replicates every db in the\n" +
			"config file; with DB_PATH REPLICA_URL... it needs no config. SIGINT/SIGTERM ship everything\n" +
			"committed, then exit 0.",
		Flags: commonFlags(
			&cli.StringFlag{Name: "exec", Usage: "run `CMD` as the application: forward signals, sync after it exits, exit with its status"},
			&cli.StringFlag{Name: "addr", Usage: "serve /metrics, /healthz and /status on `ADDR` (overrides the config's addr)"},
			&cli.StringFlag{Name: "node", Usage: "node `NAME` written into every object's metadata (default: the host name)"},
			&cli.BoolFlag{Name: "adopt-replica", Usage: "take over a replica that holds another database's history (refused otherwise; config: adopt-replica: true)"},
		),
		Action: runReplicate,
	})
}

// replicateConfig returns the config for the command: from arguments when
// given, else from the config file.
func replicateConfig(c *cli.Context) (*config.Config, error) {
	if c.NArg() > 0 {
		if c.NArg() < 2 {
			return nil, errors.New("replicate: give DB_PATH and at least one REPLICA_URL, or no arguments to use the config file")
		}
		db, err := config.NewDB(c.Args().First(), c.Args().Tail()...)
		if err != nil {
			return nil, err
		}
		cfg := &config.Config{DBs: []*config.DB{db}}
		if path, explicit := configPath(c); explicit {
			return nil, fmt.Errorf("replicate: give either a config file (%s) or DB_PATH REPLICA_URL..., not both", path)
		}
		return cfg, nil
	}
	cfg, err := loadConfig(c)
	if errors.Is(err, fs.ErrNotExist) {
		path, _ := configPath(c)
		return nil, fmt.Errorf("replicate: no config file at %s: pass -config PATH (or set $UNDERSTUDY_CONFIG), or run `understudy replicate DB_PATH REPLICA_URL...`", path)
	} else if err != nil {
		return nil, err
	}
	if len(cfg.DBs) == 0 {
		path, _ := configPath(c)
		return nil, fmt.Errorf("replicate: config %s has no dbs: add a dbs: entry with a path and replicas", path)
	}
	return cfg, nil
}

func nodeName(c *cli.Context, db *config.DB) string {
	if n := c.String("node"); n != "" {
		return n
	}
	if db.Lease != nil && db.Lease.Node != "" {
		return db.Lease.Node
	}
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "understudy"
	}
	return h
}

func runReplicate(c *cli.Context) error {
	// Signals first: a SIGTERM while the databases are being opened (which
	// can take long: a busy database, a slow store) must stop the start-up
	// cleanly instead of killing the process half-way.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)

	cfg, err := replicateConfig(c)
	if err != nil {
		return cli.Exit(err, 2)
	}
	logger, err := newLogger(c, cfg.Logging.Level, cfg.Logging.Type)
	if err != nil {
		return cli.Exit(err, 2)
	}
	logger.Debug("config", "config", cfg.Redacted())
	if hasLease(cfg) {
		select {
		case sig := <-sigs:
			logger.Info("signal received during start-up; exiting", "signal", sig.String())
			return nil
		default:
		}
		// runNodes handles signals itself.
		signal.Stop(sigs)
		return runNodes(c, cfg, logger, true, c.String("exec"))
	}
	warnEmptyEnv(logger, cfg)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// Until start-up is over, a signal cancels it.
	startSig := watchStartup(sigs, cancel)

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	dbs, refused, err := openPrimaries(ctx, c, cfg, logger, reg)
	for _, db := range dbs {
		defer db.Close()
	}
	var fleets []*fleet.Fleet
	if err == nil {
		raiseFDLimit(logger)
		fleets, err = openFleets(ctx, c, cfg, logger, reg)
	}
	if sig := startSig(); sig != nil {
		logger.Info("signal received during start-up; closing what was opened and exiting", "signal", sig.String(),
			"opened", len(dbs), "error", errString(err))
		return nil
	}
	if err != nil {
		return err
	}

	addr := cfg.Addr
	if a := c.String("addr"); a != "" {
		addr = a
	}
	if addr != "" {
		srv, err := httpserver.Start(httpserver.Options{
			Addr:     addr,
			Gatherer: reg,
			Healthy:  func() error { return errors.Join(primariesHealthy(dbs), refused, fleetsHealthy(fleets)) },
			Status:   func() any { return replicateStatus(dbs, fleets) },
			Routes:   fleetRoutes(fleets),
		})
		if err != nil {
			return err
		}
		defer srv.Close()
		logger.Info("serving metrics and health", "addr", srv.Addr())
	}

	// Run every database until a signal, the app's exit or a fatal error.
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	errs := make(chan error, len(dbs)+len(fleets))
	var wg sync.WaitGroup
	for _, f := range fleets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f.Run(runCtx); err != nil {
				errs <- err
			}
		}()
	}
	defer rescanOnHUP(fleets, logger)()
	for _, db := range dbs {
		wg.Add(1)
		go func(db *primary.DB) {
			defer wg.Done()
			if err := db.Run(runCtx); err != nil && !errors.Is(err, context.Canceled) {
				errs <- fmt.Errorf("database %s: %w", db.Path(), err)
			}
		}(db)
	}

	var app *execApp
	if cmdline := c.String("exec"); cmdline != "" {
		if app, err = startExec(cmdline, logger); err != nil {
			return cli.Exit(err, 1)
		}
	}

	exitCode := 0
	var runErr error
wait:
	for {
		select {
		case sig := <-sigs:
			if app != nil {
				// The app decides when it is done; we sync after it exits.
				logger.Info("forwarding signal to application", "signal", sig.String())
				_ = app.signal(sig)
				continue
			}
			logger.Info("signal received: shipping what is committed, then exiting", "signal", sig.String())
			break wait
		case <-app.Done():
			exitCode = app.exitStatus()
			logger.Info("application exited: shipping what is committed", "status", exitCode, "error", errString(app.err))
			break wait
		case runErr = <-errs:
			logger.Error("replication stopped", "error", runErr)
			break wait
		}
	}
	stopRun()
	wg.Wait()

	if runErr != nil {
		if app != nil && !app.exited() {
			_ = app.signal(syscall.SIGTERM)
		}
		return cli.Exit(runErr, 1)
	}
	// Final sync: ship everything the app committed before it stopped.
	var syncErr error
	for _, db := range dbs {
		sctx, cancel := context.WithTimeout(context.Background(), finalSyncTimeout)
		if err := db.Sync(sctx); err != nil {
			logger.Error("final sync failed", "db", db.Path(), "error", err)
			syncErr = errors.Join(syncErr, fmt.Errorf("final sync of %s: %w", db.Path(), err))
		}
		cancel()
	}
	if syncErr != nil {
		return cli.Exit(syncErr, 1)
	}
	logger.Info("all committed transactions shipped")
	if exitCode != 0 {
		return cli.Exit(fmt.Sprintf("application exited with status %d", exitCode), exitCode)
	}
	return nil
}

// appShellPrelude goes before the -exec command line. Debian's /bin/sh
// (dash) forks even a lone command, so a forwarded signal used to reach
// only the shell: it died at once, we shipped and exited, and the
// application ran on unsignalled, writing what nobody shipped. Now the
// whole process group gets the signal (signalApp), and the trap makes the
// shell wait for the command it is running and then exit with that
// command's status.
const appShellPrelude = "trap exit INT TERM\n"

// startApp starts the -exec command line with /bin/sh -c in a process
// group of its own, so that signalApp reaches the shell and everything it
// started. (A group of its own is not the terminal's foreground group: an
// application that reads a terminal on stdin is stopped by SIGTTIN.)
func startApp(cmdline string) (*exec.Cmd, error) {
	app := exec.Command("/bin/sh", "-c", appShellPrelude+cmdline)
	app.Stdin, app.Stdout, app.Stderr = os.Stdin, os.Stdout, os.Stderr
	app.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return app, app.Start()
}

// execApp is a running -exec application (replicate with or without a
// lease), waited for in the background.
type execApp struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once it has exited
	err  error         // what Wait returned, once done is closed
}

// startExec starts the -exec command line (see startApp) and logs it.
func startExec(cmdline string, logger hclog.Logger) (*execApp, error) {
	cmd, err := startApp(cmdline)
	if err != nil {
		return nil, fmt.Errorf("replicate: start -exec %q: %w", cmdline, err)
	}
	logger.Info("started application", "pid", cmd.Process.Pid, "exec", cmdline)
	a := &execApp{cmd: cmd, done: make(chan struct{})}
	go func() { a.err = cmd.Wait(); close(a.done) }()
	return a, nil
}

// Done is closed when the application has exited; nil (never ready) when
// there is no application.
func (a *execApp) Done() <-chan struct{} {
	if a == nil {
		return nil
	}
	return a.done
}

func (a *execApp) exited() bool {
	select {
	case <-a.done:
		return true
	default:
		return false
	}
}

// exitStatus is the status to exit with once Done is closed (appExitStatus).
func (a *execApp) exitStatus() int { return appExitStatus(a.cmd.ProcessState) }

func (a *execApp) signal(sig os.Signal) error { return signalApp(a.cmd, sig) }

// signalApp sends sig to the application's process group.
func signalApp(app *exec.Cmd, sig os.Signal) error {
	s, ok := sig.(syscall.Signal)
	if !ok {
		return app.Process.Signal(sig)
	}
	return syscall.Kill(-app.Process.Pid, s)
}

// appExitStatus is the status replicate exits with: the application's, or
// 128 + the signal's number when a signal killed it, as a shell reports it.
func appExitStatus(st *os.ProcessState) int {
	if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return st.ExitCode()
}

// watchStartup cancels start-up (through cancel) when a signal arrives on
// sigs. The returned function ends the watch and returns the signal that
// arrived meanwhile, or nil; after it, signals stay queued on sigs for the
// main loop.
func watchStartup(sigs <-chan os.Signal, cancel context.CancelFunc) func() os.Signal {
	stop := make(chan struct{})
	got := make(chan os.Signal, 1)
	go func() {
		select {
		case sig := <-sigs:
			got <- sig
			cancel()
		case <-stop:
			close(got)
		}
	}()
	return func() os.Signal {
		close(stop)
		return <-got
	}
}

// finalSyncTimeout bounds the last sync on shutdown, so a dead store cannot
// hang the exit forever.
const finalSyncTimeout = time.Minute

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// openPrimaries builds and opens one primary.DB per configured database. It
// returns the ones it opened even on error, so the caller can close them,
// and the replicas refused at start-up that the databases run without
// (joined, for /healthz).
func openPrimaries(ctx context.Context, c *cli.Context, cfg *config.Config, logger hclog.Logger, reg prometheus.Registerer) (dbs []*primary.DB, refused error, err error) {
	for _, dbc := range cfg.DBs {
		if dbc.IsDir() {
			continue // openFleets
		}
		opts, ref, err := primaryOptions(ctx, c, cfg, dbc, logger, reg)
		refused = errors.Join(refused, ref)
		if errors.Is(err, storage.ErrNoCreateOnly) {
			// The store can never fence writers: the config-error status,
			// so that systemd's RestartPreventExitStatus=2 stops retrying.
			return dbs, refused, cli.Exit(err, 2)
		} else if err != nil {
			return dbs, refused, cli.Exit(err, 1)
		}
		db, err := primary.New(opts)
		if err != nil {
			return dbs, refused, cli.Exit(err, 1)
		}
		if err := db.Open(ctx); err != nil {
			if !strings.Contains(err.Error(), dbc.Path) {
				// With several databases, say which one failed.
				err = fmt.Errorf("database %s: %w", dbc.Path, err)
			}
			return dbs, refused, cli.Exit(err, 1)
		}
		dbs = append(dbs, db)
		logger.Info("replicating", "db", dbc.Path, "replicas", len(opts.Replicas), "node", opts.Node)
	}
	return dbs, refused, nil
}

// primaryOptions is the primary's options for dbc (replicate, and a node's
// primary role), with a client for each of its replicas, in order, each
// probed for create-only uploads. A replica the probe refuses stops the
// database only when it is required (required: true) or the only one; else
// the database runs without it, loudly, and refused says why (joined).
func primaryOptions(ctx context.Context, c *cli.Context, cfg *config.Config, dbc *config.DB, logger hclog.Logger, reg prometheus.Registerer) (opts primary.Options, refused error, err error) {
	opts = baseOptions(c, dbc, logger, reg)
	for _, rc := range dbc.Replicas {
		client, err := replicaclient.New(ctx, rc, replicaclient.WithDefaultCredentials(cfg.AccessKeyID, cfg.SecretAccessKey), replicaclient.ForPrimary())
		if err != nil {
			return opts, refused, withEmptyEnv(fmt.Errorf("database %s: replica %s: %w", dbc.Path, rc.Name, err), cfg, rc)
		}
		client, fencing, err := fencedClient(ctx, client, rc, dbc.Lease != nil && dbc.Lease.Type == lease.TypeConsul)
		if err != nil {
			err = withEmptyEnv(fmt.Errorf("database %s: replica %s (%s): %w", dbc.Path, rc.Name, rc.Location(), err), cfg, rc)
			if rc.Required || len(dbc.Replicas) == 1 {
				return opts, refused, err
			}
			logger.Error("replica refused at start-up: the database's other replicas go on without it until a restart; fix the store, or set required: true on the replica to stop instead",
				"db", dbc.Path, "replica", rc.Name, "error", err)
			refused = errors.Join(refused, fmt.Errorf("refused at start-up: %w", err))
			continue
		}
		if w := fencing.Warning(); w != "" {
			logger.Warn("replica without create-only writes: "+w, "db", dbc.Path, "replica", rc.Name, "fencing", fencing)
		} else {
			logger.Info("replica fencing", "db", dbc.Path, "replica", rc.Name, "fencing", fencing)
		}
		note03(ctx, client, logger, dbc.Path, rc.Name, rc.Location())
		opts.Replicas = append(opts.Replicas, primary.ReplicaOptions{
			Fencing:                fencing,
			Name:                   rc.Name,
			Location:               rc.Location(),
			Client:                 client,
			SyncInterval:           rc.SyncInterval,
			SnapshotInterval:       rc.SnapshotInterval,
			Retention:              rc.Retention,
			RetentionCheckInterval: rc.RetentionCheckInterval,
		})
	}
	if len(opts.Replicas) == 0 {
		return opts, nil, refused // every replica refused
	}
	return opts, refused, nil
}

// fencedClient probes the replica's store for create-only writes and
// returns the client to write it with and the fencing in force
// (storage.ChooseFencing). A store that does not honour them is written
// through its plain writes only when the replica accepts it
// (conditional-writes: if-supported); otherwise the error wraps both the
// probe's verdict (storage.ErrNoCreateOnly: exit 2) and the key to set.
func fencedClient(ctx context.Context, client storage.Client, rc *config.Replica, leased bool) (storage.Client, storage.Fencing, error) {
	perr := client.ProbeCreateOnly(ctx)
	cond, ok := storage.ConditionOf(perr)
	if !ok {
		return nil, "", perr
	}
	if cond != storage.ConditionHonoured && !hasPlainForm(client) {
		// No key can help (an SFTP server without hard links): the probe's
		// own words.
		return nil, "", perr
	}
	accept := rc.AcceptsPlainWrites()
	versioned := false
	if cond != storage.ConditionHonoured && accept {
		var err error
		if client, versioned, err = client.(storage.PlainWriter).PlainWrites(ctx); err != nil {
			return nil, "", err
		}
	}
	key := fmt.Sprintf("conditional-writes: if-supported on replica %s (or ?conditional-writes=if-supported in its URL)", rc.Name)
	f, err := storage.ChooseFencing(cond, accept, versioned, leased, key)
	if err != nil {
		return nil, "", fmt.Errorf("%w; %w", perr, err)
	}
	return client, f, nil
}

// baseOptions is the primary's options for dbc without its replicas.
func baseOptions(c *cli.Context, dbc *config.DB, logger hclog.Logger, reg prometheus.Registerer) primary.Options {
	return primary.Options{
		Path:                   dbc.Path,
		Node:                   nodeName(c, dbc),
		MinCheckpointPageCount: dbc.MinCheckpointPageCount,
		MaxCheckpointPageCount: dbc.MaxCheckpointPageCount,
		Levels:                 dbc.Levels,
		L0Retention:            dbc.L0Retention,
		MaxShadowSize:          dbc.MaxShadowSize,
		AdoptReplica:           dbc.AdoptReplica || c.Bool("adopt-replica"),
		Logger:                 logger.Named(dbc.Name()),
		Registerer:             reg,
	}
}

// hasPlainForm reports whether the store under c (through wrappers such as
// encryption, Unwrap) can be written without create-only writes.
func hasPlainForm(c storage.Client) bool {
	for {
		w, ok := c.(interface{ Unwrap() storage.Client })
		if !ok {
			_, ok := c.(storage.PlainWriter)
			return ok
		}
		c = w.Unwrap()
	}
}

// primariesHealthy is /healthz: unhealthy when a database is fenced or
// cannot ship: its syncs or a replica's uploads have failed without a
// success for primary.UnhealthyAfter(sync-interval), three intervals and at
// least 10 s (a single failed attempt is retried and often succeeds).
// The lease nodes' /healthz deliberately leaves upload errors out: a
// failing store must not depose a live primary.
func primariesHealthy(dbs []*primary.DB) error {
	var err error
	for _, db := range dbs {
		if db.Status().Fenced {
			err = errors.Join(err, fmt.Errorf("%s: fenced: another writer owns the replica history", db.Path()))
		}
		err = errors.Join(err, db.ShippingError())
		if w := db.Status().Warning; w != "" {
			err = errors.Join(err, fmt.Errorf("%s: %s", db.Path(), w))
		}
	}
	return err
}
