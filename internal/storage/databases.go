package storage

import (
	"context"
	"fmt"
	"maps"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/superfly/ltx"
)

// DatabaseOfKey tells whether key (relative to a prefix, "/"-separated) is
// an LTX file of a database below that prefix, and returns rel, the
// database's path relative to the prefix. A dir: entry puts each database
// at the prefix plus its path relative to the directory (Litestream 0.5's
// rule), so rel is also where a restore of the whole prefix writes it.
// Both of Litestream 0.5's layouts are recognised: a file or sftp store's
// <rel>/ltx/<level>/<min>-<max>.ltx, an object store's
// <rel>/<level %04x>/<min>-<max>.ltx. Levels run 0 to SnapshotLevel, so
// the two cannot be taken for one another. rel is "" for a layout at the
// prefix itself. Keys whose rel has an empty, "." or ".." segment are not
// taken: rel must name a path inside the directory it is restored into.
func DatabaseOfKey(key string) (rel string, ok bool) {
	segs := strings.Split(key, "/")
	n := len(segs)
	if n < 2 {
		return "", false
	}
	if _, _, ok := ParseFilename(segs[n-1]); !ok {
		return "", false
	}
	var dir []string
	switch lvl := segs[n-2]; {
	case n >= 3 && segs[n-3] == ltxDir && isLevel(lvl, strconv.Itoa):
		dir = segs[:n-3]
	case isLevel(lvl, func(l int) string { return fmt.Sprintf("%04x", l) }):
		dir = segs[:n-2]
	default:
		return "", false
	}
	for _, s := range dir {
		if s == "" || s == "." || s == ".." {
			return "", false
		}
	}
	return strings.Join(dir, "/"), true
}

// ltxDir is the directory of a file store's levels below a database's path.
const ltxDir = "ltx"

// isLevel tells whether s is a level from 0 to SnapshotLevel written as
// format writes it.
func isLevel(s string, format func(int) string) bool {
	for l := range SnapshotLevel + 1 {
		if format(l) == s {
			return true
		}
	}
	return false
}

// FindDatabases lists the databases below the root of kr with one listing
// (ListKeys of the whole prefix, however many databases it holds): the
// relative paths of the subprefixes that hold LTX files, in order.
func FindDatabases(ctx context.Context, kr KeyReader) ([]string, error) {
	heads, err := DatabaseHeads(ctx, kr)
	if err != nil {
		return nil, err
	}
	return slices.Sorted(maps.Keys(heads)), nil
}

// DatabaseHeads is FindDatabases with, for each database, the highest
// MaxTXID of its LTX files at any level: what the store holds, read from
// the same one listing. (A directory follower uses it to catch a database
// whose heads index entry is stale or missing.)
func DatabaseHeads(ctx context.Context, kr KeyReader) (map[string]ltx.TXID, error) {
	keys, err := kr.ListKeys(ctx, "")
	if err != nil {
		return nil, fmt.Errorf("list the prefix: %w", err)
	}
	heads := map[string]ltx.TXID{}
	for _, k := range keys {
		rel, ok := DatabaseOfKey(k.Key)
		if !ok {
			continue
		}
		_, maxTXID, _ := ParseFilename(path.Base(k.Key))
		heads[rel] = max(heads[rel], maxTXID)
	}
	return heads, nil
}
