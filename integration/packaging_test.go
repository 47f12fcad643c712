package integration

// Tests of packaging/: the sample config against the real parser, the .deb
// that packaging/build-deb.sh builds (contents, control fields, maintainer
// scripts, the packaged binary), the systemd units in it (systemd-analyze),
// and the sample config driving the packaged binary through both roles the
// way the units start it.

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/superfly/ltx"
	"github.com/understudy-db/understudy/config"
	"github.com/understudy-db/understudy/integration/harness"
)

// The shipped files, relative to the repository root.
const (
	sampleConfigPath = "packaging/understudy.yml"
	buildDebScript   = "packaging/build-deb.sh"
)

// finalSyncBudget is how long the daemon may spend shipping on SIGTERM: the
// one-minute bound per database of cmd/understudy (finalSyncTimeout). The
// units' TimeoutStopSec must exceed it, or systemd kills the final sync.
const finalSyncBudget = time.Minute

func repoPath(t testing.TB, rel string) string {
	t.Helper()
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(root, rel)
}

// commentedSetting is a line of the sample config that holds a setting left
// out on purpose: "#key: value" (or "#  key: value" inside such a block),
// where prose comments never start with a lower-case key and a colon.
var commentedSetting = regexp.MustCompile(`^(\s*)#(\s*)((?:- )?[a-z][a-z0-9-]*:(?:\s.*)?)$`)

// uncommentSettings removes the "#" of the commented-out settings whose
// block starts with one of keys ("follower", "lease", ...), or of all of them
// when keys is empty. It returns the new text and the keys of the blocks it
// enabled, in order.
func uncommentSettings(sample string, keys ...string) (string, []string) {
	var out, enabled []string
	inBlock, blockIndent := false, 0
	for _, line := range strings.Split(sample, "\n") {
		m := commentedSetting.FindStringSubmatch(line)
		if m == nil {
			inBlock = false
			out = append(out, line)
			continue
		}
		indent, gap, setting := m[1], m[2], m[3]
		key := strings.TrimPrefix(setting[:strings.Index(setting, ":")], "- ")
		switch {
		case gap == "" && (len(keys) == 0 || slices.Contains(keys, key)):
			inBlock, blockIndent = true, len(indent)
			enabled = append(enabled, key)
		case inBlock && gap != "" && len(indent) == blockIndent:
			// a line of the block being enabled
		default:
			inBlock = false
			out = append(out, line)
			continue
		}
		out = append(out, indent+gap+setting)
	}
	return strings.Join(out, "\n"), enabled
}

func TestUncommentSettings(t *testing.T) {
	const sample = `# Prose: not a setting.
#top: 1
dbs:
  - path: /x
    #follower:
    #  replica: s3   # a comment
    # Prose again.
    #lease:
    #  type: consul
    #  consul:
    #    ttl: 10s
`
	tests := []struct {
		name        string
		keys        []string
		wantEnabled []string
		wantLines   []string // must appear as whole lines
		wantKept    []string // must stay commented
	}{
		{"all", nil, []string{"top", "follower", "lease"},
			[]string{"top: 1", "    follower:", "      replica: s3   # a comment", "    lease:", "        ttl: 10s"},
			[]string{"# Prose: not a setting.", "    # Prose again."}},
		{"follower only", []string{"follower"}, []string{"follower"},
			[]string{"    follower:", "      replica: s3   # a comment"},
			[]string{"#top: 1", "    #lease:", "    #  type: consul", "    #    ttl: 10s"}},
		{"unknown key", []string{"nope"}, nil, nil, []string{"#top: 1", "    #follower:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, enabled := uncommentSettings(sample, tt.keys...)
			if !slices.Equal(enabled, tt.wantEnabled) {
				t.Errorf("enabled %q, want %q", enabled, tt.wantEnabled)
			}
			lines := strings.Split(got, "\n")
			for _, l := range append(slices.Clone(tt.wantLines), tt.wantKept...) {
				if !slices.Contains(lines, l) {
					t.Errorf("line %q missing from:\n%s", l, got)
				}
			}
		})
	}
}

// TestSampleConfig loads packaging/understudy.yml with the real parser, as
// shipped and with its commented-out sections enabled, so that the sample
// cannot drift from what config.Load accepts.
func TestSampleConfig(t *testing.T) {
	raw, err := os.ReadFile(repoPath(t, sampleConfigPath))
	if err != nil {
		t.Fatal(err)
	}
	type env struct{ key, secret, token string }
	tests := []struct {
		name        string
		enable      []string // blocks to uncomment; nil = none
		all         bool     // uncomment every commented setting
		env         env
		wantEnabled []string
		check       func(t *testing.T, c *config.Config)
	}{
		{
			name: "as shipped, credentials from the environment",
			env:  env{"AKIDSAMPLE", "sample-secret", ""},
			check: func(t *testing.T, c *config.Config) {
				db := sampleDB(t, c)
				s3 := db.Replica("s3")
				if s3 == nil || s3.Type != config.TypeS3 || s3.Bucket != "my-bucket" || s3.Path != "app" || s3.Region != "us-east-1" {
					t.Fatalf("replica s3 = %v, want s3://my-bucket/app in us-east-1", s3)
				}
				if s3.AccessKeyID != "AKIDSAMPLE" || s3.SecretAccessKey != "sample-secret" {
					t.Errorf("replica s3 credentials not taken from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY")
				}
				local := db.Replica("local")
				if local == nil || local.Type != config.TypeFile || local.Path != "/var/backups/understudy/app" {
					t.Errorf("replica local = %v, want file:///var/backups/understudy/app", local)
				}
				if db.Follower != nil || db.Lease != nil {
					t.Errorf("follower %v / lease %v enabled in the shipped sample; a primary must not follow", db.Follower, db.Lease)
				}
				if c.AccessKeyID != "" {
					t.Errorf("top-level access-key-id is set in the shipped sample")
				}
			},
		},
		{
			name: "as shipped, no credentials in the environment",
			check: func(t *testing.T, c *config.Config) {
				// Both expand to nothing: the replica falls back to the AWS
				// sources instead of failing on a half pair.
				if s3 := sampleDB(t, c).Replica("s3"); s3 == nil || s3.AccessKeyID != "" || s3.SecretAccessKey != "" {
					t.Errorf("replica s3 has credentials without any in the environment")
				}
			},
		},
		{
			name:        "follower section enabled (a standby)",
			enable:      []string{"follower"},
			wantEnabled: []string{"follower"},
			check: func(t *testing.T, c *config.Config) {
				f := sampleDB(t, c).Follower
				if f == nil || f.Replica != "s3" || f.PollInterval != time.Second || f.AutoPromote {
					t.Errorf("follower = %+v, want replica s3, poll 1s, no auto-promote", f)
				}
			},
		},
		{
			name:        "every commented setting enabled",
			all:         true,
			env:         env{"AKIDSAMPLE", "sample-secret", "consul-token"},
			wantEnabled: []string{"access-key-id", "secret-access-key", "follower", "lease"},
			check: func(t *testing.T, c *config.Config) {
				if c.AccessKeyID != "AKIDSAMPLE" || c.SecretAccessKey != "sample-secret" {
					t.Errorf("top-level credentials not taken from the environment")
				}
				l := sampleDB(t, c).Lease
				if l == nil || l.Type != "consul" || l.Node != "host-a" || l.OnDemote != "halt" || l.Consul == nil {
					t.Fatalf("lease = %+v, want consul lease for node host-a", l)
				}
				if l.Consul.Address != "127.0.0.1:8500" || l.Consul.Token != "consul-token" || l.Consul.Mode != config.ConsulModeKV || l.Consul.TTL != 2*time.Second {
					t.Errorf("lease.consul = %v, want 127.0.0.1:8500, token from CONSUL_HTTP_TOKEN, mode kv, ttl 2s", l.Consul)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("AWS_ACCESS_KEY_ID", tt.env.key)
			t.Setenv("AWS_SECRET_ACCESS_KEY", tt.env.secret)
			t.Setenv("CONSUL_HTTP_TOKEN", tt.env.token)
			text := string(raw)
			var enabled []string
			switch {
			case tt.all:
				text, enabled = uncommentSettings(text)
			case tt.enable != nil:
				text, enabled = uncommentSettings(text, tt.enable...)
			}
			if !slices.Equal(enabled, tt.wantEnabled) {
				t.Fatalf("the sample's commented-out settings are %q, want %q: keep them as \"#key:\" blocks", enabled, tt.wantEnabled)
			}
			path := filepath.Join(t.TempDir(), "understudy.yml")
			writeFile(t, path, text)
			c, err := config.Load(path, true)
			if err != nil {
				t.Fatalf("config.Load of %s (%s): %v\n%s", sampleConfigPath, tt.name, err, text)
			}
			tt.check(t, c)
		})
	}
}

func sampleDB(t *testing.T, c *config.Config) *config.DB {
	t.Helper()
	if len(c.DBs) != 1 || c.DBs[0].Path != "/var/lib/app/app.db" || c.DBs[0].Name() != "app" {
		t.Fatalf("sample dbs = %v, want one db /var/lib/app/app.db named app", c.DBs)
	}
	return c.DBs[0]
}

// requireDpkgDeb returns dpkg-deb's path. Without it the test is skipped,
// except under CI=true on Debian, where dpkg (and so dpkg-deb) is always
// installed and a skip would hide a broken machine.
func requireDpkgDeb(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("dpkg-deb")
	if err == nil {
		return p
	}
	msg := "dpkg-deb not found: the .deb can only be built and checked where dpkg is installed (Debian, Ubuntu)"
	if _, derr := os.Stat("/etc/debian_version"); derr == nil && os.Getenv("CI") == "true" {
		t.Fatal(msg + "; this is Debian, so dpkg-deb should be there")
	}
	t.Skip(msg)
	return ""
}

// builtDeb is the package built by the script, unpacked.
type builtDeb struct {
	path    string // the .deb
	root    string // its files (dpkg-deb -x)
	control string // its control files (dpkg-deb -e)
}

// buildDeb runs packaging/build-deb.sh on the binary under test (gzip, which
// is quicker than the default xz) into a temp directory and unpacks it.
func buildDeb(t *testing.T) builtDeb {
	t.Helper()
	dpkgDeb := requireDpkgDeb(t)
	bin := understudyBin(t)
	dir := t.TempDir()
	cmd := exec.Command("bash", repoPath(t, buildDebScript))
	cmd.Dir = repoPath(t, ".")
	cmd.Env = append(os.Environ(), "BIN="+bin, "OUT_DIR="+filepath.Join(dir, "dist"), "DEB_COMPRESS=gzip")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v\n%s", buildDebScript, err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	d := builtDeb{path: lines[len(lines)-1], root: filepath.Join(dir, "root"), control: filepath.Join(dir, "control")}
	if !strings.HasSuffix(d.path, ".deb") || filepath.Dir(d.path) != filepath.Join(dir, "dist") {
		t.Fatalf("%s printed %q as the package, want a .deb in OUT_DIR", buildDebScript, d.path)
	}
	for _, args := range [][]string{{"-x", d.path, d.root}, {"-e", d.path, d.control}} {
		if out, err := exec.Command(dpkgDeb, args...).CombinedOutput(); err != nil {
			t.Fatalf("dpkg-deb %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	return d
}

func dpkgDebOutput(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("dpkg-deb", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("dpkg-deb %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestDebPackage(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: building and checking the .deb is an integration test (make test runs it)")
	}
	deb := buildDeb(t)

	t.Run("contents", func(t *testing.T) {
		// "mode owner/group size date time path" per entry.
		entries := map[string]string{}
		for _, line := range strings.Split(dpkgDebOutput(t, "--contents", deb.path), "\n") {
			f := strings.Fields(line)
			if len(f) >= 6 {
				entries[strings.TrimPrefix(f[5], ".")] = f[0] + " " + f[1]
			}
		}
		want := map[string]string{
			"/usr/bin/understudy":                                        "-rwxr-xr-x root/root",
			"/lib/systemd/system/understudy-replicate.service":           "-rw-r--r-- root/root",
			"/lib/systemd/system/understudy-follow.service":              "-rw-r--r-- root/root",
			"/etc/understudy.yml":                                        "-rw-r--r-- root/root",
			"/etc/default/understudy":                                    "-rw------- root/root", // secrets
			"/usr/share/doc/understudy/README.md":                        "-rw-r--r-- root/root",
			"/usr/share/doc/understudy/copyright":                        "-rw-r--r-- root/root",
			"/usr/share/doc/understudy/examples/understudy.yml":          "-rw-r--r-- root/root",
			"/usr/share/doc/understudy/examples/understudy-exec.service": "-rw-r--r-- root/root",
		}
		for path, mode := range want {
			if got, ok := entries[path]; !ok {
				t.Errorf("package lacks %s", path)
			} else if got != mode {
				t.Errorf("%s is %s, want %s", path, got, mode)
			}
		}
		sample, err := os.ReadFile(repoPath(t, sampleConfigPath))
		if err != nil {
			t.Fatal(err)
		}
		if got := mustRead(t, filepath.Join(deb.root, "etc/understudy.yml")); got != string(sample) {
			t.Errorf("/etc/understudy.yml in the package differs from %s", sampleConfigPath)
		}
	})

	t.Run("control", func(t *testing.T) {
		info := dpkgDebOutput(t, "--info", deb.path)
		fields := map[string]string{}
		for _, line := range strings.Split(info, "\n") {
			// Control fields are indented by one space; continuation lines by two.
			if k, v, ok := strings.Cut(strings.TrimPrefix(line, " "), ": "); ok && !strings.HasPrefix(line, "  ") {
				fields[k] = v
			}
		}
		arch, err := exec.Command("dpkg", "--print-architecture").Output()
		if err != nil {
			t.Fatalf("dpkg --print-architecture: %v", err)
		}
		checks := []struct {
			field string
			ok    func(string) bool
			want  string
		}{
			{"Package", eq("understudy"), "understudy"},
			{"Version", regexp.MustCompile(`^[0-9][A-Za-z0-9.+~]*$`).MatchString, "a Debian version from git describe or 0.0.0~dev"},
			{"Architecture", eq(strings.TrimSpace(string(arch))), "dpkg --print-architecture"},
			{"Maintainer", eq("Understudy developers"), "Understudy developers"},
			{"Depends", regexp.MustCompile(`^libc6( \(>= [0-9.]+\))?$`).MatchString, "libc6 (the only library the binary links)"},
			{"Description", func(s string) bool { return strings.Contains(s, "SQLite") }, "a one-line summary"},
			{"Installed-Size", regexp.MustCompile(`^[1-9][0-9]*$`).MatchString, "a size in KiB"},
		}
		for _, c := range checks {
			if v, ok := fields[c.field]; !ok || !c.ok(v) {
				t.Errorf("control field %s = %q, want %s\n%s", c.field, v, c.want, info)
			}
		}
		conffiles := strings.Fields(mustRead(t, filepath.Join(deb.control, "conffiles")))
		for _, f := range []string{"/etc/understudy.yml", "/etc/default/understudy"} {
			if !slices.Contains(conffiles, f) {
				t.Errorf("conffiles %q lacks %s: an upgrade would overwrite the admin's edits", conffiles, f)
			}
		}
	})

	t.Run("maintainer scripts", func(t *testing.T) {
		// The package must never enable, start, stop or restart a service: which
		// role runs, and when a primary stops, is the operator's call.
		forbidden := regexp.MustCompile(`systemctl\s+(\S+\s+)*(enable|start|stop|restart|try-restart|reload-or-restart)\b|deb-systemd-(invoke|helper)|invoke-rc\.d`)
		quoted := regexp.MustCompile(`"[^"]*"|'[^']*'`)
		for _, name := range []string{"postinst", "prerm", "postrm"} {
			path := filepath.Join(deb.control, name)
			st, err := os.Stat(path)
			if err != nil {
				t.Errorf("package has no %s: %v", name, err)
				continue
			}
			if st.Mode()&0o111 == 0 {
				t.Errorf("%s is not executable (%s)", name, st.Mode())
			}
			text := mustRead(t, path)
			if !strings.Contains(text, "systemctl daemon-reload") {
				t.Errorf("%s does not run systemctl daemon-reload", name)
			}
			for _, line := range strings.Split(text, "\n") {
				// Code only: not comments, not messages in quotes.
				code, _, _ := strings.Cut(line, "#")
				code = quoted.ReplaceAllString(code, `""`)
				if forbidden.MatchString(code) {
					t.Errorf("%s changes a service's state: %q", name, strings.TrimSpace(line))
				}
			}
			if out, err := exec.Command("sh", "-n", path).CombinedOutput(); err != nil {
				t.Errorf("sh -n %s: %v\n%s", name, err, out)
			}
		}
	})

	t.Run("binary runs and agrees on the version", func(t *testing.T) {
		out, err := exec.Command(filepath.Join(deb.root, "usr/bin/understudy"), "version").CombinedOutput()
		v, ok := strings.CutPrefix(strings.TrimSpace(string(out)), "understudy ")
		if err != nil || !ok {
			t.Fatalf("packaged understudy version: %v: %q", err, out)
		}
		info := dpkgDebOutput(t, "--field", deb.path, "Version")
		if want := debVersionHint(v); !strings.Contains(info, want) {
			t.Errorf("package version %q does not carry the binary's version %q (want it to contain %q)", strings.TrimSpace(info), v, want)
		}
	})

	t.Run("units", func(t *testing.T) {
		for _, u := range []struct{ name, exec string }{
			{"understudy-replicate.service", "/usr/bin/understudy replicate -config /etc/understudy.yml"},
			{"understudy-follow.service", "/usr/bin/understudy follow -config /etc/understudy.yml"},
		} {
			t.Run(u.name, func(t *testing.T) {
				unit := parseUnit(t, filepath.Join(deb.root, "lib/systemd/system", u.name))
				checkUnit(t, unit, u.exec, true)
			})
		}
		t.Run("understudy-exec.service (example)", func(t *testing.T) {
			unit := parseUnit(t, filepath.Join(deb.root, "usr/share/doc/understudy/examples/understudy-exec.service"))
			checkUnit(t, unit, `/usr/bin/understudy replicate -config /etc/understudy.yml -exec "/usr/local/bin/myapp --serve"`, false)
			// Only Understudy may get systemd's SIGTERM; it forwards it to the app.
			if got := unit.get("Service", "KillMode"); got != "mixed" {
				t.Errorf("KillMode=%s, want mixed: the app would be signalled twice", got)
			}
		})
	})

	t.Run("systemd-analyze verify", func(t *testing.T) {
		sa, err := exec.LookPath("systemd-analyze")
		if err != nil {
			t.Skip("systemd-analyze not found: install systemd to verify the units")
		}
		// verify wants ExecStart's binary to exist, so point the units at the
		// unpacked one. It exits 0 on unknown keys and bad values and only
		// prints them, so any line about our units is a failure.
		dir := t.TempDir()
		var units []string
		for _, src := range []string{
			"lib/systemd/system/understudy-replicate.service",
			"lib/systemd/system/understudy-follow.service",
			"usr/share/doc/understudy/examples/understudy-exec.service",
		} {
			text := strings.ReplaceAll(mustRead(t, filepath.Join(deb.root, src)), "/usr/bin/understudy", filepath.Join(deb.root, "usr/bin/understudy"))
			dst := filepath.Join(dir, filepath.Base(src))
			writeFile(t, dst, text)
			units = append(units, dst)
		}
		out, err := exec.Command(sa, append([]string{"verify", "--man=no"}, units...)...).CombinedOutput()
		var complaints []string
		for _, line := range strings.Split(string(out), "\n") {
			if strings.Contains(line, "understudy") {
				complaints = append(complaints, line)
			}
		}
		if err != nil || len(complaints) > 0 {
			t.Errorf("systemd-analyze verify: %v\n%s", err, strings.Join(complaints, "\n"))
		}
	})

	t.Run("installs, upgrades keeping config edits, purges", func(t *testing.T) {
		// Into an empty dpkg database under a temp root. The maintainer
		// scripts then run on this machine (dpkg cannot chroot without root),
		// so not where systemd runs: they would reload it.
		if _, err := os.Stat("/run/systemd/system"); err == nil {
			t.Skip("systemd is running here; the maintainer scripts would reload it")
		}
		root := t.TempDir()
		for _, d := range []string{"info", "updates", "triggers"} {
			if err := os.MkdirAll(filepath.Join(root, "var/lib/dpkg", d), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		writeFile(t, filepath.Join(root, "var/lib/dpkg/status"), "")
		dpkg := func(args ...string) {
			t.Helper()
			// --force-depends: the temp root has no libc6 package.
			base := []string{"--root=" + root, "--force-script-chrootless", "--force-not-root", "--force-depends", "--force-confold", "--log=/dev/null"}
			if out, err := exec.Command("dpkg", append(base, args...)...).CombinedOutput(); err != nil {
				t.Fatalf("dpkg %s: %v\n%s", strings.Join(args, " "), err, out)
			}
		}
		conf := filepath.Join(root, "etc/understudy.yml")
		dpkg("-i", deb.path)
		edited := mustRead(t, conf) + "# edited by the admin\n"
		writeFile(t, conf, edited)
		dpkg("-i", deb.path) // the same version again, as an upgrade does
		if mustRead(t, conf) != edited {
			t.Errorf("reinstalling replaced the edited /etc/understudy.yml")
		}
		dpkg("--purge", "understudy")
		for _, f := range []string{"usr/bin/understudy", "etc/understudy.yml", "etc/default/understudy", "lib/systemd/system/understudy-replicate.service"} {
			if _, err := os.Stat(filepath.Join(root, f)); !os.IsNotExist(err) {
				t.Errorf("/%s is left after purge (%v)", f, err)
			}
		}
	})

	t.Run("sample config drives both roles", func(t *testing.T) {
		testSampleConfigRoles(t, filepath.Join(deb.root, "usr/bin/understudy"), mustRead(t, filepath.Join(deb.root, "etc/understudy.yml")))
	})
}

// debVersionHint is the part of the binary's version (as the Makefile
// stamps it from git describe) that the package version must contain.
func debVersionHint(binVersion string) string {
	if m := regexp.MustCompile(`^([0-9a-f]{7,40})(-dirty)?$`).FindStringSubmatch(binVersion); m != nil {
		return "0.0.0~dev+g" + m[1] // an untagged commit
	}
	if strings.HasPrefix(binVersion, "v") {
		release, _, _ := strings.Cut(strings.TrimPrefix(binVersion, "v"), "-")
		return release
	}
	return "0.0.0~dev"
}

func eq(want string) func(string) bool { return func(s string) bool { return s == want } }

// unitFile is a systemd unit: section -> key -> values in order.
type unitFile map[string]map[string][]string

// get is the last value of key (systemd's rule for single-valued keys).
func (u unitFile) get(section, key string) string {
	v := u[section][key]
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

func parseUnit(t *testing.T, path string) unitFile {
	t.Helper()
	u := unitFile{}
	section := ""
	sc := bufio.NewScanner(strings.NewReader(mustRead(t, path)))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = strings.Trim(line, "[]")
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s: cannot parse %q", path, line)
			}
			u[section][k] = append(u[section][k], v)
		}
	}
	return u
}

// checkUnit checks what every Understudy unit needs: the command, restarts
// on failure, SIGTERM with time for the final sync, network first, an
// [Install] section; and with sandboxed, the write access the daemon needs
// under ProtectSystem=strict.
func checkUnit(t *testing.T, u unitFile, wantExec string, sandboxed bool) {
	t.Helper()
	want := []struct{ section, key, value string }{
		{"Service", "ExecStart", wantExec},
		{"Service", "Restart", "on-failure"},
		{"Service", "KillSignal", "SIGTERM"},
		{"Unit", "After", "network-online.target"},
		{"Unit", "Wants", "network-online.target"},
		{"Install", "WantedBy", "multi-user.target"},
	}
	if sandboxed {
		want = append(want,
			struct{ section, key, value string }{"Service", "ProtectSystem", "strict"},
			struct{ section, key, value string }{"Service", "NoNewPrivileges", "yes"})
	}
	for _, w := range want {
		if got := u.get(w.section, w.key); got != w.value {
			t.Errorf("[%s] %s=%s, want %s", w.section, w.key, got, w.value)
		}
	}
	if stop, err := time.ParseDuration(u.get("Service", "TimeoutStopSec")); err != nil || stop <= finalSyncBudget {
		t.Errorf("TimeoutStopSec=%s: want a Go-style duration (150s) longer than the final sync's %s", u.get("Service", "TimeoutStopSec"), finalSyncBudget)
	}
	if sandboxed && !slices.Contains(u["Service"]["ReadWritePaths"], "/var/lib") {
		t.Errorf("ReadWritePaths=%q lacks /var/lib: the daemon could not write beside the database", u["Service"]["ReadWritePaths"])
	}
}

// sampleRewrites points the shipped sample at a test's files and servers.
// Each old string must occur exactly once, so that a changed sample fails
// here rather than silently testing something else.
func sampleRewrites(t *testing.T, sample string, pairs ...string) string {
	t.Helper()
	for i := 0; i < len(pairs); i += 2 {
		if n := strings.Count(sample, pairs[i]); n != 1 {
			t.Fatalf("the sample config has %q %d times, want once: update this test with the sample", pairs[i], n)
		}
		sample = strings.Replace(sample, pairs[i], pairs[i+1], 1)
	}
	return sample
}

// testSampleConfigRoles runs bin the way the units do (`replicate -config`,
// then `follow -config`) on the shipped sample with only its locations
// changed: the database, the bucket on a real versitygw with credentials from
// the environment as the sample expects, the file replica, the address.
func testSampleConfigRoles(t *testing.T, bin, sample string) {
	s3 := harness.StartVersityGW(t)
	bucket := s3.NewBucket(t)
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "app.db")
	backups := filepath.Join(dir, "backups", "app")
	s3URL := fmt.Sprintf("s3://%s/app?region=us-east-1&endpoint=%s&force-path-style=true", bucket, s3.Endpoint)
	primaryAddr := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	env := []string{"AWS_ACCESS_KEY_ID=" + s3.AccessKey, "AWS_SECRET_ACCESS_KEY=" + s3.SecretKey}

	// writeConfig writes sample with this test's locations as name.yml.
	writeConfig := func(name, sample, addr, db string) string {
		path := filepath.Join(dir, name+".yml")
		writeFile(t, path, sampleRewrites(t, sample,
			"addr: 127.0.0.1:9090", "addr: "+addr,
			"path: /var/lib/app/app.db", "path: "+db,
			"url: s3://my-bucket/app?region=us-east-1", "url: "+s3URL,
			"url: file:///var/backups/understudy/app", "url: file://"+backups,
		))
		return path
	}
	primaryCfg := writeConfig("primary", sample, primaryAddr, dbPath)

	db := openDB(t, dbPath)
	mustExec(t, db, `CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT NOT NULL)`)
	for i := 0; i < 50; i++ {
		mustExec(t, db, `INSERT INTO orders (item) VALUES (?)`, fmt.Sprintf("before start %d", i))
	}
	primary := startBinary(t, bin, env, "replicate", "-config", primaryCfg)
	// Wait for /status to show both replicas holding a TXID: files in the
	// replica directory alone are no sign, since the start-up probe of the
	// store writes one before the daemon handles SIGTERM.
	eventually(t, 30*time.Second, "the primary's first upload to both replicas", func() bool {
		return primary.exited() || replicasShipped(primaryAddr, 2)
	})
	if primary.exited() {
		t.Fatalf("replicate -config (sample) exited:\n%s", tailLines(primary.out.String(), 30))
	}
	for i := 0; i < 50; i++ {
		mustExec(t, db, `INSERT INTO orders (item) VALUES (?)`, fmt.Sprintf("while running %d", i))
	}
	want := snapshotImage(t, db)
	// systemctl stop: SIGTERM, then everything committed is shipped.
	if code := primary.stop(t, syscall.SIGTERM, finalSyncBudget); code != 0 {
		t.Fatalf("replicate exited %d on SIGTERM, want 0:\n%s", code, tailLines(primary.out.String(), 30))
	}
	t.Logf("primary shipped %d files to the file replica; checksum %s", countFiles(t, backups), want.checksum)
	for _, url := range []string{s3URL, "file://" + backups} {
		out := filepath.Join(t.TempDir(), "restored.db")
		res := runBinary(t, bin, env, "restore", "-o", out, url)
		if res.code != 0 {
			t.Fatalf("restore from %s: exit %d\n%s", url, res.code, res.stderr)
		}
		integrityCheck(t, out)
		if got := fileChecksum(t, out); got != want.checksum {
			t.Errorf("restore from %s has checksum %s, want the primary's %s", url, got, want.checksum)
		}
	}

	// A standby: the same sample with its follower: section enabled.
	standby, enabled := uncommentSettings(sample, "follower")
	if !slices.Equal(enabled, []string{"follower"}) {
		t.Fatalf("enabled %q in the sample, want its follower: section", enabled)
	}
	followerPath := filepath.Join(dir, "standby", "app.db")
	if err := os.MkdirAll(filepath.Dir(followerPath), 0o755); err != nil {
		t.Fatal(err)
	}
	followAddr := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	followCfg := writeConfig("standby", standby, followAddr, followerPath)
	follow := startBinary(t, bin, env, "follow", "-config", followCfg)
	var last followStatus
	eventually(t, 60*time.Second, "the standby at the primary's checksum", func() bool {
		if follow.exited() {
			return true
		}
		st, err := statusDB[followStatus](followAddr)
		last = st
		return err == nil && st.Checksum == want.checksum
	})
	if follow.exited() {
		t.Fatalf("follow -config (sample with follower:) exited:\n%s", tailLines(follow.out.String(), 30))
	}
	t.Logf("standby reached TXID %s checksum %s (state %s)", last.TXID, last.Checksum, last.State)
	if code := follow.stop(t, syscall.SIGTERM, finalSyncBudget); code != 0 {
		t.Errorf("follow exited %d on SIGTERM, want 0 (last status %+v):\n%s", code, last, tailLines(follow.out.String(), 30))
	}
}

// replicasShipped reports whether the primary's /status shows n replicas
// that each hold a TXID.
func replicasShipped(addr string, n int) bool {
	db, err := statusDB[struct {
		Replicas []struct {
			TXID ltx.TXID `json:"txid"`
		} `json:"replicas"`
	}](addr)
	if err != nil || len(db.Replicas) != n {
		return false
	}
	for _, r := range db.Replicas {
		if r.TXID == 0 {
			return false
		}
	}
	return true
}
