package integration

import (
	"strings"
	"testing"
)

func TestCLIVersionAndHelp(t *testing.T) {
	res := run(t, nil, "version")
	if res.code != 0 || !strings.HasPrefix(res.stdout, "understudy ") {
		t.Fatalf("version: code %d, stdout %q, stderr %q", res.code, res.stdout, res.stderr)
	}
	res = run(t, nil, "help")
	if res.code != 0 {
		t.Fatalf("help: code %d, stderr %q", res.code, res.stderr)
	}
	for _, want := range []string{"-config", "-no-expand-env", "-log-level", "-log-format"} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("help does not mention %s:\n%s", want, res.stdout)
		}
	}
}

func TestCLIUnknownCommandFails(t *testing.T) {
	res := run(t, nil, "replicat")
	if res.code == 0 {
		t.Fatalf("unknown command exited 0: %q", res.stdout)
	}
}

// TestCLIHelpOneDefaultPerFlag: each flag of each command states its
// default once (follow -h said "(default 1s, at least 50ms) (default: 0s)").
func TestCLIHelpOneDefaultPerFlag(t *testing.T) {
	for _, cmd := range []string{"replicate", "follow", "restore", "status", "promote", "ltx"} {
		res := run(t, nil, cmd, "-h")
		if res.code != 0 {
			t.Fatalf("%s -h: exit %d\n%s", cmd, res.code, res.stderr)
		}
		for _, line := range strings.Split(res.stdout, "\n") {
			if strings.Count(strings.ToLower(line), "default") > 1 {
				t.Errorf("%s -h states two defaults: %s", cmd, strings.TrimSpace(line))
			}
		}
	}
}
