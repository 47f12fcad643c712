package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseDirEntry(t *testing.T) {
	dir := t.TempDir()
	c := mustParse(t, []byte("dbs:\n  - dir: "+dir+"\n    recursive: true\n    watch: true\n    max-open: 50\n    replicas:\n      - url: s3://bkt/backups?region=r\n      - url: file:///var/backups/tenants\n"))
	db := c.DBs[0]
	if db.MaxOpen != 50 {
		t.Errorf("max-open = %d, want 50", db.MaxOpen)
	}
	if !db.IsDir() || db.Dir != dir || db.Pattern != DefaultPattern || !db.Recursive || !db.Watch || db.PerDBMetrics {
		t.Fatalf("entry = dir %q pattern %q recursive %v watch %v per-db-metrics %v", db.Dir, db.Pattern, db.Recursive, db.Watch, db.PerDBMetrics)
	}
	one, err := db.Database(filepath.Join(dir, "eu", "a.db"))
	if err != nil {
		t.Fatal(err)
	}
	// Litestream 0.5.16 (cmd/litestream/main.go, cloneReplicaConfigWithRelativePath):
	// the replica path (or URL path) joined with the path relative to dir.
	if one.Path != filepath.Join(dir, "eu", "a.db") || one.IsDir() || one.Name() != "eu/a.db" {
		t.Errorf("database = path %q dir %q name %q", one.Path, one.Dir, one.Name())
	}
	if got := one.Replicas[0].Path; got != "backups/eu/a.db" {
		t.Errorf("s3 prefix = %q, want backups/eu/a.db", got)
	}
	if got := one.Replicas[1].Location(); got != "file:///var/backups/tenants/eu/a.db" {
		t.Errorf("file replica = %q", got)
	}
	if db.Replicas[0].Path != "backups" {
		t.Errorf("the entry's own replica changed: %q", db.Replicas[0].Path)
	}
	if _, err := db.Database("/elsewhere/a.db"); err == nil {
		t.Error("a file outside the directory was accepted")
	}
}

func TestParseDirFollower(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name           string
		follower       string
		poll, discover time.Duration
	}{
		{"defaults", "    follower: {}\n", DefaultPollInterval, DefaultDiscoverInterval},
		{"set", "    follower: {poll-interval: 200ms, discover-interval: 5m}\n", 200 * time.Millisecond, 5 * time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := mustParse(t, []byte("dbs:\n  - dir: "+dir+"\n    replica: {url: s3://bkt/t}\n"+tc.follower))
			f := c.DBs[0].Follower
			if f == nil || f.PollInterval != tc.poll || f.DiscoverInterval != tc.discover || f.Replica != "s3" {
				t.Fatalf("follower = %+v, want poll %s discover %s replica s3", f, tc.poll, tc.discover)
			}
		})
	}
}

func TestParseDirErrors(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f.db")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	rep := "    replica: {url: s3://bkt/t}"
	for _, tc := range []struct {
		name  string
		lines []string
		want  string
	}{
		{"dir missing", []string{"dbs:", "  - dir: " + dir + "/nope", rep},
			"understudy.yml:2: dbs[0].dir: directory " + dir + "/nope does not exist: create it or fix dir"},
		{"dir is a file", []string{"dbs:", "  - dir: " + file, rep},
			"understudy.yml:2: dbs[0].dir: " + file + " is not a directory: use path: for a single database file"},
		{"dir and path", []string{"dbs:", "  - dir: " + dir, "    path: " + file, rep},
			"understudy.yml:3: dbs[0]: set path: (one database) or dir: (a directory of databases), not both"},
		{"bad pattern", []string{"dbs:", "  - dir: " + dir, "    pattern: '[a'", rep},
			`understudy.yml:3: dbs[0].pattern: invalid pattern "[a": use a glob on the file name such as *.db or tenant-*.sqlite`},
		{"max-open zero", []string{"dbs:", "  - dir: " + dir, "    max-open: 0", rep},
			`understudy.yml:3: dbs[0].max-open: must be greater than zero (got "0")`},
		{"max-open not a number", []string{"dbs:", "  - dir: " + dir, "    max-open: many", rep},
			`understudy.yml:3: dbs[0].max-open: invalid number "many": use a whole number such as 1000`},
		{"max-open without dir", []string{"dbs:", "  - path: " + file, "    max-open: 5", rep},
			"understudy.yml:3: dbs[0].max-open: only for a directory of databases: set dir: instead of path:, or remove max-open"},
		{"watch without dir", []string{"dbs:", "  - path: " + file, "    watch: true", rep},
			"understudy.yml:3: dbs[0].watch: only for a directory of databases: set dir: instead of path:, or remove watch"},
		{"discover-interval without dir", []string{"dbs:", "  - path: " + file, rep, "    follower: {discover-interval: 10s}"},
			"understudy.yml:4: dbs[0].follower.discover-interval: only for a directory of databases (a dir: entry): a path: entry follows one database and has nothing to discover"},
		{"discover-interval too short", []string{"dbs:", "  - dir: " + dir, rep, "    follower: {discover-interval: 100ms}"},
			`understudy.yml:4: dbs[0].follower.discover-interval: must be at least 1s (got "100ms")`},
		{"same dir twice", []string{"dbs:", "  - dir: " + dir, rep, "  - dir: " + dir, "    replica: {url: s3://bkt/u}"},
			"understudy.yml:4: dbs[1].dir: \"" + dir + "\" is already used by dbs[0] (line 2)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(strings.Join(tc.lines, "\n")+"\n"), "understudy.yml", true)
			if err == nil || err.Error() != tc.want {
				t.Errorf("error:\n%v\nwant:\n%s", err, tc.want)
			}
		})
	}
}

// TestParseDirLease: a dir: entry takes lease: (one node per database),
// with its follower: settings.
func TestParseDirLease(t *testing.T) {
	dir := t.TempDir()
	c := mustParse(t, []byte("dbs:\n  - dir: "+dir+"\n    replica: {url: s3://bkt/t}\n    follower: {auto-promote: true}\n"+
		"    lease: {type: consul, node: a, consul: {mode: kv}}\n"))
	db := c.DBs[0]
	if !db.IsDir() || db.Lease == nil || db.Follower == nil || !db.Follower.AutoPromote {
		t.Fatalf("entry = dir %q lease %+v follower %+v", db.Dir, db.Lease, db.Follower)
	}
	one, err := db.Database(filepath.Join(dir, "eu", "a.db"))
	if err != nil {
		t.Fatal(err)
	}
	if one.Lease != db.Lease || one.Follower != db.Follower {
		t.Errorf("the database's lease and follower settings are not the entry's")
	}
}
