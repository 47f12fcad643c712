package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"filippo.io/age"
	"github.com/hashicorp/go-hclog"
	"gopkg.in/yaml.v3"
)

const (
	topSecret     = "TOP-s3cr3t-value"
	replicaSecret = "REPLICA-s3cr3t-value"
	consulToken   = "CONSUL-t0ken-value"
	sftpPassword  = "SFTP-passw0rd-value"
	// sseCustomerKey is a valid SSE-C key (base64 of 32 bytes); kmsKeyID
	// is sensitive too.
	sseCustomerKey = "U1NFLUMtY3VzdG9tZXIta2V5LTMyLWJ5dGVzLWxvbmc="
	kmsKeyID       = "arn:aws:kms:us-east-1:111122223333:key/KMS-k3y-id"
)

// ageSecret is a real age identity, so that the config accepts it.
var ageSecret, ageRecipient = func() (string, string) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		panic(err)
	}
	return id.String(), id.Recipient().String()
}()

func secretConfig(t *testing.T) *Config {
	t.Helper()
	pinHostname(t)
	return mustParse(t, doc(
		"access-key-id: TOPKEY",
		"secret-access-key: "+topSecret,
		"dbs:",
		"  - path: /data/app.db",
		"    replicas:",
		"      - url: s3://bkt/app",
		"        access-key-id: OWNKEY",
		"        secret-access-key: "+replicaSecret,
		"        age: {recipients: ["+ageRecipient+"], identities: ["+ageSecret+"]}",
		"        sse-customer-key: "+sseCustomerKey,
		"      - url: s3://bkt/inherits",
		"        sse-kms-key-id: "+kmsKeyID,
		"      - url: sftp://backup@host.example:2222/srv/app",
		"        password: "+sftpPassword,
		"    lease:",
		"      consul:",
		"        token: "+consulToken,
	))
}

func assertNoSecret(t *testing.T, what, s string) {
	t.Helper()
	for _, secret := range []string{topSecret, replicaSecret, consulToken, sftpPassword, ageSecret, sseCustomerKey, kmsKeyID} {
		if strings.Contains(s, secret) {
			t.Errorf("%s shows a secret:\n%s", what, s)
		}
	}
}

func TestRedactedEverywhere(t *testing.T) {
	c := secretConfig(t)
	db := c.DBs[0]
	r0, r1 := db.Replicas[0], db.Replicas[1]
	if r1.SecretAccessKey != topSecret || r0.SecretAccessKey != replicaSecret || db.Lease.Consul.Token != consulToken || db.Replicas[2].Password != sftpPassword ||
		r0.Age == nil || r0.Age.Identities[0] != ageSecret || r0.SSECustomerKey != sseCustomerKey || r1.SSEKMSKeyID != kmsKeyID || r1.SSE != SSEKMS {
		t.Fatal("the secrets did not reach the Config; this test would prove nothing")
	}
	values := map[string]any{
		"*Config": c, "Config": *c, "*DB": db, "DB": *db, "*Replica": r0, "Replica": *r1,
		"*Lease": db.Lease, "Lease": *db.Lease, "*ConsulLease": db.Lease.Consul, "ConsulLease": *db.Lease.Consul,
		"[]*Replica": db.Replicas, "sftp Replica": *db.Replicas[2], "*Age": r0.Age, "Age": *r0.Age,
	}
	for name, v := range values {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
			assertNoSecret(t, fmt.Sprintf("Sprintf(%q, %s)", verb, name), fmt.Sprintf(verb, v))
		}
		j, err := json.Marshal(v)
		if err != nil {
			t.Errorf("json.Marshal(%s): %v", name, err)
		}
		assertNoSecret(t, "json.Marshal("+name+")", string(j))
		y, err := yaml.Marshal(v)
		if err != nil {
			t.Errorf("yaml.Marshal(%s): %v", name, err)
		}
		assertNoSecret(t, "yaml.Marshal("+name+")", string(y))
	}
	for _, jsonFormat := range []bool{false, true} {
		var buf bytes.Buffer
		log := hclog.New(&hclog.LoggerOptions{Output: &buf, JSONFormat: jsonFormat, Level: hclog.Debug})
		log.Debug("config", "config", c, "db", db, "replica", r0, "replica-value", *r1, "consul", db.Lease.Consul)
		assertNoSecret(t, fmt.Sprintf("hclog (json=%v)", jsonFormat), buf.String())
		if !strings.Contains(buf.String(), "REDACTED") {
			t.Errorf("hclog (json=%v) output has no REDACTED: %s", jsonFormat, buf.String())
		}
	}
	out := c.Redacted()
	assertNoSecret(t, "Redacted()", out)
	// top level, two s3 replicas, the sftp password, consul token, age identity, SSE-C key, KMS key id
	if got := strings.Count(out, "REDACTED"); got != 8 {
		t.Errorf("Redacted() has %d REDACTED, want 8:\n%s", got, out)
	}
	if !strings.Contains(out, ageRecipient) || !strings.Contains(out, "sse: aws:kms") {
		t.Errorf("Redacted() hides the age recipient or the sse mode, which are not secret:\n%s", out)
	}
	if c.String() != out {
		t.Error("String() differs from Redacted()")
	}
	// Access key ids are not secret; showing them helps to debug credentials.
	if !strings.Contains(out, "access-key-id: OWNKEY") {
		t.Errorf("Redacted() hides the key id:\n%s", out)
	}
}

func TestRedactedOutput(t *testing.T) {
	pinHostname(t)
	c := mustParse(t, doc(
		"access-key-id: AKID",
		"secret-access-key: "+topSecret,
		"dbs:",
		"  - path: /data/app.db",
		"    replica:",
		"      url: s3://bkt/app?endpoint=http://127.0.0.1:7070&force-path-style=true",
		"    follower: {}",
		"    lease: {consul: {token: "+consulToken+"}}",
	))
	want := `access-key-id: AKID
secret-access-key: REDACTED
logging:
  level: info
  type: text
dbs:
  - path: /data/app.db
    replicas:
      - name: s3
        type: s3
        path: app
        bucket: bkt
        endpoint: http://127.0.0.1:7070
        force-path-style: true
        access-key-id: AKID
        secret-access-key: REDACTED
        sync-interval: 1s
        snapshot-interval: 24h
        retention: 24h
        retention-check-interval: 1h
    min-checkpoint-page-count: 1000
    max-checkpoint-page-count: 10000
    levels:
      - 30s
      - 5m
      - 1h
    l0-retention: 5m
    follower:
      replica: s3
      poll-interval: 1s
      auto-promote: false
    lease:
      type: consul
      node: testhost
      on-demote: halt
      consul:
        token: REDACTED
        key-prefix: understudy/
        mode: kv
        ttl: 2s
`
	if got := c.Redacted(); got != want {
		t.Errorf("Redacted():\n%s\nwant:\n%s", got, want)
	}
	if got, want := c.DBs[0].Replicas[0].String(), "s3 (s3://bkt/app?endpoint=http://127.0.0.1:7070&force-path-style=true)"; got != want {
		t.Errorf("Replica.String() = %q, want %q", got, want)
	}
}

// The rendering uses the file's keys: parsing it again gives the same
// configuration, secrets aside.
func TestRedactedRoundTrip(t *testing.T) {
	pinHostname(t)
	for _, data := range [][]byte{
		doc("dbs:", "  - path: /data/app.db", "    replica: {url: /backups/app}"),
		doc("addr: :9090", "logging: {level: warn}", "dbs:",
			"  - name: main", "    path: /data/app.db", "    levels: [1m, 1h30m]", "    min-checkpoint-page-count: 10",
			"    replicas: [{url: 's3://b/a?region=r&skip-verify=true', sync-interval: 1500ms}, {url: /backups/app, retention: 72h}]",
			"    follower: {replica: file, poll-interval: 50ms, auto-promote: true}",
			"    lease: {node: n1, advertise-url: 'http://n1:9090', on-demote: follow, on-promote: 'echo hi',",
			"            consul: {address: 'consul:8500', key-prefix: x/, mode: session, ttl: 30s, lock-delay: 5s, health-check: app}}",
			"  - path: /data/b.db", "    replica: {type: s3, bucket: b, path: b, region: r, endpoint: 'https://s3.example.com'}",
			"    lease: {primary: n1, on-demote: exit}",
			"  - path: /data/c.db", "    replica: {type: sftp, host: 'h.example:2222', user: u, path: rel/c, key-path: /keys/id, known-hosts-path: /keys/known}"),
	} {
		c := mustParse(t, data)
		again, err := Parse([]byte(c.Redacted()), "redacted.yml", true)
		if err != nil {
			t.Fatalf("parse Redacted():\n%s\n%v", c.Redacted(), err)
		}
		assertConfig(t, again, c)
	}
}

// No message about a secret key repeats its value.
func TestErrorsDoNotShowSecrets(t *testing.T) {
	t.Setenv("US_BROKEN_SECRET", replicaSecret+": x")
	for _, lines := range [][]string{
		{"secret-access-key: [" + topSecret + "]"},
		{"secret-access-key: " + topSecret, "secret-access-key: " + topSecret},
		{"secret-access-key: " + topSecret},
		{"secret-acess-key: " + topSecret},
		{"dbs:", "  - path: a", "    replica: {url: /backups/a, secret-access-key: " + replicaSecret + "}"},
		{"dbs:", "  - path: a", "    replica: {url: s3://b/a, secret-access-key: " + replicaSecret + "}"},
		{"dbs:", "  - path: a", "    replica: {url: s3://b/a, access-key-id: K, secret-access-key: ${US_BROKEN_SECRET}}"},
		{"dbs:", "  - path: a", "    replica: {url: 's3://K:" + replicaSecret + "@b/a'}"},
		{"dbs:", "  - path: a", "    replica: {url: 's3://b/a?endpoint=http://K:" + replicaSecret + "@minio'}"},
		{"dbs:", "  - path: a", "    replica: {url: s3://b/a}", "    lease: {consul: {token: {t: " + consulToken + "}}}"},
		{"dbs:", "  - path: a", "    replica: {url: s3://b/a}", "    lease: {type: static, consul: {token: " + consulToken + "}}"},
		{"dbs:", "  - path: a", "    replica: {url: 'sftp://u:" + sftpPassword + "@h/srv/a'}"},
		{"dbs:", "  - path: a", "    replica: {url: s3://b/a, password: " + sftpPassword + "}"},
		{"dbs:", "  - path: a", "    replica: {type: sftp, host: h, path: /a, password: [" + sftpPassword + "]}"},
		{"dbs:", "  - path: a", "    replica: {url: s3://b/a, age: {identities: [" + ageSecret[:len(ageSecret)-2] + "]}}"},
		{"dbs:", "  - path: a", "    replica: {url: s3://b/a, age: {recipients: [" + ageSecret + "]}}"},
		{"dbs:", "  - path: a", "    replica: {url: s3://b/a, age: {identities: {x: " + ageSecret + "}}}"},
		{"dbs:", "  - path: a", "    replica: {url: /backups/a, sse-customer-key: " + sseCustomerKey + "}"},
		{"dbs:", "  - path: a", "    replica: {url: s3://b/a, sse-customer-key: " + sseCustomerKey[:20] + "}"},
		{"dbs:", "  - path: a", "    replica: {url: s3://b/a, sse: AES256, sse-kms-key-id: " + kmsKeyID + "}"},
	} {
		_, err := Parse(doc(lines...), "understudy.yml", true)
		if err == nil {
			t.Errorf("no error for %q", lines)
			continue
		}
		assertNoSecret(t, "error", err.Error())
	}
}
