package primary

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/internal/restore"
	"github.com/understudy-db/understudy/internal/storage"
)

func TestPlanEviction(t *testing.T) {
	image := func(fs []localFile, i int) []localFile { fs[i].Full = true; return fs }
	files := func(sizes ...int64) []localFile {
		var out []localFile
		for i, n := range sizes {
			out = append(out, localFile{TXID: ltx.TXID(i + 10), Size: n})
		}
		return out
	}
	tests := []struct {
		name      string
		files     []localFile
		limit     int64
		wantUpto  ltx.TXID
		wantN     int
		wantBytes int64
	}{
		{"empty", nil, 100, 0, 0, 0},
		{"under the limit", files(10, 20, 30), 100, 0, 0, 0},
		{"exactly the limit", files(10, 20, 30), 60, 0, 0, 0},
		{"one over: the oldest goes", files(10, 20, 30), 59, 10, 1, 10},
		{"the oldest until under", files(10, 20, 30, 40), 70, 11, 2, 30},
		{"the newest is kept even alone over the limit", files(10, 20, 300), 100, 11, 2, 30},
		{"a single file is kept", files(500), 100, 0, 0, 0},
		{"zero limit keeps only the newest", files(1, 2, 3), 0, 11, 2, 3},
		{"a full image does not count", image(files(300, 20, 30), 0), 100, 0, 0, 0},
		{"nor does a later one", image(files(10, 20, 300, 30), 2), 60, 0, 0, 0},
		{"an image goes with the older files once the later ones pass the limit", image(files(300, 60, 50), 0), 100, 11, 2, 360},
		{"older files go, the image stays", image(files(40, 300, 50, 30), 1), 80, 10, 1, 40},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			upto, n, b := planEviction(tt.files, tt.limit)
			if upto != tt.wantUpto || n != tt.wantN || b != tt.wantBytes {
				t.Fatalf("planEviction = %s, %d files, %d bytes; want %s, %d, %d", upto, n, b, tt.wantUpto, tt.wantN, tt.wantBytes)
			}
		})
	}
}

func TestShadowLimit(t *testing.T) {
	tests := []struct {
		name                string
		configured, dbBytes int64
		want                int64
	}{
		{"small database: the floor", 0, 4 << 20, DefaultMaxShadowSize},
		{"large database: its size", 0, 1 << 30, 1 << 30},
		{"configured wins over a large database", 1 << 20, 1 << 30, 1 << 20},
		{"configured wins over the floor", 1 << 40, 4 << 20, 1 << 40},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := shadowLimit(tt.configured, tt.dbBytes); got != tt.want {
				t.Fatalf("shadowLimit(%d, %d) = %d, want %d", tt.configured, tt.dbBytes, got, tt.want)
			}
		})
	}
}

func TestNegativeMaxShadowSizeRefused(t *testing.T) {
	e := newEnv(t, 1)
	opts := e.options()
	opts.MaxShadowSize = -1
	if _, err := New(opts); err == nil || !strings.Contains(err.Error(), "max shadow size") {
		t.Fatalf("New with a negative MaxShadowSize: %v", err)
	}
}

// TestShadowBoundedForDeadReplica: a replica whose store refuses writes
// while the application writes far more than the bound. The shadow
// directory stays within the bound plus the newest file, a warning names
// the replica once, the healthy replica still compacts (reading the
// dropped files from its store), and the dead replica, once back, catches
// up with a snapshot and restores to the primary.
func TestShadowBoundedForDeadReplica(t *testing.T) {
	e := newEnv(t, 2)
	ctx := context.Background()
	logs := &syncBuffer{}
	opts := e.options()
	var out io.Writer = logs
	if os.Getenv("PRIMARY_TEST_LOG") != "" {
		out = io.MultiWriter(logs, os.Stderr)
	}
	opts.Logger = hclog.New(&hclog.LoggerOptions{Level: hclog.Info, Output: out})
	const limit = 256 << 10
	opts.MaxShadowSize = limit
	reg := prometheus.NewRegistry()
	opts.Registerer = reg
	d := e.open(opts)
	defer d.Close()
	if err := d.Sync(ctx); err != nil {
		t.Fatal(err)
	}

	e.clients[1].fail.Store(true)
	var written, peak int64
	for i := 0; i < 40; i++ {
		e.exec("INSERT INTO t (v, b) VALUES ('r1 down', randomblob(20000))")
		e.exec("UPDATE t SET v = v || 'x' WHERE id % 7 = ?", i%7)
		// Sync fails while r1 has files to upload, and no longer once
		// they are dropped (it then waits for a snapshot).
		if err := d.Sync(ctx); err != nil && !strings.Contains(err.Error(), "injected store failure") {
			t.Fatal(err)
		}
		d.gcLocalAsync()
		size, newest, n := shadowL0OnDisk(t, d)
		peak = max(peak, size)
		if size > limit+newest {
			t.Fatalf("after sync %d the shadow directory holds %d bytes in %d L0 files; bound %d + newest file %d", i, size, n, limit, newest)
		}
		if got := metricValue(t, d.m.shadowBytes.WithLabelValues(d.metricsDB(), "l0")); int64(got) != size {
			t.Fatalf("shadow_bytes{kind=l0} = %v, the directory holds %d", got, size)
		}
		md, err := d.local.meta(d.txid)
		if err != nil {
			t.Fatal(err)
		}
		written += md.Size
	}
	if written < 3*limit {
		t.Fatalf("the test wrote only %d bytes of L0 files; it must write well past the bound %d", written, limit)
	}
	t.Logf("wrote %d bytes of L0 files with one replica down; the shadow directory peaked at %d bytes (bound %d)", written, peak, limit)
	st := d.Status()
	if st.Replicas[0].TXID != st.TXID || st.Replicas[1].TXID != 1 {
		t.Fatalf("status %+v: the healthy replica must be at the head, the dead one at 1", st)
	}
	if left, _ := d.local.list(); len(left) == 0 || left[0] <= 2 {
		t.Fatalf("local L0 files %v: the oldest should have been dropped", left)
	}
	if got := metricValue(t, d.m.shadowDropped.WithLabelValues(d.metricsDB())); got == 0 {
		t.Fatal("shadow_dropped_files_total is 0")
	}
	if n := strings.Count(logs.String(), "replica is too far behind"); n != 1 || !strings.Contains(logs.String(), "replica=r1") {
		t.Fatalf("%d warnings about the dead replica, want exactly 1 naming r1:\n%s", n, logs.String())
	}

	// The healthy replica compacts although most of its inputs are gone
	// from the shadow directory: they come from its store.
	gets := e.clients[0].others.Load()
	if err := d.replicas[0].compact(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if e.clients[0].others.Load() == gets {
		t.Fatal("compaction read no input from the store, though the shadow directory dropped them")
	}
	l1 := listLevel(t, e.stores[0], 1)
	if len(l1) != 1 || l1[0].MinTXID != 1 || l1[0].MaxTXID != st.TXID {
		t.Fatalf("L1 of the healthy replica = %s", names(l1))
	}
	if txid, sum := restoreFiles(t, e.stores[0], l1, filepath.Join(e.dir, "from-l1.db")); txid != st.TXID || sum != st.Checksum {
		t.Fatalf("L1 restores to %s %s, head %s %s", txid, sum, st.TXID, st.Checksum)
	}

	// The dead replica comes back: a snapshot catches it up.
	e.clients[1].fail.Store(false)
	e.runUntilCaughtUp(d, 1)
	st = d.Status()
	for i, r := range st.Replicas {
		if r.TXID != st.TXID || r.Checksum != st.Checksum {
			t.Fatalf("replica %d at %s %s, head %s %s", i, r.TXID, r.Checksum, st.TXID, st.Checksum)
		}
	}
	if l9 := listLevel(t, e.stores[1], storage.SnapshotLevel); len(l9) < 2 {
		t.Fatalf("L9 of the replica that was down = %s; want a catch-up snapshot after 1-1", names(l9))
	}
	if n := strings.Count(logs.String(), "replica is too far behind"); n != 1 {
		t.Fatalf("%d warnings about the dead replica after it caught up, want 1", n)
	}
	for i, c := range e.stores {
		out := filepath.Join(e.dir, "restored-"+string(rune('0'+i))+".db")
		res, err := restore.Restore(ctx, c, restore.Options{OutputPath: out, IntegrityCheck: restore.IntegrityFull})
		if err != nil {
			t.Fatalf("restore replica %d: %v", i, err)
		}
		if res.TXID != st.TXID || res.PostApplyChecksum != st.Checksum || !res.Verified {
			t.Fatalf("replica %d restores to %s %s (verified %v), head %s %s", i, res.TXID, res.PostApplyChecksum, res.Verified, st.TXID, st.Checksum)
		}
	}
	d.Close()
	e.checkPrimaryFile(st.Checksum)
}

// shadowL0OnDisk sums the L0 files in the shadow directory as the disk
// sees them (not the store's own index): total bytes, the newest file's
// size, and the count.
func shadowL0OnDisk(t *testing.T, d *DB) (total, newest int64, n int) {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(d.local.dir, "ltx"))
	if err != nil {
		t.Fatal(err)
	}
	var newestTX ltx.TXID
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".ltx") {
			continue
		}
		info, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		min, _, err := ltx.ParseFilename(e.Name())
		if err != nil {
			t.Fatal(err)
		}
		if md, err := d.local.meta(min); err == nil && md.Full {
			continue // full images are not bounded (localFile)
		}
		total += info.Size()
		n++
		if min > newestTX {
			newestTX, newest = min, info.Size()
		}
	}
	return total, newest, n
}

// metricValue reads a gauge or counter.
func metricValue(t *testing.T, m prometheus.Metric) float64 {
	t.Helper()
	var pb dto.Metric
	if err := m.Write(&pb); err != nil {
		t.Fatal(err)
	}
	if pb.Gauge != nil {
		return pb.Gauge.GetValue()
	}
	return pb.Counter.GetValue()
}

// syncBuffer is a bytes.Buffer safe for the logger's concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestLocalIndex: the sizes the store keeps in memory follow commits and
// removals, and a reopened store reads them back from the directory.
func TestLocalIndex(t *testing.T) {
	dir := t.TempDir()
	s, err := openLocalStore(dir, "db", "db")
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range []int{100, 250, 40} {
		f, err := s.tempFile("l0-*.ltx")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(make([]byte, n)); err != nil {
			t.Fatal(err)
		}
		f.Close()
		if err := s.commitFile(f.Name(), fileMeta{TXID: ltx.TXID(i + 1), Size: int64(n)}); err != nil {
			t.Fatal(err)
		}
	}
	if got := s.size(); got != 390 {
		t.Fatalf("size = %d, want 390", got)
	}
	if err := s.remove(1); err != nil {
		t.Fatal(err)
	}
	s.close()
	s, err = openLocalStore(dir, "db", "db")
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	files := s.files()
	if s.size() != 290 || len(files) != 2 || files[0] != (localFile{2, 250, false}) || files[1] != (localFile{3, 40, false}) {
		t.Fatalf("after remove(1) and reopen: size %d, files %+v; want 290 in 2-250 and 3-40", s.size(), files)
	}

	// A full image is indexed but not counted, also after a reopen.
	f, err := s.tempFile("full-*.ltx")
	if err != nil {
		t.Fatal(err)
	}
	f.Write(make([]byte, 1000))
	f.Close()
	if err := s.commitFile(f.Name(), fileMeta{TXID: 4, Size: 1000, Full: true}); err != nil {
		t.Fatal(err)
	}
	s.close()
	if s, err = openLocalStore(dir, "db", "db"); err != nil {
		t.Fatal(err)
	}
	defer s.close()
	if files := s.files(); s.size() != 290 || len(files) != 3 || files[2] != (localFile{4, 1000, true}) {
		t.Fatalf("with a full image: size %d, files %+v; want 290 and 4-1000 full", s.size(), files)
	}
	if err := s.remove(4); err != nil || s.size() != 0 || len(s.files()) != 0 {
		t.Fatalf("after remove(4): size %d, files %+v, %v", s.size(), s.files(), err)
	}
}

// TestFullImageLeavesShadowOnceUploaded: a full image (as large as the
// database) leaves the shadow directory as soon as every replica has it,
// not only after L1 compaction, which then reads it back from the store;
// the compaction and the store still restore byte-identical. Small L0
// files stay until compacted (compaction reads them locally).
func TestFullImageLeavesShadowOnceUploaded(t *testing.T) {
	e := newEnv(t, 2)
	opts := e.options()
	d := e.open(opts)
	defer d.Close()
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		e.exec("INSERT INTO t (v, b) VALUES ('x', randomblob(5000))")
		if err := d.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if !d.local.has(1) || d.local.imageBytes() == 0 {
		t.Fatal("no local full image at TXID 1: the test did not set up its case")
	}
	gets := e.clients[0].others.Load()
	d.gcLocalAsync()
	if d.local.has(1) || d.local.imageBytes() != 0 {
		t.Fatalf("the full image stayed in the shadow directory after every replica uploaded it (%d bytes)", d.local.imageBytes())
	}
	if !d.local.has(2) {
		t.Fatal("a small L0 file left before its compaction")
	}
	if err := d.replicas[0].compact(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if got := e.clients[0].others.Load() - gets; got < 1 {
		t.Fatalf("compaction opened %d objects in the store; want the full image read back from it", got)
	}
	l1 := listLevel(t, e.stores[0], 1)
	txid, sum := restoreFiles(t, e.stores[0], l1, filepath.Join(e.dir, "from-l1.db"))
	if txid != d.Status().TXID || sum != d.Status().Checksum {
		t.Fatalf("L1 restores at %s %s, shipper at %s %s", txid, sum, d.Status().TXID, d.Status().Checksum)
	}
	e.checkRestore(d)
}
