// Package harness starts the real servers integration tests run against —
// versitygw (S3), a Consul dev agent, toxiproxy, fake-gcs-server (GCS),
// Azurite (Azure Blob), sshd (SFTP) — on free loopback ports, waits until
// each is ready, and stops it when the test ends.
//
// The binaries come from $UNDERSTUDY_TOOLS_BIN, else <repo>/.tools/bin
// (installed by `make tools`). A missing binary skips the test with a note to
// run `make tools`, except under CI=true, where it fails: CI must never skip
// silently.
package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// DefaultStartTimeout bounds how long a server may take to become ready.
const DefaultStartTimeout = 30 * time.Second

// ToolsBinEnv names the directory holding the tool binaries.
const ToolsBinEnv = "UNDERSTUDY_TOOLS_BIN"

// ToolsBin returns the directory of the tool binaries: $UNDERSTUDY_TOOLS_BIN,
// else .tools/bin in the repository root (the directory holding go.mod,
// found by walking up from the working directory).
func ToolsBin() (string, error) {
	if d := os.Getenv(ToolsBinEnv); d != "" {
		return d, nil
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, ".tools", "bin"), nil
}

// RepoRoot walks up from the working directory to the directory with go.mod.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("harness: no go.mod above the working directory; set " + ToolsBinEnv)
		}
		dir = parent
	}
}

// Tool returns the path of a tool binary, or ends the test: t.Fatal under
// CI=true, t.Skip otherwise.
func Tool(t testing.TB, name string) string {
	t.Helper()
	dir, err := ToolsBin()
	if err == nil {
		p := filepath.Join(dir, name)
		if st, serr := os.Stat(p); serr == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p
		}
		err = fmt.Errorf("%s not found in %s", name, dir)
	}
	msg := fmt.Sprintf("harness: %v: run `make tools` to install the test servers (or set %s)", err, ToolsBinEnv)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	} else {
		t.Skip(msg)
	}
	return ""
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("harness: find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

var portMu sync.Mutex
var portsHanded = map[int]bool{}

// freePorts returns n distinct free ports, never one handed out before in
// this process, so that servers started back to back do not collide.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	portMu.Lock()
	defer portMu.Unlock()
	var ports []int
	for len(ports) < n {
		p := FreePort(t)
		if !portsHanded[p] {
			portsHanded[p] = true
			ports = append(ports, p)
		}
	}
	return ports
}

// process is a started server.
type process struct {
	name string
	cmd  *exec.Cmd
	log  *syncBuffer
	done chan struct{}
	err  error // set before done is closed
}

// syncBuffer collects a server's output for failure reports.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buf.Len() > 1<<20 { // keep memory bounded for chatty servers
		b.buf.Reset()
		b.buf.WriteString("[output truncated]\n")
	}
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// start runs bin with args and registers its stop with t.Cleanup. The server
// gets SIGKILL if the test binary dies, so no server outlives its test.
func start(t testing.TB, name, bin string, args ...string) *process {
	t.Helper()
	p := &process{name: name, log: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout = p.log
	p.cmd.Stderr = p.log
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("harness: start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() { p.stop(t) })
	return p
}

// stop terminates the server: SIGTERM, then SIGKILL after a grace period.
func (p *process) stop(t testing.TB) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	if t.Failed() {
		t.Logf("harness: %s output:\n%s", p.name, tail(p.log.String(), 4000))
	}
}

// exited reports whether the server has exited.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitReady polls ready until it returns nil, the server exits, or the
// start timeout passes; it fails the test with the server's output.
func (p *process) waitReady(t testing.TB, ready func(ctx context.Context) error) {
	t.Helper()
	deadline := time.Now().Add(DefaultStartTimeout)
	var last error
	for time.Now().Before(deadline) {
		if p.exited() {
			t.Fatalf("harness: %s exited before it was ready (%v); output:\n%s", p.name, p.err, tail(p.log.String(), 4000))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		last = ready(ctx)
		cancel()
		if last == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("harness: %s not ready after %v: %v; output:\n%s", p.name, DefaultStartTimeout, last, tail(p.log.String(), 4000))
}

// httpGet returns the status and body of a GET.
func httpGet(ctx context.Context, url string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, err = b.ReadFrom(resp.Body)
	return resp.StatusCode, b.Bytes(), err
}

// call sends a JSON API request to base+path and decodes a JSON answer
// into out (nil: none); a status other than 2xx is an error naming it.
func call(ctx context.Context, method, base, path string, body io.Reader, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, base+path, body)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, strings.TrimSpace(string(data)))
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}

func itoa(i int) string { return strconv.Itoa(i) }
