package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeConfig writes lines as a config file in a fresh directory and
// returns its path.
func writeConfig(t *testing.T, lines ...string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "understudy.yml")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestCLIConfigSyntaxErrorLine: a YAML syntax error is reported at the line
// that holds it. The YAML library names the line where the enclosing
// mapping begins, so a bad key on line 5 came out as line 1.
func TestCLIConfigSyntaxErrorLine(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t,
		"dbs:",
		"  - path: "+filepath.Join(dir, "app.db"),
		"    replicas:",
		"      - url: file://"+filepath.Join(dir, "replica"),
		"     sync-interval: 1s", // one space short of the replica's keys
	)
	for _, cmd := range []string{"replicate", "follow", "status"} {
		res := run(t, nil, cmd, "-config", cfg)
		want := cfg + ":5: invalid YAML: did not find expected key"
		if res.code == 0 || !strings.Contains(res.stderr, want) {
			t.Errorf("%s: exit %d, stderr %q; want non-zero and %q", cmd, res.code, res.stderr, want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "replica")); !os.IsNotExist(err) {
		t.Errorf("the replica directory exists after a config error (%v)", err)
	}
}
