// Command understudy keeps a SQLite database safe off-machine and keeps warm
// standbys ready to take over. Each subcommand lives in its own file and
// registers itself with registerCommand; this file holds the global flags,
// logging and config loading every command shares.
package main

import (
	"fmt"
	"os"
	"sort"

	"github.com/hashicorp/go-hclog"
	"github.com/urfave/cli/v2"
)

// Version is set at build time with -ldflags "-X main.Version=...".
var Version = "dev"

var commands []*cli.Command

// registerCommand adds a subcommand; called from init in each command's file.
func registerCommand(c *cli.Command) { commands = append(commands, c) }

func main() {
	stopProfile := startCPUProfile()
	err := newApp().Run(os.Args)
	stopProfile()
	if err != nil {
		fmt.Fprintf(os.Stderr, "understudy: %v\n", err)
		code := 1
		if ec, ok := err.(cli.ExitCoder); ok && ec.ExitCode() != 0 {
			code = ec.ExitCode()
		}
		os.Exit(code)
	}
}

func newApp() *cli.App {
	sort.Slice(commands, func(i, j int) bool { return commands[i].Name < commands[j].Name })
	return &cli.App{
		Name:    "understudy",
		Usage:   "replicate a SQLite database off-machine and keep warm standbys",
		Version: Version,
		// urfave/cli prints errors itself unless told not to; main prints them
		// once, prefixed, and picks the exit code.
		ExitErrHandler:       func(*cli.Context, error) {},
		EnableBashCompletion: true,
		Flags:                globalFlags(),
		Commands:             append([]*cli.Command{versionCommand()}, commands...),
	}
}

func globalFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "config", Usage: "config file `PATH`", EnvVars: []string{"UNDERSTUDY_CONFIG"}, Value: defaultConfigPath},
		&cli.BoolFlag{Name: "no-expand-env", Usage: "do not expand $VAR and ${VAR} in the config file"},
		&cli.StringFlag{Name: "log-level", Usage: "trace, debug, info, warn or error (overrides the config's logging.level)"},
		&cli.StringFlag{Name: "log-format", Usage: "text or json (overrides the config's logging.type)"},
	}
}

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print the version",
		Action: func(c *cli.Context) error {
			fmt.Fprintln(c.App.Writer, "understudy", Version)
			return nil
		},
	}
}

// newLogger builds the process logger from the global flags, falling back to
// the config's logging section (level, typ may be empty).
func newLogger(c *cli.Context, level, typ string) (hclog.Logger, error) {
	if v := globalString(c, "log-level"); v != "" {
		level = v
	}
	if v := globalString(c, "log-format"); v != "" {
		typ = v
	}
	if level == "" {
		level = "info"
	}
	lvl := hclog.LevelFromString(level)
	if lvl == hclog.NoLevel {
		return nil, fmt.Errorf("invalid log level %q: use trace, debug, info, warn or error", level)
	}
	var json bool
	switch typ {
	case "", "text":
	case "json":
		json = true
	default:
		return nil, fmt.Errorf("invalid log format %q: use text or json", typ)
	}
	return hclog.New(&hclog.LoggerOptions{
		Name:       "understudy",
		Level:      lvl,
		JSONFormat: json,
		Output:     c.App.ErrWriter,
		TimeFormat: "2006-01-02T15:04:05.000Z07:00",
	}), nil
}
