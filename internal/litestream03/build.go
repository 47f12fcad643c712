package litestream03

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/pierrec/lz4/v4"
	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/internal/dbsum"
	"github.com/understudy-db/understudy/internal/storage"
	"github.com/understudy-db/understudy/internal/wal"
)

// ageMagic starts every age-encrypted file (Litestream 0.3's "age" option).
var ageMagic = []byte("age-encryption.org/")

// lz4Magic starts every LZ4 frame, little-endian.
var lz4Magic = []byte{0x04, 0x22, 0x4d, 0x18}

// Load lists the 0.3 tree of a store and parses it.
func Load(ctx context.Context, kr storage.KeyReader) (Replica, error) {
	keys, err := kr.ListKeys(ctx, Prefix)
	if err != nil {
		return Replica{}, fmt.Errorf("list Litestream 0.3 generations: %w", err)
	}
	return Parse(keys), nil
}

// Result describes a built database.
type Result struct {
	Plan      Plan
	PageSize  uint32
	PageCount uint32
	Checksum  ltx.Checksum // Understudy's database checksum of the result
	Frames    int          // WAL frames applied
	Elapsed   time.Duration
}

// Restore builds p into a temp file beside out, runs check on it (nil: no
// check), and links it to out, which must not exist; on error nothing is
// left behind.
func Restore(ctx context.Context, kr storage.KeyReader, p Plan, out string, check func(tmpPath string) error) (res Result, err error) {
	start := time.Now()
	tmpPath := filepath.Join(filepath.Dir(out), "."+filepath.Base(out)+".restore-"+randomSuffix()+".tmp")
	f, err := os.OpenFile(tmpPath, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return Result{}, fmt.Errorf("create temp file beside %s: %w", out, err)
	}
	defer func() {
		if f != nil {
			_ = f.Close()
		}
		if err != nil {
			_ = os.Remove(tmpPath)
		}
	}()
	if res, err = Build(ctx, kr, p, f); err != nil {
		return Result{}, err
	}
	if err := f.Sync(); err != nil {
		return Result{}, fmt.Errorf("sync %s: %w", tmpPath, err)
	}
	cerr := f.Close()
	f = nil
	if cerr != nil {
		return Result{}, fmt.Errorf("close %s: %w", tmpPath, cerr)
	}
	if check != nil {
		if err := check(tmpPath); err != nil {
			return Result{}, err
		}
	}
	// A link fails when out exists: a restore never overwrites a database.
	if err := os.Link(tmpPath, out); err != nil {
		return Result{}, fmt.Errorf("move the restored database to %s: %w", out, err)
	}
	_ = os.Remove(tmpPath)
	if d, err := os.Open(filepath.Dir(out)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	res.Elapsed = time.Since(start)
	return res, nil
}

func randomSuffix() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Build writes the database p restores into dst (empty, read-write): the
// snapshot, then each WAL index's frames up to its last commit, pages
// written in place and the file cut to the commit's size, as a SQLite
// checkpoint of that WAL would. Every WAL frame's salt and checksum chain is
// verified; a segment that does not start where the one before it ended, or
// a WAL that breaks its checksum chain before its end, is an error naming
// the object.
func Build(ctx context.Context, kr storage.KeyReader, p Plan, dst *os.File) (Result, error) {
	res := Result{Plan: p}
	if err := copyObject(ctx, kr, p.Snapshot.Key(), dst); err != nil {
		return res, err
	}
	pageSize, err := dbPageSize(dst)
	if err != nil {
		return res, fmt.Errorf("%w: snapshot %s: %v", ErrCorrupt, p.Snapshot.Key(), err)
	}
	st, err := dst.Stat()
	if err != nil {
		return res, err
	}
	if st.Size()%int64(pageSize) != 0 {
		return res, fmt.Errorf("%w: snapshot %s: %d bytes is not a whole number of %d-byte pages", ErrCorrupt, p.Snapshot.Key(), st.Size(), pageSize)
	}
	dbSize := uint32(st.Size() / int64(pageSize))

	walFile, err := os.CreateTemp(filepath.Dir(dst.Name()), "."+filepath.Base(dst.Name())+".wal-*.tmp")
	if err != nil {
		return res, fmt.Errorf("create temp WAL beside %s: %w", dst.Name(), err)
	}
	defer func() { walFile.Close(); os.Remove(walFile.Name()) }()

	for i := 0; i < len(p.Segments); {
		j := i
		for j < len(p.Segments) && p.Segments[j].Index == p.Segments[i].Index {
			j++
		}
		n, size, err := applyIndex(ctx, kr, p.Segments[i:j], walFile, dst, pageSize, dbSize)
		if err != nil {
			return res, err
		}
		res.Frames += n
		dbSize = size
		i = j
	}
	sum, pages, err := dbsum.Reader(io.NewSectionReader(dst, 0, int64(dbSize)*int64(pageSize)), int(pageSize))
	if err != nil {
		return res, fmt.Errorf("checksum the restored database: %w", err)
	}
	if hdrPages := headerPageCount(dst); hdrPages != 0 && hdrPages != pages {
		return res, fmt.Errorf("%w: the restored database's header says %d pages but the WAL chain ends at %d (generation %s up to index %08x)",
			ErrCorrupt, hdrPages, pages, p.Generation, p.LastIndex())
	}
	res.PageSize, res.PageCount, res.Checksum = pageSize, pages, sum
	return res, nil
}

// applyIndex decompresses one WAL index's segments into walFile and applies
// its committed frames to db. It returns the frames applied and the
// database size in pages after them.
func applyIndex(ctx context.Context, kr storage.KeyReader, segs []Segment, walFile, db *os.File, pageSize, dbSize uint32) (int, uint32, error) {
	if err := walFile.Truncate(0); err != nil {
		return 0, 0, err
	}
	if _, err := walFile.Seek(0, io.SeekStart); err != nil {
		return 0, 0, err
	}
	var end int64
	for _, s := range segs {
		if s.Offset != end {
			return 0, 0, fmt.Errorf("%w: %s starts at WAL offset %d but the segments before it end at %d", ErrMissing, s.Key(), s.Offset, end)
		}
		if err := copyObject(ctx, kr, s.Key(), walFile); err != nil {
			return 0, 0, err
		}
		pos, err := walFile.Seek(0, io.SeekCurrent)
		if err != nil {
			return 0, 0, err
		}
		end = pos
	}
	first := segs[0]
	h, err := wal.ReadHeader(walFile)
	if err != nil {
		return 0, 0, fmt.Errorf("%w: %s: %v", ErrCorrupt, first.Key(), err)
	}
	if h.PageSize != pageSize {
		return 0, 0, fmt.Errorf("%w: %s: WAL page size %d, database page size %d", ErrCorrupt, first.Key(), h.PageSize, pageSize)
	}
	b, err := wal.Scan(walFile, h, wal.Start(h), dbSize, 0)
	if err != nil {
		return 0, 0, fmt.Errorf("read WAL index %08x of generation %s: %w", first.Index, first.Generation, err)
	}
	if b.Stop != wal.StopEnd || b.End.Offset+int64(b.Tail)*wal.FrameSize(pageSize) != end {
		return 0, 0, fmt.Errorf("%w: WAL index %08x of generation %s: %s at offset %d of %d bytes (%s)",
			ErrCorrupt, first.Index, first.Generation, b.Stop, b.End.Offset+int64(b.Tail)*wal.FrameSize(pageSize), end, segmentAt(segs, b.End.Offset))
	}
	if b.Commits == 0 {
		return 0, dbSize, nil
	}
	page := make([]byte, pageSize)
	for pgno, off := range b.Pages {
		if err := wal.PageData(walFile, off, page); err != nil {
			return 0, 0, err
		}
		if _, err := db.WriteAt(page, int64(pgno-1)*int64(pageSize)); err != nil {
			return 0, 0, fmt.Errorf("write page %d of the restored database: %w", pgno, err)
		}
	}
	if err := db.Truncate(int64(b.Commit) * int64(pageSize)); err != nil {
		return 0, 0, fmt.Errorf("size the restored database to %d pages: %w", b.Commit, err)
	}
	return b.Frames, b.Commit, nil
}

// segmentAt names the segment holding WAL offset off.
func segmentAt(segs []Segment, off int64) string {
	name := segs[0].Key()
	for _, s := range segs {
		if s.Offset <= off {
			name = s.Key()
		}
	}
	return name
}

// copyObject appends the LZ4-decompressed content of key to w.
func copyObject(ctx context.Context, kr storage.KeyReader, key string, w io.Writer) error {
	rc, err := kr.OpenKey(ctx, key)
	if err != nil {
		return fmt.Errorf("open %s: %w", key, err)
	}
	defer rc.Close()
	br := bufio.NewReader(rc)
	head, _ := br.Peek(len(ageMagic))
	switch {
	case bytes.HasPrefix(head, ageMagic):
		return fmt.Errorf("%w: %s: the replica has no age identity to decrypt it: give the replica in the config its age: {identities: [AGE-SECRET-KEY-1...]} (Litestream 0.3's key) and restore by the config's database path; or restore this replica with Litestream 0.3 (litestream restore with its age identity), then run `understudy replicate` on the restored database", ErrEncrypted, key)
	case !bytes.HasPrefix(head, lz4Magic):
		return fmt.Errorf("%w: %s is not an LZ4 frame (starts with %x)", ErrCorrupt, key, head)
	}
	if _, err := io.Copy(w, lz4.NewReader(br)); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%w: %s: %v", ErrCorrupt, key, err)
	}
	return nil
}

// dbPageSize reads the page size from a database file's header.
func dbPageSize(f *os.File) (uint32, error) {
	var hdr [100]byte
	if _, err := f.ReadAt(hdr[:], 0); err != nil {
		return 0, fmt.Errorf("read database header: %w", err)
	}
	if !bytes.HasPrefix(hdr[:], []byte("SQLite format 3\x00")) {
		return 0, errors.New("not an SQLite database")
	}
	ps := uint32(binary.BigEndian.Uint16(hdr[16:]))
	if ps == 1 {
		ps = 65536
	}
	if ps < 512 || ps&(ps-1) != 0 {
		return 0, fmt.Errorf("invalid page size %d", ps)
	}
	return ps, nil
}

// headerPageCount is the page count in the database header, or 0 when the
// header does not vouch for it (version-valid-for differs from the change
// counter, as in files written by old SQLite versions).
func headerPageCount(f *os.File) uint32 {
	var hdr [100]byte
	if _, err := f.ReadAt(hdr[:], 0); err != nil {
		return 0
	}
	if binary.BigEndian.Uint32(hdr[24:]) != binary.BigEndian.Uint32(hdr[92:]) {
		return 0
	}
	return binary.BigEndian.Uint32(hdr[28:])
}
