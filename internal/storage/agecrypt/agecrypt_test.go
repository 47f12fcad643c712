package agecrypt

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"
	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/internal/storage"
	"github.com/understudy-db/understudy/internal/storage/file"
	"github.com/understudy-db/understudy/internal/storage/storagetest"
)

// keys is one identity and its recipient.
type keys struct {
	id  *age.X25519Identity
	rcp age.Recipient
}

func newKeys(t *testing.T) keys {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	return keys{id: id, rcp: id.Recipient()}
}

// newStore returns a decorated file client, and the file client under it.
func newStore(t *testing.T, opts Options) (storage.Client, *file.Client) {
	t.Helper()
	fc, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if opts.Replica == "" {
		opts.Replica = "backup"
	}
	c, err := New(fc, opts)
	if err != nil {
		t.Fatal(err)
	}
	return c, fc
}

// over returns a decorated client over an existing inner store.
func over(t *testing.T, inner storage.Client, opts Options) storage.Client {
	t.Helper()
	opts.Replica = "backup"
	c, err := New(inner, opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestConformance(t *testing.T) {
	k := newKeys(t)
	storagetest.Run(t, func(t *testing.T) storage.Client {
		c, _ := newStore(t, Options{Recipients: []age.Recipient{k.rcp}, Identities: []age.Identity{k.id}})
		return c
	}, storagetest.StoredListSizes())
}

// TestConformanceLongHeader runs the suite with post-quantum recipients,
// whose header is longer than the first fetch (headerProbe), so that every
// ranged Open takes the second fetch.
func TestConformanceLongHeader(t *testing.T) {
	var rcps []age.Recipient
	var ids []age.Identity
	for range 4 {
		id, err := age.GenerateHybridIdentity()
		if err != nil {
			t.Fatal(err)
		}
		rcps, ids = append(rcps, id.Recipient()), append(ids, id)
	}
	c, fc := newStore(t, Options{Recipients: rcps, Identities: ids[3:]})
	storagetest.MustCreate(t, c, 0, 1, 1, []byte("x"), storagetest.TestMetadata(1))
	if b := storedBytes(t, fc, 0, 1, 1); bytes.Index(b, []byte("\n--- ")) <= headerProbe {
		t.Fatalf("the header ends at %d, within the first fetch of %d bytes: the test does not reach the second fetch", bytes.Index(b, []byte("\n--- ")), headerProbe)
	}
	storagetest.Run(t, func(t *testing.T) storage.Client {
		c, _ := newStore(t, Options{Recipients: rcps, Identities: ids[3:]})
		return c
	}, storagetest.StoredListSizes())
}

// storedBytes reads what the inner file store holds for a key.
func storedBytes(t *testing.T, fc *file.Client, level int, minTXID, maxTXID ltx.TXID) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(fc.LevelDir(level), storage.FormatFilename(minTXID, maxTXID)))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func read(t *testing.T, c storage.Client, level int, minTXID, maxTXID ltx.TXID, offset, size int64) ([]byte, storage.FileInfo, error) {
	t.Helper()
	obj, err := c.Open(context.Background(), level, minTXID, maxTXID, offset, size)
	if err != nil {
		return nil, storage.FileInfo{}, err
	}
	defer obj.Close()
	b, err := io.ReadAll(obj)
	return b, obj.Info, err
}

// ltxLike is a body that starts as an LTX file does.
func ltxLike(n int) []byte {
	b := storagetest.Body(n, 7)
	copy(b, ltx.Magic)
	return b
}

func TestStoredObjectIsEncrypted(t *testing.T) {
	k := newKeys(t)
	c, fc := newStore(t, Options{Recipients: []age.Recipient{k.rcp}, Identities: []age.Identity{k.id}})
	body := ltxLike(200_000)
	md := storagetest.TestMetadata(2)
	info := storagetest.MustCreate(t, c, 0, 3, 3, body, md)
	stored := storedBytes(t, fc, 0, 3, 3)
	if bytes.HasPrefix(stored, []byte(ltx.Magic)) || !bytes.HasPrefix(stored, []byte(Magic)) {
		t.Fatalf("the store holds an object starting with %q, want age's %q", stored[:20], Magic)
	}
	if bytes.Contains(stored, body[100:200]) {
		t.Fatal("the store holds plaintext bytes")
	}
	if info.Size != int64(len(body)) {
		t.Fatalf("Create: Size %d, want the plaintext's %d", info.Size, len(body))
	}
	// One X25519 recipient: a 168-byte header, the 16-byte nonce and a
	// 16-byte tag per 64 KiB chunk (README, bench/RESULTS.md).
	if want := len(body) + 168 + nonceSize + 4*tagSize; len(stored) != want {
		t.Errorf("stored %d bytes for %d of plaintext, want %d", len(stored), len(body), want)
	}
	// The metadata (checksums of the plaintext) is the store's, unencrypted.
	_, raw, err := read(t, fc, 0, 3, 3, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if raw.Metadata == nil || raw.Metadata.PostApplyChecksum != md.PostApplyChecksum || raw.Size != int64(len(stored)) {
		t.Fatalf("inner info %+v, want the metadata as given and the stored size %d", raw, len(stored))
	}
}

// TestRangesAcrossChunks reads ranges that start and end on and around
// age's 64 KiB chunk boundaries.
func TestRangesAcrossChunks(t *testing.T) {
	k := newKeys(t)
	c, _ := newStore(t, Options{Recipients: []age.Recipient{k.rcp}, Identities: []age.Identity{k.id}})
	for _, n := range []int{0, 1, chunkSize - 1, chunkSize, chunkSize + 1, 3*chunkSize + 5} {
		body := storagetest.Body(n, int64(n))
		id := ltx.TXID(n + 1)
		storagetest.MustCreate(t, c, 0, id, id, body, storagetest.TestMetadata(1))
		for _, r := range [][2]int64{{0, -1}, {0, 0}, {0, 100}, {chunkSize - 1, 2}, {chunkSize, chunkSize}, {chunkSize + 1, -1}, {2*chunkSize - 3, 10}, {int64(n), 5}, {int64(n) + 10, -1}} {
			got, info, err := read(t, c, 0, id, id, r[0], r[1])
			if err != nil {
				t.Fatalf("size %d, range %v: %v", n, r, err)
			}
			lo, hi := min(r[0], int64(n)), int64(n)
			if r[1] >= 0 {
				hi = min(r[0]+r[1], int64(n))
			}
			if !bytes.Equal(got, body[lo:hi]) || info.Size != int64(n) {
				t.Fatalf("size %d, range %v: got %d bytes (Info.Size %d), want [%d:%d] (Info.Size %d)", n, r, len(got), info.Size, lo, hi, n)
			}
		}
	}
}

// TestReaderKeys: a reader without an identity, or with another one,
// fails with an error that names the replica, the object and the key to
// set, and never shows an identity.
func TestReaderKeys(t *testing.T) {
	k, other := newKeys(t), newKeys(t)
	c, fc := newStore(t, Options{Recipients: []age.Recipient{k.rcp}, Identities: []age.Identity{k.id}})
	storagetest.MustCreate(t, c, 0, 1, 1, ltxLike(1000), storagetest.TestMetadata(1))
	for _, tc := range []struct {
		name   string
		opts   Options
		want   error
		saying string
	}{
		{"no identity", Options{Recipients: []age.Recipient{k.rcp}}, ErrNoIdentity, "AGE-SECRET-KEY-1"},
		{"wrong identity", Options{Identities: []age.Identity{other.id}}, ErrWrongIdentity, "X25519"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reader := over(t, fc, tc.opts)
			_, _, err := read(t, reader, 0, 1, 1, 0, -1)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			storagetest.CheckError(t, tc.name, err, []string{"replica backup", storage.FormatFilename(1, 1), "age: identities", tc.saying},
				[]string{k.id.String(), other.id.String()})
			// A metadata-only open decrypts nothing and needs no identity.
			if _, info, err := read(t, reader, 0, 1, 1, 0, 0); err != nil || info.Size != 1000 {
				t.Fatalf("metadata-only open: Size %d, err %v; want 1000, nil", info.Size, err)
			}
		})
	}
}

func TestTamperedCiphertext(t *testing.T) {
	k := newKeys(t)
	body := ltxLike(3 * chunkSize)
	for _, tc := range []struct {
		name string
		at   func(stored []byte) int // index of the byte to flip
	}{
		{"header MAC", func(b []byte) int { return bytes.Index(b, []byte("\n--- ")) + 10 }},
		{"first chunk", func(b []byte) int { return bytes.Index(b, []byte("\n--- ")) + 100 }},
		{"last chunk", func(b []byte) int { return len(b) - 5 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, fc := newStore(t, Options{Recipients: []age.Recipient{k.rcp}, Identities: []age.Identity{k.id}})
			storagetest.MustCreate(t, c, 0, 1, 1, body, storagetest.TestMetadata(1))
			path := filepath.Join(fc.LevelDir(0), storage.FormatFilename(1, 1))
			stored := storedBytes(t, fc, 0, 1, 1)
			stored[tc.at(stored)] ^= 0x01
			if err := os.WriteFile(path, stored, 0o644); err != nil {
				t.Fatal(err)
			}
			got, _, err := read(t, c, 0, 1, 1, 0, -1)
			if !errors.Is(err, ErrDecrypt) {
				t.Fatalf("read %d bytes, err = %v; want ErrDecrypt", len(got), err)
			}
			storagetest.CheckError(t, "tampered", err, []string{"replica backup", storage.FormatFilename(1, 1)}, nil)
		})
	}
	t.Run("truncated", func(t *testing.T) {
		c, fc := newStore(t, Options{Recipients: []age.Recipient{k.rcp}, Identities: []age.Identity{k.id}})
		storagetest.MustCreate(t, c, 0, 1, 1, body, storagetest.TestMetadata(1))
		stored := storedBytes(t, fc, 0, 1, 1)
		// Cut at a chunk boundary: every remaining chunk authenticates, but
		// the last one is not marked last.
		cut := bytes.Index(stored, []byte("\n--- ")) + 1
		cut += bytes.IndexByte(stored[cut:], '\n') + 1 + nonceSize + encChunkSize
		if err := os.WriteFile(filepath.Join(fc.LevelDir(0), storage.FormatFilename(1, 1)), stored[:cut], 0o644); err != nil {
			t.Fatal(err)
		}
		if _, _, err := read(t, c, 0, 1, 1, 0, -1); !errors.Is(err, ErrDecrypt) {
			t.Fatalf("err = %v, want ErrDecrypt", err)
		}
	})
}

// TestPlaintextObject: a replica configured for age meets an object
// written without encryption.
func TestPlaintextObject(t *testing.T) {
	k := newKeys(t)
	fc, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	storagetest.MustCreate(t, fc, 0, 1, 1, ltxLike(1000), storagetest.TestMetadata(1))
	c := over(t, fc, Options{Recipients: []age.Recipient{k.rcp}, Identities: []age.Identity{k.id}})
	for _, size := range []int64{-1, 0, 100} {
		_, _, err := read(t, c, 0, 1, 1, 0, size)
		if !errors.Is(err, ErrNotEncrypted) {
			t.Fatalf("size %d: err = %v, want ErrNotEncrypted", size, err)
		}
		storagetest.CheckError(t, "plaintext object", err, []string{"replica backup", storage.FormatFilename(1, 1), "plaintext LTX", "age:"}, nil)
	}
}

func TestCreateWithoutRecipient(t *testing.T) {
	k := newKeys(t)
	c, fc := newStore(t, Options{Identities: []age.Identity{k.id}})
	_, err := c.Create(context.Background(), 0, 1, 1, bytes.NewReader(ltxLike(100)), storagetest.TestMetadata(1))
	if !errors.Is(err, ErrNoRecipient) {
		t.Fatalf("err = %v, want ErrNoRecipient", err)
	}
	storagetest.CheckError(t, "create without recipient", err, []string{"replica backup", "age: recipients"}, nil)
	if got := storagetest.ListAll(t, fc, 0, 0); len(got) != 0 {
		t.Fatalf("the store holds %+v after a refused create", got)
	}
}

func TestNewNeedsAKey(t *testing.T) {
	fc, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(fc, Options{Replica: "backup"}); err == nil || !strings.Contains(err.Error(), "replica backup") {
		t.Fatalf("New without keys: err = %v, want an error naming the replica", err)
	}
}

// TestOpenKey: raw keys (Litestream 0.3's tree) are decrypted when they
// are age-encrypted and passed through otherwise.
func TestOpenKey(t *testing.T) {
	k := newKeys(t)
	dir := t.TempDir()
	fc, err := file.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	c := over(t, fc, Options{Identities: []age.Identity{k.id}})
	kr, ok := c.(storage.KeyReader)
	if !ok {
		t.Fatal("the decorated file client does not read raw keys")
	}
	var enc bytes.Buffer
	w, err := age.Encrypt(&enc, k.rcp)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, "segment bytes")
	w.Close()
	os.MkdirAll(filepath.Join(dir, "generations"), 0o755)
	os.WriteFile(filepath.Join(dir, "generations", "enc"), enc.Bytes(), 0o644)
	os.WriteFile(filepath.Join(dir, "generations", "plain"), []byte("plain bytes"), 0o644)
	for key, want := range map[string]string{"generations/enc": "segment bytes", "generations/plain": "plain bytes"} {
		rc, err := kr.OpenKey(context.Background(), key)
		if err != nil {
			t.Fatalf("%s: %v", key, err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || string(b) != want {
			t.Fatalf("%s: %q, %v; want %q", key, b, err, want)
		}
	}
	noID := over(t, fc, Options{Recipients: []age.Recipient{k.rcp}}).(storage.KeyReader)
	_, err = noID.OpenKey(context.Background(), "generations/enc")
	if !errors.Is(err, ErrNoIdentity) {
		t.Fatalf("OpenKey without identity: %v, want ErrNoIdentity", err)
	}
}

// BenchmarkRoundTrip creates and reads back a 16 MiB object through the
// file store, plain and age-encrypted: the cost of encryption per byte
// shipped and restored.
func BenchmarkRoundTrip(b *testing.B) {
	body := storagetest.Body(16<<20, 1)
	id, err := age.GenerateX25519Identity()
	if err != nil {
		b.Fatal(err)
	}
	for _, encrypted := range []bool{false, true} {
		b.Run(map[bool]string{false: "plain", true: "age"}[encrypted], func(b *testing.B) {
			fc, err := file.New(b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			var c storage.Client = fc
			if encrypted {
				c, _ = New(fc, Options{Replica: "bench", Recipients: []age.Recipient{id.Recipient()}, Identities: []age.Identity{id}})
			}
			b.SetBytes(int64(len(body)))
			for i := range b.N {
				txid := ltx.TXID(i + 1)
				if _, err := c.Create(context.Background(), 0, txid, txid, bytes.NewReader(body), storagetest.TestMetadata(1)); err != nil {
					b.Fatal(err)
				}
				obj, err := c.Open(context.Background(), 0, txid, txid, 0, -1)
				if err != nil {
					b.Fatal(err)
				}
				if n, err := io.Copy(io.Discard, obj); err != nil || n != int64(len(body)) {
					b.Fatalf("read %d bytes, %v", n, err)
				}
				obj.Close()
			}
		})
	}
}

// plainFile is a file store posing as one with a plain form (what
// PlainWrites returns for S3), to check that the encryption carries over.
type plainFile struct{ *file.Client }

func (p plainFile) PlainWrites(context.Context) (storage.Client, bool, error) {
	return p.Client, true, nil
}

// TestPlainWrites: an encrypted replica's plain form (a store without
// create-only writes) encrypts and decrypts as the replica does; over a
// store without a plain form it says so (ErrNoCreateOnly).
func TestPlainWrites(t *testing.T) {
	k := newKeys(t)
	opts := Options{Recipients: []age.Recipient{k.rcp}, Identities: []age.Identity{k.id}}
	fc, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	c := over(t, plainFile{fc}, opts)
	pc, versioned, err := c.(storage.PlainWriter).PlainWrites(context.Background())
	if err != nil || !versioned {
		t.Fatalf("PlainWrites = %v, versioned %v; want the inner's (true)", err, versioned)
	}
	body := ltxLike(5000)
	storagetest.MustCreate(t, pc, 0, 1, 1, body, storagetest.TestMetadata(1))
	if stored := storedBytes(t, fc, 0, 1, 1); !bytes.HasPrefix(stored, []byte(Magic)) {
		t.Fatal("the plain form stored the object unencrypted")
	}
	if got, _, err := read(t, c, 0, 1, 1, 0, -1); err != nil || !bytes.Equal(got, body) {
		t.Fatalf("read back through the replica: %v", err)
	}
	if _, ok := pc.(storage.KeyReader); !ok {
		t.Error("the plain form of a store that reads raw keys (the Litestream 0.3 tree) does not")
	}

	_, _, err = over(t, fc, opts).(storage.PlainWriter).PlainWrites(context.Background())
	if !errors.Is(err, storage.ErrNoCreateOnly) {
		t.Fatalf("PlainWrites over a file store: %v, want ErrNoCreateOnly", err)
	}
}

// TestSub: the clients of a directory entry's databases, from one
// encrypted client of the prefix, each write under prefix/rel, encrypted
// with the same keys (a client made for prefix/rel with those keys reads
// them; the stored bytes are age files), and list only their own.
func TestSub(t *testing.T) {
	k := newKeys(t)
	opts := Options{Recipients: []age.Recipient{k.rcp}, Identities: []age.Identity{k.id}}
	c, fc := newStore(t, opts)
	storagetest.CheckSub(t, c, func(rel string) storage.Client {
		return over(t, fc.Sub(rel), opts)
	})
	if b := storedBytes(t, fc.Sub("ab").(*file.Client), 0, 1, 1); !bytes.HasPrefix(b, []byte(Magic)) {
		t.Errorf("a sub-client stored %q..., not an age file", b[:min(len(b), 24)])
	}
}

// TestPutKeyEncrypts: a key written through an encrypting client (the
// heads index, which names the databases) is age-encrypted in the store,
// reads back decrypted, and cannot be written without a recipient.
func TestPutKeyEncrypts(t *testing.T) {
	k := newKeys(t)
	c, fc := newStore(t, Options{Recipients: []age.Recipient{k.rcp}, Identities: []age.Identity{k.id}})
	const key, body = ".understudy-heads.json", `{"heads":{"tenant-acme.db":7}}`
	if err := c.(storage.KeyWriter).PutKey(context.Background(), key, strings.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	stored, err := os.ReadFile(filepath.Join(fc.Dir(), key))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(stored, []byte(Magic)) || bytes.Contains(stored, []byte("tenant-acme")) {
		t.Fatalf("the stored key is not age-encrypted: %q", stored)
	}
	rc, err := c.(storage.KeyReader).OpenKey(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || string(got) != body {
		t.Fatalf("read back %q (%v), want %q", got, err, body)
	}
	ro := over(t, fc, Options{Identities: []age.Identity{k.id}})
	err = ro.(storage.KeyWriter).PutKey(context.Background(), key, strings.NewReader(body))
	if !errors.Is(err, ErrNoRecipient) || !strings.Contains(err.Error(), key) {
		t.Fatalf("PutKey without a recipient: %v, want ErrNoRecipient naming the key", err)
	}
}
