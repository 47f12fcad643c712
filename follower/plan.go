package follower

import (
	"fmt"
	"time"

	"github.com/superfly/ltx"
	"github.com/understudy-db/understudy/internal/storage"
)

// catchUpLevels are listed, in this order, when the next L0 file is missing.
// Lower levels first: compaction writes the higher level before retention
// deletes the lower one, so a file that vanished from a level listed earlier
// is already in a level listed later, and a listing never shows a false gap.
var catchUpLevels = []int{storage.LevelL0, 1, 2, 3, storage.SnapshotLevel}

// Listing is one level's files from the store.
type Listing struct {
	Level int
	Files []storage.FileInfo
}

// CatchUp is the decision planCatchUp takes.
type CatchUp struct {
	// File to apply next, when Apply is true.
	File  storage.FileInfo
	Apply bool
	// Head is the highest TXID any listed file reaches.
	Head ltx.TXID
	// Gap is set when the store holds later TXIDs but nothing that contains
	// the next one: the history cannot be followed.
	Gap bool
	// Behind is set when the store's history ends before txid: the replica
	// was reset or replaced, and this database is not part of its history.
	Behind bool
}

// planCatchUp picks what a database at txid applies next, from listings of
// the levels (L0 from txid on, the others whole). A file qualifies if it contains txid+1 (it may start earlier:
// a compaction that straddles the position; see Applier.Apply). Among L0-L3
// the one reaching furthest wins (ties: the one starting exactly at txid+1,
// whose pre-apply checksum can be checked, then the lower level, the smaller
// file). A snapshot (a full image) is used only when no level holds the next
// TXID: it is the whole database, the most expensive thing to fetch.
func planCatchUp(txid ltx.TXID, listings []Listing) CatchUp {
	var d CatchUp
	var best *storage.FileInfo
	var snap *storage.FileInfo
	next := txid + 1
	better := func(a, b *storage.FileInfo) bool { // is a better than b
		if b == nil || a.MaxTXID != b.MaxTXID {
			return b == nil || a.MaxTXID > b.MaxTXID
		}
		if (a.MinTXID == next) != (b.MinTXID == next) {
			return a.MinTXID == next
		}
		return a.Level < b.Level
	}
	for _, l := range listings {
		for i := range l.Files {
			f := &l.Files[i]
			if f.MaxTXID > d.Head {
				d.Head = f.MaxTXID
			}
			if f.MaxTXID < next {
				continue
			}
			if l.Level == storage.SnapshotLevel {
				if snap == nil || f.MaxTXID > snap.MaxTXID {
					snap = f
				}
				continue
			}
			if f.MinTXID <= next && better(f, best) {
				best = f
			}
		}
	}
	switch {
	case best != nil:
		d.File, d.Apply = *best, true
	case snap != nil:
		d.File, d.Apply = *snap, true
	case d.Head > txid:
		d.Gap = true
	case d.Head < txid:
		// The L0 listing starts at txid itself, and compaction writes a
		// level before deleting what it merged, so a store at txid always
		// shows a file reaching txid.
		d.Behind = true
	}
	return d
}

// dead returns the *VerifyError that ends following from pos when the
// decision is Behind or Gap, and nil otherwise.
func (d CatchUp) dead(pos Position) error {
	switch {
	case d.Behind:
		return &VerifyError{Local: pos, Err: fmt.Errorf(
			"the replica's history ends at TXID %s, before the local position: the replica was reset or is not the one this database came from; move the local database aside to bootstrap again", d.Head)}
	case d.Gap:
		return &VerifyError{Local: pos, Err: fmt.Errorf(
			"gap in the history: the store has TXIDs up to %s but no file that contains the next TXID %s; put the missing file back (the follower goes on by itself), or move the local database aside to bootstrap again", d.Head, pos.TXID+1)}
	}
	return nil
}

// objectName names a store object in logs and errors.
func objectName(level int, minTXID, maxTXID ltx.TXID) string {
	return fmt.Sprintf("level %d file %s", level, ltx.FormatFilename(minTXID, maxTXID))
}

// lagOf is the follower's lag: none when the last poll found nothing newer;
// otherwise the age of the newest applied commit, and the TXIDs between the
// position and the highest TXID known to exist.
func lagOf(now time.Time, caughtUp bool, lastCommit time.Time, head, txid ltx.TXID) (time.Duration, uint64) {
	if caughtUp {
		return 0, 0
	}
	var secs time.Duration
	if !lastCommit.IsZero() && now.After(lastCommit) {
		secs = now.Sub(lastCommit)
	}
	var txids uint64
	if head > txid {
		txids = uint64(head - txid)
	}
	return secs, txids
}

// backoff is the wait before retry n (from 1) of a failed store request or
// apply: doubling from the poll interval up to max.
func backoff(poll time.Duration, n int, max time.Duration) time.Duration {
	d := poll
	for i := 1; i < n && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	return d
}

// minProbeInterval bounds how often a follower probes for a file that is due.
const minProbeInterval = 10 * time.Millisecond

// pollSchedule decides how long to wait before the next GET of the next L0
// file. A busy primary ships about once per sync interval, which is usually
// the poll interval too; polling blindly every interval adds up to a whole
// interval of lag. So the follower estimates when the next file is due: it
// arrived after the last GET that missed, and the next one comes about an
// interval after that. Until it is due the follower waits; around that time
// it probes every quarter interval; an interval past the due time without
// a file it goes back to one GET per interval (idle). Busy, this costs about
// three GETs per file; idle, one GET per interval.
type pollSchedule struct {
	interval time.Duration
	due      time.Time // when the next file is expected; zero: not known (idle)
	lastMiss time.Time
	missed   bool // the last GET missed
}

func (s *pollSchedule) probe() time.Duration { return max(s.interval/4, minProbeInterval) }

// found records a GET that found a file. The caller applies it and GETs
// the next key at once (there may be a backlog).
func (s *pollSchedule) found() {
	if s.missed {
		s.due = s.lastMiss.Add(s.interval)
	}
	s.missed = false
}

// miss records a GET at now that found nothing and returns the wait before
// the next one.
func (s *pollSchedule) miss(now time.Time) time.Duration {
	s.missed, s.lastMiss = true, now
	switch {
	case s.due.IsZero():
		return s.interval
	case now.Before(s.due):
		return min(s.due.Sub(now), s.interval)
	case now.Before(s.due.Add(s.interval)):
		return s.probe()
	}
	s.due = time.Time{}
	return s.interval
}
