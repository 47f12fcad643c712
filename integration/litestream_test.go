package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/superfly/ltx"
	"github.com/understudy-db/understudy/follower"
	"github.com/understudy-db/understudy/integration/harness"
)

// LitestreamBinEnv names a Litestream 0.5 binary for the interop tests. It is
// a peer tool, built by the developer from its own source (never committed,
// never fetched by the build): without it these tests skip, and say so.
const LitestreamBinEnv = "UNDERSTUDY_LITESTREAM05"

func litestreamBin(t *testing.T) string {
	t.Helper()
	p := os.Getenv(LitestreamBinEnv)
	if p == "" {
		t.Skipf("set %s to a Litestream 0.5 binary to run the interop tests", LitestreamBinEnv)
	}
	return p
}

// peerReplica is one replica both tools are configured for.
type peerReplica struct {
	understudyURL string   // for understudy restore and the replicate config
	litestreamCfg string   // the replica's entry in a Litestream config, indented for `replicas:`
	env           []string // credentials for both tools
}

func filePeerReplica(dir string) peerReplica {
	return peerReplica{
		understudyURL: "file://" + dir,
		litestreamCfg: fmt.Sprintf("      - type: file\n        path: %s\n        sync-interval: 100ms\n", dir),
	}
}

func s3PeerReplica(t *testing.T) peerReplica {
	t.Helper()
	s3 := harness.StartVersityGW(t)
	bucket := s3.NewBucket(t)
	return peerReplica{
		understudyURL: fmt.Sprintf("s3://%s/app?endpoint=%s&region=us-east-1&force-path-style=true", bucket, s3.Endpoint),
		litestreamCfg: fmt.Sprintf("      - type: s3\n        bucket: %s\n        path: app\n        endpoint: %s\n        region: us-east-1\n        force-path-style: true\n        sync-interval: 100ms\n",
			bucket, s3.Endpoint),
		// Litestream 0.5.16 cannot start against S3 with AWS_CA_BUNDLE set
		// (INFRA-NOTES); the loopback store needs no bundle.
		env: []string{"AWS_ACCESS_KEY_ID=" + s3.AccessKey, "AWS_SECRET_ACCESS_KEY=" + s3.SecretKey, "AWS_CA_BUNDLE="},
	}
}

// TestLitestreamTakesOverAndBack switches one database and replica between
// the two tools, both orders in one run, writing between every switch: a
// user going back and forth must lose no committed row, and each tool's
// restore must give the whole database. Understudy -> Litestream lost every
// row after the switch (Litestream's sync failed on our L0 header, shipping
// nothing, and it exited 0).
func TestLitestreamTakesOverAndBack(t *testing.T) {
	ls := litestreamBin(t)
	for _, kind := range []string{"file", "s3"} {
		t.Run(kind, func(t *testing.T) {
			dir := t.TempDir()
			var rep peerReplica
			if kind == "file" {
				rep = filePeerReplica(filepath.Join(dir, "replica"))
			} else {
				rep = s3PeerReplica(t)
			}
			dbPath := filepath.Join(dir, "app.db")
			usCfg := filepath.Join(dir, "understudy.yml")
			writeFile(t, usCfg, fmt.Sprintf("dbs:\n  - path: %s\n    replicas:\n      - url: %s\n        sync-interval: 100ms\n", dbPath, rep.understudyURL))
			lsCfg := filepath.Join(dir, "litestream.yml")
			writeFile(t, lsCfg, fmt.Sprintf("dbs:\n  - path: %s\n    replicas:\n%s", dbPath, rep.litestreamCfg))

			app := openDB(t, dbPath)
			mustExec(t, app, `CREATE TABLE rows (id INTEGER PRIMARY KEY, who TEXT, pad BLOB)`)
			rows := 0
			write := func(who string, n int) {
				t.Helper()
				for i := 0; i < n; i++ {
					mustExec(t, app, `INSERT INTO rows (who, pad) VALUES (?, randomblob(500))`, who)
					rows++
				}
			}
			// restoreRows restores with one tool and counts the rows.
			restoreRows := func(tool string) (int, error) {
				out := filepath.Join(t.TempDir(), "restored.db")
				var res result
				var err error
				if tool == "understudy" {
					res, err = runCmd(understudyBin(t), []string{"restore", "-o", out, rep.understudyURL}, withEnv(rep.env))
				} else {
					res, err = runCmd(ls, []string{"restore", "-config", lsCfg, "-o", out, dbPath}, withEnv(rep.env))
				}
				if err != nil {
					return 0, err
				}
				if res.code != 0 {
					return 0, fmt.Errorf("%s restore: exit %d: %s%s", tool, res.code, res.stdout, res.stderr)
				}
				db := openDB(t, out)
				defer db.Close()
				var n int
				err = db.QueryRow(`SELECT count(*) FROM rows`).Scan(&n)
				return n, err
			}
			// waitRestorable waits until both tools restore every row.
			waitRestorable := func(step string) {
				t.Helper()
				var last string
				deadline := time.Now().Add(30 * time.Second)
				for {
					us, uerr := restoreRows("understudy")
					lsn, lerr := restoreRows("litestream")
					if uerr == nil && lerr == nil && us == rows && lsn == rows {
						return
					}
					last = fmt.Sprintf("understudy %d (%v), litestream %d (%v), want %d", us, uerr, lsn, lerr, rows)
					if time.Now().After(deadline) {
						t.Fatalf("%s: restores never held every committed row: %s", step, last)
					}
					time.Sleep(300 * time.Millisecond)
				}
			}
			startLitestream := func() *daemon {
				t.Helper()
				return startBinary(t, ls, rep.env, "replicate", "-config", lsCfg)
			}
			stopClean := func(who string, d *daemon) {
				t.Helper()
				if code := d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
					t.Fatalf("%s exited %d after SIGTERM:\n%s", who, code, tailLines(d.out.String(), 30))
				}
				if strings.Contains(d.out.String(), "cannot verify wal state") {
					t.Fatalf("%s could not follow the WAL:\n%s", who, tailLines(d.out.String(), 30))
				}
			}

			write("before", 3)
			us := start(t, rep.env, "replicate", "-config", usCfg)
			write("understudy-1", 5)
			waitRestorable("understudy first")
			stopClean("understudy", us)

			write("between-1", 4)
			lt := startLitestream()
			write("litestream", 6)
			waitRestorable("litestream after understudy")
			stopClean("litestream", lt)

			write("between-2", 4)
			us = start(t, rep.env, "replicate", "-config", usCfg)
			write("understudy-2", 5)
			waitRestorable("understudy after litestream")
			stopClean("understudy", us)

			// And once more the first way, now over a history both wrote.
			write("between-3", 2)
			lt = startLitestream()
			write("litestream-2", 3)
			waitRestorable("litestream again")
			stopClean("litestream", lt)
		})
	}
}

func withEnv(env []string) func(*exec.Cmd) {
	return func(cmd *exec.Cmd) { cmd.Env = append(os.Environ(), env...) }
}

// TestFollowLitestreamAfterCompaction follows a replica Litestream 0.5
// writes, with compaction and L0 retention shortened from Litestream's
// defaults (L1 every 30 s, L0 kept 5 min) so that the follower, stopped for
// a while, comes back to a store whose L0 files after its position are gone
// and whose L1 file starts before it. It must rebuild by itself and end with
// every committed row, healthy (it used to stay stuck, /healthz 503, until
// the local file was deleted).
func TestFollowLitestreamAfterCompaction(t *testing.T) {
	ls := litestreamBin(t)
	for _, kind := range []string{"file", "s3"} {
		t.Run(kind, func(t *testing.T) { followLitestreamAfterCompaction(t, ls, kind) })
	}
}

func followLitestreamAfterCompaction(t *testing.T, ls, kind string) {
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "app.db")
	var rep peerReplica
	// levelDir is where a level's files are on disk: the file replica's
	// directory, or the object directory versitygw keeps the bucket in.
	var levelDir func(level int) string
	if kind == "file" {
		replica := filepath.Join(dir, "replica")
		rep = peerReplica{
			understudyURL: "file://" + replica,
			litestreamCfg: fmt.Sprintf("      type: file\n      path: %s\n      sync-interval: 100ms\n", replica),
		}
		levelDir = func(level int) string { return filepath.Join(replica, "ltx", fmt.Sprint(level)) }
	} else {
		s3 := harness.StartVersityGW(t)
		bucket := s3.NewBucket(t)
		rep = peerReplica{
			understudyURL: fmt.Sprintf("s3://%s/app?endpoint=%s&region=us-east-1&force-path-style=true", bucket, s3.Endpoint),
			litestreamCfg: fmt.Sprintf("      type: s3\n      bucket: %s\n      path: app\n      endpoint: %s\n      region: us-east-1\n      force-path-style: true\n      sync-interval: 100ms\n", bucket, s3.Endpoint),
			env:           []string{"AWS_ACCESS_KEY_ID=" + s3.AccessKey, "AWS_SECRET_ACCESS_KEY=" + s3.SecretKey, "AWS_CA_BUNDLE="},
		}
		levelDir = func(level int) string { return filepath.Join(s3.DataDir, bucket, "app", fmt.Sprintf("%04x", level)) }
	}
	lsCfg := filepath.Join(dir, "litestream.yml")
	writeFile(t, lsCfg, fmt.Sprintf(`levels:
  - interval: 5s
l0-retention: 1s
l0-retention-check-interval: 500ms
dbs:
  - path: %s
    replica:
%s`, dbPath, rep.litestreamCfg))
	app := openDB(t, dbPath)
	mustExec(t, app, `CREATE TABLE rows (id INTEGER PRIMARY KEY, pad BLOB)`)
	rows := 0
	write := func(n int) {
		t.Helper()
		for i := 0; i < n; i++ {
			mustExec(t, app, `INSERT INTO rows (pad) VALUES (randomblob(300))`)
			rows++
			time.Sleep(20 * time.Millisecond) // one Litestream sync holds a few rows
		}
	}
	lt := startBinary(t, ls, rep.env, "replicate", "-config", lsCfg)
	write(20)
	eventually(t, 30*time.Second, "Litestream to ship past its first snapshot", func() bool {
		write(1)
		return levelMaxTXID(t, levelDir(0)) >= 3
	})

	local := filepath.Join(dir, "follower.db")
	url := rep.understudyURL
	f := startFollow(t, rep.env, url, local, 100*time.Millisecond)
	write(10)
	countRows := func() int {
		db := openDB(t, local)
		defer db.Close()
		var n int
		if err := db.QueryRow(`SELECT count(*) FROM rows`).Scan(&n); err != nil {
			return -1
		}
		return n
	}
	eventually(t, 30*time.Second, "the follower to hold every row", func() bool {
		st, err := f.status()
		return err == nil && st.CaughtUp && countRows() == rows
	})
	// Stop the follower while the app goes on writing, so that its position
	// falls inside the L1 window Litestream compacts next.
	bg := make(chan struct{})
	bgDone := make(chan int)
	go func() {
		n := 0
		defer func() { bgDone <- n }()
		for {
			select {
			case <-bg:
				return
			default:
			}
			if _, err := app.Exec(`INSERT INTO rows (pad) VALUES (randomblob(300))`); err != nil {
				t.Errorf("app write: %v", err)
				return
			}
			n++
			time.Sleep(20 * time.Millisecond)
		}
	}()
	// Litestream's next L1 file starts after the newest one and, compacting
	// every 5 s while it makes about a TXID a second, takes several: a
	// follower stopped two TXIDs past the newest L1 file sits inside it.
	eventually(t, 30*time.Second, "the follower to be past Litestream's newest L1 file", func() bool {
		st, err := f.status()
		return err == nil && st.TXID == levelMaxTXID(t, levelDir(1))+2
	})
	if code := f.stop(t, syscall.SIGTERM, 20*time.Second); code != 0 {
		t.Fatalf("follow exited %d", code)
	}
	var pos follower.Position
	if b, err := os.ReadFile(follower.PositionPath(local)); err != nil {
		t.Fatal(err)
	} else if err := json.Unmarshal(b, &pos); err != nil {
		t.Fatal(err)
	}
	at := pos.TXID
	t.Logf("follower stopped at TXID %s; L1 %v", at, levelFiles(t, levelDir(1)))
	defer func() {
		if t.Failed() {
			t.Logf("L0 %v; L1 %v", levelFiles(t, levelDir(0)), levelFiles(t, levelDir(1)))
		}
	}()

	// While the follower is down: more writes, compactions into L1 and
	// L0 files removed past the follower's position.
	eventually(t, 60*time.Second, "Litestream to compact the follower's next TXID into an L1 file that starts before it, and remove its L0 file", func() bool {
		_, err := os.Stat(filepath.Join(levelDir(0), ltx.FormatFilename(at+1, at+1)))
		return os.IsNotExist(err) && straddles(t, levelDir(1), at+1)
	})
	close(bg)
	rows += <-bgDone
	write(10)

	f = startFollow(t, rep.env, url, local, 100*time.Millisecond)
	eventually(t, 60*time.Second, "the follower to hold every row again", func() bool {
		st, err := f.status()
		return err == nil && st.Healthy && st.CaughtUp && countRows() == rows
	})
	if code := lt.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("litestream exited %d", code)
	}
}

// levelMaxTXID is the highest TXID of the LTX files in a level directory.
func levelMaxTXID(t *testing.T, dir string) ltx.TXID {
	t.Helper()
	var top ltx.TXID
	for _, r := range levelFiles(t, dir) {
		top = max(top, r[1])
	}
	return top
}

// straddles reports whether a level directory holds a file that contains
// txid but starts before it.
func straddles(t *testing.T, dir string, txid ltx.TXID) bool {
	t.Helper()
	for _, r := range levelFiles(t, dir) {
		if r[0] < txid && txid <= r[1] {
			return true
		}
	}
	return false
}

// levelFiles lists the TXID ranges of the LTX files in a level directory
// (none if it does not exist yet).
func levelFiles(t *testing.T, dir string) [][2]ltx.TXID {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var out [][2]ltx.TXID
	for _, e := range entries {
		if min, max, err := ltx.ParseFilename(e.Name()); err == nil {
			out = append(out, [2]ltx.TXID{min, max})
		}
	}
	return out
}
