package primary

import (
	"io"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// asyncWriter buffers writes to w and writes each full buffer from a
// goroutine of its own, so that the copy into the page cache (a third of
// the CPU of a 1 GiB full image: the kernel allocating and filling pages)
// runs on the other core while the encoder compresses the next pages.
// Flush writes what is buffered and waits; the first write error is
// returned by the next Write or Flush.
type asyncWriter struct {
	w    io.Writer
	buf  []byte
	free chan []byte
	full chan []byte
	done chan struct{}

	mu  sync.Mutex
	err error
}

// newAsyncWriter starts the writing goroutine; Flush (or Close) ends it.
func newAsyncWriter(w io.Writer, size int) *asyncWriter {
	a := &asyncWriter{w: w, free: make(chan []byte, 2), full: make(chan []byte, 2), done: make(chan struct{})}
	a.buf = make([]byte, 0, size)
	a.free <- make([]byte, 0, size)
	go a.run()
	return a
}

// writebackEvery is how many bytes an asyncWriter to a file writes
// before it asks the kernel to start writing them to disk
// (sync_file_range, not waiting): the fsync that makes the file durable
// then finds little left. On this machine's disk (340 MB/s) the fsync of
// a 0.8 GB full image alone took 2.4 s after the encoding.
const writebackEvery = 32 << 20

func (a *asyncWriter) run() {
	defer close(a.done)
	f, _ := a.w.(*os.File)
	var written, started int64
	for b := range a.full {
		if a.failed() == nil {
			if _, err := a.w.Write(b); err != nil {
				a.mu.Lock()
				a.err = err
				a.mu.Unlock()
			}
			written += int64(len(b))
			if f != nil && written-started >= writebackEvery {
				// Best effort: a file system without it syncs at the end.
				_ = unix.SyncFileRange(int(f.Fd()), started, written-started, unix.SYNC_FILE_RANGE_WRITE)
				started = written
			}
		}
		a.free <- b[:0]
	}
}

func (a *asyncWriter) failed() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.err
}

func (a *asyncWriter) Write(p []byte) (int, error) {
	if err := a.failed(); err != nil {
		return 0, err
	}
	n := len(p)
	for len(p) > 0 {
		c := copy(a.buf[len(a.buf):cap(a.buf)], p)
		a.buf = a.buf[:len(a.buf)+c]
		p = p[c:]
		if len(a.buf) == cap(a.buf) {
			a.full <- a.buf
			a.buf = <-a.free
		}
	}
	return n, nil
}

// Flush writes everything and stops the goroutine; the writer must not be
// used after it.
func (a *asyncWriter) Flush() error {
	if a.full == nil {
		return a.failed()
	}
	if len(a.buf) > 0 {
		a.full <- a.buf
	}
	close(a.full)
	<-a.done
	a.full = nil
	return a.failed()
}
