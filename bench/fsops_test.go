package bench

// What a replicator does to a file replica, counted from outside: the files
// it created (a walk of the tree before and after), and every file-system
// call it made under the replica directory (strace attached to the daemon).
// For a file replica these are the closest thing to store requests: a
// directory read is what a LIST is on S3, a created file a PUT, an opened
// file a GET, an unlink a DELETE. Litestream's file replica client keeps no
// request counters of its own, so this is how its idle requests are seen.

import (
	"bufio"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// replicaFiles is the set of regular files under root, without temp files
// (a file that becomes an object is counted under its final name).
func replicaFiles(root string) map[string]bool {
	out := map[string]bool{}
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() && !strings.HasSuffix(p, ".tmp") {
			out[p] = true
		}
		return nil
	})
	return out
}

// newFiles counts the files in after that were not in before.
func newFiles(before, after map[string]bool) int {
	n := 0
	for p := range after {
		if !before[p] {
			n++
		}
	}
	return n
}

// fileWatch polls a tree every interval and remembers every file seen, so
// that a file created and deleted again between the first and last walk
// still counts (one created and deleted between two polls does not).
type fileWatch struct {
	root string
	seen map[string]bool
	base map[string]bool
	quit chan struct{}
	done chan struct{}
}

func watchFiles(root string, every time.Duration) *fileWatch {
	w := &fileWatch{root: root, base: replicaFiles(root), seen: map[string]bool{},
		quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-w.quit:
				return
			case <-tick.C:
				for p := range replicaFiles(root) {
					w.seen[p] = true
				}
			}
		}
	}()
	return w
}

// stop ends the watch and returns the number of files created during it.
func (w *fileWatch) stop() int {
	close(w.quit)
	<-w.done
	for p := range replicaFiles(w.root) {
		w.seen[p] = true
	}
	return newFiles(w.base, w.seen)
}

// fsOps counts file-system calls under a replica directory by kind.
type fsOps struct {
	list, read, create, del, stat, rename, other int
}

// requests is what an object store would have been asked: directory reads,
// file reads, creates and deletes (stats and renames are parts of these on
// a file replica and have no request of their own on S3).
func (o fsOps) requests() int { return o.list + o.read + o.create + o.del }

func (o fsOps) perMinute(d time.Duration) string {
	pm := func(n int) float64 { return float64(n) / d.Minutes() }
	return fmt.Sprintf("%.1f (list %.1f, read %.1f, create %.1f, delete %.1f; also stat %.1f, rename %.1f, other %.1f)",
		pm(o.requests()), pm(o.list), pm(o.read), pm(o.create), pm(o.del), pm(o.stat), pm(o.rename), pm(o.other))
}

// fsTrace is strace following every thread of a process.
type fsTrace struct {
	cmd *exec.Cmd
	out string
}

// startFSTrace attaches strace to pid, or returns nil when there is no
// strace (the column then says so). It waits until strace has attached.
func startFSTrace(t *testing.T, pid int) *fsTrace {
	t.Helper()
	strace, err := exec.LookPath("strace")
	if err != nil {
		return nil
	}
	out := filepath.Join(t.TempDir(), "strace.out")
	// -s 4096: paths in full (the default cuts strings at 32 bytes).
	cmd := exec.Command(strace, "-f", "-qq", "-s", "4096", "-e", "trace=%file,getdents64", "-o", out, "-p", fmt.Sprint(pid))
	if err := cmd.Start(); err != nil {
		t.Logf("strace: %v; idle file-system calls not counted", err)
		return nil
	}
	time.Sleep(500 * time.Millisecond) // attaching to each thread takes a moment
	return &fsTrace{cmd: cmd, out: out}
}

// stop detaches strace and counts the calls it saw under root.
func (f *fsTrace) stop(t *testing.T, root string) (fsOps, error) {
	t.Helper()
	_ = f.cmd.Process.Signal(syscall.SIGINT)
	_ = f.cmd.Wait()
	file, err := os.Open(f.out)
	if err != nil {
		return fsOps{}, err
	}
	defer file.Close()
	var ops fsOps
	sc := bufio.NewScanner(file)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		classifyCall(sc.Text(), root, &ops)
	}
	return ops, sc.Err()
}

// classifyCall counts one strace line ("PID name(args) = ret", or the first
// half of an unfinished call) when its first path argument is under root.
func classifyCall(line, root string, ops *fsOps) {
	open := strings.IndexByte(line, '(')
	q := strings.Index(line, `"`+root)
	if open < 0 || q < 0 || q < open {
		return
	}
	f := strings.Fields(line[:open])
	if len(f) == 0 {
		return
	}
	name := f[len(f)-1]
	rest := line[q+1:]
	path := rest[:max(strings.IndexByte(rest, '"'), 0)]
	args := rest[len(path):]
	switch name {
	case "open", "openat", "openat2", "creat":
		switch {
		case strings.Contains(args, "O_CREAT") || strings.Contains(args, "O_WRONLY") || strings.Contains(args, "O_RDWR"):
			ops.create++
		case strings.Contains(args, "O_DIRECTORY") || isDir(path):
			ops.list++
		default:
			ops.read++
		}
	case "unlink", "unlinkat", "rmdir":
		ops.del++
	case "stat", "lstat", "newfstatat", "fstatat64", "statx", "access", "faccessat", "faccessat2", "readlink", "readlinkat":
		ops.stat++
	case "rename", "renameat", "renameat2", "link", "linkat":
		ops.rename++
	default:
		ops.other++
	}
}

func isDir(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.IsDir()
}

// sortedKeys renders a map of counts as "k v, k v" in key order.
func sortedKeys(m map[string]float64) string {
	var out []string
	for k, v := range m {
		if v > 0 {
			out = append(out, fmt.Sprintf("%s %.0f", k, v))
		}
	}
	sort.Strings(out)
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, ", ")
}

func TestClassifyCall(t *testing.T) {
	root := t.TempDir()
	if err := os.Mkdir(filepath.Join(root, "ltx"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		line string
		want fsOps
	}{
		{`12 openat(AT_FDCWD, "` + root + `/ltx", O_RDONLY|O_CLOEXEC) = 7`, fsOps{list: 1}},
		{`12 openat(AT_FDCWD, "` + root + `/gone", O_RDONLY|O_CLOEXEC|O_DIRECTORY <unfinished ...>`, fsOps{list: 1}},
		{`12 openat(AT_FDCWD, "` + root + `/ltx/1-1.ltx", O_RDONLY|O_CLOEXEC) = -1 ENOENT`, fsOps{read: 1}},
		{`12 openat(AT_FDCWD, "` + root + `/ltx/1-1.ltx.tmp", O_RDWR|O_CREAT|O_TRUNC|O_CLOEXEC, 0644) = 8`, fsOps{create: 1}},
		{`12 unlinkat(AT_FDCWD, "` + root + `/ltx/1-1.ltx", 0) = 0`, fsOps{del: 1}},
		{`12 newfstatat(AT_FDCWD, "` + root + `/ltx", {st_mode=S_IFDIR|0755, ...}, 0) = 0`, fsOps{stat: 1}},
		{`12 renameat(AT_FDCWD, "` + root + `/a.tmp", AT_FDCWD, "` + root + `/a") = 0`, fsOps{rename: 1}},
		{`12 utimensat(AT_FDCWD, "` + root + `/a", [...], 0) = 0`, fsOps{other: 1}},
		{`12 openat(AT_FDCWD, "/elsewhere/app.db", O_RDWR|O_CLOEXEC) = 3`, fsOps{}},
		{`12 <... openat resumed>) = 7`, fsOps{}},
		{`12 getdents64(7, 0xc000 /* 3 entries */, 8192) = 80`, fsOps{}},
	} {
		var got fsOps
		classifyCall(tc.line, root, &got)
		if got != tc.want {
			t.Errorf("classifyCall(%q) = %+v, want %+v", tc.line, got, tc.want)
		}
	}
}
