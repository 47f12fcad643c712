package integration

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/integration/harness"
)

// objectStore is a replica store of another kind than file and s3, started
// for one test: the replica's lines in a config, the URL that names the
// same store on the command line, and the environment both need.
type objectStore struct {
	name   string
	config string // the replica's keys, indented as a list item under replicas:
	url    string
	env    []string
}

// objectStores start each store the backends test runs through.
var objectStores = []struct {
	name  string
	start func(t *testing.T) objectStore
}{
	{"gcs", func(t *testing.T) objectStore {
		s := harness.StartFakeGCS(t)
		bucket := s.NewBucket(t)
		return objectStore{
			name: "gcs",
			config: fmt.Sprintf(`      - name: gcs
        type: gcs
        bucket: %s
        path: app
        endpoint: %s
        sync-interval: 100ms
`, bucket, s.Endpoint),
			url: fmt.Sprintf("gcs://%s/app?endpoint=%s", bucket, s.Endpoint),
			// The emulator is named by the config and the URL alone.
			env: []string{"STORAGE_EMULATOR_HOST="},
		}
	}},
	{"abs", func(t *testing.T) objectStore {
		s := harness.StartAzurite(t)
		ctr := s.NewContainer(t)
		return objectStore{
			name: "abs",
			config: fmt.Sprintf(`      - name: abs
        type: abs
        account-name: %s
        bucket: %s
        path: app
        endpoint: %s
        sync-interval: 100ms
`, s.Account, ctr, s.Endpoint),
			url: fmt.Sprintf("abs://%s@%s/app?endpoint=%s", s.Account, ctr, s.Endpoint),
			// The key from the environment, as Litestream 0.3 reads it.
			env: []string{"LITESTREAM_AZURE_ACCOUNT_KEY=" + s.Key},
		}
	}},
}

// TestObjectStoreShipRestoreFollow runs the real binary through each store:
// replicate ships a random workload (and a kill -9 and restart in the
// middle), follow tracks it live, and restore rebuilds the database. The
// restored file and the follower's hold the primary's pages byte for byte.
func TestObjectStoreShipRestoreFollow(t *testing.T) {
	for _, os := range objectStores {
		t.Run(os.name, func(t *testing.T) {
			store := os.start(t)
			s := newObjectStack(t, store, "")

			app := openDB(t, s.dbPath)
			w := startWriter(t, app, 7)
			d := s.replicate(t)
			first := func() ltx.TXID {
				w.pause.Lock() // hold the app still; a failure below must not leave it held
				defer w.pause.Unlock()
				return s.waitShipped(t, snapshotImage(t, app))
			}()

			followPath := filepath.Join(t.TempDir(), "follower.db")
			f := startFollow(t, store.env, store.url, followPath, 100*time.Millisecond)
			f.waitFor(t, 60*time.Second, "the first shipped TXID", func(st followStatus) bool { return st.TXID >= first })

			time.Sleep(time.Second)
			d.kill() // the next daemon resumes the history in the store
			time.Sleep(300 * time.Millisecond)
			d = s.replicate(t)
			time.Sleep(time.Second)
			w.halt(t)
			if w.n < 50 {
				t.Fatalf("writer made only %d transactions", w.n)
			}

			final := snapshotImage(t, app)
			finalTXID := s.waitShipped(t, final)
			st := f.waitAt(t, finalTXID, final.checksum)
			if code := d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
				t.Fatalf("replicate exit code after SIGTERM = %d\n%s", code, tailLines(d.out.String(), 30))
			}
			t.Logf("%s: %d transactions, final TXID %s, follower applied %d files", store.name, w.n, finalTXID, st.Applied)

			want := pageDigest(slices.Values(final.pages))
			out := s.restore(t, store.url)
			if got := filePageDigest(t, out, len(final.pages[0])); got != want {
				t.Errorf("restore from %s: pages differ from the primary's (checksum %s, primary %s)", store.url, fileChecksum(t, out), final.checksum)
			}
			integrityCheck(t, out)
			if got := localChecksum(t, followPath); got != final.checksum {
				t.Errorf("follower's database checksum %s, primary %s", got, final.checksum)
			}
			if aside := asideFiles(t, followPath); len(aside) != 0 {
				t.Errorf("follower moved databases aside: %v", aside)
			}
		})
	}
}

// newObjectStack is a primary set-up with one replica, in store, whose
// config lines get extra (indented under the replica) appended.
func newObjectStack(t *testing.T, store objectStore, extra string) *stack {
	t.Helper()
	dir := t.TempDir()
	s := &stack{
		dir:        dir,
		dbPath:     filepath.Join(dir, "app.db"),
		addr:       fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t)),
		configPath: filepath.Join(dir, "understudy.yml"),
		env:        store.env,
	}
	writeFile(t, s.configPath, fmt.Sprintf("addr: %s\ndbs:\n  - path: %s\n    replicas:\n%s%s", s.addr, s.dbPath, store.config, extra))
	return s
}

// TestObjectStoreAge: age encryption composes with each store: replicate
// ships age files, a restore with the config's identity is the primary's
// database page for page, and one by the bare URL (no identity) fails
// saying what to set.
func TestObjectStoreAge(t *testing.T) {
	for _, os := range objectStores {
		t.Run(os.name, func(t *testing.T) {
			keys := newAgeKeys(t)
			store := os.start(t)
			s := newObjectStack(t, store, "        age:\n          recipients: ["+keys.recipient+"]\n          identities: [${TEST_AGE_IDENTITY}]\n")
			s.env = append(s.env, "TEST_AGE_IDENTITY="+keys.identity)
			app := openDB(t, s.dbPath)
			mustExec(t, app, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
			for i := 0; i < 100; i++ {
				mustExec(t, app, "INSERT INTO t (v) VALUES (?)", strings.Repeat(fmt.Sprint(i), 300))
			}
			d := s.replicate(t)
			s.waitShipped(t, snapshotImage(t, app))
			mustExec(t, app, "UPDATE t SET v = 'changed' WHERE id % 3 = 0")
			final := snapshotImage(t, app)
			s.waitShipped(t, final)
			if code := d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
				t.Fatalf("replicate exit code after SIGTERM = %d\n%s", code, tailLines(d.out.String(), 30))
			}

			out := filepath.Join(t.TempDir(), "restored.db")
			if res := run(t, s.env, "restore", "-config", s.configPath, "-o", out, s.dbPath); res.code != 0 {
				t.Fatalf("restore with the identity: exit %d\n%s%s", res.code, res.stdout, res.stderr)
			}
			if got := filePageDigest(t, out, len(final.pages[0])); got != pageDigest(slices.Values(final.pages)) {
				t.Errorf("restore from the encrypted %s replica: pages differ from the primary's", store.name)
			}
			wantAll(t, restoreFailure(t, s.env, store.url), "age-encrypted", "age: {identities:")
		})
	}
}
