package primary

import (
	"bytes"
	"testing"
	"time"

	"github.com/understudy-db/understudy/internal/storage"
)

func TestOwnedBy(t *testing.T) {
	ct := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	md := storage.Metadata{Node: "a", FencingToken: 7, CommitTime: ct, PreApplyChecksum: 0x11, PostApplyChecksum: 0x22}
	trailer := bytes.Repeat([]byte{0xab}, 16)
	other := bytes.Repeat([]byte{0xcd}, 16)
	want := upload{Size: 4096, Trailer: trailer, MD: md}
	with := func(f func(*storage.Metadata)) *storage.Metadata { m := md; f(&m); return &m }
	tests := []struct {
		name string
		want upload
		got  found
		out  ownership
	}{
		{"same bytes, same writer", want, found{Size: 4096, Trailer: trailer, MD: &md}, ownedByUs},
		{"same bytes, other commit time in metadata (a restart re-sent it)", want,
			found{Size: 4096, Trailer: trailer, MD: with(func(m *storage.Metadata) { m.CommitTime = ct.Add(time.Second) })}, ownedByUs},
		{"same change, other bytes (a compaction redone)", want, found{Size: 4000, Trailer: other, MD: &md}, ownedByUs},
		{"no metadata (another tool)", want, found{Size: 4096, Trailer: trailer}, foreignWriter},
		{"another node", want, found{Size: 4096, Trailer: trailer, MD: with(func(m *storage.Metadata) { m.Node = "b" })}, foreignWriter},
		{"another database history", want, found{Size: 4096, Trailer: trailer, MD: with(func(m *storage.Metadata) { m.DatabaseID = "other" })}, foreignWriter},
		{"another fencing token", want, found{Size: 4096, Trailer: trailer, MD: with(func(m *storage.Metadata) { m.FencingToken = 8 })}, foreignWriter},
		{"same writer, other bytes and other change", want,
			found{Size: 4096, Trailer: other, MD: with(func(m *storage.Metadata) { m.PostApplyChecksum = 0x33 })}, foreignSameWriter},
		{"same writer, same trailer but other size", want,
			found{Size: 4097, Trailer: trailer, MD: with(func(m *storage.Metadata) { m.PreApplyChecksum = 0x99 })}, foreignSameWriter},
		{"same writer, other pre-apply checksum and bytes", want,
			found{Size: 4096, Trailer: other, MD: with(func(m *storage.Metadata) { m.PreApplyChecksum = 0x99 })}, foreignSameWriter},
		{"no checksums to compare and other bytes", upload{Size: 4096, Trailer: trailer, MD: storage.Metadata{Node: "a", FencingToken: 7}},
			found{Size: 4096, Trailer: other, MD: &storage.Metadata{Node: "a", FencingToken: 7}}, foreignSameWriter},
		{"short object read back", want, found{Size: 10, Trailer: trailer[:10], MD: with(func(m *storage.Metadata) { m.PostApplyChecksum = 0x33 })}, foreignSameWriter},
		{"our trailer unknown", upload{Size: 4096, MD: md},
			found{Size: 4096, MD: with(func(m *storage.Metadata) { m.PostApplyChecksum = 0x33 })}, foreignSameWriter},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ownedBy(tt.want, tt.got); got != tt.out {
				t.Errorf("ownedBy = %d (%s), want %d", got, got.describe(tt.got), tt.out)
			}
		})
	}
}

func TestSupersedes(t *testing.T) {
	ours := storage.Metadata{Node: "b", FencingToken: 5, DatabaseID: "db1"}
	for _, c := range []struct {
		name   string
		theirs *storage.Metadata
		want   bool
	}{
		{"deposed writer of this history", &storage.Metadata{Node: "a", FencingToken: 4, DatabaseID: "db1"}, true},
		{"much older writer", &storage.Metadata{Node: "a", FencingToken: 1, DatabaseID: "db1"}, true},
		{"same token (a rival with our lease, or no lease)", &storage.Metadata{Node: "a", FencingToken: 5, DatabaseID: "db1"}, false},
		{"newer writer: we are the deposed one", &storage.Metadata{Node: "c", FencingToken: 6, DatabaseID: "db1"}, false},
		{"another database", &storage.Metadata{Node: "a", FencingToken: 4, DatabaseID: "db2"}, false},
		{"no identity on the object", &storage.Metadata{Node: "a", FencingToken: 4}, false},
		{"no metadata (another tool)", nil, false},
	} {
		if got := supersedes(ours, c.theirs); got != c.want {
			t.Errorf("%s: supersedes = %v, want %v", c.name, got, c.want)
		}
	}
	if supersedes(storage.Metadata{FencingToken: 5}, &storage.Metadata{FencingToken: 4}) {
		t.Error("a history without identity may not replace objects")
	}
}
