package config

import (
	"reflect"
	"strings"
	"testing"
)

// TestEmptyEnv: every ${VAR} that expands to nothing outside a comment is
// listed with its line (as written in the file) and key, and EmptyEnvOf
// gives a replica the ones that explain a storage error of its own.
func TestEmptyEnv(t *testing.T) {
	t.Setenv("US_EMPTY", "")
	t.Setenv("US_BUCKET", "bkt")
	t.Setenv("US_TWO_LINES", "a\nb")
	ref := func(line int, path, name string, set bool) EnvRef {
		return EnvRef{File: "understudy.yml", Line: line, Path: path, Name: name, Set: set}
	}
	for _, tc := range []struct {
		name  string
		lines []string
		want  []EnvRef
		of    map[string][]EnvRef // replica name -> EmptyEnvOf
	}{
		{"unset and empty credentials of a replica", []string{
			"dbs:",
			"  - path: /data/app.db",
			"    replicas:",
			"      - url: s3://${US_BUCKET}/app",
			"        access-key-id: ${US_UNSET_KEY}",
			"        secret-access-key: $US_EMPTY",
		}, []EnvRef{
			ref(5, "dbs[0].replicas[0].access-key-id", "US_UNSET_KEY", false),
			ref(6, "dbs[0].replicas[0].secret-access-key", "US_EMPTY", true),
		}, map[string][]EnvRef{"s3": {
			ref(5, "dbs[0].replicas[0].access-key-id", "US_UNSET_KEY", false),
			ref(6, "dbs[0].replicas[0].secret-access-key", "US_EMPTY", true),
		}}},
		{"top-level credentials go to the s3 replicas without their own", []string{
			"access-key-id: ${US_UNSET_KEY}",
			"secret-access-key: ${US_UNSET_SECRET}",
			"dbs:",
			"  - path: /data/app.db",
			"    replicas:",
			"      - url: s3://bkt/app",
			"      - url: s3://bkt/own",
			"        access-key-id: AKID",
			"        secret-access-key: SECRET",
			"      - url: /backups/app",
		}, []EnvRef{
			ref(1, "access-key-id", "US_UNSET_KEY", false),
			ref(2, "secret-access-key", "US_UNSET_SECRET", false),
		}, map[string][]EnvRef{
			"replica1": {ref(1, "access-key-id", "US_UNSET_KEY", false), ref(2, "secret-access-key", "US_UNSET_SECRET", false)},
			"replica2": nil,
			"file":     nil,
		}},
		{"comments are not values", []string{
			"# access-key-id: ${US_C1}",
			"dbs:",
			"  - path: /data/app.db # ${US_C2}",
			"    replicas:",
			"      - url: s3://bkt/app  #${US_C3}",
			"        region: 'r#${US_Q1}'",
			"        endpoint: \"http://h:1/#${US_Q2}\"",
			"        name: it's#${US_P1}",
			"      #- url: ${US_C4}",
		}, []EnvRef{
			ref(6, "dbs[0].replicas[0].region", "US_Q1", false),
			ref(7, "dbs[0].replicas[0].endpoint", "US_Q2", false),
			ref(8, "dbs[0].replicas[0].name", "US_P1", false),
		}, nil},
		{"keys sharing a line", []string{
			"dbs:",
			"  - path: /data/app.db",
			"    replica: {url: s3://bkt/app, access-key-id: ${US_K}, secret-access-key: ${US_S}}",
		}, []EnvRef{
			ref(3, "dbs[0].replica.access-key-id", "US_K", false),
			ref(3, "dbs[0].replica.secret-access-key", "US_S", false),
		}, map[string][]EnvRef{"s3": {
			ref(3, "dbs[0].replica.access-key-id", "US_K", false),
			ref(3, "dbs[0].replica.secret-access-key", "US_S", false),
		}}},
		{"a value over two lines shifts nothing", []string{
			"dbs:",
			"  - path: \"/data/${US_TWO_LINES}.db\"",
			"    replicas:",
			"      - url: s3://bkt/app",
			"        region: ${US_R}",
		}, []EnvRef{
			ref(5, "dbs[0].replicas[0].region", "US_R", false),
		}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := mustParse(t, doc(tc.lines...))
			if got := c.EmptyEnv(); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("EmptyEnv() =\n%v\nwant\n%v", got, tc.want)
			}
			for name, want := range tc.of {
				r := c.DBs[0].Replica(name)
				if r == nil {
					t.Fatalf("no replica %q", name)
				}
				if got := c.EmptyEnvOf(r); !reflect.DeepEqual(got, want) {
					t.Errorf("EmptyEnvOf(%s) =\n%v\nwant\n%v", name, got, want)
				}
			}
		})
	}

	// A replica from a URL (follow REPLICA_URL PATH with a config file)
	// falls back to the top-level credentials.
	c := mustParse(t, doc("access-key-id: ${US_UNSET_KEY}", "secret-access-key: ${US_UNSET_SECRET}"))
	fromURL, err := ParseReplicaURL("s3://bkt/app")
	if err != nil {
		t.Fatal(err)
	}
	want := []EnvRef{ref(1, "access-key-id", "US_UNSET_KEY", false), ref(2, "secret-access-key", "US_UNSET_SECRET", false)}
	if got := c.EmptyEnvOf(fromURL); !reflect.DeepEqual(got, want) {
		t.Errorf("EmptyEnvOf(replica from a URL) = %v, want %v", got, want)
	}

	// Without expansion nothing expands, so nothing is empty.
	c, err = Parse(doc("dbs:", "  - path: /data/app.db", "    replica: {url: s3://bkt/app, region: $US_UNSET}"), "understudy.yml", false)
	if err != nil || c.EmptyEnv() != nil {
		t.Errorf("-no-expand-env: EmptyEnv() = %v (%v), want none", c.EmptyEnv(), err)
	}
}

func TestEnvRefString(t *testing.T) {
	for _, tc := range []struct {
		ref  EnvRef
		want string
	}{
		{EnvRef{File: "u.yml", Line: 5, Path: "dbs[0].replicas[0].access-key-id", Name: "AWS_ACCESS_KEY_ID"},
			"u.yml:5: dbs[0].replicas[0].access-key-id: ${AWS_ACCESS_KEY_ID} is not set, so it expands to nothing"},
		{EnvRef{File: "u.yml", Line: 2, Name: "X", Set: true},
			"u.yml:2: ${X} is set but empty, so it expands to nothing"},
	} {
		if got := tc.ref.String(); got != tc.want {
			t.Errorf("String() = %q, want %q", got, tc.want)
		}
	}
}

// TestErrorsNameEmptyEnv: an error about a key that a ${VAR} left empty
// names the variable, the likely cause.
func TestErrorsNameEmptyEnv(t *testing.T) {
	t.Setenv("US_EMPTY", "")
	for _, tc := range []struct {
		name  string
		lines []string
		want  string
	}{
		{"secret from an unset variable", []string{
			"dbs:",
			"  - path: /data/app.db",
			"    replicas:",
			"      - url: s3://bkt/app",
			"        access-key-id: AKID",
			"        secret-access-key: ${US_UNSET_SECRET}",
		}, `understudy.yml:5: dbs[0].replicas[0]: access-key-id is set but secret-access-key is not: set both or neither (line 6: ${US_UNSET_SECRET} is not set, so it expands to nothing)`},
		{"top-level key id from an empty variable", []string{
			"access-key-id: $US_EMPTY",
			"secret-access-key: s3cr3t",
		}, `understudy.yml:2: secret-access-key is set but access-key-id is not: set both or neither (line 1: ${US_EMPTY} is set but empty, so it expands to nothing)`},
		{"bucket from an unset variable", []string{
			"dbs:",
			"  - path: /data/app.db",
			"    replicas:",
			"      - type: s3",
			"        bucket: ${US_UNSET_BUCKET}",
		}, `understudy.yml:4: dbs[0].replicas[0]: s3 replica needs a bucket: set bucket, or url: s3://BUCKET/PATH (line 5: ${US_UNSET_BUCKET} is not set, so it expands to nothing)`},
		{"database path from an unset variable", []string{
			"dbs:",
			"  - path: ${US_UNSET_DB}",
			"    replica: {url: s3://bkt/app}",
		}, `understudy.yml:2: dbs[0]: missing path: set path to the SQLite database file (line 2: ${US_UNSET_DB} is not set, so it expands to nothing)`},
		{"an empty level from a variable", []string{
			"dbs:",
			"  - path: /data/app.db",
			"    replica: {url: s3://bkt/app}",
			"    levels:",
			"      - 30s",
			"      - ${US_UNSET_LEVEL}",
		}, `understudy.yml:6: dbs[0].levels[1]: empty: give a duration such as 5m (line 6: ${US_UNSET_LEVEL} is not set, so it expands to nothing)`},
		{"an unknown key lists the known ones but names no variable", []string{
			"dbs:",
			"  - path: /data/app.db",
			"    replicas:",
			"      - url: s3://bkt/app",
			"        region: ${US_UNSET_REGION}",
			"        acl: private",
		}, `understudy.yml:6: dbs[0].replicas[0]: unknown key "acl" (known keys: name, type, url, path, bucket, region, endpoint, force-path-style, skip-verify, access-key-id, secret-access-key, account-name, account-key, sync-interval, snapshot-interval, retention, retention-check-interval, required, conditional-writes, host, user, password, key-path, known-hosts-path, age, sse, sse-kms-key-id, sse-customer-key, sse-customer-key-path, sse-customer-algorithm)`},
		{"an unrelated error names nothing", []string{
			"dbs:",
			"  - path: /data/app.db",
			"    replicas:",
			"      - url: s3://bkt/app",
			"        region: ${US_UNSET_REGION}",
			"        sync-interval: 1x",
		}, `understudy.yml:6: dbs[0].replicas[0].sync-interval: invalid duration "1x": use a number with a unit, e.g. 500ms, 10s, 5m or 24h`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(doc(tc.lines...), "understudy.yml", true)
			if err == nil || err.Error() != tc.want {
				t.Errorf("error:\n%v\nwant:\n%s", err, tc.want)
			}
			if strings.Contains(tc.want, "s3cr3t") {
				t.Fatal("a secret in a message")
			}
		})
	}
}
