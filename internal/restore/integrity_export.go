package restore

import "context"

// CheckIntegrity runs the SQLite check named by check (auto, none, quick,
// full) on the database file at path, opened read-only and immutable. Other
// restore paths (Litestream 0.3 replicas) use it before they publish a
// file; no database checksum proves their results, so auto means quick.
func CheckIntegrity(ctx context.Context, path string, check IntegrityCheck) error {
	return integrityCheck(ctx, path, check.resolve(false))
}
