package integration

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/integration/harness"
	"github.com/understudy-db/understudy/internal/litestream03/ls03test"
)

// ageKeys is an age identity and its recipient, as age-keygen prints them.
type ageKeys struct{ identity, recipient string }

func newAgeKeys(t *testing.T) ageKeys {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	return ageKeys{identity: id.String(), recipient: id.Recipient().String()}
}

// withAge gives every replica of a stack's config the age: section ageLines
// (indented under the replica), after its sync-interval line.
func withAge(t *testing.T, cfg string, ageLines ...string) string {
	t.Helper()
	const anchor = "        sync-interval: 100ms\n"
	if strings.Count(cfg, anchor) != 2 {
		t.Fatalf("config has not two replicas with %q:\n%s", anchor, cfg)
	}
	section := "        age:\n"
	for _, l := range ageLines {
		section += "          " + l + "\n"
	}
	return strings.ReplaceAll(cfg, anchor, anchor+section)
}

// storedLTX returns the content of every .ltx object under dir.
func storedLTX(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() || !strings.HasSuffix(p, ".ltx") {
			return err
		}
		b, err := os.ReadFile(p)
		out[p] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestAgeEncryptedReplica replicates with age to a file replica and to
// versitygw, then restores and follows through the real binary: with the
// identity the restore is the primary's database; without it, or with
// another one, the restore fails, names the replica and the key to set, and
// writes nothing; the stores hold no plaintext LTX.
func TestAgeEncryptedReplica(t *testing.T) {
	keys, other := newAgeKeys(t), newAgeKeys(t)
	s := newStack(t, true)
	base := mustRead(t, s.configPath)
	// The identity is a secret: it comes from the environment, as it would
	// from /etc/default/understudy.
	writeFile(t, s.configPath, withAge(t, base, "recipients: ["+keys.recipient+"]", "identities: [${TEST_AGE_IDENTITY}]"))
	s.env = append(s.env, "TEST_AGE_IDENTITY="+keys.identity)
	// Compaction into L2 reads L1 back from the store: the primary decrypts too.
	s.withDBKeys(t, "    levels: [1s, 2s]\n")

	app := openDB(t, s.dbPath)
	mustExec(t, app, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
	for i := 0; i < 200; i++ {
		mustExec(t, app, "INSERT INTO t (v) VALUES (?)", strings.Repeat(fmt.Sprint(i), 300))
	}
	d := s.replicate(t)
	s.waitShipped(t, snapshotImage(t, app)) // the snapshot
	for i := 0; i < 5; i++ {                // and L0 files after it
		mustExec(t, app, "INSERT INTO t (v) VALUES (?)", strings.Repeat("x", 5000))
		s.waitShipped(t, snapshotImage(t, app))
	}
	eventually(t, 30*time.Second, "an L2 file compacted from L1 files in the store", func() bool {
		return countFiles(t, filepath.Join(s.fileReplica, "ltx", "2")) > 0
	})
	img := snapshotImage(t, app)
	txid := s.waitShipped(t, img)

	// The stores hold age files only: no LTX header, no plaintext row.
	s3Dir := filepath.Join(s.s3.DataDir, s.bucket)
	for name, dir := range map[string]string{"file": s.fileReplica, "s3": s3Dir} {
		objs := storedLTX(t, dir)
		if len(objs) < 6 {
			t.Fatalf("%s replica holds %d .ltx objects under %s, want the snapshot and 5 L0 files at least", name, len(objs), dir)
		}
		for p, b := range objs {
			if bytes.HasPrefix(b, []byte(ltx.Magic)) || !bytes.HasPrefix(b, []byte("age-encryption.org/v1\n")) {
				t.Errorf("%s: starts with %q, want an age header", p, b[:min(len(b), 24)])
			}
			if bytes.Contains(b, []byte(strings.Repeat("199", 100))) {
				t.Errorf("%s holds a row in plaintext", p)
			}
		}
	}
	if out := d.out.String(); strings.Contains(out, keys.identity) {
		t.Errorf("replicate's log shows the age identity")
	}

	for _, replica := range []string{"file", "s3"} {
		out := filepath.Join(t.TempDir(), "restored.db")
		res := run(t, s.env, "restore", "-config", s.configPath, "-replica", replica, "-o", out, s.dbPath)
		if res.code != 0 {
			t.Fatalf("restore from %s: exit %d\n%s%s", replica, res.code, res.stdout, res.stderr)
		}
		if got := fileChecksum(t, out); got != img.checksum {
			t.Errorf("restore from %s: checksum %s, primary %s", replica, got, img.checksum)
		}
		integrityCheck(t, out)
	}

	// Without an identity, with another one, and with no age: section at
	// all: a clear error, exit non-zero, nothing at -o.
	noIdentity := writeConfig(t, withAge(t, base, "recipients: ["+keys.recipient+"]"))
	wrongIdentity := writeConfig(t, withAge(t, base, "identities: ["+other.identity+"]"))
	plain := writeConfig(t, base)
	for _, tc := range []struct {
		name, config, replica string
		want                  []string
	}{
		{"no identity, file", noIdentity, "file", []string{"replica file", "age-encrypted", "age: identities"}},
		{"no identity, s3", noIdentity, "s3", []string{"replica s3", "age-encrypted", "age: identities"}},
		{"wrong identity", wrongIdentity, "s3", []string{"replica s3", "no configured age identity matches", "age: identities"}},
		{"no age section", plain, "file", []string{"age-encrypted", "age: {identities:"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stderr := restoreFailure(t, s.env, s.dbPath, "-config", tc.config, "-replica", tc.replica)
			wantAll(t, stderr, tc.want...)
			for _, secret := range []string{keys.identity, other.identity} {
				if strings.Contains(stderr, secret) {
					t.Errorf("the error shows an age identity")
				}
			}
		})
	}
	stderr := restoreFailure(t, s.env, s.replicaURLs()[1])
	wantAll(t, stderr, "age-encrypted", "age: {identities:")

	// A follower with the identity follows, from the bootstrap on.
	fdb := filepath.Join(t.TempDir(), "follower.db")
	faddr := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	fcfg := strings.Replace(mustRead(t, s.configPath), "path: "+s.dbPath, "path: "+fdb, 1)
	fcfg = strings.Replace(fcfg, "addr: "+s.addr, "addr: "+faddr, 1) + "    follower: {replica: s3, poll-interval: 100ms}\n"
	f := &followProc{daemon: start(t, s.env, "follow", "-config", writeConfig(t, fcfg)), addr: faddr, path: fdb}
	f.waitAt(t, txid, img.checksum)
	for i := 0; i < 20; i++ {
		mustExec(t, app, "UPDATE t SET v = ? WHERE id = ?", "updated", i+1)
	}
	img = snapshotImage(t, app)
	txid = s.waitShipped(t, img)
	f.waitAt(t, txid, img.checksum)
	if got := localChecksum(t, fdb); got != img.checksum {
		t.Errorf("follower's file: checksum %s, primary %s", got, img.checksum)
	}
	if code := f.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Errorf("follow exit code after SIGTERM = %d", code)
	}
	if code := d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Errorf("replicate exit code after SIGTERM = %d", code)
	}

	// A follower without the identity cannot bootstrap: it says so.
	ndb := filepath.Join(t.TempDir(), "follower.db")
	ncfg := strings.Replace(mustRead(t, noIdentity), "path: "+s.dbPath, "path: "+ndb, 1)
	ncfg = strings.Replace(ncfg, "addr: "+s.addr, "addr: "+faddr, 1) + "    follower: {replica: file}\n"
	nf := start(t, s.env, "follow", "-config", writeConfig(t, ncfg))
	code := nf.wait(t, 60*time.Second)
	if code == 0 {
		t.Errorf("follow without the identity exited 0")
	}
	wantAll(t, nf.out.String(), "replica file", "age: identities")
	if _, err := os.Stat(ndb); !os.IsNotExist(err) {
		t.Errorf("follow without the identity left %s (%v)", ndb, err)
	}
}

// TestAgeReplicateNeedsBothKeys: replicate refuses a replica whose age:
// section cannot both encrypt and read back, before touching the store.
func TestAgeReplicateNeedsBothKeys(t *testing.T) {
	keys := newAgeKeys(t)
	s := newStack(t, false)
	cfg := mustRead(t, s.configPath)
	cfg = strings.Replace(cfg, "        sync-interval: 100ms\n", "        sync-interval: 100ms\n        age: {recipients: ["+keys.recipient+"]}\n", 1)
	writeFile(t, s.configPath, cfg)
	openDB(t, s.dbPath)
	res := run(t, s.env, "replicate", "-config", s.configPath)
	if res.code == 0 {
		t.Fatal("replicate with recipients only exited 0")
	}
	wantAll(t, res.stderr, `replica "file"`, "age", "identities")
	if _, err := os.Stat(filepath.Join(s.fileReplica, "ltx")); !os.IsNotExist(err) {
		t.Errorf("the replica has an ltx directory after the refusal (%v)", err)
	}
}

// TestAgeLitestream03Replica: a replica Litestream 0.3 wrote with its age:
// option (each snapshot and WAL segment is age(lz4(bytes)), as its
// replica.go writes them) restores byte-identically with the identity in the
// replica's age: section, and without it fails saying what to set.
func TestAgeLitestream03Replica(t *testing.T) {
	keys := newAgeKeys(t)
	rcp, err := age.ParseX25519Recipient(keys.recipient)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	replica := filepath.Join(dir, "replica")
	filePut := ls03test.FilePut(replica, ls03Clock())
	put := func(key string, data []byte) (time.Time, error) {
		var buf bytes.Buffer
		w, err := age.Encrypt(&buf, rcp)
		if err != nil {
			return time.Time{}, err
		}
		if _, err := w.Write(data); err != nil {
			return time.Time{}, err
		}
		if err := w.Close(); err != nil {
			return time.Time{}, err
		}
		return filePut(key, buf.Bytes())
	}
	dbPath := filepath.Join(dir, "app.db")
	points := writeLS03History(t, openDB(t, dbPath), dbPath, put)
	last := points[len(points)-1]

	cfg := writeConfig(t, "dbs:", "  - path: "+dbPath, "    replicas:", "      - url: file://"+replica,
		"        age: {identities: [${TEST_AGE_IDENTITY}]}")
	env := []string{"TEST_AGE_IDENTITY=" + keys.identity}
	out := filepath.Join(t.TempDir(), "restored.db")
	res := run(t, env, "restore", "-config", cfg, "-o", out, dbPath)
	if res.code != 0 {
		t.Fatalf("restore: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	integrityCheck(t, out)
	if got := fileSum(t, out); got != last.sum {
		t.Errorf("restored %x, want the source's last state %x (%s)", got, last.sum, last)
	}
	msg := restoreFailure(t, nil, "file://"+replica)
	wantAll(t, msg, "age-encrypted", "age: {identities:")
}

// TestLitestream03PeerAge (opt-in, as TestLitestream03Peer:
// UNDERSTUDY_LITESTREAM03=/path/to/litestream built from v0.3.13's source)
// has the real Litestream 0.3 replicate with its age: option; Understudy
// restores the encrypted replica byte-identically with the identity in its
// own config, under the same keys.
func TestLitestream03PeerAge(t *testing.T) {
	bin := os.Getenv("UNDERSTUDY_LITESTREAM03")
	if bin == "" {
		t.Skip("UNDERSTUDY_LITESTREAM03 is not set: set it to a litestream binary built from v0.3.13's source to run this interop test")
	}
	keys := newAgeKeys(t)
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "app.db")
	replica := filepath.Join(dir, "ls-replica")
	ageSection := fmt.Sprintf("        age:\n          recipients: [%s]\n          identities: [%s]\n", keys.recipient, keys.identity)
	lsCfg := filepath.Join(dir, "litestream.yml")
	writeFile(t, lsCfg, fmt.Sprintf("dbs:\n  - path: %s\n    min-checkpoint-page-count: 40\n    replicas:\n      - type: file\n        path: %s\n        sync-interval: 100ms\n%s",
		dbPath, replica, ageSection))
	cfg := writeConfig(t, "dbs:", "  - path: "+dbPath, "    replicas:", "      - url: file://"+replica,
		"        age: {identities: [${TEST_AGE_IDENTITY}]}")
	env := []string{"TEST_AGE_IDENTITY=" + keys.identity}

	app := openDB(t, dbPath)
	mustExec(t, app, `CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)`)
	ls := startBinary(t, bin, nil, "replicate", "-config", lsCfg)
	eventually(t, 30*time.Second, "Litestream 0.3 to start its first generation", func() bool {
		m, _ := filepath.Glob(filepath.Join(replica, "generations", "*", "wal", "*.wal.lz4"))
		return len(m) > 0
	})
	for i := 0; i < 120; i++ { // past the checkpoint threshold: several WAL indexes
		mustExec(t, app, `INSERT INTO t (v) VALUES (randomblob(3000))`)
	}
	var last string
	deadline := time.Now().Add(60 * time.Second)
	for {
		before := imageSum(snapshotImage(t, app))
		out := filepath.Join(t.TempDir(), "restored.db")
		res := run(t, env, "restore", "-config", cfg, "-o", out, dbPath)
		if res.code == 0 && fileSum(t, out) == before && imageSum(snapshotImage(t, app)) == before {
			break
		}
		last = res.stderr
		if time.Now().After(deadline) {
			t.Fatalf("not restored from Litestream 0.3's encrypted replica within 60s; last attempt:\n%s\nlitestream output:\n%s", last, tailLines(ls.out.String(), 30))
		}
		time.Sleep(200 * time.Millisecond) // poll interval
	}
	if code := ls.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Logf("litestream exit %d", code)
	}
	objs, _ := filepath.Glob(filepath.Join(replica, "generations", "*", "*", "*.lz4"))
	for _, p := range objs {
		if b, err := os.ReadFile(p); err != nil || !bytes.HasPrefix(b, []byte("age-encryption.org/v1\n")) {
			t.Errorf("%s is not age-encrypted (%v)", p, err)
		}
	}
	msg := restoreFailure(t, nil, "file://"+replica)
	wantAll(t, msg, "age-encrypted", "age: {identities:")
	t.Logf("Litestream 0.3.13 wrote %d age-encrypted objects; Understudy restored them byte-identically", len(objs))
}
