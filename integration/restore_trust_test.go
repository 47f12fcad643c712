package integration

import (
	"bytes"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/internal/ltxtest"
)

// Issue 10 items 2, 7 and 8, and the restore CLI's operability: each test
// runs the real binary against real SQLite files, file replicas and, where
// the store matters, a real versitygw.

// history is a replicated database with a record of what it held at each
// shipped TXID.
type history struct {
	s       *stack
	app     *sql.DB
	digests map[ltx.TXID][32]byte
	last    image
	newest  ltx.TXID
}

// shipHistory fills a stack's database with rows of size bytes before the
// daemon starts (the first snapshot then holds them), replicates n small
// commits, each waited for, and stops the daemon.
func shipHistory(t *testing.T, s *stack, rows, size, n int) *history {
	t.Helper()
	h := &history{s: s, app: openDB(t, s.dbPath), digests: map[ltx.TXID][32]byte{}}
	mustExec(t, h.app, `CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)`)
	mustExec(t, h.app, `WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < ?)
		INSERT INTO t(v) SELECT randomblob(?) FROM c`, rows, size)
	d := s.replicate(t)
	for i := 0; i < n; i++ {
		mustExec(t, h.app, `INSERT INTO t(v) VALUES (randomblob(3000))`)
		h.last = snapshotImage(t, h.app)
		h.newest = s.waitShipped(t, h.last)
		h.digests[h.newest] = pageDigest(slices.Values(h.last.pages))
	}
	if code := d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("replicate exit code after SIGTERM = %d", code)
	}
	return h
}

// restoreOK runs a restore that must succeed and returns its output path
// and stderr (the log).
func restoreOK(t *testing.T, env []string, url string, args ...string) (string, string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "restored.db")
	res := run(t, env, append(append([]string{"restore", "-o", out}, args...), url)...)
	if res.code != 0 {
		t.Fatalf("restore %s %v: exit %d\n%s%s", url, args, res.code, res.stdout, res.stderr)
	}
	return out, res.stderr
}

// flipFileByte inverts the byte at fraction at (0..1) of a file's length
// and returns the function that flips it back.
func flipFileByte(t *testing.T, path string, at float64) (undo func()) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return flipFileAt(t, path, int64(float64(st.Size()-1)*at))
}

// flipFileAt inverts the byte at offset off of a file and returns the
// function that flips it back.
func flipFileAt(t *testing.T, path string, off int64) (undo func()) {
	t.Helper()
	flip := func() {
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		b := make([]byte, 1)
		if _, err := f.ReadAt(b, off); err != nil {
			t.Fatal(err)
		}
		b[0] ^= 0xff
		if _, err := f.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
	}
	flip()
	return flip
}

// headerTime is the commit time in the LTX header of one file, as
// `understudy ltx -json` lists it.
func headerTime(t *testing.T, url string, level int, txid ltx.TXID) time.Time {
	t.Helper()
	res := run(t, nil, "ltx", "-json", "-level", fmt.Sprint(level), url)
	if res.code != 0 {
		t.Fatalf("ltx -json: exit %d\n%s", res.code, res.stderr)
	}
	var rows []struct {
		MinTXID   ltx.TXID   `json:"min_txid"`
		MaxTXID   ltx.TXID   `json:"max_txid"`
		Timestamp *time.Time `json:"timestamp"`
	}
	if err := json.Unmarshal([]byte(res.stdout), &rows); err != nil {
		t.Fatalf("ltx -json: %v\n%s", err, res.stdout)
	}
	for _, r := range rows {
		if r.MinTXID == txid && r.MaxTXID == txid && r.Timestamp != nil {
			return *r.Timestamp
		}
	}
	t.Fatalf("ltx -json lists no L%d file %s with a time", level, txid)
	return time.Time{}
}

// s3ObjectPath is where versitygw's POSIX backend keeps an object of the
// stack's S3 replica (prefix "app", level as 4 hex digits).
func (s *stack) s3ObjectPath(level int, min, max ltx.TXID) string {
	return filepath.Join(s.s3.DataDir, s.bucket, "app", fmt.Sprintf("%04x", level), ltx.FormatFilename(min, max))
}

func (s *stack) fileObjectPath(level int, min, max ltx.TXID) string {
	return filepath.Join(s.fileReplica, "ltx", fmt.Sprint(level), ltx.FormatFilename(min, max))
}

func ltxName(level int, min, max ltx.TXID) string { return fmt.Sprintf("L%d %s-%s", level, min, max) }

// TestRestoreRefusesForeignObjectWithoutMetadata is issue 10 item 2:
// another database's LTX file dropped into the replica as the next TXID
// with a plain copy (no metadata) passes its file checksum. The restore
// must exit non-zero with nothing at the output path and name the object
// and the way out, whether the structural checks (the follower's page-gap
// check) catch it or only SQLite's quick_check does, which runs by default
// on a result no database checksum proves. -skip-integrity-check skips it.
func TestRestoreRefusesForeignObjectWithoutMetadata(t *testing.T) {
	a := newStack(t, false)
	a.withDBKeys(t, "    levels: [1h]\n")
	ha := shipHistory(t, a, 10, 1000, 5)
	next := ha.newest + 1
	dst := a.fileObjectPath(0, next, next)
	fileURL := a.replicaURLs()[0]

	// A second, bigger database replicated long enough to have a TXID next.
	b := newStack(t, false)
	b.withDBKeys(t, "    levels: [1h]\n")
	hb := shipHistory(t, b, 200, 4000, int(next)+1)
	if hb.newest < next {
		t.Fatalf("the other database reached TXID %s only, want %s", hb.newest, next)
	}

	t.Run("another database's file: page gap", func(t *testing.T) {
		data, err := os.ReadFile(b.fileObjectPath(0, next, next))
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, dst, string(data)) // a plain copy: no extended attributes
		defer os.Remove(dst)
		msg := restoreFailure(t, nil, fileURL)
		wantAll(t, msg, ltxName(0, next, next), "foreign object", "gap past the end of the database",
			"-txid "+ha.newest.String(), "move the bad object aside", dst)
	})

	t.Run("same size, malformed: quick_check by default", func(t *testing.T) {
		pageSize := uint32(len(ha.last.pages[0]))
		garbage := bytes.Repeat([]byte{0xab}, int(pageSize))
		// Page 1 as it is (the size stays), page 2 (the table's root)
		// from somewhere else: no structural check can tell.
		data := ltxtest.Encode(t, pageSize, uint32(len(ha.last.pages)), next, next, time.Now(), []uint32{1, 2}, func(pgno uint32) []byte {
			if pgno == 1 {
				return ha.last.pages[0]
			}
			return garbage
		})
		writeFile(t, dst, string(data))
		defer os.Remove(dst)
		msg := restoreFailure(t, nil, fileURL)
		wantAll(t, msg, ltxName(0, next, next), "quick_check", "carry no understudy metadata",
			"-txid "+ha.newest.String(), dst)

		// Skipping the check is explicit, documented, and warned about.
		out, log := restoreOK(t, nil, fileURL, "-skip-integrity-check")
		wantAll(t, log, "skipping the integrity check", "verified=false")
		if _, err := os.Stat(out); err != nil {
			t.Fatal(err)
		}
		help := run(t, nil, "restore", "-h")
		wantAll(t, help.stdout+help.stderr, "-skip-integrity-check", "quick_check")
	})

	// With the object gone again, the newest position restores, proven.
	out, log := restoreOK(t, nil, fileURL)
	if got := filePageDigest(t, out, len(ha.last.pages[0])); got != ha.digests[ha.newest] {
		t.Fatalf("restore after removing the foreign file differs from the primary at TXID %s", ha.newest)
	}
	wantAll(t, log, "verified=true")
}

// TestRestoreRoutesAroundBadSnapshot is issue 10 item 7's snapshot case,
// on a file replica and on versitygw: one flipped byte in the only L9
// snapshot (1-1) must not fail every restore when L0 file 1 is an intact
// full image of the same TXID. Latest and -txid restore byte-identically
// and the log names what was skipped. A bad newest L0, which no other file
// covers, fails with the object, its location and the -txid way out, and
// that way out works.
func TestRestoreRoutesAroundBadSnapshot(t *testing.T) {
	s := newStack(t, true)
	s.withDBKeys(t, "    levels: [1h]\n")
	h := shipHistory(t, s, 300, 3000, 6)
	// A recorded TXID in the middle, for a restore by -txid.
	var recorded []ltx.TXID
	for txid := range h.digests {
		recorded = append(recorded, txid)
	}
	slices.Sort(recorded)
	mid := recorded[len(recorded)/2]
	ps := len(h.last.pages[0])
	snap := ltxName(9, 1, 1)
	for i, url := range s.replicaURLs() {
		paths := []func(int, ltx.TXID, ltx.TXID) string{s.fileObjectPath, s.s3ObjectPath}
		path := paths[i]
		t.Run(strings.SplitN(url, ":", 2)[0], func(t *testing.T) {
			defer flipFileByte(t, path(9, 1, 1), 0.5)()
			for _, target := range []ltx.TXID{0, mid} {
				var args []string
				want := h.newest
				if target != 0 {
					args, want = []string{"-txid", target.String()}, target
				}
				out, log := restoreOK(t, s.env, url, args...)
				if got := filePageDigest(t, out, ps); got != h.digests[want] {
					t.Errorf("restore %v: pages differ from the primary's at TXID %s", args, want)
				}
				wantAll(t, log, "skipping a bad object", snap, "corrupt object", "verified=true")
			}

			// The newest L0 bad as well: no path to the newest position.
			newest := path(0, h.newest, h.newest)
			defer flipFileByte(t, newest, 0.5)()
			msg := restoreFailure(t, s.env, url)
			wantAll(t, msg, ltxName(0, h.newest, h.newest), "corrupt object",
				"no restore path to TXID "+h.newest.String(), "-txid "+(h.newest-1).String(), "move the bad object aside")
			if i == 0 {
				wantAll(t, msg, newest)
			} else {
				wantAll(t, msg, "s3://"+s.bucket+"/app/0000/"+ltx.FormatFilename(h.newest, h.newest))
			}
			out, _ := restoreOK(t, s.env, url, "-txid", (h.newest - 1).String())
			if got := filePageDigest(t, out, ps); got != h.digests[h.newest-1] {
				t.Errorf("the suggested -txid %s restores pages that differ from the primary's", h.newest-1)
			}
		})
	}
}

// TestRestoreRoutesAroundBadCompaction is issue 10 item 7's compaction case:
// a corrupt L1 file no longer blocks the newest restore when the L0 files
// it covers are intact. With one of those L0 files bad as well, no path is
// left and the message says how far a restore can go.
func TestRestoreRoutesAroundBadCompaction(t *testing.T) {
	s := newStack(t, false)
	s.withDBKeys(t, "    levels: [1s]\n    l0-retention: 1h\n")
	h := &history{s: s, app: openDB(t, s.dbPath), digests: map[ltx.TXID][32]byte{}}
	mustExec(t, h.app, `CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)`)
	d := s.replicate(t)
	l1Dir := filepath.Join(s.fileReplica, "ltx", "1")
	// Commit until an L1 file that does not start at TXID 1 is followed by
	// more TXIDs: that file is in the newest restore's plan.
	var l1 [2]ltx.TXID
	eventually(t, 60*time.Second, "an L1 compaction after the first", func() bool {
		mustExec(t, h.app, `INSERT INTO t(v) VALUES (randomblob(3000))`)
		h.last = snapshotImage(t, h.app)
		h.newest = s.waitShipped(t, h.last)
		h.digests[h.newest] = pageDigest(slices.Values(h.last.pages))
		for _, r := range levelRanges(t, l1Dir) {
			if r[0] > 1 && r[1]-r[0] >= 1 && r[1] < h.newest && r[1] > l1[1] {
				l1 = r
			}
		}
		return l1[1] != 0
	})
	if code := d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("replicate exit code after SIGTERM = %d", code)
	}
	url := s.replicaURLs()[0]
	ps := len(h.last.pages[0])
	bad := ltxName(1, l1[0], l1[1])

	// By time: the commit time of TXID l1[1] is read from the L0 file's
	// header; with that header bad, from the L1 file's.
	ts := headerTime(t, url, 0, l1[1])
	undo := flipFileAt(t, s.fileObjectPath(0, l1[1], l1[1]), 10) // the header's page size field
	out, log := restoreOK(t, nil, url, "-timestamp", ts.Format(time.RFC3339Nano))
	if got := filePageDigest(t, out, ps); got != h.digests[l1[1]] {
		t.Errorf("restore -timestamp %s around a bad header: pages differ from the primary's at TXID %s", ts.Format(time.RFC3339Nano), l1[1])
	}
	wantAll(t, log, "skipping a bad object", ltxName(0, l1[1], l1[1]), "txid="+l1[1].String())
	undo()

	defer flipFileByte(t, s.fileObjectPath(1, l1[0], l1[1]), 0.5)()
	out, log = restoreOK(t, nil, url)
	if got := filePageDigest(t, out, ps); got != h.digests[h.newest] {
		t.Errorf("restore around %s: pages differ from the primary's at TXID %s", bad, h.newest)
	}
	wantAll(t, log, "skipping a bad object", bad, "verified=true")

	inside := l1[0] + 1
	defer flipFileByte(t, s.fileObjectPath(0, inside, inside), 0.5)()
	msg := restoreFailure(t, nil, url)
	wantAll(t, msg, bad, ltxName(0, inside, inside), "no restore path to TXID "+h.newest.String(),
		"-txid "+(inside-1).String(), s.fileObjectPath(0, inside, inside))
}

// stallingProxy is an S3 front that passes every request to the store but
// stops the body of any object download after its first stallAfter bytes,
// until the client goes away: a restore through it is in the middle of
// its download for as long as the test wants.
type stallingProxy struct {
	srv     *httptest.Server
	once    sync.Once
	stalled chan struct{} // closed when a download first stalls
}

const stallAfter = 64 << 10

func startStallingProxy(t *testing.T, upstream string) *stallingProxy {
	t.Helper()
	target, err := url.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	p := &stallingProxy{stalled: make(chan struct{})}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ModifyResponse = func(resp *http.Response) error {
		if resp.Request.Method == http.MethodGet && resp.ContentLength > stallAfter {
			resp.Body = &stallingBody{r: resp.Body, p: p, done: resp.Request.Context().Done()}
		}
		return nil
	}
	p.srv = httptest.NewServer(rp)
	t.Cleanup(p.srv.Close)
	return p
}

type stallingBody struct {
	r    io.ReadCloser
	p    *stallingProxy
	done <-chan struct{}
	n    int
}

func (b *stallingBody) Read(buf []byte) (int, error) {
	if b.n >= stallAfter {
		b.p.once.Do(func() { close(b.p.stalled) })
		<-b.done
		return 0, io.ErrUnexpectedEOF
	}
	if len(buf) > stallAfter-b.n {
		buf = buf[:stallAfter-b.n]
	}
	n, err := b.r.Read(buf)
	b.n += n
	return n, err
}

func (b *stallingBody) Close() error { return b.r.Close() }

// TestRestoreInterrupted is issue 10 item 8: SIGINT, SIGINT to a restore
// started by a non-interactive shell (which runs it with SIGINT ignored),
// SIGTERM, and Ctrl-C typed on the terminal the restore runs on (with its
// progress bar), each while the restore is in the middle of downloading the
// snapshot from S3: the restore stops, removes its temp file, writes nothing
// to the output path and exits non-zero.
func TestRestoreInterrupted(t *testing.T) {
	s := newStack(t, true)
	s.withDBKeys(t, "    levels: [1h]\n")
	shipHistory(t, s, 500, 4000, 2) // a 2 MB snapshot
	for _, tc := range []struct {
		name     string
		sig      syscall.Signal
		ignored  bool   // started with SIGINT ignored, as `sh -c 'cmd &'` does
		terminal bool   // run on a terminal (progress bar) and stopped with Ctrl-C
		says     string // the signal's name in the message
	}{
		{"SIGINT", syscall.SIGINT, false, false, "SIGINT"},
		{"SIGINT ignored by the starting shell", syscall.SIGINT, true, false, "SIGINT"},
		{"SIGTERM", syscall.SIGTERM, false, false, "SIGTERM"},
		{"Ctrl-C on a terminal", syscall.SIGINT, false, true, "SIGINT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			proxy := startStallingProxy(t, s.s3.Endpoint)
			url := fmt.Sprintf("s3://%s/app?endpoint=%s&region=us-east-1&force-path-style=true", s.bucket, proxy.srv.URL)
			dir := t.TempDir()
			out := filepath.Join(dir, "restored.db")
			args := []string{"restore", "-o", out, url}
			var d *daemon
			var term *os.File // the terminal's master side, for a Ctrl-C
			if tc.terminal {
				d, term = startOnTerminal(t, s.env, understudyBin(t), args...)
			} else if tc.ignored {
				d = startCommand(t, s.env, "sh", append([]string{"-c", `trap "" INT; exec "$0" "$@"`, understudyBin(t)}, args...)...)
			} else {
				d = start(t, s.env, args...)
			}
			select {
			case <-proxy.stalled:
			case <-d.done:
				t.Fatalf("restore exited before its download stalled:\n%s", d.out.String())
			case <-time.After(60 * time.Second):
				t.Fatalf("the restore's download never reached the proxy's stall:\n%s", d.out.String())
			}
			if tmp, _ := filepath.Glob(filepath.Join(dir, ".restored.db.restore-*.tmp")); len(tmp) != 1 {
				t.Fatalf("while downloading, the output directory holds temp files %v, want one", tmp)
			}
			var code int
			if term != nil {
				// Ctrl-C: the terminal sends SIGINT to its foreground
				// process group.
				if _, err := term.Write([]byte{0x03}); err != nil {
					t.Fatal(err)
				}
				code = d.wait(t, 30*time.Second)
			} else {
				code = d.stop(t, tc.sig, 30*time.Second)
			}
			if code == 0 {
				t.Fatalf("exit 0 after %s:\n%s", tc.sig, d.out.String())
			}
			wantAll(t, d.out.String(), "interrupted by "+tc.says, "nothing was written to "+out)
			entries, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range entries {
				t.Errorf("interrupted restore left %s behind", e.Name())
			}
			t.Logf("exit %d: %s", code, strings.TrimSpace(tailLines(d.out.String(), 1)))
		})
	}
}

// startOnTerminal starts bin with a new pseudo-terminal as its controlling
// terminal, stdin, stdout and stderr, in its own session (so it is the
// terminal's foreground process group), and returns the terminal's master
// side. Everything the program writes is collected in the daemon's output.
func startOnTerminal(t *testing.T, env []string, bin string, args ...string) (*daemon, *os.File) {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	t.Cleanup(func() { master.Close() })
	var n uint32
	if err := ioctl(master, syscall.TIOCGPTN, uintptr(unsafe.Pointer(&n))); err != nil {
		t.Fatalf("TIOCGPTN: %v", err)
	}
	var unlock int32
	if err := ioctl(master, syscall.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock))); err != nil {
		t.Fatalf("TIOCSPTLCK: %v", err)
	}
	slave, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here (/dev/pts): %v", err)
	}
	defer slave.Close() // the child has its own copies
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	d := &daemon{cmd: cmd, out: &syncBuffer{}, done: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s on a terminal: %v", bin, err)
	}
	// Drain the terminal (a full one would block the program) until the
	// program's side is closed, so its last words are in d.out by the time
	// d.done says it exited.
	drained := make(chan struct{})
	go func() { io.Copy(d.out, master); close(drained) }()
	go func() { d.waitErr = cmd.Wait(); <-drained; close(d.done) }()
	t.Cleanup(d.kill)
	return d, master
}

func ioctl(f *os.File, req, arg uintptr) error {
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), req, arg); errno != 0 {
		return errno
	}
	return nil
}

// startCommand is start for any program.
func startCommand(t *testing.T, env []string, name string, args ...string) *daemon {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	d := &daemon{cmd: cmd, out: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = d.out, d.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { d.waitErr = cmd.Wait(); close(d.done) }()
	t.Cleanup(d.kill)
	return d
}

// TestRestoreCLIInputs: the listings say when a path holds nothing instead
// of printing an empty table, an empty -txid or -timestamp is refused
// instead of meaning "latest", and the restored file's mode follows the
// umask as a database SQLite creates does.
func TestRestoreCLIInputs(t *testing.T) {
	s := newStack(t, true)
	s.withDBKeys(t, "    levels: [1h]\n")
	h := shipHistory(t, s, 10, 1000, 2)
	fileURL, s3URL := s.replicaURLs()[0], s.replicaURLs()[1]

	t.Run("listing a path that holds nothing", func(t *testing.T) {
		missing := filepath.Join(s.dir, "replcia") // a typo
		wrongPrefix := strings.Replace(s3URL, "/app?", "/ap?", 1)
		for _, tc := range []struct{ url, want string }{
			{"file://" + missing, "the directory " + missing + " does not exist"},
			{wrongPrefix, "holds no LTX files in any level"},
		} {
			for _, cmd := range [][]string{{"ltx"}, {"ltx", "-json"}, {"snapshots"}} {
				res := run(t, s.env, append(cmd, tc.url)...)
				if res.code == 0 {
					t.Errorf("%v %s: exit 0, stdout %q", cmd, tc.url, res.stdout)
				}
				wantAll(t, res.stderr, "holds no LTX files", tc.want)
			}
		}
		// A real replica still lists, exit 0.
		if res := run(t, s.env, "ltx", fileURL); res.code != 0 || !strings.Contains(res.stdout, h.newest.String()) {
			t.Errorf("ltx %s: exit %d, stdout %q", fileURL, res.code, res.stdout)
		}
	})

	t.Run("empty -txid and -timestamp", func(t *testing.T) {
		wantAll(t, restoreFailure(t, s.env, fileURL, "-txid", ""), "-txid is empty")
		wantAll(t, restoreFailure(t, s.env, s3URL, "-timestamp", ""), "-timestamp is empty")
	})

	t.Run("mode follows the umask", func(t *testing.T) {
		for _, tc := range []struct {
			umask string
			want  os.FileMode
		}{{"022", 0o644}, {"027", 0o640}, {"077", 0o600}} {
			out := filepath.Join(t.TempDir(), "restored.db")
			res, err := runCmd("sh", []string{"-c", "umask " + tc.umask + ` && exec "$0" "$@"`, understudyBin(t), "restore", "-o", out, fileURL},
				func(cmd *exec.Cmd) { cmd.Env = append(os.Environ(), s.env...) })
			if err != nil || res.code != 0 {
				t.Fatalf("restore with umask %s: %v, exit %d\n%s", tc.umask, err, res.code, res.stderr)
			}
			st, err := os.Stat(out)
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Perm() != tc.want {
				t.Errorf("umask %s: restored file has mode %o, want %o", tc.umask, st.Mode().Perm(), tc.want)
			}
		}
	})
}
