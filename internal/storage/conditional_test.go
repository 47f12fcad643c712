package storage

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestConditionOf(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want Condition
		ok   bool
	}{
		{"nil: create-only", nil, ConditionHonoured, true},
		{"ignored", &ConditionError{Condition: ConditionIgnored, Msg: "x"}, ConditionIgnored, true},
		{"refused, wrapped", fmt.Errorf("replica s3: %w", &ConditionError{Condition: ConditionRefused, Msg: "x"}), ConditionRefused, true},
		{"NoCreateOnly names no condition", NoCreateOnly("x"), ConditionIgnored, true},
		{"a store failure tells nothing", errors.New("cannot reach"), 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := ConditionOf(tc.err)
			if got != tc.want || ok != tc.ok {
				t.Errorf("ConditionOf(%v) = %v, %v; want %v, %v", tc.err, got, ok, tc.want, tc.ok)
			}
			if tc.err != nil && tc.ok && !errors.Is(tc.err, ErrNoCreateOnly) {
				t.Errorf("%v does not wrap ErrNoCreateOnly", tc.err)
			}
		})
	}
}

func TestChooseFencing(t *testing.T) {
	const key = "conditional-writes: if-supported"
	for _, tc := range []struct {
		cond                      Condition
		accept, versioned, leased bool
		want                      Fencing
		plain, refused            bool
	}{
		{ConditionHonoured, false, false, false, FencingLockCreateOnly, false, false},
		{ConditionHonoured, false, true, true, FencingLeaseCreateOnly, false, false},
		{ConditionHonoured, true, true, true, FencingLeaseCreateOnly, false, false}, // accepting changes nothing on a store that honours it
		{ConditionIgnored, false, false, false, "", false, true},
		{ConditionRefused, false, true, true, "", false, true},
		{ConditionIgnored, true, false, false, FencingLockReadBack, true, false},
		{ConditionRefused, true, false, true, FencingLeaseReadBack, true, false},
		{ConditionRefused, true, true, false, FencingLockReadBack, true, false}, // no lease: every token is 0, versions add nothing
		{ConditionIgnored, true, true, true, FencingLeaseVersions, true, false},
	} {
		name := fmt.Sprintf("%s/accept=%v/versioned=%v/leased=%v", tc.cond, tc.accept, tc.versioned, tc.leased)
		t.Run(name, func(t *testing.T) {
			f, err := ChooseFencing(tc.cond, tc.accept, tc.versioned, tc.leased, key)
			plain := err == nil && !f.CreateOnly()
			if tc.refused {
				if err == nil {
					t.Fatalf("accepted as %s, want a refusal", f)
				}
				for _, w := range []string{key, tc.cond.String(), "cannot refuse a second writer", "three requests"} {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("refusal %q does not say %q", err, w)
					}
				}
				return
			}
			if err != nil || f != tc.want || plain != tc.plain {
				t.Fatalf("= %q, plain %v, %v; want %q, plain %v", f, plain, err, tc.want, tc.plain)
			}
			if f.CreateOnly() != (tc.cond == ConditionHonoured) {
				t.Errorf("%s.CreateOnly() = %v", f, f.CreateOnly())
			}
			if (f.Warning() == "") != (f.CreateOnly() || f == FencingLeaseVersions) {
				t.Errorf("%s warns %q", f, f.Warning())
			}
			if !tc.leased && !f.CreateOnly() && !strings.Contains(f.Warning(), "second writer from another host cannot be refused") {
				t.Errorf("%s without a lease does not warn of a second writer: %q", f, f.Warning())
			}
		})
	}
}

func TestPickVersion(t *testing.T) {
	v := func(id string, token uint64, sec int64) Version {
		return Version{ID: id, FencingToken: token, Seconds: sec}
	}
	for _, tc := range []struct {
		name          string
		versions      []Version // newest first
		markerLatest  bool
		markerSeconds int64
		want          string // "" = none
	}{
		{"absent", nil, false, 0, ""},
		{"one version", []Version{v("a", 0, 10)}, false, 0, "a"},
		{"deposed primary's late overwrite loses to the new primary's file",
			[]Version{v("late", 4, 20), v("new", 5, 10)}, false, 0, "new"},
		{"a newer primary's file wins over an orphan",
			[]Version{v("new", 6, 20), v("orphan", 5, 10)}, false, 0, "new"},
		{"equal tokens: the newest, as a plain GET",
			[]Version{v("b", 0, 20), v("a", 0, 10)}, false, 0, "b"},
		{"highest of three, among equals the newest",
			[]Version{v("c", 3, 30), v("b", 7, 20), v("a", 7, 10)}, false, 0, "b"},
		{"deleted: a marker is the newest entry", []Version{v("a", 9, 10)}, true, 11, ""},
		{"versions before the newest marker are deleted",
			[]Version{v("after", 5, 30), v("before", 9, 10)}, false, 20, "after"},
		{"a version in the marker's second counts as after it",
			[]Version{v("same-second", 5, 20), v("before", 9, 10)}, false, 20, "same-second"},
		{"no version after the marker", []Version{v("before", 9, 10)}, false, 20, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			i, ok := PickVersion(tc.versions, tc.markerLatest, tc.markerSeconds)
			got := ""
			if ok {
				got = tc.versions[i].ID
			}
			if got != tc.want {
				t.Errorf("picked %q, want %q", got, tc.want)
			}
		})
	}
}
