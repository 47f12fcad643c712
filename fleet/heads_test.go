package fleet

import (
	"context"
	"maps"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/internal/heads"
	"github.com/understudy-db/understudy/internal/storage/file"
	"github.com/understudy-db/understudy/primary"
)

// parkedAt is a member parked with its replica "r" at txid.
func parkedAt(rel string, txid uint64) *member {
	return &member{rel: rel, path: "/d/" + rel, state: parked,
		last: primary.StatusDoc{Replicas: []primary.ReplicaStatusDoc{{Name: "other", TXID: 99}, {Name: "r", TXID: ltx.TXID(txid)}}}}
}

// headsFleet is a fleet of members keeping the index of replica "r" in
// store, with the index's writes counted; its writers have read the
// store's index, as headsLoop does first.
func headsFleet(t *testing.T, store *file.Client, writes *int, members ...*member) *Fleet {
	t.Helper()
	f := &Fleet{
		log:     hclog.NewNullLogger(),
		members: map[string]*member{},
		opts: Options{
			Heads: []HeadsReplica{{Name: "r", Store: store, Interval: time.Hour}},
			HeadsObserver: func(_ string, op HeadsOp, err error) {
				if op == HeadsWrite && err == nil {
					*writes++
				}
			},
		},
	}
	for _, m := range members {
		f.members[m.path] = m
	}
	f.heads.writers = []*headsWriter{{rep: f.opts.Heads[0]}}
	f.heads.writers[0].have = f.readHeads(context.Background(), f.heads.writers[0])
	f.heads.dirty = true
	return f
}

func readIndex(t *testing.T, store *file.Client) map[string]uint64 {
	t.Helper()
	ix, err := heads.Read(context.Background(), store)
	if err != nil {
		t.Fatal(err)
	}
	return ix.Heads
}

// TestHeadsOfMembers: what the index says of each kind of member, and
// when it is written. A parked database keeps its head; one whose position
// is not known yet (waiting to be opened) keeps the head of the index the
// store held; one with none anywhere is left out; one that left drops out.
// A change is written at most once per interval (at once at the shutdown),
// and the same heads are never written again, after a restart included.
func TestHeadsOfMembers(t *testing.T) {
	store, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := heads.Write(ctx, store, heads.Index{Written: time.Now(), Heads: map[string]uint64{"a.db": 1, "unknown.db": 9, "left.db": 4}}); err != nil {
		t.Fatal(err)
	}
	members := func() []*member {
		left := parkedAt("left.db", 4)
		left.gone = true
		return []*member{
			parkedAt("a.db", 5), parkedAt("eu/b.db", 3), left,
			{rel: "unknown.db", path: "/d/unknown.db", state: opening},
			{rel: "new.db", path: "/d/new.db", state: opening},
		}
	}
	ms := members()
	writes := 0
	f := headsFleet(t, store, &writes, ms...)
	t0 := time.Now()
	want := map[string]uint64{"a.db": 5, "eu/b.db": 3, "unknown.db": 9}

	steps := []struct {
		name       string
		change     func()
		at         time.Duration
		final      bool
		wantWrites int
		want       map[string]uint64
	}{
		{"first look", nil, 0, false, 1, want},
		{"nothing changed, long after", func() { f.heads.dirty = true }, 10 * time.Minute, false, 1, want},
		{"a head moved, interval not over", func() { ms[0].last.Replicas[1].TXID = 6; f.heads.dirty = true }, 20 * time.Minute, false, 1, want},
		{"interval over", nil, time.Hour + time.Minute, false, 2, map[string]uint64{"a.db": 6, "eu/b.db": 3, "unknown.db": 9}},
		{"shutdown, interval not over", func() { ms[1].last.Replicas[1].TXID = 4; f.heads.dirty = true }, time.Hour + 2*time.Minute, true, 3, map[string]uint64{"a.db": 6, "eu/b.db": 4, "unknown.db": 9}},
	}
	for _, s := range steps {
		if s.change != nil {
			s.change()
		}
		f.lookAtHeads(ctx, t0.Add(s.at), s.final)
		if writes != s.wantWrites {
			t.Fatalf("%s: %d writes, want %d", s.name, writes, s.wantWrites)
		}
		if got := readIndex(t, store); !maps.Equal(got, s.want) {
			t.Fatalf("%s: the index holds %v, want %v", s.name, got, s.want)
		}
	}

	// A restart over the same databases: the index is read, not written.
	ms = members()
	ms[0].last.Replicas[1].TXID, ms[1].last.Replicas[1].TXID = 6, 4
	writes = 0
	f = headsFleet(t, store, &writes, ms...)
	f.lookAtHeads(ctx, time.Now(), false)
	if writes != 0 {
		t.Fatalf("a restart over unchanged databases wrote the index %d times", writes)
	}
}
