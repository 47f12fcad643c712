package config

import (
	"strings"
	"testing"
)

func TestEncryptionKeys(t *testing.T) {
	c := mustParse(t, doc(
		"dbs:",
		"  - path: /data/app.db",
		"    replicas:",
		"      - url: s3://b/a",
		"        age:",
		"          recipients: ["+ageRecipient+"]",
		"          identities:",
		"            - |",
		"              # created by age-keygen",
		"              "+ageSecret,
		"        sse: aes256",
		"      - url: s3://b/kms",
		"        sse-kms-key-id: "+kmsKeyID,
		"      - url: s3://b/c",
		"        sse-customer-key: "+sseCustomerKey,
		"      - url: /backups/a",
		"        age: {recipients: "+ageRecipient+"}",
		"      - url: s3://b/d",
		"        sse-customer-key-path: /etc/understudy/sse-c.key",
		"        sse-customer-algorithm: AES256",
	))
	r := c.DBs[0].Replicas
	if r[0].Age == nil || len(r[0].Age.Recipients) != 1 || len(r[0].Age.Identities) != 1 || r[0].SSE != SSEAES256 {
		t.Fatalf("replica 0: age %v, sse %q", r[0].Age, r[0].SSE)
	}
	rcps, ids, err := r[0].Age.Parsed()
	if err != nil || len(rcps) != 1 || len(ids) != 1 {
		t.Fatalf("Parsed: %d recipients, %d identities, %v", len(rcps), len(ids), err)
	}
	if r[1].SSE != SSEKMS || r[1].SSEKMSKeyID != kmsKeyID {
		t.Fatalf("replica 1: sse %q, kms key %q; want aws:kms implied by the key id", r[1].SSE, r[1].SSEKMSKeyID)
	}
	// MD5 of the 32 raw bytes, base64, as S3 wants it (openssl dgst -md5 -binary | base64).
	if got := r[2].SSECustomerKeyMD5(); got != "HEeNUnjiZuOsdvxMD/xiXQ==" {
		t.Fatalf("SSECustomerKeyMD5 = %q", got)
	}
	if r[4].SSECustomerKeyPath != "/etc/understudy/sse-c.key" || r[4].SSECustomerKey != "" {
		t.Fatalf("replica 4: key path %q, key set %v", r[4].SSECustomerKeyPath, r[4].SSECustomerKey != "")
	}
	if r[3].Age == nil || len(r[3].Age.Recipients) != 1 || r[3].Age.Identities != nil {
		t.Fatalf("file replica: age %v; a single recipient is a list of one", r[3].Age)
	}
}

func TestEncryptionErrors(t *testing.T) {
	for _, tc := range []struct {
		replica []string
		want    string
	}{
		{[]string{"      - url: s3://b/a", "        age: {}"}, "understudy.yml:5: dbs[0].replicas[0].age: set recipients"},
		{[]string{"      - url: s3://b/a", "        age:", "          recipients: [" + ageRecipient + ", age1nope]"}, "understudy.yml:6: dbs[0].replicas[0].age.recipients[1]: not an age recipient"},
		{[]string{"      - url: s3://b/a", "        age:", "          identities:", "            - " + ageSecret, "            - AGE-SECRET-KEY-1QQQ"},
			"understudy.yml:8: dbs[0].replicas[0].age.identities[1]: not an age identity (AGE-SECRET-KEY-1... as age-keygen prints it; the value is not shown)"},
		{[]string{"      - url: s3://b/a", "        age: {identity: x}"}, `dbs[0].replicas[0].age: unknown key "identity"`},
		{[]string{"      - url: s3://b/a", "        sse: aws:kmz"}, `dbs[0].replicas[0].sse: unknown server-side encryption "aws:kmz": use AES256 or aws:kms`},
		{[]string{"      - url: s3://b/a", "        sse: AES256", "        sse-kms-key-id: k"}, "dbs[0].replicas[0].sse-kms-key-id: needs sse: aws:kms (sse is AES256)"},
		{[]string{"      - url: s3://b/a", "        sse-customer-key: c2hvcnQ="}, "dbs[0].replicas[0].sse-customer-key: must be a 256-bit key in base64"},
		{[]string{"      - url: s3://b/a", "        sse: AES256", "        sse-customer-key: " + sseCustomerKey}, "SSE-C (sse-customer-key) and sse: AES256 exclude each other"},
		{[]string{"      - url: /backups/a", "        sse: AES256"}, "dbs[0].replicas[0].sse: only for s3 replicas"},
		{[]string{"      - url: s3://b/a", "        sse-customer-key: " + sseCustomerKey, "        sse-customer-key-path: /k"}, "give sse-customer-key or sse-customer-key-path, not both"},
		{[]string{"      - url: s3://b/a", "        sse-customer-key-path: /k", "        sse-customer-algorithm: aws:kms"}, `unknown SSE-C algorithm "aws:kms"`},
	} {
		_, err := Parse(doc(append([]string{"dbs:", "  - path: /data/app.db", "    replicas:"}, tc.replica...)...), "understudy.yml", true)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q:\n got %v\nwant %q", tc.replica, err, tc.want)
		}
		if err != nil {
			assertNoSecret(t, "error", err.Error())
		}
	}
}
