package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"

	"gopkg.in/yaml.v3"
)

// A dbs: entry with dir: instead of path: is a directory of databases
// (Litestream 0.5's keys): every file under dir whose base name matches
// pattern and that starts with the SQLite header is a database, and each
// database's replica is the entry's replica with the database's path
// relative to dir appended to its path (a directory for a file replica, the
// key prefix for S3): dir /srv/tenants, replica s3://b/backups and the
// database /srv/tenants/eu/a.db replicate to s3://b/backups/eu/a.db, which
// is where Litestream 0.5 puts (and its restore looks for) the same file.
//
//	dbs:
//	  - dir: /var/lib/tenants        # instead of path:
//	    pattern: "*.db"              # glob on the base name (default *.db)
//	    recursive: false             # look in subdirectories too
//	    watch: false                 # pick up new and removed databases at once (else on SIGHUP)
//	    per-db-metrics: false        # one metric series per database (default: one for the whole entry)
//	    idle-after: 10s              # a database quiet this long, everything uploaded, is closed until its next write
//	    max-open: 500                # at most this many databases open at once (default: no cap); the others wait their turn
//	    replica: {url: s3://bucket/tenants}   # the prefix
//	    follower:                    # for `understudy follow`: one follower per database of the prefix, in dir
//	      poll-interval: 1s
//	      discover-interval: 30s     # one LIST of the whole prefix this often finds new and vanished databases
//
// DefaultPattern is the pattern of a dir: entry without one.
const DefaultPattern = "*.db"

// dirKeys are the keys of a directory entry.
var dirKeys = []string{"dir", "pattern", "recursive", "watch", "per-db-metrics", "idle-after", "max-open"}

func init() { dbKeys = append(dbKeys, dirKeys...) }

// IsDir tells whether db is a directory of databases (dir:) rather than
// one database (path:).
func (db *DB) IsDir() bool { return db.Dir != "" }

// dirEntry reads the directory keys of a dbs: entry.
func (d *decoder) dirEntry(db *DB, m map[string]*yaml.Node, p string) {
	if dir := d.str(m["dir"], sub(p, "dir")); dir != "" {
		abs, err := absPath(dir)
		if err != nil {
			d.errorf(m["dir"], sub(p, "dir"), "%v", err)
		}
		db.Dir = abs
	}
	db.Pattern = d.str(m["pattern"], sub(p, "pattern"))
	if db.Pattern != "" {
		if _, err := filepath.Match(db.Pattern, ""); err != nil {
			d.errorf(m["pattern"], sub(p, "pattern"), "invalid pattern %q: use a glob on the file name such as *.db or tenant-*.sqlite", db.Pattern)
		}
	}
	db.Recursive = d.boolean(m["recursive"], sub(p, "recursive"))
	db.Watch = d.boolean(m["watch"], sub(p, "watch"))
	db.PerDBMetrics = d.boolean(m["per-db-metrics"], sub(p, "per-db-metrics"))
	db.IdleAfter = d.duration(m["idle-after"], sub(p, "idle-after"), 0, "")
	db.MaxOpen = d.positiveInt(m["max-open"], sub(p, "max-open"))
	if db.Dir != "" {
		return
	}
	for _, k := range dirKeys[1:] {
		if !isNull(m[k]) {
			d.errorf(m[k], sub(p, k), "only for a directory of databases: set dir: instead of path:, or remove %s", k)
		}
	}
}

// dir checks a directory entry: dir names an existing directory, path is
// not set too, and the roles that need one database are absent.
func (k *checker) dir(db *DB, p string) {
	if db.Path != "" {
		k.errorf(p, []string{sub(p, "path"), sub(p, "dir")}, "set path: (one database) or dir: (a directory of databases), not both")
		return
	}
	st, err := os.Stat(db.Dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		k.errorf(sub(p, "dir"), nil, "directory %s does not exist: create it or fix dir", db.Dir)
	case err != nil:
		k.errorf(sub(p, "dir"), nil, "directory %s: %v", db.Dir, err)
	case !st.IsDir():
		k.errorf(sub(p, "dir"), nil, "%s is not a directory: use path: for a single database file", db.Dir)
	}
	// follower: is allowed: `follow` of the whole prefix into dir (package
	// followdir), one follower per database; with lease: every database
	// runs as a node of its own (its lease key is the entry's name, '/',
	// and its path relative to dir), the follower: settings its
	// follower's.
}

// Database is the configuration of the database at file, found under the
// directory entry db: a copy of db with path: file and every replica's
// path extended by file's path relative to the directory (Litestream 0.5's
// rule). file must lie under db.Dir.
func (db *DB) Database(file string) (*DB, error) {
	if !db.IsDir() {
		return nil, fmt.Errorf("config: %s is not a directory entry", db.Path)
	}
	rel, err := filepath.Rel(db.Dir, file)
	if err != nil || rel == "." || !filepath.IsLocal(rel) {
		return nil, fmt.Errorf("config: database %s is not inside directory %s", file, db.Dir)
	}
	out := *db
	out.Path, out.Dir, out.Pattern, out.Recursive, out.Watch = file, "", "", false, false
	out.name = filepath.ToSlash(rel)
	out.Replicas = make([]*Replica, len(db.Replicas))
	for i, r := range db.Replicas {
		c := *r
		if c.Type == TypeFile {
			c.Path = filepath.Join(r.Path, rel)
		} else {
			c.Path = path.Join(r.Path, filepath.ToSlash(rel))
		}
		out.Replicas[i] = &c
	}
	out.Levels = slices.Clone(db.Levels)
	return &out, nil
}
