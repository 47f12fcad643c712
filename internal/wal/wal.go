// Package wal reads SQLite write-ahead log files as the primary needs them:
// it validates the header, follows the frame checksum chain from a known
// position, stops at the first frame that does not belong (salt or checksum
// mismatch, partial frame), and reports only what was committed.
//
// Format (sqlite.org/walformat.html): a 32-byte header (magic, version, page
// size, checkpoint sequence, salt-1, salt-2, checksum-1, checksum-2, all
// big-endian) and frames of a 24-byte header (page number, database size in
// pages for a commit frame else 0, salt-1, salt-2, checksum-1, checksum-2)
// followed by one page. The checksum is cumulative: each frame's checksum is
// seeded by the previous frame's (the header's for the first frame). The
// magic's low bit chooses the byte order of the 32-bit words summed.
package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
)

// Sizes and magic numbers of the WAL format.
const (
	HeaderSize      = 32
	FrameHeaderSize = 24
	MagicLE         = 0x377f0682 // checksums over little-endian words
	MagicBE         = 0x377f0683 // checksums over big-endian words
	Version         = 3007000
)

// ErrNoHeader means the WAL has no valid header: it is empty (new or
// truncated) or its header checksum does not match. SQLite treats such a
// WAL as holding no frames.
var ErrNoHeader = errors.New("wal has no valid header")

// Header is a decoded WAL header.
type Header struct {
	BigEndian     bool // checksums over big-endian words (magic 0x377f0683)
	PageSize      uint32
	CheckpointSeq uint32
	Salt1, Salt2  uint32
	Checksum      Checksum
}

// Checksum is the running pair of checksum words.
type Checksum struct{ S1, S2 uint32 }

// ParseHeader decodes and validates a WAL header. Any defect gives an error
// wrapping ErrNoHeader.
func ParseHeader(b []byte) (Header, error) {
	if len(b) < HeaderSize {
		return Header{}, fmt.Errorf("%w: %d bytes", ErrNoHeader, len(b))
	}
	magic := binary.BigEndian.Uint32(b[0:])
	if magic != MagicLE && magic != MagicBE {
		return Header{}, fmt.Errorf("%w: bad magic %#x", ErrNoHeader, magic)
	}
	if v := binary.BigEndian.Uint32(b[4:]); v != Version {
		return Header{}, fmt.Errorf("%w: unsupported version %d", ErrNoHeader, v)
	}
	h := Header{
		BigEndian:     magic == MagicBE,
		PageSize:      binary.BigEndian.Uint32(b[8:]),
		CheckpointSeq: binary.BigEndian.Uint32(b[12:]),
		Salt1:         binary.BigEndian.Uint32(b[16:]),
		Salt2:         binary.BigEndian.Uint32(b[20:]),
		Checksum:      Checksum{binary.BigEndian.Uint32(b[24:]), binary.BigEndian.Uint32(b[28:])},
	}
	if h.PageSize == 1 { // 65536 does not fit the 16-bit field of older formats
		h.PageSize = 65536
	}
	if h.PageSize < 512 || h.PageSize > 65536 || h.PageSize&(h.PageSize-1) != 0 {
		return Header{}, fmt.Errorf("%w: invalid page size %d", ErrNoHeader, h.PageSize)
	}
	if got := Sum(h.BigEndian, Checksum{}, b[:24]); got != h.Checksum {
		return Header{}, fmt.Errorf("%w: header checksum mismatch", ErrNoHeader)
	}
	return h, nil
}

// ReadHeader reads and parses the header of the WAL read through r.
func ReadHeader(r io.ReaderAt) (Header, error) {
	var b [HeaderSize]byte
	n, err := r.ReadAt(b[:], 0)
	if n < HeaderSize {
		if err == nil || err == io.EOF {
			return Header{}, fmt.Errorf("%w: %d bytes", ErrNoHeader, n)
		}
		return Header{}, fmt.Errorf("read wal header: %w", err)
	}
	return ParseHeader(b[:])
}

// Sum continues the WAL checksum seeded by s over b (len(b) a multiple of 8).
//
// It is the primary's hottest loop (every byte of the WAL passes through it
// at 200-370 MB/s of frames), so it walks b by reslicing, which leaves no
// bounds checks in the loop, and takes 32 bytes per turn.
func Sum(bigEndian bool, s Checksum, b []byte) Checksum {
	if bigEndian {
		return sumBE(s, b)
	}
	return sumLE(s, b)
}

func sumLE(s Checksum, b []byte) Checksum {
	s1, s2 := s.S1, s.S2
	le := binary.LittleEndian
	for ; len(b) >= 32; b = b[32:] {
		s1 = s1 + le.Uint32(b) + s2
		s2 = s2 + le.Uint32(b[4:]) + s1
		s1 = s1 + le.Uint32(b[8:]) + s2
		s2 = s2 + le.Uint32(b[12:]) + s1
		s1 = s1 + le.Uint32(b[16:]) + s2
		s2 = s2 + le.Uint32(b[20:]) + s1
		s1 = s1 + le.Uint32(b[24:]) + s2
		s2 = s2 + le.Uint32(b[28:]) + s1
	}
	for ; len(b) >= 8; b = b[8:] {
		s1 = s1 + le.Uint32(b) + s2
		s2 = s2 + le.Uint32(b[4:]) + s1
	}
	return Checksum{s1, s2}
}

func sumBE(s Checksum, b []byte) Checksum {
	s1, s2 := s.S1, s.S2
	be := binary.BigEndian
	for ; len(b) >= 32; b = b[32:] {
		s1 = s1 + be.Uint32(b) + s2
		s2 = s2 + be.Uint32(b[4:]) + s1
		s1 = s1 + be.Uint32(b[8:]) + s2
		s2 = s2 + be.Uint32(b[12:]) + s1
		s1 = s1 + be.Uint32(b[16:]) + s2
		s2 = s2 + be.Uint32(b[20:]) + s1
		s1 = s1 + be.Uint32(b[24:]) + s2
		s2 = s2 + be.Uint32(b[28:]) + s1
	}
	for ; len(b) >= 8; b = b[8:] {
		s1 = s1 + be.Uint32(b) + s2
		s2 = s2 + be.Uint32(b[4:]) + s1
	}
	return Checksum{s1, s2}
}

// Position is a point in one WAL generation: the byte offset of the next
// frame and the running checksum of everything before it. The position just
// after the header is Start(h).
type Position struct {
	Offset   int64
	Checksum Checksum
}

// Start is the position of the first frame of the WAL with header h.
func Start(h Header) Position { return Position{Offset: HeaderSize, Checksum: h.Checksum} }

// FrameSize is the size of one frame for the page size.
func FrameSize(pageSize uint32) int64 { return FrameHeaderSize + int64(pageSize) }

// FrameIndex is the 1-based frame number that ends at offset (the frame
// count SQLite's wal_checkpoint reports as "log" when offset is the end).
func FrameIndex(offset int64, pageSize uint32) int64 {
	return (offset - HeaderSize) / FrameSize(pageSize)
}

// Stop says why a scan ended.
type Stop int

// Reasons a scan ended.
const (
	StopEnd      Stop = iota // end of the file or of the limit
	StopPartial              // a partial frame at the end of the file
	StopSalt                 // a frame from an older generation (salt mismatch)
	StopChecksum             // a frame whose checksum breaks the chain
	StopPgno                 // a frame with page number 0
)

func (s Stop) String() string {
	return [...]string{"end", "partial frame", "salt mismatch", "checksum mismatch", "page number 0"}[s]
}

// Batch is what a scan found: the committed transactions after a start
// position, with the newest version of each page.
type Batch struct {
	Start   Position // position the scan began at
	End     Position // position after the last commit frame (== start if none)
	Salt1   uint32   // salts of the WAL header the frames were read under
	Salt2   uint32
	Pages   map[uint32]int64 // page number -> offset of the newest frame holding it
	Commit  uint32           // database size in pages after the last commit (0 if none)
	Commits int              // commit frames seen
	Frames  int              // committed frames
	Tail    int              // valid frames after the last commit (not committed yet)
	Stop    Stop             // why the scan ended
	// Grown is set when a commit made the database larger without writing
	// every new page (lock page excepted). The content of such a page is not
	// in the WAL, so the history cannot be followed exactly from it.
	Grown bool
}

// scanBufs reuses Scan's read buffers (1 MiB at 4 KiB pages): a busy
// shipper scans many times a second, and a fresh buffer each time kept the
// garbage collector's heap goal, and so the process's RSS, high.
var scanBufs sync.Pool

func getBuf(n int) []byte {
	if p, ok := scanBufs.Get().(*[]byte); ok && cap(*p) >= n {
		return (*p)[:n]
	}
	return make([]byte, n)
}

func putBuf(b []byte) { scanBufs.Put(&b) }

// Scan reads frames through r from start, validating salts and the checksum
// chain, up to limit bytes of file (limit <= 0: to the end of what r holds).
// dbSize is the database size in pages before start; it is used to check that
// every commit that grows the database writes its new pages. Frames after
// the last commit frame are counted in Tail but not returned.
func Scan(r io.ReaderAt, h Header, start Position, dbSize uint32, limit int64) (*Batch, error) {
	fsz := FrameSize(h.PageSize)
	b := &Batch{Start: start, End: start, Salt1: h.Salt1, Salt2: h.Salt2, Pages: make(map[uint32]int64)}
	lockPgno := uint32(0x40000000/int64(h.PageSize)) + 1

	// Pages of the transaction in progress; merged into b.Pages on commit.
	txPages := make(map[uint32]int64)
	pos := start
	const chunkFrames = 256
	buf := getBuf(int(fsz * chunkFrames))
	defer putBuf(buf)
	var bufOff int64 = -1 // file offset of buf[0]
	var bufLen int64
	for {
		if limit > 0 && pos.Offset+fsz > limit {
			b.Stop = StopEnd
			break
		}
		// Refill the buffer if the frame is not entirely inside it.
		if bufOff < 0 || pos.Offset < bufOff || pos.Offset+fsz > bufOff+bufLen {
			n, err := r.ReadAt(buf, pos.Offset)
			if err != nil && err != io.EOF {
				return nil, fmt.Errorf("read wal at offset %d: %w", pos.Offset, err)
			}
			bufOff, bufLen = pos.Offset, int64(n)
			if bufLen < fsz {
				if bufLen == 0 {
					b.Stop = StopEnd
				} else {
					b.Stop = StopPartial
				}
				break
			}
		}
		fr := buf[pos.Offset-bufOff : pos.Offset-bufOff+fsz]
		pgno := binary.BigEndian.Uint32(fr[0:])
		commit := binary.BigEndian.Uint32(fr[4:])
		if binary.BigEndian.Uint32(fr[8:]) != h.Salt1 || binary.BigEndian.Uint32(fr[12:]) != h.Salt2 {
			b.Stop = StopSalt
			break
		}
		sum := Sum(h.BigEndian, pos.Checksum, fr[:8])
		sum = Sum(h.BigEndian, sum, fr[FrameHeaderSize:])
		if sum.S1 != binary.BigEndian.Uint32(fr[16:]) || sum.S2 != binary.BigEndian.Uint32(fr[20:]) {
			b.Stop = StopChecksum
			break
		}
		if pgno == 0 {
			b.Stop = StopPgno
			break
		}
		txPages[pgno] = pos.Offset
		pos = Position{Offset: pos.Offset + fsz, Checksum: sum}
		b.Tail++
		if commit == 0 {
			continue
		}
		// A commit: check growth, then fold the transaction into the batch.
		for p := dbSize + 1; p <= commit; p++ {
			if p == lockPgno {
				continue
			}
			if _, ok := txPages[p]; !ok {
				b.Grown = true
				break
			}
		}
		for p, off := range txPages {
			b.Pages[p] = off
		}
		clear(txPages)
		dbSize = commit
		b.Commit = commit
		b.Commits++
		b.Frames += b.Tail
		b.Tail = 0
		b.End = pos
	}
	// Pages beyond the final size are not part of the database any more.
	for p := range b.Pages {
		if b.Commit > 0 && p > b.Commit {
			delete(b.Pages, p)
		}
	}
	return b, nil
}

// PageData reads the page of the frame at offset into dst (len page size).
func PageData(r io.ReaderAt, offset int64, dst []byte) error {
	if _, err := r.ReadAt(dst, offset+FrameHeaderSize); err != nil {
		return fmt.Errorf("read wal page at offset %d: %w", offset, err)
	}
	return nil
}
