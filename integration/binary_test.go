// Package integration runs the real understudy binary against real SQLite
// files, a real S3-compatible server (versitygw) and, later, a real Consul
// agent. Nothing here is mocked: these tests are the proof that a feature works.
package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/understudy-db/understudy/integration/harness"
)

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// understudyBin returns the binary under test: $UNDERSTUDY_BIN (set by
// `make test`, which builds ./bin/understudy first), else a fresh build.
func understudyBin(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("UNDERSTUDY_BIN"); p != "" {
		return p
	}
	buildOnce.Do(func() {
		root, err := harness.RepoRoot()
		if err != nil {
			buildErr = err
			return
		}
		dir, err := os.MkdirTemp("", "understudy-bin-")
		if err != nil {
			buildErr = err
			return
		}
		builtBin = filepath.Join(dir, "understudy")
		cmd := exec.Command("go", "build", "-o", builtBin, "./cmd/understudy")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_CFLAGS=-O2 -g -DSQLITE_ENABLE_DBPAGE_VTAB")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = &buildError{err: err, out: string(out)}
		}
	})
	if buildErr != nil {
		t.Fatalf("build understudy: %v", buildErr)
	}
	return builtBin
}

type buildError struct {
	err error
	out string
}

func (e *buildError) Error() string { return e.err.Error() + "\n" + e.out }

// result is the outcome of one finished command.
type result struct {
	stdout, stderr string
	code           int
}

// run runs understudy with args to completion (bounded by a minute).
func run(t testing.TB, env []string, args ...string) result {
	t.Helper()
	return runBinary(t, understudyBin(t), env, args...)
}

// runBinary is run for a given binary (the packaged one).
func runBinary(t testing.TB, bin string, env []string, args ...string) result {
	t.Helper()
	res, err := runCmd(bin, args, func(cmd *exec.Cmd) { cmd.Env = append(os.Environ(), env...) })
	if err != nil {
		t.Fatalf("run %s %s: %v", bin, strings.Join(args, " "), err)
	}
	return res
}

// runCmd runs bin with args to completion, bounded by a minute, once prepare
// has set up the command. An exit status is in the result; the error is one
// of running the binary at all.
func runCmd(bin string, args []string, prepare func(*exec.Cmd)) (result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	prepare(cmd)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := result{stdout: stdout.String(), stderr: stderr.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		res.code, err = ee.ExitCode(), nil
	}
	return res, err
}

// daemon is a long-running understudy process.
type daemon struct {
	cmd     *exec.Cmd
	out     *syncBuffer
	done    chan struct{}
	waitErr error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// start starts understudy in the background; it is killed at test end.
func start(t testing.TB, env []string, args ...string) *daemon {
	t.Helper()
	return startBinary(t, understudyBin(t), env, args...)
}

// startBinary is start for a given binary (the packaged one).
func startBinary(t testing.TB, bin string, env []string, args ...string) *daemon {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	d := &daemon{cmd: cmd, out: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = d.out, d.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	go func() { d.waitErr = cmd.Wait(); close(d.done) }()
	t.Cleanup(func() {
		d.kill()
		if t.Failed() {
			t.Logf("understudy %s output:\n%s", strings.Join(args, " "), tailLines(d.out.String(), 60))
		}
	})
	return d
}

// kill sends SIGKILL and waits for the process to go.
func (d *daemon) kill() {
	_ = d.cmd.Process.Kill()
	<-d.done
}

// stop sends sig and waits up to timeout for exit, returning the exit code.
func (d *daemon) stop(t testing.TB, sig os.Signal, timeout time.Duration) int {
	t.Helper()
	_ = d.cmd.Process.Signal(sig)
	return d.wait(t, timeout)
}

func (d *daemon) wait(t testing.TB, timeout time.Duration) int {
	t.Helper()
	select {
	case <-d.done:
	case <-time.After(timeout):
		t.Fatalf("understudy did not exit within %s; output:\n%s", timeout, tailLines(d.out.String(), 40))
	}
	return d.cmd.ProcessState.ExitCode()
}

func (d *daemon) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// eventually polls cond every 50ms until it is true or timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// statusDB reads the one database's entry of a daemon's /status on addr.
func statusDB[T any](addr string) (T, error) {
	var zero T
	var doc struct {
		DBs []T `json:"dbs"`
	}
	if err := getStatus(addr, &doc); err != nil {
		return zero, err
	}
	if len(doc.DBs) != 1 {
		return zero, fmt.Errorf("/status at %s lists %d databases, want 1", addr, len(doc.DBs))
	}
	return doc.DBs[0], nil
}

// getStatus decodes a daemon's /status on addr into doc.
func getStatus(addr string, doc any) error {
	resp, err := http.Get("http://" + addr + "/status")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(doc)
}
