package primary

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/internal/dbsum"
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

// Compacting files without our metadata. Files Litestream 0.5 wrote (a
// bucket it replicated before the user switched to Understudy), or copies
// that lost their metadata, carry no database checksums: their LTX files
// hold no pre- or post-apply checksum either, only the file checksum, which
// the compactor's decoders verify. They are compacted like ours; what
// cannot be taken from them is the output's metadata:
//
//   - post-apply checksum: the state after the last input. It is known
//     only when the last input carries it, and it must be known: restores
//     check the next file's pre-apply checksum against it, and the
//     follower checks the database after applying the output against it.
//     So the run is cut after its last input with checksums
//     (trimToKnownEnd); the inputs after it wait until a file of ours
//     follows them. After a switch from Litestream that is the full image
//     Understudy writes as its first TXID, so the wait is one compaction.
//   - pre-apply checksum: the state before the first input. When the first
//     input has none it is the post-apply checksum of a file of ours that
//     ends just before the run (postAt: the local L0 file, or the level
//     below or above in the store): within one store there is one history
//     (create-only), so the state after TXID n is the state before n+1.
//     Failing that it is unknown and left 0, which restores read as "start
//     of a chain", but the
//     follower checks a contiguous file's pre-apply checksum against its
//     database unless the file is a full image (every page). So such an
//     output is only uploaded when it is a full image, which is checked by
//     reading it back, together with its database checksum against the
//     last input's post-apply checksum: proof that the output, applied to
//     any database, gives the state the metadata claims. After a switch
//     from Litestream the run always holds Understudy's first full image,
//     so it is one.
//
// A file without checksums in the middle of a run changes nothing: the
// output's checksums come from the first and the last input, and the
// readers verify the output's post-apply checksum when they apply it.

// hasSums reports whether md carries our database checksums.
func hasSums(md *storage.Metadata) bool { return md != nil && md.PostApplyChecksum != 0 }

// trimToKnownEnd returns how many of a run's inputs to compact: through the
// last one whose post-apply checksum is known (0: none is).
func trimToKnownEnd(mds []*storage.Metadata) int {
	for i := len(mds) - 1; i >= 0; i-- {
		if hasSums(mds[i]) {
			return i + 1
		}
	}
	return 0
}

// samePageSize returns how many of a run's inputs (in order) have the
// page size of the first.
func samePageSize(sizes []uint32) int {
	for i, n := range sizes {
		if n != sizes[0] {
			return i
		}
	}
	return len(sizes)
}

// preKnown reports whether the pre-apply checksum of a compaction output
// starting at minTXID with first input metadata first is known: a chain
// from TXID 1 starts from nothing, otherwise the first input must carry it
// (0 is what an output whose pre-apply checksum was unknown carries).
func preKnown(minTXID ltx.TXID, first *storage.Metadata) bool {
	return minTXID == 1 || (hasSums(first) && first.PreApplyChecksum != 0)
}

// compactInputBuffer is the read buffer of each compaction input. All
// inputs are open at once (the compactor merges them page by page), and an
// L1 run of a busy minute has hundreds: at 64 KiB each they were the
// daemon's largest transient memory (peak RSS ~60 MB in the 1-row bench).
const compactInputBuffer = 8 << 10

// compact merges the files of level dst-1 not yet in level dst into one
// file of level dst, with ltx's compactor (the newest version of each
// page wins; pages past the last Commit dropped), and uploads it
// create-only. Metadata: the first input's pre-apply checksum, the last
// input's post-apply checksum and commit time. Inputs without our
// metadata: see above.
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
	mds := make([]*storage.Metadata, len(inputs))
	pageSizes := make([]uint32, len(inputs))
	for i, fi := range inputs {
		rc, md, err := r.openInput(ctx, fi)
		if err != nil {
			return fmt.Errorf("replica %s: compact into level %d: %w", r.name, dst, err)
		}
		closers = append(closers, rc)
		br := bufio.NewReaderSize(rc, compactInputBuffer)
		var hdr ltx.Header
		if b, err := br.Peek(ltx.HeaderSize); err != nil {
			return fmt.Errorf("replica %s: compact into level %d: read the header of level %d %s: %w", r.name, dst,
				fi.Level, storage.FormatFilename(fi.MinTXID, fi.MaxTXID), err)
		} else if err := hdr.UnmarshalBinary(b); err != nil {
			return fmt.Errorf("replica %s: compact into level %d: level %d %s: %w", r.name, dst,
				fi.Level, storage.FormatFilename(fi.MinTXID, fi.MaxTXID), err)
		}
		rdrs = append(rdrs, br)
		mds[i], pageSizes[i] = md, hdr.PageSize
	}
	// A database replaced by one with another page size starts a new
	// history at a full image: a compacted file holds one page size, so
	// the run ends before the change and the next compaction starts there.
	n := trimToKnownEnd(mds[:samePageSize(pageSizes)])
	if n == 0 {
		r.log.Debug("compaction waits: no input carries database checksums (written by Litestream?); a file of ours must follow them",
			"level", dst, "min_txid", inputs[0].MinTXID, "max_txid", inputs[len(inputs)-1].MaxTXID)
		return nil
	}
	inputs, mds, rdrs = inputs[:n], mds[:n], rdrs[:n]
	first, last := mds[0], mds[n-1]
	minTX, maxTX := inputs[0].MinTXID, inputs[len(inputs)-1].MaxTXID
	var foreign []storage.FileInfo
	for i, md := range mds {
		if !hasSums(md) {
			foreign = append(foreign, inputs[i])
		}
	}

	tmp, err := r.d.local.tempFile(fmt.Sprintf("compact-%s-l%d-*.ltx", r.name, dst))
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	bw := bufio.NewWriterSize(tmp, encodeBufSize)
	c, err := ltx.NewCompactor(bw, rdrs)
	if err != nil {
		return err
	}
	c.HeaderFlags = ltx.HeaderFlagNoChecksum
	c.SetSpillDir(r.d.local.dir + "/tmp")
	defer c.Cleanup()
	if err := c.Compact(ctx); err != nil {
		return fmt.Errorf("replica %s: compact %d files into level %d: %w", r.name, len(inputs), dst, err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("replica %s: compaction into level %d: write %s: %w", r.name, dst, tmp.Name(), err)
	}
	st, err := tmp.Stat()
	if err != nil {
		return err
	}
	md := storage.Metadata{Node: r.d.opts.Node, FencingToken: r.d.opts.FencingToken(), CommitTime: last.CommitTime,
		DatabaseID: r.d.dbID, DatabasePath: r.d.opts.Path,
		PostApplyChecksum: last.PostApplyChecksum}
	var pre ltx.Checksum
	havePre := preKnown(minTX, first)
	if havePre && minTX != 1 {
		pre = first.PreApplyChecksum
	} else if !havePre {
		pre, havePre = r.postAt(ctx, minTX-1, dst-1, dst)
	}
	if minTX != 1 {
		md.PreApplyChecksum = pre
	}
	if len(foreign) > 0 {
		full, sum, err := readFullImage(tmp.Name())
		if err != nil {
			return fmt.Errorf("replica %s: read back the compaction of level %d %s: %w", r.name, dst,
				storage.FormatFilename(minTX, maxTX), err)
		}
		switch {
		case full && sum != last.PostApplyChecksum:
			return fmt.Errorf("replica %s: compacting level %d %s, whose inputs include files without checksum metadata (first %s), gives database checksum %s, but %s is recorded for TXID %s: the files are not one history; check what wrote them",
				r.name, dst-1, storage.FormatFilename(minTX, maxTX), storage.FormatFilename(foreign[0].MinTXID, foreign[0].MaxTXID),
				sum, last.PostApplyChecksum, maxTX)
		case !full && !havePre:
			r.mu.Lock()
			warned := r.compactWaits[dst]
			if r.compactWaits == nil {
				r.compactWaits = map[int]bool{}
			}
			r.compactWaits[dst] = true
			r.mu.Unlock()
			if !warned {
				r.log.Warn("level not compacted yet: its first files carry no checksum metadata (written by Litestream, or copied without it) and the compacted file would not hold every page, so a follower could not verify it; it is compacted once a full image of ours follows",
					"level", dst, "min_txid", minTX, "max_txid", maxTX)
			}
			return nil
		}
		r.log.Info("compacting files without checksum metadata (written by Litestream?): verified by their file checksums",
			"level", dst, "files", len(foreign), "first", storage.FormatFilename(foreign[0].MinTXID, foreign[0].MaxTXID),
			"full_image", full)
	}
	info, err := r.create(ctx, dst, minTX, maxTX, tmp.Name(), st.Size(), md)
	if err != nil {
		return err
	}
	r.addFile(info)
	r.mu.Lock()
	delete(r.compactWaits, dst)
	r.mu.Unlock()
	r.log.Debug("compacted", "level", dst, "min_txid", minTX, "max_txid", maxTX, "inputs", len(inputs), "size", st.Size())
	return nil
}

// postAt returns the database checksum after txid, taken from a file of
// ours that ends there: the local L0 file, else a file of one of levels in
// the store (one GET for its metadata). ok is false when none carries it.
func (r *replica) postAt(ctx context.Context, txid ltx.TXID, levels ...int) (sum ltx.Checksum, ok bool) {
	if txid == 0 {
		return 0, false
	}
	if md, err := r.d.local.meta(txid); err == nil && md.TXID == txid && md.Post != 0 {
		return md.Post, true
	}
	var cands []storage.FileInfo
	r.mu.Lock()
	for _, lvl := range levels {
		for _, f := range r.levels[lvl] {
			if f.MaxTXID == txid {
				cands = append(cands, f)
			}
		}
	}
	r.mu.Unlock()
	for _, f := range cands {
		octx, cancel := context.WithTimeout(ctx, RequestTimeout)
		obj, err := r.c.Open(octx, f.Level, f.MinTXID, f.MaxTXID, 0, 0)
		cancel()
		if errors.Is(err, storage.ErrNotFound) {
			r.count("get", 0, nil) // deleted by retention meanwhile: not a store failure
			continue
		}
		r.count("get", 0, err)
		if err != nil {
			continue
		}
		obj.Close()
		if hasSums(obj.Info.Metadata) {
			return obj.Info.Metadata.PostApplyChecksum, true
		}
	}
	return 0, false
}

// readFullImage reads back a compacted LTX file (the decoder verifies its
// file checksum) and reports whether it holds every page of the database
// it describes (1..Commit, the lock page excepted), and that database's
// checksum when it does.
func readFullImage(path string) (bool, ltx.Checksum, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, 0, err
	}
	defer f.Close()
	dec := ltx.NewDecoder(bufio.NewReaderSize(f, 256<<10))
	dec.SetRetainPageIndex(false)
	if err := dec.DecodeHeader(); err != nil {
		return false, 0, err
	}
	hdr := dec.Header()
	lock := ltx.LockPgno(hdr.PageSize)
	data := make([]byte, hdr.PageSize)
	var sum dbsum.Sum
	var pages uint32
	for {
		var ph ltx.PageHeader
		if err := dec.DecodePage(&ph, data); err == io.EOF {
			break
		} else if err != nil {
			return false, 0, err
		}
		if ph.Pgno > hdr.Commit || ph.Pgno == lock {
			continue
		}
		pages++
		sum = sum.Add(dbsum.Page(ph.Pgno, data))
	}
	if err := dec.Close(); err != nil {
		return false, 0, err
	}
	if pages != dbsum.ImagePages(hdr.PageSize, hdr.Commit) {
		return false, 0, nil
	}
	return true, sum.Checksum(), nil
}
