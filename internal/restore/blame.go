package restore

import (
	"errors"
	"fmt"
	"strings"

	"github.com/understudy-db/understudy/internal/storage"
)

// ObjectError is a failure that one object of a plan caused: it does not
// decode, fails its file checksum, is gone, or does not fit the history
// (wrong TXIDs, a page gap, another database's checksums). Restore plans
// around the object. The message names the object.
type ObjectError struct {
	File storage.FileInfo
	Err  error
}

func (e *ObjectError) Error() string { return e.Err.Error() }
func (e *ObjectError) Unwrap() error { return e.Err }

// blame wraps err as an ObjectError of f when err is a verdict on f's
// content or existence (ErrCorrupt, ErrForeignObject, ErrMissingFile,
// ErrChecksumChain), and returns it unchanged otherwise (I/O errors,
// cancellation), or when it already blames an object.
func blame(f storage.FileInfo, err error) error {
	var oe *ObjectError
	if err == nil || errors.As(err, &oe) {
		return err
	}
	for _, kind := range []error{ErrCorrupt, ErrForeignObject, ErrMissingFile, ErrChecksumChain} {
		if errors.Is(err, kind) {
			return &ObjectError{File: f, Err: err}
		}
	}
	return err
}

// soleUnproven returns the one file of a plan that carries no database
// checksums, when exactly one does: the file a malformed result can be
// blamed on.
func soleUnproven(files []storage.FileInfo, headers []FileHeader) (storage.FileInfo, bool) {
	var found []storage.FileInfo
	for i, h := range headers {
		if h.Metadata == nil {
			found = append(found, files[i])
		}
	}
	if len(found) != 1 {
		return storage.FileInfo{}, false
	}
	return found[0], true
}

// describeFiles names a few files for a message: "L0 a-a, L0 b-b and 3 more".
func describeFiles(files []storage.FileInfo, n int) string {
	var s []string
	for i, f := range files {
		if i == n {
			s = append(s, fmt.Sprintf("and %d more", len(files)-n))
			break
		}
		s = append(s, FileName(f))
	}
	return strings.Join(s, ", ")
}
