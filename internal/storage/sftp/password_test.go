package sftp

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	pkgsftp "github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/understudy-db/understudy/internal/storage"
	"github.com/understudy-db/understudy/internal/storage/storagetest"
)

// The password logins are tested against an SSH server in this process
// (x/crypto/ssh with pkg/sftp's server): the test sshd runs unprivileged,
// and an unprivileged sshd cannot check passwords (it cannot read
// /etc/shadow). It takes one login method, so each case proves that one.
const testPassword = "pw-for-the-in-process-server"

// passwordServer serves SFTP on a loopback port to logins with
// testPassword, by the password method or keyboard-interactive (kbd), and
// returns its address and a known_hosts file for it.
func passwordServer(t *testing.T, kbd bool) (addr, known string) {
	t.Helper()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	hostKey, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	conf := &ssh.ServerConfig{}
	if kbd {
		conf.KeyboardInteractiveCallback = func(_ ssh.ConnMetadata, ask ssh.KeyboardInteractiveChallenge) (*ssh.Permissions, error) {
			answers, err := ask("", "", []string{"Password: "}, []bool{false})
			if err == nil && len(answers) == 1 && answers[0] == testPassword {
				return nil, nil
			}
			return nil, errors.New("wrong password")
		}
	} else {
		conf.PasswordCallback = func(_ ssh.ConnMetadata, pw []byte) (*ssh.Permissions, error) {
			if string(pw) == testPassword {
				return nil, nil
			}
			return nil, errors.New("wrong password")
		}
	}
	conf.AddHostKey(hostKey)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			nc, err := l.Accept()
			if err != nil {
				return
			}
			go serveSFTP(nc, conf)
		}
	}()
	known = filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(known, []byte(knownhosts.Line([]string{l.Addr().String()}, hostKey.PublicKey())+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return l.Addr().String(), known
}

// serveSFTP runs one connection's "sftp" subsystem requests.
func serveSFTP(nc net.Conn, conf *ssh.ServerConfig) {
	defer nc.Close()
	_, chans, reqs, err := ssh.NewServerConn(nc, conf)
	if err != nil {
		return
	}
	go ssh.DiscardRequests(reqs)
	for nch := range chans {
		if nch.ChannelType() != "session" {
			_ = nch.Reject(ssh.UnknownChannelType, "session only")
			continue
		}
		ch, chReqs, err := nch.Accept()
		if err != nil {
			return
		}
		go func() {
			for req := range chReqs {
				ok := req.Type == "subsystem" && len(req.Payload) > 4 && string(req.Payload[4:]) == "sftp"
				_ = req.Reply(ok, nil)
				if ok {
					if srv, err := pkgsftp.NewServer(ch); err == nil {
						_ = srv.Serve()
					}
					_ = ch.Close()
				}
			}
		}()
	}
}

func TestPasswordLogin(t *testing.T) {
	t.Setenv("HOME", t.TempDir()) // no default keys
	for _, tc := range []struct {
		name     string
		kbd      bool
		password string
		works    bool
	}{
		{"password", false, testPassword, true},
		{"keyboard-interactive", true, testPassword, true},
		{"wrong password", false, "not-" + testPassword, false},
		{"wrong password, keyboard-interactive", true, "not-" + testPassword, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, known := passwordServer(t, tc.kbd)
			c, err := New(Options{Host: addr, User: "u", Password: tc.password, KnownHostsPath: known, Path: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_, err = c.Create(context.Background(), 0, 1, 1, strings.NewReader("x"), storagetest.TestMetadata(1))
			if tc.works {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			storagetest.CheckError(t, "create", err, []string{`refused the login of user "u" with the password`}, []string{tc.password, testPassword})
			if !errors.Is(err, storage.ErrCredentials) {
				t.Fatalf("err = %v, want ErrCredentials", err)
			}
		})
	}
}

// TestProbeWithoutHardlink: a server that does not offer
// hardlink@openssh.com cannot create files create-only; the probe says so
// as a store that refuses the condition, naming the extension.
func TestProbeWithoutHardlink(t *testing.T) {
	if err := pkgsftp.SetSFTPExtensions("posix-rename@openssh.com", "statvfs@openssh.com"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = pkgsftp.SetSFTPExtensions("hardlink@openssh.com", "posix-rename@openssh.com", "statvfs@openssh.com")
	})
	addr, known := passwordServer(t, false)
	c, err := New(Options{Host: addr, User: "u", Password: testPassword, KnownHostsPath: known, Path: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	err = c.ProbeCreateOnly(context.Background())
	storagetest.CheckError(t, "probe", err, []string{"does not offer hardlink@openssh.com", "use an OpenSSH server"}, nil)
	if cond, ok := storage.ConditionOf(err); !ok || cond != storage.ConditionRefused || !errors.Is(err, storage.ErrNoCreateOnly) {
		t.Fatalf("ConditionOf = %v, %v; want refused, wrapping ErrNoCreateOnly", cond, ok)
	}
}
