package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/urfave/cli/v2"

	"github.com/understudy-db/understudy/config"
	"github.com/understudy-db/understudy/follower"
	"github.com/understudy-db/understudy/internal/httpserver"
	"github.com/understudy-db/understudy/internal/storage"
	"github.com/understudy-db/understudy/lease"
	"github.com/understudy-db/understudy/promote"
)

// Design: the follower process does the promotion itself. `understudy
// promote` only asks it (POST /promote on its addr) and waits for the
// answer. The follower already owns the local database, its connections and
// its position; a second process taking the file over would first have to
// stop the follower anyway, and the new primary must be the long-running
// process that keeps the lease renewed.

func init() {
	registerCommand(&cli.Command{
		Name:  "promote",
		Usage: "make a running follower the primary (planned hand-off, or forced with -force)",
		Description: "Asks the follower process serving on addr (the config's addr, or -addr) to promote the database.\n" +
			"When the current primary is alive it hands over first: it ships everything, halts its app's\n" +
			"writes and releases the lease, so nothing committed is lost. When it is gone, the follower\n" +
			"waits for its lease to expire, or with -force breaks it at once. Then the follower replays the\n" +
			"store, claims the next TXID and starts shipping as primary.",
		Flags: commonFlags(
			&cli.StringFlag{Name: "db", Usage: "database `PATH` (or name) to promote; needed when the follower runs several. " +
				"A database of a dir: entry: its path, its path relative to the directory (tenants/a.db), or ENTRY/REL"},
			&cli.BoolFlag{Name: "force", Usage: "break the current holder's lease instead of waiting for it"},
			&cli.DurationFlag{Name: "timeout", Value: promote.DefaultPromoteTimeout, Usage: "give up after `D`"},
			&cli.StringFlag{Name: "addr", Usage: "the follower's endpoint `ADDR` (default: the config's addr)"},
		),
		Action: runPromote,
	})
}

func runPromote(c *cli.Context) error {
	addr := c.String("addr")
	name := c.String("db")
	cfg, err := loadConfigIfPresent(c)
	if err != nil {
		return cli.Exit(err, 2)
	}
	if cfg != nil {
		if addr == "" {
			addr = cfg.Addr
		}
		if name != "" {
			if db := cfg.DB(name); db != nil {
				name = db.Name()
			} else if n := dirDBName(cfg, name); n != "" {
				name = n
			}
		}
	}
	if addr == "" {
		return cli.Exit("promote: no addr: give -addr HOST:PORT of the follower, or a config with addr:", 2)
	}
	base, err := daemonURL(addr)
	if err != nil {
		return cli.Exit(fmt.Errorf("promote: addr %q: %w", addr, err), 2)
	}
	timeout := c.Duration("timeout")
	q := url.Values{"db": {name}, "timeout": {timeout.String()}}
	if c.Bool("force") {
		q.Set("force", "true")
	}
	ctx, cancel := context.WithTimeout(c.Context, timeout+10*time.Second)
	defer cancel()
	a, err := promote.Call(ctx, &http.Client{}, base+promote.PathPromote+"?"+q.Encode())
	if err != nil {
		return cli.Exit(fmt.Errorf("promote: %w", err), 1)
	}
	out, _ := json.Marshal(a)
	fmt.Fprintln(c.App.Writer, string(out))
	return nil
}

// dirDBName is the node name of the database at file (a path, absolute or
// relative to the current directory) below a dir: entry of cfg, or "".
// Any other -db (a path relative to the directory, NAME/REL) goes to the
// daemon as given, which resolves it (findNode).
func dirDBName(cfg *config.Config, file string) string {
	abs, err := filepath.Abs(file)
	if err != nil {
		return ""
	}
	for _, db := range cfg.DBs {
		if !db.IsDir() {
			continue
		}
		if rel, err := filepath.Rel(db.Dir, abs); err == nil && filepath.IsLocal(rel) {
			if _, err := os.Stat(abs); err == nil {
				return dirNodeName(db, filepath.ToSlash(rel))
			}
		}
	}
	return ""
}

// hasLease reports whether any database of cfg has a lease section: such
// databases run as promote.Nodes (primary and follower in one process).
func hasLease(cfg *config.Config) bool {
	for _, db := range cfg.DBs {
		if db.Lease != nil {
			return true
		}
	}
	return false
}

// runNodes runs every database of cfg that has a lease section (and, for
// follow, a follower section) as a node starting in the given role, until
// a signal.
func runNodes(c *cli.Context, cfg *config.Config, logger hclog.Logger, asPrimary bool, appCmd string) error {
	warnEmptyEnv(logger, cfg)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	if err := follower.CheckDBPage(ctx); err != nil {
		return cli.Exit(err, 1)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := follower.NewMetrics(reg)

	var nodes []*promote.Node
	var dirs []*dirLease
	var fatal error
	var fatalOnce sync.Once
	onFatal := func(err error) {
		fatalOnce.Do(func() { fatal = err; stop() })
	}
	for _, dbc := range cfg.DBs {
		if dbc.Lease == nil {
			what := "database " + dbc.Path
			if dbc.IsDir() {
				what = "directory " + dbc.Dir
			}
			return cli.Exit(fmt.Errorf("%s has no lease: section while others do; give every database one (type static for a fixed primary)", what), 2)
		}
		if !asPrimary && dbc.Follower == nil {
			continue
		}
		if dbc.IsDir() {
			d, err := newDirLease(ctx, c, cfg, dbc, logger, reg, metrics, asPrimary, onFatal)
			if errors.Is(err, storage.ErrNoCreateOnly) {
				return cli.Exit(err, 2)
			} else if err != nil {
				return cli.Exit(err, 1)
			}
			dirs = append(dirs, d)
			continue
		}
		n, err := newNode(ctx, c, cfg, dbc, logger, reg, metrics)
		if err != nil {
			return cli.Exit(err, 1)
		}
		nodes = append(nodes, n)
	}
	if len(nodes) == 0 && len(dirs) == 0 {
		return cli.Exit("no database to run: add a follower: section to follow", 2)
	}
	// The databases found now; each directory's nodes start below.
	firsts := make([]int, len(dirs))
	for i, d := range dirs {
		n, err := d.start(ctx)
		if err != nil {
			stop()
			for _, d := range dirs {
				d.wg.Wait()
			}
			return cli.Exit(err, 1)
		}
		firsts[i] = n
	}
	all := func() []*promote.Node {
		out := slices.Clone(nodes)
		for _, d := range dirs {
			out = append(out, d.all()...)
		}
		return out
	}
	healthy := func() error {
		err := nodesHealthy(all())
		for _, d := range dirs {
			err = errors.Join(err, d.healthy())
		}
		return err
	}

	addr := cfg.Addr
	if c.IsSet("addr") {
		addr = c.String("addr")
	}
	if addr != "" {
		find := func(name string) (*promote.Node, error) { return findNode(nodes, dirs, name) }
		srv, err := httpserver.Start(httpserver.Options{
			Addr:     addr,
			Gatherer: reg,
			Healthy:  healthy,
			// One database's own health (its Consul check, a follower's
			// probe of the holder): a failing database of a directory
			// must not make its healthy neighbours look dead.
			HealthyDB: func(name string) error {
				n, err := find(name)
				if err != nil {
					return err
				}
				return n.Healthy()
			},
			Status: func() any { return dirNodesStatus(nodes, dirs) },
			Routes: func(mux *http.ServeMux) {
				promote.HandleLookup(mux, find)
				mux.HandleFunc("GET /status/db/{name...}", func(w http.ResponseWriter, r *http.Request) {
					n, err := find(r.PathValue("name"))
					if err != nil {
						http.Error(w, err.Error(), http.StatusNotFound)
						return
					}
					w.Header().Set("Content-Type", "application/json")
					_ = json.NewEncoder(w).Encode(nodeDoc(n))
				})
			},
		})
		if err != nil {
			stop()
			for _, d := range dirs {
				d.wg.Wait()
			}
			return cli.Exit(err, 1)
		}
		defer srv.Close()
		logger.Info("serving health, status, metrics and promotion", "addr", srv.Addr())
	}

	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	nodesDone := make(chan struct{})
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = n.Run(ctx, asPrimary)
			if errs[i] != nil {
				logger.Error("database stopped", "db", n.Name(), "error", errs[i])
				stop() // one fatal error stops the process, as replicate does
			}
		}()
	}
	for i, d := range dirs {
		wg.Add(1)
		go func() { defer wg.Done(); d.Run(ctx, firsts[i]) }()
	}
	defer rescanOnHUP(dirs, logger)()
	go func() { wg.Wait(); close(nodesDone) }()

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	// -exec: the application runs as a child; signals go to it, and when it
	// exits the nodes ship what it committed and the process exits with
	// its status.
	var app *execApp
	if appCmd != "" {
		var err error
		if app, err = startExec(appCmd, logger); err != nil {
			stop()
			<-nodesDone
			return cli.Exit(err, 1)
		}
	}
	exitCode := 0
wait:
	for {
		select {
		case sig := <-sigs:
			if app != nil && !app.exited() {
				logger.Info("forwarding signal to application", "signal", sig.String())
				_ = app.signal(sig)
				continue
			}
			logger.Info("signal received: stopping", "signal", sig.String())
			break wait
		case <-app.Done():
			exitCode = app.exitStatus()
			logger.Info("application exited: shipping what is committed", "status", exitCode)
			break wait
		case <-nodesDone:
			break wait
		}
	}
	stop()
	<-nodesDone
	if app != nil && !app.exited() {
		_ = app.signal(syscall.SIGTERM)
	}
	if err := errors.Join(append(errs, fatal)...); err != nil {
		return cli.Exit(err, 1)
	}
	if exitCode != 0 {
		return cli.Exit(fmt.Sprintf("application exited with status %d", exitCode), exitCode)
	}
	return nil
}

// newNode builds one database's node: lease, replica clients, and the
// primary and follower settings it switches between.
func newNode(ctx context.Context, c *cli.Context, cfg *config.Config, dbc *config.DB, logger hclog.Logger,
	reg prometheus.Registerer, metrics *follower.Metrics) (*promote.Node, error) {
	// The config has filled in every lease default (node, type, consul
	// ttl); see config.Lease.
	node := nodeName(c, dbc)
	l, err := lease.New(dbc.Lease, dbc.Name(), logger.Named(dbc.Name()))
	if err != nil {
		return nil, fmt.Errorf("database %s: %w", dbc.Path, err)
	}
	followName := ""
	poll := time.Duration(0)
	auto := false
	if dbc.Follower != nil {
		followName, poll, auto = dbc.Follower.Replica, dbc.Follower.PollInterval, dbc.Follower.AutoPromote
	}
	if c.IsSet("poll-interval") {
		poll = c.Duration("poll-interval")
	}
	popts, _, err := primaryOptions(ctx, c, cfg, dbc, logger, reg) // a refused replica is logged there
	if err != nil {
		return nil, err
	}
	var followed storage.Client
	var others []storage.Client
	for i, r := range popts.Replicas {
		if followed == nil && (r.Name == followName || (followName == "" && i == 0)) {
			followed = r.Client
		} else {
			others = append(others, r.Client)
		}
	}
	if followed == nil {
		return nil, fmt.Errorf("database %s: no replica named %q to follow", dbc.Path, followName)
	}
	var publish func(context.Context, string) error
	var deadAfter time.Duration
	if dbc.Lease.Type == lease.TypeConsul {
		// A holder whose /healthz fails for a whole TTL is gone: Consul
		// would keep its session for up to another TTL.
		deadAfter = dbc.Lease.Consul.TTL
		if dbc.Lease.Consul.Mode == lease.ModeKV {
			// The renewals are the liveness signal: a holder that stops
			// renewing is taken over after ttl + drift, and a break would
			// only restart that wait.
			deadAfter = 0
		}
		// The role is published as a service tag, so that
		// primary.understudy-<db>.service.consul names the writer.
		if publish, err = promote.ConsulPublisher(dbc.Lease.Consul, dbc.Name(), node, dbc.Lease.AdvertiseURL); err != nil {
			return nil, fmt.Errorf("database %s: %w", dbc.Path, err)
		}
	}
	return promote.New(promote.Config{
		Published: publish,
		DeadAfter: deadAfter,
		Name:      dbc.Name(), Node: node, Lease: l,
		OnDemote: dbc.Lease.OnDemote, OnPromote: dbc.Lease.OnPromote, AutoPromote: auto,
		Primary: popts,
		Follower: follower.Config{Path: dbc.Path, Name: dbc.Name(), Client: followed, PollInterval: poll,
			Logger: logger, Metrics: metrics},
		Claim:  append([]storage.Client{followed}, others...),
		Logger: logger,
	})
}

func nodesHealthy(nodes []*promote.Node) error {
	var err error
	for _, n := range nodes {
		err = errors.Join(err, n.Healthy())
	}
	return err
}

// nodesStatus is /status for nodes: each database's primary or follower
// document, with its role, node name and fencing token.
func nodesStatus(nodes []*promote.Node) any {
	out := make([]map[string]any, 0, len(nodes))
	for _, n := range nodes {
		out = append(out, nodeDoc(n))
	}
	return map[string]any{"dbs": out}
}

// dirNodesStatus is nodesStatus with the databases of the dir: entries
// after the path: entries', each with lease_consul_requests: the requests
// its lease has sent to Consul since the start (the lease's cost).
func dirNodesStatus(nodes []*promote.Node, dirs []*dirLease) any {
	out := make([]map[string]any, 0, len(nodes))
	for _, n := range nodes {
		out = append(out, nodeDoc(n))
	}
	for _, d := range dirs {
		counts, _ := d.leaseRequests()
		for _, n := range d.all() {
			doc := nodeDoc(n)
			doc["lease_consul_requests"] = counts[n.Name()]
			out = append(out, doc)
		}
	}
	return map[string]any{"dbs": out}
}

// findNode returns the node a request names: a database's name (a path:
// entry's, or "<entry name>/<path relative to dir>" for a database of a
// dir: entry), or the path of a dir: entry's database relative to its
// directory (or absolute) when one directory has it; "" when the process
// runs one database.
func findNode(nodes []*promote.Node, dirs []*dirLease, name string) (*promote.Node, error) {
	var found []*promote.Node
	total := len(nodes)
	for _, n := range nodes {
		if n.Name() == name {
			return n, nil
		}
	}
	for _, d := range dirs {
		all := d.all()
		total += len(all)
		if rel, ok := strings.CutPrefix(name, d.entry.Name()+"/"); ok {
			if n := d.byRel(rel); n != nil {
				return n, nil
			}
		}
		if n := d.byRel(name); n != nil {
			found = append(found, n)
		}
		if name == "" && len(all) == 1 {
			found = append(found, all[0])
		}
	}
	if name == "" && len(nodes) == 1 && total == 1 {
		return nodes[0], nil
	}
	switch {
	case len(found) == 1:
		return found[0], nil
	case len(found) > 1:
		var names []string
		for _, n := range found {
			names = append(names, n.Name())
		}
		return nil, fmt.Errorf("database %q is in several directories here: name one of %s", name, strings.Join(names, ", "))
	case name == "":
		return nil, fmt.Errorf("this process runs %d databases: name one with db", total)
	}
	return nil, fmt.Errorf("no database %q here (a path: entry's name, or a dir: entry's database as NAME/REL or REL)", name)
}

// nodeDoc is one node's /status document.
func nodeDoc(n *promote.Node) map[string]any {
	st := n.Status()
	var base any = struct{}{}
	switch {
	case st.Primary != nil:
		base = st.Primary.Document()
	case st.Follower != nil:
		base = st.Follower
	}
	doc := map[string]any{}
	if b, err := json.Marshal(base); err == nil {
		_ = json.Unmarshal(b, &doc)
	}
	doc["role"] = st.Role
	doc["name"] = st.Name
	doc["node"] = st.Node
	doc["fencing_token"] = st.FencingToken
	doc["reason"] = st.Reason
	doc["promotions"] = st.Promotions
	if st.Diverged != "" {
		doc["diverged_saved_to"] = st.Diverged
	}
	if !st.SafeUntil.IsZero() {
		doc["safe_until"] = st.SafeUntil.UTC()
	}
	return doc
}
