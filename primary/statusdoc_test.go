package primary

import (
	"encoding/json"
	"testing"
	"time"
)

func TestStatusDocument(t *testing.T) {
	synced := time.Date(2026, 11, 25, 1, 2, 3, 0, time.FixedZone("x", 3600))
	st := Status{Path: "/db", TXID: 7, Checksum: 0x8000000000000abc, Fenced: true, Replicas: []ReplicaStatus{
		{Name: "s3", TXID: 6, Checksum: 0x8000000000000def, LastSync: synced, Pending: 1, Fencing: "lock+read-back"},
		{Name: "file", TXID: 7, LastError: "disk full"},
	}}
	b, err := json.Marshal(st.Document())
	if err != nil {
		t.Fatal(err)
	}
	want := `{"role":"primary","db":"/db","txid":"0000000000000007","checksum":"8000000000000abc","fenced":true,"replicas":[` +
		`{"name":"s3","txid":"0000000000000006","checksum":"8000000000000def","last_sync":"2026-11-25T00:02:03Z","pending_txids":1,"fencing":"lock+read-back"},` +
		`{"name":"file","txid":"0000000000000007","checksum":"0000000000000000","last_error":"disk full","pending_txids":0}]}`
	if string(b) != want {
		t.Errorf("document\n got %s\nwant %s", b, want)
	}
}
