package bench

// Many busy databases in one daemon: a dir: entry of N databases (default
// 1,000), each committing one transaction a second from a writer inside
// this test (one goroutine and one connection per database, sleeping
// between commits so that the writer's own CPU stays small). For every
// commit it measures the ship latency: from the commit returning to the
// L0 file that contains it appearing in the store. The store's L0
// directories are watched with inotify (for S3, versitygw's own data
// directory), and each new L0 file is decoded afterwards: the highest
// rowid in the table's leaf page says which commits it holds. Also: the
// daemon's RSS and CPU, its store requests a minute, and where the time
// went (commit -> the sync that read it, from the L0 header's timestamp;
// that timestamp -> the file in the store). Run:
//
//	UNDERSTUDY_BENCH=1 UNDERSTUDY_BIN=$PWD/bin/understudy UNDERSTUDY_TOOLS_BIN=$PWD/.tools/bin \
//	  [UNDERSTUDY_BENCH_BUSY=1000] [UNDERSTUDY_BENCH_BUSY_SECONDS=60] [UNDERSTUDY_BENCH_BUSY_STORES=file,s3] \
//	  go test -count=1 -run TestManyBusyBench -v -timeout 60m ./bench/

import (
	"bytes"
	"database/sql"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/superfly/ltx"
	"golang.org/x/sys/unix"

	"github.com/understudy-db/understudy/integration/harness"
)

// busyStore is one store for the busy bench: the replica's YAML (under
// `replica:`), the environment the daemon needs, and where database
// NAME's L0 objects appear as files on this machine.
type busyStore struct {
	name    string
	replica string
	env     []string
	l0Dir   func(db string) string
}

func busyStores(t *testing.T, names []string) []func(t *testing.T) busyStore {
	t.Helper()
	var out []func(t *testing.T) busyStore
	for _, n := range names {
		switch n {
		case "file":
			out = append(out, func(t *testing.T) busyStore {
				store := filepath.Join(t.TempDir(), "store")
				return busyStore{name: "file", replica: "      url: file://" + store + "\n",
					l0Dir: func(db string) string { return filepath.Join(store, db, "ltx", "0") }}
			})
		case "s3":
			out = append(out, func(t *testing.T) busyStore {
				s := harness.StartVersityGW(t)
				bucket := s.NewBucket(t)
				url := fmt.Sprintf("s3://%s/app?endpoint=%s&region=%s&force-path-style=true", bucket, s.Endpoint, s.Region)
				return busyStore{name: "s3 (versitygw)", replica: fmt.Sprintf("      url: '%s'\n", url),
					env:   []string{"AWS_ACCESS_KEY_ID=" + s.AccessKey, "AWS_SECRET_ACCESS_KEY=" + s.SecretKey},
					l0Dir: func(db string) string { return filepath.Join(s.DataDir, bucket, "app", db, "0000") }}
			})
		default:
			t.Fatalf("UNDERSTUDY_BENCH_BUSY_STORES: unknown store %q (file, s3)", n)
		}
	}
	return out
}

// l0Event is one L0 file seen in the store: which database, its path and
// when it appeared.
type l0Event struct {
	db   int
	path string
	at   time.Time
}

// l0Watch watches the L0 directories of every database with one inotify
// descriptor and records each new .ltx file's arrival. A file store links
// the finished file into place (IN_CREATE); versitygw renames or links it
// (IN_MOVED_TO or IN_CREATE). Temp files are skipped by name.
type l0Watch struct {
	fd     int
	wd     map[int32]int // watch descriptor -> database index
	mu     sync.Mutex
	events []l0Event
	done   chan struct{}
	err    error
}

func watchL0(t *testing.T, dirs []string) *l0Watch {
	t.Helper()
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC)
	if err != nil {
		t.Fatalf("inotify: %v", err)
	}
	w := &l0Watch{fd: fd, wd: map[int32]int{}, done: make(chan struct{})}
	for i, d := range dirs {
		wd, err := unix.InotifyAddWatch(fd, d, unix.IN_CREATE|unix.IN_MOVED_TO)
		if err != nil {
			unix.Close(fd)
			t.Fatalf("inotify watch %s: %v (the first start should have made it)", d, err)
		}
		w.wd[int32(wd)] = i
	}
	go w.run(dirs)
	return w
}

func (w *l0Watch) run(dirs []string) {
	defer close(w.done)
	buf := make([]byte, 1<<20)
	for {
		n, err := unix.Read(w.fd, buf)
		if err != nil {
			if err != unix.EINTR {
				w.err = err
				return
			}
			continue
		}
		now := time.Now()
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			name := strings.TrimRight(string(buf[off+unix.SizeofInotifyEvent:off+unix.SizeofInotifyEvent+int(ev.Len)]), "\x00")
			off += unix.SizeofInotifyEvent + int(ev.Len)
			if ev.Mask&unix.IN_IGNORED != 0 {
				continue
			}
			if ev.Mask&unix.IN_Q_OVERFLOW != 0 {
				w.err = fmt.Errorf("inotify queue overflow: events were lost")
				return
			}
			db, ok := w.wd[ev.Wd]
			if !ok || !strings.HasSuffix(name, ".ltx") || strings.Count(name, "-") != 1 {
				continue
			}
			w.mu.Lock()
			w.events = append(w.events, l0Event{db: db, path: filepath.Join(dirs[db], name), at: now})
			w.mu.Unlock()
		}
	}
}

// stop closes the descriptor (which ends the reader) and returns the
// events.
func (w *l0Watch) stop(t *testing.T) []l0Event {
	t.Helper()
	for wd := range w.wd {
		_, _ = unix.InotifyRmWatch(w.fd, uint32(wd))
	}
	// A watch removal wakes the blocked read with IN_IGNORED; closing the
	// descriptor then makes the next read fail.
	unix.Close(w.fd)
	select {
	case <-w.done:
	case <-time.After(5 * time.Second):
	}
	if w.err != nil && w.err != unix.EBADF {
		t.Fatalf("inotify: %v", w.err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.events
}

// l0Rows reads an L0 file and returns its header timestamp and the highest
// rowid it holds of table t: the last cell of each table b-tree leaf page
// in it, other than page 1 (the schema's). t is the database's only table
// and rows are only appended, so the leaf holding the newest row is in
// every file that adds one. ok is false when the file holds no such page.
func l0Rows(path string) (ts time.Time, maxRow int64, ok bool, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return time.Time{}, 0, false, err
	}
	dec := ltx.NewDecoder(bytes.NewReader(b))
	if err := dec.DecodeHeader(); err != nil {
		return time.Time{}, 0, false, fmt.Errorf("%s: %w", path, err)
	}
	h := dec.Header()
	data := make([]byte, h.PageSize)
	for {
		var ph ltx.PageHeader
		if err := dec.DecodePage(&ph, data); err == io.EOF {
			break
		} else if err != nil {
			return time.Time{}, 0, false, fmt.Errorf("%s: %w", path, err)
		}
		if ph.Pgno == 1 || data[0] != 0x0d {
			continue
		}
		if r := leafMaxRowid(data); !ok || r > maxRow {
			maxRow, ok = r, true
		}
	}
	return time.UnixMilli(h.Timestamp), maxRow, ok, nil
}

// leafMaxRowid is the rowid of the last cell of a table b-tree leaf page
// (cells are in rowid order; a cell is a payload-size varint, then the
// rowid varint).
func leafMaxRowid(page []byte) int64 {
	n := int(binary.BigEndian.Uint16(page[3:5]))
	if n == 0 {
		return 0
	}
	cell := int(binary.BigEndian.Uint16(page[8+2*(n-1):]))
	_, k := sqliteVarint(page[cell:])
	v, _ := sqliteVarint(page[cell+k:])
	return int64(v)
}

// sqliteVarint decodes SQLite's big-endian varint (1-9 bytes).
func sqliteVarint(b []byte) (uint64, int) {
	var v uint64
	for i := 0; i < 8 && i < len(b); i++ {
		v = v<<7 | uint64(b[i]&0x7f)
		if b[i]&0x80 == 0 {
			return v, i + 1
		}
	}
	if len(b) > 8 {
		return v<<8 | uint64(b[8]), 9
	}
	return v, len(b)
}

// busyCommit is one commit of the writer: its rowid and when it returned.
type busyCommit struct {
	row int64
	at  time.Time
}

func TestManyBusyBench(t *testing.T) {
	bin := benchBin(t)
	n := envInt(t, "UNDERSTUDY_BENCH_BUSY", 1000)
	run := envDuration(t, "UNDERSTUDY_BENCH_BUSY_SECONDS", time.Minute)
	const warm = 5 * time.Second // after every database is active: each syncing on its own schedule
	stores := []string{"file"}
	if v := os.Getenv("UNDERSTUDY_BENCH_BUSY_STORES"); v != "" {
		stores = strings.Split(v, ",")
	}
	type busyRow struct {
		store               string
		commits, files      int
		unshipped           int
		p50, p99, max       time.Duration
		toSync99, toStore99 time.Duration
		late, lateSync      int
		cpuPct, writerPct   float64
		rssMB, peakMB       float64
		reqPerMin, filesMin float64
		fds                 int
		loadStart, loadEnd  string
		wake, syncs         string
	}
	fmt.Printf("\nMany busy databases: %d databases in one dir: entry, each 1 tx/s (one 1-row insert), %s measured from %s after every database is active (the first commits wake them from parked), default 1 s sync interval; target p99 <= 1.1 s\n\n", n, run, warm)
	fmt.Println("| store | all woken (parked -> active) | commits measured | ship latency p50 | p99 | max | over 1.1 s (of them, read by a sync > 1 s after the commit) | not shipped | p99 commit -> sync read it (L0 timestamp) | p99 L0 timestamp -> in the store | L0 files/min | store requests/min | daemon CPU (one core) | daemon RSS end / peak | fds | daemon fsyncs (strace, 5 s after) | writer CPU (this test) | load start -> end |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, start := range busyStores(t, stores) {
		st := start(t)
		row := busyRow{store: st.name, loadStart: loadAvg()}
		root := t.TempDir()
		dir := filepath.Join(root, "dir")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		createDBs(t, dir, n)
		addr := freeAddr(t)
		cfg := filepath.Join(root, "understudy.yml")
		if err := os.WriteFile(cfg, []byte(fmt.Sprintf("addr: %s\ndbs:\n  - dir: %s\n    watch: true\n    replica:\n%s", addr, dir, st.replica)), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "replicate", "-config", cfg)
		cmd.Env = append(os.Environ(), st.env...)
		d := startDaemon(t, cmd)
		names := make([]string, n)
		l0Dirs := make([]string, n)
		for i := range n {
			names[i] = fmt.Sprintf("t%05d.db", i)
			l0Dirs[i] = st.l0Dir(names[i])
		}
		// Every database shipped (its L0 directory exists in the store)
		// and parked.
		first, ok := waitFor(30*time.Minute, func() bool {
			if c, err := dirStatus(addr); err != nil || c.Databases != n || c.Parked != n {
				return false
			}
			for _, l0 := range l0Dirs {
				if _, err := os.Stat(l0); err != nil {
					return false
				}
			}
			return true
		})
		d.alive(t)
		if !ok {
			c, err := dirStatus(addr)
			b, _ := os.ReadFile(d.log)
			t.Fatalf("%s: %d databases not all shipped and parked after %s (status %+v %v)\n%s", st.name, n, first, c, err, tail(string(b), 3000))
		}
		t.Logf("%s: first start of %d databases: %s", st.name, n, first.Round(100*time.Millisecond))

		w := watchL0(t, l0Dirs)

		// The writer: one connection per database, commits spread evenly
		// over each second.
		conns := make([]*sql.DB, n)
		for i := range n {
			db, err := sql.Open("sqlite3", "file:"+filepath.Join(dir, names[i])+"?_journal_mode=WAL&_synchronous=NORMAL&_busy_timeout=5000")
			if err != nil {
				t.Fatal(err)
			}
			db.SetMaxOpenConns(1)
			conns[i] = db
		}
		commits := make([][]busyCommit, n)
		var wg sync.WaitGroup
		var errMu sync.Mutex
		var writeErr error
		var stopWriting atomic.Bool
		t0 := time.Now()
		var self0 syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &self0)
		for i := range n {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				stmt, err := conns[i].Prepare(`INSERT INTO t(v) VALUES ('y')`)
				if err != nil {
					errMu.Lock()
					writeErr = fmt.Errorf("%s: %w", names[i], err)
					errMu.Unlock()
					return
				}
				defer stmt.Close()
				for k := 0; !stopWriting.Load(); k++ {
					due := t0.Add(time.Duration(k)*time.Second + time.Duration(i)*time.Second/time.Duration(n))
					if late := time.Since(due); late > time.Second {
						// A commit held up (by the daemon opening this
						// database) skips the slots it missed rather than
						// catching up in a burst.
						k += int(late/time.Second) - 1
						continue
					}
					time.Sleep(time.Until(due))
					res, err := stmt.Exec()
					if err != nil {
						errMu.Lock()
						writeErr = fmt.Errorf("%s commit %d: %w", names[i], k, err)
						errMu.Unlock()
						return
					}
					id, _ := res.LastInsertId()
					commits[i] = append(commits[i], busyCommit{row: id, at: time.Now()})
				}
			}(i)
		}
		// The first commits wake every parked database; the measured
		// minute starts once all are active and a few intervals more.
		wake, ok := waitFor(10*time.Minute, func() bool { c, err := dirStatus(addr); return err == nil && c.Active == n })
		d.alive(t)
		row.wake = wake.Round(100 * time.Millisecond).String()
		if !ok {
			c, _ := dirStatus(addr)
			row.wake = fmt.Sprintf("%d of %d after %s", c.Active, n, row.wake)
		}
		time.Sleep(warm)
		peak := watchRSS(t, d.pid())
		c0, r0 := cpuTicks(t, d.pid()), sumMetric(t, addr, "understudy_primary_store_requests_total")
		m0 := time.Now()
		time.Sleep(run)
		mEnd := time.Now()
		c1, r1 := cpuTicks(t, d.pid()), sumMetric(t, addr, "understudy_primary_store_requests_total")
		row.fds = openFDs(d.pid())
		// Where the disk time goes: the daemon's fsync calls over a few
		// seconds (strace slows it, so after the measured minute).
		s0 := time.Now()
		syncs := countSyncs(t, d.pid(), 5*time.Second)
		s1 := time.Now()
		stopWriting.Store(true)
		wg.Wait()
		var self1 syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &self1)
		if writeErr != nil {
			t.Fatalf("writer: %v", writeErr)
		}
		// The last commits' files: one sync interval and some.
		time.Sleep(3 * time.Second)
		events := w.stop(t)
		pa, pf := peak.stop()
		anon, file, _ := readRSSParts(d.pid())
		row.loadEnd = loadAvg()
		secs := mEnd.Sub(m0).Seconds()
		row.cpuPct = float64(c1-c0) / secs
		row.reqPerMin = (r1 - r0) / (secs / 60)
		row.rssMB, row.peakMB = float64(anon+file)/1024, float64(pa+pf)/1024
		cpu := func(r syscall.Rusage) float64 {
			return time.Duration(r.Utime.Nano() + r.Stime.Nano()).Seconds()
		}
		row.writerPct = (cpu(self1) - cpu(self0)) / time.Since(t0).Seconds() * 100
		filesIn := 0
		for _, ev := range events {
			if ev.at.After(s0) && ev.at.Before(s1) {
				filesIn++
			}
		}
		row.syncs = "no strace"
		if syncs >= 0 {
			row.syncs = fmt.Sprintf("%.0f/s, %.1f per L0 file", float64(syncs)/s1.Sub(s0).Seconds(), float64(syncs)/float64(max(filesIn, 1)))
		}
		d.stop(t)
		for _, c := range conns {
			c.Close()
		}

		// Each database's files in arrival order, with the highest row
		// each holds; each commit of the measured minute is shipped by
		// the first file that holds its row.
		type l0File struct {
			at, ts time.Time
			maxRow int64
		}
		files := make([][]l0File, n)
		for _, ev := range events {
			ts, maxRow, ok, err := l0Rows(ev.path)
			if err != nil {
				t.Fatalf("%s: %v", st.name, err)
			}
			if !ok {
				continue
			}
			files[ev.db] = append(files[ev.db], l0File{at: ev.at, ts: ts, maxRow: maxRow})
			if ev.at.After(m0) && ev.at.Before(mEnd) {
				row.files++
			}
		}
		row.filesMin = float64(row.files) / (secs / 60)
		var lat, toSync, toStore []time.Duration
		target := time.Second + 100*time.Millisecond
		for i := range n {
			fs := files[i]
			sort.Slice(fs, func(a, b int) bool { return fs[a].at.Before(fs[b].at) })
			j := 0
			for _, c := range commits[i] {
				if c.at.Before(m0) || c.at.After(mEnd) {
					continue
				}
				for j < len(fs) && fs[j].maxRow < c.row {
					j++
				}
				row.commits++
				if j == len(fs) {
					row.unshipped++
					continue
				}
				l := fs[j].at.Sub(c.at)
				lat = append(lat, l)
				toSync = append(toSync, fs[j].ts.Sub(c.at))
				toStore = append(toStore, fs[j].at.Sub(fs[j].ts))
				if l > target {
					row.late++
					if fs[j].ts.Sub(c.at) > time.Second {
						row.lateSync++
					}
				}
			}
		}
		for _, s := range [][]time.Duration{lat, toSync, toStore} {
			sort.Slice(s, func(a, b int) bool { return s[a] < s[b] })
		}
		row.p50, row.p99, row.max = pct(lat, 0.5), pct(lat, 0.99), pct(lat, 1)
		row.toSync99, row.toStore99 = pct(toSync, 0.99), pct(toStore, 0.99)
		r := row
		fmt.Printf("| %s | %s | %d | %s | %s | %s | %d (%d) | %d | %s | %s | %.0f | %.0f | %.1f %% | %.0f / %.0f MB | %d | %s | %.1f %% | %s -> %s |\n",
			r.store, r.wake, r.commits, r.p50, r.p99, r.max, r.late, r.lateSync, r.unshipped, r.toSync99, r.toStore99,
			r.filesMin, r.reqPerMin, r.cpuPct, r.rssMB, r.peakMB, r.fds, r.syncs, r.writerPct, r.loadStart, r.loadEnd)
	}

}

// countSyncs counts the fsync and fdatasync calls of every thread of pid
// over d (strace -c), or -1 without strace.
func countSyncs(t *testing.T, pid int, d time.Duration) int {
	t.Helper()
	strace, err := exec.LookPath("strace")
	if err != nil {
		return -1
	}
	out := filepath.Join(t.TempDir(), "syncs.txt")
	cmd := exec.Command(strace, "-f", "-c", "-e", "trace=fsync,fdatasync,sync_file_range", "-o", out, "-p", fmt.Sprint(pid))
	if err := cmd.Start(); err != nil {
		return -1
	}
	time.Sleep(d)
	_ = cmd.Process.Signal(syscall.SIGINT)
	_ = cmd.Wait()
	b, err := os.ReadFile(out)
	if err != nil {
		return -1
	}
	// "% time seconds usecs/call calls [errors] syscall" rows.
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 5 && (f[len(f)-1] == "fsync" || f[len(f)-1] == "fdatasync" || f[len(f)-1] == "sync_file_range") {
			v, _ := strconv.Atoi(f[3])
			n += v
		}
	}
	return n
}
