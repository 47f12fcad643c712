// Package storagetest is the conformance suite every storage.Client passes.
// A store's own tests call Run with a constructor that gives each test an
// empty store (its own directory, bucket or prefix).
package storagetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/internal/storage"
)

// ListKeys is how many keys the listing test writes: more than two S3 pages
// of 1,000 so that paging and StartAfter are exercised.
const ListKeys = 2500

// RaceWriters and RaceRounds shape the create-only race.
const (
	RaceWriters = 16
	RaceRounds  = 100
)

// NewClientFunc returns a client on an empty store for one test.
type NewClientFunc func(t *testing.T) storage.Client

// Option adapts the suite to a documented difference of a client.
type Option func(*options)

type options struct {
	storedListSizes bool
}

// StoredListSizes is for a client whose List gives each object's stored
// size, which exceeds the size written by a fixed overhead (an encrypting
// decorator: agecrypt); Create and Open must still give the size written.
func StoredListSizes() Option { return func(o *options) { o.storedListSizes = true } }

// Run runs every conformance case as a subtest.
func Run(t *testing.T, newClient NewClientFunc, opts ...Option) {
	t.Helper()
	var o options
	for _, f := range opts {
		f(&o)
	}
	cases := []struct {
		name string
		fn   func(t *testing.T, c storage.Client)
	}{
		{"RoundTrip", testRoundTrip},
		{"RangeReads", testRangeReads},
		{"ListOrderAndPagination", func(t *testing.T, c storage.Client) { testListOrderAndPagination(t, c, o) }},
		{"ListSeek", testListSeek},
		{"ListLevelsApart", testListLevelsApart},
		{"CreateOnly", testCreateOnly},
		{"CreateOnlyRace", testCreateOnlyRace},
		{"FailedCreateLeavesNothing", testFailedCreateLeavesNothing},
		{"Delete", testDelete},
		{"MissingKey", testMissingKey},
		{"ProbeCreateOnly", testProbeCreateOnly},
		{"PutKey", testPutKey},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, newClient(t))
		})
	}
}

// Body returns deterministic content for a key, distinct per seed.
func Body(size int, seed int64) []byte {
	b := make([]byte, size)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

// TestMetadata returns a distinct, fully populated Metadata.
func TestMetadata(n uint64) storage.Metadata {
	md := storage.Metadata{
		Node:              fmt.Sprintf("node-%d.example", n),
		FencingToken:      n*1000 + 7,
		CommitTime:        time.Date(2026, 11, 24, 12, 0, 0, int(n%1000)*1000+123, time.UTC).Add(time.Duration(n) * time.Second),
		PreApplyChecksum:  ltx.ChecksumFlag | ltx.Checksum(n*0x1111),
		PostApplyChecksum: ltx.ChecksumFlag | ltx.Checksum(n*0x2222+1),
	}
	// Odd n leave the optional fields out, as objects of an older
	// Understudy do; even n carry a path that needs escaping.
	if n%2 == 0 {
		md.DatabaseID = fmt.Sprintf("%032x", n)
		md.DatabasePath = fmt.Sprintf("/srv/d b/ü%d.db", n)
	}
	return md
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

// MustCreate creates a key and fails the test on error.
func MustCreate(t *testing.T, c storage.Client, level int, minTXID, maxTXID ltx.TXID, body []byte, md storage.Metadata) storage.FileInfo {
	t.Helper()
	info, err := c.Create(ctx(t), level, minTXID, maxTXID, bytes.NewReader(body), md)
	if err != nil {
		t.Fatalf("create %d/%s-%s: %v", level, minTXID, maxTXID, err)
	}
	return info
}

// ReadAll opens a key (with a range) and reads it whole.
func ReadAll(t *testing.T, c storage.Client, level int, minTXID, maxTXID ltx.TXID, offset, size int64) ([]byte, storage.FileInfo) {
	t.Helper()
	obj, err := c.Open(ctx(t), level, minTXID, maxTXID, offset, size)
	if err != nil {
		t.Fatalf("open %d/%s-%s [%d,%d]: %v", level, minTXID, maxTXID, offset, size, err)
	}
	defer obj.Close()
	b, err := io.ReadAll(obj)
	if err != nil {
		t.Fatalf("read %d/%s-%s: %v", level, minTXID, maxTXID, err)
	}
	return b, obj.Info
}

// ListAll lists a level from seek and collects the items.
func ListAll(t *testing.T, c storage.Client, level int, seek ltx.TXID) []storage.FileInfo {
	t.Helper()
	it, err := c.List(ctx(t), level, seek)
	if err != nil {
		t.Fatalf("list level %d from %s: %v", level, seek, err)
	}
	defer it.Close()
	var out []storage.FileInfo
	for it.Next() {
		out = append(out, it.Item())
	}
	if err := it.Err(); err != nil {
		t.Fatalf("list level %d from %s: %v", level, seek, err)
	}
	return out
}

func checkMetadata(t *testing.T, what string, got *storage.Metadata, want storage.Metadata) {
	t.Helper()
	if got == nil {
		t.Fatalf("%s: metadata is nil, want %+v", what, want)
	}
	if got.Node != want.Node || got.FencingToken != want.FencingToken ||
		!got.CommitTime.Equal(want.CommitTime) ||
		got.PreApplyChecksum != want.PreApplyChecksum || got.PostApplyChecksum != want.PostApplyChecksum ||
		got.DatabaseID != want.DatabaseID || got.DatabasePath != want.DatabasePath {
		t.Fatalf("%s: metadata = %+v, want %+v", what, *got, want)
	}
}

func testRoundTrip(t *testing.T, c storage.Client) {
	for i, k := range []struct {
		level    int
		min, max ltx.TXID
		size     int
	}{
		{storage.LevelL0, 1, 1, 4096 + 100},
		{storage.LevelL0, 0xa1, 0xa1, 1},
		{1, 2, 0x1f, 70000},
		{storage.SnapshotLevel, 1, 0x20, 300000},
		{3, 0xfffffffffffffff0, 0xffffffffffffffff, 1000},
	} {
		body := Body(k.size, int64(i))
		md := TestMetadata(uint64(i + 1))
		created := MustCreate(t, c, k.level, k.min, k.max, body, md)
		want := storage.FileInfo{Level: k.level, MinTXID: k.min, MaxTXID: k.max, Size: int64(k.size)}
		if created.Level != want.Level || created.MinTXID != want.MinTXID || created.MaxTXID != want.MaxTXID || created.Size != want.Size {
			t.Fatalf("create returned %+v, want %+v", created, want)
		}
		checkMetadata(t, "create", created.Metadata, md)

		got, info := ReadAll(t, c, k.level, k.min, k.max, 0, -1)
		if !bytes.Equal(got, body) {
			t.Fatalf("read back %d bytes differing from the %d written", len(got), len(body))
		}
		if info.Level != want.Level || info.MinTXID != want.MinTXID || info.MaxTXID != want.MaxTXID || info.Size != want.Size {
			t.Fatalf("open info %+v, want %+v", info, want)
		}
		checkMetadata(t, "open", info.Metadata, md)
		if !info.CreatedAt.Equal(md.CommitTime) {
			t.Fatalf("open CreatedAt = %v, want the commit time %v", info.CreatedAt, md.CommitTime)
		}
	}
}

func testRangeReads(t *testing.T, c storage.Client) {
	const size = 10000
	body := Body(size, 42)
	MustCreate(t, c, storage.LevelL0, 5, 5, body, TestMetadata(5))
	for _, tc := range []struct {
		name         string
		offset, size int64
		want         []byte
	}{
		{"whole", 0, -1, body},
		{"whole by size", 0, size, body},
		{"head", 0, 100, body[:100]},
		{"middle", 4096, 1000, body[4096:5096]},
		{"tail from offset", 9000, -1, body[9000:]},
		{"last byte", size - 1, 1, body[size-1:]},
		{"size past end", 9990, 100, body[9990:]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, info := ReadAll(t, c, storage.LevelL0, 5, 5, tc.offset, tc.size)
			if !bytes.Equal(got, tc.want) {
				t.Fatalf("read [%d,%d]: got %d bytes, want %d (content differs or length)", tc.offset, tc.size, len(got), len(tc.want))
			}
			if info.Size != size {
				t.Fatalf("Info.Size = %d, want the whole object's %d", info.Size, size)
			}
			checkMetadata(t, "ranged open", info.Metadata, TestMetadata(5))
		})
	}
}

// createMany creates L0 keys 1..n concurrently in a shuffled order.
func createMany(t *testing.T, c storage.Client, level int, txids []ltx.TXID) {
	t.Helper()
	order := append([]ltx.TXID(nil), txids...)
	rand.New(rand.NewSource(1)).Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	work := make(chan ltx.TXID)
	errs := make(chan error, len(order))
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range work {
				body := []byte(fmt.Sprintf("ltx %d %s", level, id))
				if _, err := c.Create(ctx(t), level, id, id, bytes.NewReader(body), TestMetadata(uint64(id))); err != nil {
					errs <- err
				}
			}
		}()
	}
	for _, id := range order {
		work <- id
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("create: %v", err)
	}
}

func testListOrderAndPagination(t *testing.T, c storage.Client, o options) {
	txids := make([]ltx.TXID, ListKeys)
	for i := range txids {
		txids[i] = ltx.TXID(i + 1)
	}
	createMany(t, c, storage.LevelL0, txids)

	all := ListAll(t, c, storage.LevelL0, 0)
	if len(all) != ListKeys {
		t.Fatalf("listed %d files, want %d", len(all), ListKeys)
	}
	for i, fi := range all {
		id := ltx.TXID(i + 1)
		body := fmt.Sprintf("ltx %d %s", storage.LevelL0, id)
		sizeOK := fi.Size == int64(len(body)) || (o.storedListSizes && fi.Size > int64(len(body)))
		if fi.Level != storage.LevelL0 || fi.MinTXID != id || fi.MaxTXID != id || !sizeOK {
			t.Fatalf("item %d = %+v, want level 0 %s-%s size %d", i, fi, id, id, len(body))
		}
		if fi.CreatedAt.IsZero() {
			t.Fatalf("item %d has no CreatedAt", i)
		}
	}

	// Seek into the second and third pages.
	for _, seek := range []ltx.TXID{1000, 1001, 2001, ListKeys} {
		got := ListAll(t, c, storage.LevelL0, seek)
		if want := ListKeys - int(seek) + 1; len(got) != want || got[0].MinTXID != seek {
			t.Fatalf("seek %d: got %d items starting at %v, want %d starting at %d", seek, len(got), first(got), want, seek)
		}
	}
	if got := ListAll(t, c, storage.LevelL0, ListKeys+1); len(got) != 0 {
		t.Fatalf("seek past the end: got %d items", len(got))
	}

	// Deleting all of them exercises batching (S3 deletes at most 1,000 per call).
	if err := c.Delete(ctx(t), all); err != nil {
		t.Fatalf("delete %d files: %v", len(all), err)
	}
	if got := ListAll(t, c, storage.LevelL0, 0); len(got) != 0 {
		t.Fatalf("after deleting all: %d files remain, first %+v", len(got), got[0])
	}
}

func first(a []storage.FileInfo) any {
	if len(a) == 0 {
		return "nothing"
	}
	return a[0].MinTXID
}

func testListSeek(t *testing.T, c storage.Client) {
	// Compacted ranges: seek compares with MinTXID.
	ranges := [][2]ltx.TXID{{1, 9}, {10, 19}, {20, 20}, {21, 0x100}, {0x101, 0x1000}}
	for i, r := range ranges {
		MustCreate(t, c, 1, r[0], r[1], Body(10, int64(i)), TestMetadata(uint64(i)))
	}
	for _, tc := range []struct {
		seek ltx.TXID
		want []ltx.TXID // MinTXIDs
	}{
		{0, []ltx.TXID{1, 10, 20, 21, 0x101}},
		{1, []ltx.TXID{1, 10, 20, 21, 0x101}},
		{2, []ltx.TXID{10, 20, 21, 0x101}},
		{10, []ltx.TXID{10, 20, 21, 0x101}},
		{20, []ltx.TXID{20, 21, 0x101}},
		{22, []ltx.TXID{0x101}},
		{0x101, []ltx.TXID{0x101}},
		{0x102, nil},
	} {
		got := ListAll(t, c, 1, tc.seek)
		var mins []ltx.TXID
		for _, fi := range got {
			mins = append(mins, fi.MinTXID)
		}
		if fmt.Sprint(mins) != fmt.Sprint(tc.want) {
			t.Errorf("seek %s: MinTXIDs %v, want %v", tc.seek, mins, tc.want)
		}
	}
}

func testListLevelsApart(t *testing.T, c storage.Client) {
	if got := ListAll(t, c, storage.LevelL0, 0); len(got) != 0 {
		t.Fatalf("empty store lists %d files", len(got))
	}
	MustCreate(t, c, 0, 3, 3, Body(10, 1), TestMetadata(1))
	MustCreate(t, c, 1, 1, 3, Body(10, 2), TestMetadata(2))
	MustCreate(t, c, storage.SnapshotLevel, 1, 3, Body(10, 3), TestMetadata(3))
	for _, tc := range []struct {
		level    int
		min, max ltx.TXID
	}{{0, 3, 3}, {1, 1, 3}, {storage.SnapshotLevel, 1, 3}} {
		got := ListAll(t, c, tc.level, 0)
		if len(got) != 1 || got[0].Level != tc.level || got[0].MinTXID != tc.min || got[0].MaxTXID != tc.max {
			t.Fatalf("level %d lists %+v, want only %s-%s", tc.level, got, tc.min, tc.max)
		}
	}
	if got := ListAll(t, c, 2, 0); len(got) != 0 {
		t.Fatalf("empty level 2 lists %d files", len(got))
	}
}

func testCreateOnly(t *testing.T, c storage.Client) {
	body := Body(500, 1)
	MustCreate(t, c, 0, 7, 7, body, TestMetadata(1))
	_, err := c.Create(ctx(t), 0, 7, 7, bytes.NewReader(Body(600, 2)), TestMetadata(2))
	if !errors.Is(err, storage.ErrExists) {
		t.Fatalf("second create: err = %v, want ErrExists", err)
	}
	if !strings.Contains(err.Error(), storage.FormatFilename(7, 7)) {
		t.Errorf("ErrExists message %q does not name the key", err)
	}
	got, info := ReadAll(t, c, 0, 7, 7, 0, -1)
	if !bytes.Equal(got, body) {
		t.Fatal("second create changed the content")
	}
	checkMetadata(t, "after second create", info.Metadata, TestMetadata(1))
	// Other keys stay free: the same TXID at another level, a range.
	MustCreate(t, c, 1, 7, 7, body, TestMetadata(3))
	MustCreate(t, c, 0, 7, 8, body, TestMetadata(4))
}

func testCreateOnlyRace(t *testing.T, c storage.Client) {
	for round := 0; round < RaceRounds; round++ {
		id := ltx.TXID(round + 1)
		var wg sync.WaitGroup
		errs := make([]error, RaceWriters)
		start := make(chan struct{})
		for w := 0; w < RaceWriters; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				body := Body(200+w, int64(round*RaceWriters+w))
				_, errs[w] = c.Create(ctx(t), 0, id, id, bytes.NewReader(body), TestMetadata(uint64(w)))
			}()
		}
		close(start)
		wg.Wait()
		winner := -1
		for w, err := range errs {
			switch {
			case err == nil && winner >= 0:
				t.Fatalf("round %d: writers %d and %d both created %s", round, winner, w, id)
			case err == nil:
				winner = w
			case !errors.Is(err, storage.ErrExists):
				t.Fatalf("round %d: writer %d: %v, want ErrExists", round, w, err)
			}
		}
		if winner < 0 {
			t.Fatalf("round %d: no writer won", round)
		}
		got, info := ReadAll(t, c, 0, id, id, 0, -1)
		if !bytes.Equal(got, Body(200+winner, int64(round*RaceWriters+winner))) {
			t.Fatalf("round %d: stored content is not the winner's (writer %d)", round, winner)
		}
		checkMetadata(t, fmt.Sprintf("round %d", round), info.Metadata, TestMetadata(uint64(winner)))
	}
}

// failingReader returns some bytes, then an error.
type failingReader struct{ n int }

func (r *failingReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, errors.New("source failed")
	}
	n := min(len(p), r.n)
	for i := range p[:n] {
		p[i] = 'x'
	}
	r.n -= n
	return n, nil
}

func testFailedCreateLeavesNothing(t *testing.T, c storage.Client) {
	_, err := c.Create(ctx(t), 0, 9, 9, &failingReader{n: 5000}, TestMetadata(1))
	if err == nil {
		t.Fatal("create from a failing reader succeeded")
	}
	if _, err := c.Open(ctx(t), 0, 9, 9, 0, -1); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("after a failed create, open: err = %v, want ErrNotFound", err)
	}
	if got := ListAll(t, c, 0, 0); len(got) != 0 {
		t.Fatalf("after a failed create, the level lists %+v", got)
	}
	// The key is still free.
	MustCreate(t, c, 0, 9, 9, Body(10, 1), TestMetadata(1))
}

func testDelete(t *testing.T, c storage.Client) {
	var files []storage.FileInfo
	for id := ltx.TXID(1); id <= 5; id++ {
		files = append(files, MustCreate(t, c, 0, id, id, Body(10, int64(id)), TestMetadata(uint64(id))))
	}
	if err := c.Delete(ctx(t), nil); err != nil {
		t.Fatalf("delete nothing: %v", err)
	}
	missing := storage.FileInfo{Level: 0, MinTXID: 100, MaxTXID: 100}
	if err := c.Delete(ctx(t), []storage.FileInfo{files[1], files[3], missing}); err != nil {
		t.Fatalf("delete two files and a missing one: %v", err)
	}
	for _, fi := range []storage.FileInfo{files[1], files[3]} {
		if _, err := c.Open(ctx(t), 0, fi.MinTXID, fi.MaxTXID, 0, -1); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("open deleted %s: err = %v, want ErrNotFound", fi.MinTXID, err)
		}
	}
	var mins []ltx.TXID
	for _, fi := range ListAll(t, c, 0, 0) {
		mins = append(mins, fi.MinTXID)
	}
	if fmt.Sprint(mins) != fmt.Sprint([]ltx.TXID{1, 3, 5}) {
		t.Fatalf("after delete, level 0 lists %v, want [1 3 5]", mins)
	}
	// Deleting again is not an error, and a deleted key can be created again.
	if err := c.Delete(ctx(t), []storage.FileInfo{files[1]}); err != nil {
		t.Fatalf("delete again: %v", err)
	}
	MustCreate(t, c, 0, 2, 2, Body(20, 9), TestMetadata(9))
	_, info := ReadAll(t, c, 0, 2, 2, 0, -1)
	checkMetadata(t, "recreated", info.Metadata, TestMetadata(9))
}

func testMissingKey(t *testing.T, c storage.Client) {
	MustCreate(t, c, 0, 1, 1, Body(10, 1), TestMetadata(1))
	for _, tc := range []struct {
		name         string
		level        int
		min, max     ltx.TXID
		offset, size int64
	}{
		{"next TXID", 0, 2, 2, 0, -1},
		{"ranged", 0, 2, 2, 10, 100},
		{"other level", 1, 1, 1, 0, -1},
		{"other range", 0, 1, 2, 0, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.Open(ctx(t), tc.level, tc.min, tc.max, tc.offset, tc.size)
			if !errors.Is(err, storage.ErrNotFound) {
				t.Fatalf("err = %v, want ErrNotFound", err)
			}
			if !strings.Contains(err.Error(), storage.FormatFilename(tc.min, tc.max)) {
				t.Errorf("ErrNotFound message %q does not name the key", err)
			}
		})
	}
}

func testProbeCreateOnly(t *testing.T, c storage.Client) {
	for i := 0; i < 2; i++ { // a second probe must not trip over the first
		if err := c.ProbeCreateOnly(ctx(t)); err != nil {
			t.Fatalf("probe %d: %v", i, err)
		}
	}
	for _, level := range []int{0, 1, 2, 3, storage.SnapshotLevel} {
		if got := ListAll(t, c, level, 0); len(got) != 0 {
			t.Fatalf("the probe left files in level %d: %+v", level, got)
		}
	}
}

// CheckError asserts that err is a failure whose message contains every one
// of want and none of forbidden (e.g. a secret).
func CheckError(t *testing.T, what string, err error, want []string, forbidden []string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: succeeded, want an error", what)
	}
	msg := err.Error()
	t.Logf("%s: %s", what, msg)
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Errorf("%s: message %q does not contain %q", what, msg, w)
		}
	}
	for _, f := range forbidden {
		if f != "" && strings.Contains(msg, f) {
			t.Errorf("%s: message %q contains %q, which must never be shown", what, msg, f)
		}
	}
}

// RunFailingStore asserts that every operation on c fails with a message
// containing want and none of forbidden: used for wrong credentials and a
// missing bucket, where the store is unusable as a whole.
func RunFailingStore(t *testing.T, c storage.Client, want []string, forbidden []string) {
	t.Helper()
	_, err := c.Create(ctx(t), 0, 1, 1, bytes.NewReader(Body(10, 1)), TestMetadata(1))
	CheckError(t, "create", err, want, forbidden)
	if errors.Is(err, storage.ErrExists) {
		t.Errorf("create: a store failure must not look like ErrExists: %v", err)
	}
	_, err = c.Open(ctx(t), 0, 1, 1, 0, -1)
	CheckError(t, "open", err, want, forbidden)
	if errors.Is(err, storage.ErrNotFound) {
		t.Errorf("open: a store failure must not look like ErrNotFound (a follower would wait forever): %v", err)
	}
	it, err := c.List(ctx(t), 0, 0)
	if err == nil {
		for it.Next() {
		}
		err = it.Err()
		it.Close()
	}
	CheckError(t, "list", err, want, forbidden)
	err = c.Delete(ctx(t), []storage.FileInfo{{Level: 0, MinTXID: 1, MaxTXID: 1}})
	CheckError(t, "delete", err, want, forbidden)
	err = c.ProbeCreateOnly(ctx(t))
	CheckError(t, "probe", err, want, forbidden)
}

// FilesUnder lists the regular files below dir on this machine, relative to
// base and "/"-separated, in walk order: for checking a store's layout.
func FilesUnder(t *testing.T, base, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.Walk(filepath.Join(base, dir), func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			rel, _ := filepath.Rel(base, p)
			out = append(out, filepath.ToSlash(rel))
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// CheckPagedListing creates level-1 files 1..n and lists them from seeks at
// and around every page boundary: for a client built with a small page
// size (a few items), so that each listing crosses pages.
func CheckPagedListing(t *testing.T, c storage.Client, n int) {
	t.Helper()
	for id := ltx.TXID(1); id <= ltx.TXID(n); id++ {
		MustCreate(t, c, 1, id, id, []byte("x"), TestMetadata(uint64(id)))
	}
	for seek := ltx.TXID(0); seek <= ltx.TXID(n+1); seek++ {
		got := ListAll(t, c, 1, seek)
		start := max(seek, 1)
		if want := max(n-int(start)+1, 0); len(got) != want {
			t.Fatalf("seek %d: %d items, want %d", seek, len(got), want)
		}
		for i, fi := range got {
			if fi.MinTXID != start+ltx.TXID(i) {
				t.Fatalf("seek %d: item %d is %s, want %s", seek, i, fi.MinTXID, start+ltx.TXID(i))
			}
		}
	}
}

// CheckKeyReader checks a client's storage.KeyReader (how Litestream 0.3
// trees are read) on keys its own Create wrote: ListKeys lists what is under
// a prefix, relative to the replica's path, in key order and with sizes;
// OpenKey reads an object whole; a missing key is ErrNotFound.
func CheckKeyReader(t *testing.T, c storage.Client) {
	t.Helper()
	kr, ok := c.(storage.KeyReader)
	if !ok {
		t.Fatalf("%T is not a storage.KeyReader", c)
	}
	a, b := Body(100, 1), Body(3000, 2)
	MustCreate(t, c, 1, 1, 2, a, TestMetadata(1))
	MustCreate(t, c, 1, 3, 9, b, TestMetadata(2))
	MustCreate(t, c, 2, 1, 9, a, TestMetadata(3)) // another prefix
	keys, err := kr.ListKeys(ctx(t), "0001/")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"0001/" + storage.FormatFilename(1, 2), "0001/" + storage.FormatFilename(3, 9)}
	if len(keys) != 2 || keys[0].Key != want[0] || keys[1].Key != want[1] || keys[0].Size != 100 || keys[1].Size != 3000 || keys[1].ModTime.IsZero() {
		t.Fatalf("ListKeys(0001/) = %+v, want %v with sizes 100 and 3000", keys, want)
	}
	rc, err := kr.OpenKey(ctx(t), want[1])
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, b) {
		t.Fatalf("OpenKey(%s): %d bytes (%v), want the 3000 written", want[1], len(got), err)
	}
	if _, err := kr.OpenKey(ctx(t), "generations/none"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("OpenKey of a missing key: %v, want ErrNotFound", err)
	}
}

// PutKeyRounds is how many replacements testPutKey races a reader against.
const PutKeyRounds = 20

// testPutKey checks storage.KeyWriter with storage.KeyReader (the heads
// index of a dir: entry): a key not written yet is ErrNotFound; PutKey
// replaces what is there, a shorter body included (no tail of the old one
// left); a reader racing the replacements reads one whole body, never a
// mix or a part; and the key is the only object the prefix then lists (no
// temp file left where a listing would find it), outside every level.
func testPutKey(t *testing.T, c storage.Client) {
	kw, ok := c.(storage.KeyWriter)
	if !ok {
		t.Fatalf("%T is not a storage.KeyWriter", c)
	}
	kr, ok := c.(storage.KeyReader)
	if !ok {
		t.Fatalf("%T is not a storage.KeyReader", c)
	}
	const key = ".understudy-test-key.json"
	read := func() ([]byte, error) {
		rc, err := kr.OpenKey(ctx(t), key)
		if err != nil {
			return nil, err
		}
		defer rc.Close()
		return io.ReadAll(rc)
	}
	if _, err := read(); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("OpenKey before any PutKey: %v, want ErrNotFound", err)
	}
	long, short := Body(5000, 1), Body(100, 2)
	for _, body := range [][]byte{long, short} {
		if err := kw.PutKey(ctx(t), key, bytes.NewReader(body)); err != nil {
			t.Fatalf("PutKey of %d bytes: %v", len(body), err)
		}
		if got, err := read(); err != nil || !bytes.Equal(got, body) {
			t.Fatalf("OpenKey after a PutKey of %d bytes: %d bytes (%v)", len(body), len(got), err)
		}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	var bad error
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			got, err := read()
			if err != nil || (!bytes.Equal(got, long) && !bytes.Equal(got, short)) {
				bad = fmt.Errorf("a read racing PutKey got %d bytes that are neither body (%v)", len(got), err)
				return
			}
		}
	}()
	for i := range PutKeyRounds {
		body := long
		if i%2 == 1 {
			body = short
		}
		if err := kw.PutKey(ctx(t), key, bytes.NewReader(body)); err != nil {
			close(done)
			wg.Wait()
			t.Fatalf("PutKey round %d: %v", i, err)
		}
	}
	close(done)
	wg.Wait()
	if bad != nil {
		t.Fatal(bad)
	}
	keys, err := kr.ListKeys(ctx(t), "")
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 || keys[0].Key != key {
		t.Fatalf("the prefix lists %+v after the PutKeys, want only %s", keys, key)
	}
	if got := ListAll(t, c, 0, 0); len(got) != 0 {
		t.Fatalf("level 0 lists %+v after PutKey, want nothing", got)
	}
	if dbs, err := storage.FindDatabases(ctx(t), kr); err != nil || len(dbs) != 0 {
		t.Fatalf("FindDatabases finds %q (%v) where only the key is, want none", dbs, err)
	}
}

// CheckLostAnswerRetried checks a client built on a front that lands the
// first create's request but answers it with a 5xx (harness.FaultyFront):
// the client retries, the store refuses the retry (the key is taken), and
// the client must recognise the object as its own (its upload id), not
// report losing to another writer, which would fence a healthy primary. A
// second writer's create of the key is still ErrExists.
func CheckLostAnswerRetried(t *testing.T, c storage.Client, creates func() int) {
	t.Helper()
	body := Body(3000, 1)
	MustCreate(t, c, 0, 1, 1, body, TestMetadata(1))
	if n := creates(); n < 2 {
		t.Fatalf("%d create requests reached the front, want the lost one and a retry", n)
	}
	got, info := ReadAll(t, c, 0, 1, 1, 0, -1)
	if !bytes.Equal(got, body) {
		t.Fatal("content differs")
	}
	checkMetadata(t, "after a retried create", info.Metadata, TestMetadata(1))
	if _, err := c.Create(ctx(t), 0, 1, 1, bytes.NewReader(body), TestMetadata(2)); !errors.Is(err, storage.ErrExists) {
		t.Fatalf("second writer's create: %v, want ErrExists", err)
	}
}

// CheckHangingStore checks a client built with a short call deadline on a
// path to the store that hang makes a black hole (toxiproxy's timeout
// toxic) and resume opens again: an open and a listing fail with errors
// containing want instead of hanging, and once the store answers again the
// same client lists the file it created before.
func CheckHangingStore(t *testing.T, c storage.Client, hang, resume func(), want []string) {
	t.Helper()
	MustCreate(t, c, 0, 1, 1, []byte("x"), TestMetadata(1))
	hang()
	_, err := c.Open(ctx(t), 0, 1, 1, 0, -1)
	CheckError(t, "open through a black hole", err, want, nil)
	it, err := c.List(ctx(t), 0, 0)
	if err == nil {
		for it.Next() {
		}
		err = it.Err()
		it.Close()
	}
	CheckError(t, "list through a black hole", err, want, nil)
	resume()
	if got := ListAll(t, c, 0, 0); len(got) != 1 || got[0].MinTXID != 1 {
		t.Fatalf("after the store answers again, level 0 lists %+v", got)
	}
}

// CheckSub checks a client's Sub (how a dir: entry gets one client per
// database from its replica prefix): the sub-clients of sibling relative
// paths ("a", "ab", "eu/c") each hold their own files, so the same key in
// all of them is several objects and each lists, reads and deletes only its
// own; the parent's level lists none of them; a store that reads raw keys
// finds exactly those databases below the parent (what restore -dir-out
// lists); and each sub-client's files are where direct(rel), a client made
// from scratch for the parent's prefix plus rel, finds them.
func CheckSub(t *testing.T, parent storage.Client, direct func(rel string) storage.Client) {
	t.Helper()
	s, ok := parent.(interface{ Sub(string) storage.Client })
	if !ok {
		t.Fatalf("a %s client has no Sub method", parent.Type())
	}
	rels := []string{"a", "ab", "eu/c"}
	subs := map[string]storage.Client{}
	for i, rel := range rels {
		subs[rel] = s.Sub(rel)
		MustCreate(t, subs[rel], 0, 1, 1, Body(100+i, int64(i)), TestMetadata(uint64(i+1)))
		MustCreate(t, subs[rel], 0, 2, 2, Body(50, int64(10+i)), TestMetadata(uint64(i+1)))
	}
	for i, rel := range rels {
		for _, c := range []storage.Client{subs[rel], direct(rel)} {
			got, info := ReadAll(t, c, 0, 1, 1, 0, -1)
			if !bytes.Equal(got, Body(100+i, int64(i))) {
				t.Errorf("%s: %d bytes, not the %d that sub-client %q wrote", rel, len(got), 100+i, rel)
			}
			checkMetadata(t, rel, info.Metadata, TestMetadata(uint64(i+1)))
		}
		if got := ListAll(t, subs[rel], 0, 0); len(got) != 2 || got[0].MinTXID != 1 || got[1].MinTXID != 2 {
			t.Errorf("sub-client %q lists %+v, want its own two files", rel, got)
		}
	}
	if got := ListAll(t, parent, 0, 0); len(got) != 0 {
		t.Errorf("the parent lists its sub-clients' files: %+v", got)
	}
	if kr, ok := parent.(storage.KeyReader); ok {
		found, err := storage.FindDatabases(ctx(t), kr)
		if err != nil {
			t.Fatalf("find databases below the parent: %v", err)
		}
		if fmt.Sprint(found) != fmt.Sprint(rels) {
			t.Errorf("databases below the parent: %q, want %q", found, rels)
		}
	}
	if err := subs["a"].Delete(ctx(t), []storage.FileInfo{{Level: 0, MinTXID: 1, MaxTXID: 1}}); err != nil {
		t.Fatalf("delete in sub-client a: %v", err)
	}
	if got := ListAll(t, subs["a"], 0, 0); len(got) != 1 || got[0].MinTXID != 2 {
		t.Errorf("after the delete, sub-client a lists %+v, want its file 2 only", got)
	}
	for _, rel := range rels[1:] {
		if got := ListAll(t, subs[rel], 0, 0); len(got) != 2 {
			t.Errorf("a delete in sub-client a removed sub-client %q's files: it lists %+v", rel, got)
		}
	}
}
