package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Load reads, checks and completes the config file at path. With expandEnv,
// $VAR and ${VAR} anywhere in the file are replaced by the environment's
// values first (unset variables become empty), as Litestream does; without
// it (-no-expand-env) they stay as written.
//
// A file that cannot be read gives an error wrapping the os error (so
// errors.Is(err, fs.ErrNotExist) works). A file with problems gives an
// ErrorList naming each problem's file, line and key; see Error.
func Load(path string, expandEnv bool) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config file: %w", err)
	}
	return Parse(b, path, expandEnv)
}

// Parse is Load for a file already read; filename is used in messages only.
//
// The result has every default applied (intervals, levels, checkpoint
// thresholds, replica names, top-level credentials on S3 replicas without
// their own, follower and lease settings), database paths absolute (relative
// to the current directory, ~ to the home directory), and has passed every
// check. A file without dbs is valid here; commands that need one say so.
func Parse(data []byte, filename string, expandEnv bool) (*Config, error) {
	if expandEnv {
		// The whole file, before YAML parsing, as Litestream does: a value
		// that holds YAML syntax (": ", "#", a leading "*" or "&") must be
		// quoted in the file ("${SECRET}"). A literal $ needs -no-expand-env.
		data = []byte(os.ExpandEnv(string(data)))
	}
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil && !errors.Is(err, io.EOF) {
		return nil, ErrorList{yamlError(filename, data, err)}
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case err == nil:
		return nil, ErrorList{{File: filename, Line: extra.Line, Msg: "a second YAML document (after ---): put everything in one"}}
	case !errors.Is(err, io.EOF):
		return nil, ErrorList{yamlError(filename, data, err)}
	}

	var doc *yaml.Node
	if root.Kind == yaml.DocumentNode && len(root.Content) > 0 {
		doc = root.Content[0]
	}
	d := newDecoder(filename)
	c := d.config(doc)
	if len(d.errs) > 0 {
		return nil, d.errs
	}
	c.applyDefaults()
	k := &checker{file: filename, lines: d.lines, paths: d.paths}
	if errs := k.check(c); len(errs) > 0 {
		return nil, errs
	}
	return c, nil
}

// yamlError turns a YAML syntax error into an Error with its line where the
// YAML library gives one. Its messages describe the syntax, never the values,
// so no secret reaches them.
func yamlError(filename string, data []byte, err error) *Error {
	e := &Error{File: filename}
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		e.Line, _ = strconv.Atoi(m[1])
		msg = m[2]
	}
	e.Msg = "invalid YAML: " + msg
	if strings.Contains(msg, "cannot start any token") && tabIndentRE.Match(data) {
		e.Msg += " (YAML is indented with spaces, not tabs)"
	}
	return e
}

var (
	yamlLineRE  = regexp.MustCompile(`^line (\d+): (.*)$`)
	tabIndentRE = regexp.MustCompile(`(?m)^ *\t`)
)

// NewDB builds the configuration of one database from command-line
// arguments (`understudy replicate DB_PATH REPLICA_URL...`): the path resolved
// like a path: key, each replica parsed by ParseReplicaURL, every default
// applied and the same checks as a config file.
func NewDB(path string, replicaURLs ...string) (*DB, error) {
	abs, err := absPath(path)
	if err != nil {
		return nil, fmt.Errorf("database %s: %v", path, err)
	}
	db := &DB{Path: abs}
	k := &checker{paths: map[any]string{db: "database " + abs}}
	for _, u := range replicaURLs {
		r, err := ParseReplicaURL(u)
		if err != nil {
			return nil, err
		}
		k.paths[r] = "replica URL " + quoteURL(u)
		db.Replicas = append(db.Replicas, r)
	}
	c := &Config{DBs: []*DB{db}}
	c.applyDefaults()
	if errs := k.check(c); len(errs) > 0 {
		return nil, errs
	}
	return db, nil
}
