package integration

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/integration/harness"
	"github.com/understudy-db/understudy/internal/storage"
)

// The tests in this file run replicate on stores without create-only
// writes (issue 12, section 1): one that ignores If-None-Match (the
// stripping proxy) and one that answers it 501 Not Implemented, as
// Backblaze B2 does, each accepted with conditional-writes: if-supported.

// newS3Client is a plain SDK client of the test server (the tests' own
// writes, as another writer or an operator makes them).
func newS3Client(srv *harness.S3Server) *awss3.Client {
	return awss3.New(awss3.Options{
		BaseEndpoint: aws.String(srv.Endpoint), Region: srv.Region, UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider(srv.AccessKey, srv.SecretKey, ""),
	})
}

func enableBucketVersioning(t *testing.T, srv *harness.S3Server, bucket string) {
	t.Helper()
	_, err := newS3Client(srv).PutBucketVersioning(context.Background(), &awss3.PutBucketVersioningInput{
		Bucket:                  aws.String(bucket),
		VersioningConfiguration: &types.VersioningConfiguration{Status: types.BucketVersioningStatusEnabled},
	})
	if err != nil {
		t.Fatalf("enable versioning of bucket %s: %v", bucket, err)
	}
}

// plainURL is the replica URL of bucket's app/ through the proxy, accepting
// a store without create-only writes.
func plainURL(bucket string, proxy *conditionStripper) string {
	return "s3://" + bucket + "/app?endpoint=" + proxy.srv.URL + "&region=us-east-1&force-path-style=true&conditional-writes=if-supported"
}

// replicaFencing is the fencing /status reports for each replica.
func replicaFencing(t *testing.T, addr string) []string {
	t.Helper()
	st, err := statusDB[struct {
		Replicas []struct {
			Fencing string `json:"fencing"`
		} `json:"replicas"`
	}](addr)
	if err != nil {
		t.Fatalf("/status: %v", err)
	}
	var out []string
	for _, r := range st.Replicas {
		out = append(out, r.Fencing)
	}
	return out
}

// TestReplicatePlainWrites: with conditional-writes: if-supported,
// replicate runs on a store that ignores If-None-Match and on one that
// answers it 501 (as B2), uploading with plain PUTs (no LTX PUT carries the
// condition, which B2 would refuse); the log warns that a second writer
// from another host cannot be refused, /status and the status command show
// the fencing (lock+read-back: without a lease, versions add nothing), a
// follower through the same store reaches the
// database's state, and a restore is the database, page for page (also of
// an age-encrypted replica).
func TestReplicatePlainWrites(t *testing.T) {
	plainS3 := harness.StartVersityGW(t)
	versionedS3 := harness.StartVersityGWVersioning(t)
	for _, tc := range []struct {
		name      string
		answer501 bool
		versioned bool
		age       bool // the replica is age-encrypted
		fencing   string
	}{
		{"ignores the condition", false, false, false, "lock+read-back"},
		{"answers 501", true, false, false, "lock+read-back"},
		{"answers 501, bucket keeps versions", true, true, false, "lock+read-back"},
		{"answers 501, bucket keeps versions, age-encrypted", true, true, true, "lock+read-back"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := plainS3
			if tc.versioned {
				srv = versionedS3
			}
			bucket := srv.NewBucket(t)
			if tc.versioned {
				enableBucketVersioning(t, srv, bucket)
			}
			proxy := startConditionStripper(t, srv, tc.answer501)
			dir := t.TempDir()
			s := &stack{dir: dir, dbPath: filepath.Join(dir, "app.db"), addr: fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t)),
				configPath: filepath.Join(dir, "understudy.yml"),
				env:        []string{"AWS_ACCESS_KEY_ID=" + srv.AccessKey, "AWS_SECRET_ACCESS_KEY=" + srv.SecretKey}}
			cfg := fmt.Sprintf("addr: %s\ndbs:\n  - path: %s\n    replicas:\n      - name: b2\n        url: %s\n        sync-interval: 100ms\n",
				s.addr, s.dbPath, plainURL(bucket, proxy))
			if tc.age {
				k := newAgeKeys(t)
				cfg += fmt.Sprintf("        age:\n          recipients: [%s]\n          identities: [%s]\n", k.recipient, k.identity)
			}
			writeFile(t, s.configPath, cfg)
			makeDB(t, s.dbPath)
			d := s.replicate(t)
			app := openDB(t, s.dbPath)
			for i := 0; i < 5; i++ {
				mustExec(t, app, `INSERT INTO t(v) VALUES (randomblob(3000))`)
				s.waitShipped(t, snapshotImage(t, app))
			}
			mustExec(t, app, `UPDATE t SET v = randomblob(100) WHERE id % 3 = 0`)
			final := snapshotImage(t, app)
			txid := s.waitShipped(t, final)
			if !tc.age { // a follower of an age replica needs the identity from a config
				f := startFollow(t, s.env, plainURL(bucket, proxy), filepath.Join(dir, "follower.db"), 100*time.Millisecond)
				f.waitAt(t, txid, final.checksum)
			}

			if got := replicaFencing(t, s.addr); len(got) != 1 || got[0] != tc.fencing {
				t.Errorf("/status fencing %v, want [%s]", got, tc.fencing)
			}
			res := run(t, nil, "status", "-addr", s.addr)
			if res.code != 0 || !strings.Contains(res.stdout, "fencing "+tc.fencing) {
				t.Errorf("status: exit %d, does not say fencing %s:\n%s%s", res.code, tc.fencing, res.stdout, res.stderr)
			}
			if code := d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
				t.Fatalf("replicate exit %d after SIGTERM", code)
			}
			wantAll(t, d.out.String(), "replica without create-only writes", "a second writer from another host cannot be refused", `fencing="`+tc.fencing+`"`)

			puts, err := proxy.puts()
			if err != nil {
				t.Fatalf("proxy could not sign a PUT again: %v", err)
			}
			if len(puts) == 0 {
				t.Fatal("no conditional PUT reached the proxy: the probe did not run")
			}
			for _, p := range puts {
				if strings.HasSuffix(p, ".ltx") {
					t.Errorf("LTX upload %s carried If-None-Match after the store was found without create-only writes", p)
				}
			}

			out := filepath.Join(t.TempDir(), "restored.db")
			if res := run(t, s.env, "restore", "-config", s.configPath, "-o", out, s.dbPath); res.code != 0 {
				t.Fatalf("restore: exit %d\n%s%s", res.code, res.stdout, res.stderr)
			}
			if tc.age {
				stored := storedLTX(t, filepath.Join(srv.DataDir, bucket))
				if len(stored) == 0 {
					t.Error("no LTX object in the bucket's directory")
				}
				for key, b := range stored {
					if bytes.HasPrefix(b, []byte(ltx.Magic)) {
						t.Errorf("%s is stored unencrypted", key)
					}
				}
			}
			if got := fileChecksum(t, out); got != final.checksum {
				t.Fatalf("restore checksum %s, database %s", got, final.checksum)
			}
			restored := openDB(t, out)
			if imageSum(snapshotImage(t, restored)) != imageSum(final) {
				t.Fatal("the restored database's pages differ from the database's")
			}
			integrityCheck(t, out)
		})
	}
}

// intrudeAfterPut wraps a proxy's handler: a plain PUT of the LTX key
// want() names is forwarded, then another writer's object is written at
// the same key (through put) before the answer goes back, as when a second
// writer's PUT lands between ours and our read-back. It reports the key.
// Every such PUT is followed so, the SDK's retry of one too: the other
// writer's PUT is always the last.
func intrudeAfterPut(want func(path string) bool, put func(key string), hit *atomic.Value) func(http.Handler) http.Handler {
	return func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodPut || r.Header.Get("If-None-Match") != "" || !want(r.URL.Path) {
				h.ServeHTTP(w, r)
				return
			}
			key := strings.SplitN(strings.TrimPrefix(r.URL.Path, "/"), "/", 2)[1] // path-style: /bucket/key
			hit.Store(key)
			harness.ServeThen(h, w, r, func() { put(key) })
		})
	}
}

// plainLeaseNode is one node under a Consul lease whose replica is a
// bucket behind a proxy that answers conditional PUTs 501 (as B2), with
// conditional-writes: if-supported, and an intruder: another writer that
// puts its own object at a key of the node's history, either at once
// (foreign) or right after the node's plain PUT of the L0 file of TXID
// next lands, before the node hears of it (its read-back then sees it).
type plainLeaseNode struct {
	*leaseNode
	srv      *harness.S3Server
	s3c      *awss3.Client
	bucket   string
	proxy    *conditionStripper
	intruder []byte
	token    atomic.Uint64 // the intruder's fencing token
	next     atomic.Uint64 // the TXID the intruder takes after the node's PUT; 0: none
	hit      atomic.Value  // the key it took so
}

func startPlainLeaseNode(t *testing.T, consul *harness.Consul, srv *harness.S3Server, versioned bool) *plainLeaseNode {
	t.Helper()
	p := &plainLeaseNode{srv: srv, s3c: newS3Client(srv), bucket: srv.NewBucket(t), intruder: []byte("not an LTX file: another writer's object")}
	if versioned {
		enableBucketVersioning(t, srv, p.bucket)
	}
	p.proxy = startConditionStripperWith(t, srv, true, intrudeAfterPut(func(path string) bool {
		n := p.next.Load()
		return n != 0 && strings.HasSuffix(path, "/0000/"+ltx.FormatFilename(ltx.TXID(n), ltx.TXID(n)))
	}, func(key string) { p.foreign(t, key) }, &p.hit))
	dir := t.TempDir()
	n := &leaseNode{name: "host-a", dir: dir, dbPath: filepath.Join(dir, "app.db"),
		addr: fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t)), config: filepath.Join(dir, "understudy.yml")}
	writeFile(t, n.config, fmt.Sprintf(`addr: %s
dbs:
  - path: %s
    name: app
    replicas:
      - name: b2
        url: %s
        sync-interval: 100ms
    lease:
      type: consul
      node: host-a
      advertise-url: http://%s
      on-demote: halt
      consul:
        address: %s
        key-prefix: t%d/
`, n.addr, n.dbPath, plainURL(p.bucket, p.proxy), n.addr, consul.HTTPAddr, time.Now().UnixNano()))
	makeDB(t, n.dbPath)
	n.d = start(t, []string{"AWS_ACCESS_KEY_ID=" + srv.AccessKey, "AWS_SECRET_ACCESS_KEY=" + srv.SecretKey}, "replicate", "-config", n.config)
	p.leaseNode = n
	return p
}

// foreign writes the intruder's object at key: Understudy metadata of node
// "intruder" with its token and no database identity.
func (p *plainLeaseNode) foreign(t *testing.T, key string) {
	meta := map[string]string{}
	for k, v := range (storage.Metadata{Node: "intruder", FencingToken: p.token.Load(), CommitTime: time.Now()}).Fields() {
		meta["understudy-"+k] = v
	}
	_, err := p.s3c.PutObject(context.Background(), &awss3.PutObjectInput{
		Bucket: aws.String(p.bucket), Key: aws.String(key), Body: bytes.NewReader(p.intruder), Metadata: meta,
	})
	if err != nil {
		t.Errorf("intruder's PUT at %s: %v", key, err)
	}
}

// newest reads the newest object at key, as a plain GET (no version
// resolution) does.
func (p *plainLeaseNode) newest(t *testing.T, key string) []byte {
	t.Helper()
	out, err := p.s3c.GetObject(context.Background(), &awss3.GetObjectInput{Bucket: aws.String(p.bucket), Key: aws.String(key)})
	if err != nil {
		t.Fatalf("GET %s: %v", key, err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestPlainWritesLeaseForeignObjectHalts: a primary under a Consul lease on
// a store that answers conditional PUTs 501 (B2) reports fencing
// lease+read-back (lease+read-back+versions where the bucket keeps
// versions). Another writer's object at the key of its next L0 file halts
// it as a lost create-only race does (role halted, the app's writes fail
// with SQLITE_BUSY), and the other writer's object stays: found by the
// check before the PUT (the object was there first), and by the read-back
// after it (the other writer's PUT landed right after ours; with versions,
// a writer with a higher fencing token, whose version readers take).
func TestPlainWritesLeaseForeignObjectHalts(t *testing.T) {
	consul := harness.StartConsul(t)
	plainS3 := harness.StartVersityGW(t)
	versionedS3 := harness.StartVersityGWVersioning(t)
	for _, tc := range []struct {
		name      string
		after     bool
		versioned bool
		fencing   string
	}{
		{"before our PUT", false, false, "lease+read-back"},
		{"after our PUT", true, false, "lease+read-back"},
		{"after our PUT, versions, higher token", true, true, "lease+read-back+versions"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := plainS3
			if tc.versioned {
				srv = versionedS3
			}
			p := startPlainLeaseNode(t, consul, srv, tc.versioned)
			st := p.waitPrimary(t)
			p.token.Store(st.FencingToken + 1)
			db := openDB(t, p.dbPath)
			mustExec(t, db, `INSERT INTO t(v) VALUES (randomblob(100))`)
			txid := p.waitShippedAt(t, snapshotImage(t, db).checksum)
			if got := replicaFencing(t, p.addr); len(got) != 1 || got[0] != tc.fencing {
				t.Fatalf("/status fencing %v, want [%s]", got, tc.fencing)
			}
			key := "app/0000/" + ltx.FormatFilename(txid+1, txid+1)
			if tc.after {
				p.next.Store(uint64(txid + 1))
			} else {
				p.foreign(t, key)
			}

			a := startApp(t, p.dbPath)
			a.waitHeld(t)
			p.waitStatus(t, 20*time.Second, "halted", func(st nodeStatus) bool { return st.Role == "halted" })
			wantAll(t, p.d.out.String(), "fenced", "intruder")
			if tc.after && p.hit.Load() != key {
				t.Fatalf("the intruder wrote at %v, want %s", p.hit.Load(), key)
			}
			if got := p.newest(t, key); !bytes.Equal(got, p.intruder) {
				t.Errorf("the other writer's object at %s was replaced (%d bytes)", key, len(got))
			}
		})
	}
}

// TestPlainWritesLeaseVersionsKeepPrimary: in a bucket that keeps versions,
// a deposed writer's PUT (a lower fencing token) that lands right after
// the primary's at the same key, and is the newest version there, does not
// replace the primary's file: the primary's read-back keeps it shipping,
// and a restore through the replica (which resolves versions) is the
// primary's database, page for page.
func TestPlainWritesLeaseVersionsKeepPrimary(t *testing.T) {
	consul := harness.StartConsul(t)
	srv := harness.StartVersityGWVersioning(t)
	p := startPlainLeaseNode(t, consul, srv, true)
	st := p.waitPrimary(t)
	if st.FencingToken == 0 {
		t.Fatal("the lease gave fencing token 0: no lower token for the deposed writer")
	}
	p.token.Store(st.FencingToken - 1)
	db := openDB(t, p.dbPath)
	mustExec(t, db, `INSERT INTO t(v) VALUES (randomblob(100))`)
	txid := p.waitShippedAt(t, snapshotImage(t, db).checksum)
	key := "app/0000/" + ltx.FormatFilename(txid+1, txid+1)
	p.next.Store(uint64(txid + 1))
	mustExec(t, db, `INSERT INTO t(v) VALUES (randomblob(2000))`)
	p.waitShippedAt(t, snapshotImage(t, db).checksum)
	if p.hit.Load() != key {
		t.Fatalf("the deposed writer wrote at %v, want %s", p.hit.Load(), key)
	}
	if got := p.newest(t, key); !bytes.Equal(got, p.intruder) {
		t.Fatalf("the newest version at %s is not the deposed writer's: the test did not race as meant", key)
	}
	// Still the primary: it ships what comes next.
	mustExec(t, db, `INSERT INTO t(v) VALUES (randomblob(2000))`)
	final := snapshotImage(t, db)
	if shipped := p.waitShippedAt(t, final.checksum); shipped <= txid+1 {
		t.Fatalf("shipped through TXID %s, want past %s", shipped, txid+1)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if code := p.d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("replicate exit %d after SIGTERM", code)
	}
	out := filepath.Join(t.TempDir(), "restored.db")
	if r := run(t, []string{"AWS_ACCESS_KEY_ID=" + srv.AccessKey, "AWS_SECRET_ACCESS_KEY=" + srv.SecretKey},
		"restore", "-o", out, plainURL(p.bucket, p.proxy)); r.code != 0 {
		t.Fatalf("restore: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if imageSum(snapshotImage(t, openDB(t, out))) != imageSum(final) {
		t.Fatal("the restored database's pages differ from the primary's")
	}
}

// TestPlainWritesPlannedHandOff: a planned hand-off between two nodes whose
// replica is a versioned bucket behind a store that answers conditional
// PUTs 501 (B2): the follower follows through plain reads, the promotion's
// claim of the next TXID is a plain create, the new primary reports fencing
// lease+read-back+versions with the next token and ships, and the store
// restores to its database.
func TestPlainWritesPlannedHandOff(t *testing.T) {
	c := newCluster(t)
	srv := harness.StartVersityGWVersioning(t)
	bucket := srv.NewBucket(t)
	enableBucketVersioning(t, srv, bucket)
	proxy := startConditionStripper(t, srv, true)
	c.replica = fmt.Sprintf("      - name: b2\n        url: %s\n        access-key-id: %s\n        secret-access-key: %s\n",
		plainURL(bucket, proxy), srv.AccessKey, srv.SecretKey)
	a := c.node("a", "", "halt", false)
	b := c.node("b", "", "halt", false)
	ap := startApp(t, a.dbPath)
	a.replicate(t)
	first := a.waitPrimary(t)
	b.follow(t)
	ap.waitCommits(t, 100)
	b.waitFollowing(t)

	res := run(t, nil, "promote", "-config", b.config, "-timeout", "30s")
	if res.code != 0 {
		t.Fatalf("promote: exit %d\n%s%s\nold primary:\n%s\nfollower:\n%s", res.code, res.stdout, res.stderr,
			tailLines(a.d.out.String(), 30), tailLines(b.d.out.String(), 30))
	}
	ap.waitHeld(t)
	committed := ap.commits()
	st := b.waitStatus(t, 10*time.Second, "primary", func(st nodeStatus) bool { return st.Role == "primary" })
	if st.FencingToken <= first.FencingToken {
		t.Fatalf("new primary's fencing token %d, the old one's %d", st.FencingToken, first.FencingToken)
	}
	if got := replicaFencing(t, b.addr); len(got) != 1 || got[0] != "lease+read-back+versions" {
		t.Fatalf("new primary's /status fencing %v, want [lease+read-back+versions]", got)
	}
	nb := openDB(t, b.dbPath)
	if got := rows(t, nb); got != committed {
		t.Fatalf("the old primary's app committed %d transactions, the new primary has %d rows", committed, got)
	}
	for i := 0; i < 20; i++ {
		mustExec(t, nb, `INSERT INTO log(v) VALUES ('on b')`)
	}
	img := snapshotImage(t, nb)
	b.waitShippedAt(t, img.checksum)
	out := filepath.Join(t.TempDir(), "restored.db")
	if r := run(t, nil, "restore", "-config", b.config, "-o", out, b.dbPath); r.code != 0 {
		t.Fatalf("restore: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if got := fileChecksum(t, out); got != img.checksum {
		t.Fatalf("restore has checksum %s, the new primary %s", got, img.checksum)
	}
}
