package restore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"

	"github.com/mattn/go-sqlite3" // SQLite driver for the integrity check
)

// integrityCheck runs PRAGMA quick_check or integrity_check on the restored
// file. The file is opened immutable and read-only: its header says WAL mode,
// and a normal open would create -wal and -shm files beside the temp file.
func integrityCheck(ctx context.Context, path string, check IntegrityCheck) error {
	var pragma string
	switch check {
	case IntegrityNone, "":
		return nil
	case IntegrityQuick:
		pragma = "quick_check"
	case IntegrityFull:
		pragma = "integrity_check"
	default:
		return fmt.Errorf("invalid integrity check %q", check)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("integrity check of %s: %w", path, err)
	}
	u := url.URL{Scheme: "file", Path: abs, RawQuery: "mode=ro&immutable=1"}
	db, err := sql.Open("sqlite3", u.String())
	if err != nil {
		return fmt.Errorf("integrity check of %s: %w", path, err)
	}
	defer db.Close()
	// SQLite may refuse to run the check at all on a malformed file.
	failed := func(err error) error {
		var serr sqlite3.Error
		if errors.As(err, &serr) && (serr.Code == sqlite3.ErrCorrupt || serr.Code == sqlite3.ErrNotADB) {
			return fmt.Errorf("%w: PRAGMA %s of the restored database failed: %v", ErrCorrupt, pragma, err)
		}
		return fmt.Errorf("integrity check (%s) of the restored database: %w", pragma, err)
	}
	rows, err := db.QueryContext(ctx, "PRAGMA "+pragma)
	if err != nil {
		return failed(err)
	}
	defer rows.Close()
	var problems []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return failed(err)
		}
		if s != "ok" {
			problems = append(problems, s)
		}
	}
	if err := rows.Err(); err != nil {
		return failed(err)
	}
	if len(problems) > 0 {
		if len(problems) > 5 {
			problems = append(problems[:5], fmt.Sprintf("... %d more", len(problems)-5))
		}
		return fmt.Errorf("%w: PRAGMA %s of the restored database failed: %s", ErrCorrupt, pragma, strings.Join(problems, "; "))
	}
	return nil
}
