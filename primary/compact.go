package primary

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/internal/storage"
)

// planCompaction picks the files of the source level to merge into one file
// of the level above: those after the end of the destination level, up to
// upto (the replica's L0 position for L0), as one contiguous run. A gap
// before the run is allowed (a catch-up snapshot covers it); a gap inside
// ends the run.
func planCompaction(src, dst []storage.FileInfo, upto ltx.TXID) []storage.FileInfo {
	var dstMax ltx.TXID
	for _, f := range dst {
		dstMax = max(dstMax, f.MaxTXID)
	}
	var out []storage.FileInfo
	for _, f := range src { // sorted by MinTXID
		if f.MinTXID <= dstMax || f.MaxTXID > upto {
			continue
		}
		if len(out) > 0 && f.MinTXID != out[len(out)-1].MaxTXID+1 {
			break
		}
		out = append(out, f)
	}
	return out
}

// compact merges the files of level dst-1 not yet in level dst into one
// file of level dst, with ltx's compactor (the newest version of each
// page wins; pages past the last Commit dropped), and uploads it
// create-only. Metadata: the first input's pre-apply checksum, the last
// input's post-apply checksum and commit time.
func (r *replica) compact(ctx context.Context, dst int) error {
	r.mu.Lock()
	src := append([]storage.FileInfo(nil), r.levels[dst-1]...)
	dstFiles := append([]storage.FileInfo(nil), r.levels[dst]...)
	upto := ^ltx.TXID(0)
	if dst == 1 {
		upto = r.pos
	}
	r.mu.Unlock()
	inputs := planCompaction(src, dstFiles, upto)
	if len(inputs) == 0 {
		return nil
	}
	var rdrs []io.Reader
	var closers []io.Closer
	defer func() {
		for _, c := range closers {
			c.Close()
		}
	}()
	var first, last *storage.Metadata
	for i, fi := range inputs {
		rc, md, err := r.openInput(ctx, fi)
		if err != nil {
			return fmt.Errorf("replica %s: compact into level %d: %w", r.name, dst, err)
		}
		closers = append(closers, rc)
		rdrs = append(rdrs, rc)
		if md == nil {
			r.log.Warn("compaction input has no checksum metadata (written by another tool); level not compacted",
				"level", fi.Level, "min_txid", fi.MinTXID, "max_txid", fi.MaxTXID)
			return nil
		}
		if i == 0 {
			first = md
		}
		last = md
	}
	tmp, err := r.d.local.tempFile(fmt.Sprintf("compact-%s-l%d-*.ltx", r.name, dst))
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	c, err := ltx.NewCompactor(tmp, rdrs)
	if err != nil {
		return err
	}
	c.HeaderFlags = ltx.HeaderFlagNoChecksum
	c.SetSpillDir(r.d.local.dir + "/tmp")
	defer c.Cleanup()
	if err := c.Compact(ctx); err != nil {
		return fmt.Errorf("replica %s: compact %d files into level %d: %w", r.name, len(inputs), dst, err)
	}
	st, err := tmp.Stat()
	if err != nil {
		return err
	}
	minTX, maxTX := inputs[0].MinTXID, inputs[len(inputs)-1].MaxTXID
	md := storage.Metadata{Node: r.d.opts.Node, FencingToken: r.d.opts.FencingToken(), CommitTime: last.CommitTime,
		PreApplyChecksum: first.PreApplyChecksum, PostApplyChecksum: last.PostApplyChecksum}
	if minTX == 1 {
		md.PreApplyChecksum = 0
	}
	info, err := r.create(ctx, dst, minTX, maxTX, tmp.Name(), st.Size(), md)
	if err != nil {
		return err
	}
	r.addFile(info)
	r.log.Debug("compacted", "level", dst, "min_txid", minTX, "max_txid", maxTX, "inputs", len(inputs), "size", st.Size())
	return nil
}
