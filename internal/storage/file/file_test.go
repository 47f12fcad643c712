package file

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/understudy-db/understudy/internal/storage"
	"github.com/understudy-db/understudy/internal/storage/storagetest"
)

func TestConformance(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Client {
		c, err := New(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return c
	})
}

// TestConformanceSidecar runs the suite as on a filesystem without user
// xattrs, where metadata goes to sidecar files.
func TestConformanceSidecar(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Client {
		c, err := New(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		c.forceSidecar = true
		return c
	})
}

func TestNewValidates(t *testing.T) {
	for _, tc := range []struct {
		dir, wantErr string
	}{
		{"", "file replica: path is empty; set the replica's path to an absolute directory"},
		{"relative/dir", `file replica: path "relative/dir" is not absolute; use an absolute directory`},
		{"/var/lib/understudy/db/", ""},
	} {
		c, err := New(tc.dir)
		if tc.wantErr == "" {
			if err != nil || c.Dir() != "/var/lib/understudy/db" {
				t.Errorf("New(%q) = %v, %v", tc.dir, c, err)
			}
			continue
		}
		if err == nil || err.Error() != tc.wantErr {
			t.Errorf("New(%q) error = %v, want %q", tc.dir, err, tc.wantErr)
		}
	}
}

// TestLitestreamLayout checks the exact names and mtimes Litestream 0.5's
// file replica reads, and that nothing of ours lands under ltx/.
func TestLitestreamLayout(t *testing.T) {
	dir := t.TempDir()
	c, _ := New(dir)
	md := storagetest.TestMetadata(3)
	storagetest.MustCreate(t, c, 0, 0xa1, 0xa1, []byte("hello"), md)
	storagetest.MustCreate(t, c, storage.SnapshotLevel, 1, 0xa1, []byte("snap"), md)
	if err := c.ProbeCreateOnly(context.Background()); err != nil {
		t.Fatal(err)
	}

	ltxFiles := storagetest.FilesUnder(t, dir, LTXDir)
	want := []string{"ltx/0/00000000000000a1-00000000000000a1.ltx", "ltx/9/0000000000000001-00000000000000a1.ltx"}
	if strings.Join(ltxFiles, " ") != strings.Join(want, " ") {
		t.Fatalf("files under ltx/: %v, want %v", ltxFiles, want)
	}
	st, err := os.Stat(filepath.Join(dir, want[0]))
	if err != nil {
		t.Fatal(err)
	}
	if !st.ModTime().Equal(md.CommitTime) {
		t.Errorf("mtime %v, want the commit time %v", st.ModTime(), md.CommitTime)
	}
	if st.Mode().Perm() != 0o644 {
		t.Errorf("mode %v", st.Mode())
	}
	tmps, _ := os.ReadDir(filepath.Join(dir, privateDir, tmpDir))
	if len(tmps) != 0 {
		t.Errorf("temp files left behind: %v", tmps)
	}
}

// TestXattrNames pins the attribute names other tools may read.
func TestXattrNames(t *testing.T) {
	dir := t.TempDir()
	c, _ := New(dir)
	md := storagetest.TestMetadata(4)
	storagetest.MustCreate(t, c, 0, 1, 1, []byte("x"), md)
	buf := make([]byte, 100)
	n, err := unix.Getxattr(c.Path(0, 1, 1), "user.understudy.post-apply-checksum", buf)
	if errors.Is(err, unix.ENOTSUP) {
		t.Skip("no user xattrs on this filesystem; the sidecar test covers it")
	}
	if err != nil {
		t.Fatal(err)
	}
	if got := string(buf[:n]); got != md.PostApplyChecksum.String() || len(got) != 16 {
		t.Fatalf("post-apply xattr %q, want %q", got, md.PostApplyChecksum.String())
	}
	n, _ = unix.Getxattr(c.Path(0, 1, 1), "user.understudy.commit-time", buf)
	if got := string(buf[:n]); got != md.CommitTime.Format(time.RFC3339Nano) {
		t.Fatalf("commit-time xattr %q", got)
	}
}

// TestLongXattr reads back a node name longer than getxattr's first buffer.
func TestLongXattr(t *testing.T) {
	dir := t.TempDir()
	c, _ := New(dir)
	md := storagetest.TestMetadata(5)
	md.Node = strings.Repeat("long-node-name.", 40)
	storagetest.MustCreate(t, c, 0, 1, 1, []byte("x"), md)
	if _, err := unix.Getxattr(c.Path(0, 1, 1), "user.understudy.node", nil); errors.Is(err, unix.ENOTSUP) {
		t.Skip("no user xattrs on this filesystem")
	}
	_, info := storagetest.ReadAll(t, c, 0, 1, 1, 0, -1)
	if info.Metadata == nil || info.Metadata.Node != md.Node || info.Metadata.PostApplyChecksum != md.PostApplyChecksum {
		t.Fatalf("metadata %+v, want node %q", info.Metadata, md.Node)
	}
}

// TestForeignFiles: a file Litestream wrote (no metadata) is readable with
// nil metadata and its mtime as CreatedAt; names that are not LTX file names
// (Litestream's own temp files) are not listed.
func TestForeignFiles(t *testing.T) {
	dir := t.TempDir()
	c, _ := New(dir)
	levelDir := filepath.Join(dir, "ltx", "0")
	if err := os.MkdirAll(levelDir, 0o755); err != nil {
		t.Fatal(err)
	}
	mtime := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	name := filepath.Join(levelDir, "0000000000000004-0000000000000004.ltx")
	for _, p := range []string{name, name + ".tmp", filepath.Join(levelDir, "README"), filepath.Join(levelDir, "4-4.ltx")} {
		if err := os.WriteFile(p, []byte("litestream"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chtimes(name, mtime, mtime); err != nil {
		t.Fatal(err)
	}
	got := storagetest.ListAll(t, c, 0, 0)
	if len(got) != 1 || got[0].MinTXID != 4 || got[0].Size != 10 || !got[0].CreatedAt.Equal(mtime) {
		t.Fatalf("listing %+v, want only 4-4 (size 10, mtime %v)", got, mtime)
	}
	body, info := storagetest.ReadAll(t, c, 0, 4, 4, 0, -1)
	if string(body) != "litestream" || info.Metadata != nil || !info.CreatedAt.Equal(mtime) {
		t.Fatalf("open: %q %+v", body, info)
	}
	// Ours to create next to it, and create-only against it too.
	_, err := c.Create(context.Background(), 0, 4, 4, strings.NewReader("x"), storagetest.TestMetadata(1))
	if !errors.Is(err, storage.ErrExists) {
		t.Fatalf("create over a foreign file: %v", err)
	}
}

// TestSidecarKeyedByInode: a sidecar left behind for a deleted file does not
// describe a new file of the same name.
func TestSidecarKeyedByInode(t *testing.T) {
	dir := t.TempDir()
	c, _ := New(dir)
	c.forceSidecar = true
	storagetest.MustCreate(t, c, 0, 1, 1, []byte("first"), storagetest.TestMetadata(1))
	// Remove the file behind the client's back (as a foreign tool would),
	// leaving its sidecar, then put a foreign file in its place.
	if err := os.Remove(c.Path(0, 1, 1)); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.Path(0, 1, 1), []byte("other"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Same size as the old file could match on inode reuse; a different
	// size never does.
	if err := os.WriteFile(c.Path(0, 1, 1), []byte("other, longer"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, info := storagetest.ReadAll(t, c, 0, 1, 1, 0, -1); info.Metadata != nil {
		t.Fatalf("stale sidecar applied to a different file: %+v", info.Metadata)
	}
}

func TestCanceledContext(t *testing.T) {
	c, _ := New(t.TempDir())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Create(ctx, 0, 1, 1, strings.NewReader("x"), storage.Metadata{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("create with a canceled context: %v", err)
	}
	if _, err := c.Open(context.Background(), 0, 1, 1, 0, -1); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("open after canceled create: %v", err)
	}
}
