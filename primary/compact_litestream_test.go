package primary

import (
	"bytes"
	"context"
	"database/sql"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/internal/ltxtest"
	"github.com/understudy-db/understudy/internal/restore"
	"github.com/understudy-db/understudy/internal/storage"
	"github.com/understudy-db/understudy/internal/storage/file"
)

func TestTrimToKnownEnd(t *testing.T) {
	ours := &storage.Metadata{PreApplyChecksum: ltx.ChecksumFlag | 1, PostApplyChecksum: ltx.ChecksumFlag | 2}
	noSums := &storage.Metadata{Node: "x"} // metadata without checksums is no better than none
	tests := []struct {
		name string
		mds  []*storage.Metadata
		want int
	}{
		{"all ours", []*storage.Metadata{ours, ours, ours}, 3},
		{"Litestream's first, ours last", []*storage.Metadata{nil, nil, ours}, 3},
		{"ours in the middle only", []*storage.Metadata{nil, ours, nil}, 2},
		{"Litestream's last: cut after the last of ours", []*storage.Metadata{ours, ours, nil, nil}, 2},
		{"none carries checksums", []*storage.Metadata{nil, noSums, nil}, 0},
		{"empty", nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := trimToKnownEnd(tt.mds); got != tt.want {
				t.Fatalf("trimToKnownEnd = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestSamePageSize(t *testing.T) {
	tests := []struct {
		sizes []uint32
		want  int
	}{
		{nil, 0},
		{[]uint32{4096}, 1},
		{[]uint32{4096, 4096, 4096}, 3},
		{[]uint32{4096, 4096, 8192, 8192}, 2},
		{[]uint32{8192, 4096}, 1},
		{[]uint32{4096, 8192, 4096}, 1},
	}
	for _, tt := range tests {
		if got := samePageSize(tt.sizes); got != tt.want {
			t.Errorf("samePageSize(%v) = %d, want %d", tt.sizes, got, tt.want)
		}
	}
}

func TestPreKnown(t *testing.T) {
	ours := &storage.Metadata{PreApplyChecksum: ltx.ChecksumFlag | 1, PostApplyChecksum: ltx.ChecksumFlag | 2}
	fullImageOutput := &storage.Metadata{PostApplyChecksum: ltx.ChecksumFlag | 2} // an output whose pre was unknown
	tests := []struct {
		name  string
		min   ltx.TXID
		first *storage.Metadata
		want  bool
	}{
		{"chain from TXID 1 starts from nothing", 1, nil, true},
		{"ours", 7, ours, true},
		{"Litestream's first", 7, nil, false},
		{"an output whose pre-apply checksum was unknown", 7, fullImageOutput, false},
		{"metadata without checksums", 7, &storage.Metadata{Node: "x"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := preKnown(tt.min, tt.first); got != tt.want {
				t.Fatalf("preKnown(%s, %+v) = %v, want %v", tt.min, tt.first, got, tt.want)
			}
		})
	}
}

// TestCompactLitestreamHistory: Litestream 0.5 replicated the database
// (L0 1..10 and its own L1 1-5, no metadata) before the user switched to
// Understudy, whose first TXID (11) is a full image. Compaction waits while
// the run holds only Litestream's files, then compacts 6..15 into L1 and
// 1..15 into L2; the outputs carry the post-apply checksum of the head and
// restore, verified, to the primary.
func TestCompactLitestreamHistory(t *testing.T) {
	e := newEnv(t, 1)
	ctx := context.Background()
	store := e.stores[0]
	ls := &litestream{t: t, e: e, store: store}
	for i := 1; i <= 10; i++ {
		switch {
		case i == 7:
			e.exec("DELETE FROM t WHERE id % 2 = 0")
			e.exec("VACUUM") // shrinks the file: Commit goes down
		default:
			e.exec("INSERT INTO t (v, b) VALUES ('litestream', randomblob(3000))")
			e.exec("UPDATE t SET v = v || 'y' WHERE id % 3 = ?", i%3)
		}
		ls.writeL0(ltx.TXID(i))
	}
	ls.compact(1, 1, 5)

	opts := e.options()
	opts.Levels = []time.Duration{time.Hour, time.Hour}
	e.clients[0].fail.Store(true) // the full image 11 is not uploaded yet
	d := e.open(opts)
	defer d.Close()
	if got := d.Status().TXID; got != 11 {
		t.Fatalf("TXID after open = %s, want 11 (a full image after Litestream's 10)", got)
	}
	r := d.replicas[0]
	if err := r.compact(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if l1 := listLevel(t, store, 1); names(l1) != "L1:1-5 " {
		t.Fatalf("L1 = %s: with only Litestream's files up to the replica's position, nothing may be compacted", names(l1))
	}

	e.clients[0].fail.Store(false)
	for i := 0; i < 4; i++ {
		e.exec("INSERT INTO t (v, b) VALUES ('understudy', randomblob(2000))")
		e.exec("UPDATE t SET v = v || 'z' WHERE id % 4 = ?", i)
		if err := d.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	st := d.Status()
	if st.TXID != 15 {
		t.Fatalf("TXID = %s, want 15", st.TXID)
	}
	if err := r.compact(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if err := r.compact(ctx, 2); err != nil {
		t.Fatal(err)
	}
	l1, l2 := listLevel(t, store, 1), listLevel(t, store, 2)
	if names(l1) != "L1:1-5 L1:6-15 " || names(l2) != "L2:1-15 " {
		t.Fatalf("L1 = %s, L2 = %s; want L1 1-5 (Litestream's), 6-15 and L2 1-15", names(l1), names(l2))
	}
	for _, f := range []storage.FileInfo{l1[1], l2[0]} {
		md := storeMetadata(t, store, f)
		if md == nil || md.PostApplyChecksum != st.Checksum || md.PreApplyChecksum != 0 {
			t.Fatalf("%s metadata %+v: want pre-apply 0 (unknown or TXID 1) and post-apply %s", names([]storage.FileInfo{f}), md, st.Checksum)
		}
	}
	// Restores through each level, verified against the metadata.
	plans := map[string][]storage.FileInfo{"l1": l1, "l2": l2}
	for name, files := range plans {
		out := filepath.Join(e.dir, "from-"+name+".db")
		res, err := restore.Execute(ctx, store, restore.Plan{Target: st.TXID, Files: files},
			restore.Options{OutputPath: out, IntegrityCheck: restore.IntegrityFull})
		if err != nil {
			t.Fatalf("restore from %s: %v", names(files), err)
		}
		if res.TXID != st.TXID || res.PostApplyChecksum != st.Checksum || !res.Verified {
			t.Fatalf("restore from %s: %s %s verified %v; head %s %s", names(files), res.TXID, res.PostApplyChecksum, res.Verified, st.TXID, st.Checksum)
		}
	}
	res, err := restore.Restore(ctx, store, restore.Options{OutputPath: filepath.Join(e.dir, "latest.db"), IntegrityCheck: restore.IntegrityFull})
	if err != nil || res.PostApplyChecksum != st.Checksum || !res.Verified {
		t.Fatalf("restore latest: %+v %v; head %s", res, err, st.Checksum)
	}
	d.Close()
	e.checkPrimaryFile(st.Checksum)
}

// TestCompactOwnFilesWithoutMetadata: files of our own history whose
// metadata was lost (copied without it). A file without checksums in the
// middle of a run is compacted; one at the end waits; one at the start
// takes its pre-apply checksum from the file before it, and when that has
// none either and the output is no full image, the level waits (warned
// once), since a follower could not verify the output's start.
func TestCompactOwnFilesWithoutMetadata(t *testing.T) {
	e := newEnv(t, 1)
	ctx := context.Background()
	store := e.stores[0]
	logs := &syncBuffer{}
	opts := e.options()
	opts.Logger = hclog.New(&hclog.LoggerOptions{Level: hclog.Info, Output: logs})
	d := e.open(opts)
	defer d.Close()
	r := d.replicas[0]
	commit := func() {
		t.Helper()
		e.exec("INSERT INTO t (v, b) VALUES ('own', randomblob(1500))")
		if err := d.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 3; i++ {
		commit()
	}
	if err := r.compact(ctx, 1); err != nil {
		t.Fatal(err)
	}
	for d.Status().TXID < 8 {
		commit()
	}
	// The local copies (which carry their metadata) are gone too, so
	// compaction reads the store's.
	if err := d.local.remove(^ltx.TXID(0)); err != nil {
		t.Fatal(err)
	}
	stripMetadata(t, store, 0, 6)
	stripMetadata(t, store, 0, 8)
	sumAt7 := storeMetadata(t, store, listLevel(t, store, 0)[6]).PostApplyChecksum

	if err := r.compact(ctx, 1); err != nil {
		t.Fatal(err)
	}
	l1 := listLevel(t, store, 1)
	if names(l1) != "L1:1-4 L1:5-7 " {
		t.Fatalf("L1 = %s; want 1-4 and 5-7 (6 without metadata inside, 8 without metadata waits)", names(l1))
	}
	md := storeMetadata(t, store, l1[1])
	if md.PreApplyChecksum != storeMetadata(t, store, l1[0]).PostApplyChecksum || md.PostApplyChecksum != sumAt7 {
		t.Fatalf("L1 5-7 metadata %+v; want the chain from L1 1-4 and post-apply %s", md, sumAt7)
	}
	res, err := restore.Execute(ctx, store, restore.Plan{Target: 7, Files: l1},
		restore.Options{OutputPath: filepath.Join(e.dir, "at7.db"), IntegrityCheck: restore.IntegrityFull})
	if err != nil || res.PostApplyChecksum != sumAt7 || !res.Verified {
		t.Fatalf("restore L1 to 7: %+v %v; want %s", res, err, sumAt7)
	}

	// Now 8 (no metadata) starts the run 8..9, which is no full image: its
	// pre-apply checksum comes from L1 5-7, which ends just before it.
	commit()
	if err := r.compact(ctx, 1); err != nil {
		t.Fatal(err)
	}
	l1 = listLevel(t, store, 1)
	if names(l1) != "L1:1-4 L1:5-7 L1:8-9 " {
		t.Fatalf("L1 = %s; want 8-9 compacted with the pre-apply checksum of L1 5-7's end", names(l1))
	}
	at9 := d.Status()
	if md := storeMetadata(t, store, l1[2]); md.PreApplyChecksum != sumAt7 || md.PostApplyChecksum != at9.Checksum {
		t.Fatalf("L1 8-9 metadata %+v; want pre-apply %s, post-apply %s", md, sumAt7, at9.Checksum)
	}
	res, err = restore.Execute(ctx, store, restore.Plan{Target: 9, Files: l1},
		restore.Options{OutputPath: filepath.Join(e.dir, "at9.db"), IntegrityCheck: restore.IntegrityFull})
	if err != nil || res.PostApplyChecksum != at9.Checksum || !res.Verified {
		t.Fatalf("restore L1 to 9: %+v %v; want %s", res, err, at9.Checksum)
	}

	// 10 has no metadata and neither has the file before it (L1 8-9, and L0
	// 9 is gone from the shadow directory): the start of 10..11 cannot be
	// known and it is no full image, so it waits, warned once.
	commit()
	commit()
	if err := d.local.remove(^ltx.TXID(0)); err != nil {
		t.Fatal(err)
	}
	stripMetadata(t, store, 0, 9)
	stripMetadata(t, store, 0, 10)
	stripMetadataOf(t, store, l1[2])
	for i := 0; i < 2; i++ {
		if err := r.compact(ctx, 1); err != nil {
			t.Fatal(err)
		}
	}
	if l1 := listLevel(t, store, 1); len(l1) != 3 {
		t.Fatalf("L1 = %s; a run whose start cannot be verified and that is no full image must not be compacted", names(l1))
	}
	if n := strings.Count(logs.String(), "level not compacted yet"); n != 1 {
		t.Fatalf("%d warnings about the waiting level, want 1:\n%s", n, logs.String())
	}
}

// litestream writes LTX files into a file store the way Litestream 0.5
// does, without any metadata: one L0 file per TXID with the pages that
// changed since the previous one (all of them for TXID 1), header flag
// NoChecksum, no pre- or post-apply checksum, Commit = the page count.
type litestream struct {
	t     *testing.T
	e     *testEnv
	store *file.Client
	prev  []byte
}

// writeL0 checkpoints the application's database and writes the pages that
// changed as the L0 file of txid.
func (l *litestream) writeL0(txid ltx.TXID) {
	t := l.t
	t.Helper()
	l.e.exec("PRAGMA wal_checkpoint(TRUNCATE)")
	img, err := os.ReadFile(l.e.path)
	if err != nil {
		t.Fatal(err)
	}
	pageSize := 4096
	if n := len(img); n == 0 || n%pageSize != 0 {
		t.Fatalf("database image of %d bytes", n)
	}
	commit := uint32(len(img) / pageSize)
	var pgnos []uint32
	for pgno := uint32(1); pgno <= commit; pgno++ {
		off := int(pgno-1) * pageSize
		if off+pageSize <= len(l.prev) && bytes.Equal(img[off:off+pageSize], l.prev[off:off+pageSize]) {
			continue
		}
		pgnos = append(pgnos, pgno)
	}
	data := ltxtest.Encode(t, uint32(pageSize), commit, txid, txid, time.Now(), pgnos, func(pgno uint32) []byte {
		return img[int(pgno-1)*pageSize : int(pgno)*pageSize]
	})
	l.put(0, txid, txid, data)
	l.prev = img
}

// compact writes Litestream's own compaction of level-1 files min..max
// into level.
func (l *litestream) compact(level int, min, max ltx.TXID) {
	t := l.t
	t.Helper()
	var rdrs []*os.File
	for _, f := range listLevel(t, l.store, level-1) {
		if f.MinTXID >= min && f.MaxTXID <= max {
			r, err := os.Open(l.store.Path(level-1, f.MinTXID, f.MaxTXID))
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			rdrs = append(rdrs, r)
		}
	}
	var buf bytes.Buffer
	in := make([]io.Reader, len(rdrs))
	for i, r := range rdrs {
		in[i] = r
	}
	c, err := ltx.NewCompactor(&buf, in)
	if err != nil {
		t.Fatal(err)
	}
	c.HeaderFlags = ltx.HeaderFlagNoChecksum
	if err := c.Compact(context.Background()); err != nil {
		t.Fatal(err)
	}
	l.put(level, min, max, buf.Bytes())
}

// put writes a file straight into the store's directory, as Litestream
// does: no extended attributes, no sidecar.
func (l *litestream) put(level int, min, max ltx.TXID, b []byte) {
	l.t.Helper()
	path := l.store.Path(level, min, max)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		l.t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		l.t.Fatal(err)
	}
	if md := storeMetadata(l.t, l.store, storage.FileInfo{Level: level, MinTXID: min, MaxTXID: max}); md != nil {
		l.t.Fatalf("%s: a file written like Litestream's has metadata %+v", path, md)
	}
}

// stripMetadata replaces a stored file with a copy without its metadata
// (a new inode: no extended attributes, and a sidecar of the old inode
// does not describe it).
func stripMetadata(t *testing.T, store *file.Client, level int, txid ltx.TXID) {
	t.Helper()
	stripMetadataOf(t, store, storage.FileInfo{Level: level, MinTXID: txid, MaxTXID: txid})
}

func stripMetadataOf(t *testing.T, store *file.Client, f storage.FileInfo) {
	t.Helper()
	path := store.Path(f.Level, f.MinTXID, f.MaxTXID)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if md := storeMetadata(t, store, f); md != nil {
		t.Fatalf("%s still has metadata %+v", path, md)
	}
}

// storeMetadata reads a stored file's metadata (nil when it has none).
func storeMetadata(t *testing.T, c storage.Client, f storage.FileInfo) *storage.Metadata {
	t.Helper()
	obj, err := c.Open(context.Background(), f.Level, f.MinTXID, f.MaxTXID, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	obj.Close()
	return obj.Info.Metadata
}

// TestCompactAcrossPageSizeChange: the database is replaced by one with
// another page size (a full image starts the new history). A compacted
// file holds one page size: the first compaction ends before the change,
// the next one starts there, and restores still equal the primary.
func TestCompactAcrossPageSizeChange(t *testing.T) {
	e := newEnv(t, 1)
	ctx := context.Background()
	store := e.stores[0]
	d := e.open(e.options())
	defer d.Close()
	for i := 0; i < 2; i++ {
		e.exec("INSERT INTO t (v) VALUES ('4096')")
		if err := d.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	before := d.Status().TXID

	e.app.Close()
	other := filepath.Join(e.dir, "other.db")
	raw, err := sql.Open("sqlite3", "file:"+other)
	if err != nil {
		t.Fatal(err)
	}
	raw.SetMaxOpenConns(1)
	for _, q := range []string{"PRAGMA page_size = 8192", "CREATE TABLE n (x)", "INSERT INTO n VALUES ('new'), ('file')", "PRAGMA journal_mode = WAL"} {
		if _, err := raw.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	raw.Close()
	for _, p := range []string{other + "-wal", other + "-shm", e.path + "-wal", e.path + "-shm"} {
		os.Remove(p)
	}
	if err := os.Rename(other, e.path); err != nil {
		t.Fatal(err)
	}
	e.app = openApp(t, e.path)
	for i := 0; i < 3; i++ {
		e.exec("INSERT INTO n VALUES ('8192')")
		if err := d.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	st := d.Status()
	r := d.replicas[0]
	for i := 0; i < 2; i++ {
		if err := r.compact(ctx, 1); err != nil {
			t.Fatalf("compaction %d: %v", i+1, err)
		}
	}
	l1 := listLevel(t, store, 1)
	if len(l1) != 2 || l1[0].MinTXID != 1 || l1[0].MaxTXID != before || l1[1].MinTXID != before+1 || l1[1].MaxTXID != st.TXID {
		t.Fatalf("L1 = %s; want 1-%d (page size 4096) and %d-%d (8192)", names(l1), before, before+1, st.TXID)
	}
	if md := storeMetadata(t, store, l1[1]); md.PostApplyChecksum != st.Checksum {
		t.Fatalf("L1 %s post-apply %s, head %s", names(l1[1:]), md.PostApplyChecksum, st.Checksum)
	}
	res, err := restore.Restore(ctx, store, restore.Options{OutputPath: filepath.Join(e.dir, "latest.db"), IntegrityCheck: restore.IntegrityFull})
	if err != nil || res.TXID != st.TXID || res.PostApplyChecksum != st.Checksum || !res.Verified || res.PageSize != 8192 {
		t.Fatalf("restore latest: %+v %v; head %s %s", res, err, st.TXID, st.Checksum)
	}
	res, err = restore.Execute(ctx, store, restore.Plan{Target: before, Files: l1[:1]},
		restore.Options{OutputPath: filepath.Join(e.dir, "before.db"), IntegrityCheck: restore.IntegrityFull})
	if err != nil || res.PageSize != 4096 || !res.Verified {
		t.Fatalf("restore L1 1-%d: %+v %v", before, res, err)
	}
}
