// Package dirstatus holds what the status of a directory of databases
// looks like, whatever role serves it (fleet replicates one, followdir
// follows one): totals plus the worst few databases in /status, one
// database in full at /status/db/NAME, and /healthz errors that name a
// few databases and count the rest. The document stays small with
// thousands of databases.
package dirstatus

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
)

// DefaultWorst is how many databases a directory's status lists by lag,
// and how many a /healthz error names.
const DefaultWorst = 10

// Worst sorts all worst first by worse (negative: a is worse than b) and
// returns the first n of them; never nil, so that the JSON is [] and not
// null.
func Worst[T any](all []T, n int, worse func(a, b T) int) []T {
	slices.SortFunc(all, worse)
	out := all[:min(len(all), n)]
	if out == nil {
		out = []T{}
	}
	return out
}

// Unhealthy joins the first DefaultWorst of errs (one per unhealthy
// database) and counts the rest, total being how many there are in all
// (errs may hold only the first ones), dir naming the directory.
func Unhealthy(errs []error, total int, dir string) error {
	errs = errs[:min(len(errs), DefaultWorst)]
	if total > len(errs) {
		errs = append(errs, fmt.Errorf("and %d more databases of %s", total-len(errs), dir))
	}
	return errors.Join(errs...)
}

// A Lookup returns the status of the database called name (its path
// relative to the directory, or its local path), and whether it has one.
type Lookup func(name string) (any, bool)

// Routes serves GET /status/db/NAME from the first lookup that knows the
// database (`status -db NAME`).
func Routes(lookups ...Lookup) func(mux *http.ServeMux) {
	return func(mux *http.ServeMux) {
		mux.HandleFunc("GET /status/db/{name...}", func(w http.ResponseWriter, r *http.Request) {
			name := r.PathValue("name")
			for _, l := range lookups {
				if doc, ok := l(name); ok {
					w.Header().Set("Content-Type", "application/json")
					_ = json.NewEncoder(w).Encode(doc)
					return
				}
			}
			http.Error(w, fmt.Sprintf("no database %q in any directory of this daemon", name), http.StatusNotFound)
		})
	}
}
