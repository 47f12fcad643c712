package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/superfly/ltx"
	"github.com/urfave/cli/v2"

	"github.com/understudy-db/understudy/config"
	"github.com/understudy-db/understudy/internal/replicaclient"
	"github.com/understudy-db/understudy/internal/restore"
	"github.com/understudy-db/understudy/internal/storage"
	"github.com/understudy-db/understudy/internal/storage/file"
)

// listHeaderParallelism is how many header reads the listings keep in flight.
const listHeaderParallelism = 16

func init() {
	registerCommand(&cli.Command{
		Name:      "ltx",
		Usage:     "list the LTX files of a replica (level, TXID range, size, time, checksums)",
		ArgsUsage: "(DB_PATH | REPLICA_URL)",
		Flags: commonFlags(
			&cli.StringFlag{Name: "level", Value: "all", Usage: "level `N` (0-9) or all"},
			&cli.BoolFlag{Name: "json", Usage: "print JSON instead of a table"},
			&cli.StringFlag{Name: "replica", Usage: "replica `NAME` from the config (default: the one with the newest position)"},
		),
		Action: func(c *cli.Context) error {
			levels, err := parseLevelFlag(c.String("level"))
			if err != nil {
				return err
			}
			return runList(c, levels)
		},
	})
	registerCommand(&cli.Command{
		Name:      "snapshots",
		Usage:     "list the snapshots (level 9) of a replica",
		ArgsUsage: "(DB_PATH | REPLICA_URL)",
		Flags: commonFlags(
			&cli.BoolFlag{Name: "json", Usage: "print JSON instead of a table"},
			&cli.StringFlag{Name: "replica", Usage: "replica `NAME` from the config (default: the one with the newest position)"},
		),
		Action: func(c *cli.Context) error { return runList(c, []int{storage.SnapshotLevel}) },
	})
}

func parseLevelFlag(s string) ([]int, error) {
	if s == "" || s == "all" {
		var all []int
		for l := 0; l <= restore.MaxLevel; l++ {
			all = append(all, l)
		}
		return all, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > restore.MaxLevel {
		return nil, fmt.Errorf("invalid -level %q: use a number from 0 to %d, or all", s, restore.MaxLevel)
	}
	return []int{n}, nil
}

// fileRow is one listed file; the JSON form is for scripts.
type fileRow struct {
	Level             int          `json:"level"`
	MinTXID           ltx.TXID     `json:"min_txid"`
	MaxTXID           ltx.TXID     `json:"max_txid"`
	Size              int64        `json:"size"`
	CreatedAt         time.Time    `json:"created_at"`
	Timestamp         *time.Time   `json:"timestamp,omitempty"` // from the LTX header
	PageSize          uint32       `json:"page_size,omitempty"`
	Commit            uint32       `json:"commit,omitempty"` // database size in pages after the file
	Node              string       `json:"node,omitempty"`
	FencingToken      *uint64      `json:"fencing_token,omitempty"`
	PreApplyChecksum  ltx.Checksum `json:"pre_apply_checksum,omitempty"`
	PostApplyChecksum ltx.Checksum `json:"post_apply_checksum,omitempty"`
	Error             string       `json:"error,omitempty"`
}

func runList(c *cli.Context, levels []int) error {
	if c.NArg() != 1 {
		return fmt.Errorf("%s: give one DB_PATH or REPLICA_URL (got %d arguments)", c.Command.Name, c.NArg())
	}
	ctx := c.Context
	rep, err := openReplicaArg(c, c.Args().First(), c.String("replica"))
	if err != nil {
		return err
	}
	var files []storage.FileInfo
	for _, l := range levels {
		fs, err := restore.ListLevel(ctx, rep.client, l)
		if err != nil {
			return err
		}
		files = append(files, fs...)
	}
	rows := describeFiles(ctx, rep.client, files)
	var rows03 []row03
	if len(levels) > 1 || levels[0] == storage.SnapshotLevel {
		if rows03, err = list03(ctx, rep.client, len(levels) == 1); err != nil {
			return err
		}
	}
	if len(files) == 0 && len(rows03) == 0 {
		if err := explainEmpty(c, rep, levels); err != nil {
			return err
		}
	}
	if c.Bool("json") {
		enc := json.NewEncoder(c.App.Writer)
		enc.SetIndent("", "  ")
		all := []any{}
		for _, r := range rows {
			all = append(all, r)
		}
		for _, r := range rows03 {
			all = append(all, r)
		}
		return enc.Encode(all)
	}
	if len(rows) > 0 || len(rows03) == 0 {
		if err := printRows(c.App.Writer, rows); err != nil {
			return err
		}
	}
	if len(rows03) > 0 {
		if len(rows) > 0 {
			fmt.Fprintln(c.App.Writer)
		}
		return printRows03(c.App.Writer, rows03)
	}
	return nil
}

// explainEmpty is called when the levels listed hold no file. A replica
// that holds nothing in any level is an error (most often a mistyped path
// or bucket prefix, which a store cannot tell from an empty one); levels
// that are empty in a replica with files elsewhere are only noted.
func explainEmpty(c *cli.Context, rep *replicaArg, levels []int) error {
	all, err := restore.ListAll(c.Context, rep.client)
	if err != nil {
		return err
	}
	if len(all) == 0 {
		if r03, err := list03(c.Context, rep.client, false); err == nil && len(r03) > 0 {
			fmt.Fprintf(c.App.ErrWriter, "%s: replica %s holds no LTX files, only Litestream 0.3 generations (`understudy ltx` lists them)\n", c.Command.Name, rep.name)
			return nil
		}
		hint := "check the path (a mistyped one looks like this), or that a primary has replicated there"
		if fc, ok := storage.Unwrap(rep.client).(*file.Client); ok {
			if _, err := os.Stat(fc.Dir()); errors.Is(err, fs.ErrNotExist) {
				hint = "the directory " + fc.Dir() + " does not exist: check the path"
			}
		}
		return fmt.Errorf("%s: replica %s holds no LTX files in any level: %s", c.Command.Name, rep.name, hint)
	}
	var names []string
	for _, l := range levels {
		names = append(names, strconv.Itoa(l))
	}
	fmt.Fprintf(c.App.ErrWriter, "%s: replica %s has no files in level %s (it holds %d files in other levels)\n",
		c.Command.Name, rep.name, strings.Join(names, ", "), len(all))
	return nil
}

// describeFiles reads every file's header and metadata with a small range
// read. A file that cannot be read is listed with its error.
func describeFiles(ctx context.Context, client storage.Client, files []storage.FileInfo) []fileRow {
	rows := make([]fileRow, len(files))
	sem := make(chan struct{}, listHeaderParallelism)
	var wg sync.WaitGroup
	for i, f := range files {
		rows[i] = fileRow{Level: f.Level, MinTXID: f.MinTXID, MaxTXID: f.MaxTXID, Size: f.Size, CreatedAt: f.CreatedAt.UTC()}
		wg.Add(1)
		sem <- struct{}{}
		go func(i int, f storage.FileInfo) {
			defer wg.Done()
			defer func() { <-sem }()
			h, err := restore.ReadHeader(ctx, client, f)
			if err != nil {
				rows[i].Error = err.Error()
				return
			}
			ts := h.Time()
			rows[i].Timestamp = &ts
			rows[i].PageSize = h.Header.PageSize
			rows[i].Commit = h.Header.Commit
			if md := h.Metadata; md != nil {
				tok := md.FencingToken
				rows[i].Node, rows[i].FencingToken = md.Node, &tok
				rows[i].PreApplyChecksum, rows[i].PostApplyChecksum = md.PreApplyChecksum, md.PostApplyChecksum
			}
		}(i, f)
	}
	wg.Wait()
	return rows
}

func printRows(w io.Writer, rows []fileRow) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "LEVEL\tMIN_TXID\tMAX_TXID\tSIZE\tTIME\tPAGES\tPRE_APPLY\tPOST_APPLY\tNODE")
	for _, r := range rows {
		t := r.CreatedAt.Format(time.RFC3339)
		if r.Timestamp != nil {
			t = r.Timestamp.Format(ltx.RFC3339Milli)
		}
		pre, post, node := "-", "-", "-"
		if r.PostApplyChecksum != 0 {
			pre, post, node = r.PreApplyChecksum.String(), r.PostApplyChecksum.String(), r.Node
			if r.PreApplyChecksum == 0 {
				pre = "-"
			}
		}
		pages := strconv.FormatUint(uint64(r.Commit), 10)
		if r.Error != "" {
			pages, node = "?", "error: "+r.Error
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", r.Level, r.MinTXID, r.MaxTXID, r.Size, t, pages, pre, post, node)
	}
	return tw.Flush()
}

// replicaArg is the replica a command works on.
type replicaArg struct {
	name   string // replica name from the config, or the URL as given
	client storage.Client
	log    hclog.Logger
}

// isReplicaURL tells a replica URL from a database path: URLs have a scheme.
func isReplicaURL(arg string) bool { return strings.Contains(arg, "://") }

// openReplicaArg opens the replica named by the command's argument: a
// replica URL, or a database path whose replica comes from the config
// (name picks one; otherwise the one with the newest position).
func openReplicaArg(c *cli.Context, arg, name string) (*replicaArg, error) {
	ctx := c.Context
	if isReplicaURL(arg) {
		if name != "" {
			return nil, errors.New("-replica names a replica of a configured database; it cannot be used with a replica URL")
		}
		log, err := newLogger(c, "", "")
		if err != nil {
			return nil, err
		}
		r, err := config.ParseReplicaURL(arg)
		if err != nil {
			return nil, err
		}
		var opts []replicaclient.Option
		if cfg, err := loadConfigIfPresent(c); err != nil {
			return nil, err
		} else if cfg != nil {
			opts = append(opts, replicaclient.WithDefaultCredentials(cfg.AccessKeyID, cfg.SecretAccessKey))
		}
		client, err := replicaclient.New(ctx, r, opts...)
		if err != nil {
			return nil, err
		}
		return &replicaArg{name: arg, client: client, log: log}, nil
	}

	cfg, err := loadConfig(c)
	if err != nil {
		hint := ""
		if st, serr := os.Stat(arg); serr == nil && st.IsDir() {
			hint = fmt.Sprintf(" (for a file replica in that directory, give file://%s)", absOrSame(arg))
		}
		return nil, fmt.Errorf("%s is not a replica URL, so it is a database path, which needs the config%s: %w", arg, hint, err)
	}
	log, err := newLogger(c, cfg.Logging.Level, cfg.Logging.Type)
	if err != nil {
		return nil, err
	}
	path, _ := configPath(c)
	db := cfg.DB(arg)
	if db == nil {
		return nil, fmt.Errorf("database %s is not in the config %s: give its path as written there, or a replica URL", arg, path)
	}
	if len(db.Replicas) == 0 {
		return nil, fmt.Errorf("database %s has no replicas in the config %s", arg, path)
	}
	creds := replicaclient.WithDefaultCredentials(cfg.AccessKeyID, cfg.SecretAccessKey)
	replicas := db.Replicas
	if name != "" {
		r := db.Replica(name)
		if r == nil {
			return nil, fmt.Errorf("database %s has no replica named %q in the config %s (it has: %s)", arg, name, path, replicaNames(db.Replicas))
		}
		replicas = []*config.Replica{r}
	}
	var (
		best    *replicaArg
		bestPos ltx.TXID
		errs    []string
	)
	for _, r := range replicas {
		client, err := replicaclient.New(ctx, r, creds)
		if err != nil {
			return nil, fmt.Errorf("replica %s of %s: %w", r.Name, arg, err)
		}
		ra := &replicaArg{name: r.Name, client: client, log: log.With("replica", r.Name)}
		if len(replicas) == 1 {
			return ra, nil
		}
		pos, err := restore.Latest(ctx, client)
		if err != nil {
			if !errors.Is(err, restore.ErrEmptyReplica) {
				log.Warn("cannot read replica's position; not choosing it", "replica", r.Name, "error", err)
				errs = append(errs, r.Name+": "+err.Error())
			}
			continue
		}
		if best == nil || pos.TXID > bestPos {
			best, bestPos = ra, pos.TXID
		}
	}
	if best == nil {
		if len(errs) > 0 {
			return nil, fmt.Errorf("no replica of %s could be read: %s", arg, strings.Join(errs, "; "))
		}
		// Every replica is empty: hand back the first so the caller reports it.
		client, err := replicaclient.New(ctx, replicas[0], creds)
		if err != nil {
			return nil, err
		}
		return &replicaArg{name: replicas[0].Name, client: client, log: log.With("replica", replicas[0].Name)}, nil
	}
	log.Debug("chose the replica with the newest position", "replica", best.name, "txid", bestPos)
	return best, nil
}

// loadConfigIfPresent loads the config when one was named or the default
// file exists; a replica URL needs none.
func loadConfigIfPresent(c *cli.Context) (*config.Config, error) {
	path, explicit := configPath(c)
	if !explicit {
		if _, err := os.Stat(path); err != nil {
			return nil, nil
		}
	}
	return loadConfig(c)
}

func replicaNames(rs []*config.Replica) string {
	var names []string
	for _, r := range rs {
		names = append(names, r.Name)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

func absOrSame(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}
