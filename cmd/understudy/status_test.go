package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestPrintStatus pins the status table for each kind of /status document:
// a daemon under a lease shows its node and fencing token (they were only in
// status -json), one without a lease keeps the columns it had.
func TestPrintStatus(t *testing.T) {
	now := time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name, doc string
		want      []string
	}{
		{"primary without a lease",
			`{"dbs":[{"role":"primary","db":"/d/app.db","txid":"0000000000000005","checksum":"aa","fenced":false,
			  "replicas":[{"name":"file","txid":"0000000000000005","last_sync":"2026-12-03T08:59:59Z","pending_txids":0}]}]}`,
			[]string{
				"ROLE       DATABASE   STATE     TXID              CHECKSUM  LAG              LAST CHANGE",
				"primary    /d/app.db  shipping  0000000000000005  aa                         ",
				"  replica  file       ok        0000000000000005            0 TXIDs pending  synced 1s ago",
			}},
		{"primary under a lease",
			`{"dbs":[{"role":"primary","db":"/d/app.db","txid":"0000000000000005","checksum":"aa","node":"host-a","fencing_token":7,
			  "replicas":[{"name":"file","txid":"0000000000000004","last_sync":"2026-12-03T08:59:58Z","pending_txids":1}]}]}`,
			[]string{
				"ROLE       DATABASE   STATE     TXID              CHECKSUM  LAG              LAST CHANGE    NODE    FENCING TOKEN",
				"primary    /d/app.db  shipping  0000000000000005  aa                                        host-a  7",
				"  replica  file       ok        0000000000000004            1 TXIDs pending  synced 2s ago  ",
			}},
		{"primary on a store without create-only writes",
			`{"dbs":[{"role":"primary","db":"/d/app.db","txid":"0000000000000005","checksum":"aa","fenced":false,
			  "replicas":[{"name":"b2","txid":"0000000000000005","last_sync":"2026-12-03T08:59:59Z","pending_txids":0,"fencing":"lock+read-back"}]}]}`,
			[]string{
				"ROLE       DATABASE   STATE     TXID              CHECKSUM  LAG              LAST CHANGE",
				"primary    /d/app.db  shipping  0000000000000005  aa                         ",
				"  replica  b2         ok        0000000000000005            0 TXIDs pending  synced 1s ago, fencing lock+read-back",
			}},
		{"a directory of databases",
			`{"dbs":[],"dirs":[{"dir":"/srv/tenants","databases":10000,"active":1,"parked":9998,"opening":0,"failed":1,"pending_txids":3,
			  "worst":[{"role":"primary","db":"/srv/tenants/b.db","name":"b.db","state":"failed","error":"locked","txid":"0000000000000000","checksum":"0000000000000000"},
			  {"role":"primary","db":"/srv/tenants/a.db","name":"a.db","state":"active","txid":"0000000000000007","checksum":"cc",
			   "replicas":[{"name":"s3","txid":"0000000000000004","last_sync":"2026-12-03T08:59:58Z","pending_txids":3}]}]}]}`,
			[]string{
				"directory /srv/tenants: 10000 databases (1 active, 9998 parked, 0 opening, 1 failed), 3 TXIDs pending",
				"  furthest behind (status -db NAME for one): b.db, a.db",
				"ROLE       DATABASE           STATE     TXID              CHECKSUM          LAG              LAST CHANGE",
				"primary    /srv/tenants/b.db  failed    0000000000000000  0000000000000000                   ",
				"primary    /srv/tenants/a.db  shipping  0000000000000007  cc                                 ",
				"  replica  s3                 ok        0000000000000004                    3 TXIDs pending  synced 2s ago",
				"/srv/tenants/b.db: locked",
			}},
		{"a followed directory",
			`{"dbs":[],"dirs":[{"role":"follower","dir":"/srv/copies","replica":"s3://b/tenants","polling":"each database","databases":1000,"following":998,"starting":1,"stalled":1,
			  "stopped":0,"gone":0,"caught_up":997,"lag_txids":4,"max_lag_seconds":2.5,
			  "worst":[{"role":"follower","db":"/srv/copies/b.db","name":"b.db","state":"stalled","healthy":false,"txid":"0000000000000003","checksum":"dd",
			   "lag_seconds":2.5,"lag_txids":4,"error":"gap"}]}]}`,
			[]string{
				"directory /srv/copies following s3://b/tenants: 1000 databases (998 following, 997 caught up, 1 starting, 1 stalled, 0 stopped, 0 gone), 4 TXIDs behind, worst lag 2.5s, polling each database",
				"  furthest behind (status -db NAME for one): b.db",
				"ROLE      DATABASE          STATE                TXID              CHECKSUM  LAG            LAST CHANGE",
				"follower  /srv/copies/b.db  stalled (unhealthy)  0000000000000003  dd        2.5s, 4 TXIDs  no change applied since start",
				"/srv/copies/b.db: gap",
			}},
		{"follower under a lease, deposed primary",
			`{"dbs":[{"role":"follower","db":"/d/app.db","txid":"0000000000000009","checksum":"bb","node":"host-b","fencing_token":12,
			  "state":"following","healthy":true,"lag_seconds":0.5,"lag_txids":1,"diverged_saved_to":"/d/app.db.diverged-x"}]}`,
			[]string{
				"ROLE      DATABASE   STATE      TXID              CHECKSUM  LAG            LAST CHANGE                    NODE    FENCING TOKEN",
				"follower  /d/app.db  following  0000000000000009  bb        0.5s, 1 TXIDs  no change applied since start  host-b  12",
				"/d/app.db: the transactions this node had not shipped when it was deposed are saved in /d/app.db.diverged-x",
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var doc statusView
			if err := json.Unmarshal([]byte(tc.doc), &doc); err != nil {
				t.Fatal(err)
			}
			var b strings.Builder
			if err := printStatus(&b, doc, now); err != nil {
				t.Fatal(err)
			}
			if got, want := b.String(), strings.Join(tc.want, "\n")+"\n"; got != want {
				t.Errorf("table:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}
