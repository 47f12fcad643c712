package sftp

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/superfly/ltx"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/understudy-db/understudy/integration/harness"
	"github.com/understudy-db/understudy/internal/storage"
	"github.com/understudy-db/understudy/internal/storage/storagetest"
)

// newClient returns a client on a fresh directory of a test sshd.
func newClient(t *testing.T, s *harness.SSHServer, mod func(*Options)) *Client {
	t.Helper()
	o := Options{Host: s.Addr, User: s.User, KeyPath: s.KeyPath, KnownHostsPath: s.KnownHostsPath, Path: s.NewDir(t)}
	if mod != nil {
		mod(&o)
	}
	c, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestConformance(t *testing.T) {
	s := harness.StartSSHD(t)
	storagetest.Run(t, func(t *testing.T) storage.Client { return newClient(t, s, nil) })
}

// TestLitestreamLayout checks the names and mtime Litestream 0.5 reads on
// the server, that nothing of ours lands under ltx/, and that temp files
// are gone.
func TestLitestreamLayout(t *testing.T) {
	s := harness.StartSSHD(t)
	c := newClient(t, s, nil)
	md := storagetest.TestMetadata(3)
	storagetest.MustCreate(t, c, 0, 0xa1, 0xa1, []byte("hello"), md)
	storagetest.MustCreate(t, c, storage.SnapshotLevel, 1, 0xa1, []byte("snap"), md)
	if err := c.ProbeCreateOnly(context.Background()); err != nil {
		t.Fatal(err)
	}
	ltxFiles := storagetest.FilesUnder(t, c.Dir(), LTXDir)
	want := []string{"ltx/0/00000000000000a1-00000000000000a1.ltx", "ltx/9/0000000000000001-00000000000000a1.ltx"}
	if strings.Join(ltxFiles, " ") != strings.Join(want, " ") {
		t.Fatalf("files under ltx/: %v, want %v", ltxFiles, want)
	}
	st, err := os.Stat(filepath.Join(c.Dir(), want[0]))
	if err != nil {
		t.Fatal(err)
	}
	// SFTP carries whole seconds.
	if !st.ModTime().Equal(md.CommitTime.Truncate(1e9)) {
		t.Errorf("mtime %v, want the commit time %v", st.ModTime(), md.CommitTime)
	}
	if st.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", st.Mode())
	}
	tmps, _ := os.ReadDir(filepath.Join(c.Dir(), privateDir, tmpDir))
	if len(tmps) != 0 {
		t.Errorf("temp files left behind: %v", tmps)
	}
	sidecars, _ := os.ReadDir(filepath.Join(c.Dir(), privateDir, metaDir, "0"))
	if len(sidecars) != 1 {
		t.Errorf("level 0 sidecars %v, want exactly one", sidecars)
	}
}

// TestForeignFile: a file another tool wrote (no sidecar) reads with nil
// metadata, and a stale sidecar of other content never describes it.
func TestForeignFile(t *testing.T) {
	s := harness.StartSSHD(t)
	c := newClient(t, s, nil)
	storagetest.MustCreate(t, c, 0, 4, 4, []byte("ours, first"), storagetest.TestMetadata(4))
	p := filepath.Join(c.Dir(), "ltx", "0", storage.FormatFilename(4, 4))
	// Replace it behind the client's back, leaving our sidecar in place.
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("litestream"), 0o644); err != nil {
		t.Fatal(err)
	}
	body, info := storagetest.ReadAll(t, c, 0, 4, 4, 0, -1)
	if string(body) != "litestream" || info.Metadata != nil {
		t.Fatalf("read %q with metadata %+v, want the foreign file without metadata", body, info.Metadata)
	}
	_, err := c.Create(context.Background(), 0, 4, 4, strings.NewReader("x"), storagetest.TestMetadata(1))
	if !errors.Is(err, storage.ErrExists) {
		t.Fatalf("create over a foreign file: %v", err)
	}
}

// TestRetryAfterCrash: a writer that died after its sidecar and before its
// link left a sidecar for its bytes; the same bytes with other metadata (a
// restarted writer with a new fencing token) replace it.
func TestRetryAfterCrash(t *testing.T) {
	s := harness.StartSSHD(t)
	c := newClient(t, s, nil)
	body := storagetest.Body(300, 1)
	storagetest.MustCreate(t, c, 0, 1, 1, body, storagetest.TestMetadata(1))
	// Take the file away but keep its sidecar: what a crash between the
	// sidecar and the link leaves.
	if err := os.Remove(filepath.Join(c.Dir(), "ltx", "0", storage.FormatFilename(1, 1))); err != nil {
		t.Fatal(err)
	}
	storagetest.MustCreate(t, c, 0, 1, 1, body, storagetest.TestMetadata(2))
	_, info := storagetest.ReadAll(t, c, 0, 1, 1, 0, -1)
	if info.Metadata == nil || info.Metadata.FencingToken != storagetest.TestMetadata(2).FencingToken {
		t.Fatalf("metadata %+v, want the second writer's", info.Metadata)
	}
}

// TestHostKeyVerification: an unknown host and a changed key are refused
// with errors naming the host and the known_hosts file; a known_hosts
// listing only the server's ECDSA key works (the handshake asks for it).
func TestHostKeyVerification(t *testing.T) {
	s := harness.StartSSHD(t)
	dir := t.TempDir()
	write := func(name string, keys ...ssh.PublicKey) string {
		var b strings.Builder
		for _, k := range keys {
			b.WriteString(knownhosts.Line([]string{s.Addr}, k) + "\n")
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	other := newSigner(t).PublicKey()
	for _, tc := range []struct {
		name  string
		file  string
		want  []string
		works bool
	}{
		{"ecdsa only", write("ecdsa", s.HostKeys[1]), nil, true},
		{"ed25519 only", write("ed25519", s.HostKeys[0]), nil, true},
		{"unknown host", write("empty"), []string{"host " + s.Addr + " is unknown", filepath.Join(dir, "empty"), "ssh-keyscan -p"}, false},
		{"changed key", write("changed", other), []string{s.Addr, "does not match the one in " + filepath.Join(dir, "changed") + " line 1"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClient(t, s, func(o *Options) { o.KnownHostsPath = tc.file })
			err := c.ProbeCreateOnly(context.Background())
			if tc.works {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			storagetest.CheckError(t, "probe", err, tc.want, nil)
		})
	}
	_, err := New(Options{Host: s.Addr, User: s.User, KeyPath: s.KeyPath, Path: "/x", KnownHostsPath: filepath.Join(dir, "missing")})
	storagetest.CheckError(t, "missing known_hosts", err, []string{filepath.Join(dir, "missing") + " does not exist", "known-hosts-path"}, nil)
}

// TestBadLogin: a wrong key and a wrong password fail every operation with
// ErrCredentials, naming the user and host, never the password.
func TestBadLogin(t *testing.T) {
	s := harness.StartSSHD(t)
	const secret = "sftp-password-do-not-print"
	keyFile := filepath.Join(t.TempDir(), "other_key")
	writeKey(t, keyFile)
	for _, tc := range []struct {
		name string
		mod  func(*Options)
	}{
		{"wrong key", func(o *Options) { o.KeyPath = keyFile }},
		{"wrong password", func(o *Options) { o.KeyPath, o.Password = "", secret }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClient(t, s, tc.mod)
			storagetest.RunFailingStore(t, c, []string{"refused the login of user " + `"` + s.User + `"`, s.Addr}, []string{secret})
			err := c.ProbeCreateOnly(context.Background())
			if !errors.Is(err, storage.ErrCredentials) {
				t.Fatalf("err = %v, want ErrCredentials", err)
			}
		})
	}
}

// TestReconnect: a client whose connection broke dials again (a request
// under way when it breaks fails; the caller retries it).
func TestReconnect(t *testing.T) {
	s := harness.StartSSHD(t)
	c := newClient(t, s, nil)
	storagetest.MustCreate(t, c, 0, 1, 1, []byte("one"), storagetest.TestMetadata(1))
	c.mu.Lock()
	cn := c.conn
	c.mu.Unlock()
	_ = cn.ssh.Close() // as a network failure would
	<-cn.done
	storagetest.MustCreate(t, c, 0, 2, 2, []byte("two"), storagetest.TestMetadata(2))
	if got := storagetest.ListAll(t, c, 0, 0); len(got) != 2 {
		t.Fatalf("listed %d files after reconnecting, want 2", len(got))
	}
}

// TestDeadConnection: a server that stops answering without closing the
// connection (toxiproxy drops its replies) fails the requests waiting on it
// once the keepalive gets no reply, instead of hanging them; when it
// answers again the next request redials.
func TestDeadConnection(t *testing.T) {
	s := harness.StartSSHD(t)
	tp := harness.StartToxiproxy(t)
	proxy := tp.NewProxy(t, "sshd", s.Addr)
	known := filepath.Join(t.TempDir(), "known_hosts")
	var lines []string
	for _, k := range s.HostKeys {
		lines = append(lines, knownhosts.Line([]string{proxy.Listen}, k))
	}
	if err := os.WriteFile(known, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := newClient(t, s, func(o *Options) { o.Host, o.KnownHostsPath, o.Keepalive = proxy.Listen, known, 200*time.Millisecond })
	storagetest.MustCreate(t, c, 0, 1, 1, []byte("one"), storagetest.TestMetadata(1))
	if err := proxy.AddToxic(harness.Toxic{Name: "blackhole", Type: "timeout", Stream: "downstream", Attributes: map[string]any{"timeout": 0}}); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := c.List(context.Background(), 0, 0)
		errc <- err
	}()
	select {
	case err := <-errc:
		if err == nil {
			t.Fatal("list through a dead connection succeeded")
		}
		t.Logf("list through a dead connection: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("list through a dead connection still waits after 30 s (the keepalive is 200 ms)")
	}
	if err := proxy.RemoveToxic("blackhole"); err != nil {
		t.Fatal(err)
	}
	if got := storagetest.ListAll(t, c, 0, 0); len(got) != 1 {
		t.Fatalf("after the server answers again: %d files, want 1", len(got))
	}
}

// TestCanceledContext: a cancelled create leaves nothing.
func TestCanceledContext(t *testing.T) {
	s := harness.StartSSHD(t)
	c := newClient(t, s, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Create(ctx, 0, 1, 1, bytes.NewReader([]byte("x")), storage.Metadata{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("create with a canceled context: %v", err)
	}
	if _, err := c.Open(context.Background(), 0, 1, 1, 0, -1); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("open after canceled create: %v", err)
	}
}

func TestNewValidates(t *testing.T) {
	t.Setenv("HOME", t.TempDir()) // no default keys
	known := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(known, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(t.TempDir(), "id")
	writeKey(t, key)
	base := Options{Host: "backup.example", User: "u", KeyPath: key, KnownHostsPath: known, Path: "/srv/db"}
	for _, tc := range []struct {
		name    string
		mod     func(*Options)
		wantErr string
		addr    string
	}{
		{"default port", func(*Options) {}, "", "backup.example:22"},
		{"port", func(o *Options) { o.Host = "backup.example:2222" }, "", "backup.example:2222"},
		{"ipv6", func(o *Options) { o.Host = "::1" }, "", "[::1]:22"},
		{"no host", func(o *Options) { o.Host = "" }, "sftp replica: host is empty", ""},
		{"bad port", func(o *Options) { o.Host = "h:99999" }, `host "h:99999": invalid port`, ""},
		{"no user", func(o *Options) { o.User = "" }, "user is empty for backup.example:22", ""},
		{"no path", func(o *Options) { o.Path = "" }, "path is empty", ""},
		{"no login", func(o *Options) { o.KeyPath = "" }, "no login for u@backup.example: set key-path (a private key file) or password (none of " + os.Getenv("HOME") + "/.ssh/id_ed25519", ""},
		{"missing key", func(o *Options) { o.KeyPath = "/nonexistent/id" }, "read key-path /nonexistent/id", ""},
		{"not a key", func(o *Options) { o.KeyPath = known }, "is not a private key", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := base
			tc.mod(&o)
			c, err := New(o)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || c.Addr() != tc.addr {
				t.Fatalf("New = %v, %v; want addr %s", c, err, tc.addr)
			}
		})
	}
}

// TestDefaultKeyAndKnownHosts: without key-path, password and
// known-hosts-path, the keys and known_hosts of ~/.ssh are used, as ssh
// does (a replica URL on the command line has nowhere to name them).
func TestDefaultKeyAndKnownHosts(t *testing.T) {
	s := harness.StartSSHD(t)
	home := t.TempDir()
	t.Setenv("HOME", home)
	s.WriteSSHDir(t, home)
	writeKey(t, filepath.Join(home, ".ssh", "id_ecdsa")) // one the server does not know, tried too
	c := newClient(t, s, func(o *Options) { o.KeyPath, o.KnownHostsPath = "", "" })
	if err := c.ProbeCreateOnly(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func newSigner(t *testing.T) ssh.Signer {
	t.Helper()
	s, err := ssh.ParsePrivateKey(testKeyPEM(t))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// testKeyPEM is a fresh ed25519 private key in OpenSSH format.
func testKeyPEM(t *testing.T) []byte {
	t.Helper()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(block)
}

// writeKey writes a fresh private key to path.
func writeKey(t *testing.T, path string) {
	t.Helper()
	if err := os.WriteFile(path, testKeyPEM(t), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestMetadataVisibleWithObject: the moment a file becomes visible, a
// reader already finds its metadata (the sidecar is written before the link).
func TestMetadataVisibleWithObject(t *testing.T) {
	s := harness.StartSSHD(t)
	c := newClient(t, s, nil)
	// A second client: the hook runs inside the first one's request.
	r := newClient(t, s, func(o *Options) {})
	r.dir = c.dir
	var checked int
	testHookLinked = func(string) {
		for _, fi := range storagetest.ListAll(t, r, 0, 0) {
			_, info := storagetest.ReadAll(t, r, 0, fi.MinTXID, fi.MaxTXID, 0, -1)
			if info.Metadata == nil {
				t.Errorf("%s is visible without its metadata", fi.MinTXID)
			}
			checked++
		}
	}
	t.Cleanup(func() { testHookLinked = nil })
	for id := ltx.TXID(1); id <= 3; id++ {
		storagetest.MustCreate(t, c, 0, id, id, storagetest.Body(100, int64(id)), storagetest.TestMetadata(uint64(id)))
	}
	if checked != 1+2+3 {
		t.Fatalf("checked %d files, want 6", checked)
	}
}

// TestKeyReader lists and opens a Litestream 0.3 tree on the server by key,
// skipping temp files, and refuses keys outside the replica directory.
func TestKeyReader(t *testing.T) {
	s := harness.StartSSHD(t)
	c := newClient(t, s, nil)
	files := map[string]string{
		"generations/0123456789abcdef/snapshots/00000001.snapshot.lz4":   "snap",
		"generations/0123456789abcdef/wal/00000001/00000000.wal.lz4":     "wal",
		"generations/0123456789abcdef/wal/00000001/00000001.wal.lz4.tmp": "partial",
	}
	for key, body := range files {
		p := filepath.Join(c.Dir(), filepath.FromSlash(key))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	keys, err := c.ListKeys(ctx, "generations/")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, k := range keys {
		got = append(got, k.Key)
	}
	want := []string{"generations/0123456789abcdef/snapshots/00000001.snapshot.lz4", "generations/0123456789abcdef/wal/00000001/00000000.wal.lz4"}
	if strings.Join(got, " ") != strings.Join(want, " ") || keys[0].Size != 4 {
		t.Fatalf("ListKeys = %+v, want %v", keys, want)
	}
	rc, err := c.OpenKey(ctx, want[1])
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	_ = rc.Close()
	if string(b) != "wal" {
		t.Fatalf("OpenKey read %q", b)
	}
	if _, err := c.OpenKey(ctx, "generations/none"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("OpenKey of a missing key: %v", err)
	}
	if _, err := c.OpenKey(ctx, "../etc/passwd"); err == nil || !strings.Contains(err.Error(), "outside the replica directory") {
		t.Fatalf("OpenKey outside the directory: %v", err)
	}
	if keys, err := c.ListKeys(ctx, "nothing/"); err != nil || len(keys) != 0 {
		t.Fatalf("ListKeys of a missing prefix: %v, %v", keys, err)
	}
}

// TestSub: the clients of a directory entry's databases, from one client
// of the prefix, each write under prefix/rel over the parent's one SSH
// connection and list only their own.
func TestSub(t *testing.T) {
	s := harness.StartSSHD(t)
	parent := newClient(t, s, nil)
	storagetest.CheckSub(t, parent, func(rel string) storage.Client {
		return newClient(t, s, func(o *Options) { o.Path = parent.Dir() + "/" + rel })
	})
	sub := parent.Sub("a").(*Client)
	if sub.link != parent.link {
		t.Errorf("a sub-client has a connection of its own")
	}
}
