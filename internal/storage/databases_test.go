package storage_test

import (
	"context"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/superfly/ltx"
	"github.com/understudy-db/understudy/internal/storage"
	"github.com/understudy-db/understudy/internal/storage/file"
)

func TestDatabaseOfKey(t *testing.T) {
	for _, tc := range []struct {
		key, rel string
		ok       bool
	}{
		{"a.db/ltx/0/0000000000000001-0000000000000001.ltx", "a.db", true},
		{"eu/b.db/ltx/9/0000000000000001-0000000000000005.ltx", "eu/b.db", true},
		{"ltx/0/0000000000000001-0000000000000001.ltx", "", true}, // the prefix itself
		{"x/ltx/db/ltx/1/0000000000000001-0000000000000002.ltx", "x/ltx/db", true},
		{"a.db/0000/0000000000000001-0000000000000001.ltx", "a.db", true}, // an object store's layout
		{"eu/b.db/0009/0000000000000001-0000000000000005.ltx", "eu/b.db", true},
		{"0001/0000000000000001-0000000000000001.ltx", "", true},
		{"x/ltx/0003/0000000000000001-0000000000000001.ltx", "x/ltx", true},
		{"a.db/000a/0000000000000001-0000000000000001.ltx", "", false},
		{"a.db/ltx/10/0000000000000001-0000000000000001.ltx", "", false},
		{"a.db/ltx/0/0000000000000001-0000000000000001.ltx.tmp", "", false},
		{"a.db/ltx/00/0000000000000001-0000000000000001.ltx", "", false}, // not a level Understudy or Litestream writes
		{"a.db/ltx/-1/0000000000000001-0000000000000001.ltx", "", false},
		{"a.db/probe", "", false},
		{"a.db/generations/abc/wal/00000000.wal.lz4", "", false}, // Litestream 0.3
		{"../a.db/ltx/0/0000000000000001-0000000000000001.ltx", "", false},
		{"eu//a.db/ltx/0/0000000000000001-0000000000000001.ltx", "", false},
		{"./a.db/ltx/0/0000000000000001-0000000000000001.ltx", "", false},
	} {
		rel, ok := storage.DatabaseOfKey(tc.key)
		if rel != tc.rel || ok != tc.ok {
			t.Errorf("DatabaseOfKey(%q) = %q, %v; want %q, %v", tc.key, rel, ok, tc.rel, tc.ok)
		}
	}
}

// TestFindDatabases lays out LTX files in a file store as a dir: entry's
// databases would be, with files beside them that are not databases.
func TestFindDatabases(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files []string
		want  []string
		heads map[string]ltx.TXID // DatabaseHeads; nil: one entry of 1 per database
	}{
		{"empty", nil, nil, map[string]ltx.TXID{}},
		{"flat", []string{"a.db/ltx/0/0000000000000001-0000000000000001.ltx", "b.db/ltx/9/0000000000000001-0000000000000003.ltx",
			"a.db/ltx/1/0000000000000001-0000000000000002.ltx"}, []string{"a.db", "b.db"}, map[string]ltx.TXID{"a.db": 2, "b.db": 3}},
		{"nested", []string{"eu/a.db/ltx/0/0000000000000001-0000000000000001.ltx", "eu/ltx.db/ltx/0/0000000000000001-0000000000000001.ltx",
			"eu/a.db/ltx/9/0000000000000001-0000000000000001.ltx", "us/x/y.db/ltx/0/0000000000000001-0000000000000001.ltx"},
			[]string{"eu/a.db", "eu/ltx.db", "us/x/y.db"}, nil},
		{"object store layout", []string{"eu/a.db/0000/0000000000000001-0000000000000001.ltx", "eu/a.db/0009/0000000000000001-0000000000000001.ltx",
			"b.db/0001/0000000000000001-0000000000000002.ltx", "b.db/0000/0000000000000003-0000000000000003.ltx"},
			[]string{"b.db", "eu/a.db"}, map[string]ltx.TXID{"b.db": 3, "eu/a.db": 1}},
		{"not databases", []string{"c.db/probe", "d.db/generations/0123/snapshots/00000000.snapshot.lz4", "e.db/ltx/0/notes.txt",
			"f.db/ltx/0/0000000000000001-0000000000000001.ltx.tmp"}, nil, map[string]ltx.TXID{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			for _, f := range tc.files {
				p := filepath.Join(root, filepath.FromSlash(f))
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			c, err := file.New(root)
			if err != nil {
				t.Fatal(err)
			}
			got, err := storage.FindDatabases(context.Background(), c)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("FindDatabases = %q, want %q", got, tc.want)
			}
			heads, err := storage.DatabaseHeads(context.Background(), c)
			if err != nil {
				t.Fatal(err)
			}
			want := tc.heads
			if want == nil {
				want = map[string]ltx.TXID{}
				for _, rel := range tc.want {
					want[rel] = 1
				}
			}
			if !maps.Equal(heads, want) {
				t.Errorf("DatabaseHeads = %v, want %v", heads, want)
			}
		})
	}
}
