package fleet

import (
	"cmp"
	"fmt"
	"time"

	"github.com/understudy-db/understudy/internal/dirstatus"
	"github.com/understudy-db/understudy/primary"
)

// Status is a directory in /status: totals, and the databases furthest
// behind, so that the document stays small with thousands of databases.
type Status struct {
	Dir       string `json:"dir"`
	Databases int    `json:"databases"`
	Active    int    `json:"active"` // open and running
	Parked    int    `json:"parked"` // idle, closed, everything shipped
	Opening   int    `json:"opening"`
	Failed    int    `json:"failed"`
	// Waiting counts the parked databases written since, waiting to be
	// opened (their turn at max-open, or a free worker).
	Waiting int `json:"waiting"`
	// PendingTXIDs is the sum over the databases of their replicas' most
	// TXIDs written locally and not uploaded yet.
	PendingTXIDs int `json:"pending_txids"`
	// Worst lists up to DefaultWorst databases by lag: failed ones first,
	// then the most pending TXIDs, then the oldest last upload.
	Worst []DBStatus `json:"worst"`
}

// DBStatus is one database of a directory: the primary's document and
// its state in the directory.
type DBStatus struct {
	primary.StatusDoc
	Name  string `json:"name"`  // path relative to the directory
	State string `json:"state"` // active, parked, opening, parking, failed
	Error string `json:"error,omitempty"`
}

func (m *member) statusLocked() DBStatus {
	doc := m.last
	if m.db != nil {
		doc = m.db.Status().Document()
	}
	if doc.DB == "" {
		doc.Role, doc.DB = "primary", m.path
	}
	ds := DBStatus{StatusDoc: doc, Name: m.rel, State: m.state.String()}
	if m.err != nil {
		ds.Error = m.err.Error()
	}
	return ds
}

// pending is a database's lag: its replicas' most pending TXIDs.
func pending(ds DBStatus) int {
	n := 0
	for _, r := range ds.Replicas {
		n = max(n, r.Pending)
	}
	return n
}

// oldestSync is its replicas' oldest last upload (zero: one never uploaded).
func oldestSync(ds DBStatus) time.Time {
	var t time.Time
	for i, r := range ds.Replicas {
		if r.LastSync == nil {
			return time.Time{}
		}
		if i == 0 || r.LastSync.Before(t) {
			t = *r.LastSync
		}
	}
	return t
}

// worse orders databases worst first.
func worse(a, b DBStatus) int {
	if fa, fb := a.State == "failed", b.State == "failed"; fa != fb {
		if fa {
			return -1
		}
		return 1
	}
	if c := cmp.Compare(pending(b), pending(a)); c != 0 {
		return c
	}
	if c := oldestSync(a).Compare(oldestSync(b)); c != 0 {
		return c
	}
	return cmp.Compare(a.Name, b.Name)
}

// Status is the directory's totals and its worst databases. Only the
// databases that are not parked are looked at in detail: a parked one has
// shipped everything.
func (f *Fleet) Status() Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := Status{Dir: f.Dir(), Databases: len(f.members)}
	var live []DBStatus
	for _, m := range f.members {
		switch m.state {
		case parked:
			s.Parked++
			if m.want == active && !m.gone {
				s.Waiting++
			}
			continue
		case active, parking:
			s.Active++
		case opening:
			s.Opening++
		case failed:
			s.Failed++
		}
		ds := m.statusLocked()
		s.PendingTXIDs += pending(ds)
		live = append(live, ds)
	}
	s.Worst = dirstatus.Worst(live, DefaultWorst, worse)
	return s
}

// DB is the status of the database named name (its path relative to the
// directory), and whether there is one.
func (f *Fleet) DB(name string) (DBStatus, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, m := range f.members {
		if m.rel == name || m.path == name {
			return m.statusLocked(), true
		}
	}
	return DBStatus{}, false
}

// UnhealthyAfter is how long a database must have failed to open before
// /healthz says so.
const UnhealthyAfter = 10 * time.Second

// Healthy is nil unless a database failed, or an open one is fenced or
// cannot ship (primary.DB.ShippingError); it names up to DefaultWorst of
// them and counts the rest.
func (f *Fleet) Healthy() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	var errs []error
	n := 0
	for _, m := range f.members {
		var err error
		switch {
		case m.state == failed && m.err != nil && (m.db != nil || time.Since(m.failedAt) >= UnhealthyAfter):
			// An open that failed once (the application held a lock) is
			// retried at once; only one that keeps failing is unhealthy.
			err = fmt.Errorf("%s: %w", m.path, m.err)
		case m.db != nil:
			if m.db.Status().Fenced {
				err = fmt.Errorf("%s: fenced: another writer owns the replica history", m.path)
			} else {
				err = m.db.ShippingError()
			}
		}
		if err == nil {
			continue
		}
		if n++; n <= DefaultWorst {
			errs = append(errs, err)
		}
	}
	return dirstatus.Unhealthy(errs, n, f.Dir())
}
