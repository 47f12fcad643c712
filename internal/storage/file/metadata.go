package file

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/understudy-db/understudy/internal/storage"
)

// Metadata is kept in user extended attributes on the file itself, so it
// travels with the inode through link() and is atomic with the file's
// appearance. Where the filesystem has no user xattrs it goes to a sidecar:
//
//	<dir>/.understudy/meta/<level>/<name>.<inode>.json
//
// Keying the sidecar by inode means a racing writer that loses the link can
// never overwrite the winner's metadata, and a stale sidecar of a deleted
// file never describes a new file of the same name (the new file has its
// own inode, and the writer replaces any sidecar of that inode before its
// link). The sidecar also records the size, checked on read.

// sidecar is the JSON form of a sidecar file.
type sidecar struct {
	Size   int64             `json:"size"`
	Fields map[string]string `json:"fields"`
}

// metaPath is the sidecar base path (without inode and extension) of a file.
func metaPath(dir string, level int, name string) string {
	return filepath.Join(dir, privateDir, metaDir, strconv.Itoa(level), name)
}

// sidecarPath is the sidecar of the file whose stat is st.
func sidecarPath(base string, st fs.FileInfo) string {
	return base + "." + strconv.FormatUint(inode(st), 10) + ".json"
}

func inode(st fs.FileInfo) uint64 {
	if s, ok := st.Sys().(*syscall.Stat_t); ok {
		return s.Ino
	}
	return 0
}

// writeSidecar writes a sidecar atomically (temp file + rename + dir fsync).
func writeSidecar(c *Client, path string, fields map[string]string, size int64) error {
	if err := c.ensureDir(filepath.Dir(path)); err != nil {
		return err
	}
	data, err := json.Marshal(sidecar{Size: size, Fields: fields})
	if err != nil {
		return fmt.Errorf("file replica: encode sidecar %s: %w", path, err)
	}
	f, err := os.CreateTemp(filepath.Join(c.dir, privateDir, tmpDir), "sidecar.*.tmp")
	if err != nil {
		return fmt.Errorf("file replica: create temp sidecar for %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	err = f.Chmod(0o644) // readable like the file it describes
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("file replica: write sidecar %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("file replica: rename sidecar to %s: %w", path, err)
	}
	return syncDir(filepath.Dir(path))
}

// readMetadata reads the metadata of the open file f: xattrs first, then the
// sidecar. A file with neither (written by another tool) has nil metadata.
func (c *Client) readMetadata(f *os.File, base string, st fs.FileInfo) (*storage.Metadata, error) {
	if !c.forceSidecar {
		vals := map[string]string{}
		supported := true
		for _, name := range storage.AllMetaFields() {
			v, ok, err := getxattr(f, xattrPrefix+name)
			if errors.Is(err, unix.ENOTSUP) {
				supported = false
				break
			} else if err != nil {
				return nil, err
			}
			if ok {
				vals[name] = v
			}
		}
		if supported && len(vals) > 0 {
			return storage.MetadataFromFields(func(k string) (string, bool) { v, ok := vals[k]; return v, ok })
		}
	}
	path := sidecarPath(base, st)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("read sidecar %s: %w", path, err)
	}
	var sc sidecar
	if err := json.Unmarshal(data, &sc); err != nil {
		return nil, fmt.Errorf("decode sidecar %s: %w", path, err)
	}
	if sc.Size != st.Size() {
		// Same inode number, other file (e.g. the directory was copied):
		// it does not describe this file.
		return nil, nil
	}
	return storage.MetadataFromFields(func(k string) (string, bool) { v, ok := sc.Fields[k]; return v, ok })
}

// getxattr reads one attribute; ok is false when it is absent. One call
// reads it into a buffer that fits every value Understudy writes; only a
// longer value costs a size query and a second read.
func getxattr(f *os.File, name string) (string, bool, error) {
	fd := int(f.Fd())
	buf := make([]byte, 128)
	for {
		m, err := unix.Fgetxattr(fd, name, buf)
		if errors.Is(err, unix.ERANGE) {
			// Longer than buf: ask for the size and read again (it may
			// still grow between the calls).
			n, err := unix.Fgetxattr(fd, name, nil)
			if errors.Is(err, unix.ENODATA) {
				return "", false, nil
			} else if err != nil {
				return "", false, fmt.Errorf("get xattr %s: %w", name, err)
			}
			buf = make([]byte, max(n, 2*len(buf)))
			continue
		} else if errors.Is(err, unix.ENODATA) {
			return "", false, nil
		} else if err != nil {
			return "", false, fmt.Errorf("get xattr %s: %w", name, err)
		}
		return string(buf[:m]), true, nil
	}
}

// removeSidecar removes the sidecar of the file at path, if any. It must be
// called before the file itself is removed (it needs the file's inode).
func removeSidecar(base, path string) error {
	st, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("file replica: stat %s: %w", path, err)
	}
	sc := sidecarPath(base, st)
	if err := os.Remove(sc); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("file replica: delete sidecar %s: %w", sc, err)
	}
	return nil
}
