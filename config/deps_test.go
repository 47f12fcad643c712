package config

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImportsNoUnderstudyPackage pins config at the bottom of the dependency
// order of DESIGN.md (cmd -> promote -> primary, follower -> lease ->
// internal/... -> config): the roles read their defaults from config, so
// config importing any of them (it once imported primary for its defaults)
// would put a role below the package every role depends on.
func TestImportsNoUnderstudyPackage(t *testing.T) {
	const self = "github.com/understudy-db/understudy/config"
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to list config's imports: %v", err)
	}
	out, err := exec.Command(goBin, "list", "-deps", "-f", "{{.ImportPath}}", self).CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps %s: %v\n%s", self, err, out)
	}
	var bad []string
	for _, p := range strings.Fields(string(out)) {
		if p != self && strings.HasPrefix(p, "github.com/understudy-db/understudy/") {
			bad = append(bad, p)
		}
	}
	if len(bad) > 0 {
		t.Errorf("config depends on %s; it must import no Understudy package (move what it needs into config)", strings.Join(bad, ", "))
	}
}
