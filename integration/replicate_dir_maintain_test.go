package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDirectoryParkedMaintenance: parked databases of a dir: entry are
// compacted and their retention enforced without being written. Each of
// four databases gets several L0 files and is then left alone; it parks,
// and the daemon opens it again only for its maintenance: its L0 files are
// compacted into L1 and those older than l0-retention deleted, while the
// application writes nothing. Afterwards nothing more is due: no database
// is opened for maintenance again, and every database restores to the
// application's checksum. Without the maintenance of parked databases the
// L1 level never appears (they never run once parked).
func TestDirectoryParkedMaintenance(t *testing.T) {
	s := emptyDirStack(t)
	s.store = filepath.Join(filepath.Dir(s.dir), "store")
	writeFile(t, s.configPath, fmt.Sprintf(`addr: %s
dbs:
  - dir: %s
    watch: true
    idle-after: 1s
    levels: [6s]
    l0-retention: 1s
    replica:
      url: file://%s
      sync-interval: 100ms
      retention-check-interval: 1s
`, s.addr, s.dir, s.store))
	const n = 4
	var names []string
	for i := range n {
		name := fmt.Sprintf("m%d.db", i)
		names = append(names, name)
		s.create(t, name)
	}
	d := start(t, nil, "replicate", "-config", s.configPath, "-log-level", "debug")
	// Several L0 files each, one commit per upload.
	for range 5 {
		for _, name := range names {
			s.mu.Lock()
			mustExec(t, s.dbs[name], `INSERT INTO t(v) VALUES (randomblob(300))`)
			s.mu.Unlock()
		}
		time.Sleep(300 * time.Millisecond)
	}
	want := map[string]string{}
	for _, name := range names {
		s.mu.Lock()
		want[name] = snapshotImage(t, s.dbs[name]).checksum.String()
		s.mu.Unlock()
	}
	eventually(t, 60*time.Second, "every database parked and compacted into L1 with its compacted L0 files deleted", func() bool {
		if s.parked() != n {
			return false
		}
		for _, name := range names {
			l1 := countFiles(t, filepath.Join(s.store, name, "ltx", "1"))
			l0 := countFiles(t, filepath.Join(s.store, name, "ltx", "0"))
			if l1 == 0 || l0 > 1 {
				return false
			}
		}
		return true
	})
	out := d.out.String()
	if !strings.Contains(out, "opening a parked database for its maintenance") {
		t.Fatalf("no parked database was opened for its maintenance:\n%s", tailLines(out, 40))
	}
	// Nothing is due any more: the count of maintenance opens stays.
	before := strings.Count(d.out.String(), "opening a parked database for its maintenance")
	time.Sleep(5 * time.Second)
	if after := strings.Count(d.out.String(), "opening a parked database for its maintenance"); after != before {
		t.Errorf("%d maintenance opens after everything was compacted; nothing is due:\n%s", after-before, grepLines(d.out.String(), "for its maintenance"))
	}
	if s.parked() != n {
		t.Errorf("%d of %d databases parked after their maintenance", s.parked(), n)
	}
	for _, name := range names {
		outDB := filepath.Join(t.TempDir(), "restored.db")
		if res := run(t, nil, "restore", "-o", outDB, "file://"+filepath.Join(s.store, name)); res.code != 0 {
			t.Fatalf("restore %s: exit %d\n%s%s", name, res.code, res.stdout, res.stderr)
		}
		if got := fileChecksum(t, outDB).String(); got != want[name] {
			t.Errorf("restore of %s: checksum %s, the application's is %s", name, got, want[name])
		}
		if _, err := os.Stat(outDB); err != nil {
			t.Fatal(err)
		}
	}
}
