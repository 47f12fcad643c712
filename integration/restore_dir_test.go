package integration

import (
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/integration/harness"
)

// TestRestoreDirectory: a directory of 20 databases replicated by one dir:
// entry to a file replica and versitygw restores whole, with one command,
// from either store (by the config's entry and by the prefix URL), each
// database page for page equal to the application's at its relative path;
// a target that exists stops the restore before anything is written and is
// left as it was; a database that cannot be restored is named, the others
// are restored, and the command exits non-zero.
func TestRestoreDirectory(t *testing.T) {
	s := newDirStack(t)
	for i := range 20 {
		name := fmt.Sprintf("t%02d.db", i)
		if i%4 == 0 {
			name = "eu/" + name
		}
		s.create(t, name)
		s.mu.Lock()
		for range i % 5 { // databases of different sizes
			mustExec(t, s.dbs[name], `INSERT INTO t(v) VALUES (randomblob(3000))`)
		}
		s.mu.Unlock()
	}
	d := start(t, s.env, "replicate", "-config", s.configPath)
	want := s.waitAllShipped(t)
	d.stop(t, os.Interrupt, 30*time.Second)
	s3URL := fmt.Sprintf("s3://%s/tenants?endpoint=%s&region=us-east-1&force-path-style=true", s.bucket, s.s3.Endpoint)

	// Two replicas: the entry's restore must be told which.
	res := run(t, s.env, "restore", "-config", s.configPath, "-dir-out", filepath.Join(t.TempDir(), "x"), s.dir)
	if res.code == 0 || !strings.Contains(res.stderr, "-replica") {
		t.Errorf("restore of an entry with two replicas without -replica: exit %d, want an error asking for -replica:\n%s", res.code, res.stderr)
	}

	for _, tc := range []struct {
		name string
		args []string
	}{
		{"file replica of the entry", []string{"-config", s.configPath, "-replica", "file", s.dir}},
		{"s3 prefix URL", []string{s3URL}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "restored")
			res := run(t, s.env, append([]string{"restore", "-parallel-dbs", "3", "-dir-out", out}, tc.args...)...)
			if res.code != 0 {
				t.Fatalf("restore: exit %d\n%s%s", res.code, res.stdout, res.stderr)
			}
			t.Logf("%s", res.stdout)
			if !strings.Contains(res.stdout, fmt.Sprintf("restored %d databases into %s, 0 failed", len(want), out)) {
				t.Errorf("no summary line in the output:\n%s", res.stdout)
			}
			checkRestoredDir(t, out, want)
		})
	}

	t.Run("a target exists", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "restored")
		taken := filepath.Join(out, "eu", "t04.db")
		if err := os.MkdirAll(filepath.Dir(taken), 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, taken, "the operator's file")
		res := run(t, s.env, "restore", "-dir-out", out, "file://"+s.store)
		if res.code == 0 || !strings.Contains(res.stderr, taken) {
			t.Errorf("restore into a directory where %s exists: exit %d, want an error naming it:\n%s", taken, res.code, res.stderr)
		}
		if b, err := os.ReadFile(taken); err != nil || string(b) != "the operator's file" {
			t.Errorf("the existing %s was touched: %q, %v", taken, b, err)
		}
		if got := dbFiles(t, out); !slices.Equal(got, []string{"eu/t04.db"}) {
			t.Errorf("a refused restore wrote databases: %q", got)
		}
		// -if-db-not-exists restores the others and leaves it.
		res = run(t, s.env, "restore", "-if-db-not-exists", "-dir-out", out, "file://"+s.store)
		if res.code != 0 {
			t.Fatalf("restore -if-db-not-exists: exit %d\n%s%s", res.code, res.stdout, res.stderr)
		}
		if b, err := os.ReadFile(taken); err != nil || string(b) != "the operator's file" {
			t.Errorf("-if-db-not-exists touched the existing %s: %q, %v", taken, b, err)
		}
		rest := maps.Clone(want)
		delete(rest, "eu/t04.db")
		checkRestoredDir(t, out, rest, "eu/t04.db")
	})

	t.Run("a database fails", func(t *testing.T) {
		// A copy of the file store where every LTX file of one database
		// is cut short: no path restores it.
		store := filepath.Join(t.TempDir(), "store")
		if err := os.CopyFS(store, os.DirFS(s.store)); err != nil {
			t.Fatal(err)
		}
		bad := "t07.db"
		err := filepath.WalkDir(filepath.Join(store, bad, "ltx"), func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			return os.Truncate(p, 40)
		})
		if err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(t.TempDir(), "restored")
		res := run(t, s.env, "restore", "-dir-out", out, "file://"+store)
		if res.code == 0 {
			t.Fatalf("restore with a broken database exited 0:\n%s", res.stdout)
		}
		if !strings.Contains(res.stdout, fmt.Sprintf("restored %d databases into %s, 1 failed", len(want)-1, out)) ||
			!strings.Contains(res.stdout, "failed: "+bad+":") {
			t.Errorf("the summary does not name the failed database %s:\n%s", bad, res.stdout)
		}
		rest := maps.Clone(want)
		delete(rest, bad)
		checkRestoredDir(t, out, rest)
	})
}

// checkRestoredDir checks that dir holds exactly the databases of want
// (and of extra, not checked), each with its checksum and intact.
func checkRestoredDir(t *testing.T, dir string, want map[string]ltx.Checksum, extra ...string) {
	t.Helper()
	var names []string
	for n := range want {
		names = append(names, n)
	}
	names = append(names, extra...)
	slices.Sort(names)
	if got := dbFiles(t, dir); !slices.Equal(got, names) {
		t.Errorf("restored databases in %s: %q, want %q", dir, got, names)
	}
	for n, sum := range want {
		p := filepath.Join(dir, filepath.FromSlash(n))
		if _, err := os.Stat(p); err != nil {
			continue // reported above
		}
		if got := fileChecksum(t, p); got != sum {
			t.Errorf("%s: checksum %s, the application's is %s", n, got, sum)
		}
		integrityCheck(t, p)
	}
}

// dbFiles lists the *.db files below dir, relative and slash-separated.
func dbFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(p, ".db") {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

// TestDirectoryOverGCSAgeAndSFTP: one dir: entry replicates a directory of
// databases to an age-encrypted gcs replica (fake-gcs-server) and to an
// sftp replica (OpenSSH's sshd), one storage client per database derived
// from each replica's prefix. Every object in the bucket is an age file;
// restore -dir-out of the whole gcs prefix, by the config's entry (which
// holds the identity), gives each database page for page as the
// application has it, and so does restore -dir-out of the sftp prefix URL.
func TestDirectoryOverGCSAgeAndSFTP(t *testing.T) {
	gcs := harness.StartFakeGCS(t)
	sshd := harness.StartSSHD(t)
	keys := newAgeKeys(t)
	s := emptyDirStack(t)
	s.bucket = gcs.NewBucket(t)
	sftpDir := sshd.NewDir(t)
	home := filepath.Join(t.TempDir(), "home")
	sshd.WriteSSHDir(t, home)
	s.env = []string{"STORAGE_EMULATOR_HOST=", "HOME=" + home}
	writeFile(t, s.configPath, fmt.Sprintf(`addr: %s
dbs:
  - dir: %s
    recursive: true
    replicas:
      - name: gcs
        type: gcs
        bucket: %s
        path: tenants
        endpoint: %s
        sync-interval: 100ms
        age:
          recipients: [%s]
          identities: [%s]
      - name: sftp
        url: %s
        sync-interval: 100ms
`, s.addr, s.dir, s.bucket, gcs.Endpoint, keys.recipient, keys.identity, sshd.URL(sftpDir)))
	for i := range 6 {
		name := fmt.Sprintf("t%02d.db", i)
		if i%3 == 0 {
			name = "eu/" + name
		}
		s.create(t, name)
		for range i % 3 {
			mustExec(t, s.dbs[name], `INSERT INTO t(v) VALUES (randomblob(3000))`)
		}
	}
	d := start(t, s.env, "replicate", "-config", s.configPath)
	want := s.waitAllShipped(t)
	d.stop(t, os.Interrupt, 30*time.Second)

	out := filepath.Join(t.TempDir(), "restored")
	res := run(t, s.env, "restore", "-config", s.configPath, "-replica", "gcs", "-parallel-dbs", "3", "-dir-out", out, s.dir)
	if res.code != 0 {
		t.Fatalf("restore of the gcs prefix: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	if !strings.Contains(res.stdout, fmt.Sprintf("restored %d databases into %s, 0 failed", len(want), out)) {
		t.Errorf("no summary line in the output:\n%s", res.stdout)
	}
	checkRestoredDir(t, out, want)

	// Without the identity (the prefix by URL) nothing decrypts: the
	// objects in the bucket are age files, not LTX.
	url := fmt.Sprintf("gcs://%s/tenants?endpoint=%s", s.bucket, gcs.Endpoint)
	res = run(t, s.env, "restore", "-dir-out", filepath.Join(t.TempDir(), "plain"), url)
	if res.code == 0 || !strings.Contains(res.stdout+res.stderr, "age-encrypted") {
		t.Errorf("restore of the encrypted prefix without an identity: exit %d, want an error saying the objects are age-encrypted:\n%s%s", res.code, res.stdout, res.stderr)
	}

	out = filepath.Join(t.TempDir(), "from-sftp")
	res = run(t, s.env, "restore", "-dir-out", out, sshd.URL(sftpDir))
	if res.code != 0 {
		t.Fatalf("restore of the sftp prefix: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	checkRestoredDir(t, out, want)
}
