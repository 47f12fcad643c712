package integration

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestReplicateSignalDuringStartup: a SIGTERM that arrives while replicate
// is still opening its databases stops it cleanly (exit 0, a log line
// saying so) instead of killing it half-way. The application holds the
// write lock, so replicate's start-up waits for it (and says so in the log)
// for as long as the test wants.
func TestReplicateSignalDuringStartup(t *testing.T) {
	s := newStack(t, false)
	db := openDB(t, s.dbPath)
	if _, err := db.Exec(`CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t(v) VALUES ('a')`); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	locked := true
	defer func() {
		if locked {
			conn.ExecContext(ctx, "ROLLBACK")
		}
		conn.Close()
	}()

	d := s.replicate(t)
	// Proof that it is inside start-up: it reports the busy database.
	eventually(t, time.Minute, "replicate to report the busy database during start-up", func() bool {
		return strings.Contains(d.out.String(), "database is busy; retrying")
	})
	if d.exited() {
		t.Fatalf("replicate exited during start-up:\n%s", tailLines(d.out.String(), 20))
	}
	if code := d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("SIGTERM during start-up: exit code %d, want 0; output:\n%s", code, tailLines(d.out.String(), 20))
	}
	if out := d.out.String(); !strings.Contains(out, "signal received during start-up") {
		t.Fatalf("no start-up signal message in the output:\n%s", tailLines(out, 20))
	}

	// Nothing was left half-done: once the application lets go, replicate
	// starts, ships and stops as usual.
	if _, err := conn.ExecContext(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	locked = false
	d = s.replicate(t)
	eventually(t, time.Minute, "replicate to ship the database", func() bool {
		st, err := s.status()
		return err == nil && len(st.DBs) == 1 && len(st.DBs[0].Replicas) == 1 && st.DBs[0].Replicas[0].TXID > 0
	})
	if code := d.stop(t, syscall.SIGTERM, time.Minute); code != 0 {
		t.Fatalf("SIGTERM after start-up: exit code %d, want 0; output:\n%s", code, tailLines(d.out.String(), 20))
	}
}
