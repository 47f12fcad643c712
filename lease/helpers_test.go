package lease_test

import (
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// testLogger sends a lease's logs to t.Log until the test ends (the renew
// loop may log a moment after).
func testLogger(t *testing.T) hclog.Logger {
	t.Helper()
	w := &tWriter{t: t}
	t.Cleanup(w.stop)
	return hclog.New(&hclog.LoggerOptions{Output: w, Level: hclog.Debug})
}

type tWriter struct {
	mu   sync.Mutex
	t    *testing.T
	done bool
}

func (w *tWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (w *tWriter) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.done = true
}

// dbName derives a database name (and so a lease key) unique to the test.
func dbName(t *testing.T) string {
	return strings.NewReplacer("/", "-", " ", "_").Replace(t.Name())
}

// fakeClock is a lease.Clock that moves only when Advance is called.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []fakeWaiter
}

type fakeWaiter struct {
	at time.Time
	c  chan time.Time
}

func newFakeClock(now time.Time) *fakeClock { return &fakeClock{now: now} }

func (f *fakeClock) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fakeClock) After(d time.Duration) <-chan time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := make(chan time.Time, 1)
	if d <= 0 {
		c <- f.now
		return c
	}
	f.waiters = append(f.waiters, fakeWaiter{at: f.now.Add(d), c: c})
	return c
}

// BlockUntil waits (real time) until n timers are pending, so that an
// Advance reaches goroutines that are about to wait on the clock.
func (f *fakeClock) BlockUntil(t *testing.T, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		f.mu.Lock()
		got := len(f.waiters)
		f.mu.Unlock()
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("fake clock: %d timers pending, want %d", got, n)
		}
	}
}

// Set moves the clock to now without firing any timer: as a process woken
// from SIGSTOP sees the time jump before any of its goroutines ran.
func (f *fakeClock) Set(now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = now
}

// Advance moves the clock by d and fires every timer that became due.
func (f *fakeClock) Advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
	kept := f.waiters[:0]
	for _, w := range f.waiters {
		if w.at.After(f.now) {
			kept = append(kept, w)
			continue
		}
		w.c <- f.now
	}
	f.waiters = kept
}

// blackholeProxy forwards TCP to upstream until Cut; from then on bytes go
// nowhere in either direction and connections stay open, as on a network
// path that died silently (the case where a client without timeouts hangs).
type blackholeProxy struct {
	ln       net.Listener
	upstream string
	cut      atomic.Bool

	mu    sync.Mutex
	conns []net.Conn
}

func startProxy(t *testing.T, upstream string) *blackholeProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy listen: %v", err)
	}
	p := &blackholeProxy{ln: ln, upstream: upstream}
	go p.serve()
	t.Cleanup(p.close)
	return p
}

func (p *blackholeProxy) Addr() string { return p.ln.Addr().String() }

// Cut black-holes every connection, open or future.
func (p *blackholeProxy) Cut() { p.cut.Store(true) }

func (p *blackholeProxy) track(c net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.conns = append(p.conns, c)
}

func (p *blackholeProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
}

func (p *blackholeProxy) serve() {
	for {
		down, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.track(down)
		if p.cut.Load() {
			go p.pipe(io.Discard, down)
			continue
		}
		up, err := net.Dial("tcp", p.upstream)
		if err != nil {
			down.Close()
			continue
		}
		p.track(up)
		go p.pipe(up, down)
		go p.pipe(down, up)
	}
}

// pipe copies src to dst until src ends, dropping everything once cut.
func (p *blackholeProxy) pipe(dst io.Writer, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !p.cut.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			// Pass a close on while the path is alive; a dead path passes nothing.
			if c, ok := dst.(net.Conn); ok && !p.cut.Load() {
				c.Close()
			}
			return
		}
	}
}
