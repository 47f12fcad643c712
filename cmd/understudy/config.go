package main

import (
	"fmt"
	"slices"
	"strings"

	"github.com/hashicorp/go-hclog"
	"github.com/understudy-db/understudy/config"
	"github.com/urfave/cli/v2"
)

const defaultConfigPath = config.DefaultPath

// commonFlags are the global flags repeated on each command, so that both
// `understudy -config X replicate` and `understudy replicate -config X` work.
func commonFlags(extra ...cli.Flag) []cli.Flag { return append(globalFlags(), extra...) }

// globalFlag returns the value of a global flag as set on the command or
// before it (the innermost setting wins), else its default.
func globalFlag[T any](c *cli.Context, name string, get func(*cli.Context, string) T) T {
	for _, ctx := range c.Lineage() {
		if slices.Contains(ctx.LocalFlagNames(), name) {
			return get(ctx, name)
		}
	}
	return get(c, name)
}

func globalString(c *cli.Context, name string) string {
	return globalFlag(c, name, (*cli.Context).String)
}

func globalBool(c *cli.Context, name string) bool { return globalFlag(c, name, (*cli.Context).Bool) }

// configPath is the config file the command should read and whether the user
// named it (a default path that does not exist is not an error for commands
// that can run from arguments alone).
func configPath(c *cli.Context) (path string, explicit bool) {
	path = globalString(c, "config")
	return path, path != defaultConfigPath
}

// loadConfig reads the config file named by -config / $UNDERSTUDY_CONFIG.
func loadConfig(c *cli.Context) (*config.Config, error) {
	path, _ := configPath(c)
	return config.Load(path, !globalBool(c, "no-expand-env"))
}

// warnEmptyEnv logs each $VAR of the config file that expanded to nothing:
// an unset AWS_SECRET_ACCESS_KEY shows up later as refused or missing
// credentials, far from its cause.
func warnEmptyEnv(logger hclog.Logger, cfg *config.Config) {
	for _, e := range cfg.EmptyEnv() {
		logger.Warn("config: " + e.String())
	}
}

// withEmptyEnv adds to an error of replica r the variables of r's settings
// (and of the top-level credentials it falls back to) that expanded to
// nothing, the likely cause of a credentials or location error.
func withEmptyEnv(err error, cfg *config.Config, r *config.Replica) error {
	refs := cfg.EmptyEnvOf(r)
	if len(refs) == 0 {
		return err
	}
	parts := make([]string, len(refs))
	for i, e := range refs {
		parts[i] = e.String()
	}
	return fmt.Errorf("%w (in the config, which may be why: %s)", err, strings.Join(parts, "; "))
}
