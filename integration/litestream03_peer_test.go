package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/understudy-db/understudy/integration/harness"
)

// TestLitestream03Peer (opt-in: UNDERSTUDY_LITESTREAM03=/path/to/litestream
// built from Litestream v0.3.13's source) has the real Litestream 0.3 write
// a file replica and an S3 replica (versitygw) while an application writes,
// with a small checkpoint threshold so that the history spans several WAL
// indexes; Understudy then restores both byte-identically at the newest
// state, at a time between two write batches, and at the newest
// generation's last index. (No snapshot-interval: 0.3 rewrites the snapshot
// of an unchanged position under the same name, which moves its time past
// any -timestamp before it, for 0.3's own restore too.)
func TestLitestream03Peer(t *testing.T) {
	bin := os.Getenv("UNDERSTUDY_LITESTREAM03")
	if bin == "" {
		t.Skip("UNDERSTUDY_LITESTREAM03 is not set: set it to a litestream binary built from v0.3.13's source to run this interop test")
	}
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "app.db")
	fileReplica := filepath.Join(dir, "ls-replica")
	srv := harness.StartVersityGW(t)
	bucket := srv.NewBucket(t)
	cfg := filepath.Join(dir, "litestream.yml")
	writeFile(t, cfg, fmt.Sprintf(`dbs:
  - path: %s
    min-checkpoint-page-count: 40
    replicas:
      - name: file
        type: file
        path: %s
        sync-interval: 100ms
      - name: s3
        type: s3
        bucket: %s
        path: app
        endpoint: %s
        region: us-east-1
        force-path-style: true
        access-key-id: %s
        secret-access-key: %s
        sync-interval: 100ms
`, dbPath, fileReplica, bucket, srv.Endpoint, srv.AccessKey, srv.SecretKey))
	stores := []ls03Store{
		{name: "file", url: "file://" + fileReplica},
		{name: "s3", url: fmt.Sprintf("s3://%s/app?endpoint=%s&region=us-east-1&force-path-style=true", bucket, srv.Endpoint),
			env: []string{"AWS_ACCESS_KEY_ID=" + srv.AccessKey, "AWS_SECRET_ACCESS_KEY=" + srv.SecretKey}},
	}

	app := openDB(t, dbPath)
	mustExec(t, app, `CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)`)
	// Litestream 0.5.16 and 0.3 (aws-sdk-go v1) fail against S3 with these
	// machines' AWS_CA_BUNDLE set (INFRA-NOTES.md); an empty one is ignored.
	ls := startBinary(t, bin, []string{"AWS_CA_BUNDLE="}, "replicate", "-config", cfg)
	// Litestream adds its own tables to the database when it starts; write
	// only once it has (its first WAL segment is on the file replica).
	eventually(t, 30*time.Second, "Litestream 0.3 to start its first generation", func() bool {
		m, _ := filepath.Glob(filepath.Join(fileReplica, "generations", "*", "wal", "*.wal.lz4"))
		return len(m) > 0
	})

	// converge waits until Understudy's restore of every store equals the
	// source, read before and after the restores (Litestream 0.3 has no
	// status to ask, and writes to its own tables after its checkpoints, so
	// the source is only known to be shipped when it stood still meanwhile).
	converge := func(what string) [32]byte {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			before := imageSum(snapshotImage(t, app))
			var last []string
			for _, st := range stores {
				out := filepath.Join(t.TempDir(), "restored.db")
				res := run(t, st.env, "restore", "-o", out, st.url)
				if res.code != 0 {
					last = append(last, st.name+": "+res.stderr)
				} else if got := fileSum(t, out); got != before {
					last = append(last, fmt.Sprintf("%s: restored %x, source %x", st.name, got, before))
				}
			}
			if len(last) == 0 && imageSum(snapshotImage(t, app)) == before {
				return before
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s not restored from Litestream 0.3's replicas within 60s; last attempt:\n%s\nlitestream output:\n%s",
					what, strings.Join(last, "\n"), tailLines(ls.out.String(), 30))
			}
			time.Sleep(200 * time.Millisecond) // poll interval
		}
	}
	batch := func(n int) {
		for i := 0; i < n; i++ {
			mustExec(t, app, `INSERT INTO t (v) VALUES (randomblob(3000))`)
		}
		mustExec(t, app, `UPDATE t SET v = randomblob(100) WHERE id % 7 = 0`)
	}

	batch(120) // past the checkpoint threshold: WAL restarts, new indexes
	first := converge("the first batch")
	between := time.Now().UTC()
	// S3 LastModified has whole seconds: start the second batch in the
	// next second so that every object of it is after 'between'.
	eventually(t, 2*time.Second, "the next second", func() bool { return time.Now().Truncate(time.Second).After(between) })
	batch(120)
	second := converge("the second batch")
	if code := ls.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Logf("litestream exit %d", code)
	}
	// Writes and a WAL truncation while Litestream is down: it cannot
	// follow the WAL on restart and starts a second generation.
	batch(20)
	mustExec(t, app, `PRAGMA wal_checkpoint(TRUNCATE)`)
	ls = startBinary(t, bin, []string{"AWS_CA_BUNDLE="}, "replicate", "-config", cfg)
	eventually(t, 30*time.Second, "Litestream 0.3 to start a second generation", func() bool {
		m, _ := filepath.Glob(filepath.Join(fileReplica, "generations", "*"))
		return len(m) == 2
	})
	batch(10)
	third := converge("the writes after Litestream's restart")
	if code := ls.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Logf("litestream exit %d", code)
	}

	for _, st := range stores {
		ts := between.Format(time.RFC3339Nano)
		if got := restoreLS03(t, st, "-timestamp", ts); got != first {
			t.Errorf("%s: -timestamp %s restored %x, want the first batch's state %x", st.name, ts, got, first)
		}
		list := run(t, st.env, "ltx", st.url)
		if list.code != 0 {
			t.Fatalf("%s: ltx: exit %d: %s", st.name, list.code, list.stderr)
		}
		gens := generationIndexes(t, list.stdout)
		if len(gens) != 2 {
			t.Fatalf("%s: %d generations, want 2:\n%s", st.name, len(gens), list.stdout)
		}
		// The generation with the first batch is the older one: the one
		// whose newest state is the second batch.
		for _, want := range [][32]byte{second, third} {
			found := false
			for gen, index := range gens {
				if restoreLS03(t, st, "-generation", gen, "-index", index) == want {
					found = true
				}
			}
			if !found {
				t.Errorf("%s: no -generation/-index (of %v) restores state %x", st.name, gens, want)
			}
		}
		t.Logf("%s: Litestream 0.3.13 wrote %d snapshots and %d WAL segments in generations %v (name: last index); restored byte-identically at the newest state, -timestamp %s and each generation's last index",
			st.name, strings.Count(list.stdout, "  snapshot  "), strings.Count(list.stdout, "  wal  "), gens, ts)
	}
}

// generationIndexes reads each generation's highest WAL index from
// `understudy ltx`'s 0.3 table (rows: GENERATION KIND INDEX OFFSET SIZE CREATED).
func generationIndexes(t *testing.T, out string) map[string]string {
	t.Helper()
	gens := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 6 && (f[1] == "wal" || f[1] == "snapshot") && f[2] > gens[f[0]] {
			gens[f[0]] = f[2]
		}
	}
	return gens
}
