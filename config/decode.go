package config

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	pathpkg "path"

	"gopkg.in/yaml.v3"
)

// The keys each mapping accepts, in the order messages list them. Anything
// else is an error: a typo must not silently fall back to a default.
var (
	topKeys      = []string{"addr", "access-key-id", "secret-access-key", "logging", "dbs"}
	loggingKeys  = []string{"level", "type"}
	dbKeys       = []string{"name", "path", "replicas", "replica", "min-checkpoint-page-count", "max-checkpoint-page-count", "levels", "l0-retention", "max-shadow-size", "adopt-replica", "follower", "lease"}
	replicaKeys  = []string{"name", "type", "url", "path", "bucket", "region", "endpoint", "force-path-style", "skip-verify", "access-key-id", "secret-access-key", "account-name", "account-key", "sync-interval", "snapshot-interval", "retention", "retention-check-interval", "required", "conditional-writes", "host", "user", "password", "key-path", "known-hosts-path", "age", "sse", "sse-kms-key-id", "sse-customer-key", "sse-customer-key-path", "sse-customer-algorithm"}
	followerKeys = []string{"replica", "poll-interval", "auto-promote", "discover-interval"}
	leaseKeys    = []string{"type", "node", "advertise-url", "on-demote", "on-promote", "consul", "primary"}
	consulKeys   = []string{"address", "token", "key-prefix", "mode", "ttl", "lock-delay", "health-check"}

	// s3OnlyKeys make sense on an s3 replica only; bucketKeys on the
	// object stores (s3, gcs, abs); absOnlyKeys on an abs replica.
	s3OnlyKeys  = []string{"region", "force-path-style", "skip-verify", "access-key-id", "secret-access-key", "conditional-writes", "sse", "sse-kms-key-id", "sse-customer-key", "sse-customer-key-path", "sse-customer-algorithm"}
	bucketKeys  = []string{"bucket", "endpoint"}
	absOnlyKeys = []string{"account-name", "account-key"}
	// sftpOnlyKeys make sense on an sftp replica only.
	sftpOnlyKeys = []string{"host", "user", "password", "key-path", "known-hosts-path"}

	logLevels = []string{"trace", "debug", "info", "warn", "error"}
	logTypes  = []string{"text", "json"}
	onDemotes = []string{"halt", "exit", "follow"}
	// consulModes: the lease held through a Consul session (the default) or
	// through check-and-set writes of a KV key (see lease/consulkv.go).
	consulModes = []string{ConsulModeSession, ConsulModeKV}

	dbNameRE = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)
)

// decoder walks the YAML node tree, so that every message can name the line.
// It checks each value on its own (types, durations, ranges); checks across
// values come after the defaults, in check.go.
type decoder struct {
	file  string
	errs  ErrorList
	lines map[string]int // path -> line of its key (or list item)
	cols  map[string]int // path -> column of its key (or list item), for keys sharing a line
	paths map[any]string // *DB, *Replica -> its path in the file
}

func newDecoder(file string) *decoder {
	return &decoder{file: file, lines: map[string]int{}, cols: map[string]int{}, paths: map[any]string{}}
}

func (d *decoder) errorf(n *yaml.Node, path, format string, args ...any) {
	line := 0
	if n != nil {
		line = n.Line
	}
	d.errorAt(line, path, format, args...)
}

func (d *decoder) errorAt(line int, path, format string, args ...any) {
	d.errs = append(d.errs, &Error{File: d.file, Line: line, Path: path, Msg: fmt.Sprintf(format, args...)})
}

func deref(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

// isNull is true for a missing value, "key:" with nothing after it, and null/~.
func isNull(n *yaml.Node) bool {
	n = deref(n)
	return n == nil || n.Kind == 0 || (n.Kind == yaml.ScalarNode && n.Tag == "!!null")
}

func kindName(n *yaml.Node) string {
	switch {
	case isNull(n):
		return "empty"
	case n.Kind == yaml.MappingNode:
		return "a mapping"
	case n.Kind == yaml.SequenceNode:
		return "a list"
	case n.Kind == yaml.ScalarNode:
		return "a single value"
	}
	return "a document"
}

func sub(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// mapping checks that n is a mapping of known keys and returns the value of
// each key present. Empty (key: with nothing after it) is an empty mapping.
func (d *decoder) mapping(n *yaml.Node, path string, known []string) (map[string]*yaml.Node, bool) {
	n = deref(n)
	if isNull(n) {
		return map[string]*yaml.Node{}, true
	}
	if _, ok := d.lines[path]; !ok {
		d.lines[path] = n.Line
	}
	if n.Kind != yaml.MappingNode {
		d.errorf(n, path, "must be a mapping (key: value lines), not %s", kindName(n))
		return nil, false
	}
	out := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := deref(n.Content[i]), n.Content[i+1]
		switch {
		case k.Kind != yaml.ScalarNode:
			d.errorf(k, path, "keys must be plain names, not %s", kindName(k))
		case k.Value == "<<":
			d.errorf(k, path, "merge keys (<<) are not supported")
		case !slices.Contains(known, k.Value):
			d.errorf(k, path, "%s", unknownKeyMsg(k.Value, known))
		case out[k.Value] != nil:
			d.errorf(k, path, "key %q appears twice (first on line %d)", k.Value, d.lines[sub(path, k.Value)])
		default:
			out[k.Value] = v
			d.lines[sub(path, k.Value)] = k.Line
			d.cols[sub(path, k.Value)] = k.Column
		}
	}
	return out, true
}

// list checks that n is a list and returns its items. Empty is no items.
func (d *decoder) list(n *yaml.Node, path string) []*yaml.Node {
	n = deref(n)
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		d.errorf(n, path, "must be a list (lines starting with -), not %s", kindName(n))
		return nil
	}
	for i, it := range n.Content {
		d.lines[fmt.Sprintf("%s[%d]", path, i)] = deref(it).Line
		d.cols[fmt.Sprintf("%s[%d]", path, i)] = deref(it).Column
	}
	return n.Content
}

// str returns a single value as written ("" when empty). Its message never
// repeats the value, so it is safe for secrets.
func (d *decoder) str(n *yaml.Node, path string) string {
	n = deref(n)
	if isNull(n) {
		return ""
	}
	if n.Kind != yaml.ScalarNode {
		d.errorf(n, path, "must be a single value, not %s", kindName(n))
		return ""
	}
	return n.Value
}

// oneOf returns a value that must be one of choices (case-insensitive), or "".
func (d *decoder) oneOf(n *yaml.Node, path, what string, choices []string) string {
	raw := d.str(n, path)
	v := strings.ToLower(raw)
	if v != "" && !slices.Contains(choices, v) {
		d.errorf(n, path, "unknown %s %q: use %s", what, raw, orList(choices))
		return ""
	}
	return v
}

// orList renders "a, b or c".
func orList(s []string) string {
	if len(s) < 2 {
		return strings.Join(s, "")
	}
	return strings.Join(s[:len(s)-1], ", ") + " or " + s[len(s)-1]
}

func (d *decoder) boolean(n *yaml.Node, path string) bool {
	v := d.str(n, path)
	if v == "" {
		return false
	}
	b, err := parseBool(v)
	if err != nil {
		d.errorf(n, path, "%v", err)
	}
	return b
}

// positive returns the value of n read by parse, which must be above zero,
// or 0 when empty or reported. parse's error is the whole message.
func positive[T int | int64 | time.Duration](d *decoder, n *yaml.Node, path string, parse func(string) (T, error)) T {
	v := d.str(n, path)
	if v == "" {
		return 0
	}
	x, err := parse(v)
	if err != nil {
		d.errorf(n, path, "%v", err)
		return 0
	}
	if x <= 0 {
		d.errorf(n, path, "must be greater than zero (got %q)", v)
		return 0
	}
	return x
}

// positiveInt returns a whole number above zero, or 0 when empty.
func (d *decoder) positiveInt(n *yaml.Node, path string) int {
	return positive(d, n, path, func(v string) (int, error) {
		i, err := strconv.Atoi(v)
		if err != nil {
			return 0, fmt.Errorf("invalid number %q: use a whole number such as 1000", v)
		}
		return i, nil
	})
}

// duration returns a Go duration above zero and at least min, or 0 when
// empty. why explains the minimum.
func (d *decoder) duration(n *yaml.Node, path string, min time.Duration, why string) time.Duration {
	var v string
	dur := positive(d, n, path, func(s string) (time.Duration, error) {
		v = s
		dur, err := time.ParseDuration(s)
		if err != nil {
			return 0, fmt.Errorf("invalid duration %q: use a number with a unit, e.g. 500ms, 10s, 5m or 24h", s)
		}
		return dur, nil
	})
	if dur != 0 && dur < min {
		d.errorf(n, path, "must be at least %s%s (got %q)", formatDuration(min), why, v)
		return 0
	}
	return dur
}

// sizeUnits are the units a size may carry, lower-cased.
var sizeUnits = map[string]int64{
	"": 1, "b": 1,
	"kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
	"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
}

var sizeRE = regexp.MustCompile(`^([0-9]+)\s*([A-Za-z]*)$`)

// parseSize reads a size in bytes: a whole number, or one with a unit
// (64MiB, 512MB, 2GiB). A bare K, M or G is refused: whether it means
// powers of 1000 or 1024 is anyone's guess.
func parseSize(v string) (int64, error) {
	m := sizeRE.FindStringSubmatch(strings.TrimSpace(v))
	if m == nil {
		return 0, fmt.Errorf("invalid size %q: use a number of bytes or a number with a unit, e.g. 64MiB, 512MB or 2GiB", v)
	}
	unit, ok := sizeUnits[strings.ToLower(m[2])]
	if !ok {
		return 0, fmt.Errorf("invalid size %q: unknown unit %q; use B, kB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024)", v, m[2])
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil || n > (1<<63-1)/unit {
		return 0, fmt.Errorf("invalid size %q: too large", v)
	}
	return n * unit, nil
}

// size returns a size in bytes above zero, or 0 when empty.
func (d *decoder) size(n *yaml.Node, path string) int64 {
	return positive(d, n, path, parseSize)
}

func (d *decoder) config(root *yaml.Node) *Config {
	c := &Config{}
	m, ok := d.mapping(root, "", topKeys)
	if !ok {
		return c
	}
	c.Addr = d.str(m["addr"], "addr")
	if c.Addr != "" && !validAddr(c.Addr) {
		d.errorf(m["addr"], "addr", "invalid address %q: use HOST:PORT or :PORT", c.Addr)
	}
	c.AccessKeyID = d.str(m["access-key-id"], "access-key-id")
	c.SecretAccessKey = d.str(m["secret-access-key"], "secret-access-key")
	if lm, ok := d.mapping(m["logging"], "logging", loggingKeys); ok {
		c.Logging.Level = d.oneOf(lm["level"], "logging.level", "level", logLevels)
		c.Logging.Type = d.oneOf(lm["type"], "logging.type", "type", logTypes)
	}
	for i, it := range d.list(m["dbs"], "dbs") {
		c.DBs = append(c.DBs, d.db(it, fmt.Sprintf("dbs[%d]", i)))
	}
	return c
}

func (d *decoder) db(n *yaml.Node, path string) *DB {
	db := &DB{}
	d.paths[db] = path
	m, ok := d.mapping(n, path, dbKeys)
	if !ok {
		return db
	}
	if name := d.str(m["name"], sub(path, "name")); name != "" {
		if !dbNameRE.MatchString(name) {
			d.errorf(m["name"], sub(path, "name"), "invalid name %q: use letters, digits, '.', '_' and '-'", name)
		}
		db.name = name
	}
	if p := d.str(m["path"], sub(path, "path")); p != "" {
		abs, err := absPath(p)
		if err != nil {
			d.errorf(m["path"], sub(path, "path"), "%v", err)
		}
		db.Path = abs
	}
	if !isNull(m["replica"]) && !isNull(m["replicas"]) {
		d.errorAt(d.lines[sub(path, "replica")], path, "use replica: or replicas:, not both")
	} else if !isNull(m["replica"]) {
		db.Replicas = []*Replica{d.replica(m["replica"], sub(path, "replica"))}
	}
	for i, it := range d.list(m["replicas"], sub(path, "replicas")) {
		db.Replicas = append(db.Replicas, d.replica(it, fmt.Sprintf("%s.replicas[%d]", path, i)))
	}
	db.MinCheckpointPageCount = d.positiveInt(m["min-checkpoint-page-count"], sub(path, "min-checkpoint-page-count"))
	db.MaxCheckpointPageCount = d.positiveInt(m["max-checkpoint-page-count"], sub(path, "max-checkpoint-page-count"))
	db.Levels = d.levels(m["levels"], sub(path, "levels"))
	db.L0Retention = d.duration(m["l0-retention"], sub(path, "l0-retention"), 0, "")
	db.MaxShadowSize = d.size(m["max-shadow-size"], sub(path, "max-shadow-size"))
	db.AdoptReplica = d.boolean(m["adopt-replica"], sub(path, "adopt-replica"))
	d.dirEntry(db, m, path)
	if n, ok := m["follower"]; ok {
		db.Follower = d.follower(n, sub(path, "follower"))
	}
	if n, ok := m["lease"]; ok {
		db.Lease = d.lease(n, sub(path, "lease"))
	}
	return db
}

// levels reads the compaction intervals of L1, L2, ...: each longer than the
// one before, since a level compacts the files of the level below it.
func (d *decoder) levels(n *yaml.Node, path string) []time.Duration {
	if isNull(n) {
		return nil
	}
	items := d.list(n, path)
	line := d.lines[path]
	switch {
	case deref(n).Kind != yaml.SequenceNode:
		return nil
	case len(items) == 0:
		d.errorAt(line, path, "must list at least one interval (L1)")
		return nil
	case len(items) > MaxLevels:
		d.errorAt(line, path, "at most %d levels (L1-L%d), got %d", MaxLevels, MaxLevels, len(items))
		return nil
	}
	var out []time.Duration
	for i, it := range items {
		p := fmt.Sprintf("%s[%d]", path, i)
		v := d.duration(it, p, 0, "")
		if v == 0 && isNull(it) {
			d.errorf(it, p, "empty: give a duration such as 5m")
		}
		if i > 0 && v != 0 && out[i-1] != 0 && v <= out[i-1] {
			d.errorf(it, p, "must be longer than levels[%d] (%s)", i-1, formatDuration(out[i-1]))
		}
		out = append(out, v)
	}
	return out
}

func (d *decoder) replica(n *yaml.Node, path string) *Replica {
	r := &Replica{}
	d.paths[r] = path
	errsBefore := len(d.errs)
	m, ok := d.mapping(n, path, replicaKeys)
	if !ok {
		return r
	}
	r.Name = d.str(m["name"], sub(path, "name"))
	typ := d.oneOf(m["type"], sub(path, "type"), "replica type", []string{TypeS3, TypeFile, TypeSFTP, TypeGCS, TypeABS})
	if typ == "" && !isNull(m["type"]) {
		return r // unknown type, reported
	}
	r.Path = d.str(m["path"], sub(path, "path"))
	r.Bucket = d.str(m["bucket"], sub(path, "bucket"))
	r.Region = d.str(m["region"], sub(path, "region"))
	r.Endpoint = d.str(m["endpoint"], sub(path, "endpoint"))
	if r.Endpoint != "" {
		if err := checkEndpoint(r.Endpoint); err != nil {
			d.errorf(m["endpoint"], sub(path, "endpoint"), "%v", err)
		}
	}
	r.ForcePathStyle = d.boolean(m["force-path-style"], sub(path, "force-path-style"))
	r.SkipVerify = d.boolean(m["skip-verify"], sub(path, "skip-verify"))
	r.Required = d.boolean(m["required"], sub(path, "required"))
	r.ConditionalWrites = d.oneOf(m["conditional-writes"], sub(path, "conditional-writes"), "conditional-writes value", conditionalWrites)
	r.AccessKeyID = d.str(m["access-key-id"], sub(path, "access-key-id"))
	r.SecretAccessKey = d.str(m["secret-access-key"], sub(path, "secret-access-key"))
	r.AccountName = d.str(m["account-name"], sub(path, "account-name"))
	r.AccountKey = d.str(m["account-key"], sub(path, "account-key"))
	r.SyncInterval = d.duration(m["sync-interval"], sub(path, "sync-interval"), 0, "")
	r.SnapshotInterval = d.duration(m["snapshot-interval"], sub(path, "snapshot-interval"), 0, "")
	r.Retention = d.duration(m["retention"], sub(path, "retention"), 0, "")
	r.RetentionCheckInterval = d.duration(m["retention-check-interval"], sub(path, "retention-check-interval"), 0, "")
	r.Host = d.str(m["host"], sub(path, "host"))
	r.User = d.str(m["user"], sub(path, "user"))
	r.Password = d.str(m["password"], sub(path, "password"))
	r.KeyPath = d.localPath(m["key-path"], sub(path, "key-path"))
	r.KnownHostsPath = d.localPath(m["known-hosts-path"], sub(path, "known-hosts-path"))
	d.encryption(r, m, path)

	var fromURL *Replica
	if u := d.str(m["url"], sub(path, "url")); u != "" {
		fu, err := parseReplicaURL(u)
		if err != nil {
			d.errorf(m["url"], sub(path, "url"), "%v", err)
			return r
		}
		fromURL = fu
	}
	switch {
	case typ != "" && fromURL != nil && typ != fromURL.Type:
		d.errorf(m["type"], sub(path, "type"), "%q does not match url, which is a %s location", typ, fromURL.Type)
		return r
	case fromURL != nil:
		typ = fromURL.Type
	case typ == "" && r.Bucket != "":
		typ = TypeS3
	case typ == "" && r.Host != "":
		typ = TypeSFTP
	case typ == "" && r.Path != "":
		typ = TypeFile
	case typ == "":
		if len(d.errs) > errsBefore {
			return r // a misspelt url: or bucket: was reported; no need to say it twice
		}
		d.errorAt(d.lines[path], path, "no location: set url (s3://BUCKET/PATH, gcs://BUCKET/PATH, abs://ACCOUNT@CONTAINER/PATH, sftp://USER@HOST/PATH, file:///ABS/PATH or a directory), or type with bucket, host or path")
		return r
	}
	r.Type = typ

	d.onlyFor(m, path, typ, []string{TypeS3}, s3OnlyKeys)
	d.onlyFor(m, path, typ, []string{TypeS3, TypeGCS, TypeABS}, bucketKeys)
	d.onlyFor(m, path, typ, []string{TypeABS}, absOnlyKeys)
	d.onlyFor(m, path, typ, []string{TypeSFTP}, sftpOnlyKeys)
	switch typ {
	case TypeFile:
		if r.Path != "" {
			abs, err := absPath(r.Path)
			if err != nil {
				d.errorf(m["path"], sub(path, "path"), "%v", err)
			}
			r.Path = abs
		}
	case TypeSFTP:
		if r.Path != "" {
			r.Path = pathpkg.Clean(r.Path) // on the server: relative to the login directory
		}
	default:
		r.Path = cleanKeyPrefix(r.Path)
	}
	if fromURL != nil {
		d.mergeURL(r, fromURL, m, path)
	}
	return r
}

// onlyFor reports the keys of a replica of type typ that only replicas of
// the types in want take.
func (d *decoder) onlyFor(m map[string]*yaml.Node, path, typ string, want, keys []string) {
	if slices.Contains(want, typ) {
		return
	}
	for _, k := range keys {
		if !isNull(m[k]) {
			d.errorf(m[k], sub(path, k), "only for %s replicas, and this is %s replica", orList(want), article(typ))
		}
	}
}

// article puts "a" or "an" before a replica type.
func article(typ string) string {
	if strings.HasPrefix(typ, "s") || strings.HasPrefix(typ, "a") { // s3, sftp: "an ess"; abs
		return "an " + typ
	}
	return "a " + typ
}

// localPath reads a path on this machine, resolved like a database path.
func (d *decoder) localPath(n *yaml.Node, path string) string {
	p := d.str(n, path)
	if p == "" {
		return ""
	}
	abs, err := absPath(p)
	if err != nil {
		d.errorf(n, path, "%v", err)
	}
	return abs
}

// mergeURL fills the location fields the replica's keys left out from its
// url, and reports keys that say something else than the url.
func (d *decoder) mergeURL(r, u *Replica, m map[string]*yaml.Node, path string) {
	fields := []struct {
		key      string
		own, url *string
	}{
		{"path", &r.Path, &u.Path},
		{"bucket", &r.Bucket, &u.Bucket},
		{"region", &r.Region, &u.Region},
		{"endpoint", &r.Endpoint, &u.Endpoint},
		{"conditional-writes", &r.ConditionalWrites, &u.ConditionalWrites},
		{"host", &r.Host, &u.Host},
		{"user", &r.User, &u.User},
		{"account-name", &r.AccountName, &u.AccountName},
	}
	for _, f := range fields {
		switch {
		case *f.own == "":
			*f.own = *f.url
		case *f.url != "" && *f.own != *f.url:
			d.errorf(m[f.key], sub(path, f.key), "%q differs from the %s in url (%q)", *f.own, f.key, *f.url)
		}
	}
	bools := []struct {
		key      string
		own, url *bool
	}{
		{"force-path-style", &r.ForcePathStyle, &u.ForcePathStyle},
		{"skip-verify", &r.SkipVerify, &u.SkipVerify},
	}
	for _, f := range bools {
		switch {
		case isNull(m[f.key]):
			*f.own = *f.url
		case *f.url && !*f.own:
			d.errorf(m[f.key], sub(path, f.key), "false differs from the %s=true in url", f.key)
		}
	}
}

func (d *decoder) follower(n *yaml.Node, path string) *Follower {
	f := &Follower{}
	m, ok := d.mapping(n, path, followerKeys)
	if !ok {
		return f
	}
	f.Replica = d.str(m["replica"], sub(path, "replica"))
	f.PollInterval = d.duration(m["poll-interval"], sub(path, "poll-interval"), MinPollInterval, "")
	f.AutoPromote = d.boolean(m["auto-promote"], sub(path, "auto-promote"))
	f.DiscoverInterval = d.duration(m["discover-interval"], sub(path, "discover-interval"), MinDiscoverInterval, "")
	return f
}

func (d *decoder) lease(n *yaml.Node, path string) *Lease {
	l := &Lease{}
	m, ok := d.mapping(n, path, leaseKeys)
	if !ok {
		return l
	}
	l.Type = d.oneOf(m["type"], sub(path, "type"), "lease type", []string{"consul", "static"})
	l.Node = d.str(m["node"], sub(path, "node"))
	if l.AdvertiseURL = d.str(m["advertise-url"], sub(path, "advertise-url")); l.AdvertiseURL != "" {
		if err := checkEndpoint(l.AdvertiseURL); err != nil {
			d.errorf(m["advertise-url"], sub(path, "advertise-url"), "%v", err)
		}
	}
	l.OnDemote = d.oneOf(m["on-demote"], sub(path, "on-demote"), "on-demote action", onDemotes)
	l.OnPromote = d.str(m["on-promote"], sub(path, "on-promote"))
	l.StaticPrimary = d.str(m["primary"], sub(path, "primary"))
	if cn, ok := m["consul"]; ok {
		cp := sub(path, "consul")
		cm, ok := d.mapping(cn, cp, consulKeys)
		if ok {
			mode := d.oneOf(cm["mode"], sub(cp, "mode"), "consul lease mode", consulModes)
			// A KV lease may renew faster than Consul lets a session live.
			minTTL, why := MinConsulTTL, ", Consul's minimum session TTL"
			kv := mode == ConsulModeKV || (mode == "" && DefaultConsulMode == ConsulModeKV)
			if kv {
				minTTL, why = MinConsulKVTTL, " for mode kv"
			}
			if ld, ok := cm["lock-delay"]; ok && kv {
				// A session's setting: a config written for the session
				// lease, from before kv became the default, says so here
				// rather than change modes under a running cluster.
				d.errorf(ld, sub(cp, "lock-delay"), "is a setting of mode session, and the mode is kv (the default since lock-delay was written?): add mode: session to keep the session lease, or remove lock-delay")
			}
			l.Consul = &ConsulLease{
				Address:     d.str(cm["address"], sub(cp, "address")),
				Token:       d.str(cm["token"], sub(cp, "token")),
				KeyPrefix:   d.str(cm["key-prefix"], sub(cp, "key-prefix")),
				Mode:        mode,
				TTL:         d.duration(cm["ttl"], sub(cp, "ttl"), minTTL, why),
				LockDelay:   d.duration(cm["lock-delay"], sub(cp, "lock-delay"), 0, ""),
				HealthCheck: d.str(cm["health-check"], sub(cp, "health-check")),
			}
		}
	}
	return l
}

// validAddr accepts HOST:PORT and :PORT with a numeric port.
func validAddr(s string) bool {
	i := strings.LastIndex(s, ":")
	if i < 0 {
		return false
	}
	port, err := strconv.Atoi(s[i+1:])
	return err == nil && port >= 0 && port <= 65535 && !strings.ContainsAny(s[:i], " /")
}

// formatDuration prints a duration the way people write it: 24h, 1h30m, 5m, 50ms.
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
