package config

import (
	"errors"
	"strings"
	"testing"
)

// A db with one good replica, for cases about other keys: lines 1-4.
var okDB = []string{
	"dbs:",
	"  - path: /data/app.db",
	"    replicas:",
	"      - url: s3://bkt/app",
}

func with(base []string, more ...string) []string {
	return append(append([]string{}, base...), more...)
}

// TestParseErrors holds one case per kind of mistake with the exact message
// a user sees: FILE:LINE: PATH: MESSAGE.
func TestParseErrors(t *testing.T) {
	pinHostname(t)
	for _, tc := range []struct {
		name  string
		lines []string
		want  string
	}{
		// YAML syntax and structure.
		// The YAML library names the line where the enclosing construct
		// begins (line 1 for all of these); the message names the line of
		// the offending token.
		{"yaml syntax", []string{"dbs:", "  - path: a", "   bad: ["},
			`understudy.yml:3: invalid YAML: did not find expected '-' indicator`},
		{"yaml key indented too far on line 5", with(okDB, "     bad: 1"),
			`understudy.yml:5: invalid YAML: did not find expected key`},
		{"yaml list item under a replica's mapping", with(okDB, "    - url: x"),
			`understudy.yml:5: invalid YAML: did not find expected key`},
		{"yaml key of a db outdented", with(okDB, "  path: x"),
			`understudy.yml:5: invalid YAML: did not find expected '-' indicator`},
		{"yaml junk after a quoted value", with(okDB, "        region: 'a'b"),
			`understudy.yml:5: invalid YAML: did not find expected key`},
		{"yaml unclosed [ on line 5", with(okDB, "    levels: [1s, 2s"),
			`understudy.yml:5: invalid YAML: did not find expected ',' or ']'`},
		{"yaml unclosed { on line 5", with(okDB, "        region: {a: b", "        endpoint: c"),
			`understudy.yml:5: invalid YAML: did not find expected ',' or '}'`},
		{"yaml key without colon", []string{"addr: :1", "addr2 :1", "dbs: x"},
			`understudy.yml:2: invalid YAML: could not find expected ':'`},
		{"tab indent", []string{"dbs:", "\t- path: a"},
			`understudy.yml:2: invalid YAML: found character that cannot start any token (YAML is indented with spaces, not tabs)`},
		{"second document", []string{"addr: :9090", "---", "addr: :9091"},
			`understudy.yml:2: a second YAML document (after ---): put everything in one`},
		{"top level is a list", []string{"- path: a"},
			`understudy.yml:1: must be a mapping (key: value lines), not a list`},
		{"unknown top-level key with suggestion", []string{"db:", "  - path: a"},
			`understudy.yml:1: unknown key "db" (did you mean "dbs"?)`},
		{"unknown top-level key without suggestion", []string{"mcp: x"},
			`understudy.yml:1: unknown key "mcp" (known keys: addr, access-key-id, secret-access-key, logging, dbs)`},
		{"Litestream's exec", []string{"exec: ./app"},
			`understudy.yml:1: unknown key "exec": Litestream's exec: is a flag here: understudy replicate -exec CMD`},
		{"Litestream's monitor-interval", with(okDB, "    monitor-interval: 1s"),
			`understudy.yml:5: dbs[0]: unknown key "monitor-interval": Understudy watches the WAL by itself: remove monitor-interval`},
		{"Litestream's checkpoint-interval", with(okDB, "    checkpoint-interval: 1m"),
			`understudy.yml:5: dbs[0]: unknown key "checkpoint-interval": checkpoints follow the WAL's size here: remove checkpoint-interval and set min-checkpoint-page-count / max-checkpoint-page-count`},
		{"Litestream's meta-path", with(okDB, "    meta-path: /var/lib/meta"),
			`understudy.yml:5: dbs[0]: unknown key "meta-path": Understudy keeps its state beside the database (.NAME-understudy): remove meta-path`},
		{"unknown replica key (typo)", with(okDB, "        sync-intervall: 1s"),
			`understudy.yml:5: dbs[0].replicas[0]: unknown key "sync-intervall" (did you mean "sync-interval"?)`},
		{"unknown replica key (underscore)", with(okDB, "        force_path_style: true"),
			`understudy.yml:5: dbs[0].replicas[0]: unknown key "force_path_style" (did you mean "force-path-style"?)`},
		{"unknown db key", with(okDB, "    monitor: 1s"),
			`understudy.yml:5: dbs[0]: unknown key "monitor" (known keys: name, path, replicas, replica, min-checkpoint-page-count, max-checkpoint-page-count, levels, l0-retention, max-shadow-size, adopt-replica, follower, lease, dir, pattern, recursive, watch, per-db-metrics, idle-after, max-open)`},
		{"unknown logging key", []string{"logging:", "  levle: debug"},
			`understudy.yml:2: logging: unknown key "levle" (did you mean "level"?)`},
		{"unknown follower key", with(okDB, "    follower:", "      pol-interval: 1s"),
			`understudy.yml:6: dbs[0].follower: unknown key "pol-interval" (did you mean "poll-interval"?)`},
		{"unknown lease key", with(okDB, "    lease:", "      ondemote: exit"),
			`understudy.yml:6: dbs[0].lease: unknown key "ondemote" (did you mean "on-demote"?)`},
		{"unknown consul key", with(okDB, "    lease:", "      consul:", "        adress: x"),
			`understudy.yml:7: dbs[0].lease.consul: unknown key "adress" (did you mean "address"?)`},
		{"unknown key in single replica:", []string{"dbs:", "  - path: a", "    replica:", "      url: s3://b/a", "      retension: 1h"},
			`understudy.yml:5: dbs[0].replica: unknown key "retension" (did you mean "retention"?)`},
		{"duplicate key", []string{"dbs:", "  - path: /a", "    path: /b"},
			`understudy.yml:3: dbs[0]: key "path" appears twice (first on line 2)`},
		{"merge key", []string{"dbs:", "  - path: a", "    replica:", "      <<: {url: s3://b/a}"},
			`understudy.yml:4: dbs[0].replica: merge keys (<<) are not supported`},
		{"unknown anchor", []string{"dbs: *nope"},
			`understudy.yml:1: invalid YAML: unknown anchor 'nope' referenced`},
		{"unknown anchor on line 6", with(okDB, "        region: &a x", "        endpoint: *b"),
			`understudy.yml:6: invalid YAML: unknown anchor 'b' referenced`},
		{"dbs not a list", []string{"dbs:", "  path: a"},
			`understudy.yml:2: dbs: must be a list (lines starting with -), not a mapping`},
		{"replicas not a list", []string{"dbs:", "  - path: a", "    replicas:", "      url: s3://b/a"},
			`understudy.yml:4: dbs[0].replicas: must be a list (lines starting with -), not a mapping`},
		{"db not a mapping", []string{"dbs:", "  - /data/app.db"},
			`understudy.yml:2: dbs[0]: must be a mapping (key: value lines), not a single value`},
		{"string key is a list", with(okDB, "        region: [a, b]"),
			`understudy.yml:5: dbs[0].replicas[0].region: must be a single value, not a list`},

		// Values.
		{"bad duration", with(okDB, "        sync-interval: 1x"),
			`understudy.yml:5: dbs[0].replicas[0].sync-interval: invalid duration "1x": use a number with a unit, e.g. 500ms, 10s, 5m or 24h`},
		{"duration without unit", with(okDB, "        retention: 24"),
			`understudy.yml:5: dbs[0].replicas[0].retention: invalid duration "24": use a number with a unit, e.g. 500ms, 10s, 5m or 24h`},
		{"zero duration", with(okDB, "        snapshot-interval: 0s"),
			`understudy.yml:5: dbs[0].replicas[0].snapshot-interval: must be greater than zero (got "0s")`},
		{"negative duration", with(okDB, "        retention-check-interval: -1h"),
			`understudy.yml:5: dbs[0].replicas[0].retention-check-interval: must be greater than zero (got "-1h")`},
		{"poll-interval below 50ms", with(okDB, "    follower:", "      poll-interval: 10ms"),
			`understudy.yml:6: dbs[0].follower.poll-interval: must be at least 50ms (got "10ms")`},
		{"ttl below 10s in mode session", with(okDB, "    lease:", "      consul:", "        mode: session", "        ttl: 5s"),
			`understudy.yml:8: dbs[0].lease.consul.ttl: must be at least 10s, Consul's minimum session TTL (got "5s")`},
		{"ttl below 1s in the default mode", with(okDB, "    lease:", "      consul:", "        ttl: 500ms"),
			`understudy.yml:7: dbs[0].lease.consul.ttl: must be at least 1s for mode kv (got "500ms")`},
		{"ttl below 1s in mode kv", with(okDB, "    lease:", "      consul:", "        mode: kv", "        ttl: 500ms"),
			`understudy.yml:8: dbs[0].lease.consul.ttl: must be at least 1s for mode kv (got "500ms")`},
		{"unknown consul mode", with(okDB, "    lease:", "      consul: {mode: cas}"),
			`understudy.yml:6: dbs[0].lease.consul.mode: unknown consul lease mode "cas": use session or kv`},
		{"lock-delay in mode kv", with(okDB, "    lease:", "      consul: {ttl: 10s, lock-delay: 1s}"),
			`understudy.yml:6: dbs[0].lease.consul.lock-delay: is a setting of mode session, and the mode is kv (the default since lock-delay was written?): add mode: session to keep the session lease, or remove lock-delay`},
		{"zero lock-delay", with(okDB, "    lease:", "      consul: {mode: session, lock-delay: 0s}"),
			`understudy.yml:6: dbs[0].lease.consul.lock-delay: must be greater than zero (got "0s")`},
		{"bad l0-retention", with(okDB, "    l0-retention: five minutes"),
			`understudy.yml:5: dbs[0].l0-retention: invalid duration "five minutes": use a number with a unit, e.g. 500ms, 10s, 5m or 24h`},
		{"unknown db key (underscores in max-shadow-size)", with(okDB, "    max_shadow_size: 1GiB"),
			`understudy.yml:5: dbs[0]: unknown key "max_shadow_size" (did you mean "max-shadow-size"?)`},
		{"bad size", with(okDB, "    max-shadow-size: lots"),
			`understudy.yml:5: dbs[0].max-shadow-size: invalid size "lots": use a number of bytes or a number with a unit, e.g. 64MiB, 512MB or 2GiB`},
		{"ambiguous size unit", with(okDB, "    max-shadow-size: 64M"),
			`understudy.yml:5: dbs[0].max-shadow-size: invalid size "64M": unknown unit "M"; use B, kB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024)`},
		{"zero size", with(okDB, "    max-shadow-size: 0"),
			`understudy.yml:5: dbs[0].max-shadow-size: must be greater than zero (got "0")`},
		{"bad number", with(okDB, "    min-checkpoint-page-count: 1k"),
			`understudy.yml:5: dbs[0].min-checkpoint-page-count: invalid number "1k": use a whole number such as 1000`},
		{"zero number", with(okDB, "    max-checkpoint-page-count: 0"),
			`understudy.yml:5: dbs[0].max-checkpoint-page-count: must be greater than zero (got "0")`},
		{"min >= max checkpoint", with(okDB, "    min-checkpoint-page-count: 5000", "    max-checkpoint-page-count: 5000"),
			`understudy.yml:5: dbs[0]: min-checkpoint-page-count (5000) must be less than max-checkpoint-page-count (5000)`},
		{"min above default max", with(okDB, "    min-checkpoint-page-count: 20000"),
			`understudy.yml:5: dbs[0]: min-checkpoint-page-count (20000) must be less than max-checkpoint-page-count (10000)`},
		{"max below default min", with(okDB, "    max-checkpoint-page-count: 500"),
			`understudy.yml:5: dbs[0]: min-checkpoint-page-count (1000) must be less than max-checkpoint-page-count (500)`},
		{"bad boolean", with(okDB, "        skip-verify: yes"),
			`understudy.yml:5: dbs[0].replicas[0].skip-verify: invalid boolean "yes": use true or false`},
		{"bad auto-promote", with(okDB, "    follower: {auto-promote: 1}"),
			`understudy.yml:5: dbs[0].follower.auto-promote: invalid boolean "1": use true or false`},
		{"bad log level", []string{"logging:", "  level: verbose"},
			`understudy.yml:2: logging.level: unknown level "verbose": use trace, debug, info, warn or error`},
		{"bad log type", []string{"logging: {type: xml}"},
			`understudy.yml:1: logging.type: unknown type "xml": use text or json`},
		{"bad addr", []string{"addr: 9090"},
			`understudy.yml:1: addr: invalid address "9090": use HOST:PORT or :PORT`},
		{"empty levels", with(okDB, "    levels: []"),
			`understudy.yml:5: dbs[0].levels: must list at least one interval (L1)`},
		{"too many levels", with(okDB, "    levels: [1s, 2s, 3s, 4s, 5s, 6s, 7s, 8s, 9s]"),
			`understudy.yml:5: dbs[0].levels: at most 8 levels (L1-L8), got 9`},
		{"levels not increasing", with(okDB, "    levels:", "      - 1m", "      - 30s"),
			`understudy.yml:7: dbs[0].levels[1]: must be longer than levels[0] (1m)`},
		{"bad level", with(okDB, "    levels: [30s, 5x]"),
			`understudy.yml:5: dbs[0].levels[1]: invalid duration "5x": use a number with a unit, e.g. 500ms, 10s, 5m or 24h`},
		{"levels not a list", with(okDB, "    levels: 30s"),
			`understudy.yml:5: dbs[0].levels: must be a list (lines starting with -), not a single value`},
		{"bad db name", with(okDB, "    name: my app"),
			`understudy.yml:5: dbs[0].name: invalid name "my app": use letters, digits, '.', '_' and '-'`},

		// Replicas.
		{"unknown type", []string{"dbs:", "  - path: a", "    replica:", "      type: webdav", "      bucket: b"},
			`understudy.yml:4: dbs[0].replica.type: unknown replica type "webdav": use s3, file, sftp, gcs or abs`},
		{"type does not match url", []string{"dbs:", "  - path: a", "    replica:", "      type: file", "      url: s3://b/a"},
			`understudy.yml:4: dbs[0].replica.type: "file" does not match url, which is a s3 location`},
		{"no location", []string{"dbs:", "  - path: a", "    replicas:", "      - name: x", "        region: r"},
			`understudy.yml:4: dbs[0].replicas[0]: no location: set url (s3://BUCKET/PATH, gcs://BUCKET/PATH, abs://ACCOUNT@CONTAINER/PATH, sftp://USER@HOST/PATH, file:///ABS/PATH or a directory), or type with bucket, host or path`},
		{"misspelt url", []string{"dbs:", "  - path: a", "    replicas:", "      - ulr: s3://b/a"},
			`understudy.yml:4: dbs[0].replicas[0]: unknown key "ulr" (did you mean "url"?)`},
		{"s3 without bucket", []string{"dbs:", "  - path: a", "    replicas:", "      - type: s3", "        path: db"},
			`understudy.yml:4: dbs[0].replicas[0]: s3 replica needs a bucket: set bucket, or url: s3://BUCKET/PATH`},
		{"file without path", []string{"dbs:", "  - path: a", "    replicas:", "      - type: file"},
			`understudy.yml:4: dbs[0].replicas[0]: file replica needs a path: set path, or url: file:///ABS/PATH`},
		{"s3 key on file replica", []string{"dbs:", "  - path: a", "    replicas:", "      - url: /backups/a", "        region: eu-west-1"},
			`understudy.yml:5: dbs[0].replicas[0].region: only for s3 replicas, and this is a file replica`},
		{"conditional-writes on a file replica", []string{"dbs:", "  - path: a", "    replicas:", "      - url: /backups/a", "        conditional-writes: if-supported"},
			`understudy.yml:5: dbs[0].replicas[0].conditional-writes: only for s3 replicas, and this is a file replica`},
		{"unknown conditional-writes", with(okDB, "        conditional-writes: off"),
			`understudy.yml:5: dbs[0].replicas[0].conditional-writes: unknown conditional-writes value "off": use require or if-supported`},
		{"conditional-writes differs from url", []string{"dbs:", "  - path: a", "    replicas:", "      - url: s3://b/a?conditional-writes=if-supported", "        conditional-writes: require"},
			`understudy.yml:5: dbs[0].replicas[0].conditional-writes: "require" differs from the conditional-writes in url ("if-supported")`},
		{"sftp key on s3 replica", []string{"dbs:", "  - path: a", "    replicas:", "      - url: s3://b/a", "        key-path: /k"},
			`understudy.yml:5: dbs[0].replicas[0].key-path: only for sftp replicas, and this is an s3 replica`},
		{"s3 key on sftp replica", []string{"dbs:", "  - path: a", "    replicas:", "      - url: sftp://u@h/a", "        key-path: /k", "        bucket: b"},
			`understudy.yml:6: dbs[0].replicas[0].bucket: only for s3, gcs or abs replicas, and this is an sftp replica`},
		{"sftp without user", []string{"dbs:", "  - path: a", "    replicas:", "      - {host: h, path: /a, key-path: /k}"},
			`understudy.yml:4: dbs[0].replicas[0]: sftp replica needs a user: set user, or url: sftp://USER@HOST[:PORT]/PATH`},
		{"sftp user differs from url", []string{"dbs:", "  - path: a", "    replicas:", "      - url: sftp://u@h/a", "        key-path: /k", "        user: v"},
			`understudy.yml:6: dbs[0].replicas[0].user: "v" differs from the user in url ("u")`},
		{"sftp store twice", []string{"dbs:", "  - path: a", "    replicas:", "      - {url: 'sftp://u@h/a', key-path: /k}", "      - {url: 'sftp://v@h/a/', key-path: /k}"},
			`understudy.yml:5: dbs[0].replicas[1]: same store as dbs[0].replicas[0] (sftp://v@h/a): each replica needs its own path`},
		{"key differs from url", with(okDB, "        bucket: other"),
			`understudy.yml:5: dbs[0].replicas[0].bucket: "other" differs from the bucket in url ("bkt")`},
		{"bool differs from url", []string{"dbs:", "  - path: a", "    replicas:", "      - url: s3://b/a?force-path-style=true", "        force-path-style: false"},
			`understudy.yml:5: dbs[0].replicas[0].force-path-style: false differs from the force-path-style=true in url`},
		{"bad url query", []string{"dbs:", "  - path: a", "    replicas:", "      - url: s3://b/a?regoin=x"},
			`understudy.yml:4: dbs[0].replicas[0].url: unknown query parameter "regoin" (did you mean "region"?)`},
		{"bad url scheme", []string{"dbs:", "  - path: a", "    replica: {url: \"webdav://b/a\"}"},
			`understudy.yml:3: dbs[0].replica.url: unsupported scheme "webdav": use s3://BUCKET/PATH, gcs://BUCKET/PATH, abs://ACCOUNT@CONTAINER/PATH, sftp://USER@HOST/PATH, file:///ABS/PATH or a directory path`},
		{"bad endpoint", with(okDB, "        endpoint: localhost:9000"),
			`understudy.yml:5: dbs[0].replicas[0].endpoint: invalid URL "localhost:9000": use http://HOST:PORT or https://HOST`},
		{"duplicate replica name", with(okDB, "        name: a", "      - url: /backups/a", "        name: a"),
			`understudy.yml:7: dbs[0].replicas[1].name: "a" is already used by dbs[0].replicas[0]`},
		{"same store twice", with(okDB, "  - path: /data/b.db", "    replica: {url: \"s3://bkt/app/\"}"),
			`understudy.yml:6: dbs[1].replica: same store as dbs[0].replicas[0] (s3://bkt/app): each replica needs its own path`},
		{"file replica inside a level directory", []string{"dbs:", "  - path: /data/a.db", "    replicas:", "      - url: file:///r/ltx/0/x"},
			`understudy.yml:4: dbs[0].replicas[0]: file:///r/ltx/0/x is inside the level directory ltx/0 of a replica at file:///r: its files would mix with that replica's history; give it a path of its own, outside /r/ltx/0`},
		{"file replica is a snapshot level directory", []string{"dbs:", "  - path: /data/a.db", "    replicas:", "      - type: file", "        path: /r/ltx/9"},
			`understudy.yml:5: dbs[0].replicas[0]: file:///r/ltx/9 is inside the level directory ltx/9 of a replica at file:///r: its files would mix with that replica's history; give it a path of its own, outside /r/ltx/9`},
		{"s3 replica inside a level directory", []string{"dbs:", "  - path: /data/a.db", "    replicas:", "      - url: s3://bkt/app/0000/x"},
			`understudy.yml:4: dbs[0].replicas[0]: s3://bkt/app/0000/x is inside the level directory 0000 of a replica at s3://bkt/app: its files would mix with that replica's history; give it a path of its own, outside app/0000`},
		{"s3 replica in a level directory of the bucket's root", []string{"dbs:", "  - path: /data/a.db", "    replica: {bucket: bkt, path: 0009}"},
			`understudy.yml:3: dbs[0].replica: s3://bkt/0009 is inside the level directory 0009 of a replica at s3://bkt: its files would mix with that replica's history; give it a path of its own, outside 0009`},
		{"s3 replica inside another db's", with(okDB, "  - path: /data/b.db", "    replica: {url: \"s3://bkt/app/b\"}"),
			`understudy.yml:6: dbs[1].replica: s3://bkt/app/b is inside the store of dbs[0].replicas[0] (s3://bkt/app): each replica needs a path of its own, outside every other replica's`},
		{"s3 replica at the root of another db's bucket", with(okDB, "  - path: /data/b.db", "    replica: {url: \"s3://bkt\"}"),
			`understudy.yml:4: dbs[0].replicas[0]: s3://bkt/app is inside the store of dbs[1].replica (s3://bkt): each replica needs a path of its own, outside every other replica's`},
		{"file replica inside another of the same db", []string{"dbs:", "  - path: /data/a.db", "    replicas:", "      - url: /backups/a", "      - url: /backups/a/b/c"},
			`understudy.yml:5: dbs[0].replicas[1]: file:///backups/a/b/c is inside the store of dbs[0].replicas[0] (file:///backups/a): each replica needs a path of its own, outside every other replica's`},
		{"same file store in two dbs", []string{"dbs:", "  - path: /data/a.db", "    replica: {url: /backups/a}", "  - path: /data/b.db", "    replica: {url: \"file:///backups/a/\"}"},
			`understudy.yml:5: dbs[1].replica: same store as dbs[0].replica (file:///backups/a): each replica needs its own path`},
		{"replica key id without secret", with(okDB, "        access-key-id: AKID"),
			`understudy.yml:5: dbs[0].replicas[0]: access-key-id is set but secret-access-key is not: set both or neither`},
		{"top-level secret without key id", with([]string{"secret-access-key: s3cr3t"}, okDB...),
			`understudy.yml:1: secret-access-key is set but access-key-id is not: set both or neither`},

		// Databases.
		{"db without path", []string{"dbs:", "  - replica: {url: s3://b/a}"},
			`understudy.yml:2: dbs[0]: missing path: set path to the SQLite database file`},
		{"db without replicas", []string{"dbs:", "  - path: /data/app.db"},
			`understudy.yml:2: dbs[0]: no replicas: add replicas: with at least one (url: s3://BUCKET/PATH or a directory)`},
		{"db with empty replicas", []string{"dbs:", "  - path: /data/app.db", "    replicas: []"},
			`understudy.yml:2: dbs[0]: no replicas: add replicas: with at least one (url: s3://BUCKET/PATH or a directory)`},
		{"replica and replicas", with(okDB, "    replica: {url: /backups/a}"),
			`understudy.yml:5: dbs[0]: use replica: or replicas:, not both`},
		{"same db path twice", with(okDB, "  - path: /data/./app.db", "    replica: {url: /backups/b}"),
			`understudy.yml:5: dbs[1].path: "/data/app.db" is already used by dbs[0] (line 2)`},
		{"same db name twice", with(okDB, "  - path: /other/app.db", "    replica: {url: /backups/b}"),
			`understudy.yml:5: dbs[1]: name "app.db" is already used by dbs[0] (line 2): set name: on one of them`},

		// Follower and lease.
		{"follower of an unknown replica", with(okDB, "    follower: {replica: backup}"),
			`understudy.yml:5: dbs[0].follower.replica: no replica named "backup" in dbs[0] (have s3)`},
		{"auto-promote without lease", with(okDB, "    follower:", "      auto-promote: true"),
			`understudy.yml:6: dbs[0].follower.auto-promote: needs a lease: section of type consul to elect the new primary`},
		{"auto-promote with static lease", with(okDB, "    follower: {auto-promote: true}", "    lease: {primary: node-a}"),
			`understudy.yml:5: dbs[0].follower.auto-promote: needs a lease: section of type consul to elect the new primary`},
		{"unknown lease type", with(okDB, "    lease: {type: etcd}"),
			`understudy.yml:5: dbs[0].lease.type: unknown lease type "etcd": use consul or static`},
		{"unknown on-demote", with(okDB, "    lease:", "      on-demote: stop"),
			`understudy.yml:6: dbs[0].lease.on-demote: unknown on-demote action "stop": use halt, exit or follow`},
		{"static without primary", with(okDB, "    lease:", "      type: static"),
			`understudy.yml:5: dbs[0].lease: type static needs primary: the node name of the primary`},
		{"primary on consul lease", with(okDB, "    lease:", "      type: consul", "      primary: node-a"),
			`understudy.yml:7: dbs[0].lease.primary: only for type static: with consul the lease elects the primary`},
		{"consul section on static lease", with(okDB, "    lease:", "      type: static", "      primary: node-a", "      consul: {ttl: 20s}"),
			`understudy.yml:8: dbs[0].lease.consul: only for type consul, and this lease is static`},
		{"bad advertise-url", with(okDB, "    lease: {advertise-url: \"10.0.0.1:9090\"}"),
			`understudy.yml:5: dbs[0].lease.advertise-url: invalid URL "10.0.0.1:9090": use http://HOST:PORT or https://HOST`},

		// Several problems: all of them, in file order.
		{"several", []string{"addr: x", "dbs:", "  - path: a", "    replicas:", "      - url: s3://b/a", "        sync-interval: 1x", "        retention: soon"},
			"understudy.yml:1: addr: invalid address \"x\": use HOST:PORT or :PORT\n" +
				"understudy.yml:6: dbs[0].replicas[0].sync-interval: invalid duration \"1x\": use a number with a unit, e.g. 500ms, 10s, 5m or 24h\n" +
				"understudy.yml:7: dbs[0].replicas[0].retention: invalid duration \"soon\": use a number with a unit, e.g. 500ms, 10s, 5m or 24h"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse(doc(tc.lines...), "understudy.yml", true)
			if err == nil {
				t.Fatalf("no error; parsed\n%s", c)
			}
			if err.Error() != tc.want {
				t.Errorf("error:\n%s\nwant:\n%s", err, tc.want)
			}
			if _, ok := err.(ErrorList); !ok {
				t.Errorf("error is a %T, want ErrorList", err)
			}
		})
	}
}

// TestErrorFormat covers the parts of Error that a file does not produce.
func TestErrorFormat(t *testing.T) {
	for _, tc := range []struct {
		e    Error
		want string
	}{
		{Error{File: "f.yml", Line: 3, Path: "dbs[0]", Msg: "m"}, "f.yml:3: dbs[0]: m"},
		{Error{File: "f.yml", Path: "dbs[0]", Msg: "m"}, "f.yml: dbs[0]: m"},
		{Error{File: "f.yml", Line: 1, Msg: "m"}, "f.yml:1: m"},
		{Error{Path: "replica URL \"x\"", Msg: "m"}, "replica URL \"x\": m"},
	} {
		if got := tc.e.Error(); got != tc.want {
			t.Errorf("%+v.Error() = %q, want %q", tc.e, got, tc.want)
		}
	}
	if got := (ErrorList{{Msg: "a"}, {Msg: "b"}}).Error(); got != "a\nb" {
		t.Errorf("ErrorList = %q", got)
	}
	if strings.Contains(unknownKeyMsg("zzz", []string{"a"}), "did you mean") {
		t.Error("suggested a key for zzz")
	}
}

func TestLeaseNodeUnknown(t *testing.T) {
	old := hostname
	hostname = func() (string, error) { return "", errors.New("no uts") }
	t.Cleanup(func() { hostname = old })
	_, err := Parse(doc(with(okDB, "    lease:", "      type: consul")...), "understudy.yml", true)
	want := `understudy.yml:5: dbs[0].lease.node: missing: this machine's host name is unknown, so set node`
	if err == nil || err.Error() != want {
		t.Errorf("error = %v, want %s", err, want)
	}
	var e *Error
	if !errors.As(err, &e) || e.Line != 5 || e.Path != "dbs[0].lease.node" {
		t.Errorf("errors.As(*Error) = %+v", e)
	}
}
