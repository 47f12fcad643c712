package config

import (
	"crypto/md5"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"filippo.io/age"
	"gopkg.in/yaml.v3"
)

// A replica's encryption keys:
//
//	age:                          # client-side, any store (Litestream 0.3's keys)
//	  recipients: [age1...]       # public keys: what replicate encrypts to
//	  identities: [AGE-SECRET-KEY-1...]   # secret: what restore, follow and replicate decrypt with
//	sse: AES256                   # s3 only: server-side, AES256 or aws:kms
//	sse-kms-key-id: arn:aws:kms:...       # s3 only, with sse: aws:kms (implied when sse is left out)
//	sse-customer-key: ${SSE_C_KEY}        # s3 only: SSE-C, a base64 256-bit key (openssl rand -base64 32)
//	sse-customer-key-path: /etc/understudy/sse-c.key   # or the key read from a file (Litestream 0.5's key)
//	sse-customer-algorithm: AES256        # Litestream 0.5's key; AES256 is the only one
//
// sse-kms-key-id, sse-customer-key, sse-customer-key-path and
// sse-customer-algorithm are Litestream 0.5's keys with its meaning, so its
// SSE-C replicas read back with the same key.
//
// The identities and the customer key are secrets, and the KMS key id is
// kept out of logs too: all three print as REDACTED.

// Age is a replica's age: section.
type Age struct {
	// Recipients are age public keys (age1...); each item may also hold
	// several, one per line, as an age recipients file does.
	Recipients []string
	// Identities are age secret keys (AGE-SECRET-KEY-1...), each item one
	// or several lines as in an age identity file. Secret.
	Identities []string
}

// Parsed returns the recipients and identities. The config's load has
// checked them, so an error means a Config built in code.
func (a *Age) Parsed() ([]age.Recipient, []age.Identity, error) {
	var rcps []age.Recipient
	for i, s := range a.Recipients {
		r, err := age.ParseRecipients(strings.NewReader(s))
		if err != nil {
			return nil, nil, &ageError{key: "recipients", index: i, msg: "not an age recipient (age1... as age-keygen prints it): " + err.Error()}
		}
		rcps = append(rcps, r...)
	}
	var ids []age.Identity
	for i, s := range a.Identities {
		id, err := age.ParseIdentities(strings.NewReader(s))
		if err != nil {
			// age's message is not shown: it may quote the secret.
			return nil, nil, &ageError{key: "identities", index: i, msg: "not an age identity (AGE-SECRET-KEY-1... as age-keygen prints it; the value is not shown)"}
		}
		ids = append(ids, id...)
	}
	return rcps, ids, nil
}

// ageError says which item of age: does not parse.
type ageError struct {
	key   string
	index int
	msg   string
}

func (e *ageError) Error() string { return fmt.Sprintf("age.%s[%d]: %s", e.key, e.index, e.msg) }

// S3 server-side encryption modes (sse:).
const (
	SSEAES256 = "AES256"
	SSEKMS    = "aws:kms"
)

var (
	ageKeys  = []string{"recipients", "identities"}
	sseModes = []string{SSEAES256, SSEKMS}
)

// SSECustomerKeyMD5 is the base64 MD5 of the SSE-C key, which S3 wants
// beside the key on every request.
func (r *Replica) SSECustomerKeyMD5() string {
	raw, err := base64.StdEncoding.DecodeString(r.SSECustomerKey)
	if err != nil || r.SSECustomerKey == "" {
		return ""
	}
	sum := md5.Sum(raw)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// encryption reads a replica's age:, sse:, sse-kms-key-id: and
// sse-customer-key: (the last three are in s3OnlyKeys).
func (d *decoder) encryption(r *Replica, m map[string]*yaml.Node, path string) {
	if n, ok := m["age"]; ok {
		r.Age = d.age(n, sub(path, "age"))
	}
	if v := d.str(m["sse"], sub(path, "sse")); v != "" {
		r.SSE = ""
		for _, mode := range sseModes {
			if strings.EqualFold(v, mode) {
				r.SSE = mode
			}
		}
		if r.SSE == "" {
			d.errorf(m["sse"], sub(path, "sse"), "unknown server-side encryption %q: use %s", v, orList(sseModes))
		}
	}
	r.SSEKMSKeyID = d.str(m["sse-kms-key-id"], sub(path, "sse-kms-key-id"))
	if r.SSEKMSKeyID != "" {
		switch r.SSE {
		case "":
			r.SSE = SSEKMS
		case SSEAES256:
			d.errorf(m["sse-kms-key-id"], sub(path, "sse-kms-key-id"), "needs sse: %s (sse is %s)", SSEKMS, r.SSE)
		}
	}
	r.SSECustomerKey = d.str(m["sse-customer-key"], sub(path, "sse-customer-key"))
	r.SSECustomerKeyPath = d.localPath(m["sse-customer-key-path"], sub(path, "sse-customer-key-path"))
	if alg := d.str(m["sse-customer-algorithm"], sub(path, "sse-customer-algorithm")); alg != "" && !strings.EqualFold(alg, SSEAES256) {
		d.errorf(m["sse-customer-algorithm"], sub(path, "sse-customer-algorithm"), "unknown SSE-C algorithm %q: S3 has only %s", alg, SSEAES256)
	}
	switch {
	case r.SSECustomerKey != "" && r.SSECustomerKeyPath != "":
		d.errorf(m["sse-customer-key-path"], sub(path, "sse-customer-key-path"), "give sse-customer-key or sse-customer-key-path, not both")
	case r.SSECustomerKeyPath != "" && r.SSE != "":
		d.errorf(m["sse-customer-key-path"], sub(path, "sse-customer-key-path"), "SSE-C (sse-customer-key-path) and sse: %s exclude each other: keep one", r.SSE)
	}
	if r.SSECustomerKey != "" {
		if raw, err := base64.StdEncoding.DecodeString(r.SSECustomerKey); err != nil || len(raw) != 32 {
			d.errorf(m["sse-customer-key"], sub(path, "sse-customer-key"), "must be a 256-bit key in base64 (44 characters, as `openssl rand -base64 32` prints it; the value is not shown)")
		}
		if r.SSE != "" {
			d.errorf(m["sse-customer-key"], sub(path, "sse-customer-key"), "SSE-C (sse-customer-key) and sse: %s exclude each other: keep one", r.SSE)
		}
	}
}

func (d *decoder) age(n *yaml.Node, path string) *Age {
	a := &Age{}
	m, ok := d.mapping(n, path, ageKeys)
	if !ok {
		return a
	}
	a.Recipients = d.strings(m["recipients"], sub(path, "recipients"))
	a.Identities = d.strings(m["identities"], sub(path, "identities"))
	if len(a.Recipients) == 0 && len(a.Identities) == 0 {
		d.errorAt(d.lines[path], path, "set recipients (age1..., to encrypt what replicate uploads) and identities (AGE-SECRET-KEY-1..., to decrypt what restore and follow read)")
		return a
	}
	var ae *ageError
	if _, _, err := a.Parsed(); errors.As(err, &ae) {
		item := fmt.Sprintf("%s[%d]", sub(path, ae.key), ae.index)
		line, ok := d.lines[item]
		if !ok {
			line = d.lines[sub(path, ae.key)] // a single value, not a list
		}
		d.errorAt(line, item, "%s", ae.msg)
	}
	return a
}

// strings reads a list of single values; one value alone is a list of one.
func (d *decoder) strings(n *yaml.Node, path string) []string {
	if isNull(n) {
		return nil
	}
	if deref(n).Kind == yaml.ScalarNode {
		return []string{d.str(n, path)}
	}
	var out []string
	for i, it := range d.list(n, path) {
		out = append(out, d.str(it, fmt.Sprintf("%s[%d]", path, i)))
	}
	return out
}

type printAge struct {
	Recipients []string `yaml:"recipients,omitempty" json:"recipients,omitempty"`
	Identities []string `yaml:"identities,omitempty" json:"identities,omitempty"`
}

func (a Age) printable() printAge {
	p := printAge{Recipients: a.Recipients}
	for _, id := range a.Identities {
		p.Identities = append(p.Identities, redact(id))
	}
	return p
}

// printableAge is a's printable form, nil without an age: section.
func printableAge(a *Age) *printAge {
	if a == nil {
		return nil
	}
	p := a.printable()
	return &p
}

// String shows the recipients and the identities as REDACTED; so do %#v,
// JSON and YAML.
func (a Age) String() string {
	b, _ := json.Marshal(a.printable())
	return string(b)
}

// GoString keeps %#v from printing the identities.
func (a Age) GoString() string { return a.String() }

// MarshalJSON renders the section with the identities redacted.
func (a Age) MarshalJSON() ([]byte, error) { return json.Marshal(a.printable()) }

// MarshalYAML renders the section with the identities redacted.
func (a Age) MarshalYAML() (any, error) { return a.printable(), nil }
