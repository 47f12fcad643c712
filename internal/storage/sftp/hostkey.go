package sftp

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// hostKeys checks server host keys against one known_hosts file.
type hostKeys struct {
	file  string
	check ssh.HostKeyCallback
	probe ssh.PublicKey // a key no server has, to list the known keys of a host
}

// loadHostKeys reads the known_hosts file (~/.ssh/known_hosts when empty).
func loadHostKeys(file string) (*hostKeys, error) {
	if file == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return nil, fmt.Errorf("sftp replica: no home directory for the default known_hosts file (%v); set known-hosts-path", err)
		}
		file = filepath.Join(home, DefaultKnownHosts)
	}
	check, err := knownhosts.New(file)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("sftp replica: known_hosts file %s does not exist: create it with the server's host key (ssh-keyscan -p PORT HOST >> %s, then check the fingerprint with ssh-keygen -lf %s), or set known-hosts-path", file, file, file)
	} else if err != nil {
		return nil, fmt.Errorf("sftp replica: read known_hosts file: %w", err)
	}
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, err
	}
	return &hostKeys{file: file, check: check, probe: signer.PublicKey()}, nil
}

// hostKeyError is a host key the known_hosts file does not vouch for.
type hostKeyError struct {
	msg string
}

func (e *hostKeyError) Error() string { return e.msg }

// callback is the ssh.HostKeyCallback: the key must be in the file.
func (h *hostKeys) callback(hostname string, remote net.Addr, key ssh.PublicKey) error {
	err := h.check(hostname, remote, key)
	if err == nil {
		return nil
	}
	fp := ssh.FingerprintSHA256(key)
	var ke *knownhosts.KeyError
	var re *knownhosts.RevokedError
	switch {
	case errors.As(err, &re):
		return &hostKeyError{fmt.Sprintf("sftp replica: the host key of %s (%s %s) is marked revoked in %s line %d; refusing to connect",
			hostname, key.Type(), fp, re.Revoked.Filename, re.Revoked.Line)}
	case errors.As(err, &ke) && len(ke.Want) == 0:
		host, port, _ := net.SplitHostPort(hostname)
		return &hostKeyError{fmt.Sprintf("sftp replica: host %s is unknown: its host key (%s %s) is not in %s. Check the fingerprint with the server's administrator, then add it (ssh-keyscan -p %s %s >> %s), or set known-hosts-path",
			hostname, key.Type(), fp, h.file, port, host, h.file)}
	case errors.As(err, &ke):
		w := ke.Want[0]
		return &hostKeyError{fmt.Sprintf("sftp replica: the host key of %s (%s %s) does not match the one in %s line %d: the server's key has changed, or another machine answers at that address; refusing to connect. If the change is expected, replace that line",
			hostname, key.Type(), fp, w.Filename, w.Line)}
	}
	return &hostKeyError{fmt.Sprintf("sftp replica: check the host key of %s against %s: %v", hostname, h.file, err)}
}

// algorithms returns the host key algorithms of the keys the file holds for
// addr, so that the handshake asks for a key the file can vouch for: a
// server with an ed25519 and an ECDSA key, listed in known_hosts by one of
// them, must not be asked for the other and then refused as changed. nil
// (the defaults) when the file has none for addr.
func (h *hostKeys) algorithms(addr string) []string {
	_, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	err := h.check(addr, &net.TCPAddr{IP: net.IPv4zero, Port: p}, h.probe)
	var ke *knownhosts.KeyError
	if !errors.As(err, &ke) {
		return nil
	}
	var algos []string
	seen := map[string]bool{}
	for _, k := range ke.Want {
		types := []string{k.Key.Type()}
		if k.Key.Type() == ssh.KeyAlgoRSA {
			// An RSA key signs with SHA-2 on current servers.
			types = []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA}
		}
		for _, t := range types {
			if !seen[t] {
				seen[t] = true
				algos = append(algos, t)
			}
		}
	}
	return algos
}
