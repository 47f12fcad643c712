package harness

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// SSHServer is a running OpenSSH sshd (Debian's, from `make tools`) serving
// SFTP on a loopback port as an unprivileged process.
type SSHServer struct {
	Addr           string // 127.0.0.1:PORT
	Host           string // 127.0.0.1
	Port           int
	User           string // the login the server accepts with KeyPath
	KeyPath        string // the user's private key (OpenSSH format, no passphrase)
	KnownHostsPath string // a known_hosts file holding the server's host keys
	Root           string // a directory the user may write, on this machine
	HostKeys       []ssh.PublicKey

	dir string
}

// sshdUID is the account sshd runs as when the tests run as root (sshd as
// root would want its privilege-separation user and /run/sshd): an id no
// account has, given a passwd entry of its own in a private mount namespace.
const (
	sshdUID      = 4242
	sshdUserName = "understudy-sftp"
)

var sftpDirSeq atomic.Int64

// StartSSHD starts sshd on a free loopback port with fresh host keys (an
// ed25519 and an ECDSA one), a fresh user key, password and keyboard-
// interactive logins off, and the internal SFTP server; it stops at test end.
//
// Run as a normal user, sshd serves that user. Run as root, it runs as uid
// 4242 inside `unshare --mount`, where /etc/passwd is bind-mounted with an
// entry for that uid: sshd refuses a login whose account it cannot find or
// that looks locked (nobody's is), and the host's passwd stays untouched.
func StartSSHD(t testing.TB) *SSHServer {
	t.Helper()
	bin := Tool(t, "sshd")
	dir, err := os.MkdirTemp("", "understudy-sshd-")
	if err != nil {
		t.Fatalf("harness: sshd temp dir: %v", err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	asRoot := os.Geteuid() == 0
	s := &SSHServer{Host: "127.0.0.1", dir: dir, Root: filepath.Join(dir, "root")}
	s.Port = freePorts(t, 1)[0]
	s.Addr = net.JoinHostPort(s.Host, strconv.Itoa(s.Port))
	if asRoot {
		s.User = sshdUserName
	} else {
		u, err := user.Current()
		if err != nil {
			t.Fatalf("harness: current user: %v", err)
		}
		s.User = u.Username
	}
	if err := os.Mkdir(s.Root, 0o755); err != nil {
		t.Fatalf("harness: %v", err)
	}

	// Host keys: sshd loads OpenSSH-format private keys.
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	var hostKeyLines, known []string
	for _, k := range []struct {
		name string
		priv any
	}{{"host_ed25519", ed}, {"host_ecdsa", ec}} {
		p := filepath.Join(dir, k.name)
		pub := writePrivateKey(t, p, k.priv)
		s.HostKeys = append(s.HostKeys, pub)
		hostKeyLines = append(hostKeyLines, "HostKey "+p)
		known = append(known, knownhosts.Line([]string{s.Addr}, pub))
	}
	s.KnownHostsPath = filepath.Join(dir, "known_hosts")
	writeFile(t, s.KnownHostsPath, strings.Join(known, "\n")+"\n")

	_, userKey, _ := ed25519.GenerateKey(rand.Reader)
	s.KeyPath = filepath.Join(dir, "id_ed25519")
	userPub := writePrivateKey(t, s.KeyPath, userKey)
	authorized := filepath.Join(dir, "authorized_keys")
	writeFile(t, authorized, string(ssh.MarshalAuthorizedKey(userPub)))

	conf := filepath.Join(dir, "sshd_config")
	writeFile(t, conf, strings.Join(append(hostKeyLines,
		"ListenAddress "+s.Addr,
		"PidFile none",
		"StrictModes no", // the temp dir is not laid out like a home directory
		"UsePAM no",
		"PasswordAuthentication no",
		"KbdInteractiveAuthentication no",
		"AuthorizedKeysFile "+authorized,
		"Subsystem sftp internal-sftp",
		"LogLevel VERBOSE",
	), "\n")+"\n")

	name, args := bin, []string{"-D", "-e", "-f", conf}
	if asRoot {
		passwd := filepath.Join(dir, "passwd")
		writeFile(t, passwd, fmt.Sprintf("%s:x:%d:%d:understudy sftp tests:%s:/bin/sh\n", sshdUserName, sshdUID, sshdUID, s.Root))
		for _, p := range []string{dir, s.Root} {
			if err := os.Chown(p, sshdUID, sshdUID); err != nil {
				t.Fatalf("harness: %v", err)
			}
		}
		for _, k := range []string{"host_ed25519", "host_ecdsa"} {
			if err := os.Chown(filepath.Join(dir, k), sshdUID, sshdUID); err != nil {
				t.Fatalf("harness: %v", err)
			}
		}
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatalf("harness: %v", err)
		}
		name = "unshare"
		args = append([]string{"--mount", "--propagation", "private", "sh", "-c",
			`mount --bind "$1" /etc/passwd && shift && exec setpriv --reuid=` + strconv.Itoa(sshdUID) +
				` --regid=` + strconv.Itoa(sshdUID) + ` --clear-groups "$@"`,
			"sh", passwd, bin}, args...)
	}
	p := start(t, "sshd", name, args...)
	p.waitReady(t, func(ctx context.Context) error { return sshBanner(ctx, s.Addr) })
	return s
}

// NewDir returns a fresh directory under Root for one test (its store).
func (s *SSHServer) NewDir(t testing.TB) string {
	t.Helper()
	d := filepath.Join(s.Root, "store-"+strconv.FormatInt(sftpDirSeq.Add(1), 10))
	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatalf("harness: %v", err)
	}
	if os.Geteuid() == 0 {
		if err := os.Chown(d, sshdUID, sshdUID); err != nil {
			t.Fatalf("harness: %v", err)
		}
	}
	return d
}

// URL is the replica URL of dir on this server: sftp://USER@HOST:PORT/DIR.
func (s *SSHServer) URL(dir string) string {
	return "sftp://" + s.User + "@" + s.Addr + dir
}

// WriteSSHDir gives the home directory home a .ssh/ with the login key as
// id_ed25519 and the server in known_hosts, the files ssh (and Understudy,
// without key-path and known-hosts-path) reads by default.
func (s *SSHServer) WriteSSHDir(t testing.TB, home string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(home, ".ssh"), 0o700); err != nil {
		t.Fatalf("harness: %v", err)
	}
	for from, to := range map[string]string{s.KeyPath: "id_ed25519", s.KnownHostsPath: "known_hosts"} {
		b, err := os.ReadFile(from)
		if err == nil {
			err = os.WriteFile(filepath.Join(home, ".ssh", to), b, 0o600)
		}
		if err != nil {
			t.Fatalf("harness: %v", err)
		}
	}
}

// sshBanner reads the server's version line: sshd is accepting logins.
func sshBanner(ctx context.Context, addr string) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "SSH-2.0-") {
		return fmt.Errorf("unexpected banner %q", line)
	}
	return nil
}

// writePrivateKey writes key in OpenSSH format (mode 0600, as sshd and ssh
// want) and returns its public key.
func writePrivateKey(t testing.TB, path string, key any) ssh.PublicKey {
	t.Helper()
	block, err := ssh.MarshalPrivateKey(key, "understudy-test")
	if err != nil {
		t.Fatalf("harness: marshal key: %v", err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatalf("harness: %v", err)
	}
	signer, err := ssh.NewSignerFromKey(key)
	if err != nil {
		t.Fatalf("harness: %v", err)
	}
	return signer.PublicKey()
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatalf("harness: %v", err)
	}
}
