package harness

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestBucketName(t *testing.T) {
	for _, tc := range []struct {
		test string
		seq  int64
		want string
	}{
		{"TestS3/RoundTrip", 1, "tests3-roundtrip-1"},
		{"Test__Odd  Name!", 22, "test-odd-name-22"},
		{"///", 3, "bucket-3"},
		{strings.Repeat("a", 100), 7, strings.Repeat("a", 61) + "-7"},
	} {
		if got := BucketName(tc.test, tc.seq); got != tc.want || len(got) > 63 {
			t.Errorf("BucketName(%q, %d) = %q, want %q", tc.test, tc.seq, got, tc.want)
		}
	}
}

// recordTB records Fatal and Skip instead of ending the test.
type recordTB struct {
	testing.TB
	fatal, skip string
}

func (r *recordTB) Helper()               {}
func (r *recordTB) Fatal(args ...any)     { r.fatal = fmt.Sprint(args...) }
func (r *recordTB) Skip(args ...any)      { r.skip = fmt.Sprint(args...) }
func (r *recordTB) Fatalf(string, ...any) { panic("unexpected Fatalf") }

func TestMissingToolSkipsOrFailsUnderCI(t *testing.T) {
	t.Setenv(ToolsBinEnv, t.TempDir())
	for _, ci := range []string{"", "true"} {
		t.Setenv("CI", ci)
		r := &recordTB{TB: t}
		if got := Tool(r, "versitygw"); got != "" {
			t.Fatalf("Tool returned %q for a missing binary", got)
		}
		msg := r.skip
		if ci == "true" {
			msg = r.fatal
			if r.skip != "" {
				t.Errorf("CI=true skipped: %s", r.skip)
			}
		} else if r.fatal != "" {
			t.Errorf("without CI it failed: %s", r.fatal)
		}
		if !strings.Contains(msg, "make tools") || !strings.Contains(msg, "versitygw not found") {
			t.Errorf("CI=%q: message %q does not say what is missing and to run `make tools`", ci, msg)
		}
	}
}

func TestVersityGWStarts(t *testing.T) {
	s := StartVersityGW(t)
	bucket := s.NewBucket(t)
	// Anonymous requests are refused: the server checks auth.
	resp, err := http.Get(s.Endpoint + "/" + bucket)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("anonymous list of %s: %d, want 403", bucket, resp.StatusCode)
	}
}

func TestConsulStarts(t *testing.T) {
	c := StartConsul(t)
	var leader string
	if err := c.Do(context.Background(), http.MethodGet, "/v1/status/leader", "", &leader); err != nil || leader == "" {
		t.Fatalf("leader %q, %v", leader, err)
	}
}

// TestToxiproxyCutsAndRestores proxies an echo server, disables the proxy
// (connections refused), enables it again, and adds/removes a toxic.
func TestToxiproxyCutsAndRestores(t *testing.T) {
	tp := StartToxiproxy(t)
	upstream := echoServer(t)
	p := tp.NewProxy(t, "echo", upstream)
	if !strings.HasPrefix(p.Listen, "127.0.0.1:") {
		t.Fatalf("proxy listens on %q", p.Listen)
	}
	if err := echo(p.Listen); err != nil {
		t.Fatalf("through the proxy: %v", err)
	}
	if err := p.SetEnabled(false); err != nil {
		t.Fatal(err)
	}
	if err := echo(p.Listen); err == nil {
		t.Fatal("a disabled proxy still passed traffic")
	}
	if err := p.SetEnabled(true); err != nil {
		t.Fatal(err)
	}
	if err := echo(p.Listen); err != nil {
		t.Fatalf("after enabling again: %v", err)
	}
	if err := p.AddToxic(Toxic{Name: "cut", Type: "reset_peer", Attributes: map[string]any{"timeout": 0}}); err != nil {
		t.Fatal(err)
	}
	if err := echo(p.Listen); err == nil {
		t.Fatal("reset_peer toxic did not break the connection")
	}
	if err := p.RemoveToxic("cut"); err != nil {
		t.Fatal(err)
	}
	if err := echo(p.Listen); err != nil {
		t.Fatalf("after removing the toxic: %v", err)
	}
	if err := p.Delete(); err != nil {
		t.Fatal(err)
	}
}

func echoServer(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	return l.Addr().String()
}

// echo sends a line and expects it back within a few seconds.
func echo(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return err
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != "ping\n" {
		return fmt.Errorf("echo returned %q", buf)
	}
	return nil
}
