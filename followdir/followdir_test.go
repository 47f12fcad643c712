package followdir

import (
	"maps"
	"slices"
	"testing"

	"github.com/understudy-db/understudy/follower"
)

func TestDiff(t *testing.T) {
	for _, tc := range []struct {
		name           string
		running, found []string
		added, gone    []string
	}{
		{"first listing", nil, []string{"b.db", "a.db", "eu/c.db"}, []string{"a.db", "b.db", "eu/c.db"}, nil},
		{"nothing changed", []string{"b.db", "a.db"}, []string{"a.db", "b.db"}, nil, nil},
		{"one new", []string{"a.db"}, []string{"a.db", "eu/new.db"}, []string{"eu/new.db"}, nil},
		{"one vanished", []string{"a.db", "b.db"}, []string{"b.db"}, nil, []string{"a.db"}},
		{"new and vanished", []string{"a.db", "b.db"}, []string{"b.db", "c.db"}, []string{"c.db"}, []string{"a.db"}},
		{"all vanished", []string{"b.db", "a.db"}, nil, nil, []string{"a.db", "b.db"}},
		{"found twice", nil, []string{"a.db", "a.db"}, []string{"a.db"}, nil},
		{"empty store", nil, nil, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			added, gone := Diff(tc.running, tc.found)
			if !slices.Equal(added, tc.added) || !slices.Equal(gone, tc.gone) {
				t.Errorf("Diff(%q, %q) = added %q gone %q, want added %q gone %q", tc.running, tc.found, added, gone, tc.added, tc.gone)
			}
		})
	}
}

func TestWorstOrder(t *testing.T) {
	all := []follower.Status{
		{Name: "ok.db", State: follower.StateFollowing},
		{Name: "behind.db", State: follower.StateFollowing, LagSeconds: 3, LagTXIDs: 2},
		{Name: "more-txids.db", State: follower.StateFollowing, LagSeconds: 3, LagTXIDs: 9},
		{Name: "gone.db", State: StateGone},
		{Name: "stalled.db", State: follower.StateStalled},
		{Name: "stopped.db", State: follower.StateStopped},
		{Name: "booting.db", State: follower.StateBootstrapping},
	}
	slices.SortFunc(all, worse)
	var got []string
	for _, st := range all {
		got = append(got, st.Name)
	}
	want := []string{"stopped.db", "stalled.db", "booting.db", "more-txids.db", "behind.db", "ok.db", "gone.db"}
	if !slices.Equal(got, want) {
		t.Errorf("worst first: %q, want %q", got, want)
	}
}

func TestBehind(t *testing.T) {
	positions := map[string]uint64{"a.db": 5, "b.db": 7, "eu/c.db": 2, "d.db": 3}
	for _, tc := range []struct {
		name    string
		heads   map[string]uint64
		noIndex bool
		want    map[string]uint64
	}{
		{"all caught up", map[string]uint64{"a.db": 5, "b.db": 7, "eu/c.db": 2, "d.db": 3}, false, map[string]uint64{}},
		{"two moved", map[string]uint64{"a.db": 6, "b.db": 7, "eu/c.db": 4, "d.db": 3}, false, map[string]uint64{"a.db": 6, "eu/c.db": 4}},
		// A head behind the position: the index lags the store (its
		// writer crashed between an upload and the index); nothing to do.
		{"index behind", map[string]uint64{"a.db": 4, "b.db": 7, "eu/c.db": 2, "d.db": 3}, false, map[string]uint64{}},
		// Not in the index: its writer keeps no entry for it (a lease
		// node), so it polls as without an index.
		{"not in the index", map[string]uint64{"a.db": 5, "d.db": 3}, false, map[string]uint64{"b.db": 0, "eu/c.db": 0}},
		{"no index: everyone polls", nil, true, map[string]uint64{"a.db": 0, "b.db": 0, "eu/c.db": 0, "d.db": 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Behind(tc.heads, positions, tc.noIndex); !maps.Equal(got, tc.want) {
				t.Errorf("Behind = %v, want %v", got, tc.want)
			}
		})
	}
}
