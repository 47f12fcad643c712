package config

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// EnvRef is a $VAR or ${VAR} of the config file that expanded to nothing:
// the variable is unset, or set to "". An empty credential or bucket is
// otherwise reported as missing, or as a storage error far from its cause.
type EnvRef struct {
	File string // as passed to Load or Parse
	Line int    // line of the reference in the file
	Path string // the key whose value holds it, e.g. "dbs[0].replicas[0].access-key-id"; "" when not known
	Name string // the variable, without $ and braces
	Set  bool   // set to the empty string (false: unset)
}

// String is "FILE:LINE: PATH: ${NAME} is not set, so it expands to nothing",
// for a warning or next to an error it explains.
func (e EnvRef) String() string {
	return (&Error{File: e.File, Line: e.Line, Path: e.Path, Msg: e.what()}).Error()
}

func (e EnvRef) what() string {
	if e.Set {
		return fmt.Sprintf("${%s} is set but empty, so it expands to nothing", e.Name)
	}
	return fmt.Sprintf("${%s} is not set, so it expands to nothing", e.Name)
}

// EmptyEnv lists the variables of the file that expanded to nothing, in file
// order, outside comments (the sample config mentions variables in
// commented-out lines). Commands log each as a warning at start-up.
func (c *Config) EmptyEnv() []EnvRef { return c.emptyEnv }

// EmptyEnvOf lists the variables that expanded to nothing in r's own keys
// and, for an S3 replica without a complete pair of its own credentials, in
// the top-level access-key-id and secret-access-key it would fall back to:
// what a storage error of r (say, credentials refused or missing) should
// name as its likely cause. r may also be a replica from a URL
// (ParseReplicaURL) that falls back to c's top-level credentials.
func (c *Config) EmptyEnvOf(r *Replica) []EnvRef {
	var out []EnvRef
	prefix, ok := c.replicaPaths[r]
	for _, e := range c.emptyEnv {
		switch {
		case ok && strings.HasPrefix(e.Path, prefix+"."):
			out = append(out, e)
		case r.Type == TypeS3 && (r.AccessKeyID == "" || r.SecretAccessKey == "") &&
			(e.Path == "access-key-id" || e.Path == "secret-access-key"):
			out = append(out, e)
		}
	}
	return out
}

// envUse is one reference that expanded to nothing: where it is in the
// file as written (line) and in the expanded text the YAML parser reads
// (outLine, outCol; 1-based, columns in characters as the parser counts).
type envUse struct {
	name            string
	set             bool
	line            int
	outLine, outCol int
}

// envMark brackets the index of a reference in the template expandVars
// builds; a config file holds no NUL bytes (YAML forbids them).
const envMark = "\x00"

// expandVars replaces $VAR and ${VAR} in data by the environment's values,
// exactly as os.ExpandEnv does (Litestream expands its config that way),
// and returns the references that expanded to nothing outside comments.
func expandVars(data []byte) ([]byte, []envUse) {
	s := string(data)
	if strings.Contains(s, envMark) {
		return []byte(os.ExpandEnv(s)), nil // not YAML; the parser says so
	}
	var names []string
	tmpl := os.Expand(s, func(name string) string {
		names = append(names, name)
		return envMark + strconv.Itoa(len(names)-1) + envMark
	})
	var out strings.Builder
	var uses []envUse
	var sc commentScanner
	line, outLine, outCol := 1, 1, 1
	for i := 0; i < len(tmpl); i++ {
		c := tmpl[i]
		if c == envMark[0] {
			end := i + 1 + strings.IndexByte(tmpl[i+1:], envMark[0])
			idx, _ := strconv.Atoi(tmpl[i+1 : end])
			v, set := os.LookupEnv(names[idx])
			if v == "" && !sc.inComment {
				uses = append(uses, envUse{name: names[idx], set: set, line: line, outLine: outLine, outCol: outCol})
			}
			out.WriteString(v)
			outLine, outCol = advance(v, outLine, outCol)
			for j := 0; j < len(v); j++ { // the parser reads the expanded text
				sc.next(v[j])
			}
			i = end
			continue
		}
		out.WriteByte(c)
		outLine, outCol = advance(tmpl[i:i+1], outLine, outCol)
		if c == '\n' {
			line++
		}
		sc.next(c)
	}
	return []byte(out.String()), uses
}

// advance moves a 1-based line and column (in characters) over s.
func advance(s string, line, col int) (int, int) {
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '\n':
			line, col = line+1, 1
		case s[i]&0xC0 != 0x80: // not a UTF-8 continuation byte
			col++
		}
	}
	return line, col
}

// commentScanner follows, byte by byte, whether a line of YAML is in a
// comment: a # at the start of a line or after a blank, outside a quoted
// value. A quote opens a quoted value only where a value starts (after
// "key: ", "- ", "[", "{", "," or at the start of a line); in the middle of
// a plain value (it's) it is a character like any other. A quoted value
// that goes on over several lines is not followed (rare in a config): a
// # after a blank on its later lines counts as a comment.
type commentScanner struct {
	inComment bool
	quote     byte // ' or " while inside a quoted value
	escaped   bool // after \ in a double-quoted value
	last      byte // the line's last byte (0 at its start)
	lastSolid byte // the line's last byte that is not a blank (0 when none)
}

func (s *commentScanner) next(c byte) {
	if c == '\n' {
		*s = commentScanner{}
		return
	}
	blank := c == ' ' || c == '\t'
	switch {
	case s.inComment:
	case s.quote == '"' && s.escaped:
		s.escaped = false
	case s.quote == '"' && c == '\\':
		s.escaped = true
	case s.quote != 0:
		if c == s.quote {
			s.quote = 0
		}
	case c == '#' && (s.last == 0 || s.last == ' ' || s.last == '\t'):
		s.inComment = true
	case (c == '\'' || c == '"') && s.atValueStart():
		s.quote = c
	}
	s.last = c
	if !blank {
		s.lastSolid = c
	}
}

// atValueStart tells whether a value may start here: at the start of the
// line or after its indentation, after "key: " or "- ", or right after
// [, { or , of a flow collection (and blanks).
func (s *commentScanner) atValueStart() bool {
	after := s.last == 0 || strings.IndexByte(" \t[{,", s.last) >= 0
	return after && (s.lastSolid == 0 || strings.IndexByte(":-[{,", s.lastSolid) >= 0)
}

// envRefs names the key each reference is in: the key on the reference's
// line (in the expanded text) that starts last before it.
func (d *decoder) envRefs(uses []envUse) []EnvRef {
	var out []EnvRef
	for _, u := range uses {
		ref := EnvRef{File: d.file, Line: u.line, Name: u.name, Set: u.set}
		bestCol := 0
		for p, l := range d.lines {
			c, ok := d.cols[p]
			if !ok || l != u.outLine || c > u.outCol {
				continue
			}
			if c > bestCol || c == bestCol && len(p) > len(ref.Path) {
				ref.Path, bestCol = p, c
			}
		}
		out = append(out, ref)
	}
	return out
}

// explainEnv adds to each error the variables that expanded to nothing in
// the key it is about, or (byName) in a key of the mapping it is about that
// its message names ("secret-access-key is set but access-key-id is not"):
// the likely cause, which the message alone does not show. byName is for
// the checks across values; the decoder's messages about a mapping list
// its known keys.
func (l ErrorList) explainEnv(refs []EnvRef, byName bool) ErrorList {
	for _, e := range l {
		var why []string
		for _, r := range refs {
			prefix := e.Path + "."
			if e.Path == "" {
				prefix = "" // the top level
			}
			rest, under := strings.CutPrefix(r.Path, prefix)
			named := byName && under && !strings.ContainsAny(rest, ".[") && strings.Contains(e.Msg, rest)
			if r.Path != "" && (r.Path == e.Path || named) {
				why = append(why, fmt.Sprintf("line %d: %s", r.Line, r.what()))
			}
		}
		if len(why) > 0 {
			e.Msg += " (" + strings.Join(why, "; ") + ")"
		}
	}
	return l
}
