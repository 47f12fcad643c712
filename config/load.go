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
	var uses []envUse
	if expandEnv {
		// The whole file, before YAML parsing, as Litestream does: a value
		// that holds YAML syntax (": ", "#", a leading "*" or "&") must be
		// quoted in the file ("${SECRET}"). A literal $ needs -no-expand-env.
		data, uses = expandVars(data)
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
	c.emptyEnv = d.envRefs(uses)
	if len(d.errs) > 0 {
		return nil, d.errs.explainEnv(c.emptyEnv, false)
	}
	c.applyDefaults()
	k := &checker{file: filename, lines: d.lines, paths: d.paths}
	if errs := k.check(c); len(errs) > 0 {
		return nil, errs.explainEnv(c.emptyEnv, true)
	}
	c.replicaPaths = map[*Replica]string{}
	for obj, p := range d.paths {
		if r, ok := obj.(*Replica); ok {
			c.replicaPaths[r] = p
		}
	}
	return c, nil
}

// yamlError turns a YAML syntax error into an Error with the line of the
// problem. Its messages describe the syntax, never the values, so no secret
// reaches them.
func yamlError(filename string, data []byte, err error) *Error {
	e := &Error{File: filename}
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	reported := 0
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		reported, _ = strconv.Atoi(m[1])
		msg = m[2]
	}
	e.Line = syntaxLine(data, msg, reported)
	e.Msg = "invalid YAML: " + msg
	if strings.Contains(msg, "cannot start any token") && tabIndentRE.Match(data) {
		e.Msg += " (YAML is indented with spaces, not tabs)"
	}
	return e
}

// syntaxLine finds the line of a YAML syntax error whose message (without
// its "line N: ") is msg. The YAML library names the line where the
// enclosing construct begins, not the offending token: a bad key on line 5
// of a mapping that starts on line 2 comes as "line 1" (the parser counts
// that mark from 0), and the token's own position is not exposed. A file
// cut after the offending line fails with the same message, and one cut
// before it does not (a cut between lines leaves valid YAML, except inside a
// quoted value or a [ ] / { } collection, which then fails where it opens,
// the line to look at). So the first such cut names the line. The problem
// is never above the reported line, and a config file is short enough to
// parse once per line. reported is kept when no cut reproduces the message.
func syntaxLine(data []byte, msg string, reported int) int {
	lines := bytes.SplitAfter(data, []byte("\n"))
	for n := max(1, reported); n <= len(lines); n++ {
		if yamlSyntaxMsg(bytes.Join(lines[:n], nil)) == msg {
			return n
		}
	}
	return reported
}

// yamlSyntaxMsg is the YAML library's message for the first syntax error in
// data, without "yaml: " and "line N: ", or "" when there is none.
func yamlSyntaxMsg(data []byte) string {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for range 2 { // Parse reads a second document only to refuse it
		var n yaml.Node
		if err := dec.Decode(&n); err != nil {
			if errors.Is(err, io.EOF) {
				return ""
			}
			msg := strings.TrimPrefix(err.Error(), "yaml: ")
			if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
				msg = m[2]
			}
			return msg
		}
	}
	return ""
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
