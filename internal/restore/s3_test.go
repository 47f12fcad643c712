package restore

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/integration/harness"
	"github.com/understudy-db/understudy/internal/storage"
	"github.com/understudy-db/understudy/internal/storage/objstore"
	"github.com/understudy-db/understudy/internal/storage/s3"
)

// copyStore copies every object of from, with its metadata, into to.
func copyStore(t *testing.T, from, to storage.Client) {
	t.Helper()
	ctx := context.Background()
	for _, f := range mustList(t, from) {
		obj, err := from.Open(ctx, f.Level, f.MinTXID, f.MaxTXID, 0, -1)
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(obj)
		obj.Close()
		if err != nil {
			t.Fatal(err)
		}
		if obj.Info.Metadata == nil {
			t.Fatalf("%s has no metadata to copy", FileName(f))
		}
		if _, err := to.Create(ctx, f.Level, f.MinTXID, f.MaxTXID, bytes.NewReader(data), *obj.Info.Metadata); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRestoreFromS3 restores every TXID of a history from a real
// S3-compatible server (versitygw), and fails cleanly on a foreign object.
func TestRestoreFromS3(t *testing.T) {
	if testing.Short() {
		t.Skip("starts versitygw")
	}
	dir := t.TempDir()
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "config"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "credentials"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	srv := harness.StartVersityGW(t)
	client, err := s3.New(context.Background(), s3.Options{
		Bucket: srv.NewBucket(t), Path: "dbs/app.db", Region: srv.Region, Endpoint: srv.Endpoint, ForcePathStyle: true,
		AccessKeyID: srv.AccessKey, SecretAccessKey: srv.SecretKey, Timing: objstore.Timing{MaxBackoff: 200 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	s := buildHistory(t)
	copyStore(t, s.client, client)

	for txid := ltx.TXID(1); txid <= s.txid; txid++ {
		out, res, err := restoreTo(t, client, Target{TXID: txid}, nil)
		if err != nil {
			t.Fatalf("restore TXID %s from S3: %v", txid, err)
		}
		assertRestored(t, s, out, res, txid)
	}
	out, res, err := restoreTo(t, client, Target{Timestamp: s.states[13].time}, nil)
	if err != nil {
		t.Fatal(err)
	}
	assertRestored(t, s, out, res, 13)

	garbage := strings.Repeat("not an LTX file ", 10)
	if _, err := client.Create(context.Background(), 0, s.txid+1, s.txid+1, strings.NewReader(garbage), storage.Metadata{CommitTime: time.Now()}); err != nil {
		t.Fatal(err)
	}
	out, _, err = restoreTo(t, client, Target{}, nil)
	if !errors.Is(err, ErrForeignObject) || !strings.Contains(err.Error(), "L0 0000000000000013-0000000000000013: foreign object: not an LTX file") {
		t.Fatalf("err = %v", err)
	}
	assertNothingLeft(t, out)
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("output exists after a failed restore: %v", err)
	}
}
