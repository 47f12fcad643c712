package integration

import (
	"bytes"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/integration/harness"
)

// dirLeaseNode is a machine with a dir: entry under the KV lease: its own
// directory of databases, config and addr.
type dirLeaseNode struct {
	name, dir, addr, config string
	d                       *daemon
}

// dirNodeStatus is one database's entry of a node's /status.
type dirNodeStatus struct {
	nodeStatus
	Name string `json:"name"`
	// LeaseRequests: the requests the database's lease sent to Consul,
	// as the daemon counts them.
	LeaseRequests uint64 `json:"lease_consul_requests"`
}

// writeDirNode writes the config of a node whose dir: entry (name
// tenants, recursive) replicates to prefix tenants of bucket, under the KV
// lease through the Consul agent at consulURL.
func (c *cluster) writeDirNode(name string, s3 *harness.S3Server, bucket, consulURL string, autoPromote bool) *dirLeaseNode {
	c.t.Helper()
	n := &dirLeaseNode{name: name, dir: filepath.Join(c.dir, name, "tenants")}
	if err := os.MkdirAll(n.dir, 0o755); err != nil {
		c.t.Fatal(err)
	}
	n.addr = fmt.Sprintf("127.0.0.1:%d", harness.FreePort(c.t))
	n.config = filepath.Join(c.dir, name, "understudy.yml")
	writeFile(c.t, n.config, fmt.Sprintf(`addr: %s
dbs:
  - dir: %s
    name: tenants
    recursive: true
    replicas:
      - url: s3://%s/tenants?endpoint=%s&region=us-east-1&force-path-style=true
        access-key-id: %s
        secret-access-key: %s
        sync-interval: 100ms
    follower:
      poll-interval: 100ms
      auto-promote: %v
    lease:
      type: consul
      node: %s
      advertise-url: http://%s
      on-demote: halt
      consul:
        address: %s
        key-prefix: %s
        mode: kv
`, n.addr, n.dir, bucket, s3.Endpoint, s3.AccessKey, s3.SecretKey, autoPromote, name, n.addr, consulURL, c.prefix))
	return n
}

// statuses reads every database of the node's /status, by name.
func (n *dirLeaseNode) statuses() (map[string]dirNodeStatus, error) {
	var doc struct {
		DBs []dirNodeStatus `json:"dbs"`
	}
	if err := getStatus(n.addr, &doc); err != nil {
		return nil, err
	}
	out := map[string]dirNodeStatus{}
	for _, st := range doc.DBs {
		out[st.Name] = st
	}
	return out, nil
}

// waitAll waits until the node runs a database for every name of names
// and each satisfies cond.
func (n *dirLeaseNode) waitAll(t *testing.T, timeout time.Duration, names []string, what string, cond func(name string, st dirNodeStatus) bool) map[string]dirNodeStatus {
	t.Helper()
	var sts map[string]dirNodeStatus
	eventually(t, timeout, n.name+": every database "+what, func() bool {
		var err error
		if sts, err = n.statuses(); err != nil {
			return false
		}
		for _, name := range names {
			st, ok := sts[name]
			if !ok || !cond(name, st) {
				return false
			}
		}
		return true
	})
	return sts
}

// consulCounter counts the Consul requests that name each lease key, by
// the path of the key relative to the cluster's prefix.
type consulCounter struct {
	mu     sync.Mutex
	prefix string
	byKey  map[string]int
	other  int
}

var txnKey = regexp.MustCompile(`"Key":"([^"]+)"`)

func (cc *consulCounter) count(r *http.Request) int {
	var keys []string
	if k, ok := strings.CutPrefix(r.URL.Path, "/v1/kv/"); ok {
		keys = append(keys, k)
	} else if r.URL.Path == "/v1/txn" && r.Body != nil {
		b, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(b))
		for _, m := range txnKey.FindAllSubmatch(b, -1) {
			keys = append(keys, string(m[1]))
		}
	}
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if len(keys) == 0 {
		cc.other++
	}
	for _, k := range slices.Compact(keys) {
		cc.byKey[strings.TrimPrefix(k, cc.prefix)]++
	}
	return 0
}

func (cc *consulCounter) snapshot() (map[string]int, int) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	out := map[string]int{}
	for k, v := range cc.byKey {
		out[k] = v
	}
	return out, cc.other
}

// TestDirLeasePerDatabase: two nodes with a dir: entry of five databases
// under the KV lease, each database its own lease. Node a replicates (its
// apps write every database), node b follows every one, from an empty
// directory. A planned promote of one database (-db eu/d.db) moves that
// one alone to b, with every transaction its app committed; the other
// four stay primary on a. Then a's apps stop, everything they committed
// is shipped, and a is killed with SIGKILL: b takes every database over
// with no acknowledged write lost, and the store restores to b's
// databases. The Consul requests per database per second are logged
// ($UNDERSTUDY_DIRLEASE_LOG for bench/RESULTS.md), not asserted.
func TestDirLeasePerDatabase(t *testing.T) {
	c := newCluster(t)
	s3 := harness.StartVersityGW(t)
	bucket := s3.NewBucket(t)
	counters := map[string]*consulCounter{}
	front := func(node string) string {
		cc := &consulCounter{prefix: c.prefix, byKey: map[string]int{}}
		counters[node] = cc
		return harness.FaultyFront(t, c.consul.URL, cc.count, func(*http.Request) int { return 0 })
	}
	a := c.writeDirNode("a", s3, bucket, front("a"), false)
	b := c.writeDirNode("b", s3, bucket, front("b"), true)
	rels := []string{"a.db", "b.db", "c.db", "eu/d.db", "eu/e.db"}
	names := make([]string, len(rels))
	apps := map[string]*app{}
	if err := os.MkdirAll(filepath.Join(a.dir, "eu"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i, rel := range rels {
		names[i] = "tenants/" + rel
		apps[rel] = startApp(t, filepath.Join(a.dir, rel))
	}
	a.d = start(t, nil, "replicate", "-config", a.config)
	tokens := a.waitAll(t, 60*time.Second, names, "primary", func(_ string, st dirNodeStatus) bool { return st.Role == "primary" && st.FencingToken > 0 })
	b.d = start(t, nil, "follow", "-config", b.config)
	for _, rel := range rels {
		apps[rel].waitCommits(t, 100)
	}
	b.waitAll(t, 60*time.Second, names, "following", func(_ string, st dirNodeStatus) bool { return st.Role == "follower" && st.TXID > 0 })

	// Consul requests per database while healthy: a renews, b watches.
	// The front counts what reaches Consul by key; each daemon counts
	// its leases' requests itself (/status lease_consul_requests) before
	// sending them, so its count read after the front's is never less.
	nodes := map[string]*dirLeaseNode{"a": a, "b": b}
	before := map[string]map[string]int{}
	daemonBefore := map[string]map[string]dirNodeStatus{}
	for n, cc := range counters {
		before[n], _ = cc.snapshot()
		st, err := nodes[n].statuses()
		if err != nil {
			t.Fatal(err)
		}
		daemonBefore[n] = st
	}
	t0 := time.Now()
	time.Sleep(5 * time.Second)
	window := time.Since(t0).Seconds()
	for _, n := range []string{"a", "b"} {
		after, other := counters[n].snapshot()
		daemon, err := nodes[n].statuses()
		if err != nil {
			t.Fatal(err)
		}
		var figs, own []string
		for _, name := range names {
			key := name + "/primary"
			figs = append(figs, fmt.Sprintf("%s %.2f", name, float64(after[key]-before[n][key])/window))
			own = append(own, fmt.Sprintf("%s %.2f", name, float64(daemon[name].LeaseRequests-daemonBefore[n][name].LeaseRequests)/window))
			if after[key] == 0 {
				t.Errorf("node %s sent no Consul request for the lease key of %s", n, name)
			}
			if got := daemon[name].LeaseRequests; got < uint64(after[key]) {
				t.Errorf("node %s counts %d lease requests for %s, fewer than the %d that reached Consul", n, got, name, after[key])
			}
		}
		t.Logf("node %s: Consul requests per second per database (lease key, at Consul): %s; %d other requests in all (sessions, services)", n, strings.Join(figs, ", "), other)
		t.Logf("node %s: the same as the daemon counts them (/status lease_consul_requests): %s", n, strings.Join(own, ", "))
		appendFigure("UNDERSTUDY_DIRLEASE_LOG", "%s %s\n", n, strings.Join(figs, " "))
	}

	// A planned promote of one database moves it alone.
	moved := "eu/d.db"
	res := run(t, nil, "promote", "-config", b.config, "-db", moved, "-timeout", "30s")
	if res.code != 0 {
		t.Fatalf("promote -db %s: exit %d\n%s%s\nold primary:\n%s\nfollower:\n%s", moved, res.code, res.stdout, res.stderr,
			tailLines(a.d.out.String(), 30), tailLines(b.d.out.String(), 30))
	}
	apps[moved].waitHeld(t)
	committed := apps[moved].commits()
	b.waitAll(t, 20*time.Second, []string{"tenants/" + moved}, "promoted", func(_ string, st dirNodeStatus) bool { return st.Role == "primary" })
	if got := rows(t, openDB(t, filepath.Join(b.dir, moved))); got != committed {
		t.Fatalf("%s: the old primary's app committed %d transactions, the new primary has %d rows", moved, committed, got)
	}
	t.Logf("planned hand-off of %s: %s; %d committed transactions, none lost", moved, strings.TrimSpace(res.stdout), committed)
	stA, err := a.statuses()
	if err != nil {
		t.Fatal(err)
	}
	stB, err := b.statuses()
	if err != nil {
		t.Fatal(err)
	}
	for _, rel := range rels {
		name := "tenants/" + rel
		wantA, wantB := "primary", "follower"
		if rel == moved {
			wantA, wantB = "halted", "primary"
		}
		if stA[name].Role != wantA || stB[name].Role != wantB {
			t.Fatalf("%s after the promote of %s: role %q on a, %q on b; want %q and %q", name, moved, stA[name].Role, stB[name].Role, wantA, wantB)
		}
		if rel != moved && stA[name].FencingToken != tokens[name].FencingToken {
			t.Fatalf("%s changed hands (token %d, was %d) though only %s was promoted", name, stA[name].FencingToken, tokens[name].FencingToken, moved)
		}
	}
	// The others' apps still write on a.
	for _, rel := range rels {
		if rel != moved {
			apps[rel].waitCommits(t, apps[rel].commits()+50)
		}
	}

	// Kill a once everything its apps committed is shipped: b takes every
	// database over with all of it.
	shipped := map[string]ltx.Checksum{}
	for _, rel := range rels {
		if rel == moved {
			continue
		}
		apps[rel].halt()
		shipped["tenants/"+rel] = snapshotImage(t, apps[rel].db).checksum
	}
	a.waitAll(t, 30*time.Second, slices.Collect(maps.Keys(shipped)), "shipped", func(name string, st dirNodeStatus) bool {
		return st.Role == "primary" && st.Checksum == shipped[name] && len(st.Replicas) == 1 &&
			st.Replicas[0].TXID == st.TXID && st.Replicas[0].Checksum == shipped[name]
	})
	a.d.kill()
	killed := time.Now()
	b.waitAll(t, 60*time.Second, names, "primary after the kill", func(_ string, st dirNodeStatus) bool { return st.Role == "primary" })
	t.Logf("kill -9 of a: b is primary of all %d databases %s later", len(names), time.Since(killed).Round(time.Millisecond))
	final := map[string]ltx.Checksum{}
	for _, rel := range rels {
		nb := openDB(t, filepath.Join(b.dir, rel))
		if rel != moved {
			if got, want := rows(t, nb), apps[rel].commits(); got != want {
				t.Fatalf("%s: a's app committed %d transactions (all shipped before the kill), b has %d rows", rel, want, got)
			}
		}
		mustExec(t, nb, `INSERT INTO log(v) VALUES ('on b')`)
		final["tenants/"+rel] = snapshotImage(t, nb).checksum
	}
	b.waitAll(t, 30*time.Second, names, "shipped on b", func(name string, st dirNodeStatus) bool {
		return st.Checksum == final[name] && len(st.Replicas) == 1 && st.Replicas[0].Checksum == final[name]
	})
	restored := filepath.Join(t.TempDir(), "restored")
	env := []string{"AWS_ACCESS_KEY_ID=" + s3.AccessKey, "AWS_SECRET_ACCESS_KEY=" + s3.SecretKey}
	if r := run(t, env, "restore", "-dir-out", restored, fmt.Sprintf("s3://%s/tenants?endpoint=%s&region=us-east-1&force-path-style=true", bucket, s3.Endpoint)); r.code != 0 {
		t.Fatalf("restore -dir-out: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	for _, rel := range rels {
		if got := fileChecksum(t, filepath.Join(restored, rel)); got != final["tenants/"+rel] {
			t.Fatalf("restore of %s has checksum %s, b's database %s", rel, got, final["tenants/"+rel])
		}
	}
}
