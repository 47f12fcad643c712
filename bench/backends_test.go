package bench

// Per-store benchmark: the same workload replicated by `understudy
// replicate` to one store of each kind on this machine — a directory,
// versitygw (S3), fake-gcs-server (GCS), Azurite (Azure Blob), OpenSSH's
// sshd (SFTP) — each started the way the integration tests start it. For
// each store: how long the first snapshot of a UNDERSTUDY_BENCH_STORE_MB
// (default 64) MB database takes to appear, the ship lag from a commit to
// its L0 object (the store's directory on this machine is watched, or for
// gcs and abs the store is listed through its client), and how long `understudy restore` of the
// result takes. Numbers are reported, not asserted. Other stores join by
// adding a row to benchStores. Run:
//
//	UNDERSTUDY_BENCH=1 UNDERSTUDY_BIN=$PWD/bin/understudy UNDERSTUDY_TOOLS_BIN=$PWD/.tools/bin \
//	  go test -run TestStoresBench -v -timeout 30m ./bench/

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/understudy-db/understudy/integration/harness"
	"github.com/understudy-db/understudy/internal/storage"
	"github.com/understudy-db/understudy/internal/storage/abs"
	"github.com/understudy-db/understudy/internal/storage/gcs"
)

// benchStore is one store: its replica config (YAML lines under
// `replicas:`), the URL restore reads it by, the directories on this
// machine where its L0 and snapshot objects appear, and the environment
// the commands need.
type benchStore struct {
	name, replica, url, l0Dir, snapDir string
	env                                []string
	// maxAt, when set, gives the highest MaxTXID at a level by listing the
	// store itself, for a store with no directory here to watch (gcs, abs);
	// l0Dir and snapDir are not read then.
	maxAt func(t *testing.T, level int) uint64
}

// max is the highest MaxTXID at level (0 or 9) in the store.
func (st benchStore) max(t *testing.T, level int) uint64 {
	if st.maxAt != nil {
		return st.maxAt(t, level)
	}
	if level == 0 {
		return maxTXID(t, st.l0Dir)
	}
	return maxTXID(t, st.snapDir)
}

// benchStores starts one store of each kind.
var benchStores = []struct {
	name  string
	start func(t *testing.T) benchStore
}{
	{"file", func(t *testing.T) benchStore {
		dir := filepath.Join(t.TempDir(), "replica")
		return benchStore{
			replica: fmt.Sprintf("      - url: file://%s\n", dir), url: "file://" + dir,
			l0Dir: filepath.Join(dir, "ltx", "0"), snapDir: filepath.Join(dir, "ltx", "9"),
		}
	}},
	{"s3 (versitygw)", func(t *testing.T) benchStore {
		s := harness.StartVersityGW(t)
		bucket := s.NewBucket(t)
		url := fmt.Sprintf("s3://%s/app?endpoint=%s&region=%s&force-path-style=true", bucket, s.Endpoint, s.Region)
		return benchStore{
			replica: fmt.Sprintf("      - url: '%s'\n", url), url: url,
			l0Dir: filepath.Join(s.DataDir, bucket, "app", "0000"), snapDir: filepath.Join(s.DataDir, bucket, "app", "0009"),
			env: []string{"AWS_ACCESS_KEY_ID=" + s.AccessKey, "AWS_SECRET_ACCESS_KEY=" + s.SecretKey},
		}
	}},
	{"gcs (fake-gcs-server)", func(t *testing.T) benchStore {
		s := harness.StartFakeGCS(t)
		bucket := s.NewBucket(t)
		url := fmt.Sprintf("gcs://%s/app?endpoint=%s", bucket, s.Endpoint)
		c, err := gcs.New(context.Background(), gcs.Options{Bucket: bucket, Path: "app", Endpoint: s.Endpoint})
		if err != nil {
			t.Fatal(err)
		}
		return benchStore{replica: fmt.Sprintf("      - url: '%s'\n", url), url: url, maxAt: listMax(c)}
	}},
	{"abs (Azurite)", func(t *testing.T) benchStore {
		s := harness.StartAzurite(t)
		ctr := s.NewContainer(t)
		url := fmt.Sprintf("abs://%s@%s/app?endpoint=%s", s.Account, ctr, s.Endpoint)
		c, err := abs.New(abs.Options{AccountName: s.Account, AccountKey: s.Key, Container: ctr, Path: "app", Endpoint: s.Endpoint})
		if err != nil {
			t.Fatal(err)
		}
		return benchStore{replica: fmt.Sprintf("      - url: '%s'\n", url), url: url, maxAt: listMax(c),
			env: []string{"LITESTREAM_AZURE_ACCOUNT_KEY=" + s.Key}}
	}},
	{"sftp (OpenSSH sshd)", func(t *testing.T) benchStore {
		s := harness.StartSSHD(t)
		dir := s.NewDir(t)
		home := t.TempDir()
		s.WriteSSHDir(t, home) // restore by URL finds the key and known_hosts in ~/.ssh
		return benchStore{
			replica: fmt.Sprintf("      - url: %s\n", s.URL(dir)), url: s.URL(dir),
			l0Dir: filepath.Join(dir, "ltx", "0"), snapDir: filepath.Join(dir, "ltx", "9"),
			env: []string{"HOME=" + home},
		}
	}},
}

func TestStoresBench(t *testing.T) {
	bin := benchBin(t)
	sizeMB := envInt(t, "UNDERSTUDY_BENCH_STORE_MB", 64)
	type row struct {
		name            string
		snapshot        time.Duration
		lags            []time.Duration
		restore         time.Duration
		restoredMB      float64
		restoredMatches bool
	}
	var rows []row
	for _, bs := range benchStores {
		t.Run(bs.name, func(t *testing.T) {
			st := bs.start(t)
			dir := t.TempDir()
			path := filepath.Join(dir, "app.db")
			app := openApp(t, path)
			defer app.Close()
			mustExec(t, app, `CREATE TABLE IF NOT EXISTS big (id INTEGER PRIMARY KEY, v BLOB)`)
			mustExec(t, app, fmt.Sprintf(`WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < %d)
				INSERT INTO big(v) SELECT randomblob(1000) FROM n`, sizeMB*1000))
			mustExec(t, app, `PRAGMA wal_checkpoint(TRUNCATE)`)
			cfg := filepath.Join(dir, "understudy.yml")
			if err := os.WriteFile(cfg, []byte(fmt.Sprintf("dbs:\n  - path: %s\n    replicas:\n%s", path, st.replica)), 0o600); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(bin, "replicate", "-config", cfg)
			cmd.Env = append(os.Environ(), st.env...)
			t0 := time.Now()
			d := startDaemon(t, cmd)
			r := row{name: bs.name}
			for st.max(t, 9) == 0 {
				d.alive(t)
				if time.Since(t0) > 5*time.Minute {
					t.Fatal("no snapshot within 5 minutes")
				}
				time.Sleep(10 * time.Millisecond)
			}
			r.snapshot = time.Since(t0)
			r.lags = shipLagBy(t, app, func() uint64 { return st.max(t, 0) }, 20)
			d.stop(t)

			out := filepath.Join(t.TempDir(), "restored.db")
			rc := exec.Command(bin, "restore", "-o", out, st.url)
			rc.Env = append(os.Environ(), st.env...)
			t1 := time.Now()
			if b, err := rc.CombinedOutput(); err != nil {
				t.Fatalf("restore: %v\n%s", err, b)
			}
			r.restore = time.Since(t1)
			fi, err := os.Stat(out)
			if err != nil {
				t.Fatal(err)
			}
			r.restoredMB = float64(fi.Size()) / 1e6
			var want, got int
			if err := app.QueryRow(`SELECT count(*) FROM t`).Scan(&want); err != nil {
				t.Fatal(err)
			}
			restored := openApp(t, out)
			defer restored.Close()
			if err := restored.QueryRow(`SELECT count(*) FROM t`).Scan(&got); err != nil {
				t.Fatal(err)
			}
			r.restoredMatches = got == want
			rows = append(rows, r)
		})
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n| store | first snapshot, %d MB | ship lag p50 / p90 / max (20 commits) | restore | restored rows match |\n|---|---|---|---|---|\n", sizeMB)
	for _, r := range rows {
		n := len(r.lags)
		fmt.Fprintf(&b, "| %s | %s | %s / %s / %s | %s (%.0f MB) | %v |\n", r.name, r.snapshot.Round(time.Millisecond),
			r.lags[n/2].Round(time.Millisecond), r.lags[n*9/10].Round(time.Millisecond), r.lags[n-1].Round(time.Millisecond),
			r.restore.Round(time.Millisecond), r.restoredMB, r.restoredMatches)
	}
	t.Log(b.String())
}

// listMax is a benchStore's maxAt for a store read through its client: the
// MaxTXID of the last file a level lists.
func listMax(c storage.Client) func(t *testing.T, level int) uint64 {
	return func(t *testing.T, level int) uint64 {
		it, err := c.List(context.Background(), level, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer it.Close()
		var out uint64
		for it.Next() {
			out = max(out, uint64(it.Item().MaxTXID))
		}
		if err := it.Err(); err != nil {
			t.Fatal(err)
		}
		return out
	}
}
