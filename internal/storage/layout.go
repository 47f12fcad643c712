package storage

import (
	"fmt"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/superfly/ltx"
)

// FormatFilename is the leaf name of an LTX file in every store:
// "<minTXID %016x>-<maxTXID %016x>.ltx", as Litestream 0.5 names them.
func FormatFilename(minTXID, maxTXID ltx.TXID) string {
	return ltx.FormatFilename(minTXID, maxTXID)
}

// ParseFilename parses a leaf name written by FormatFilename. ok is false for
// any other name (temp files, other tools' files), which listings skip.
func ParseFilename(name string) (minTXID, maxTXID ltx.TXID, ok bool) {
	minTXID, maxTXID, err := ltx.ParseFilename(name)
	if err != nil {
		return 0, 0, false
	}
	return minTXID, maxTXID, true
}

// CheckKey rejects keys that cannot be a Litestream file name.
func CheckKey(level int, minTXID, maxTXID ltx.TXID) error {
	if level < 0 {
		return fmt.Errorf("negative level %d", level)
	}
	if minTXID > maxTXID {
		return fmt.Errorf("bad TXID range %s-%s (min above max)", minTXID, maxTXID)
	}
	return nil
}

// Metadata field names. Each store prefixes them in its own way (S3 user
// metadata "understudy-<field>", file xattrs "user.understudy.<field>").
const (
	MetaNode              = "node"
	MetaFencingToken      = "fencing-token"
	MetaCommitTime        = "commit-time"
	MetaPreApplyChecksum  = "pre-apply-checksum"
	MetaPostApplyChecksum = "post-apply-checksum"
	// Optional fields: objects written before they existed lack them.
	MetaDatabaseID   = "database-id"
	MetaDatabasePath = "database-path" // URL path-escaped: S3 metadata is ASCII only
)

// MetaFields lists the required metadata field names in a fixed order.
var MetaFields = []string{MetaNode, MetaFencingToken, MetaCommitTime, MetaPreApplyChecksum, MetaPostApplyChecksum}

// MetaOptionalFields lists the optional metadata field names: written when
// set, read when present.
var MetaOptionalFields = []string{MetaDatabaseID, MetaDatabasePath}

// AllMetaFields is MetaFields followed by MetaOptionalFields.
func AllMetaFields() []string { return append(slices.Clone(MetaFields), MetaOptionalFields...) }

// Fields encodes md as text fields: decimal fencing token, RFC 3339 commit
// time with nanoseconds in UTC, checksums as 16 hex digits, the database
// path URL path-escaped; optional fields only when set.
func (md Metadata) Fields() map[string]string {
	f := map[string]string{
		MetaNode:              md.Node,
		MetaFencingToken:      strconv.FormatUint(md.FencingToken, 10),
		MetaCommitTime:        md.CommitTime.UTC().Format(time.RFC3339Nano),
		MetaPreApplyChecksum:  md.PreApplyChecksum.String(),
		MetaPostApplyChecksum: md.PostApplyChecksum.String(),
	}
	if md.DatabaseID != "" {
		f[MetaDatabaseID] = md.DatabaseID
	}
	if md.DatabasePath != "" {
		f[MetaDatabasePath] = url.PathEscape(md.DatabasePath)
	}
	return f
}

// MetadataFromFields decodes fields written by Metadata.Fields. get returns a
// field's value and whether it is present. With no field present the object
// was written by another tool and the result is (nil, nil); with only some
// present, or one malformed, the metadata cannot be trusted and it is an error.
func MetadataFromFields(get func(field string) (string, bool)) (*Metadata, error) {
	vals := make(map[string]string, len(MetaFields))
	var missing []string
	for _, f := range MetaFields {
		if v, ok := get(f); ok {
			vals[f] = v
		} else {
			missing = append(missing, f)
		}
	}
	if len(vals) == 0 {
		return nil, nil
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return nil, fmt.Errorf("incomplete understudy metadata: missing %v", missing)
	}
	md := &Metadata{Node: vals[MetaNode]}
	var err error
	if md.FencingToken, err = strconv.ParseUint(vals[MetaFencingToken], 10, 64); err != nil {
		return nil, fmt.Errorf("metadata %s: %w", MetaFencingToken, err)
	}
	if md.CommitTime, err = time.Parse(time.RFC3339Nano, vals[MetaCommitTime]); err != nil {
		return nil, fmt.Errorf("metadata %s: %w", MetaCommitTime, err)
	}
	if md.PreApplyChecksum, err = ltx.ParseChecksum(vals[MetaPreApplyChecksum]); err != nil {
		return nil, fmt.Errorf("metadata %s: %w", MetaPreApplyChecksum, err)
	}
	if md.PostApplyChecksum, err = ltx.ParseChecksum(vals[MetaPostApplyChecksum]); err != nil {
		return nil, fmt.Errorf("metadata %s: %w", MetaPostApplyChecksum, err)
	}
	if v, ok := get(MetaDatabaseID); ok {
		md.DatabaseID = v
	}
	if v, ok := get(MetaDatabasePath); ok {
		if md.DatabasePath, err = url.PathUnescape(v); err != nil {
			return nil, fmt.Errorf("metadata %s: %w", MetaDatabasePath, err)
		}
	}
	return md, nil
}

// SliceIterator is an Iterator over a listing already in memory.
type SliceIterator struct {
	items []FileInfo
	i     int
}

// NewSliceIterator returns an iterator over items in their given order.
func NewSliceIterator(items []FileInfo) *SliceIterator {
	return &SliceIterator{items: items, i: -1}
}

// Next advances to the next item.
func (it *SliceIterator) Next() bool {
	if it.i+1 >= len(it.items) {
		it.i = len(it.items)
		return false
	}
	it.i++
	return true
}

// Item returns the current item.
func (it *SliceIterator) Item() FileInfo {
	if it.i < 0 || it.i >= len(it.items) {
		return FileInfo{}
	}
	return it.items[it.i]
}

// Err is always nil.
func (it *SliceIterator) Err() error { return nil }

// Close does nothing.
func (it *SliceIterator) Close() error { return nil }

// SortFileInfos orders a listing by MinTXID, then MaxTXID.
func SortFileInfos(a []FileInfo) {
	sort.Slice(a, func(i, j int) bool {
		if a[i].MinTXID != a[j].MinTXID {
			return a[i].MinTXID < a[j].MinTXID
		}
		return a[i].MaxTXID < a[j].MaxTXID
	})
}

// CreatedInfo describes an object a client has just created from md. Its
// time is the commit time, or now for metadata without one.
func CreatedInfo(level int, minTXID, maxTXID ltx.TXID, size int64, md Metadata) FileInfo {
	info := FileInfo{
		Level: level, MinTXID: minTXID, MaxTXID: maxTXID, Size: size,
		CreatedAt: md.CommitTime, Metadata: &md,
	}
	if md.CommitTime.IsZero() {
		info.CreatedAt = time.Now()
	}
	return info
}

// LevelKeyPrefix is the key prefix of one level in an object store, as
// Litestream 0.5 lays it out: <prefix><level %04x>/, where prefix is the
// replica's path with a trailing "/" (or "" for the bucket's root).
func LevelKeyPrefix(prefix string, level int) string {
	return fmt.Sprintf("%s%04x/", prefix, level)
}

// ObjectKey is the key of one LTX file in an object store.
func ObjectKey(prefix string, level int, minTXID, maxTXID ltx.TXID) string {
	return LevelKeyPrefix(prefix, level) + FormatFilename(minTXID, maxTXID)
}

// KeyPrefix turns a replica's path into the key prefix of an object store:
// trimmed of slashes, with one trailing "/", or "" for the bucket's root.
func KeyPrefix(path string) string {
	path = strings.Trim(path, "/")
	if path == "" {
		return ""
	}
	return path + "/"
}
