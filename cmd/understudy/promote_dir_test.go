package main

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/understudy-db/understudy/config"
	"github.com/understudy-db/understudy/promote"
)

// TestFindNode: a control request names a path: entry's database by name,
// and a dir: entry's database by NAME/REL, by REL when one directory has
// it, or by its absolute path.
func TestFindNode(t *testing.T) {
	node := func(name string) *promote.Node {
		t.Helper()
		n, err := promote.New(promote.Config{Name: name, Node: "n1"})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	dirOf := func(name, dir string, rels ...string) *dirLease {
		entry, err := config.Parse([]byte("dbs:\n  - dir: "+t.TempDir()+"\n    name: "+name+"\n    replica: {url: file:///x}\n"), "t.yml", true)
		if err != nil {
			t.Fatal(err)
		}
		e := entry.DBs[0]
		e.Dir = dir
		d := &dirLease{entry: e, nodes: map[string]*promote.Node{}}
		for _, rel := range rels {
			d.nodes[rel] = node(dirNodeName(e, rel))
		}
		return d
	}
	app := node("app")
	one := dirOf("tenants", "/srv/tenants", "a.db", "eu/b.db")
	two := dirOf("more", "/srv/more", "a.db")
	for _, tc := range []struct {
		name    string
		nodes   []*promote.Node
		dirs    []*dirLease
		ask     string
		want    string // the node's name, or
		wantErr string
	}{
		{"path entry by name", []*promote.Node{app}, []*dirLease{one}, "app", "app", ""},
		{"dir database by NAME/REL", []*promote.Node{app}, []*dirLease{one, two}, "tenants/eu/b.db", "tenants/eu/b.db", ""},
		{"dir database by REL", []*promote.Node{app}, []*dirLease{one, two}, "eu/b.db", "tenants/eu/b.db", ""},
		{"dir database by absolute path", nil, []*dirLease{one, two}, "/srv/more/a.db", "more/a.db", ""},
		{"REL in two directories", nil, []*dirLease{one, two}, "a.db", "", "in several directories"},
		{"unknown", []*promote.Node{app}, []*dirLease{one}, "eu/zz.db", "", `no database "eu/zz.db" here`},
		{"no name, several", []*promote.Node{app}, []*dirLease{one}, "", "", "runs 3 databases"},
		{"no name, one path entry", []*promote.Node{app}, nil, "", "app", ""},
		{"no name, one dir database", nil, []*dirLease{two}, "", "more/a.db", ""},
		{"outside every directory", nil, []*dirLease{one}, "/srv/other/a.db", "", "no database"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, err := findNode(tc.nodes, tc.dirs, tc.ask)
			switch {
			case tc.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("findNode(%q) = %v, %v; want an error containing %q", tc.ask, n, err, tc.wantErr)
				}
			case err != nil:
				t.Fatalf("findNode(%q): %v", tc.ask, err)
			case n.Name() != tc.want:
				t.Fatalf("findNode(%q) = %s, want %s", tc.ask, n.Name(), tc.want)
			}
		})
	}
}

// TestMatchesPattern: a database only the store holds is the entry's only
// when a scan of the directory would take its file.
func TestMatchesPattern(t *testing.T) {
	for _, tc := range []struct {
		pattern   string
		recursive bool
		rel       string
		want      bool
	}{
		{"*.db", false, "a.db", true},
		{"*.db", false, "eu/a.db", false},
		{"*.db", true, "eu/a.db", true},
		{"*.db", true, "eu/a.sqlite", false},
		{"tenant-*", true, "x/tenant-1", true},
	} {
		e := &config.DB{Dir: "/d", Pattern: tc.pattern, Recursive: tc.recursive}
		if got := matchesPattern(e, tc.rel); got != tc.want {
			t.Errorf("pattern %q recursive %v, %s: %v, want %v", tc.pattern, tc.recursive, tc.rel, got, tc.want)
		}
	}
}

// TestDirLeaseRefusesSameServiceName: two databases whose Consul service
// names coincide once made DNS-safe (eu/a.db, eu-a.db) would overwrite
// each other's registration: the second is refused, naming the first.
func TestDirLeaseRefusesSameServiceName(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "eu"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, rel := range []string{"eu/a.db", "eu-a.db", "b.db"} {
		if err := os.WriteFile(filepath.Join(dir, rel), []byte("SQLite format 3\x00"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := config.Parse([]byte("dbs:\n  - dir: "+dir+"\n    name: tenants\n    recursive: true\n    replica: {url: file:///x}\n"+
		"    lease: {type: consul, node: a}\n"), "t.yml", true)
	if err != nil {
		t.Fatal(err)
	}
	var built []string
	d := &dirLease{entry: cfg.DBs[0], asPrimary: true, log: hclog.NewNullLogger(),
		nodes: map[string]*promote.Node{}, failed: map[string]error{}, services: map[string]string{}}
	d.newNode = func(_ context.Context, rel string) (*promote.Node, error) {
		built = append(built, rel)
		return promote.New(promote.Config{Name: dirNodeName(d.entry, rel), Node: "a"})
	}
	// The nodes have no lease: Run fails at once, which is fine here.
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); d.wg.Wait() }()
	if n, err := d.start(ctx); err != nil || n != 3 {
		t.Fatalf("start: %d databases, %v", n, err)
	}
	if want := []string{"b.db", "eu-a.db"}; !slices.Equal(built, want) {
		t.Fatalf("built nodes %v, want %v", built, want)
	}
	d.mu.Lock()
	err = d.failed["eu/a.db"]
	d.mu.Unlock()
	if err == nil || !strings.Contains(err.Error(), "understudy-tenants-eu-a-db is the one of eu-a.db") {
		t.Fatalf("eu/a.db: %v, want a refusal naming eu-a.db", err)
	}
}
