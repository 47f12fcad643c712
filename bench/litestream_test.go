package bench

// The replicators the primary benchmark runs side by side: understudy, and
// Litestream 0.5 and 0.3 when their binaries are given. They are built
// locally from fetched source and never committed; point the benchmark at
// them with
//
//	UNDERSTUDY_BENCH_LITESTREAM05=/path/to/litestream-0.5.16
//	UNDERSTUDY_BENCH_LITESTREAM03=/path/to/litestream-0.3.13
//
// Each runs with its defaults against a file replica; only the database
// path and the replica directory are configured.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// replicator starts one replication daemon for a database and a file
// replica directory.
type replicator struct {
	name string
	// start returns the running daemon and the address of its Prometheus
	// /metrics ("" when the benchmark reads no metrics from it).
	start func(t *testing.T, db, replica string) (*daemon, string)
}

// Litestream's config for one database with one file replica. 0.5 names
// the replica with `replica:` (its `replicas:` list is deprecated and takes
// one element); 0.3 only knows `replicas:`. Both read `type` and `path`.
const (
	litestream05Config = "dbs:\n  - path: %s\n    replica:\n      type: file\n      path: %s\n"
	litestream03Config = "dbs:\n  - path: %s\n    replicas:\n      - type: file\n        path: %s\n"
)

// replicators lists understudy and every Litestream given in the
// environment, in the order the benchmark runs them.
func replicators(t *testing.T, bin string) []replicator {
	t.Helper()
	out := []replicator{{
		name: "understudy",
		start: func(t *testing.T, db, replica string) (*daemon, string) {
			addr := freeAddr(t)
			return startDaemon(t, exec.Command(bin, "replicate", "-addr", addr, db, "file://"+replica)), addr
		},
	}}
	for _, ls := range []struct{ env, name, config string }{
		{"UNDERSTUDY_BENCH_LITESTREAM05", "Litestream 0.5", litestream05Config},
		{"UNDERSTUDY_BENCH_LITESTREAM03", "Litestream 0.3", litestream03Config},
	} {
		lsBin := os.Getenv(ls.env)
		if lsBin == "" {
			continue
		}
		if _, err := os.Stat(lsBin); err != nil {
			t.Fatalf("%s=%s: %v (point it at a built litestream binary)", ls.env, lsBin, err)
		}
		config := ls.config
		out = append(out, replicator{
			name: ls.name,
			start: func(t *testing.T, db, replica string) (*daemon, string) {
				cfg := filepath.Join(filepath.Dir(db), "litestream.yml")
				if err := os.WriteFile(cfg, []byte(fmt.Sprintf(config, db, replica)), 0o644); err != nil {
					t.Fatal(err)
				}
				return startDaemon(t, exec.Command(lsBin, "replicate", "-config", cfg)), ""
			},
		})
	}
	return out
}

// daemon is a replicator process whose output goes to a log file beside
// the database, so that it does not mix with the benchmark's tables.
type daemon struct {
	cmd    *exec.Cmd
	log    string
	exited chan struct{}
}

func startDaemon(t *testing.T, cmd *exec.Cmd) *daemon {
	t.Helper()
	dir := t.TempDir()
	d := &daemon{cmd: cmd, log: filepath.Join(dir, "daemon.log"), exited: make(chan struct{})}
	f, err := os.Create(d.log)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s: %v", cmd.Path, err)
	}
	go func() { _ = cmd.Wait(); f.Close(); close(d.exited) }()
	t.Cleanup(func() { d.stop(t) })
	return d
}

func (d *daemon) pid() int { return d.cmd.Process.Pid }

// alive fails the test with the daemon's log when it has exited: every
// figure after that would describe nothing.
func (d *daemon) alive(t *testing.T) {
	t.Helper()
	select {
	case <-d.exited:
		b, _ := os.ReadFile(d.log)
		t.Fatalf("%s exited early: %s\n%s", d.cmd.Path, d.cmd.ProcessState, tail(string(b), 2000))
	default:
	}
}

// stop sends SIGTERM and waits up to 30 s (a replicator ships what is left
// first), then kills.
func (d *daemon) stop(t *testing.T) {
	select {
	case <-d.exited:
		return
	default:
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(30 * time.Second):
		t.Logf("%s did not exit within 30 s of SIGTERM; killing it", d.cmd.Path)
		_ = d.cmd.Process.Kill()
		<-d.exited
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// loadAvg is the first three fields of /proc/loadavg: the machine's load
// at the time, printed with every table so that noise can be judged.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
