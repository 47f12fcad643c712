package abs

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/understudy-db/understudy/integration/harness"
	"github.com/understudy-db/understudy/internal/storage"
	"github.com/understudy-db/understudy/internal/storage/objstore"
	"github.com/understudy-db/understudy/internal/storage/storagetest"
)

func serverOptions(s *harness.AzuriteServer, container, path string) Options {
	return Options{
		AccountName: s.Account, AccountKey: s.Key, Container: container, Path: path, Endpoint: s.Endpoint,
		Timing: objstore.Timing{MaxBackoff: 200 * time.Millisecond},
	}
}

func mustNew(t *testing.T, opts Options) *Client {
	t.Helper()
	c, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestConformance runs the suite against a real Azurite, each case in its
// own container under a nested path.
func TestConformance(t *testing.T) {
	s := harness.StartAzurite(t)
	storagetest.Run(t, func(t *testing.T) storage.Client {
		return mustNew(t, serverOptions(s, s.NewContainer(t), "dbs/app.db"))
	})
}

// TestSmallPages forces many list pages and seeks inside them.
func TestSmallPages(t *testing.T) {
	s := harness.StartAzurite(t)
	opts := serverOptions(s, s.NewContainer(t), "")
	opts.ListPageSize = 7
	storagetest.CheckPagedListing(t, mustNew(t, opts), 30)
}

func TestMissingContainer(t *testing.T) {
	s := harness.StartAzurite(t)
	storagetest.RunFailingStore(t, mustNew(t, serverOptions(s, "no-such-container", "db")),
		[]string{`container "no-such-container" does not exist in account devstoreaccount1 at ` + s.Endpoint, "create it"},
		[]string{s.Key})
}

// TestWrongKey: a key the store refuses fails every operation with a
// message naming where the key came from, never the key.
func TestWrongKey(t *testing.T) {
	s := harness.StartAzurite(t)
	const wrong = "d3JvbmctYWNjb3VudC1rZXktd3Jvbmcta2V5LXdyb25nLWtleQ=="
	opts := serverOptions(s, s.NewContainer(t), "db")
	opts.AccountKey = wrong
	storagetest.RunFailingStore(t, mustNew(t, opts),
		[]string{"refused the credentials", "check the replica's account-key for account devstoreaccount1"},
		[]string{wrong, s.Key})
}

// TestKeyFromEnvironment: without account-key, LITESTREAM_AZURE_ACCOUNT_KEY
// is used; with neither, New fails saying what to set.
func TestKeyFromEnvironment(t *testing.T) {
	s := harness.StartAzurite(t)
	opts := serverOptions(s, s.NewContainer(t), "db")
	opts.AccountKey = ""
	t.Setenv(AccountKeyEnv, s.Key)
	storagetest.MustCreate(t, mustNew(t, opts), 0, 1, 1, []byte("x"), storagetest.TestMetadata(1))

	t.Setenv(AccountKeyEnv, "")
	_, err := New(opts)
	if !errors.Is(err, storage.ErrCredentials) || err.Error() != "abs replica: account devstoreaccount1: no account key: set the replica's account-key or LITESTREAM_AZURE_ACCOUNT_KEY to the storage account's access key" {
		t.Fatalf("no key: %v", err)
	}
	opts.AccountKey = "not base64 s3cr3t!"
	_, err = New(opts)
	storagetest.CheckError(t, "a key that is not base64", err, []string{"the replica's account-key is not an account key"}, []string{"s3cr3t"})
}

// TestUnreachableEndpoint: a dead endpoint fails within the retry budget
// with a message pointing at it, and never looks like a missing key.
func TestUnreachableEndpoint(t *testing.T) {
	opts := Options{AccountName: "a", AccountKey: harness.AzuriteKey, Container: "c",
		Endpoint: fmt.Sprintf("http://127.0.0.1:%d/a", harness.FreePort(t)), Timing: objstore.Timing{MaxAttempts: 2, MaxBackoff: 10 * time.Millisecond}}
	_, err := mustNew(t, opts).Open(context.Background(), 0, 1, 1, 0, -1)
	storagetest.CheckError(t, "open", err, []string{"cannot reach " + opts.Endpoint, "check the endpoint"}, []string{harness.AzuriteKey})
	if errors.Is(err, storage.ErrNotFound) {
		t.Fatal("an unreachable store must not look like a missing key")
	}
}

func TestNewValidates(t *testing.T) {
	for _, tc := range []struct {
		opts Options
		want string
	}{
		{Options{Container: "c", AccountKey: "k"}, "abs replica: account-name is empty; set the storage account's name (account-name, or abs://ACCOUNT@CONTAINER/PATH)"},
		{Options{AccountName: "a", AccountKey: "k"}, "abs replica: account a: the container is empty; set the replica's bucket to the container's name"},
	} {
		if _, err := New(tc.opts); err == nil || err.Error() != tc.want {
			t.Errorf("New(%+v) = %v, want %q", tc.opts, err, tc.want)
		}
	}
	c := mustNew(t, Options{AccountName: "acct", AccountKey: harness.AzuriteKey, Container: "c", Path: "/a/b/"})
	if c.opts.Endpoint != "https://acct.blob.core.windows.net" || c.Key(10, 1, 2) != "a/b/000a/0000000000000001-0000000000000002.ltx" {
		t.Fatalf("endpoint %q key %q", c.opts.Endpoint, c.Key(10, 1, 2))
	}
	if metaName("pre-apply-checksum") != "understudy_pre_apply_checksum" {
		t.Fatalf("metadata name %q is not a C# identifier", metaName("pre-apply-checksum"))
	}
}

// TestKeyReader: keys outside the LTX layout (Litestream 0.3's tree) are
// listed and read under the replica's path.
func TestKeyReader(t *testing.T) {
	s := harness.StartAzurite(t)
	c := mustNew(t, serverOptions(s, s.NewContainer(t), "db"))
	storagetest.CheckKeyReader(t, c)
}

// TestLostAnswerRetried: a Put Blob whose answer is lost (it landed) is
// retried, and the retry's refusal is recognised as our own blob.
func TestLostAnswerRetried(t *testing.T) {
	s := harness.StartAzurite(t)
	var puts atomic.Int32
	front := harness.FaultyFront(t, s.Endpoint, func(*http.Request) int { return 0 }, func(r *http.Request) int {
		if r.Method == http.MethodPut && r.URL.Query().Get("restype") == "" && puts.Add(1) == 1 {
			return http.StatusServiceUnavailable
		}
		return 0
	})
	fs := *s
	fs.Endpoint = front + "/" + s.Account
	c := mustNew(t, serverOptions(&fs, s.NewContainer(t), "db"))
	storagetest.CheckLostAnswerRetried(t, c, func() int { return int(puts.Load()) })
}

// TestCallDeadline: a store that never answers fails calls at their
// deadline rather than hanging (toxiproxy's timeout toxic holds the data).
func TestCallDeadline(t *testing.T) {
	s := harness.StartAzurite(t)
	tp := harness.StartToxiproxy(t)
	p := tp.NewProxy(t, "abs", s.Addr)
	fs := *s
	fs.Endpoint = "http://" + p.Listen + "/" + s.Account
	opts := serverOptions(&fs, s.NewContainer(t), "db")
	opts.CallTimeout, opts.MaxAttempts = 500*time.Millisecond, 2
	hang := harness.Toxic{Name: "hang", Type: "timeout", Stream: "upstream", Attributes: map[string]any{"timeout": 0}}
	storagetest.CheckHangingStore(t, mustNew(t, opts),
		func() { must(t, p.AddToxic(hang)) }, func() { must(t, p.RemoveToxic("hang")) },
		[]string{"abs://devstoreaccount1@" + opts.Container + "/db/0000/", "check the endpoint"})
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestSub: the clients of a directory entry's databases, from one client
// of the prefix, each write under prefix/rel and list only their own.
func TestSub(t *testing.T) {
	s := harness.StartAzurite(t)
	ctr := s.NewContainer(t)
	storagetest.CheckSub(t, mustNew(t, serverOptions(s, ctr, "tenants")), func(rel string) storage.Client {
		return mustNew(t, serverOptions(s, ctr, "tenants/"+rel))
	})
}
