package restore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/internal/storage"
	"github.com/understudy-db/understudy/internal/storage/agecrypt"
)

// MaxLevel is the highest level listed (the snapshot level).
const MaxLevel = storage.SnapshotLevel

// ListAll lists every level (0 through 9) of the store, in level order and
// TXID order within a level.
func ListAll(ctx context.Context, client storage.Client) ([]storage.FileInfo, error) {
	var all []storage.FileInfo
	for level := 0; level <= MaxLevel; level++ {
		files, err := ListLevel(ctx, client, level)
		if err != nil {
			return nil, err
		}
		all = append(all, files...)
	}
	return all, nil
}

// ListLevel lists one level of the store.
func ListLevel(ctx context.Context, client storage.Client, level int) ([]storage.FileInfo, error) {
	it, err := client.List(ctx, level, 0)
	if err != nil {
		return nil, fmt.Errorf("list level %d of the %s replica: %w", level, client.Type(), err)
	}
	var files []storage.FileInfo
	for it.Next() {
		files = append(files, it.Item())
	}
	err = it.Err()
	if cerr := it.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("list level %d of the %s replica: %w", level, client.Type(), err)
	}
	return files, nil
}

// FileHeader is an LTX header read with a small range read, with the
// object's metadata (nil when the object carries none).
type FileHeader struct {
	Info     storage.FileInfo
	Header   ltx.Header
	Metadata *storage.Metadata
}

// Time is the commit time recorded in the LTX header.
func (h FileHeader) Time() time.Time { return time.UnixMilli(h.Header.Timestamp).UTC() }

// ReadHeader reads the first ltx.HeaderSize bytes of a file and checks that
// they are the LTX header the file's name promises. The errors wrap
// ErrMissingFile, ErrForeignObject or ErrCorrupt and name the file.
func ReadHeader(ctx context.Context, client storage.Client, f storage.FileInfo) (FileHeader, error) {
	obj, err := openFile(ctx, client, f, 0, ltx.HeaderSize)
	if err != nil {
		return FileHeader{}, err
	}
	defer obj.Close()
	b := make([]byte, ltx.HeaderSize)
	if n, err := io.ReadFull(obj, b); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return FileHeader{}, fmt.Errorf("%s: %w: only %d bytes, shorter than an LTX header", FileName(f), ErrForeignObject, n)
		}
		if errors.Is(err, agecrypt.ErrDecrypt) {
			return FileHeader{}, fmt.Errorf("%s: %w: %w", FileName(f), ErrCorrupt, err)
		}
		return FileHeader{}, fmt.Errorf("%s: read header: %w", FileName(f), err)
	}
	hdr, err := checkHeader(f, b)
	if err != nil {
		return FileHeader{}, err
	}
	info := obj.Info
	if info.Size == 0 {
		info.Size = f.Size
	}
	return FileHeader{Info: info, Header: hdr, Metadata: obj.Info.Metadata}, nil
}

// openFile opens size bytes of f from offset (size < 0: to the end). A
// missing object is an error wrapping ErrMissingFile; every error names the
// file.
func openFile(ctx context.Context, client storage.Client, f storage.FileInfo, offset, size int64) (*storage.Object, error) {
	obj, err := client.Open(ctx, f.Level, f.MinTXID, f.MaxTXID, offset, size)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, fmt.Errorf("%s: %w: the object is gone from the store (deleted by retention or by hand?): %v", FileName(f), ErrMissingFile, err)
	} else if errors.Is(err, agecrypt.ErrDecrypt) {
		return nil, fmt.Errorf("%s: %w: %w", FileName(f), ErrCorrupt, err)
	} else if err != nil {
		return nil, fmt.Errorf("%s: open: %w", FileName(f), err)
	}
	return obj, nil
}

// checkHeader decodes and validates a header against the file's key.
func checkHeader(f storage.FileInfo, b []byte) (ltx.Header, error) {
	var hdr ltx.Header
	if bytes.HasPrefix(b, []byte(agecrypt.Magic)) {
		return hdr, fmt.Errorf("%s: %w: the replica has no age: section; give it one with the identities that decrypt it (age: {identities: [AGE-SECRET-KEY-1...]} on the replica in the config, then restore or follow by the config's database path)",
			FileName(f), agecrypt.ErrNoIdentity)
	}
	if err := hdr.UnmarshalBinary(b); err != nil {
		return hdr, fmt.Errorf("%s: %w: not an LTX file (%v); remove it from the level directory", FileName(f), ErrForeignObject, err)
	}
	if err := hdr.Validate(); err != nil {
		return hdr, fmt.Errorf("%s: %w: invalid LTX header: %v", FileName(f), ErrCorrupt, err)
	}
	if hdr.MinTXID != f.MinTXID || hdr.MaxTXID != f.MaxTXID {
		return hdr, fmt.Errorf("%s: %w: its header covers TXIDs %s-%s, not what its name says", FileName(f), ErrForeignObject, hdr.MinTXID, hdr.MaxTXID)
	}
	return hdr, nil
}

// ReadHeaders reads the headers of files with at most parallelism requests
// in flight. The result is in the order of files; the first error wins (an
// *ObjectError when it is a verdict on one file).
func ReadHeaders(ctx context.Context, client storage.Client, files []storage.FileInfo, parallelism int) ([]FileHeader, error) {
	if parallelism < 1 {
		parallelism = 1
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	out := make([]FileHeader, len(files))
	var (
		mu       sync.Mutex
		firstErr error
	)
	each(ctx, 0, len(files), parallelism, func(i int) {
		h, err := ReadHeader(ctx, client, files[i])
		if err != nil {
			err = blame(files[i], err)
			mu.Lock()
			if firstErr == nil {
				firstErr = err
			}
			mu.Unlock()
			cancel()
			return
		}
		out[i] = h
	})
	if firstErr != nil {
		return nil, firstErr
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// HeaderFuncFor returns a HeaderFunc reading from client.
func HeaderFuncFor(client storage.Client) HeaderFunc {
	return func(ctx context.Context, f storage.FileInfo) (ltx.Header, error) {
		h, err := ReadHeader(ctx, client, f)
		return h.Header, err
	}
}
