package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/urfave/cli/v2"

	"github.com/understudy-db/understudy/internal/litestream03"
	"github.com/understudy-db/understudy/internal/restore"
	"github.com/understudy-db/understudy/internal/storage"
)

// Litestream 0.3 replicas (generations/ layout): the glue between the
// commands and internal/litestream03. Each command calls in at one place.

// restore's flags for 0.3 replicas, named as in 0.3.
var (
	generationFlag = &cli.StringFlag{Name: "generation", Usage: "Litestream 0.3 replica: restore from generation `NAME` (as `understudy snapshots` lists them)"}
	indexFlag      = &cli.StringFlag{Name: "index", Usage: "Litestream 0.3 replica: restore up to WAL `INDEX` (hex, inclusive) of -generation"}
)

// load03 lists a store's 0.3 tree (empty when the store cannot hold one).
func load03(ctx context.Context, client storage.Client) (litestream03.Replica, error) {
	kr, ok := client.(storage.KeyReader)
	if !ok {
		return litestream03.Replica{}, nil
	}
	return litestream03.Load(ctx, kr)
}

// wantRestore03 decides whether restore reads the 0.3 tree: when asked for
// (-generation, -index), or when the LTX history cannot restore the target
// (none there yet, or the time is before it) and 0.3 generations exist.
func wantRestore03(c *cli.Context, rep *replicaArg, target restore.Target) (bool, error) {
	if c.IsSet("generation") || c.IsSet("index") {
		if c.IsSet("txid") {
			return false, errors.New("restore: -txid is for Understudy's LTX history; -generation/-index are for a Litestream 0.3 replica: give one or the other")
		}
		return true, nil
	}
	if target.TXID != 0 {
		return false, nil
	}
	// The 0.3 tree first: on a replica without one it is one empty LIST,
	// where planning the LTX restore twice would list every level again.
	r, lerr := load03(c.Context, rep.client)
	if lerr != nil {
		rep.log.Warn("cannot list Litestream 0.3 generations", "error", lerr)
		return false, nil
	}
	if len(r.Generations) == 0 {
		return false, nil
	}
	_, err := restore.BuildPlan(c.Context, rep.client, target)
	return errors.Is(err, restore.ErrEmptyReplica) || errors.Is(err, restore.ErrNoSnapshot) || errors.Is(err, restore.ErrBeforeEarliest), nil
}

func target03(c *cli.Context, target restore.Target) (litestream03.Target, error) {
	t := litestream03.Target{Generation: c.String("generation"), Index: litestream03.NoIndex, Timestamp: target.Timestamp}
	if t.Generation != "" && !litestream03.IsGenerationName(t.Generation) {
		return t, fmt.Errorf("invalid -generation %q: a Litestream 0.3 generation is 16 lowercase hex digits", t.Generation)
	}
	if s := c.String("index"); s != "" {
		v, err := strconv.ParseUint(s, 16, 31)
		if err != nil {
			return t, fmt.Errorf("invalid -index %q: give the WAL index in hex, as `understudy ltx` lists it for a Litestream 0.3 replica", s)
		}
		if !t.Timestamp.IsZero() {
			return t, errors.New("restore: give -index or -timestamp, not both")
		}
		t.Index = int(v)
	}
	return t, nil
}

// runRestore03 restores from the 0.3 tree of rep into out.
func runRestore03(c *cli.Context, rep *replicaArg, target restore.Target, out string, dryRun bool) error {
	t, err := target03(c, target)
	if err != nil {
		return err
	}
	r, err := load03(c.Context, rep.client)
	if err != nil {
		return fmt.Errorf("restore from %s replica %s: %w", rep.client.Type(), rep.name, err)
	}
	plan, err := litestream03.PlanRestore(r, t)
	if errors.Is(err, litestream03.ErrNoGenerations) && c.Bool("if-replica-exists") {
		rep.log.Info("replica holds nothing to restore, skipping (-if-replica-exists)", "replica", rep.name, "reason", err)
		return nil
	} else if err != nil {
		return fmt.Errorf("restore from Litestream 0.3 %s replica %s: %w", rep.client.Type(), rep.name, err)
	}
	if dryRun {
		return printPlan03(c.App.Writer, rep.name, t, plan)
	}
	check, err := integrityFlag(c)
	if err != nil {
		return err
	}
	rep.log.Info("restoring a Litestream 0.3 replica", "generation", plan.Generation, "snapshot_index", fmt.Sprintf("%08x", plan.Snapshot.Index),
		"last_index", fmt.Sprintf("%08x", plan.LastIndex()), "segments", len(plan.Segments), "bytes", plan.Bytes())
	res, err := litestream03.Restore(c.Context, rep.client.(storage.KeyReader), plan, out, func(tmp string) error {
		return restore.CheckIntegrity(c.Context, tmp, check)
	})
	if err != nil {
		return fmt.Errorf("restore from Litestream 0.3 %s replica %s: %w", rep.client.Type(), rep.name, err)
	}
	rep.log.Info("restore complete", "output", out, "generation", plan.Generation, "index", fmt.Sprintf("%08x", plan.LastIndex()),
		"checksum", res.Checksum, "pages", res.PageCount, "frames", res.Frames, "elapsed", res.Elapsed.Round(time.Millisecond))
	rep.log.Info("to move to Understudy: point `understudy replicate` at the restored database and this replica; it starts its own history beside the 0.3 generations, which stay restorable with -generation")
	return nil
}

func printPlan03(w io.Writer, replica string, t litestream03.Target, p litestream03.Plan) error {
	fmt.Fprintf(w, "replica:    %s (Litestream 0.3 layout)\ntarget:     %s\ngeneration: %s\nsnapshot:   index %08x (%d bytes)\nrestores:   up to WAL index %08x\nsegments:   %d (%d bytes in all)\n\n",
		replica, t, p.Generation, p.Snapshot.Index, p.Snapshot.Size, p.LastIndex(), len(p.Segments), p.Bytes())
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "INDEX\tOFFSET\tSIZE\tCREATED")
	for _, s := range p.Segments {
		fmt.Fprintf(tw, "%08x\t%08x\t%d\t%s\n", s.Index, s.Offset, s.Size, s.CreatedAt.Format(time.RFC3339))
	}
	return tw.Flush()
}

// row03 is one 0.3 object in `ltx`/`snapshots` output; in JSON its
// "format" field tells it from an LTX file's row.
type row03 struct {
	Format     string    `json:"format"` // "litestream-0.3"
	Kind       string    `json:"kind"`   // "snapshot" or "wal"
	Generation string    `json:"generation"`
	Index      int       `json:"index"`
	Offset     int64     `json:"offset"`
	Size       int64     `json:"size"`
	CreatedAt  time.Time `json:"created_at"`
}

// list03 lists the 0.3 objects (only snapshots when snapshotsOnly).
func list03(ctx context.Context, client storage.Client, snapshotsOnly bool) ([]row03, error) {
	r, err := load03(ctx, client)
	if err != nil {
		return nil, err
	}
	var rows []row03
	for _, g := range r.Generations {
		for _, s := range g.Snapshots {
			rows = append(rows, row03{Format: "litestream-0.3", Kind: "snapshot", Generation: g.Name, Index: s.Index, Size: s.Size, CreatedAt: s.CreatedAt})
		}
		if snapshotsOnly {
			continue
		}
		for _, s := range g.Segments {
			rows = append(rows, row03{Format: "litestream-0.3", Kind: "wal", Generation: g.Name, Index: s.Index, Offset: s.Offset, Size: s.Size, CreatedAt: s.CreatedAt})
		}
	}
	return rows, nil
}

func printRows03(w io.Writer, rows []row03) error {
	fmt.Fprintln(w, "Litestream 0.3 generations (restore with: understudy restore [-generation NAME [-index INDEX]] -o PATH ...):")
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "GENERATION\tKIND\tINDEX\tOFFSET\tSIZE\tCREATED")
	for _, r := range rows {
		off := "-"
		if r.Kind == "wal" {
			off = fmt.Sprintf("%08x", r.Offset)
		}
		fmt.Fprintf(tw, "%s\t%s\t%08x\t%s\t%d\t%s\n", r.Generation, r.Kind, r.Index, off, r.Size, r.CreatedAt.Format(time.RFC3339))
	}
	return tw.Flush()
}

// refuseFollow03 fails a follower whose replica holds only 0.3 generations:
// it would wait forever for LTX files that never come.
func refuseFollow03(ctx context.Context, client storage.Client, where, localPath string) error {
	if _, err := restore.Latest(ctx, client); !errors.Is(err, restore.ErrEmptyReplica) {
		return nil
	}
	r, err := load03(ctx, client)
	if err != nil || len(r.Generations) == 0 {
		return nil
	}
	return fmt.Errorf("follow: replica %s holds only Litestream 0.3 generations (%s), which a follower cannot follow: "+
		"restore it once (understudy restore -o %s %s), run `understudy replicate` on that database so an LTX history starts beside them, and follow that",
		where, strings.Join(r.Names(), ", "), localPath, where)
}

// note03 logs, when a replica that replicate starts on holds 0.3
// generations, that they stay and how to restore them. It runs in the
// background: a large 0.3 tree takes many list calls.
func note03(ctx context.Context, client storage.Client, log hclog.Logger, db, replica, where string) {
	go func() {
		r, err := load03(ctx, client)
		if err != nil || len(r.Generations) == 0 {
			return
		}
		newest := r.Generations[0]
		for _, g := range r.Generations {
			if g.UpdatedAt.After(newest.UpdatedAt) {
				newest = g
			}
		}
		log.Warn("replica holds Litestream 0.3 generations (generations/); Understudy leaves them as they are and writes its own history beside them",
			"db", db, "replica", replica, "generations", strings.Join(r.Names(), ","), "newest", newest.Name, "newest_updated", newest.UpdatedAt.Format(time.RFC3339),
			"restore_old", fmt.Sprintf("understudy restore -generation %s -o PATH %s", newest.Name, where))
	}()
}
