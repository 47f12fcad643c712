package integration

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestCLILitestreamHabits: `databases` lists the config's databases and
// replicas; `wal` and `generations` say what Understudy calls them and exit
// non-zero, instead of urfave's "No help topic for 'wal'".
func TestCLILitestreamHabits(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.db"), filepath.Join(dir, "b.db")
	cfg := writeConfig(t,
		"dbs:",
		"  - path: "+a,
		"    replicas:",
		"      - name: backup",
		"        url: file://"+filepath.Join(dir, "ra"),
		"      - name: offsite",
		"        url: s3://bucket/a?endpoint=http://127.0.0.1:1&region=us-east-1",
		"  - path: "+b,
		"    replicas:",
		"      - url: file://"+filepath.Join(dir, "rb"),
	)
	res := run(t, nil, "databases", "-config", cfg)
	if res.code != 0 {
		t.Fatalf("databases: exit %d: %s", res.code, res.stderr)
	}
	wantAll(t, res.stdout, "PATH", "REPLICA", a, "backup", "file://"+filepath.Join(dir, "ra"), "offsite", "s3://bucket/a", b, "file://"+filepath.Join(dir, "rb"))
	if n := strings.Count(res.stdout, a); n != 1 {
		t.Errorf("database %s listed %d times, want once:\n%s", a, n, res.stdout)
	}
	for cmd, want := range map[string]string{"wal": "Understudy calls this `ltx`", "generations": "Understudy has no generations"} {
		res := run(t, nil, cmd, "-config", cfg, a)
		if res.code == 0 {
			t.Errorf("%s exited 0", cmd)
		}
		wantAll(t, res.stderr, want)
		if strings.Contains(res.stderr, "No help topic") {
			t.Errorf("%s: %s", cmd, res.stderr)
		}
	}
}
