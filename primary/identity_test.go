package primary

import (
	"errors"
	"strings"
	"testing"

	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/internal/storage"
)

func TestDecideIdentity(t *testing.T) {
	const a, b, fresh = "aaaa", "bbbb", "new1"
	mint := func() string { return fresh }
	store := func(id string, sum ltx.Checksum) storeIdentity {
		return storeIdentity{Replica: "file", Location: "file:///r", TXID: 7, Checksum: sum, HasSum: true, ID: id, Path: "/srv/a.db", Node: "n1"}
	}
	empty := storeIdentity{Replica: "file"}
	for _, tc := range []struct {
		name    string
		in      identityInput
		wantID  string
		adopted bool
		wantErr string // substring; "" = no error
		info    string // substring of an info line
		warn    string // substring of a warning
	}{
		{name: "empty store, nothing recorded: a new history", in: identityInput{Stores: []storeIdentity{empty}}, wantID: fresh},
		{name: "empty store keeps the recorded identity", in: identityInput{Local: b, Stores: []storeIdentity{empty}}, wantID: b},
		{name: "own replica", in: identityInput{Local: a, Stores: []storeIdentity{store(a, 5)}, DBChecksum: 9}, wantID: a},
		{name: "another database's replica is refused", in: identityInput{Path: "/srv/b.db", Local: b, Stores: []storeIdentity{store(a, 5)}},
			wantErr: "replica file (file:///r) holds the history of another database: /srv/a.db on node n1 (database id aaaa), not /srv/b.db (database id bbbb)"},
		{name: "no identity recorded and not at the replica's position: refused",
			in:      identityInput{Path: "/srv/b.db", ShadowDir: "/srv/.b.db-understudy", Stores: []storeIdentity{store(a, 5)}, DBChecksum: 6},
			wantErr: "not /srv/b.db (no database identity recorded in /srv/.b.db-understudy)"},
		{name: "no identity recorded, exactly at the replica's newest position: continues it",
			in: identityInput{Stores: []storeIdentity{store(a, 5)}, DBChecksum: 5}, wantID: a, info: "continuing the history of /srv/a.db"},
		{name: "at the position but no checksum in the store: refused",
			in: identityInput{Stores: []storeIdentity{{Replica: "file", TXID: 3, ID: a}}}, wantErr: "holds the history of another database"},
		{name: "adopt with a recorded identity", in: identityInput{Local: b, Stores: []storeIdentity{store(a, 5)}, Adopt: true},
			wantID: b, adopted: true, warn: "adopting replica file (file:///r)"},
		{name: "adopt with nothing recorded mints", in: identityInput{Stores: []storeIdentity{store(a, 5)}, DBChecksum: 6, Adopt: true},
			wantID: fresh, adopted: true, warn: "held the history of /srv/a.db"},
		{name: "adopt of its own replica adopts nothing", in: identityInput{Local: a, Stores: []storeIdentity{store(a, 5)}, Adopt: true}, wantID: a},
		{name: "replica without identity (Litestream) is continued and said so",
			in: identityInput{Local: b, Stores: []storeIdentity{{Replica: "file", TXID: 4}}}, wantID: b, info: "has no database identity"},
		{name: "replicas of two databases", in: identityInput{Local: a, Stores: []storeIdentity{store(a, 5), {Replica: "s3", TXID: 2, ID: b}}},
			wantErr: "replicas file (file:///r) and s3 hold the histories of two different databases"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dec, err := decideIdentity(tc.in, mint)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, ErrForeignReplica) {
					t.Fatalf("err = %v, want ErrForeignReplica containing %q", err, tc.wantErr)
				}
				if !strings.Contains(err.Error(), "-adopt-replica") {
					t.Fatalf("err = %v: does not name the override", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if dec.ID != tc.wantID || dec.Adopted != tc.adopted {
				t.Fatalf("id %q adopted %v, want %q %v", dec.ID, dec.Adopted, tc.wantID, tc.adopted)
			}
			if tc.info != "" && !strings.Contains(strings.Join(dec.Info, "\n"), tc.info) {
				t.Fatalf("info %q lacks %q", dec.Info, tc.info)
			}
			if tc.warn != "" && !strings.Contains(strings.Join(dec.Warn, "\n"), tc.warn) {
				t.Fatalf("warnings %q lack %q", dec.Warn, tc.warn)
			}
		})
	}
}

func TestFencedBy(t *testing.T) {
	d := &DB{opts: Options{Path: "/srv/b.db"}, dbID: "bbbb"}
	for _, tc := range []struct {
		md   *storage.Metadata
		want string
	}{
		{nil, "another node is primary"},
		{&storage.Metadata{Node: "n2"}, "another node is primary (node n2)"},
		{&storage.Metadata{Node: "n2", DatabaseID: "bbbb"}, "another node is primary (node n2)"},
		{&storage.Metadata{Node: "n1", DatabaseID: "aaaa", DatabasePath: "/srv/a.db"},
			"another database writes to this replica: /srv/a.db on node n1 (database id aaaa), not /srv/b.db (database id bbbb)"},
	} {
		if got := d.fencedBy(tc.md); !strings.HasPrefix(got, tc.want) {
			t.Errorf("fencedBy(%+v) = %q, want prefix %q", tc.md, got, tc.want)
		}
	}
}
