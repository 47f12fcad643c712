package fleet

import "time"

// Maintenance of parked databases. A parked database runs no compaction,
// retention or snapshot interval (its Run is stopped), so at its park the
// fleet asks it when any of those would first do something
// (primary.DB.NextMaintenance, from the file lists it already holds: no
// store request) and keeps that time, in the member and in its parked
// note. The tick opens the parked database whose time has come, one at a
// time for the whole directory (so one at a time per replica) and at most
// one start a tick; the open runs primary.DB.Maintain instead of Run and
// the database is parked again at once, with its next time. Nothing due:
// no member is looked at (nextDue), no store request is made.

// minMaintainGap is the least time between two maintenances of one
// database: one that left work due (a store error, say) waits this long.
const minMaintainGap = time.Minute

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// setMaintainAtLocked records when m's maintenance is due.
func (f *Fleet) setMaintainAtLocked(m *member, at time.Time) {
	m.maintainAt = at
	if !at.IsZero() && (f.nextDue.IsZero() || at.Before(f.nextDue)) {
		f.nextDue = at
	}
}

// maintainDoneLocked ends m's maintenance, if it was in one.
func (f *Fleet) maintainDoneLocked(m *member) {
	m.maintain = false
	if f.maintaining == m {
		f.maintaining = nil
	}
}

// maintainDueLocked starts the maintenance of the parked database due
// first, when one is due and none is under way.
func (f *Fleet) maintainDueLocked(now time.Time) {
	if f.maintaining != nil || f.nextDue.IsZero() || now.Before(f.nextDue) {
		return
	}
	var first *member
	f.nextDue = time.Time{}
	for _, m := range f.members {
		if m.maintainAt.IsZero() || m.state != parked || m.want != parked || m.gone {
			continue
		}
		if !now.Before(m.maintainAt) && (first == nil || m.maintainAt.Before(first.maintainAt)) {
			first = m
		}
	}
	for _, m := range f.members {
		if m != first && !m.maintainAt.IsZero() && (f.nextDue.IsZero() || m.maintainAt.Before(f.nextDue)) {
			f.nextDue = m.maintainAt
		}
	}
	if first == nil {
		return
	}
	f.log.Debug("opening a parked database for its maintenance", "db", first.rel, "due", first.maintainAt)
	first.maintainAt = time.Time{}
	first.maintain, first.want = true, active
	f.maintaining = first
	f.enqueueLocked(first)
}
