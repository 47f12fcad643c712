package restore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/internal/storage"
)

// DefaultParallelism is how many files a restore downloads at once.
const DefaultParallelism = 8

// DefaultProgressInterval is how often Options.Progress is called.
const DefaultProgressInterval = time.Second

// DefaultFileMode is the mode a restored database is created with, less the
// process's umask, as SQLite itself creates database files: an app running
// as another user of the group can read it where the umask allows.
const DefaultFileMode fs.FileMode = 0o666

// IntegrityCheck selects SQLite's check of the restored file before rename.
type IntegrityCheck string

// Integrity check levels.
const (
	// IntegrityAuto (the default) runs PRAGMA quick_check when the result
	// is not proven by the database checksums in the objects' metadata (a
	// replica written by Litestream, or copied without its metadata), and
	// nothing when it is.
	IntegrityAuto  IntegrityCheck = "auto"
	IntegrityNone  IntegrityCheck = "none"  // skip the check, even of an unproven result
	IntegrityQuick IntegrityCheck = "quick" // PRAGMA quick_check
	IntegrityFull  IntegrityCheck = "full"  // PRAGMA integrity_check
)

// ParseIntegrityCheck parses auto, none, quick or full ("" is auto).
func ParseIntegrityCheck(s string) (IntegrityCheck, error) {
	switch c := IntegrityCheck(s); c {
	case IntegrityAuto, IntegrityNone, IntegrityQuick, IntegrityFull:
		return c, nil
	case "":
		return IntegrityAuto, nil
	}
	return "", fmt.Errorf("invalid integrity check %q: use auto, none, quick or full", s)
}

// resolve picks the check to run on a result that is (or is not) proven
// by database checksums.
func (c IntegrityCheck) resolve(verified bool) IntegrityCheck {
	if c == IntegrityAuto || c == "" {
		if verified {
			return IntegrityNone
		}
		return IntegrityQuick
	}
	return c
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
	Parallelism    int            // files in flight (DefaultParallelism when 0)
	IntegrityCheck IntegrityCheck // IntegrityAuto when empty
	// Mode is the restored file's mode before the umask (DefaultFileMode
	// when 0).
	Mode   fs.FileMode
	Logger hclog.Logger
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
	// Checked is the integrity check that ran on the result (IntegrityNone
	// when none did).
	Checked IntegrityCheck
	// Skipped lists the bad objects the restore planned around.
	Skipped   []BadObject
	PageSize  uint32
	PageCount uint32
	Files     int
	Bytes     int64
	Elapsed   time.Duration
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
	txid, err := resolveTarget(ctx, HeaderFuncFor(client), files, target)
	if err != nil {
		return Plan{}, err
	}
	return PlanTXID(files, txid)
}

// Restore plans and executes a restore into opts.OutputPath. When an object
// of the plan turns out to be bad (an *ObjectError: corrupt, foreign, gone,
// not of this history), it logs what it skips and plans again without it,
// through any other level or an older snapshot; it fails only when no path
// avoids the bad objects, with a *NoPathError that names them and the ways
// out.
func Restore(ctx context.Context, client storage.Client, opts Options) (Result, error) {
	if err := checkOutput(opts.OutputPath); err != nil {
		return Result{}, err
	}
	log := opts.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	files, err := ListAll(ctx, client)
	if err != nil {
		return Result{}, err
	}
	target, err := resolveTarget(ctx, headersAround(client, files, log), files, opts.Target)
	if err != nil {
		return Result{}, err
	}
	var bad []BadObject
	for {
		plan, err := PlanAvoiding(files, target, bad)
		if err != nil {
			return Result{}, err
		}
		res, err := Execute(ctx, client, plan, opts)
		var oe *ObjectError
		if err == nil || ctx.Err() != nil || !errors.As(err, &oe) || isBad(bad, oe.File) {
			if err == nil && len(bad) > 0 {
				res.Skipped = bad
				log.Warn("restored on a path around bad objects; move them aside or replace them, or other tools and followers may stop at them",
					"skipped", len(bad), "first", FileName(bad[0].File), "location", bad[0].Location)
			}
			return res, err
		}
		b := BadObject{File: oe.File, Err: oe, Location: ObjectLocation(client, oe.File)}
		bad = append(bad, b)
		log.Warn("skipping a bad object: planning the restore again without it", "object", FileName(oe.File),
			"location", b.Location, "error", oe.Err)
	}
}

// resolveTarget turns a target into a TXID (0: the newest position).
func resolveTarget(ctx context.Context, header HeaderFunc, files []storage.FileInfo, t Target) (ltx.TXID, error) {
	if t.TXID != 0 || t.Timestamp.IsZero() {
		return t.TXID, nil
	}
	p, err := ResolveTimestamp(ctx, files, t.Timestamp, header)
	if err != nil {
		return 0, err
	}
	return p.TXID, nil
}

// headersAround is HeaderFuncFor(client) for finding a timestamp's TXID
// when a file is bad: the commit time of TXID n is recorded in the header
// of every file ending at n, so another one (a compaction, a snapshot)
// tells it as well. The errors are those of the file asked for.
func headersAround(client storage.Client, files []storage.FileInfo, log hclog.Logger) HeaderFunc {
	return func(ctx context.Context, f storage.FileInfo) (ltx.Header, error) {
		h, err := ReadHeader(ctx, client, f)
		var oe *ObjectError
		if err == nil || !errors.As(blame(f, err), &oe) {
			return h.Header, err
		}
		for _, g := range files {
			if g.MaxTXID != f.MaxTXID || keyOf(g) == keyOf(f) {
				continue
			}
			if other, gerr := ReadHeader(ctx, client, g); gerr == nil {
				log.Warn("skipping a bad object: reading the commit time of its TXID from another file", "object", FileName(f),
					"location", ObjectLocation(client, f), "instead", FileName(g), "error", err)
				return other.Header, nil
			}
		}
		return h.Header, err
	}
}

func isBad(bad []BadObject, f storage.FileInfo) bool {
	for _, b := range bad {
		if keyOf(b.File) == keyOf(f) {
			return true
		}
	}
	return false
}

// ObjectLocation says where a file is in the store (a path, or an s3:// URL),
// for messages that tell an operator to move it aside; "" when the client
// cannot say.
func ObjectLocation(client storage.Client, f storage.FileInfo) string {
	switch c := client.(type) {
	case interface {
		Path(level int, minTXID, maxTXID ltx.TXID) string
	}:
		return c.Path(f.Level, f.MinTXID, f.MaxTXID)
	case interface {
		Bucket() string
		Key(level int, minTXID, maxTXID ltx.TXID) string
	}:
		return "s3://" + c.Bucket() + "/" + c.Key(f.Level, f.MinTXID, f.MaxTXID)
	}
	return ""
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
		if err := checkHeaderFits(plan.Files[i], h.Header, pageSize); err != nil {
			return Result{}, err
		}
		if h.Header.Commit > maxCommit {
			maxCommit = h.Header.Commit
		}
	}
	var unproven []storage.FileInfo
	for i, h := range headers {
		if h.Metadata == nil {
			unproven = append(unproven, plan.Files[i])
		}
	}
	if len(unproven) > 0 {
		log.Warn("files carry no understudy metadata (written by Litestream, or copied without it?): verifying them by file checksum only",
			"count", len(unproven), "files", describeFiles(unproven, 3))
	}

	mode := opts.Mode
	if mode == 0 {
		mode = DefaultFileMode
	}
	tmp, err := CreateTemp(filepath.Dir(opts.OutputPath), "."+filepath.Base(opts.OutputPath)+".restore-*.tmp", mode)
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
		return Result{}, err // an *ObjectError naming the file that does not continue the chain
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
	res.Checked = check.resolve(res.Verified)
	if !res.Verified && res.Checked == IntegrityNone {
		log.Warn("skipping the integrity check of a result that no database checksum proves (asked for)", "output", opts.OutputPath)
	}
	if err := integrityCheck(ctx, tmpPath, res.Checked); err != nil {
		return Result{}, unprovenErr(err, res.Verified, plan, headers, unproven)
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
			return blame(files[i], fmt.Errorf("%w: %s starts from database checksum %s but %s ends at %s: the files are not from one history",
				ErrChecksumChain, FileName(files[i]), cur.PreApplyChecksum, FileName(files[i-1]), prev.PostApplyChecksum))
		}
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
