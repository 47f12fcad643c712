package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// doc joins lines into a YAML file, so that a test can count line numbers.
func doc(lines ...string) []byte { return []byte(strings.Join(lines, "\n") + "\n") }

// pinHostname makes a lease without node: name this machine "testhost".
func pinHostname(t *testing.T) {
	t.Helper()
	old := hostname
	hostname = func() (string, error) { return "testhost", nil }
	t.Cleanup(func() { hostname = old })
}

func mustParse(t *testing.T, data []byte) *Config {
	t.Helper()
	c, err := Parse(data, "understudy.yml", true)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return c
}

func TestParseEveryKey(t *testing.T) {
	pinHostname(t)
	c := mustParse(t, doc(
		"addr: 127.0.0.1:9090",
		"access-key-id: TOPKEY",
		"secret-access-key: TOPSECRET",
		"logging:",
		"  level: DEBUG",
		"  type: json",
		"dbs:",
		"  - name: main",
		"    path: /data/app.db",
		"    min-checkpoint-page-count: 500",
		"    max-checkpoint-page-count: 5000",
		"    levels: [10s, 1m, 10m, 2h]",
		"    l0-retention: 2m",
		"    max-shadow-size: 1GiB",
		"    replicas:",
		"      - name: primary-s3",
		"        type: s3",
		"        bucket: bkt",
		"        path: /dbs/app/",
		"        region: eu-west-1",
		"        endpoint: http://127.0.0.1:7070",
		"        force-path-style: true",
		"        skip-verify: true",
		"        access-key-id: OWNKEY",
		"        secret-access-key: OWNSECRET",
		"        sync-interval: 250ms",
		"        snapshot-interval: 12h",
		"        retention: 48h",
		"        retention-check-interval: 30m",
		"        conditional-writes: If-Supported",
		"      - url: file:///backups/app",
		"        sync-interval: 2s",
		"        required: true",
		"      - url: s3://other/app?region=us-east-1",
		"    follower:",
		"      replica: file",
		"      poll-interval: 100ms",
		"      auto-promote: true",
		"    lease:",
		"      type: consul",
		"      node: node-a",
		"      advertise-url: http://10.0.0.1:9090",
		"      on-demote: follow",
		"      on-promote: /usr/local/bin/promoted",
		"      consul:",
		"        address: 127.0.0.1:8500",
		"        token: CONSULTOKEN",
		"        key-prefix: svc/",
		"        mode: session",
		"        ttl: 15s",
		"        lock-delay: 2s",
		"        health-check: service:app",
		"  - path: /data/static.db",
		"    replica:",
		"      path: /backups/static",
		"    lease:",
		"      type: static",
		"      node: node-b",
		"      primary: node-a",
		"      on-demote: exit",
	))
	want := &Config{
		Addr: "127.0.0.1:9090", AccessKeyID: "TOPKEY", SecretAccessKey: "TOPSECRET",
		Logging: Logging{Level: "debug", Type: "json"},
		DBs: []*DB{{
			name:                   "main",
			Path:                   "/data/app.db",
			MinCheckpointPageCount: 500,
			MaxCheckpointPageCount: 5000,
			Levels:                 []time.Duration{10 * time.Second, time.Minute, 10 * time.Minute, 2 * time.Hour},
			L0Retention:            2 * time.Minute,
			MaxShadowSize:          1 << 30,
			Replicas: []*Replica{
				{
					Name: "primary-s3", Type: "s3", Bucket: "bkt", Path: "dbs/app", Region: "eu-west-1",
					Endpoint: "http://127.0.0.1:7070", ForcePathStyle: true, SkipVerify: true,
					AccessKeyID: "OWNKEY", SecretAccessKey: "OWNSECRET",
					SyncInterval: 250 * time.Millisecond, SnapshotInterval: 12 * time.Hour,
					Retention: 48 * time.Hour, RetentionCheckInterval: 30 * time.Minute,
					ConditionalWrites: "if-supported",
				},
				withReplicaDefaults(Replica{Name: "file", Type: "file", Path: "/backups/app", SyncInterval: 2 * time.Second, Required: true}),
				withReplicaDefaults(Replica{Name: "s3", Type: "s3", Bucket: "other", Path: "app", Region: "us-east-1",
					AccessKeyID: "TOPKEY", SecretAccessKey: "TOPSECRET"}),
			},
			Follower: &Follower{Replica: "file", PollInterval: 100 * time.Millisecond, AutoPromote: true},
			Lease: &Lease{
				Type: "consul", Node: "node-a", AdvertiseURL: "http://10.0.0.1:9090", OnDemote: "follow",
				OnPromote: "/usr/local/bin/promoted",
				Consul: &ConsulLease{Address: "127.0.0.1:8500", Token: "CONSULTOKEN", KeyPrefix: "svc/", Mode: "session",
					TTL: 15 * time.Second, LockDelay: 2 * time.Second, HealthCheck: "service:app"},
			},
		}, {
			Path:                   "/data/static.db",
			MinCheckpointPageCount: DefaultMinCheckpointPageCount,
			MaxCheckpointPageCount: DefaultMaxCheckpointPageCount,
			Levels:                 DefaultLevels,
			L0Retention:            DefaultL0Retention,
			Replicas:               []*Replica{withReplicaDefaults(Replica{Name: "file", Type: "file", Path: "/backups/static"})},
			Lease:                  &Lease{Type: "static", Node: "node-b", OnDemote: "exit", StaticPrimary: "node-a"},
		}},
	}
	assertConfig(t, c, want)
	if got := c.DBs[0].Name(); got != "main" {
		t.Errorf("Name() = %q, want main (the name: key)", got)
	}
	if got := c.DBs[1].Name(); got != "static.db" {
		t.Errorf("Name() = %q, want static.db (base name of the path)", got)
	}
}

// withReplicaDefaults is r with the documented replica defaults where r
// leaves them zero. The values are written out, not taken from
// applyDefaults or the Default constants, so that a wrong default fails.
func withReplicaDefaults(r Replica) *Replica {
	if r.SyncInterval == 0 {
		r.SyncInterval = time.Second
	}
	if r.SnapshotInterval == 0 {
		r.SnapshotInterval = 24 * time.Hour
	}
	if r.Retention == 0 {
		r.Retention = 24 * time.Hour
	}
	if r.RetentionCheckInterval == 0 {
		r.RetentionCheckInterval = time.Hour
	}
	return &r
}

// assertConfig compares field by field, so that a failure says where.
func assertConfig(t *testing.T, got, want *Config) {
	t.Helper()
	if got.Addr != want.Addr || got.AccessKeyID != want.AccessKeyID || got.SecretAccessKey != want.SecretAccessKey || got.Logging != want.Logging {
		t.Errorf("top level = %q %q %q %+v, want %q %q %q %+v", got.Addr, got.AccessKeyID, got.SecretAccessKey, got.Logging,
			want.Addr, want.AccessKeyID, want.SecretAccessKey, want.Logging)
	}
	if len(got.DBs) != len(want.DBs) {
		t.Fatalf("%d dbs, want %d", len(got.DBs), len(want.DBs))
	}
	for i := range want.DBs {
		g, w := *got.DBs[i], *want.DBs[i]
		if len(g.Replicas) != len(w.Replicas) {
			t.Fatalf("dbs[%d]: %d replicas, want %d", i, len(g.Replicas), len(w.Replicas))
		}
		for j := range w.Replicas {
			if !reflect.DeepEqual(*g.Replicas[j], *w.Replicas[j]) {
				t.Errorf("dbs[%d].replicas[%d] =\n%s\nwant\n%s", i, j, dumpReplica(g.Replicas[j]), dumpReplica(w.Replicas[j]))
			}
		}
		if !reflect.DeepEqual(g.Follower, w.Follower) {
			t.Errorf("dbs[%d].follower = %+v, want %+v", i, g.Follower, w.Follower)
		}
		if !reflect.DeepEqual(g.Lease, w.Lease) {
			t.Errorf("dbs[%d].lease = %+v consul %+v, want %+v consul %+v", i, g.Lease, g.Lease.Consul, w.Lease, w.Lease.Consul)
		}
		g.Replicas, w.Replicas, g.Follower, w.Follower, g.Lease, w.Lease = nil, nil, nil, nil, nil, nil
		if !reflect.DeepEqual(g, w) {
			t.Errorf("dbs[%d] = %+v, want %+v", i, g, w)
		}
	}
}

// dumpReplica shows every field, secrets included (test values only).
func dumpReplica(r *Replica) string {
	v := reflect.ValueOf(*r)
	var b strings.Builder
	for i := 0; i < v.NumField(); i++ {
		b.WriteString("  " + v.Type().Field(i).Name + "=" + strings.TrimSpace(fmtAny(v.Field(i).Interface())) + "\n")
	}
	return b.String()
}

func fmtAny(v any) string {
	switch x := v.(type) {
	case string:
		return `"` + x + `"`
	case time.Duration:
		return x.String()
	case bool:
		if x {
			return "true"
		}
		return "false"
	}
	return "?"
}

func TestParseDefaults(t *testing.T) {
	pinHostname(t)
	c := mustParse(t, doc(
		"dbs:",
		"  - path: /data/app.db",
		"    replicas:",
		"      - url: s3://bkt/app",
		"  - path: /data/b.db",
		"    replica:",
		"      url: /backups/b",
		"    follower:",
		"    lease:",
		"  - path: /data/c.db",
		"    replica: {bucket: bkt, path: c}",
		"    lease: {primary: node-a}",
	))
	db := func(path string, rs ...*Replica) *DB {
		return &DB{Path: path, Replicas: rs, MinCheckpointPageCount: 1000, MaxCheckpointPageCount: 10000,
			Levels: []time.Duration{30 * time.Second, 5 * time.Minute, time.Hour}, L0Retention: 5 * time.Minute}
	}
	want := &Config{Logging: Logging{Level: "info", Type: "text"}, DBs: []*DB{
		db("/data/app.db", withReplicaDefaults(Replica{Name: "s3", Type: "s3", Bucket: "bkt", Path: "app"})),
		db("/data/b.db", withReplicaDefaults(Replica{Name: "file", Type: "file", Path: "/backups/b"})),
		db("/data/c.db", withReplicaDefaults(Replica{Name: "s3", Type: "s3", Bucket: "bkt", Path: "c"})),
	}}
	want.DBs[1].Follower = &Follower{Replica: "file", PollInterval: time.Second}
	want.DBs[1].Lease = &Lease{Type: "consul", Node: "testhost", OnDemote: "halt",
		Consul: &ConsulLease{KeyPrefix: "understudy/", Mode: "kv", TTL: 2 * time.Second}}
	want.DBs[2].Lease = &Lease{Type: "static", Node: "testhost", OnDemote: "halt", StaticPrimary: "node-a"}
	assertConfig(t, c, want)
}

func TestParseEmptyFile(t *testing.T) {
	for _, data := range []string{"", "# only a comment\n", "dbs:\n"} {
		c, err := Parse([]byte(data), "understudy.yml", true)
		if err != nil {
			t.Fatalf("Parse(%q): %v", data, err)
		}
		if len(c.DBs) != 0 || c.Logging.Level != "info" {
			t.Errorf("Parse(%q) = %+v, want no dbs and default logging", data, c)
		}
	}
}

func TestReplicaNames(t *testing.T) {
	for _, tc := range []struct {
		in   []Replica // Type and Name as given
		want []string
	}{
		{[]Replica{{Type: "s3"}}, []string{"s3"}},
		{[]Replica{{Type: "s3"}, {Type: "file"}}, []string{"s3", "file"}},
		{[]Replica{{Type: "s3"}, {Type: "s3"}}, []string{"replica1", "replica2"}},
		{[]Replica{{Type: "file"}, {Type: "s3"}, {Type: "s3"}}, []string{"file", "replica2", "replica3"}},
		{[]Replica{{Type: "s3", Name: "file"}, {Type: "file"}}, []string{"file", "replica2"}},
		{[]Replica{{Type: "s3", Name: "backup"}, {Type: "s3"}}, []string{"backup", "s3"}},
	} {
		var rs []*Replica
		for i := range tc.in {
			rs = append(rs, &tc.in[i])
		}
		nameReplicas(rs)
		var got []string
		for _, r := range rs {
			got = append(got, r.Name)
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("names of %+v = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestPathsResolve(t *testing.T) {
	dir := t.TempDir()
	home := filepath.Join(dir, "home")
	t.Setenv("HOME", home)
	t.Chdir(dir)
	c := mustParse(t, doc(
		"dbs:",
		"  - path: app.db",
		"    replicas:",
		"      - path: ./backups/app",
		"      - url: ../shared/app",
		"  - path: ~/data/b.db",
		"    replica:",
		"      url: ~/backups/b",
	))
	for _, tc := range []struct{ got, want string }{
		{c.DBs[0].Path, filepath.Join(dir, "app.db")},
		{c.DBs[0].Replicas[0].Path, filepath.Join(dir, "backups/app")},
		{c.DBs[0].Replicas[1].Path, filepath.Join(filepath.Dir(dir), "shared/app")},
		{c.DBs[1].Path, filepath.Join(home, "data/b.db")},
		{c.DBs[1].Replicas[0].Path, filepath.Join(home, "backups/b")},
		{c.DBs[1].Name(), "b.db"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
	if db := c.DB("app.db"); db != c.DBs[0] {
		t.Errorf("DB(app.db) = %v, want the first db", db)
	}
	if db := c.DB("~/data/b.db"); db != c.DBs[1] {
		t.Errorf("DB(~/data/b.db) = %v, want the second db", db)
	}
	if db := c.DB("/nowhere.db"); db != nil {
		t.Errorf("DB(/nowhere.db) = %v, want nil", db)
	}
	if r := c.DBs[0].Replica("file"); r != nil {
		t.Errorf("Replica(file) = %v, want nil: two file replicas are named replica1, replica2", r)
	}
	if r := c.DBs[0].Replica("replica2"); r != c.DBs[0].Replicas[1] {
		t.Errorf("Replica(replica2) = %v", r)
	}
}

func TestEnvExpansion(t *testing.T) {
	t.Setenv("US_BUCKET", "from-env")
	t.Setenv("US_KEY", "AKIDENV")
	t.Setenv("US_SECRET", "secret$env")
	t.Setenv("US_SYNC", "3s")
	data := doc(
		"access-key-id: $US_KEY",
		"secret-access-key: ${US_SECRET}",
		"dbs:",
		"  - path: /data/app.db",
		"    replicas:",
		"      - url: s3://${US_BUCKET}/app",
		"        sync-interval: $US_SYNC",
		"      - path: /backups/${US_UNSET}app",
	)
	c := mustParse(t, data)
	r := c.DBs[0].Replicas[0]
	if r.Bucket != "from-env" || r.SyncInterval != 3*time.Second || r.AccessKeyID != "AKIDENV" || r.SecretAccessKey != "secret$env" {
		t.Errorf("expanded replica = %s", dumpReplica(r))
	}
	if got := c.DBs[0].Replicas[1].Path; got != "/backups/app" {
		t.Errorf("unset variable: path %q, want /backups/app (unset expands to empty)", got)
	}

	// -no-expand-env: $VAR stays as written.
	raw := doc(
		"access-key-id: $US_KEY",
		"secret-access-key: ${US_SECRET}",
		"dbs:",
		"  - path: /data/$app.db",
		"    replicas:",
		"      - url: s3://bucket/${US_BUCKET}",
	)
	c, err := Parse(raw, "understudy.yml", false)
	if err != nil {
		t.Fatal(err)
	}
	r = c.DBs[0].Replicas[0]
	if c.AccessKeyID != "$US_KEY" || c.SecretAccessKey != "${US_SECRET}" || c.DBs[0].Path != "/data/$app.db" || r.Path != "${US_BUCKET}" {
		t.Errorf("without expansion: %q %q %q %q", c.AccessKeyID, c.SecretAccessKey, c.DBs[0].Path, r.Path)
	}

	// A bad value that came from the environment is reported at its line.
	t.Setenv("US_SYNC", "soon")
	if _, err := Parse(data, "understudy.yml", true); err == nil || err.Error() !=
		`understudy.yml:7: dbs[0].replicas[0].sync-interval: invalid duration "soon": use a number with a unit, e.g. 500ms, 10s, 5m or 24h` {
		t.Errorf("error = %v", err)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "understudy.yml")
	if err := os.WriteFile(path, doc("dbs:", "  - path: /data/app.db", "    replica: {url: s3://b/app}"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path, true)
	if err != nil {
		t.Fatal(err)
	}
	if c.DBs[0].Replicas[0].Bucket != "b" {
		t.Errorf("loaded %v", c)
	}

	missing := filepath.Join(dir, "nope.yml")
	_, err = Load(missing, true)
	if !errors.Is(err, fs.ErrNotExist) || err.Error() != "read config file: open "+missing+": no such file or directory" {
		t.Errorf("Load(missing) = %v, want a not-exist error naming the path", err)
	}

	if err := os.WriteFile(path, doc("dbs:", "  - path: /data/app.db"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Load(path, true)
	want := path + ":2: dbs[0]: no replicas: add replicas: with at least one (url: s3://BUCKET/PATH or a directory)"
	var list ErrorList
	if err == nil || err.Error() != want || !errors.As(err, &list) || list[0].Line != 2 || list[0].Path != "dbs[0]" {
		t.Errorf("Load(no replicas) = %v, want %s", err, want)
	}
}

func TestNewDB(t *testing.T) {
	db, err := NewDB("/data/app.db", "s3://bkt/app?region=r", "/backups/app")
	if err != nil {
		t.Fatal(err)
	}
	if db.Path != "/data/app.db" || len(db.Replicas) != 2 || db.Replicas[0].Name != "s3" || db.Replicas[1].Name != "file" ||
		db.Replicas[0].SyncInterval != DefaultSyncInterval || db.MaxCheckpointPageCount != DefaultMaxCheckpointPageCount {
		t.Errorf("NewDB = %+v", db)
	}
	for _, tc := range []struct {
		urls []string
		want string
	}{
		{nil, "database /data/app.db: no replicas: add replicas: with at least one (url: s3://BUCKET/PATH or a directory)"},
		{[]string{"gs://b/x"}, `replica URL "gs://b/x": unsupported scheme "gs": use gcs://BUCKET/PATH for Google Cloud Storage`},
		{[]string{"s3://b/x", "s3://b/x/"}, `replica URL "s3://b/x/": same store as replica URL "s3://b/x" (s3://b/x): each replica needs its own path`},
	} {
		_, err := NewDB("/data/app.db", tc.urls...)
		if err == nil || err.Error() != tc.want {
			t.Errorf("NewDB(%q) error = %v\nwant %s", tc.urls, err, tc.want)
		}
	}
}

func TestSuggest(t *testing.T) {
	for _, tc := range []struct{ key, want string }{
		{"sync-intervall", "sync-interval"},
		{"sync_interval", "sync-interval"},
		{"syncInterval", "sync-interval"},
		{"SYNC-INTERVAL", "sync-interval"},
		{"retension", "retention"},
		{"buckt", "bucket"},
		{"ur", "url"},
		{"exec", ""},
		{"monitor-interval", ""},
	} {
		if got := suggest(tc.key, replicaKeys); got != tc.want {
			t.Errorf("suggest(%q) = %q, want %q", tc.key, got, tc.want)
		}
	}
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"", "", 0}, {"abc", "abc", 0}, {"", "abc", 3}, {"ulr", "url", 1},
		{"kitten", "sitting", 3}, {"retension", "retention", 1}, {"ab", "ba", 1},
	} {
		if got := editDistance(tc.a, tc.b); got != tc.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}

func TestAliases(t *testing.T) {
	c := mustParse(t, doc(
		"dbs:",
		"  - path: /data/a.db",
		"    replica: {url: s3://b/a, sync-interval: &fast 100ms}",
		"  - path: /data/b.db",
		"    replica: {url: s3://b/b, sync-interval: *fast}",
	))
	if got := c.DBs[1].Replicas[0].SyncInterval; got != 100*time.Millisecond {
		t.Errorf("aliased sync-interval = %v, want 100ms", got)
	}
}

// The sample in the package documentation is a valid file.
func TestDocExample(t *testing.T) {
	src, err := os.ReadFile("config.go")
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(string(src), "\n") {
		if rest, ok := strings.CutPrefix(l, "//\t"); ok {
			lines = append(lines, rest)
		}
	}
	if len(lines) < 40 {
		t.Fatalf("found only %d lines of the sample", len(lines))
	}
	c, err := Parse(doc(lines...), "config.go sample", false)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.DBs) != 1 || len(c.DBs[0].Replicas) != 3 || c.DBs[0].Replicas[2].Type != TypeSFTP || c.DBs[0].Lease.Consul.HealthCheck != "service:app" {
		t.Errorf("sample parsed as\n%s", c)
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		err  string
	}{
		{"1048576", 1 << 20, ""},
		{"512B", 512, ""},
		{"64MiB", 64 << 20, ""},
		{"64 MiB", 64 << 20, ""},
		{"64mib", 64 << 20, ""},
		{"2GiB", 2 << 30, ""},
		{"1TiB", 1 << 40, ""},
		{"8KiB", 8 << 10, ""},
		{"500MB", 500e6, ""},
		{"1GB", 1e9, ""},
		{"3kB", 3000, ""},
		{"2TB", 2e12, ""},
		{"1.5GiB", 0, `invalid size "1.5GiB"`},
		{"-1MiB", 0, `invalid size "-1MiB"`},
		{"64M", 0, `unknown unit "M"`},
		{"9000000000TiB", 0, "too large"},
		{"99999999999999999999", 0, "too large"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseSize(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("parseSize(%q) = %d, %v; want an error containing %q", tt.in, got, err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("parseSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
			}
		})
	}
}

// TestReplicasApart: stores that only look alike are not nested: a longer
// name beside a path, a year-like prefix, another endpoint, a directory
// named ltx that holds no level, a level-like name above ltx.
func TestReplicasApart(t *testing.T) {
	mustParse(t, doc(
		"dbs:",
		"  - path: /data/a.db",
		"    replicas:",
		"      - url: /backups/a",
		"      - url: /backups/ab",
		"      - url: s3://bkt/2024/app",
		"      - url: s3://bkt/app?endpoint=http://x:1",
		"      - url: s3://bkt/app/x?endpoint=http://y:1",
		"      - url: /r/ltx/x",
		"      - url: /r/0/ltx",
		"  - path: /data/b.db",
		"    replica: {url: s3://bkt/app/0010}",
	))
}

// TestLitestreamConfigs: config files as Litestream 0.3 and 0.5 users write
// them load as they mean: replicas: with url:, Litestream 0.5's single
// replica:, and the type/bucket/path/endpoint/region/force-path-style keys.
func TestLitestreamConfigs(t *testing.T) {
	t.Setenv("LITESTREAM_ACCESS_KEY_ID", "AKIDLS")
	t.Setenv("LITESTREAM_SECRET_ACCESS_KEY", "SECRETLS")
	s3 := func(r Replica) *Replica { r.Type = "s3"; return withReplicaDefaults(r) }
	for _, tc := range []struct {
		name  string
		lines []string
		want  []*Replica
	}{
		{"0.3: replicas with an s3 url", []string{
			"access-key-id: $LITESTREAM_ACCESS_KEY_ID",
			"secret-access-key: $LITESTREAM_SECRET_ACCESS_KEY",
			"dbs:",
			"  - path: /var/lib/app.db",
			"    replicas:",
			"      - url: s3://mybkt.litestream.io/app.db",
			"        retention: 72h",
			"        snapshot-interval: 12h",
		}, []*Replica{s3(Replica{Name: "s3", Bucket: "mybkt.litestream.io", Path: "app.db", AccessKeyID: "AKIDLS", SecretAccessKey: "SECRETLS",
			Retention: 72 * time.Hour, SnapshotInterval: 12 * time.Hour})}},
		{"0.3: MinIO by its localhost url", []string{
			"dbs:",
			"  - path: /var/lib/app.db",
			"    replicas:",
			"      - url: s3://mybkt.localhost:9000/app.db",
		}, []*Replica{s3(Replica{Name: "s3", Bucket: "mybkt", Path: "app.db", Endpoint: "http://localhost:9000", Region: "us-east-1", ForcePathStyle: true})}},
		{"0.3/0.5: an S3-compatible store by keys", []string{
			"dbs:",
			"  - path: /var/lib/app.db",
			"    replicas:",
			"      - type: s3",
			"        bucket: mybkt",
			"        path: app.db",
			"        endpoint: https://s3.us-west-000.backblazeb2.com",
			"        region: us-west-000",
			"        force-path-style: true",
			"        access-key-id: ${LITESTREAM_ACCESS_KEY_ID}",
			"        secret-access-key: ${LITESTREAM_SECRET_ACCESS_KEY}",
			"        sync-interval: 10s",
		}, []*Replica{s3(Replica{Name: "s3", Bucket: "mybkt", Path: "app.db", Endpoint: "https://s3.us-west-000.backblazeb2.com", Region: "us-west-000",
			ForcePathStyle: true, AccessKeyID: "AKIDLS", SecretAccessKey: "SECRETLS", SyncInterval: 10 * time.Second})}},
		{"0.5: a single replica and a file replica by path", []string{
			"dbs:",
			"  - path: /var/lib/app.db",
			"    replica:",
			"      type: s3",
			"      bucket: mybkt",
			"      path: /app.db/",
			"      region: us-east-1",
			"  - path: /var/lib/other.db",
			"    replicas:",
			"      - path: /backups/other",
		}, []*Replica{s3(Replica{Name: "s3", Bucket: "mybkt", Path: "app.db", Region: "us-east-1"}),
			withReplicaDefaults(Replica{Name: "file", Type: "file", Path: "/backups/other"})}},
		{"0.3: sftp by keys, and by url with a key", []string{
			"dbs:",
			"  - path: /var/lib/app.db",
			"    replicas:",
			"      - type: sftp",
			"        host: backup.example:2222",
			"        user: ls",
			"        password: ${LITESTREAM_SECRET_ACCESS_KEY}",
			"        path: backups/app",
			"  - path: /var/lib/other.db",
			"    replica:",
			"      url: sftp://ls@backup.example/srv/other",
			"      key-path: /etc/litestream/id_ed25519",
		}, []*Replica{
			withReplicaDefaults(Replica{Name: "sftp", Type: "sftp", Host: "backup.example:2222", User: "ls", Password: "SECRETLS", Path: "backups/app"}),
			withReplicaDefaults(Replica{Name: "sftp", Type: "sftp", Host: "backup.example", User: "ls", Path: "/srv/other", KeyPath: "/etc/litestream/id_ed25519"})}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := mustParse(t, doc(tc.lines...))
			var got []*Replica
			for _, db := range c.DBs {
				got = append(got, db.Replicas...)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("%d replicas, want %d", len(got), len(tc.want))
			}
			for i := range got {
				if *got[i] != *tc.want[i] {
					t.Errorf("replica %d =\n%s\nwant\n%s", i, dumpReplica(got[i]), dumpReplica(tc.want[i]))
				}
			}
		})
	}
}

// TestConsulModeTTL: mode kv (the default) defaults its ttl to 2s and
// accepts 1s, below the session mode's floor; session keeps 10s and its
// lock-delay.
func TestConsulModeTTL(t *testing.T) {
	pinHostname(t)
	tests := []struct {
		name, consul string
		mode         string
		ttl          time.Duration
	}{
		{"default mode", "{}", "kv", 2 * time.Second},
		{"default mode 1s", "{ttl: 1s}", "kv", time.Second},
		{"session default ttl", "{mode: session}", "session", 10 * time.Second},
		{"kv default ttl", "{mode: kv}", "kv", 2 * time.Second},
		{"kv 1s", "{mode: KV, ttl: 1s}", "kv", time.Second},
		{"session explicit", "{mode: session, ttl: 12s}", "session", 12 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mustParse(t, doc(
				"dbs:",
				"  - path: /data/app.db",
				"    replica: {url: /backups/app}",
				"    lease:",
				"      consul: "+tt.consul,
			))
			got := c.DBs[0].Lease.Consul
			if got.Mode != tt.mode || got.TTL != tt.ttl {
				t.Errorf("consul %s: mode %q ttl %s, want %q %s", tt.consul, got.Mode, got.TTL, tt.mode, tt.ttl)
			}
		})
	}
}
