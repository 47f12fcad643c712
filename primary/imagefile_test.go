package primary

import (
	"bytes"
	"context"
	"os"
	"testing"

	"github.com/understudy-db/understudy/internal/sqlitex"
	"github.com/understudy-db/understudy/internal/wal"
)

// TestReadImageFile: the image read straight from the files under a read
// transaction equals, page for page, what SQLite shows that transaction
// (sqlite_dbpage), while the WAL holds frames not copied back (some of
// them pages past the end of the database file), other frames are
// committed after it, and a checkpoint copies back what it may while the
// image is read; and, once the WAL is fully copied back, from the database
// file alone.
func TestReadImageFile(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, 0)
	e.exec("PRAGMA wal_autocheckpoint=0")
	for i := 0; i < 300; i++ {
		e.exec("INSERT INTO t (b) VALUES (randomblob(3000))")
	}
	e.exec("PRAGMA wal_checkpoint(TRUNCATE)")
	// Frames not copied back: updates and growth past the file's end.
	for i := 0; i < 200; i++ {
		e.exec("UPDATE t SET b = randomblob(3000) WHERE id = ?", i*3%300+1)
		e.exec("INSERT INTO t (b) VALUES (randomblob(2000))")
	}
	ckpt, err := sqlitex.Open(ctx, e.path, connOpts(0))
	if err != nil {
		t.Fatal(err)
	}
	defer ckpt.Close()

	for _, tc := range []struct {
		name    string
		overlay bool
	}{{"frames not copied back", true}, {"database file alone", false}} {
		t.Run(tc.name, func(t *testing.T) {
			if !tc.overlay {
				if _, err := ckpt.Checkpoint(ctx, "PASSIVE"); err != nil {
					t.Fatal(err)
				}
			}
			// Closed last, after the connections (see imageView).
			dbf, err := os.Open(e.path)
			if err != nil {
				t.Fatal(err)
			}
			defer dbf.Close()
			reader, err := sqlitex.Open(ctx, e.path, connOpts(0))
			if err != nil {
				t.Fatal(err)
			}
			defer reader.Close()
			if err := reader.Exec(ctx, "BEGIN"); err != nil {
				t.Fatal(err)
			}
			defer reader.Exec(ctx, "ROLLBACK")
			if _, err := reader.Int(ctx, "SELECT count(*) FROM sqlite_master"); err != nil {
				t.Fatal(err)
			}
			r, err := ckpt.Checkpoint(ctx, "NOOP")
			if err != nil {
				t.Fatal(err)
			}
			if got := r.Checkpointed < r.Log; got != tc.overlay {
				t.Fatalf("checkpointed %d of %d frames: the case is not set up", r.Checkpointed, r.Log)
			}
			view := imageView{overlay: tc.overlay}
			if tc.overlay {
				f, err := os.Open(e.path + "-wal")
				if err != nil {
					t.Fatal(err)
				}
				h, err := wal.ReadHeader(f)
				if err != nil {
					t.Fatal(err)
				}
				b, err := wal.Scan(f, h, wal.Start(h), 0, 0)
				f.Close()
				if err != nil {
					t.Fatal(err)
				}
				view.hdr, view.end = h, b.End
			}
			view.dbf = dbf
			// After the transaction started: more commits, and a
			// checkpoint that copies back what the reader allows.
			for i := 0; i < 50; i++ {
				e.exec("UPDATE t SET b = randomblob(3000) WHERE id = ?", i*7%300+1)
			}
			if _, err := ckpt.Checkpoint(ctx, "PASSIVE"); err != nil {
				t.Fatal(err)
			}
			n, err := reader.Int(ctx, "PRAGMA page_count")
			if err != nil {
				t.Fatal(err)
			}
			want := map[uint32][]byte{}
			wantImg, err := readImage(ctx, reader, 4096, func(p uint32, data []byte) error {
				want[p] = bytes.Clone(data)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			seen := 0
			img, err := readImageFile(view, e.path+"-wal", uint32(n), 4096, func(p uint32, data []byte) error {
				seen++
				if !bytes.Equal(data, want[p]) {
					t.Errorf("page %d differs from what the transaction sees", p)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if seen != len(want) || img.pages != wantImg.pages || img.table.checksum() != wantImg.table.checksum() {
				t.Fatalf("%d pages, %d in the image, checksum %s; want %d, %d, %s",
					seen, img.pages, img.table.checksum(), len(want), wantImg.pages, wantImg.table.checksum())
			}
		})
	}
}
