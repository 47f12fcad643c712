package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/mattn/go-isatty"
	"github.com/superfly/ltx"
	"github.com/urfave/cli/v2"

	"github.com/understudy-db/understudy/internal/dbid"
	"github.com/understudy-db/understudy/internal/restore"
)

func init() {
	registerCommand(&cli.Command{
		Name:  "restore",
		Usage: "restore a database from a replica into a new file, at the newest position or at a TXID or time",
		Description: "Writes the database into a temp file beside OUT, verifies every file checksum, the chain of\n" +
			"database checksums and the final checksum, then renames it to OUT. OUT is never overwritten.\n" +
			"A replica that Litestream 0.3 wrote (generations/ layout) restores the same way: its newest state,\n" +
			"-timestamp, or -generation NAME [-index INDEX] as in Litestream 0.3; it is read when asked for, or\n" +
			"when Understudy's own history beside it cannot restore the target.\n" +
			"A result that no database checksum proves (a replica written by Litestream, or objects copied\n" +
			"without their metadata) gets PRAGMA quick_check first (-skip-integrity-check to skip it); a\n" +
			"malformed result never reaches OUT. A bad object (corrupt, foreign, not of this history) is\n" +
			"skipped when another path (another level, an older snapshot) restores the same TXID.\n" +
			"The file is created with mode 0666 less the umask, as SQLite creates databases.\n" +
			"SIGINT or SIGTERM stops the restore, removes the temp file and exits non-zero.\n" +
			"-dir-out OUT_DIR restores every database below a prefix (a dir: entry's directory from the config, or\n" +
			"the replica URL of the prefix), found with one listing, each into OUT_DIR at its path relative to the\n" +
			"prefix, -parallel-dbs at a time, each verified as above. If any of them exists in OUT_DIR, nothing is\n" +
			"restored. A dir: entry's directory without -dir-out restores into that directory. It prints how many\n" +
			"were restored and names each that failed; any failure exits non-zero.",
		ArgsUsage: "(DB_PATH | REPLICA_URL | -dir-out OUT_DIR (DIR | PREFIX_URL))",
		Flags: commonFlags(
			&cli.StringFlag{Name: "o", Aliases: []string{"output"}, Usage: "output `PATH`; must not exist"},
			&cli.StringFlag{Name: "replica", Usage: "replica `NAME` from the config (default: the one with the newest position)"},
			&cli.StringFlag{Name: "txid", Usage: "restore to `TXID` (hex, as in `understudy ltx`)"},
			&cli.StringFlag{Name: "timestamp", Usage: "restore to the newest position at or before `TIME` (RFC 3339)"},
			&cli.IntFlag{Name: "parallelism", Value: restore.DefaultParallelism, Usage: "files downloaded at once"},
			&cli.BoolFlag{Name: "if-db-not-exists", Usage: "exit successfully without restoring if OUT exists"},
			&cli.BoolFlag{Name: "if-replica-exists", Usage: "exit successfully without restoring if the replica holds nothing to restore"},
			&cli.StringFlag{Name: "integrity-check", Value: string(restore.IntegrityAuto), Usage: "SQLite check of the result before the rename: " +
				"auto (quick_check when no database checksum proves the result), none, quick or full"},
			&cli.BoolFlag{Name: "skip-integrity-check", Usage: "run no SQLite check, even on a result no database checksum proves (same as -integrity-check none)"},
			&cli.BoolFlag{Name: "dry-run", Usage: "print the plan (files per level, bytes) and exit"},
			generationFlag, indexFlag, dirOutFlag, parallelDBsFlag,
		),
		Action: runRestore,
	})
}

// parseTXID parses up to 16 hex digits (leading zeros optional).
func parseTXID(s string) (ltx.TXID, error) {
	s = strings.TrimPrefix(strings.ToLower(s), "0x")
	v, err := strconv.ParseUint(s, 16, 64)
	if err != nil || len(s) > 16 || v == 0 {
		return 0, fmt.Errorf("invalid TXID %q: give 1 to 16 hex digits, as `understudy ltx` prints them", s)
	}
	return ltx.TXID(v), nil
}

func restoreTarget(c *cli.Context) (restore.Target, error) {
	var t restore.Target
	if c.IsSet("txid") && c.IsSet("timestamp") {
		return t, errors.New("give -txid or -timestamp, not both")
	}
	// An empty value (-txid "" from an unset shell variable) must not mean
	// "the newest position": the caller asked for a particular one.
	if c.IsSet("txid") && strings.TrimSpace(c.String("txid")) == "" {
		return t, errors.New("-txid is empty: give a TXID of 1 to 16 hex digits, as `understudy ltx` prints them, or leave -txid out to restore the newest position")
	}
	if c.IsSet("timestamp") && strings.TrimSpace(c.String("timestamp")) == "" {
		return t, errors.New("-timestamp is empty: give a time in RFC 3339, e.g. 2006-01-02T15:04:05Z, or leave -timestamp out to restore the newest position")
	}
	if s := c.String("txid"); s != "" {
		txid, err := parseTXID(s)
		if err != nil {
			return t, err
		}
		t.TXID = txid
	}
	if s := c.String("timestamp"); s != "" {
		ts, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return t, fmt.Errorf("invalid -timestamp %q: use RFC 3339, e.g. 2006-01-02T15:04:05Z", s)
		}
		t.Timestamp = ts
	}
	return t, nil
}

func runRestore(c *cli.Context) error {
	if c.NArg() != 1 {
		return fmt.Errorf("restore: give one DB_PATH or REPLICA_URL (got %d arguments)", c.NArg())
	}
	dirMode := wantRestoreDir(c)
	out := c.String("o")
	dryRun := c.Bool("dry-run")
	if out == "" && !dryRun && !dirMode {
		p, err := configuredRestorePath(c, c.Args().First())
		if err != nil {
			return err
		}
		out = p
	}
	target, err := restoreTarget(c)
	if err != nil {
		return err
	}
	check, err := integrityFlag(c)
	if err != nil {
		return err
	}
	par := c.Int("parallelism")
	if par < 1 {
		return fmt.Errorf("invalid -parallelism %d: use 1 or more", par)
	}
	// SIGINT and SIGTERM cancel the restore, which removes its temp file.
	// Notify also takes SIGINT back from SIG_IGN, which a non-interactive
	// shell gives its background jobs.
	ctx, stopSignals := interruptible(c.Context)
	defer stopSignals()
	c.Context = ctx
	if dirMode {
		err = restoreDirCmd(c, dryRun, target, check, par)
	} else {
		err = restoreCmd(c, out, dryRun, target, check, par)
	}
	// A signal that came after the restore finished changes nothing.
	if sig := stopSignals(); sig != nil && err != nil {
		where := "nothing was written"
		if dirMode && !dryRun {
			where = "the databases restored before it stay, the others' temp files were removed and nothing was written at their paths"
		} else if out != "" && !dryRun {
			where = "the temp file was removed and nothing was written to " + out
		}
		name, code := sig.String(), 1
		if s, ok := sig.(syscall.Signal); ok {
			code = 128 + int(s) // as a shell reports a process killed by s
			name = map[syscall.Signal]string{syscall.SIGINT: "SIGINT", syscall.SIGTERM: "SIGTERM"}[s]
		}
		return cli.Exit(fmt.Sprintf("restore interrupted by %s: %s", name, where), code)
	}
	return err
}

// integrityFlag reads -integrity-check and -skip-integrity-check.
func integrityFlag(c *cli.Context) (restore.IntegrityCheck, error) {
	check, err := restore.ParseIntegrityCheck(c.String("integrity-check"))
	if err != nil {
		return "", err
	}
	if c.Bool("skip-integrity-check") {
		if c.IsSet("integrity-check") && check != restore.IntegrityNone {
			return "", fmt.Errorf("-skip-integrity-check contradicts -integrity-check %s: give one of them", check)
		}
		return restore.IntegrityNone, nil
	}
	return check, nil
}

// interruptible returns a context that SIGINT or SIGTERM cancels, and a
// function that stops listening and reports the signal that came (nil if
// none).
func interruptible(parent context.Context) (context.Context, func() os.Signal) {
	ctx, cancel := context.WithCancel(parent)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	var (
		mu  sync.Mutex
		got os.Signal
	)
	done := make(chan struct{})
	go func() {
		select {
		case sig := <-sigs:
			mu.Lock()
			got = sig
			mu.Unlock()
			cancel()
		case <-done:
		}
	}()
	var once sync.Once
	return ctx, func() os.Signal {
		once.Do(func() {
			signal.Stop(sigs)
			close(done)
			cancel()
		})
		mu.Lock()
		defer mu.Unlock()
		return got
	}
}

func restoreCmd(c *cli.Context, out string, dryRun bool, target restore.Target, check restore.IntegrityCheck, par int) error {
	rep, err := openReplicaArg(c, c.Args().First(), c.String("replica"))
	if err != nil {
		return err
	}
	log := rep.log

	if out != "" && !dryRun {
		if _, err := os.Lstat(out); err == nil {
			if c.Bool("if-db-not-exists") {
				log.Info("database already exists, skipping restore (-if-db-not-exists)", "output", out)
				return nil
			}
			return fmt.Errorf("restore: %s exists; restore never overwrites a database: choose another -o path or remove it (or give -if-db-not-exists to skip the restore when it exists)", out)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("restore: check %s: %w", out, err)
		}
	}

	if use03, err := wantRestore03(c, rep, target); err != nil {
		return err
	} else if use03 {
		return runRestore03(c, rep, target, out, dryRun)
	}

	noBackups := func(err error) bool {
		return c.Bool("if-replica-exists") && (errors.Is(err, restore.ErrEmptyReplica) || errors.Is(err, restore.ErrNoSnapshot))
	}
	if dryRun {
		plan, err := restore.BuildPlan(c.Context, rep.client, target)
		if noBackups(err) {
			log.Info("replica holds nothing to restore, skipping (-if-replica-exists)", "replica", rep.name, "reason", err)
			return nil
		} else if err != nil {
			return fmt.Errorf("restore from %s replica %s: %w", rep.client.Type(), rep.name, err)
		}
		return printPlan(c.App.Writer, rep.name, target, plan)
	}

	progress, finishProgress := progressLogger(log), func() {}
	if isTerminal(c.App.ErrWriter) && globalString(c, "log-format") != "json" {
		bar := &progressBar{w: c.App.ErrWriter}
		progress, finishProgress = bar.update, bar.finish
	}
	res, err := restore.Restore(c.Context, rep.client, restore.Options{
		OutputPath:     out,
		Target:         target,
		Parallelism:    par,
		IntegrityCheck: check,
		Logger:         log,
		Progress:       progress,
	})
	finishProgress()
	if noBackups(err) {
		log.Info("replica holds nothing to restore, skipping (-if-replica-exists)", "replica", rep.name, "reason", err)
		return nil
	} else if err != nil {
		return fmt.Errorf("restore from %s replica %s: %w", rep.client.Type(), rep.name, err)
	}
	recordIdentity(log, out, res, rep.name)
	mbps := float64(res.Bytes) / 1e6 / res.Elapsed.Seconds()
	var skipped []string
	for _, b := range res.Skipped {
		skipped = append(skipped, restore.FileName(b.File))
	}
	log.Info("restore complete", "output", out, "txid", res.TXID, "checksum", res.PostApplyChecksum, "verified", res.Verified,
		"integrity_check", res.Checked, "skipped", strings.Join(skipped, ", "),
		"size", int64(res.PageCount)*int64(res.PageSize), "elapsed", res.Elapsed.Round(time.Millisecond), "download_mb_per_s", fmt.Sprintf("%.1f", mbps))
	return nil
}

// progressLogger logs a line per progress report.
func progressLogger(log hclog.Logger) func(restore.Progress) {
	return func(p restore.Progress) {
		log.Info("progress", "files", fmt.Sprintf("%d/%d", p.Files, p.FilesTotal),
			"bytes", fmt.Sprintf("%d/%d", p.Bytes, p.BytesTotal), "elapsed", p.Elapsed.Round(time.Millisecond))
	}
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && (isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd()))
}

// progressBar draws one line that redraws itself: bytes, files, ETA.
type progressBar struct {
	w     io.Writer
	drawn bool
}

func (b *progressBar) update(p restore.Progress) {
	const width = 30
	frac := 0.0
	if p.BytesTotal > 0 {
		frac = float64(p.Bytes) / float64(p.BytesTotal)
	}
	if frac > 1 {
		frac = 1
	}
	fill := int(frac * width)
	eta := "-"
	if p.Bytes > 0 && p.Bytes < p.BytesTotal {
		eta = (time.Duration(float64(p.Elapsed) * float64(p.BytesTotal-p.Bytes) / float64(p.Bytes))).Round(time.Second).String()
	} else if p.Bytes >= p.BytesTotal {
		eta = "0s"
	}
	fmt.Fprintf(b.w, "\r\033[Krestoring [%s%s] %3.0f%%  %.1f/%.1f MB  %d/%d files  ETA %s",
		strings.Repeat("=", fill), strings.Repeat(" ", width-fill), frac*100,
		float64(p.Bytes)/1e6, float64(p.BytesTotal)/1e6, p.Files, p.FilesTotal, eta)
	b.drawn = true
	if p.Final {
		b.finish()
	}
}

func (b *progressBar) finish() {
	if b.drawn {
		fmt.Fprintln(b.w)
		b.drawn = false
	}
}

func printPlan(w io.Writer, replica string, target restore.Target, plan restore.Plan) error {
	fmt.Fprintf(w, "replica:  %s\ntarget:   %s\nrestores: TXID %s\nfiles:    %d (%d bytes)\n\n", replica, target, plan.Target, len(plan.Files), plan.Bytes())
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "LEVEL\tFILES\tBYTES")
	levels := plan.Levels()
	var keys []int
	for l := range levels {
		keys = append(keys, l)
	}
	sort.Sort(sort.Reverse(sort.IntSlice(keys)))
	for _, l := range keys {
		fmt.Fprintf(tw, "%d\t%d\t%d\n", l, levels[l].Files, levels[l].Bytes)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "LEVEL\tMIN_TXID\tMAX_TXID\tSIZE")
	for _, f := range plan.Files {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\n", f.Level, f.MinTXID, f.MaxTXID, f.Size)
	}
	return tw.Flush()
}

// recordIdentity records the identity of the restored history beside the
// output (dbid.RecordFor), so that replicate started on the restored file
// continues that history instead of refusing its replica as another
// database's. A failure does not undo the restore; it is explained.
func recordIdentity(log hclog.Logger, out string, res restore.Result, replica string) {
	origin := fmt.Sprintf("restored from replica %s at TXID %s", replica, res.TXID)
	if err := dbid.RecordFor(out, res.DatabaseID, origin); err != nil {
		log.Warn("could not record the restored history's database identity beside the output; replicating this file to the same replica "+
			"will need -adopt-replica unless it is still at the replica's newest position", "output", out, "database_id", res.DatabaseID, "error", err)
	}
}
