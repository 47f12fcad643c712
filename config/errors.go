package config

import (
	"fmt"
	"sort"
	"strings"
)

// Error is one problem in a config file. Its text is
//
//	FILE:LINE: PATH: MESSAGE
//
// for example
//
//	understudy.yml:7: dbs[0].replicas[0]: unknown key "sync-intervall" (did you mean "sync-interval"?)
//	understudy.yml:9: dbs[0].replicas[0].sync-interval: invalid duration "1x": use a number with a unit, e.g. 500ms, 10s, 5m or 24h
//
// PATH names the mapping a key is missing from or unknown in, or the key whose
// value is wrong, in the file's own spelling (dbs[0].replica when the file
// uses Litestream's single replica: key). Parts that are not known are left
// out: "FILE: PATH: MESSAGE", "FILE:LINE: MESSAGE". MESSAGE never contains
// the value of a secret (secret-access-key, consul token).
type Error struct {
	File string // as passed to Load or Parse; "" for values that came from no file
	Line int    // 1-based; 0 when unknown
	Path string // e.g. "dbs[0].replicas[0].sync-interval"; "" for the file as a whole
	Msg  string
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			fmt.Fprintf(&b, ":%d", e.Line)
		}
		b.WriteString(": ")
	}
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// ErrorList is every problem found in one file, in the order of the file,
// one per line when printed. Parse returns one when anything is wrong, so
// that a user fixes all the typos in one go.
type ErrorList []*Error

func (l ErrorList) Error() string {
	parts := make([]string, len(l))
	for i, e := range l {
		parts[i] = e.Error()
	}
	return strings.Join(parts, "\n")
}

// Unwrap lets errors.As find each *Error.
func (l ErrorList) Unwrap() []error {
	out := make([]error, len(l))
	for i, e := range l {
		out[i] = e
	}
	return out
}

func (l ErrorList) sorted() ErrorList {
	sort.SliceStable(l, func(i, j int) bool { return l[i].Line < l[j].Line })
	return l
}

// suggest returns the known key closest to an unknown one, or "" when none
// is close enough to be a likely typo. Case, '-' and '_' are ignored, so
// sync_interval and syncInterval find sync-interval.
func suggest(key string, known []string) string {
	norm := func(s string) string {
		return strings.NewReplacer("-", "", "_", "").Replace(strings.ToLower(s))
	}
	k := norm(key)
	best, bestDist := "", 3 // at most two edits
	if len(k) <= 3 {
		bestDist = 2 // one edit for very short keys, or "url" would match "ttl"
	}
	for _, cand := range known {
		if d := editDistance(k, norm(cand)); d < bestDist {
			best, bestDist = cand, d
		}
	}
	return best
}

// editDistance counts the insertions, deletions, substitutions and swaps of
// neighbours that turn a into b (optimal string alignment; keys are ASCII
// and short). A swap counts once: "ulr" is one typo away from "url".
func editDistance(a, b string) int {
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}

// litestreamOnly are keys of Litestream's config that Understudy has no key
// for, with what to do instead: a Litestream user's file fails on them with
// a way out rather than a list of keys.
var litestreamOnly = map[string]string{
	"exec":                "Litestream's exec: is a flag here: understudy replicate -exec CMD",
	"meta-path":           "Understudy keeps its state beside the database (.NAME-understudy): remove meta-path",
	"monitor-interval":    "Understudy watches the WAL by itself: remove monitor-interval",
	"checkpoint-interval": "checkpoints follow the WAL's size here: remove checkpoint-interval and set min-checkpoint-page-count / max-checkpoint-page-count",
}

// unknownKeyMsg is the message for a key the mapping does not know.
func unknownKeyMsg(key string, known []string) string {
	if hint, ok := litestreamOnly[key]; ok {
		return fmt.Sprintf("unknown key %q: %s", key, hint)
	}
	if s := suggest(key, known); s != "" {
		return fmt.Sprintf("unknown key %q (did you mean %q?)", key, s)
	}
	return fmt.Sprintf("unknown key %q (known keys: %s)", key, strings.Join(known, ", "))
}
