package restore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/internal/storage"
)

// DefaultParallelism is how many files a restore downloads at once.
const DefaultParallelism = 8

// DefaultProgressInterval is how often Options.Progress is called.
const DefaultProgressInterval = time.Second

// IntegrityCheck selects SQLite's check of the restored file before rename.
type IntegrityCheck string

// Integrity check levels.
const (
	IntegrityNone  IntegrityCheck = "none"
	IntegrityQuick IntegrityCheck = "quick" // PRAGMA quick_check
	IntegrityFull  IntegrityCheck = "full"  // PRAGMA integrity_check
)

// ParseIntegrityCheck parses none, quick or full.
func ParseIntegrityCheck(s string) (IntegrityCheck, error) {
	switch c := IntegrityCheck(s); c {
	case IntegrityNone, IntegrityQuick, IntegrityFull:
		return c, nil
	case "":
		return IntegrityNone, nil
	}
	return "", fmt.Errorf("invalid integrity check %q: use none, quick or full", s)
}

// Target is the position to restore: TXID, or else Timestamp, or else the
// newest position.
type Target struct {
	TXID      ltx.TXID
	Timestamp time.Time
}

// String describes the target for logs.
func (t Target) String() string {
	switch {
	case t.TXID != 0:
		return "TXID " + t.TXID.String()
	case !t.Timestamp.IsZero():
		return "time " + t.Timestamp.UTC().Format(time.RFC3339Nano)
	}
	return "latest"
}

// Options configure Restore.
type Options struct {
	OutputPath     string // must not exist; the parent directory must
	Target         Target
	Parallelism    int // files in flight (DefaultParallelism when 0)
	IntegrityCheck IntegrityCheck
	Logger         hclog.Logger
	// Progress, when set, is called every DefaultProgressInterval and once at
	// the end of the download.
	Progress func(Progress)
}

// Progress reports a running restore.
type Progress struct {
	Files, FilesTotal int
	Bytes, BytesTotal int64
	Elapsed           time.Duration
	Final             bool // the last report: the download is over
}

// Result describes a finished restore.
type Result struct {
	TXID      ltx.TXID
	Timestamp time.Time // commit time of TXID, from the last file's LTX header
	// PostApplyChecksum is the database checksum (internal/dbsum) of the
	// restored file: the follower's starting position.
	PostApplyChecksum ltx.Checksum
	// Verified is true when PostApplyChecksum was matched against the checksum
	// the writer recorded in the target file's metadata. False for replicas
	// written by Litestream, where only file checksums could be verified.
	Verified bool
	// DatabaseID is the identity of the history restored (from the newest
	// file that carries one; "" when none does: Litestream's files).
	DatabaseID string
	PageSize   uint32
	PageCount  uint32
	Files      int
	Bytes      int64
	Elapsed    time.Duration
}

// Position is the newest position of a replica.
type Position struct {
	TXID      ltx.TXID
	Timestamp time.Time    // from the LTX header
	Checksum  ltx.Checksum // from the metadata; 0 when the file carries none
	File      storage.FileInfo
}

// Latest returns the newest position in the store (ErrEmptyReplica when it
// holds no files).
func Latest(ctx context.Context, client storage.Client) (Position, error) {
	files, err := ListAll(ctx, client)
	if err != nil {
		return Position{}, err
	}
	if len(files) == 0 {
		return Position{}, ErrEmptyReplica
	}
	newest := files[0]
	for _, f := range files[1:] {
		// Among files ending at the same TXID, the smallest is cheapest to read.
		if f.MaxTXID > newest.MaxTXID || (f.MaxTXID == newest.MaxTXID && f.Size < newest.Size) {
			newest = f
		}
	}
	h, err := ReadHeader(ctx, client, newest)
	if err != nil {
		return Position{}, err
	}
	pos := Position{TXID: newest.MaxTXID, Timestamp: h.Time(), File: h.Info}
	if h.Metadata != nil {
		pos.Checksum = h.Metadata.PostApplyChecksum
	}
	return pos, nil
}

// BuildPlan lists the store and plans a restore of target.
func BuildPlan(ctx context.Context, client storage.Client, target Target) (Plan, error) {
	files, err := ListAll(ctx, client)
	if err != nil {
		return Plan{}, err
	}
	txid := target.TXID
	if txid == 0 && !target.Timestamp.IsZero() {
		p, err := ResolveTimestamp(ctx, files, target.Timestamp, HeaderFuncFor(client))
		if err != nil {
			return Plan{}, err
		}
		txid = p.TXID
	}
	return PlanTXID(files, txid)
}

// Restore plans and executes a restore into opts.OutputPath.
func Restore(ctx context.Context, client storage.Client, opts Options) (Result, error) {
	if err := checkOutput(opts.OutputPath); err != nil {
		return Result{}, err
	}
	plan, err := BuildPlan(ctx, client, opts.Target)
	if err != nil {
		return Result{}, err
	}
	return Execute(ctx, client, plan, opts)
}

// checkOutput refuses an output path that exists, or that has a WAL or SHM
// file beside it (SQLite would apply a stale WAL to the restored file).
func checkOutput(out string) error {
	if out == "" {
		return errors.New("restore: no output path given")
	}
	for _, p := range []string{out, out + "-wal", out + "-shm", out + "-journal"} {
		if _, err := os.Lstat(p); err == nil {
			if p == out {
				return fmt.Errorf("%s: %w; restore never overwrites a database: choose another path or remove it", p, ErrOutputExists)
			}
			return fmt.Errorf("%s: %w: a stale SQLite %s file is beside the output path; remove it first", p, ErrOutputExists, p[strings.LastIndex(p, "-")+1:])
		} else if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("check output %s: %w", p, err)
		}
	}
	return nil
}

// Execute restores plan into opts.OutputPath: it reads every file's header,
// downloads and applies the files into a temp file beside the output,
// verifies file checksums, the metadata checksum chain and the final
// database checksum, runs the integrity check, syncs, and links the temp
// file to the output path, which must not exist. On any error nothing is
// left behind.
func Execute(ctx context.Context, client storage.Client, plan Plan, opts Options) (res Result, err error) {
	start := time.Now()
	log := opts.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	par := opts.Parallelism
	if par <= 0 {
		par = DefaultParallelism
	}
	check, err := ParseIntegrityCheck(string(opts.IntegrityCheck))
	if err != nil {
		return Result{}, err
	}
	if len(plan.Files) == 0 || !isSnapshot(plan.Files[0]) {
		return Result{}, errors.New("restore: the plan does not start with a snapshot")
	}
	if err := checkOutput(opts.OutputPath); err != nil {
		return Result{}, err
	}
	last := plan.Files[len(plan.Files)-1]
	log.Info("restoring", "target", plan.Target, "files", len(plan.Files), "bytes", plan.Bytes(),
		"snapshot", FileName(plan.Files[0]), "last", FileName(last), "output", opts.OutputPath)

	// Headers first: a missing or foreign object fails the restore before
	// any bulk download, and the page counts decide which pages survive.
	headers, err := ReadHeaders(ctx, client, plan.Files, 2*par)
	if err != nil {
		return Result{}, err
	}
	pageSize := headers[0].Header.PageSize
	var maxCommit uint32
	for i, h := range headers {
		if h.Header.PageSize != pageSize {
			return Result{}, fmt.Errorf("%s: %w: page size %d differs from the snapshot's %d", FileName(plan.Files[i]), ErrCorrupt, h.Header.PageSize, pageSize)
		}
		if h.Header.Commit > maxCommit {
			maxCommit = h.Header.Commit
		}
	}
	var unverified []string
	for i, h := range headers {
		if h.Metadata == nil {
			unverified = append(unverified, FileName(plan.Files[i]))
		}
	}
	if len(unverified) > 0 {
		log.Warn("files carry no understudy metadata (written by Litestream?): verifying them by file checksum only",
			"count", len(unverified), "first", unverified[0])
	}

	tmp, err := os.CreateTemp(filepath.Dir(opts.OutputPath), "."+filepath.Base(opts.OutputPath)+".restore-*.tmp")
	if err != nil {
		return Result{}, fmt.Errorf("create temp file beside %s: %w", opts.OutputPath, err)
	}
	tmpPath := tmp.Name()
	defer func() {
		if tmp != nil {
			_ = tmp.Close()
		}
		if err != nil {
			_ = os.Remove(tmpPath)
		}
	}()

	d := &download{
		client:   client,
		files:    plan.Files,
		headers:  headers,
		limits:   pageLimits(headers),
		app:      newApplier(tmp, int(pageSize), maxCommit),
		pageSize: int(pageSize),
	}
	stopProgress := d.reportProgress(opts.Progress, plan, start)
	err = d.run(ctx, par)
	stopProgress()
	if err != nil {
		return Result{}, err
	}

	lastHdr := headers[len(headers)-1]
	commit := lastHdr.Header.Commit
	sum, err := d.app.finish(commit)
	if err != nil {
		return Result{}, err
	}
	if err := verifyChain(plan.Files, headers, d.pages); err != nil {
		return Result{}, err
	}
	res = Result{
		TXID: plan.Target, Timestamp: lastHdr.Time(), PostApplyChecksum: sum,
		PageSize: pageSize, PageCount: commit, Files: len(plan.Files), Bytes: plan.Bytes(),
	}
	for i := len(headers) - 1; i >= 0 && res.DatabaseID == ""; i-- {
		if md := headers[i].Metadata; md != nil {
			res.DatabaseID = md.DatabaseID
		}
	}
	if md := lastHdr.Metadata; md != nil && md.PostApplyChecksum != 0 {
		if md.PostApplyChecksum != sum {
			return Result{}, fmt.Errorf("%w: the restored database's checksum %s differs from the post-apply checksum %s recorded with %s; the replica is inconsistent",
				ErrChecksumChain, sum, md.PostApplyChecksum, FileName(last))
		}
		res.Verified = true
	} else {
		log.Warn("the target file carries no database checksum: the result is verified by file checksums only", "file", FileName(last))
	}

	if err := tmp.Sync(); err != nil {
		return Result{}, fmt.Errorf("sync %s: %w", tmpPath, err)
	}
	if err := tmp.Close(); err != nil {
		tmp = nil
		return Result{}, fmt.Errorf("close %s: %w", tmpPath, err)
	}
	tmp = nil
	if err := integrityCheck(ctx, tmpPath, check); err != nil {
		return Result{}, err
	}
	if err := publish(tmpPath, opts.OutputPath); err != nil {
		return Result{}, err
	}
	res.Elapsed = time.Since(start)
	log.Info("restored", "txid", res.TXID, "time", res.Timestamp.Format(time.RFC3339Nano), "checksum", res.PostApplyChecksum,
		"verified", res.Verified, "pages", res.PageCount, "bytes", res.Bytes, "elapsed", res.Elapsed, "output", opts.OutputPath)
	return res, nil
}

// verifyChain checks the database checksums in the metadata: each file's
// pre-apply checksum must be the previous file's post-apply checksum. A file
// that holds the whole database (a snapshot, or the full image the primary
// writes after a history break) starts the chain afresh. Files without
// metadata are skipped (their file checksums were verified).
func verifyChain(files []storage.FileInfo, headers []FileHeader, pages []int) error {
	for i := 1; i < len(files); i++ {
		prev, cur := headers[i-1].Metadata, headers[i].Metadata
		if prev == nil || cur == nil || cur.PreApplyChecksum == 0 {
			continue
		}
		if isFullImage(headers[i].Header, pages[i]) {
			continue
		}
		if cur.PreApplyChecksum != prev.PostApplyChecksum {
			return fmt.Errorf("%w: %s starts from database checksum %s but %s ends at %s: the files are not from one history",
				ErrChecksumChain, FileName(files[i]), cur.PreApplyChecksum, FileName(files[i-1]), prev.PostApplyChecksum)
		}
	}
	return nil
}

// publish links the finished temp file to out (link fails if out exists, so
// a file created meanwhile is never replaced), removes the temp name and
// syncs the directory.
func publish(tmpPath, out string) error {
	if err := os.Link(tmpPath, out); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s: %w: it appeared during the restore; nothing was overwritten", out, ErrOutputExists)
		}
		return fmt.Errorf("link restored file to %s: %w", out, err)
	}
	if err := os.Remove(tmpPath); err != nil {
		return fmt.Errorf("remove temp file %s: %w", tmpPath, err)
	}
	dir, err := os.Open(filepath.Dir(out))
	if err != nil {
		return fmt.Errorf("sync directory of %s: %w", out, err)
	}
	defer dir.Close()
	if err := dir.Sync(); err != nil {
		return fmt.Errorf("sync directory of %s: %w", out, err)
	}
	return nil
}

// reportProgress calls fn every DefaultProgressInterval until the returned
// stop function is called, which reports once more.
func (d *download) reportProgress(fn func(Progress), plan Plan, start time.Time) (stop func()) {
	if fn == nil {
		return func() {}
	}
	snapshot := func() Progress {
		return Progress{
			Files: int(d.filesDone.Load()), FilesTotal: len(plan.Files),
			Bytes: d.bytesDone.Load(), BytesTotal: plan.Bytes(), Elapsed: time.Since(start),
		}
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(DefaultProgressInterval)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				fn(snapshot())
			case <-done:
				return
			}
		}
	}()
	return func() {
		close(done)
		<-finished
		p := snapshot()
		p.Final = true
		fn(p)
	}
}
