package config

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/understudy-db/understudy/"

// goList runs go list with args and returns its output.
func goList(t *testing.T, args ...string) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to list imports: %v", err)
	}
	out, err := exec.Command(goBin, append([]string{"list"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("go list %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestImportsNoUnderstudyPackage pins config at the bottom of the dependency
// order of DESIGN.md (cmd -> promote -> primary, follower -> lease ->
// internal/... -> config): the roles read their defaults from config, so
// config importing any of them (it once imported primary for its defaults)
// would put a role below the package every role depends on.
func TestImportsNoUnderstudyPackage(t *testing.T) {
	const self = module + "config"
	var bad []string
	for _, p := range strings.Fields(goList(t, "-deps", "-f", "{{.ImportPath}}", self)) {
		if p != self && strings.HasPrefix(p, module) {
			bad = append(bad, p)
		}
	}
	if len(bad) > 0 {
		t.Errorf("config depends on %s; it must import no Understudy package (move what it needs into config)", strings.Join(bad, ", "))
	}
}

// layer is the place of each top-level directory in DESIGN.md's order; a
// package imports only from lower layers or from its own directory
// (internal/restore may use internal/storage). primary and follower share a
// layer: roles never import each other except through promote. Directories
// not listed (integration, bench, scripts) are tests and tools, outside it.
var layer = map[string]int{"config": 0, "internal": 1, "lease": 2, "primary": 3, "follower": 3, "promote": 4, "cmd": 5}

// TestDependencyOrder checks every package's imports against DESIGN.md's
// order.
func TestDependencyOrder(t *testing.T) {
	out := goList(t, "-f", "{{.ImportPath}} {{join .Imports \" \"}}", module+"...")
	checked := 0
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		from, ok := topDir(f[0])
		if !ok {
			continue
		}
		checked++
		for _, imp := range f[1:] {
			to, ok := topDir(imp)
			if ok && to != from && layer[to] >= layer[from] {
				t.Errorf("%s imports %s: against the order cmd -> promote -> primary, follower -> lease -> internal/... -> config (DESIGN.md)",
					strings.TrimPrefix(f[0], module), strings.TrimPrefix(imp, module))
			}
		}
	}
	if checked < len(layer) {
		t.Fatalf("checked %d packages; go list gave:\n%s", checked, out)
	}
}

// topDir is the layered top-level directory of an Understudy package.
func topDir(pkg string) (string, bool) {
	rest, ok := strings.CutPrefix(pkg, module)
	if !ok {
		return "", false
	}
	top, _, _ := strings.Cut(rest, "/")
	_, layered := layer[top]
	return top, layered
}

// TestTopDir pins which packages are layered.
func TestTopDir(t *testing.T) {
	for _, tc := range []struct {
		pkg  string
		want string
	}{
		{module + "config", "config"},
		{module + "internal/storage/s3", "internal"},
		{module + "lease/leasetest", "lease"},
		{module + "cmd/understudy", "cmd"},
		{module + "integration/harness", ""},
		{"github.com/superfly/ltx", ""},
	} {
		got, ok := topDir(tc.pkg)
		if !ok {
			got = ""
		}
		if got != tc.want {
			t.Errorf("topDir(%s) = %q, want %q", tc.pkg, got, tc.want)
		}
	}
}
