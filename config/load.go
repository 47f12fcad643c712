package config

import (
	"fmt"
	"os"
)

// Load reads and validates the config file at path, expanding $VAR and
// ${VAR} first when expandEnv is true.
// (Minimal bootstrap version; the config issue replaces it with full parsing.)
func Load(path string, expandEnv bool) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config %s: %w", path, err)
	}
	_ = b
	return nil, fmt.Errorf("config %s: parsing not implemented yet", path)
}
