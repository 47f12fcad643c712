package config

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

func TestObjectStoreKeys(t *testing.T) {
	c := mustParse(t, doc(
		"dbs:",
		"  - path: /data/a.db",
		"    replicas:",
		"      - type: gcs",
		"        bucket: b",
		"        path: /a/",
		"      - url: abs://acct@ctr/a",
		"        account-key: k",
		"      - type: abs",
		"        account-name: acct",
		"        bucket: ctr",
		"        path: b",
		"        endpoint: http://127.0.0.1:10000/acct",
	))
	rs := c.DBs[0].Replicas
	if rs[0].Type != "gcs" || rs[0].Bucket != "b" || rs[0].Path != "a" || rs[0].Name != "gcs" {
		t.Errorf("gcs replica: %s", dumpReplica(rs[0]))
	}
	if rs[1].Type != "abs" || rs[1].AccountName != "acct" || rs[1].Bucket != "ctr" || rs[1].AccountKey != "k" {
		t.Errorf("abs replica from url: %s", dumpReplica(rs[1]))
	}
	if rs[2].Endpoint != "http://127.0.0.1:10000/acct" || rs[2].Location() != "abs://acct@ctr/b?endpoint=http://127.0.0.1:10000/acct" {
		t.Errorf("abs replica from keys: %s, location %s", dumpReplica(rs[2]), rs[2].Location())
	}

	for _, tc := range []struct {
		name  string
		lines []string
		want  string
	}{
		{"s3 key on gcs", []string{"      - url: gcs://b/a", "        region: x"},
			"understudy.yml:5: dbs[0].replicas[0].region: only for s3 replicas, and this is a gcs replica"},
		{"account key on s3", []string{"      - url: s3://b/a", "        account-key: k"},
			"understudy.yml:5: dbs[0].replicas[0].account-key: only for abs replicas, and this is an s3 replica"},
		{"account name on file", []string{"      - url: /tmp/x", "        account-name: a"},
			"understudy.yml:5: dbs[0].replicas[0].account-name: only for abs replicas, and this is a file replica"},
		{"abs without account", []string{"      - url: abs://ctr/a"},
			"understudy.yml:4: dbs[0].replicas[0]: abs replica needs the storage account's name: set account-name, or url: abs://ACCOUNT@CONTAINER/PATH"},
		{"account name differs from url", []string{"      - url: abs://acct@ctr/a", "        account-name: other"},
			`understudy.yml:5: dbs[0].replicas[0].account-name: "other" differs from the account-name in url ("acct")`},
		{"two replicas on one gcs store", []string{"      - url: gcs://b/a", "      - {type: gcs, bucket: b, path: a}"},
			"same store as dbs[0].replicas[0]"},
		{"gcs replica inside another", []string{"      - url: gcs://b", "      - url: gcs://b/a"},
			"is inside the store of dbs[0].replicas[0]"},
		{"abs path in a level directory", []string{"      - url: abs://acct@ctr/a/0000/x"},
			"inside the level directory 0000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lines := append([]string{"dbs:", "  - path: /data/a.db", "    replicas:"}, tc.lines...)
			_, err := Parse(doc(lines...), "understudy.yml", false)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error:\n%v\nwant it to contain:\n%s", err, tc.want)
			}
		})
	}
}

// The account key of an abs replica never prints.
func TestAccountKeyRedacted(t *testing.T) {
	const key = "AZURE-acc0unt-key-value=="
	c := mustParse(t, doc("dbs:", "  - path: /data/a.db", "    replica:", "      url: abs://acct@ctr/a", "      account-key: "+key))
	r := c.DBs[0].Replicas[0]
	if r.AccountKey != key {
		t.Fatal("the key did not reach the Config; this test would prove nothing")
	}
	js, _ := json.Marshal(c)
	ys, _ := yaml.Marshal(c)
	rjs, _ := json.Marshal(r)
	for what, s := range map[string]string{
		"%v": fmt.Sprintf("%v", c), "%+v replica": fmt.Sprintf("%+v", *r), "%#v": fmt.Sprintf("%#v", r),
		"JSON": string(js), "YAML": string(ys), "replica JSON": string(rjs), "Redacted": c.Redacted(),
	} {
		if strings.Contains(s, key) {
			t.Errorf("%s shows the account key:\n%s", what, s)
		}
	}
	if !strings.Contains(c.Redacted(), "account-key: "+RedactedMarker) {
		t.Errorf("Redacted() does not show the key as %s:\n%s", RedactedMarker, c.Redacted())
	}
}
