package primary

import (
	"fmt"
	"testing"
	"time"

	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/internal/storage"
)

func TestCheckpointMode(t *testing.T) {
	for _, tc := range []struct {
		frames, last int64
		want         string
	}{
		{0, 0, ckptNone},
		{999, 0, ckptNone},
		{1000, 0, ckptPassive},
		{1500, 1500, ckptNone}, // already checkpointed at this size
		{1600, 1500, ckptNone}, // not min pages since the last one
		{2500, 1500, ckptPassive},
		{10000, 9000, ckptRestart},
		{12000, 12000, ckptNone}, // restarted already, WAL not restarted by a writer yet
		{12000, 11000, ckptRestart},
	} {
		if got := checkpointMode(tc.frames, tc.last, 1000, 10000); got != tc.want {
			t.Errorf("checkpointMode(%d, %d) = %q, want %q", tc.frames, tc.last, got, tc.want)
		}
	}
}

func fi(level int, min, max ltx.TXID, created time.Time) storage.FileInfo {
	return storage.FileInfo{Level: level, MinTXID: min, MaxTXID: max, CreatedAt: created}
}

func names(fs []storage.FileInfo) string {
	s := ""
	for _, f := range fs {
		s += fmt.Sprintf("L%d:%d-%d ", f.Level, f.MinTXID, f.MaxTXID)
	}
	return s
}

func TestUnshippedFrames(t *testing.T) {
	for _, tc := range []struct {
		name         string
		log, shipped int64
		restart      bool // the shipper saw the end of the generation
		want         int64
	}{
		{"caught up", 12000, 12000, false, 0},
		{"behind", 12500, 12000, false, 500},
		{"nothing shipped yet", 700, 0, false, 700},
		// After a quiesced restart the file keeps its old size; a writer
		// that restarted it has written only log frames of the new one.
		{"restarted, a few commits", 3, 12000, true, 3},
		{"restarted, busy", 4000, 12000, true, 4000},
		{"restart not yet taken by a writer", 12000, 12000, true, 0},
		// The new generation grew past the old one's length before the
		// next step: every frame of it is unshipped, not the difference.
		{"restarted, past the old length", 21635, 14682, true, 21635},
	} {
		if got := unshippedFrames(tc.log, tc.shipped, tc.restart); got != tc.want {
			t.Errorf("%s: unshippedFrames(%d, %d, %v) = %d, want %d", tc.name, tc.log, tc.shipped, tc.restart, got, tc.want)
		}
	}
}

func TestPlanCompaction(t *testing.T) {
	var z time.Time
	for _, tc := range []struct {
		name     string
		src, dst []storage.FileInfo
		upto     ltx.TXID
		want     string
	}{
		{"nothing", nil, nil, 10, ""},
		{"first compaction", []storage.FileInfo{fi(0, 1, 1, z), fi(0, 2, 2, z), fi(0, 3, 3, z)}, nil, 10, "L0:1-1 L0:2-2 L0:3-3 "},
		{"only after dst", []storage.FileInfo{fi(0, 1, 1, z), fi(0, 2, 2, z), fi(0, 3, 3, z)}, []storage.FileInfo{fi(1, 1, 2, z)}, 10, "L0:3-3 "},
		{"not past the replica's position", []storage.FileInfo{fi(0, 3, 3, z), fi(0, 4, 4, z)}, []storage.FileInfo{fi(1, 1, 2, z)}, 3, "L0:3-3 "},
		{"gap before the run allowed", []storage.FileInfo{fi(0, 8, 8, z), fi(0, 9, 9, z)}, []storage.FileInfo{fi(1, 1, 2, z)}, 10, "L0:8-8 L0:9-9 "},
		{"gap inside ends the run", []storage.FileInfo{fi(0, 3, 3, z), fi(0, 5, 5, z)}, []storage.FileInfo{fi(1, 1, 2, z)}, 10, "L0:3-3 "},
		{"higher level", []storage.FileInfo{fi(1, 1, 4, z), fi(1, 5, 9, z)}, []storage.FileInfo{fi(2, 1, 4, z)}, ^ltx.TXID(0), "L1:5-9 "},
	} {
		if got := names(planCompaction(tc.src, tc.dst, tc.upto)); got != tc.want {
			t.Errorf("%s: planCompaction = %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestPlanRetention(t *testing.T) {
	now := time.Date(2026, 1, 2, 12, 0, 0, 0, time.UTC)
	h := func(n int) time.Time { return now.Add(-time.Duration(n) * time.Hour) }
	for _, tc := range []struct {
		name   string
		levels map[int][]storage.FileInfo
		l1Max  ltx.TXID
		want   string
	}{
		{
			name: "keeps the newest snapshot older than retention and everything after it",
			levels: map[int][]storage.FileInfo{
				9: {fi(9, 1, 10, h(50)), fi(9, 1, 20, h(30)), fi(9, 1, 30, h(5))},
				1: {fi(1, 1, 15, h(40)), fi(1, 16, 25, h(20)), fi(1, 26, 35, h(1))},
				0: {fi(0, 19, 19, h(30)), fi(0, 20, 20, h(30)), fi(0, 21, 21, h(25))},
			},
			want: "L9:1-10 L1:1-15 L0:19-19 L0:20-20 ",
		},
		{
			name: "all snapshots young: keep the oldest and everything",
			levels: map[int][]storage.FileInfo{
				9: {fi(9, 1, 10, h(5)), fi(9, 1, 20, h(1))},
				0: {fi(0, 11, 11, h(4))},
			},
			want: "",
		},
		{
			name: "compacted L0 older than l0-retention goes; newer stays",
			levels: map[int][]storage.FileInfo{
				9: {fi(9, 1, 1, h(1))},
				0: {fi(0, 2, 2, now.Add(-10*time.Minute)), fi(0, 3, 3, now.Add(-time.Minute)), fi(0, 4, 4, now.Add(-10*time.Minute))},
				1: {fi(1, 2, 3, now)},
			},
			l1Max: 3,
			want:  "L0:2-2 ",
		},
		{
			name:   "no snapshot at all: nothing but compacted L0",
			levels: map[int][]storage.FileInfo{0: {fi(0, 1, 1, h(48))}},
			want:   "",
		},
	} {
		got := names(planRetention(tc.levels, now, 24*time.Hour, 5*time.Minute, tc.l1Max))
		if got != tc.want {
			t.Errorf("%s: planRetention = %q, want %q", tc.name, got, tc.want)
		}
	}
}
