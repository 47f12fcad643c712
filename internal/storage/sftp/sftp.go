// Package sftp is the replica store in a directory on an SSH server, read and
// written over SFTP, in Litestream 0.5's file layout:
//
//	<path>/ltx/<level>/<minTXID %016x>-<maxTXID %016x>.ltx
//
// # Create-only
//
// A file is uploaded to a temp name under <path>/.understudy/tmp/, synced
// (fsync@openssh.com), given its mtime (the commit time, as Litestream reads
// it), and then hard-linked to its final name with hardlink@openssh.com. The
// server's link() fails when the name exists, so exactly one of any number of
// racing writers gets a key, and a reader never sees a partial file. The temp
// name is removed afterwards. A server without hardlink@openssh.com (OpenSSH
// has it since 5.7) cannot fence two writers apart, and ProbeCreateOnly says
// so. The fencing is the server filesystem's: two writers must reach the
// same directory through the same filesystem, as with the file store.
//
// # Metadata
//
// SFTP has no user metadata, so each object's metadata is a small JSON
// sidecar beside the tree, under <path>/.understudy/meta/<level>/:
//
//	<name>.<digest>.json     digest = SHA-256 of the object's size and last 64 bytes (32 hex digits)
//
// The sidecar is written before the object's link, so an object is never
// visible without it. It is keyed by the content it describes rather than by
// the key alone, because the link (not the sidecar) decides who owns the key:
// a writer that loses the race has written a sidecar for its own content,
// which names a different digest and so never describes the winner's file
// (it removes it afterwards; one left by a crash is never read). A reader
// stats the object, reads its last 64 bytes and opens the sidecar of that
// digest, and also checks the size recorded in it. For LTX files the last
// bytes are the trailer, which holds the CRC-64 of the whole file, so two
// different files do not share a digest. Two writers racing with
// byte-identical files but different metadata are the one case where the
// sidecar may describe the other writer: the bytes they wrote are the same.
//
// Litestream reads only ltx/<level>/ names and mtimes and never looks in
// .understudy/, so it can read a replica written here, and a file it wrote
// (with no sidecar) reads here as an object without metadata.
//
// # Connection
//
// One SSH connection carries every request of a Client and of its Sub
// clients (pkg/sftp pipelines them). A connection that breaks, or that gives no answer to a keepalive
// within DefaultKeepalive, is dropped (the requests on it fail), and the
// next request dials a new one. A request whose context ends closes the
// connection, since SFTP requests cannot be cancelled one by one. The
// server's host key is checked against a known_hosts file
// (~/.ssh/known_hosts unless set); an unknown host or a changed key is
// refused with an error that names the host and the file.
package sftp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	pkgsftp "github.com/pkg/sftp"
	"github.com/superfly/ltx"
	"golang.org/x/crypto/ssh"

	"github.com/understudy-db/understudy/internal/storage"
)

// Type is the value of Client.Type.
const Type = "sftp"

// Defaults of Options.
const (
	DefaultPort        = 22
	DefaultDialTimeout = 10 * time.Second
	// DefaultKeepalive is how often an open connection is asked for a
	// reply, and how long the reply may take before the connection is
	// given up as dead.
	DefaultKeepalive = 15 * time.Second
	// DefaultKnownHosts is the known_hosts file, relative to the home
	// directory, used when Options.KnownHostsPath is empty.
	DefaultKnownHosts = ".ssh/known_hosts"
)

// DefaultKeys are the private keys, relative to the home directory, tried
// (those that exist) when neither KeyPath nor Password is set, as ssh does.
var DefaultKeys = []string{".ssh/id_ed25519", ".ssh/id_ecdsa", ".ssh/id_rsa"}

// Names of the directories inside the replica directory.
const (
	LTXDir     = "ltx"         // Litestream's level directories live below it
	privateDir = ".understudy" // ours; Litestream ignores it
	tmpDir     = "tmp"         // temp files before their link
	metaDir    = "meta"        // sidecar metadata
)

// Options configure a Client.
type Options struct {
	Host     string // HOST or HOST:PORT (port 22 when absent)
	User     string
	Password string // secret: never logged or shown in errors
	KeyPath  string // private key file (OpenSSH or PEM format, without a passphrase); see DefaultKeys
	// KnownHostsPath is the known_hosts file the server's host key must be
	// in; empty means ~/.ssh/known_hosts.
	KnownHostsPath string
	// Path is the replica directory on the server; a relative path is
	// relative to the login directory.
	Path        string
	DialTimeout time.Duration // 0 means DefaultDialTimeout
	Keepalive   time.Duration // 0 means DefaultKeepalive
}

// Client is a replica store in one directory on an SFTP server. It is safe
// for concurrent use by goroutines and by processes sharing the directory.
type Client struct {
	*link // the server and its connection, shared with the Sub clients
	dir   string

	dirs sync.Map // directories known to exist
}

// link is one server, the login to it and the connection to it: one SSH
// connection carries the requests of a client and of all its Sub clients.
type link struct {
	addr    string // host:port
	user    string
	login   string // the credentials tried, for messages: "the key /k and the password"
	config  *ssh.ClientConfig
	timeout time.Duration
	alive   time.Duration // keepalive interval
	hosts   *hostKeys

	mu     sync.Mutex
	conn   *conn // nil until the first request, and after a broken connection
	closed bool
}

// conn is one SSH connection and the SFTP session on it.
type conn struct {
	ssh  *ssh.Client
	sftp *pkgsftp.Client
	done chan struct{} // closed once the SSH connection has ended
}

var _ storage.Client = (*Client)(nil)

// New validates o and returns a client. It reads the key and the known_hosts
// file but does not connect: the first request does.
func New(o Options) (*Client, error) {
	if o.Host == "" {
		return nil, errors.New("sftp replica: host is empty; set host (HOST or HOST:PORT) or use url: sftp://USER@HOST[:PORT]/PATH")
	}
	addr, err := hostPort(o.Host)
	if err != nil {
		return nil, err
	}
	if o.User == "" {
		return nil, fmt.Errorf("sftp replica: user is empty for %s; set user, or write it in the url (sftp://USER@HOST/PATH)", addr)
	}
	if o.Path == "" {
		return nil, fmt.Errorf("sftp replica: path is empty for %s; set path to the replica's directory on the server", addr)
	}
	c := &Client{link: &link{addr: addr, user: o.User, timeout: o.DialTimeout, alive: o.Keepalive}, dir: path.Clean(o.Path)}
	if c.timeout <= 0 {
		c.timeout = DefaultDialTimeout
	}
	if c.alive <= 0 {
		c.alive = DefaultKeepalive
	}
	auth, login, err := authMethods(o)
	c.login = login
	if err != nil {
		return nil, err
	}
	if c.hosts, err = loadHostKeys(o.KnownHostsPath); err != nil {
		return nil, err
	}
	c.config = &ssh.ClientConfig{
		User:              o.User,
		Auth:              auth,
		HostKeyCallback:   c.hosts.callback,
		HostKeyAlgorithms: c.hosts.algorithms(addr),
		Timeout:           c.timeout,
	}
	return c, nil
}

// hostPort adds the default port to HOST.
func hostPort(h string) (string, error) {
	if host, port, err := net.SplitHostPort(h); err == nil {
		if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 || host == "" {
			return "", fmt.Errorf("sftp replica: host %q: invalid port; use HOST or HOST:PORT", h)
		}
		return h, nil
	}
	if strings.Contains(strings.Trim(h, "[]"), ":") && !strings.HasPrefix(h, "[") {
		return net.JoinHostPort(h, strconv.Itoa(DefaultPort)), nil // a bare IPv6 address
	}
	if strings.ContainsAny(h, "/@ ") {
		return "", fmt.Errorf("sftp replica: host %q is not a host name; use HOST or HOST:PORT", h)
	}
	return net.JoinHostPort(strings.Trim(h, "[]"), strconv.Itoa(DefaultPort)), nil
}

// authMethods builds the logins to try from the key and the password, or
// from the default keys when neither is set, and says which they are.
func authMethods(o Options) ([]ssh.AuthMethod, string, error) {
	var auth []ssh.AuthMethod
	var login []string
	if o.KeyPath != "" {
		signer, err := readKey(o.KeyPath)
		if err != nil {
			return nil, "", err
		}
		auth = append(auth, ssh.PublicKeys(signer))
		login = append(login, "the key "+o.KeyPath)
	}
	if o.KeyPath == "" && o.Password == "" {
		var signers []ssh.Signer
		for _, k := range defaultKeys() {
			if _, err := os.Stat(k); err != nil {
				continue
			}
			signer, err := readKey(k)
			if err != nil {
				return nil, "", err
			}
			signers = append(signers, signer)
			login = append(login, "the key "+k)
		}
		if len(signers) > 0 {
			auth = append(auth, ssh.PublicKeys(signers...))
		}
	}
	if o.Password != "" {
		login = append(login, "the password")
		pw := o.Password
		auth = append(auth, ssh.Password(pw),
			// Servers that take passwords only through keyboard-interactive
			// ask one question with echo off.
			ssh.KeyboardInteractive(func(_, _ string, questions []string, echos []bool) ([]string, error) {
				answers := make([]string, len(questions))
				for i := range questions {
					if !echos[i] {
						answers[i] = pw
					}
				}
				return answers, nil
			}))
	}
	if len(auth) == 0 {
		return nil, "", fmt.Errorf("sftp replica: no login for %s@%s: set key-path (a private key file) or password (none of %s exists): %w",
			o.User, o.Host, strings.Join(defaultKeys(), ", "), storage.ErrCredentials)
	}
	return auth, strings.Join(login, " and "), nil
}

// defaultKeys are DefaultKeys in the home directory.
func defaultKeys() []string {
	home, err := os.UserHomeDir()
	if err != nil {
		return nil
	}
	var out []string
	for _, k := range DefaultKeys {
		out = append(out, filepath.Join(home, k))
	}
	return out
}

// readKey reads a private key without a passphrase.
func readKey(file string) (ssh.Signer, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("sftp replica: read key-path %s: %w", file, err)
	}
	signer, err := ssh.ParsePrivateKey(pem)
	var pp *ssh.PassphraseMissingError
	if errors.As(err, &pp) {
		return nil, fmt.Errorf("sftp replica: key %s is protected by a passphrase, which Understudy cannot ask for; use a key without one (ssh-keygen -p -N '' -f KEY on a copy) and set key-path: %w", file, storage.ErrCredentials)
	} else if err != nil {
		return nil, fmt.Errorf("sftp replica: key %s is not a private key Understudy can read (%v); use an OpenSSH or PEM private key", file, err)
	}
	return signer, nil
}

// Sub is a client of the directory rel below this client's (one database
// of a directory entry). It shares this client's SSH connection, so
// thousands of databases cost one connection; closing either closes it
// for both.
func (c *Client) Sub(rel string) storage.Client {
	return &Client{link: c.link, dir: path.Join(c.dir, rel)}
}

// Dir returns the replica directory on the server.
func (c *Client) Dir() string { return c.dir }

// Addr returns the server's host:port.
func (c *Client) Addr() string { return c.addr }

// Type returns "sftp".
func (c *Client) Type() string { return Type }

// Close closes the connection, which the client shares with its parent and
// its Sub clients. None of them may be used afterwards.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	if c.conn != nil {
		err := c.conn.close()
		c.conn = nil
		return err
	}
	return nil
}

// close ends the SSH connection first: the SFTP session's Close waits for
// its reader, which only a closed transport stops when the server is gone.
func (cn *conn) close() error {
	err := cn.ssh.Close()
	_ = cn.sftp.Close()
	return err
}

// session returns the current connection, dialling one if there is none.
func (c *Client) session(ctx context.Context) (*conn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, fmt.Errorf("sftp replica %s: client is closed", c.where(""))
	}
	if c.conn != nil {
		select {
		case <-c.conn.done:
		default:
			return c.conn, nil
		}
	}
	cn, err := c.dial(ctx)
	if err != nil {
		return nil, err
	}
	c.conn = cn
	go func() {
		// Forget a connection once it breaks; the next request redials.
		_ = cn.ssh.Wait()
		close(cn.done)
		c.mu.Lock()
		if c.conn == cn {
			c.conn = nil
		}
		c.mu.Unlock()
		_ = cn.sftp.Close()
	}()
	go c.keepalive(cn)
	return cn, nil
}

// keepalive asks the server for a reply every interval. A connection that
// gives none within another interval (the server or the network gone
// without a reset, where TCP alone would wait for many minutes) is closed:
// the requests waiting on it fail, and the next request redials.
func (c *Client) keepalive(cn *conn) {
	tick := time.NewTicker(c.alive)
	defer tick.Stop()
	for {
		select {
		case <-cn.done:
			return
		case <-tick.C:
		}
		reply := make(chan struct{})
		go func() {
			// OpenSSH answers a global request it does not know with a
			// failure: any answer shows the connection is alive.
			_, _, _ = cn.ssh.SendRequest("keepalive@openssh.com", true, nil)
			close(reply)
		}()
		select {
		case <-reply:
		case <-cn.done:
			return
		case <-time.After(c.alive):
			c.drop(cn)
			return
		}
	}
}

// dial connects, checks the host key, logs in and starts the SFTP subsystem.
func (c *Client) dial(ctx context.Context) (*conn, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", c.addr)
	if err != nil {
		return nil, fmt.Errorf("sftp replica: connect to %s: %w (check host and port, and that the server runs)", c.addr, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = nc.Close() })
	sc, chans, reqs, err := ssh.NewClientConn(nc, c.addr, c.config)
	stop()
	if err != nil {
		_ = nc.Close()
		return nil, c.describeDial(ctx, err)
	}
	_ = nc.SetDeadline(time.Time{})
	sshc := ssh.NewClient(sc, chans, reqs)
	// Concurrent writes may leave holes in a temp file that fails half
	// way, which is never linked; they make an upload one pipelined stream.
	sc2, err := pkgsftp.NewClient(sshc, pkgsftp.UseConcurrentWrites(true))
	if err != nil {
		_ = sshc.Close()
		return nil, fmt.Errorf("sftp replica: start the SFTP subsystem on %s: %w (check that the server allows SFTP for %s)", c.addr, err, c.user)
	}
	return &conn{ssh: sshc, sftp: sc2, done: make(chan struct{})}, nil
}

// describeDial explains a failed SSH handshake: the host key, the login, or
// the network. The password never appears in it.
func (c *Client) describeDial(ctx context.Context, err error) error {
	var hk *hostKeyError
	switch {
	case errors.As(err, &hk):
		return hk
	case ctx.Err() != nil:
		return fmt.Errorf("sftp replica: connect to %s: no SSH handshake within %s: %w", c.addr, c.timeout, ctx.Err())
	case strings.Contains(err.Error(), "unable to authenticate"):
		return fmt.Errorf("sftp replica: %s refused the login of user %q with %s: %w (check user, key-path and password, and the server's authorized_keys)",
			c.addr, c.user, c.login, storage.ErrCredentials)
	}
	return fmt.Errorf("sftp replica: SSH handshake with %s: %w", c.addr, err)
}

// do runs fn on the connection. If ctx ends first the connection is closed
// (pkg/sftp requests cannot be cancelled one by one), fn's error is replaced
// by ctx's, and the next request redials. A broken connection is dropped.
func (c *Client) do(ctx context.Context, fn func(*pkgsftp.Client) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	cn, err := c.session(ctx)
	if err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { c.drop(cn) })
	err = fn(cn.sftp)
	if !stop() {
		return ctx.Err()
	}
	if errors.Is(err, pkgsftp.ErrSSHFxConnectionLost) {
		c.drop(cn)
	}
	return err
}

// drop closes cn and forgets it if it is still the current connection.
func (c *Client) drop(cn *conn) {
	c.mu.Lock()
	if c.conn == cn {
		c.conn = nil
	}
	c.mu.Unlock()
	_ = cn.close()
}

// where names a path on the server for messages: sftp://user@host:port/path.
func (c *Client) where(p string) string {
	if p == "" {
		p = c.dir
	}
	if !strings.HasPrefix(p, "/") {
		p = "/~/" + p
	}
	return "sftp://" + c.user + "@" + c.addr + p
}

// LevelDir is the directory of one level: <path>/ltx/<level>.
func (c *Client) LevelDir(level int) string {
	return path.Join(c.dir, LTXDir, strconv.Itoa(level))
}

// Path is the path on the server of one LTX file.
func (c *Client) Path(level int, minTXID, maxTXID ltx.TXID) string {
	return path.Join(c.LevelDir(level), storage.FormatFilename(minTXID, maxTXID))
}

// MetaDir is the directory of one level's sidecars.
func (c *Client) MetaDir(level int) string {
	return path.Join(c.dir, privateDir, metaDir, strconv.Itoa(level))
}

// ensureDir creates dir and its parents once per client.
func (c *Client) ensureDir(s *pkgsftp.Client, dir string) error {
	if _, ok := c.dirs.Load(dir); ok {
		return nil
	}
	if err := s.MkdirAll(dir); err != nil {
		return fmt.Errorf("sftp replica: create directory %s: %w (check that the user may write there)", c.where(dir), err)
	}
	c.dirs.Store(dir, true)
	return nil
}
