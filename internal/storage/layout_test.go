package storage

import (
	"strings"
	"testing"
	"time"

	"github.com/superfly/ltx"
)

func TestParseFilename(t *testing.T) {
	for _, tc := range []struct {
		name     string
		min, max ltx.TXID
		ok       bool
	}{
		{"00000000000000a1-00000000000000a1.ltx", 0xa1, 0xa1, true},
		{FormatFilename(1, 0xffffffffffffffff), 1, 0xffffffffffffffff, true},
		{"00000000000000a1-00000000000000a1.ltx.tmp", 0, 0, false},
		{"00000000000000A1-00000000000000A1.ltx", 0, 0, false},
		{"a1-a1.ltx", 0, 0, false},
		{"README", 0, 0, false},
	} {
		min, max, ok := ParseFilename(tc.name)
		if min != tc.min || max != tc.max || ok != tc.ok {
			t.Errorf("ParseFilename(%q) = %v, %v, %v; want %v, %v, %v", tc.name, min, max, ok, tc.min, tc.max, tc.ok)
		}
	}
}

func TestMetadataFields(t *testing.T) {
	md := Metadata{
		Node: "n1", FencingToken: 1<<64 - 1,
		CommitTime:        time.Date(2026, 1, 2, 3, 4, 5, 6, time.FixedZone("x", 3600)),
		PreApplyChecksum:  0,
		PostApplyChecksum: ltx.ChecksumFlag | 0xabc,
	}
	f := md.Fields()
	want := map[string]string{
		MetaNode: "n1", MetaFencingToken: "18446744073709551615",
		MetaCommitTime:        "2026-01-02T02:04:05.000000006Z",
		MetaPreApplyChecksum:  "0000000000000000",
		MetaPostApplyChecksum: "8000000000000abc",
	}
	for k, v := range want {
		if f[k] != v {
			t.Errorf("field %s = %q, want %q", k, f[k], v)
		}
	}
	get := func(m map[string]string) func(string) (string, bool) {
		return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
	}
	back, err := MetadataFromFields(get(f))
	if err != nil || back.Node != md.Node || back.FencingToken != md.FencingToken || !back.CommitTime.Equal(md.CommitTime) ||
		back.PreApplyChecksum != md.PreApplyChecksum || back.PostApplyChecksum != md.PostApplyChecksum {
		t.Fatalf("round trip: %+v, %v", back, err)
	}
	if back, err := MetadataFromFields(get(nil)); back != nil || err != nil {
		t.Fatalf("no fields: %+v, %v; want nil, nil (another tool's file)", back, err)
	}
	for _, tc := range []struct {
		field, value, wantErr string
	}{
		{MetaFencingToken, "-1", "metadata fencing-token"},
		{MetaCommitTime, "yesterday", "metadata commit-time"},
		{MetaPreApplyChecksum, "abc", "metadata pre-apply-checksum"},
		{MetaPostApplyChecksum, "zzzzzzzzzzzzzzzz", "metadata post-apply-checksum"},
		{MetaNode, "\x00delete", "incomplete understudy metadata: missing [node]"},
	} {
		m := md.Fields()
		if tc.value == "\x00delete" {
			delete(m, tc.field)
		} else {
			m[tc.field] = tc.value
		}
		if _, err := MetadataFromFields(get(m)); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%s=%q: err = %v, want %q", tc.field, tc.value, err, tc.wantErr)
		}
	}
}

func TestSliceIterator(t *testing.T) {
	items := []FileInfo{{MinTXID: 3}, {MinTXID: 1, MaxTXID: 2}, {MinTXID: 1, MaxTXID: 1}}
	SortFileInfos(items)
	it := NewSliceIterator(items)
	var got []string
	for it.Next() {
		got = append(got, it.Item().MinTXID.String()[15:]+"-"+it.Item().MaxTXID.String()[15:])
	}
	if strings.Join(got, " ") != "1-1 1-2 3-0" || it.Next() || it.Err() != nil {
		t.Fatalf("iterated %v", got)
	}
}
