package integration

import (
	"crypto/sha256"
	"database/sql"
	"fmt"
	"io"
	"iter"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/superfly/ltx"
)

// withDBKeys adds per-database keys (levels, l0-retention, ...) to a stack's
// config, just above its replicas: list.
func (s *stack) withDBKeys(t *testing.T, keys string) {
	t.Helper()
	cfg := mustRead(t, s.configPath)
	if !strings.Contains(cfg, "    replicas:\n") {
		t.Fatalf("config has no replicas: line:\n%s", cfg)
	}
	writeFile(t, s.configPath, strings.Replace(cfg, "    replicas:\n", keys+"    replicas:\n", 1))
}

// pageDigest hashes a database's pages in order, with the page-1 bytes that
// a restore may legitimately differ in (24-27 change counter, 92-99
// version-valid-for and SQLite version) masked. Equal digests mean equal
// bytes in every other byte of every page.
func pageDigest(pages iter.Seq[[]byte]) [32]byte {
	h := sha256.New()
	first := true
	for p := range pages {
		if first {
			p, first = maskPage1(p), false
		}
		h.Write(p)
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum
}

func maskPage1(p []byte) []byte {
	c := append([]byte(nil), p...)
	if len(c) >= 100 {
		copy(c[24:28], make([]byte, 4))
		copy(c[92:100], make([]byte, 8))
	}
	return c
}

// filePageDigest is pageDigest of a database file at rest (no WAL), read
// page by page so that its size does not matter.
func filePageDigest(t testing.TB, path string, pageSize int) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return pageDigest(func(yield func([]byte) bool) {
		buf := make([]byte, pageSize)
		for i := 0; ; i++ {
			if _, err := io.ReadFull(f, buf); err == io.EOF {
				return
			} else if err != nil {
				t.Fatalf("read %s page %d: %v", path, i+1, err)
			}
			if !yield(buf) {
				return
			}
		}
	})
}

// timedPoint is a restorable point: its TXID, a time after its commit and
// before the next one, and digests of the copy taken there.
type timedPoint struct {
	txid     ltx.TXID
	at       time.Time
	checksum ltx.Checksum
	digest   [32]byte
	pageSize int
}

// TestRestorePointsByTXIDAndTime is issue 4's main proof: during a random
// write run, with compaction into L1 and L2 going on, the test records 50
// points (TXID, time, copy); a restore by each TXID and by each timestamp,
// from the file and the S3 replica in turn, equals its copy in every page.
func TestRestorePointsByTXIDAndTime(t *testing.T) {
	s := newStack(t, true)
	s.withDBKeys(t, "    levels: [2s, 5s]\n    l0-retention: 1m\n")
	app := openDB(t, s.dbPath)
	w := startWriter(t, app, 41)
	d := s.replicate(t)
	rng := rand.New(rand.NewSource(42))

	const n = 50
	var points []timedPoint
	for i := 0; i < n; i++ {
		time.Sleep(time.Duration(100+rng.Intn(250)) * time.Millisecond)
		w.pause.Lock()
		img := snapshotImage(t, app)
		txid := s.waitShipped(t, img)
		// The header time of this TXID is its sync time, which was before
		// now; the next TXID's sync comes after the next commit, which
		// comes after the sleep, so a millisecond clock tells them apart.
		at := time.Now()
		time.Sleep(3 * time.Millisecond)
		w.pause.Unlock()
		if len(points) > 0 && points[len(points)-1].txid == txid {
			t.Fatalf("point %d has the TXID %s of the point before it: the writer wrote nothing", i, txid)
		}
		points = append(points, timedPoint{txid: txid, at: at, checksum: img.checksum, digest: pageDigest(slices.Values(img.pages)), pageSize: len(img.pages[0])})
		if d.exited() {
			t.Fatalf("replicate exited:\n%s", tailLines(d.out.String(), 30))
		}
	}
	w.halt(t)
	// Stop the daemon so that retention removes nothing while we restore.
	if code := d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("replicate exit code after SIGTERM = %d", code)
	}
	for _, level := range []string{"1", "2"} {
		if c := countFiles(t, filepath.Join(s.fileReplica, "ltx", level)); c == 0 {
			t.Errorf("no L%s files in the file replica: the restores did not cross compacted levels", level)
		}
	}
	t.Logf("%d transactions, points at TXIDs %s..%s", w.n, points[0].txid, points[n-1].txid)

	urls := s.replicaURLs()
	check := func(how string, p timedPoint, out string) {
		t.Helper()
		if got := fileChecksum(t, out); got != p.checksum {
			t.Errorf("restore %s: checksum %s, copy %s", how, got, p.checksum)
			return
		}
		if got := filePageDigest(t, out, p.pageSize); got != p.digest {
			t.Errorf("restore %s: same checksum but the pages differ from the copy", how)
		}
	}
	for i, p := range points {
		var extra []string
		if i%10 == 0 {
			extra = []string{"-integrity-check", "quick"}
		}
		url := urls[i%2]
		out := s.restore(t, url, append([]string{"-txid", hex16(p.txid)}, extra...)...)
		check(fmt.Sprintf("of %s at TXID %s", url, p.txid), p, out)
		if i%10 == 5 {
			integrityCheck(t, out)
		}

		url = urls[(i+1)%2]
		ts := p.at.UTC().Format(time.RFC3339Nano)
		out = s.restore(t, url, "-timestamp", ts)
		check(fmt.Sprintf("of %s at time %s (point TXID %s)", url, ts, p.txid), p, out)
	}
}

// restoreFailure runs a restore that must fail into a fresh directory and
// returns its stderr, after checking the exit code and that nothing at all
// was left behind (no OUT, no temp file beside it).
func restoreFailure(t *testing.T, env []string, url string, args ...string) string {
	t.Helper()
	dir := t.TempDir()
	out := filepath.Join(dir, "restored.db")
	res := run(t, env, append(append([]string{"restore", "-o", out}, args...), url)...)
	if res.code == 0 {
		t.Fatalf("restore %s %v exited 0; output:\n%s%s", url, args, res.stdout, res.stderr)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		t.Errorf("failed restore left %s behind", e.Name())
	}
	t.Logf("exit %d: %s", res.code, strings.TrimSpace(res.stderr))
	return res.stderr
}

func wantAll(t *testing.T, msg string, subs ...string) {
	t.Helper()
	for _, sub := range subs {
		if !strings.Contains(msg, sub) {
			t.Errorf("message does not contain %q:\n%s", sub, msg)
		}
	}
}

// l0Files lists the L0 file names of a file replica in TXID order.
func l0Files(t *testing.T, replica string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(replica, "ltx", "0"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".ltx") {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	return names
}

// TestRestoreErrors breaks a store in each way a restore must refuse, through
// the CLI: the message names the object and the problem, the exit code is
// non-zero and nothing is left at OUT. Each case undoes its damage, and a
// final restore proves the store is whole again.
func TestRestoreErrors(t *testing.T) {
	s := newStack(t, true)
	s.withDBKeys(t, "    levels: [1h]\n") // no compaction: L0 holds every TXID
	app := openDB(t, s.dbPath)
	mustExec(t, app, `CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)`)
	beforeFirst := time.Now()
	time.Sleep(5 * time.Millisecond)
	d := s.replicate(t)
	var img image
	for i := 0; i < 8; i++ {
		mustExec(t, app, `INSERT INTO t(v) VALUES (randomblob(20000))`)
		img = snapshotImage(t, app)
		s.waitShipped(t, img)
	}
	if code := d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("replicate exit code after SIGTERM = %d", code)
	}
	fileURL, s3URL := s.replicaURLs()[0], s.replicaURLs()[1]
	names := l0Files(t, s.fileReplica)
	if len(names) < 6 {
		t.Fatalf("only %d L0 files: %v", len(names), names)
	}
	_, newest, err := ltx.ParseFilename(names[len(names)-1])
	if err != nil {
		t.Fatal(err)
	}
	l0 := func(name string) string { return filepath.Join(s.fileReplica, "ltx", "0", name) }
	mid := names[len(names)/2]
	midTXID, _, err := ltx.ParseFilename(mid)
	if err != nil {
		t.Fatal(err)
	}
	midName := fmt.Sprintf("L0 %s-%s", midTXID, midTXID)

	t.Run("missing file in the chain", func(t *testing.T) {
		aside := filepath.Join(s.dir, "aside.ltx")
		if err := os.Rename(l0(mid), aside); err != nil {
			t.Fatal(err)
		}
		defer os.Rename(aside, l0(mid))
		msg := restoreFailure(t, s.env, fileURL)
		wantAll(t, msg, "missing file in the chain", fmt.Sprintf("no file covers TXIDs %s-%s", midTXID, midTXID))
	})

	t.Run("corrupt object", func(t *testing.T) {
		f, err := os.OpenFile(l0(mid), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			t.Fatal(err)
		}
		off := st.Size() / 2
		b := make([]byte, 1)
		if _, err := f.ReadAt(b, off); err != nil {
			t.Fatal(err)
		}
		flip := func() {
			b[0] ^= 0xff
			if _, err := f.WriteAt(b, off); err != nil {
				t.Fatal(err)
			}
		}
		flip()
		defer flip()
		msg := restoreFailure(t, s.env, fileURL)
		wantAll(t, msg, midName, "corrupt object")
		if !strings.Contains(msg, "checksum") && !strings.Contains(msg, "decode") {
			t.Errorf("message names neither a checksum nor a decoding problem:\n%s", msg)
		}
	})

	t.Run("before the earliest point by timestamp", func(t *testing.T) {
		msg := restoreFailure(t, s.env, fileURL, "-timestamp", beforeFirst.UTC().Format(time.RFC3339Nano))
		wantAll(t, msg, "before the earliest restorable point", "TXID "+hex16(1))
	})

	t.Run("after the newest", func(t *testing.T) {
		msg := restoreFailure(t, s.env, s3URL, "-txid", hex16(newest+1000))
		wantAll(t, msg, "after the newest position", hex16(newest+1000), hex16(newest))
	})

	t.Run("foreign object", func(t *testing.T) {
		next := newest + 1
		path := l0(ltx.FormatFilename(next, next))
		writeFile(t, path, strings.Repeat("this is not an LTX file\n", 20))
		defer os.Remove(path)
		msg := restoreFailure(t, s.env, fileURL)
		wantAll(t, msg, fmt.Sprintf("L0 %s-%s", next, next), "foreign object")
	})

	t.Run("output exists", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "restored.db")
		writeFile(t, out, "precious")
		res := run(t, s.env, "restore", "-o", out, fileURL)
		if res.code == 0 {
			t.Fatalf("restore over an existing file exited 0")
		}
		wantAll(t, res.stderr, out, "never overwrites")
		res = run(t, s.env, "restore", "-if-db-not-exists", "-o", out, fileURL)
		if res.code != 0 {
			t.Fatalf("-if-db-not-exists: exit %d\n%s", res.code, res.stderr)
		}
		if got := mustRead(t, out); got != "precious" {
			t.Fatalf("existing file changed to %q", got)
		}
		entries, err := os.ReadDir(filepath.Dir(out))
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) != 1 {
			t.Errorf("%d entries beside OUT, want only OUT", len(entries))
		}
	})

	t.Run("wrong S3 credentials", func(t *testing.T) {
		const secret = "wrong-secret-f00dcafe4711"
		env := []string{"AWS_ACCESS_KEY_ID=" + s.s3.AccessKey, "AWS_SECRET_ACCESS_KEY=" + secret}
		msg := restoreFailure(t, env, s3URL)
		wantAll(t, msg, "credentials", s.bucket)
		if strings.Contains(msg, secret) || strings.Contains(msg, s.s3.SecretKey) {
			t.Errorf("message shows a secret:\n%s", msg)
		}
	})

	t.Run("missing bucket", func(t *testing.T) {
		url := strings.Replace(s3URL, "s3://"+s.bucket+"/", "s3://no-such-bucket-4711/", 1)
		msg := restoreFailure(t, s.env, url)
		wantAll(t, msg, `"no-such-bucket-4711"`, "does not exist")
	})

	t.Run("before the earliest point after retention", func(t *testing.T) {
		// A store whose retention has removed the first snapshot and the
		// files up to the oldest kept one.
		r := newStack(t, false)
		writeFile(t, r.configPath, strings.Replace(mustRead(t, r.configPath), "        sync-interval: 100ms\n",
			"        sync-interval: 100ms\n        snapshot-interval: 1s\n        retention: 1s\n        retention-check-interval: 1s\n", 1))
		rapp := openDB(t, r.dbPath)
		mustExec(t, rapp, `CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)`)
		rd := r.replicate(t)
		snapDir := filepath.Join(r.fileReplica, "ltx", "9")
		eventually(t, 20*time.Second, "retention to remove the first snapshot", func() bool {
			mustExec(t, rapp, `INSERT INTO t(v) VALUES (randomblob(1000))`)
			return minMaxTXIDAt(t, snapDir) > 1 && minTXIDAt(t, filepath.Join(r.fileReplica, "ltx", "0")) > 1
		})
		if code := rd.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
			t.Fatalf("replicate exit code after SIGTERM = %d", code)
		}
		earliest := minMaxTXIDAt(t, snapDir)
		msg := restoreFailure(t, nil, r.replicaURLs()[0], "-txid", "1")
		wantAll(t, msg, "before the earliest restorable point", "TXID "+hex16(earliest))
		r.restore(t, r.replicaURLs()[0], "-txid", hex16(earliest))
	})

	// Every case undid its damage: both replicas restore the primary.
	for _, url := range []string{fileURL, s3URL} {
		out := s.restore(t, url)
		if got := fileChecksum(t, out); got != img.checksum {
			t.Errorf("restore of %s after the error cases: checksum %s, primary %s", url, got, img.checksum)
		}
	}
}

// streamChecksum is snapshotImage's checksum without holding the pages in
// memory (the large database does not fit comfortably), plus the page count.
func streamChecksum(t testing.TB, db *sql.DB) (ltx.Checksum, uint32) {
	t.Helper()
	return scanPages(t, db, func([]byte) {})
}

// TestReplicateLargeDatabase is issue 3's large-database proof: a database
// over 1 GiB, across the lock-byte page (page 262145 with 4 KiB pages),
// replicates through `understudy replicate` to a file replica, takes more
// transactions that touch pages beyond the lock page, and restores
// identically.
func TestReplicateLargeDatabase(t *testing.T) {
	if testing.Short() {
		t.Skip("writes several GB")
	}
	t0 := time.Now()
	s := newStack(t, false)
	// A 1ms sync so that a run of small commits makes one L0 file each. The
	// long run is issue 4's "1 GB database with 10,000 L0 files plus
	// compactions": compaction on a short clock so the restore crosses L1
	// and L2 files. It rewrites the 1 GB first image into L1 and L2 and
	// takes minutes, so by default compaction is off and the run shorter.
	long := os.Getenv("UNDERSTUDY_LONG_TESTS") != ""
	manyL0, levels := 100, "[1h]"
	if long {
		manyL0, levels = 10000, "[1s, 3s]"
	}
	s.withDBKeys(t, "    levels: "+levels+"\n    l0-retention: 1h\n")
	writeFile(t, s.configPath, strings.Replace(mustRead(t, s.configPath), "sync-interval: 100ms", "sync-interval: 1ms", 1))
	// Build the bulk fast: no journal, no sync, before replication starts
	// (the daemon's first sync is then one full snapshot).
	{
		bulk, err := sql.Open("sqlite3", "file:"+s.dbPath+"?_journal_mode=OFF&_synchronous=OFF")
		if err != nil {
			t.Fatal(err)
		}
		bulk.SetMaxOpenConns(1)
		mustExec(t, bulk, `PRAGMA page_size = 4096`)
		mustExec(t, bulk, `CREATE TABLE t (id INTEGER PRIMARY KEY, k TEXT, v BLOB)`)
		const rows, per = 1100, 100 // 1 MiB blobs: about 1.15 GB
		for i := 0; i < rows; i += per {
			mustExec(t, bulk, `WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < ?)
				INSERT INTO t(k, v) SELECT 'bulk', randomblob(1048576) FROM c`, per)
		}
		bulk.Close()
	}
	tBuilt := time.Since(t0)

	app := openDB(t, s.dbPath)
	lock := ltx.LockPgno(4096)
	var pages uint32
	if err := app.QueryRow(`PRAGMA page_count`).Scan(&pages); err != nil {
		t.Fatal(err)
	}
	if pages <= lock {
		t.Fatalf("database has %d pages: does not cross the lock page %d", pages, lock)
	}
	// The checksum first: scanning 1 GB in a transaction of the app's
	// connection (BEGIN IMMEDIATE) would keep the daemon's Open, which takes
	// the write lock to capture the database, waiting for it.
	sum, _ := streamChecksum(t, app)
	d := s.replicate(t)
	// A bound for a hang, not a speed: 1.15 GB through the shadow directory
	// took over 30 s with the machine's two cores shared by other builds.
	first := waitReplicasWithin(t, s, 5*time.Minute, []image{{checksum: sum}})[0]
	tSnap := time.Since(t0)

	// Transactions past the lock page: rewrite the newest rows (their
	// overflow pages lie at the end of the file), grow the file, and touch
	// rows on both sides of the lock page in one transaction.
	mustExec(t, app, `UPDATE t SET v = randomblob(1048576), k = 'rewritten' WHERE id > 1090`)
	mustExec(t, app, `INSERT INTO t(k, v) SELECT 'more', randomblob(300000) FROM t WHERE id > 1095`)
	mustExec(t, app, `UPDATE t SET k = 'touched' WHERE id % 50 = 0`)
	mustExec(t, app, `DELETE FROM t WHERE id = 1099`)
	sum, pages = streamChecksum(t, app)
	last := s.waitShipped(t, image{checksum: sum})
	if last <= first { // a sync may ship several commits as one TXID
		t.Fatalf("TXID %s after 4 transactions on top of %s", last, first)
	}
	if pages <= lock {
		t.Fatalf("database shrank to %d pages, below the lock page", pages)
	}
	tTail := time.Since(t0)

	// Many small commits, each its own L0 file (new pages land past the
	// lock page), with a recorded point halfway.
	l0Dir := filepath.Join(s.fileReplica, "ltx", "0")
	base := countFiles(t, l0Dir)
	var midTXID ltx.TXID
	var midSum ltx.Checksum
	for i := 0; ; i++ {
		mustExec(t, app, `INSERT INTO t(k, v) VALUES ('small', randomblob(200))`)
		if i%50 == 49 {
			// One small row: a wide update would make every L0 file big.
			mustExec(t, app, `UPDATE t SET k = 'small' || ? WHERE id = last_insert_rowid() - 7`, i)
		}
		time.Sleep(time.Millisecond)
		if i%100 != 99 {
			continue
		}
		made := countFiles(t, l0Dir) - base
		if made >= manyL0 {
			break
		}
		if midTXID == 0 && made >= manyL0/2 {
			midSum, _ = streamChecksum(t, app)
			midTXID = s.waitShipped(t, image{checksum: midSum})
		}
	}
	sum, pages = streamChecksum(t, app)
	last = s.waitShipped(t, image{checksum: sum})
	tMany := time.Since(t0)
	if long {
		eventually(t, 2*time.Minute, "L2 files to cover the small commits", func() bool {
			return maxTXIDAt(t, filepath.Join(s.fileReplica, "ltx", "2")) > midTXID
		})
	}
	tCompacted := time.Since(t0)
	if code := d.stop(t, syscall.SIGTERM, time.Minute); code != 0 {
		t.Fatalf("replicate exit code after SIGTERM = %d", code)
	}
	tShipped := time.Since(t0)

	out := s.restore(t, s.replicaURLs()[0])
	tRestored := time.Since(t0)
	outMid := s.restore(t, s.replicaURLs()[0], "-txid", hex16(midTXID))
	if got := fileChecksum(t, outMid); got != midSum {
		t.Errorf("restore at TXID %s: checksum %s, primary's at that TXID %s", midTXID, got, midSum)
	}
	if err := os.Remove(outMid); err != nil {
		t.Fatal(err)
	}
	if got := fileChecksum(t, out); got != sum {
		t.Fatalf("restore checksum %s, primary %s", got, sum)
	}
	st, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() != int64(pages)*4096 {
		t.Errorf("restored file is %d bytes, want %d pages of 4096", st.Size(), pages)
	}
	rdb, err := sql.Open("sqlite3", "file:"+out+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	var qc string
	if err := rdb.QueryRow(`PRAGMA quick_check`).Scan(&qc); err != nil || qc != "ok" {
		t.Fatalf("quick_check of the restore: %q, %v", qc, err)
	}
	ms := func(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
	t.Logf("%d pages (%.2f GB), TXIDs %s..%s, %d L0 files, %d L1, %d L2; built %s, first snapshot shipped %s, lock-page tail shipped %s, "+
		"%d small commits shipped %s, compacted %s, stop %s, restore %s, total %s",
		pages, float64(pages)*4096/1e9, first, last, countFiles(t, l0Dir), countFiles(t, filepath.Join(s.fileReplica, "ltx", "1")),
		countFiles(t, filepath.Join(s.fileReplica, "ltx", "2")), ms(tBuilt), ms(tSnap-tBuilt), ms(tTail-tSnap),
		manyL0, ms(tMany-tTail), ms(tCompacted-tMany), ms(tShipped-tCompacted), ms(tRestored-tShipped), ms(time.Since(t0)))
}

// maxTXIDAt is the highest MaxTXID of the LTX files in a level directory of
// a file replica (0 if there are none).
func maxTXIDAt(t testing.TB, dir string) ltx.TXID {
	t.Helper()
	var hi ltx.TXID
	for _, r := range levelRanges(t, dir) {
		hi = max(hi, r[1])
	}
	return hi
}

// minTXIDAt is the lowest MinTXID of the LTX files in a level directory of a
// file replica (0 if there are none).
func minTXIDAt(t testing.TB, dir string) ltx.TXID {
	t.Helper()
	return levelMin(levelRanges(t, dir), 0)
}

// minMaxTXIDAt is the lowest MaxTXID in a level directory: for level 9, the
// oldest snapshot's position.
func minMaxTXIDAt(t testing.TB, dir string) ltx.TXID {
	t.Helper()
	return levelMin(levelRanges(t, dir), 1)
}

// levelMin is the lowest bound i (0: MinTXID, 1: MaxTXID) of ranges, 0 if
// there are none.
func levelMin(ranges [][2]ltx.TXID, i int) ltx.TXID {
	var min ltx.TXID
	for _, r := range ranges {
		if min == 0 || r[i] < min {
			min = r[i]
		}
	}
	return min
}

// levelRanges lists the TXID ranges of the LTX files in a level directory of
// a file replica (none if it does not exist).
func levelRanges(t testing.TB, dir string) [][2]ltx.TXID {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var ranges [][2]ltx.TXID
	for _, e := range entries {
		if lo, hi, err := ltx.ParseFilename(e.Name()); err == nil {
			ranges = append(ranges, [2]ltx.TXID{lo, hi})
		}
	}
	return ranges
}
