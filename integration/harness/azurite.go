package harness

import (
	"context"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
)

// Azurite's well-known development account (the same in every Azurite: it
// is no secret, but tests still check that it never reaches a message).
const (
	AzuriteAccount = "devstoreaccount1"
	AzuriteKey     = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

// AzuriteServer is a running Azurite blob service, an Azure Blob Storage
// emulator, keeping its data in a temp directory.
type AzuriteServer struct {
	Endpoint string // http://127.0.0.1:PORT/devstoreaccount1, the account's service URL
	Addr     string // 127.0.0.1:PORT
	Account  string
	Key      string
}

// StartAzurite starts Azurite's blob service on a free loopback port and
// stops it at test end.
func StartAzurite(t testing.TB) *AzuriteServer {
	t.Helper()
	bin := Tool(t, "azurite-blob")
	port := freePorts(t, 1)[0]
	s := &AzuriteServer{Addr: "127.0.0.1:" + itoa(port), Account: AzuriteAccount, Key: AzuriteKey}
	s.Endpoint = "http://" + s.Addr + "/" + s.Account
	// --skipApiVersionCheck: the SDK speaks a newer API version than
	// Azurite announces. --disableTelemetry: nothing leaves the machine.
	p := start(t, "azurite", bin,
		"--blobHost", "127.0.0.1", "--blobPort", itoa(port),
		"--location", t.TempDir(), "--skipApiVersionCheck", "--disableTelemetry", "--silent")
	p.waitReady(t, func(ctx context.Context) error {
		// Any HTTP answer (an unsigned request is refused) means it serves.
		_, _, err := httpGet(ctx, s.Endpoint+"?comp=list")
		return err
	})
	return s
}

// CreateContainer makes a container through the blob API and returns its
// name.
func (s *AzuriteServer) CreateContainer(t testing.TB, name string) string {
	t.Helper()
	cred, err := azblob.NewSharedKeyCredential(s.Account, s.Key)
	if err == nil {
		var c *azblob.Client
		if c, err = azblob.NewClientWithSharedKeyCredential(s.Endpoint+"/", cred, nil); err == nil {
			_, err = c.CreateContainer(context.Background(), name, nil)
		}
	}
	if err != nil {
		t.Fatalf("harness: create azurite container %s: %v", name, err)
	}
	return name
}

// NewContainer creates a container with a fresh name derived from the test
// name (container names follow the rules of S3 bucket names).
func (s *AzuriteServer) NewContainer(t testing.TB) string {
	t.Helper()
	return s.CreateContainer(t, BucketName(t.Name(), bucketSeq.Add(1)))
}
