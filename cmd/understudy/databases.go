package main

import (
	"errors"
	"fmt"
	"text/tabwriter"

	"github.com/urfave/cli/v2"
)

// Commands a Litestream user reaches for: databases (listed here as in
// Litestream), and wal/generations, which Understudy has under other names;
// those answer with the name to use instead of "No help topic".
func init() {
	registerCommand(&cli.Command{
		Name:  "databases",
		Usage: "list the databases in the config and their replicas",
		Flags: commonFlags(),
		Action: func(c *cli.Context) error {
			cfg, err := loadConfig(c)
			if err != nil {
				return cli.Exit(fmt.Errorf("databases: %w", err), 2)
			}
			tw := tabwriter.NewWriter(c.App.Writer, 0, 8, 2, ' ', 0)
			fmt.Fprintln(tw, "PATH\tREPLICA\tLOCATION")
			for _, db := range cfg.DBs {
				path := db.Path
				for _, r := range db.Replicas {
					fmt.Fprintf(tw, "%s\t%s\t%s\n", path, r.Name, r.Location())
					path = "" // the path once per database
				}
				if len(db.Replicas) == 0 {
					fmt.Fprintf(tw, "%s\t-\t-\n", path)
				}
			}
			return tw.Flush()
		},
	})
	for name, hint := range map[string]string{
		"wal": "Understudy calls this `ltx`: its history is LTX files, listed with `understudy ltx DB_PATH|REPLICA_URL` " +
			"(a Litestream 0.3 replica's WAL segments are listed there too)",
		"generations": "Understudy has no generations: its history is one chain of TXIDs, listed with `understudy ltx` and " +
			"`understudy snapshots`; a Litestream 0.3 replica's generations are listed there too, and restore with `understudy restore -generation NAME`",
	} {
		registerCommand(&cli.Command{
			Name:            name,
			Usage:           "(Litestream's name) " + hint,
			Hidden:          true,
			SkipFlagParsing: true,
			Action: func(c *cli.Context) error {
				return cli.Exit(fmt.Sprintf("%s: %s", name, hint), 2)
			},
		})
	}
}

// configuredRestorePath is where `restore DB_PATH` without -o writes, as
// Litestream's restore does: the configured path of that database. (The
// restore still refuses to overwrite an existing file; -if-db-not-exists
// skips it.) A replica URL names no database, so it needs -o.
func configuredRestorePath(c *cli.Context, arg string) (string, error) {
	const need = "restore: -o OUT is required: the path to write the database to (it must not exist)"
	if isReplicaURL(arg) {
		return "", errors.New(need + "; without -o only a DB_PATH from the config restores, to that path")
	}
	cfg, err := loadConfig(c)
	if err != nil {
		return "", fmt.Errorf("%s, or a DB_PATH from a config: %w", need, err)
	}
	db := cfg.DB(arg)
	if db == nil {
		path, _ := configPath(c)
		return "", fmt.Errorf("%s; without -o, DB_PATH must be a database in the config %s (%s is not)", need, path, arg)
	}
	return db.Path, nil
}
