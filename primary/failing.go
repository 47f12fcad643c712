package primary

import (
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

// An outage (store unreachable, disk full) makes the same attempt fail
// every sync interval. Logging each failure drowned the log (343 ERROR
// lines in 2 minutes) while /healthz said ok. Instead a failureRun tracks
// one activity's consecutive failures: the first is logged at once, then a
// summary at most every DefaultFailureSummaryEvery, and one line when the
// activity recovers; /healthz fails once the run has lasted
// UnhealthyAfter.

// DefaultFailureSummaryEvery is how often a run of failures is summarised
// in the log after its first failure.
const DefaultFailureSummaryEvery = time.Minute

// DefaultUnhealthyAfter is the shortest run of failures that makes
// /healthz fail (see UnhealthyAfter): one failed attempt is not an outage.
const DefaultUnhealthyAfter = 10 * time.Second

// UnhealthyAfter is how long an activity that runs every syncInterval must
// have failed without a success in between before the daemon reports
// itself unhealthy: three intervals, and at least DefaultUnhealthyAfter.
func UnhealthyAfter(syncInterval time.Duration) time.Duration {
	return max(3*syncInterval, DefaultUnhealthyAfter)
}

// logAction is what a failure or a success should log.
type logAction int

const (
	logNothing   logAction = iota
	logFirst               // the first failure of a run
	logSummary             // still failing: the summary is due
	logRecovered           // a success ended a run
)

// failureRun is the current run of consecutive failures of one activity.
// The zero value is "not failing". Its methods are pure: the caller passes
// the time and does the logging.
type failureRun struct {
	since    time.Time // first failure of the run; zero: not failing
	count    int       // failures in the run
	last     error     // newest failure
	loggedAt time.Time // when the run was last logged
}

// fail records a failure at now and says what to log.
func (f *failureRun) fail(now time.Time, err error, every time.Duration) logAction {
	f.count++
	f.last = err
	if f.since.IsZero() {
		f.since, f.loggedAt = now, now
		return logFirst
	}
	if now.Sub(f.loggedAt) >= every {
		f.loggedAt = now
		return logSummary
	}
	return logNothing
}

// ok records a success. It returns logRecovered (and the run that ended)
// if the activity was failing.
func (f *failureRun) ok() (logAction, failureRun) {
	if f.since.IsZero() {
		return logNothing, failureRun{}
	}
	ended := *f
	*f = failureRun{}
	return logRecovered, ended
}

// failingFor is how long the run has lasted at now (0: not failing).
func (f *failureRun) failingFor(now time.Time) time.Duration {
	if f.since.IsZero() {
		return 0
	}
	return now.Sub(f.since)
}

// failures is a failureRun shared between goroutines that logs for what.
type failures struct {
	what  string // "sync", "upload": names the activity in the log
	log   hclog.Logger
	every time.Duration

	mu  sync.Mutex
	run failureRun
}

func newFailures(what string, log hclog.Logger) *failures {
	return &failures{what: what, log: log, every: DefaultFailureSummaryEvery}
}

// fail records err at now and logs it if due; args are logged with it.
func (f *failures) fail(now time.Time, err error, args ...any) {
	f.mu.Lock()
	act := f.run.fail(now, err, f.every)
	run := f.run
	f.mu.Unlock()
	switch act {
	case logFirst:
		f.log.Error(f.what+" failed; will retry (further failures are summarised every "+f.every.String()+")",
			append(args, "error", err)...)
	case logSummary:
		f.log.Error(fmt.Sprintf("%s still failing", f.what), append(args, "failures", run.count,
			"since", run.since.UTC().Format(time.RFC3339), "for", now.Sub(run.since).Round(time.Second).String(), "last_error", err)...)
	}
}

// ok records a success at now and logs the recovery of a failing run.
func (f *failures) ok(now time.Time, args ...any) {
	f.mu.Lock()
	act, ended := f.run.ok()
	f.mu.Unlock()
	if act == logRecovered {
		f.log.Info(f.what+" recovered", append(args, "failures", ended.count,
			"since", ended.since.UTC().Format(time.RFC3339), "for", now.Sub(ended.since).Round(time.Second).String())...)
	}
}

// state returns the current run.
func (f *failures) state() failureRun {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.run
}

// healthError is the /healthz error of a failing activity, or nil while
// its run is shorter than bound.
func healthError(what string, run failureRun, now time.Time, bound time.Duration) error {
	if run.since.IsZero() || run.failingFor(now) < bound {
		return nil
	}
	return fmt.Errorf("%s failing for %s (%d failures since %s; the bound is %s): %v", what,
		run.failingFor(now).Round(time.Second), run.count, run.since.UTC().Format(time.RFC3339), bound, run.last)
}
