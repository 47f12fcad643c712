package follower

import (
	"errors"
	"fmt"
)

// These feed internal/httpserver, which serves every role's endpoints:
//
//	/healthz  HealthError: nil while every follower is applying (or retrying
//	          a store error); the errors once one stopped on something that
//	          does not verify.
//	/readyz   ReadyError: nil once every local database is open at a
//	          verified position.
//	/status   StatusDocument: {"dbs": [Status, ...]}, as the primary's.

// HealthError is nil while every follower is healthy.
func HealthError(followers ...*Follower) error {
	var errs []error
	for _, f := range followers {
		if st := f.Status(); !st.Healthy {
			errs = append(errs, fmt.Errorf("%s: %s", st.Name, st.Error))
		}
	}
	return errors.Join(errs...)
}

// ReadyError is nil once every follower serves a verified database.
func ReadyError(followers ...*Follower) error {
	var errs []error
	for _, f := range followers {
		if st := f.Status(); !st.Ready {
			msg := st.State
			if st.Error != "" {
				msg += ": " + st.Error
			}
			errs = append(errs, fmt.Errorf("%s: %s", st.Name, msg))
		}
	}
	return errors.Join(errs...)
}

// StatusDocument is the /status document: every follower's Status.
func StatusDocument(followers ...*Follower) any {
	dbs := make([]Status, 0, len(followers))
	for _, f := range followers {
		dbs = append(dbs, f.Status())
	}
	return map[string]any{"dbs": dbs}
}
