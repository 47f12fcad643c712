package promote

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/follower"
	"github.com/understudy-db/understudy/internal/restore"
	"github.com/understudy-db/understudy/internal/storage"
	"github.com/understudy-db/understudy/internal/wal"
)

// ClaimFile encodes the zero-page LTX file with which a node taking over
// claims TXID at.TXID+1: no pages, Commit = the current page count, written
// as Litestream 0.5 writes its files (no database checksums in the file).
// ltx's decoder and compactor and Litestream's restore accept it anywhere in
// the chain (DESIGN.md, "On the bucket").
func ClaimFile(at follower.Reached, now time.Time) ([]byte, error) {
	if at.PageSize == 0 || at.PageCount == 0 {
		return nil, fmt.Errorf("claim after TXID %s: page size %d, page count %d: the local database is empty", at.TXID, at.PageSize, at.PageCount)
	}
	var buf bytes.Buffer
	enc, err := ltx.NewEncoder(&buf)
	if err != nil {
		return nil, err
	}
	next := at.TXID + 1
	if err := enc.EncodeHeader(ltx.Header{
		Version: ltx.Version, Flags: ltx.HeaderFlagNoChecksum, PageSize: at.PageSize, Commit: at.PageCount,
		MinTXID: next, MaxTXID: next, Timestamp: now.UnixMilli(),
		// No WAL position: Litestream taking the replica over after this
		// claim must snapshot rather than resume from a WAL offset (it fails
		// on every sync with offset 0; see primary's walSpan).
		WALOffset: wal.HeaderSize,
	}); err != nil {
		return nil, fmt.Errorf("claim TXID %s: %w", next, err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("claim TXID %s: %w", next, err)
	}
	return buf.Bytes(), nil
}

// Claim writes the claim file for TXID at.TXID+1 create-only to every
// replica, the followed one (the arbiter) first. An error wrapping
// storage.ErrExists from the first replica means another writer got that
// TXID first (an upload of the old primary still in flight, or a rival):
// catch up again and retry. It returns the claimed TXID.
func Claim(ctx context.Context, clients []storage.Client, at follower.Reached, node string, token uint64, now time.Time) (ltx.TXID, error) {
	b, err := ClaimFile(at, now)
	if err != nil {
		return 0, err
	}
	next := at.TXID + 1
	// The claim continues the replayed history: it carries its identity on.
	md := storage.Metadata{Node: node, FencingToken: token, CommitTime: now.UTC(),
		PreApplyChecksum: at.Checksum, PostApplyChecksum: at.Checksum, DatabaseID: at.DatabaseID}
	for i, c := range clients {
		_, err := c.Create(ctx, storage.LevelL0, next, next, bytes.NewReader(b), md)
		switch {
		case err == nil:
		case i == 0:
			return 0, fmt.Errorf("claim TXID %s in the %s replica: %w", next, c.Type(), err)
		case errors.Is(err, storage.ErrExists):
			return 0, fmt.Errorf("claim TXID %s: the %s replica already holds it although the first replica did not: the replicas disagree; keep the one you trust and empty the others: %w", next, c.Type(), err)
		default:
			return 0, fmt.Errorf("claim TXID %s in the %s replica: %w", next, c.Type(), err)
		}
	}
	return next, nil
}

// StoreHead returns the file that reaches furthest in the store, with its
// metadata (nil when the store is empty).
func StoreHead(ctx context.Context, c storage.Client) (*storage.FileInfo, error) {
	files, err := restore.ListAll(ctx, c)
	if err != nil {
		return nil, err
	}
	var head *storage.FileInfo
	for i := range files {
		if head == nil || files[i].MaxTXID > head.MaxTXID {
			head = &files[i]
		}
	}
	if head == nil {
		return nil, nil
	}
	obj, err := c.Open(ctx, head.Level, head.MinTXID, head.MaxTXID, 0, 0)
	if err != nil {
		return nil, fmt.Errorf("read the metadata of the newest file: %w", err)
	}
	obj.Close()
	return &obj.Info, nil
}

// WrittenByOther reports whether the store's newest file comes from another
// node: a primary that starts must then not continue from its local
// database, which is not the store's history (it may hold writes never
// shipped, or be behind). Files without metadata say nothing.
func WrittenByOther(head *storage.FileInfo, node string) bool {
	return head != nil && head.Metadata != nil && head.Metadata.Node != "" && head.Metadata.Node != node
}
