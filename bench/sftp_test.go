package bench

// SFTP store round trips: the latency of one create (a 4 KiB L0 file) and
// one open-and-read of it, and its share of one Delete of them all, through the storage client against OpenSSH's
// sshd on loopback, directly and through toxiproxy adding
// UNDERSTUDY_BENCH_SFTP_LATENCY_MS (default 5) each way, where the number
// of round trips shows. Numbers are reported, not asserted. Run:
//
//	UNDERSTUDY_BENCH=1 UNDERSTUDY_TOOLS_BIN=$PWD/.tools/bin go test -run TestSFTPOpsBench -v ./bench/

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/superfly/ltx"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/understudy-db/understudy/integration/harness"
	"github.com/understudy-db/understudy/internal/storage"
	"github.com/understudy-db/understudy/internal/storage/sftp"
)

func TestSFTPOpsBench(t *testing.T) {
	if os.Getenv("UNDERSTUDY_BENCH") == "" {
		t.Skip("set UNDERSTUDY_BENCH=1 to run benchmarks (make bench)")
	}
	latency := envInt(t, "UNDERSTUDY_BENCH_SFTP_LATENCY_MS", 5)
	s := harness.StartSSHD(t)
	tp := harness.StartToxiproxy(t)
	proxy := tp.NewProxy(t, "sshd", s.Addr)
	for _, stream := range []string{"upstream", "downstream"} {
		if err := proxy.AddToxic(harness.Toxic{Name: "latency-" + stream, Type: "latency", Stream: stream,
			Attributes: map[string]any{"latency": latency}}); err != nil {
			t.Fatal(err)
		}
	}
	known := filepath.Join(t.TempDir(), "known_hosts")
	var lines []string
	for _, k := range s.HostKeys {
		lines = append(lines, knownhosts.Line([]string{s.Addr, proxy.Listen}, k))
	}
	if err := os.WriteFile(known, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	body := bytes.Repeat([]byte("ltx!"), 1024)
	var b strings.Builder
	fmt.Fprintf(&b, "\n| path | create 4 KiB, mean | open + read 4 KiB, mean | delete, per file of one Delete |\n|---|---|---|---|\n")
	for _, tc := range []struct {
		name, addr string
		n          int
	}{
		{"loopback", s.Addr, 200},
		{fmt.Sprintf("toxiproxy, +%d ms each way", latency), proxy.Listen, 20},
	} {
		c, err := sftp.New(sftp.Options{Host: tc.addr, User: s.User, KeyPath: s.KeyPath, KnownHostsPath: known, Path: s.NewDir(t)})
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		if err := c.ProbeCreateOnly(ctx); err != nil { // connects, makes the directories
			t.Fatal(err)
		}
		t0 := time.Now()
		for i := 1; i <= tc.n; i++ {
			if _, err := c.Create(ctx, 0, ltx.TXID(i), ltx.TXID(i), bytes.NewReader(body), benchMetadata(i)); err != nil {
				t.Fatal(err)
			}
		}
		create := time.Since(t0) / time.Duration(tc.n)
		t0 = time.Now()
		for i := 1; i <= tc.n; i++ {
			obj, err := c.Open(ctx, 0, ltx.TXID(i), ltx.TXID(i), 0, -1)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(io.Discard, obj); err != nil {
				t.Fatal(err)
			}
			_ = obj.Close()
		}
		open := time.Since(t0) / time.Duration(tc.n)
		var all []storage.FileInfo
		for i := 1; i <= tc.n; i++ {
			all = append(all, storage.FileInfo{Level: 0, MinTXID: ltx.TXID(i), MaxTXID: ltx.TXID(i)})
		}
		t0 = time.Now()
		if err := c.Delete(ctx, all); err != nil {
			t.Fatal(err)
		}
		del := time.Since(t0) / time.Duration(tc.n)
		_ = c.Close()
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", tc.name, create.Round(10*time.Microsecond), open.Round(10*time.Microsecond), del.Round(10*time.Microsecond))
	}
	t.Log(b.String())
}

// benchMetadata is the metadata of the i-th benchmark object.
func benchMetadata(i int) storage.Metadata {
	return storage.Metadata{Node: "bench", FencingToken: uint64(i), CommitTime: time.Unix(1_800_000_000+int64(i), 0),
		PreApplyChecksum: ltx.ChecksumFlag | ltx.Checksum(i), PostApplyChecksum: ltx.ChecksumFlag | ltx.Checksum(i+1)}
}
