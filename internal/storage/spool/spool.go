// Package spool makes an upload's content seekable with a known size, so
// that an object store's SDK can sign it, size its deadline, and replay it
// on a retry. Small bodies stay in memory; a larger one (a snapshot of a big
// database) goes to an unlinked temp file.
package spool

import (
	"bytes"
	"io"
	"os"
)

// MaxMemoryBody is the largest upload held in memory.
const MaxMemoryBody = 16 << 20

// Body is an upload's content. Close must be called.
type Body struct {
	io.ReadSeeker
	Size int64
	file *os.File // spool file, removed on Close
}

// New makes r seekable with a known size. A reader that already is an
// io.ReadSeeker is used in place, from its current offset.
func New(r io.Reader) (*Body, error) {
	if rs, ok := r.(io.ReadSeeker); ok {
		cur, err := rs.Seek(0, io.SeekCurrent)
		if err == nil {
			end, err := rs.Seek(0, io.SeekEnd)
			if err == nil {
				if _, err = rs.Seek(cur, io.SeekStart); err == nil {
					return &Body{ReadSeeker: io.NewSectionReader(readerAt{rs}, cur, end-cur), Size: end - cur}, nil
				}
			}
		}
	}
	var buf bytes.Buffer
	n, err := io.CopyN(&buf, r, MaxMemoryBody+1)
	if err == io.EOF {
		return &Body{ReadSeeker: bytes.NewReader(buf.Bytes()), Size: n}, nil
	} else if err != nil {
		return nil, err
	}
	f, err := os.CreateTemp("", "understudy-upload-*")
	if err != nil {
		return nil, err
	}
	_ = os.Remove(f.Name()) // unlinked: nothing to clean up after a crash
	size, err := io.Copy(f, io.MultiReader(&buf, r))
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return &Body{ReadSeeker: f, Size: size, file: f}, nil
}

// InFile reports whether the body was spooled to a temp file.
func (b *Body) InFile() bool { return b.file != nil }

// Close removes the spool file, if any.
func (b *Body) Close() error {
	if b.file != nil {
		return b.file.Close()
	}
	return nil
}

// readerAt adapts a ReadSeeker for io.SectionReader. Uploads read it from
// one goroutine at a time, so seeking before each read is safe.
type readerAt struct{ rs io.ReadSeeker }

func (r readerAt) ReadAt(p []byte, off int64) (int, error) {
	if _, err := r.rs.Seek(off, io.SeekStart); err != nil {
		return 0, err
	}
	return io.ReadFull(r.rs, p)
}
