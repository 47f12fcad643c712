package heads

import (
	"context"
	"errors"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/understudy-db/understudy/internal/storage"
	"github.com/understudy-db/understudy/internal/storage/file"
)

// newStore is a file store in a fresh directory: the real KeyReader and
// KeyWriter, so that the round trip includes the store's own write.
func newStore(t *testing.T) *file.Client {
	t.Helper()
	c, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestRoundTrip(t *testing.T) {
	written := time.Date(2026, 12, 4, 19, 0, 0, 123456789, time.UTC)
	for _, tc := range []struct {
		name  string
		heads map[string]uint64
	}{
		{"empty", map[string]uint64{}},
		{"nil heads read back empty", nil},
		{"several, nested", map[string]uint64{"a.db": 1, "ab.db": 7, "eu/c.db": 0x1234}},
		// Past 2^53, where a float64 would round: TXIDs are uint64.
		{"TXID beyond float precision", map[string]uint64{"big.db": 1<<63 + 1}},
		{"unicode tenant name", map[string]uint64{"tenants/Zürich 1.db": 3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newStore(t)
			if err := Write(context.Background(), c, Index{Written: written, Heads: tc.heads}); err != nil {
				t.Fatal(err)
			}
			got, err := Read(context.Background(), c)
			if err != nil {
				t.Fatal(err)
			}
			want := tc.heads
			if want == nil {
				want = map[string]uint64{}
			}
			if !got.Written.Equal(written) || !maps.Equal(got.Heads, want) || got.Heads == nil {
				t.Fatalf("read back %+v, want written %v heads %v", got, written, want)
			}
		})
	}
}

// TestReplace: a second Write replaces the first whole (a database that
// left the directory is gone from the index).
func TestReplace(t *testing.T) {
	c := newStore(t)
	now := time.Now()
	for _, h := range []map[string]uint64{{"a.db": 1, "b.db": 2}, {"b.db": 3}} {
		if err := Write(context.Background(), c, Index{Written: now, Heads: h}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := Read(context.Background(), c)
	if err != nil || !maps.Equal(got.Heads, map[string]uint64{"b.db": 3}) {
		t.Fatalf("after two writes: %+v (%v), want only b.db at 3", got, err)
	}
}

func TestMissing(t *testing.T) {
	_, err := Read(context.Background(), newStore(t))
	if !errors.Is(err, storage.ErrNotFound) || !strings.Contains(err.Error(), Key) {
		t.Fatalf("read of a store without an index: %v, want ErrNotFound naming %s", err, Key)
	}
}

func TestCorrupt(t *testing.T) {
	for _, tc := range []struct {
		name, body, saying string
	}{
		{"empty object", "", "not the JSON of an index"},
		{"not JSON", "heads", "not the JSON of an index"},
		{"truncated", `{"version":1,"written":"2026-12-04T19:00:00Z","heads":{"a.db":`, "not the JSON of an index"},
		{"trailing data", `{"version":1,"written":"2026-12-04T19:00:00Z","heads":{}} {}`, "data after the JSON object"},
		{"another version", `{"version":2,"written":"2026-12-04T19:00:00Z","heads":{}}`, "version 2"},
		{"no version", `{"written":"2026-12-04T19:00:00Z","heads":{}}`, "version 0"},
		{"unknown field", `{"version":1,"written":"2026-12-04T19:00:00Z","heads":{},"x":1}`, "unknown field"},
		{"no written time", `{"version":1,"heads":{}}`, "no written time"},
		{"no heads", `{"version":1,"written":"2026-12-04T19:00:00Z"}`, "no heads"},
		{"negative TXID", `{"version":1,"written":"2026-12-04T19:00:00Z","heads":{"a.db":-1}}`, "not the JSON of an index"},
		{"TXID as a string", `{"version":1,"written":"2026-12-04T19:00:00Z","heads":{"a.db":"1"}}`, "not the JSON of an index"},
		{"TXID 0", `{"version":1,"written":"2026-12-04T19:00:00Z","heads":{"a.db":0}}`, `"a.db": TXID 0`},
		{"path leaving the prefix", `{"version":1,"written":"2026-12-04T19:00:00Z","heads":{"../a.db":1}}`, `"../a.db"`},
		{"empty segment", `{"version":1,"written":"2026-12-04T19:00:00Z","heads":{"a//b.db":1}}`, `"a//b.db"`},
		{"empty path", `{"version":1,"written":"2026-12-04T19:00:00Z","heads":{"":1}}`, "empty path"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newStore(t)
			if err := c.PutKey(context.Background(), Key, strings.NewReader(tc.body)); err != nil {
				t.Fatal(err)
			}
			_, err := Read(context.Background(), c)
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), Key) || !strings.Contains(err.Error(), tc.saying) {
				t.Fatalf("read of %q: %v, want ErrCorrupt naming %s and saying %q", tc.body, err, Key, tc.saying)
			}
		})
	}
}

func TestCorruptTooLarge(t *testing.T) {
	c := newStore(t)
	if err := c.PutKey(context.Background(), Key, strings.NewReader(strings.Repeat(" ", MaxSize+1))); err != nil {
		t.Fatal(err)
	}
	if _, err := Read(context.Background(), c); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "more than") {
		t.Fatalf("read of an oversized object: %v, want ErrCorrupt", err)
	}
}

// TestWriteRefuses: Write never leaves an index Read would refuse.
func TestWriteRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		ix   Index
	}{
		{"no written time", Index{Heads: map[string]uint64{"a.db": 1}}},
		{"TXID 0", Index{Written: time.Now(), Heads: map[string]uint64{"a.db": 0}}},
		{"path leaving the prefix", Index{Written: time.Now(), Heads: map[string]uint64{"../a.db": 1}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newStore(t)
			if err := Write(context.Background(), c, tc.ix); err == nil {
				t.Fatal("Write succeeded")
			}
			if _, err := Read(context.Background(), c); !errors.Is(err, storage.ErrNotFound) {
				t.Fatalf("after a refused Write: %v, want no index", err)
			}
		})
	}
}

// TestNotADatabase: the key is never taken for a database of the prefix
// (restore -dir-out lists with storage.DatabaseOfKey).
func TestNotADatabase(t *testing.T) {
	if rel, ok := storage.DatabaseOfKey(Key); ok {
		t.Fatalf("DatabaseOfKey(%q) = %q, true", Key, rel)
	}
}
