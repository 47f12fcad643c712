package primary

import "testing"

func TestDecideResume(t *testing.T) {
	const a, b, c = 0x8000000000000aaa, 0x8000000000000bbb, 0x8000000000000ccc
	for _, tc := range []struct {
		name     string
		in       resumeInput
		action   resumeAction
		txid     uint64
		useLocal bool
	}{
		{"empty store", resumeInput{DBChecksum: a}, resumeFull, 0, false},
		{"empty store ignores a stale local position", resumeInput{HaveLocal: true, LocalTXID: 9, LocalChecksum: a, DBChecksum: a}, resumeFull, 0, false},
		{"at the store's position", resumeInput{StoreTXID: 5, StoreChecksum: a, StoreHasSum: true, DBChecksum: a}, resumeContinue, 5, false},
		{"moved on, no local position", resumeInput{StoreTXID: 5, StoreChecksum: a, StoreHasSum: true, DBChecksum: b}, resumeFull, 5, false},
		{"moved on, WAL continues", resumeInput{StoreTXID: 5, StoreChecksum: a, StoreHasSum: true,
			HaveLocal: true, LocalTXID: 5, LocalChecksum: a, WALContinues: true, DBChecksum: b}, resumeDelta, 5, true},
		{"moved on, WAL restarted", resumeInput{StoreTXID: 5, StoreChecksum: a, StoreHasSum: true,
			HaveLocal: true, LocalTXID: 5, LocalChecksum: a, DBChecksum: b}, resumeFull, 5, true},
		{"local ahead of every store", resumeInput{StoreTXID: 5, StoreChecksum: a, StoreHasSum: true,
			HaveLocal: true, LocalTXID: 7, LocalChecksum: c, DBChecksum: c}, resumeContinue, 7, true},
		{"store ahead of local (another writer or lost shadow dir)", resumeInput{StoreTXID: 9, StoreChecksum: a, StoreHasSum: true,
			HaveLocal: true, LocalTXID: 7, LocalChecksum: c, WALContinues: true, DBChecksum: b}, resumeFull, 9, false},
		{"same TXID, different checksum: the store wins", resumeInput{StoreTXID: 7, StoreChecksum: a, StoreHasSum: true,
			HaveLocal: true, LocalTXID: 7, LocalChecksum: c, WALContinues: true, DBChecksum: b}, resumeFull, 7, false},
		{"newest file without metadata", resumeInput{StoreTXID: 3, DBChecksum: a}, resumeFull, 3, false},
		{"power loss rolled back a shipped transaction", resumeInput{StoreTXID: 5, StoreChecksum: a, StoreHasSum: true,
			HaveLocal: true, LocalTXID: 5, LocalChecksum: a, WALContinues: false, DBChecksum: c}, resumeFull, 5, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := decideResume(tc.in)
			if d.Action != tc.action || uint64(d.TXID) != tc.txid || d.UseLocal != tc.useLocal || d.Reason == "" {
				t.Errorf("decideResume = %+v, want action %v txid %d useLocal %v", d, tc.action, tc.txid, tc.useLocal)
			}
		})
	}
}
