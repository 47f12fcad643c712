package s3

import (
	"bytes"
	"io"
	"os"
)

// MaxMemoryBody is the largest upload held in memory; a larger one (a
// snapshot of a big database) is spooled to a temp file.
const MaxMemoryBody = 16 << 20

// body is an upload's content, seekable so that the SDK can sign it and
// replay it on a retry.
type body struct {
	io.ReadSeeker
	size int64
	file *os.File // spool file, removed on Close
}

// spool makes r seekable with a known size. A reader that already is an
// io.ReadSeeker is used in place.
func spool(r io.Reader) (*body, error) {
	if rs, ok := r.(io.ReadSeeker); ok {
		cur, err := rs.Seek(0, io.SeekCurrent)
		if err == nil {
			end, err := rs.Seek(0, io.SeekEnd)
			if err == nil {
				if _, err = rs.Seek(cur, io.SeekStart); err == nil {
					return &body{ReadSeeker: io.NewSectionReader(readerAt{rs}, cur, end-cur), size: end - cur}, nil
				}
			}
		}
	}
	var buf bytes.Buffer
	n, err := io.CopyN(&buf, r, MaxMemoryBody+1)
	if err == io.EOF {
		return &body{ReadSeeker: bytes.NewReader(buf.Bytes()), size: n}, nil
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
	return &body{ReadSeeker: f, size: size, file: f}, nil
}

func (b *body) Close() error {
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
