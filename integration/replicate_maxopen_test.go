package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestReplicateDirectoryMaxOpen: max-open: 5 on a directory of 20
// databases that are all written at once. The daemon never has more than
// five open; the others wait their turn with their commits in their WAL,
// the least recently written caught-up database is parked to make room,
// and in the end every database, restored from both stores, equals the
// application's. Without the cap the daemon opens all twenty (the check
// on the most open at once fails).
func TestReplicateDirectoryMaxOpen(t *testing.T) {
	s := newDirStack(t)
	b, err := os.ReadFile(s.configPath)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, s.configPath, strings.Replace(string(b), "    idle-after: 2s\n", "    idle-after: 2s\n    max-open: 5\n", 1))
	const n, maxOpen = 20, 5
	for i := range n {
		s.create(t, fmt.Sprintf("t%02d.db", i))
	}
	d := start(t, s.env, "replicate", "-config", s.configPath, "-log-level", "debug")
	s.waitAllShipped(t)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for _, name := range s.names() { // one writer per database
		s.mu.Lock()
		db := s.dbs[name]
		s.mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := db.Exec(`INSERT INTO t(v) VALUES (randomblob(200))`); err != nil {
					errs <- fmt.Errorf("%s: %w", name, err)
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}
	// The daemon's /status while they write: never more than maxOpen open.
	most, waited := 0, 0
	for range 80 {
		var doc struct {
			Dirs []struct{ Active, Opening, Waiting int } `json:"dirs"`
		}
		if err := getStatus(s.addr, &doc); err == nil && len(doc.Dirs) == 1 {
			most = max(most, doc.Dirs[0].Active+doc.Dirs[0].Opening)
			waited = max(waited, doc.Dirs[0].Waiting)
		}
		time.Sleep(100 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if most > maxOpen {
		t.Errorf("%d databases open at once, max-open is %d", most, maxOpen)
	}
	if waited == 0 {
		t.Errorf("no database ever waited for its turn: 20 written at once with max-open %d", maxOpen)
	}
	if !strings.Contains(d.out.String(), "max-open reached") {
		t.Errorf("no database was parked early to make room:\n%s", tailLines(d.out.String(), 40))
	}
	want := s.waitAllShipped(t)
	for name, sum := range want {
		for _, u := range []string{
			"file://" + filepath.Join(s.store, name),
			fmt.Sprintf("s3://%s/tenants/%s?endpoint=%s&region=us-east-1&force-path-style=true", s.bucket, name, s.s3.Endpoint),
		} {
			out := filepath.Join(t.TempDir(), "restored.db")
			if res := run(t, s.env, "restore", "-o", out, u); res.code != 0 {
				t.Errorf("restore %s: exit %d\n%s%s", u, res.code, res.stdout, res.stderr)
				continue
			}
			if got := fileChecksum(t, out); got != sum {
				t.Errorf("restore of %s: checksum %s, the application's is %s", u, got, sum)
			}
		}
	}
}
