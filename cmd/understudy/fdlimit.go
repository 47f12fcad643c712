package main

import (
	"syscall"

	"github.com/hashicorp/go-hclog"
)

// raiseFDLimit sets the soft limit on open files to the hard limit: a
// directory of databases holds about a dozen descriptors per open database
// (five SQLite connections, the database file, its -wal and -shm), and the
// usual soft limit of 1024 runs out at about 80 databases written at once.
// (The Go runtime raises it too, since Go 1.19; doing it here makes it
// visible in the log and independent of the runtime.) The limit is logged
// either way; a failure is a warning, not a reason not to start.
func raiseFDLimit(logger hclog.Logger) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		logger.Warn("cannot read the open files limit (RLIMIT_NOFILE)", "error", err)
		return
	}
	was := lim.Cur
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			logger.Warn("cannot raise the open files soft limit to the hard limit; raise it with ulimit -n or LimitNOFILE= in the service unit",
				"soft", was, "hard", lim.Max, "error", err)
			return
		}
	}
	logger.Info("open files limit", "soft", lim.Cur, "hard", lim.Max, "soft_was", was)
}
