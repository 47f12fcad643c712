package config

import (
	"fmt"
	"os"
	"slices"
	"strings"
)

// hostname names this machine for a lease without node:. A variable so that
// tests can pin it.
var hostname = os.Hostname

// applyDefaults fills every value the file left out, so that the rest of
// Understudy never has to know a default: intervals, checkpoint thresholds,
// levels, replica names, the top-level credentials for S3 replicas that have
// none, and the follower and lease settings.
func (c *Config) applyDefaults() {
	if c.Logging.Level == "" {
		c.Logging.Level = DefaultLogLevel
	}
	if c.Logging.Type == "" {
		c.Logging.Type = DefaultLogType
	}
	for _, db := range c.DBs {
		if db.MinCheckpointPageCount == 0 {
			db.MinCheckpointPageCount = DefaultMinCheckpointPageCount
		}
		if db.MaxCheckpointPageCount == 0 {
			db.MaxCheckpointPageCount = DefaultMaxCheckpointPageCount
		}
		if len(db.Levels) == 0 {
			db.Levels = slices.Clone(DefaultLevels)
		}
		if db.L0Retention == 0 {
			db.L0Retention = DefaultL0Retention
		}
		if db.IsDir() && db.Pattern == "" {
			db.Pattern = DefaultPattern
		}
		for _, r := range db.Replicas {
			r.applyDefaults()
			// Only a complete pair is inherited; a half pair is reported once, at the top.
			if r.Type == TypeS3 && r.AccessKeyID == "" && r.SecretAccessKey == "" && c.AccessKeyID != "" && c.SecretAccessKey != "" {
				r.AccessKeyID, r.SecretAccessKey = c.AccessKeyID, c.SecretAccessKey
			}
		}
		nameReplicas(db.Replicas)
		if f := db.Follower; f != nil {
			if f.PollInterval == 0 {
				f.PollInterval = DefaultPollInterval
			}
			if f.DiscoverInterval == 0 && db.IsDir() {
				f.DiscoverInterval = DefaultDiscoverInterval
			}
			if f.Replica == "" && len(db.Replicas) > 0 {
				f.Replica = db.Replicas[0].Name
			}
		}
		if l := db.Lease; l != nil {
			l.applyDefaults()
		}
	}
}

// nameReplicas names each unnamed replica after its type, or replica<N> (N
// counting from 1) where the type alone would not tell it apart.
func nameReplicas(rs []*Replica) {
	taken := map[string]bool{}
	unnamed := map[string]int{}
	for _, r := range rs {
		if r.Name != "" {
			taken[r.Name] = true
		} else {
			unnamed[r.Type]++
		}
	}
	for i, r := range rs {
		if r.Name != "" {
			continue
		}
		if unnamed[r.Type] == 1 && !taken[r.Type] {
			r.Name = r.Type
		} else {
			r.Name = fmt.Sprintf("replica%d", i+1)
		}
	}
}

func (l *Lease) applyDefaults() {
	if l.Type == "" {
		l.Type = DefaultLeaseType
		if l.StaticPrimary != "" && l.Consul == nil {
			l.Type = "static"
		}
	}
	if l.OnDemote == "" {
		l.OnDemote = DefaultOnDemote
	}
	if l.Node == "" {
		if h, err := hostname(); err == nil {
			l.Node = h
		}
	}
	if l.Type != "consul" {
		return
	}
	if l.Consul == nil {
		l.Consul = &ConsulLease{}
	}
	if l.Consul.KeyPrefix == "" {
		l.Consul.KeyPrefix = DefaultConsulKeyPrefix
	}
	if l.Consul.Mode == "" {
		l.Consul.Mode = DefaultConsulMode
	}
	if l.Consul.TTL == 0 {
		l.Consul.TTL = DefaultConsulTTL
		if l.Consul.Mode == ConsulModeKV {
			l.Consul.TTL = DefaultConsulKVTTL
		}
	}
	if l.Consul.LockDelay == 0 && l.Consul.Mode == ConsulModeSession {
		l.Consul.LockDelay = DefaultConsulLockDelay // a session's; mode kv has none
	}
}

// checker finds what is wrong across values once the defaults are in.
type checker struct {
	file  string
	lines map[string]int // as recorded by the decoder; nil for configs built in code
	paths map[any]string
	errs  ErrorList
}

// pathOf is where obj was written in the file, or def.
func (k *checker) pathOf(obj any, def string) string {
	if p, ok := k.paths[obj]; ok {
		return p
	}
	return def
}

// lineOf is the line of path, or of the nearest enclosing path the file has.
func (k *checker) lineOf(path string) int {
	for path != "" {
		if l, ok := k.lines[path]; ok {
			return l
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			break
		}
		path = path[:i]
	}
	return k.lines[""]
}

// errorf reports msg at path, on the line of the first of lineFrom that the
// file has (path itself when none is given).
func (k *checker) errorf(path string, lineFrom []string, format string, args ...any) {
	line := 0
	for _, p := range append(lineFrom, path) {
		if _, ok := k.lines[p]; ok {
			line = k.lines[p]
			break
		}
	}
	if line == 0 {
		line = k.lineOf(path)
	}
	k.errs = append(k.errs, &Error{File: k.file, Line: line, Path: path, Msg: fmt.Sprintf(format, args...)})
}

func (k *checker) check(c *Config) ErrorList {
	k.credentials("", c.AccessKeyID, c.SecretAccessKey)
	dbByPath := map[string]string{}
	dbByName := map[string]string{}
	storeOwner := map[string]string{}
	var stores []located
	for i, db := range c.DBs {
		p := k.pathOf(db, fmt.Sprintf("dbs[%d]", i))
		if db.IsDir() {
			k.dir(db, p)
			if prev, dup := dbByPath[db.Dir]; dup {
				k.errorf(sub(p, "dir"), nil, "%q is already used by %s (line %d)", db.Dir, prev, k.lineOf(prev))
			}
			dbByPath[db.Dir] = p
		} else if db.Path == "" {
			k.errorf(p, nil, "missing path: set path to the SQLite database file")
		} else if prev, dup := dbByPath[db.Path]; dup {
			k.errorf(sub(p, "path"), nil, "%q is already used by %s (line %d)", db.Path, prev, k.lineOf(sub(prev, "path")))
		} else {
			dbByPath[db.Path] = p
			if prev, dup := dbByName[db.Name()]; dup {
				k.errorf(p, []string{sub(p, "name"), sub(p, "path")}, "name %q is already used by %s (line %d): set name: on one of them", db.Name(), prev, k.lineOf(prev))
			} else {
				dbByName[db.Name()] = p
			}
		}
		if db.MinCheckpointPageCount >= db.MaxCheckpointPageCount {
			k.errorf(p, []string{sub(p, "min-checkpoint-page-count"), sub(p, "max-checkpoint-page-count")},
				"min-checkpoint-page-count (%d) must be less than max-checkpoint-page-count (%d)",
				db.MinCheckpointPageCount, db.MaxCheckpointPageCount)
		}
		if len(db.Replicas) == 0 {
			k.errorf(p, nil, "no replicas: add replicas: with at least one (url: s3://BUCKET/PATH or a directory)")
		}
		names := map[string]string{}
		for j, r := range db.Replicas {
			rp := k.pathOf(r, fmt.Sprintf("%s.replicas[%d]", p, j))
			k.replica(r, rp)
			if prev, dup := names[r.Name]; dup {
				k.errorf(sub(rp, "name"), nil, "%q is already used by %s", r.Name, prev)
			} else {
				names[r.Name] = rp
			}
			if r.Type == TypeFile && r.Path == "" || objectStore(r.Type) && r.Bucket == "" || r.Type == TypeSFTP && (r.Host == "" || r.Path == "") {
				continue
			}
			k.levelDir(r, rp)
			if prev, dup := storeOwner[r.storeKey()]; dup {
				k.errorf(rp, nil, "same store as %s (%s): each replica needs its own path", prev, r.Location())
			} else {
				storeOwner[r.storeKey()] = rp
				stores = append(stores, located{r, rp})
			}
		}
		k.follower(db, p)
		k.lease(db.Lease, sub(p, "lease"))
	}
	k.nested(stores)
	return k.errs.sorted()
}

// credentials reports a key id without its secret or the other way round.
// It never prints either value.
func (k *checker) credentials(path, id, secret string) {
	switch {
	case id != "" && secret == "":
		k.errorf(path, []string{sub(path, "access-key-id")}, "access-key-id is set but secret-access-key is not: set both or neither")
	case id == "" && secret != "":
		k.errorf(path, []string{sub(path, "secret-access-key")}, "secret-access-key is set but access-key-id is not: set both or neither")
	}
}

func (k *checker) replica(r *Replica, path string) {
	switch r.Type {
	case TypeS3:
		if r.Bucket == "" {
			k.errorf(path, nil, "s3 replica needs a bucket: set bucket, or url: s3://BUCKET/PATH")
		}
		k.credentials(path, r.AccessKeyID, r.SecretAccessKey)
	case TypeFile:
		if r.Path == "" {
			k.errorf(path, nil, "file replica needs a path: set path, or url: file:///ABS/PATH")
		}
	case TypeSFTP:
		for _, need := range []struct{ key, val string }{{"host", r.Host}, {"user", r.User}, {"path", r.Path}} {
			if need.val == "" {
				k.errorf(path, nil, "sftp replica needs a %s: set %s, or url: sftp://USER@HOST[:PORT]/PATH", need.key, need.key)
			}
		}
	case TypeGCS:
		if r.Bucket == "" {
			k.errorf(path, nil, "gcs replica needs a bucket: set bucket, or url: gcs://BUCKET/PATH")
		}
	case TypeABS:
		if r.Bucket == "" {
			k.errorf(path, nil, "abs replica needs a container: set bucket, or url: abs://ACCOUNT@CONTAINER/PATH")
		}
		if r.AccountName == "" {
			k.errorf(path, nil, "abs replica needs the storage account's name: set account-name, or url: abs://ACCOUNT@CONTAINER/PATH")
		}
	}
}

func (k *checker) follower(db *DB, dbPath string) {
	f := db.Follower
	if f == nil {
		return
	}
	p := sub(dbPath, "follower")
	if db.Replica(f.Replica) == nil && len(db.Replicas) > 0 {
		var have []string
		for _, r := range db.Replicas {
			have = append(have, r.Name)
		}
		k.errorf(sub(p, "replica"), nil, "no replica named %q in %s (have %s)", f.Replica, dbPath, strings.Join(have, ", "))
	}
	if f.DiscoverInterval != 0 && !db.IsDir() {
		k.errorf(sub(p, "discover-interval"), nil, "only for a directory of databases (a dir: entry): a path: entry follows one database and has nothing to discover")
	}
	if f.AutoPromote && (db.Lease == nil || db.Lease.Type != "consul") {
		k.errorf(sub(p, "auto-promote"), nil, "needs a lease: section of type consul to elect the new primary")
	}
}

func (k *checker) lease(l *Lease, p string) {
	if l == nil {
		return
	}
	if l.Node == "" {
		k.errorf(sub(p, "node"), []string{p}, "missing: this machine's host name is unknown, so set node")
	}
	switch l.Type {
	case "static":
		if l.StaticPrimary == "" {
			k.errorf(p, nil, "type static needs primary: the node name of the primary")
		}
		if l.Consul != nil {
			k.errorf(sub(p, "consul"), nil, "only for type consul, and this lease is static")
		}
	case "consul":
		if l.StaticPrimary != "" {
			k.errorf(sub(p, "primary"), nil, "only for type static: with consul the lease elects the primary")
		}
	}
}
