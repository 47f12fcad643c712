package restore

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"

	"github.com/understudy-db/understudy/internal/storage"
	"github.com/understudy-db/understudy/internal/storage/agecrypt"
)

// encryptInPlace age-encrypts every LTX file of a file replica where it
// lies (its metadata, in xattrs or a sidecar, stays), as agecrypt would have
// written it, and returns a client that decrypts.
func encryptInPlace(t *testing.T, s *source) storage.Client {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	err = filepath.WalkDir(s.dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() || !strings.HasSuffix(p, ".ltx") {
			return err
		}
		plain, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		var enc bytes.Buffer
		w, err := age.Encrypt(&enc, id.Recipient())
		if err != nil {
			return err
		}
		w.Write(plain)
		if err := w.Close(); err != nil {
			return err
		}
		return os.WriteFile(p, enc.Bytes(), 0o644) // same inode: the xattrs stay
	})
	if err != nil {
		t.Fatal(err)
	}
	c, err := agecrypt.New(s.client, agecrypt.Options{Replica: "file", Identities: []age.Identity{id}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestRestoreRoutesAroundDamagedEncryptedObjects: an encrypted object that
// fails age's authentication (at its header, or in a chunk halfway) is a
// corrupt object like any other: the restore skips it where another level
// restores the same TXIDs, and says which.
func TestRestoreRoutesAroundDamagedEncryptedObjects(t *testing.T) {
	for _, tc := range []struct {
		name   string
		build  func(t *testing.T) (*source, storage.FileInfo) // the history and the file to damage
		damage func(t *testing.T, path string)
	}{
		{"header MAC", smallHistory, func(t *testing.T, path string) {
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			flipFrom(t, path, int64(bytes.Index(b, []byte("\n--- "))+10))
		}},
		{"its only chunk", smallHistory, func(t *testing.T, path string) { flipByte(t, path, 0.5) }},
		// Past the first 64 KiB chunk: the header reads, the body fails.
		{"its last chunk", largeSnapshot, func(t *testing.T, path string) { flipByte(t, path, 0.99) }},
	} {
		for _, slow := range []bool{false, true} {
			t.Run(tc.name+map[bool]string{false: "", true: "/slow"}[slow], func(t *testing.T) {
				defer func(v bool) { forceSlowSnapshot = v }(forceSlowSnapshot)
				forceSlowSnapshot = slow
				s, bad := tc.build(t)
				c := encryptInPlace(t, s)
				tc.damage(t, s.path(bad.Level, bad.MinTXID, bad.MaxTXID))
				out, res, err := restoreTo(t, c, Target{}, nil)
				if err != nil {
					t.Fatalf("restore: %v", err)
				}
				assertRestored(t, s, out, res, s.txid)
				if len(res.Skipped) != 1 || FileName(res.Skipped[0].File) != FileName(bad) {
					t.Fatalf("skipped %+v, want the damaged snapshot only", res.Skipped)
				}
				t.Logf("skipped: %v", res.Skipped[0].Err)
			})
		}
	}
}

// smallHistory is buildHistory, whose newest snapshot (L9 1-12) is one chunk.
func smallHistory(t *testing.T) (*source, storage.FileInfo) {
	return buildHistory(t), storage.FileInfo{Level: storage.SnapshotLevel, MinTXID: 1, MaxTXID: 12}
}

// largeSnapshot is a history whose newest snapshot (L9 1-2) holds more than
// one 64 KiB chunk of incompressible pages, with L0 1-2 beside it.
func largeSnapshot(t *testing.T) (*source, storage.FileInfo) {
	s := newSource(t)
	for i := 0; i < 40; i++ {
		s.exec("INSERT INTO t (v) VALUES (randomblob(3000))")
	}
	s.sync() // 1 (+ snapshot 1-1)
	s.insert(5, 100)
	s.sync() // 2
	s.snapshot()
	if st, err := os.Stat(s.path(storage.SnapshotLevel, 1, 2)); err != nil || st.Size() < 2*64<<10 {
		t.Fatalf("snapshot 1-2: %v, %d bytes; want two chunks at least", err, st.Size())
	}
	return s, storage.FileInfo{Level: storage.SnapshotLevel, MinTXID: 1, MaxTXID: 2}
}
