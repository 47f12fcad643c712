package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/understudy-db/understudy/config"
	"github.com/understudy-db/understudy/internal/replicaclient"
	"github.com/understudy-db/understudy/internal/restore"
	"github.com/understudy-db/understudy/internal/storage"
)

// defaultParallelDBs is how many databases a restore of a whole prefix
// restores at once (each with -parallelism downloads of its own).
const defaultParallelDBs = 4

// The flags of a restore of a whole prefix.
var (
	dirOutFlag = &cli.StringFlag{Name: "dir-out", Usage: "restore every database below the prefix (a dir: entry's path, or a replica URL of the prefix) into `DIR`, " +
		"each at its path relative to the prefix; no file there is overwritten"}
	parallelDBsFlag = &cli.IntFlag{Name: "parallel-dbs", Value: defaultParallelDBs, Usage: "with -dir-out: databases restored at once"}
)

// dirEntryArg returns the dir: entry of the config whose directory is arg,
// or nil (a URL, no config, or no such entry).
func dirEntryArg(c *cli.Context, arg string) (*config.DB, error) {
	if isReplicaURL(arg) {
		return nil, nil
	}
	cfg, err := loadConfigIfPresent(c)
	if err != nil || cfg == nil {
		return nil, err
	}
	abs := absOrSame(arg)
	for _, db := range cfg.DBs {
		if db.IsDir() && db.Dir == abs {
			return db, nil
		}
	}
	return nil, nil
}

// wantRestoreDir tells whether the restore is of a whole prefix: -dir-out
// is given, or the argument is a dir: entry of the config.
func wantRestoreDir(c *cli.Context) bool {
	if c.IsSet("dir-out") {
		return true
	}
	// A config that does not load is reported by the restore of one
	// database, which needs it too, in its own words.
	entry, err := dirEntryArg(c, c.Args().First())
	return err == nil && entry != nil
}

// openPrefixArg opens the store of the prefix the argument names: a
// replica URL, or a dir: entry of the config (its -replica, or its only
// replica).
func openPrefixArg(c *cli.Context, arg string) (*replicaArg, error) {
	name := c.String("replica")
	if isReplicaURL(arg) {
		return openReplicaArg(c, arg, name)
	}
	cfg, err := loadConfig(c)
	if err != nil {
		return nil, fmt.Errorf("%s is not a replica URL, so it is a dir: entry's directory, which needs the config: %w", arg, err)
	}
	path, _ := configPath(c)
	entry, err := dirEntryArg(c, arg)
	if err != nil {
		return nil, err
	}
	if entry == nil {
		if cfg.DB(arg) != nil {
			return nil, fmt.Errorf("%s is one database in the config %s, not a dir: entry: restore it with -o OUT instead of -dir-out", arg, path)
		}
		return nil, fmt.Errorf("%s is not the dir: of an entry in the config %s: give the directory as written there, or the replica URL of the prefix", arg, path)
	}
	log, err := newLogger(c, cfg.Logging.Level, cfg.Logging.Type)
	if err != nil {
		return nil, err
	}
	var r *config.Replica
	switch {
	case name != "":
		if r = entry.Replica(name); r == nil {
			return nil, fmt.Errorf("directory %s has no replica named %q in the config %s (it has: %s)", arg, name, path, replicaNames(entry.Replicas))
		}
	case len(entry.Replicas) == 1:
		r = entry.Replicas[0]
	case len(entry.Replicas) == 0:
		return nil, fmt.Errorf("directory %s has no replicas in the config %s", arg, path)
	default:
		return nil, fmt.Errorf("directory %s has several replicas in the config %s: choose one with -replica (one of: %s)", arg, path, replicaNames(entry.Replicas))
	}
	client, err := replicaclient.New(c.Context, r, replicaclient.WithDefaultCredentials(cfg.AccessKeyID, cfg.SecretAccessKey))
	if err != nil {
		return nil, withEmptyEnv(fmt.Errorf("directory %s: replica %s: %w", arg, r.Name, err), cfg, r)
	}
	return &replicaArg{name: r.Name, client: client, log: log.With("replica", r.Name)}, nil
}

// dirTarget is one database of the prefix and where it is restored.
type dirTarget struct{ rel, out string }

// restoreDirCmd restores every database below the prefix the argument
// names into outDir (the entry's own directory when -dir-out is not
// given), each at its path relative to the prefix, -parallel-dbs at a
// time. Each restore is the single-database restore, verified the same
// way. No existing file is overwritten: any target that exists stops the
// command before anything is restored (unless -if-db-not-exists skips it).
func restoreDirCmd(c *cli.Context, dryRun bool, target restore.Target, check restore.IntegrityCheck, par int) error {
	arg := c.Args().First()
	for _, f := range []string{"o", "txid", "generation", "index"} {
		if c.IsSet(f) {
			return fmt.Errorf("restore of a directory: -%s cannot be used (each database has its own TXIDs and its own output path): "+
				"give -dir-out DIR and, if needed, -timestamp; or restore one database with -o", f)
		}
	}
	dbsPar := c.Int("parallel-dbs")
	if dbsPar < 1 {
		return fmt.Errorf("invalid -parallel-dbs %d: use 1 or more", dbsPar)
	}
	outDir := c.String("dir-out")
	// An empty -dir-out (an unset shell variable) must not mean the
	// entry's own directory.
	if c.IsSet("dir-out") && strings.TrimSpace(outDir) == "" {
		return errors.New("restore: -dir-out is empty: give the directory to restore the databases into")
	}
	if outDir == "" {
		entry, err := dirEntryArg(c, arg)
		if err != nil {
			return err
		}
		if entry == nil {
			return errors.New("restore: give -dir-out DIR, the directory to restore the databases into")
		}
		outDir = entry.Dir
	}
	rep, err := openPrefixArg(c, arg)
	if err != nil {
		return err
	}
	log := rep.log
	kr, ok := rep.client.(storage.KeyReader)
	if !ok {
		return fmt.Errorf("restore of a directory: a %s replica cannot be listed by prefix", rep.client.Type())
	}
	rels, err := storage.FindDatabases(c.Context, kr)
	if err != nil {
		return fmt.Errorf("restore of a directory from %s replica %s: %w", rep.client.Type(), rep.name, err)
	}
	if len(rels) == 0 {
		if c.Bool("if-replica-exists") {
			log.Info("no databases below the prefix, skipping (-if-replica-exists)", "replica", rep.name)
			return nil
		}
		return fmt.Errorf("restore of a directory: %s replica %s holds no databases (no <path>/ltx/<level>/ files below it): check the URL or the dir: entry's replica", rep.client.Type(), rep.name)
	}
	if rels[0] == "" {
		return fmt.Errorf("restore of a directory: %s replica %s holds one database at the prefix itself, not a directory of them: restore it with -o OUT", rep.client.Type(), rep.name)
	}

	var targets []dirTarget
	var exist []string
	for _, rel := range rels {
		out := filepath.Join(outDir, filepath.FromSlash(rel))
		if _, err := os.Lstat(out); err == nil {
			if c.Bool("if-db-not-exists") {
				log.Info("database already exists, skipping its restore (-if-db-not-exists)", "output", out)
				continue
			}
			exist = append(exist, out)
			continue
		} else if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("restore: check %s: %w", out, err)
		}
		targets = append(targets, dirTarget{rel, out})
	}
	if len(exist) > 0 {
		return fmt.Errorf("restore of a directory: %d of the %d databases exist in %s: %s; restore never overwrites a database, and nothing was restored: "+
			"choose another -dir-out, remove them, or give -if-db-not-exists to restore only the missing ones", len(exist), len(rels), outDir, namesUpTo(exist, 10))
	}
	if dryRun {
		tw := tabwriter.NewWriter(c.App.Writer, 0, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "DATABASE\tOUTPUT")
		for _, t := range targets {
			fmt.Fprintf(tw, "%s\t%s\n", t.rel, t.out)
		}
		return tw.Flush()
	}

	start := time.Now()
	failed := make([]string, len(targets))
	var wg sync.WaitGroup
	next := make(chan int)
	for range min(dbsPar, len(targets)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := restoreOne(c, rep, targets[i], target, check, par); err != nil {
					failed[i] = fmt.Sprintf("%s: %v", targets[i].rel, err)
				}
			}
		}()
	}
	for i := range targets {
		next <- i
	}
	close(next)
	wg.Wait()

	var failures []string
	for _, f := range failed {
		if f != "" {
			failures = append(failures, f)
		}
	}
	fmt.Fprintf(c.App.Writer, "restored %d databases into %s, %d failed (of %d below the prefix) in %s\n",
		len(targets)-len(failures), outDir, len(failures), len(rels), time.Since(start).Round(time.Millisecond))
	for _, f := range failures {
		fmt.Fprintf(c.App.Writer, "failed: %s\n", f)
	}
	if len(failures) > 0 {
		return fmt.Errorf("restore of a directory: %d of %d databases failed: %s", len(failures), len(targets), namesUpTo(failures, 3))
	}
	return nil
}

// restoreOne restores one database of a prefix, as a single restore does.
func restoreOne(c *cli.Context, rep *replicaArg, t dirTarget, target restore.Target, check restore.IntegrityCheck, par int) error {
	log := rep.log.With("db", t.rel)
	client, err := replicaclient.Sub(rep.client, t.rel)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(t.out), 0o755); err != nil {
		return fmt.Errorf("create the directory of %s: %w", t.out, err)
	}
	res, err := restore.Restore(c.Context, client, restore.Options{
		OutputPath: t.out, Target: target, Parallelism: par, IntegrityCheck: check, Logger: log,
	})
	if err != nil {
		return err
	}
	// restore.Restore logged the result.
	recordIdentity(log, t.out, res, rep.name+" at "+t.rel)
	return nil
}

// namesUpTo joins the first n of names, saying how many more there are.
func namesUpTo(names []string, n int) string {
	if len(names) <= n {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(names[:n], ", "), len(names)-n)
}
