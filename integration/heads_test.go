package integration

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/understudy-db/understudy/internal/heads"
	"github.com/understudy-db/understudy/internal/storage"
	"github.com/understudy-db/understudy/internal/storage/file"
	"github.com/understudy-db/understudy/internal/storage/s3"
)

// headsStore is one replica of a dirStack as the test reads it: its
// prefix client, and how to get each database's client below it.
type headsStore struct {
	name   string // the replica's name in the metrics
	prefix interface {
		storage.Client
		storage.KeyReader
		Sub(string) storage.Client
	}
}

func (s *dirStack) headsStores(t *testing.T) []headsStore {
	t.Helper()
	fc, err := file.New(s.store)
	if err != nil {
		t.Fatal(err)
	}
	sc, err := s3.New(context.Background(), s3.Options{
		Bucket: s.bucket, Path: "tenants", Region: s.s3.Region, Endpoint: s.s3.Endpoint, ForcePathStyle: true,
		AccessKeyID: s.s3.AccessKey, SecretAccessKey: s.s3.SecretKey,
	})
	if err != nil {
		t.Fatal(err)
	}
	return []headsStore{{"file", fc}, {"s3", sc}}
}

// storeHeads is the newest TXID each database has in the store, from a
// listing of every level: what the index must say.
func storeHeads(t *testing.T, hs headsStore, names []string) map[string]uint64 {
	t.Helper()
	out := map[string]uint64{}
	for _, name := range names {
		c := hs.prefix.Sub(name)
		for level := 0; level <= storage.SnapshotLevel; level++ {
			it, err := c.List(context.Background(), level, 0)
			if err != nil {
				t.Fatalf("%s: list %s level %d: %v", hs.name, name, level, err)
			}
			for it.Next() {
				out[name] = max(out[name], uint64(it.Item().MaxTXID))
			}
			if err := it.Err(); err != nil {
				t.Fatalf("%s: list %s level %d: %v", hs.name, name, level, err)
			}
			it.Close()
		}
	}
	return out
}

// waitHeads waits until each store's index names exactly the databases of
// names, each at its newest TXID in that store.
func (s *dirStack) waitHeads(t *testing.T, stores []headsStore, what string) {
	t.Helper()
	names := s.names()
	for _, hs := range stores {
		want := storeHeads(t, hs, names)
		var got heads.Index
		var err error
		eventually(t, 30*time.Second, fmt.Sprintf("%s: the %s index to show every database's head", what, hs.name), func() bool {
			got, err = heads.Read(context.Background(), hs.prefix)
			return err == nil && maps.Equal(got.Heads, want)
		})
	}
}

// TestDirectoryHeadsIndex: a dir: entry of 30 databases keeps, in each of
// its stores (a file replica and versitygw), the heads index at the
// prefix root: after the first shipping, after writes to some databases
// and after one leaves the directory, every database's head in it is its
// newest TXID in that store, and the one that left is gone. Idle, with
// every database parked, the daemon makes no store request at all (the
// index included), and a restart over unchanged databases reads the index
// once per store and writes nothing. restore -dir-out lists the databases
// and not the index; Litestream 0.5 restores a database of the prefix
// beside it.
func TestDirectoryHeadsIndex(t *testing.T) {
	s := newDirStack(t)
	s.createNumbered(t, 30)
	stores := s.headsStores(t)
	d := start(t, s.env, "replicate", "-config", s.configPath)
	s.waitAllShipped(t)
	s.waitHeads(t, stores, "after the first shipping")

	for i, name := range s.names()[:8] {
		s.mu.Lock()
		for range 1 + i%3 {
			mustExec(t, s.dbs[name], `INSERT INTO t(v) VALUES (randomblob(200))`)
		}
		s.mu.Unlock()
	}
	s.waitAllShipped(t)
	s.waitHeads(t, stores, "after writes to 8 databases")

	gone := "t005.db"
	s.remove(t, gone)
	eventually(t, 30*time.Second, gone+" gone from the daemon", func() bool {
		_, err := s.dbStatus(gone)
		return err != nil
	})
	s.waitHeads(t, stores, "after "+gone+" left the directory")
	for _, hs := range stores {
		ix, _ := heads.Read(context.Background(), hs.prefix)
		if _, ok := ix.Heads[gone]; ok {
			t.Errorf("%s: the index still names %s, which left the directory", hs.name, gone)
		}
	}

	// Idle: every database parked, nothing changes, nothing is requested.
	eventually(t, 30*time.Second, "every database parked", func() bool { return s.parked() == len(s.names()) })
	time.Sleep(500 * time.Millisecond) // the parks' own index write (their final sync may ship nothing new)
	fileIndex := filepath.Join(s.store, heads.Key)
	st0, err := os.Stat(fileIndex)
	if err != nil {
		t.Fatal(err)
	}
	req0 := metricValue(t, s.addr, "understudy_primary_store_requests_total")
	put0 := metricValue(t, s.addr, "understudy_primary_store_requests_total", `op="put_heads"`)
	if put0 <= 0 {
		t.Fatalf("no put_heads request counted (%v): the index writes are not in the store request metric", put0)
	}
	time.Sleep(3 * time.Second) // 30 sync intervals
	if req := metricValue(t, s.addr, "understudy_primary_store_requests_total"); req != req0 {
		t.Errorf("idle, every database parked: %v store requests in 3s (from %v to %v), want none", req-req0, req0, req)
	}
	if st, err := os.Stat(fileIndex); err != nil || !st.ModTime().Equal(st0.ModTime()) {
		t.Errorf("idle: the file index was rewritten (mtime %v, was %v; %v)", st.ModTime(), st0.ModTime(), err)
	}

	// A restart over unchanged databases reads each index and writes none.
	if code := d.stop(t, os.Interrupt, 30*time.Second); code != 0 {
		t.Fatalf("replicate exited %d on SIGINT", code)
	}
	d = start(t, s.env, "replicate", "-config", s.configPath)
	eventually(t, 30*time.Second, "every database parked after the restart", func() bool { return s.parked() == len(s.names()) })
	time.Sleep(2 * time.Second)
	if get := metricValue(t, s.addr, "understudy_primary_store_requests_total", `op="get_heads"`); get != float64(len(stores)) {
		t.Errorf("after the restart: %v get_heads requests, want one per store (%d)", get, len(stores))
	}
	if put := metricValue(t, s.addr, "understudy_primary_store_requests_total", `op="put_heads"`); put != 0 {
		t.Errorf("a restart over unchanged databases wrote the index %v times, want 0", put)
	}
	s.waitHeads(t, stores, "after the restart")
	d.stop(t, os.Interrupt, 30*time.Second)

	// restore -dir-out lists the databases, not the index.
	s3URL := fmt.Sprintf("s3://%s/tenants?endpoint=%s&region=us-east-1&force-path-style=true", s.bucket, s.s3.Endpoint)
	for _, u := range []string{"file://" + s.store, s3URL} {
		res := run(t, s.env, "restore", "-dry-run", "-dir-out", t.TempDir(), u)
		if res.code != 0 {
			t.Fatalf("restore -dry-run -dir-out %s: exit %d\n%s%s", u, res.code, res.stdout, res.stderr)
		}
		if strings.Contains(res.stdout, heads.Key) {
			t.Errorf("restore -dir-out %s takes the index for a database:\n%s", u, res.stdout)
		}
		for _, name := range s.names() {
			if !strings.Contains(res.stdout, name) {
				t.Errorf("restore -dir-out %s does not list %s:\n%s", u, name, res.stdout)
			}
		}
	}
	if os.Getenv(LitestreamBinEnv) == "" {
		t.Logf("%s not set: Litestream 0.5's restore beside the index not checked", LitestreamBinEnv)
		return
	}
	ls := litestreamBin(t)
	names := s.names()
	slices.Sort(names)
	for _, u := range []string{"file://" + filepath.Join(s.store, names[0]),
		fmt.Sprintf("s3://%s/tenants/%s?endpoint=%s&region=us-east-1&force-path-style=true", s.bucket, names[0], s.s3.Endpoint)} {
		out := filepath.Join(t.TempDir(), "restored.db")
		res := runBinary(t, ls, append(s.env, "AWS_CA_BUNDLE="), "restore", "-o", out, u)
		if res.code != 0 {
			t.Fatalf("litestream restore %s beside the index: exit %d\n%s%s", u, res.code, res.stdout, res.stderr)
		}
		s.mu.Lock()
		want := snapshotImage(t, s.dbs[names[0]]).checksum
		s.mu.Unlock()
		if got := fileChecksum(t, out); got != want {
			t.Errorf("litestream restore %s: checksum %s, the application's is %s", u, got, want)
		}
	}
}
