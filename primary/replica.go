package primary

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/internal/storage"
)

// replica is one store of the database. It has its own position: the L0
// files are written once, locally, and each replica uploads the ones it has
// not got yet, so a slow or failing replica never holds back the others and
// catches up with exactly the same files.
type replica struct {
	d    *DB
	name string
	c    storage.Client
	opts ReplicaOptions
	log  hclog.Logger
	wake chan struct{}

	upMu    sync.Mutex // serializes uploads of L0 files
	upFails *failures  // the uploader's run of failed rounds (log rate, /healthz)

	mu           sync.Mutex
	pos          ltx.TXID // L0 files through pos are in the store (or covered by a snapshot there)
	posSum       ltx.Checksum
	jump         ltx.TXID // TXID of a catch-up snapshot: local files up to it are not needed
	needSnapshot bool     // local files to catch up are gone: needs a snapshot
	dropWarned   bool     // warned that local files it needs were dropped (until a snapshot catches it up)
	snapDue      bool     // the snapshot interval has passed
	levels       map[int][]storage.FileInfo
	compactWaits map[int]bool // levels whose compaction waits for a full image (warned once)
	lastSync     time.Time
	lastErr      error
}

// Store request time limits: a request that hangs (a dead connection, a
// stuck proxy) must fail so that it is retried, instead of blocking the
// replica for good. An upload gets at least RequestTimeout, more for big
// files (MinUploadRate).
const (
	RequestTimeout = 30 * time.Second
	MinUploadRate  = 1 << 20 // bytes per second
)

func uploadTimeout(size int64) time.Duration {
	return max(RequestTimeout, time.Duration(size/MinUploadRate)*time.Second)
}

func newReplica(d *DB, o ReplicaOptions) *replica {
	log := d.log.With("replica", o.Name)
	return &replica{
		d: d, name: o.Name, c: o.Client, opts: o,
		log:     log,
		upFails: newFailures("upload", log),
		wake:    make(chan struct{}, 1),
		levels:  map[int][]storage.FileInfo{},
	}
}

// poke wakes the replica's uploader.
func (r *replica) poke() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *replica) count(op string, bytes int64, err error) {
	m := r.d.m
	m.storeRequests.WithLabelValues(r.d.metricsDB(), r.name, op).Inc()
	if bytes > 0 {
		m.storeBytes.WithLabelValues(r.d.metricsDB(), r.name, op).Add(float64(bytes))
	}
	if err != nil && !errors.Is(err, storage.ErrExists) {
		m.syncErrors.WithLabelValues(r.d.metricsDB(), r.name).Inc()
		r.mu.Lock()
		r.lastErr = err
		r.mu.Unlock()
	}
}

// levelNumbers are the levels the replica uses.
func (r *replica) levelNumbers() []int {
	out := []int{0}
	for i := range r.d.opts.Levels {
		out = append(out, i+1)
	}
	return append(out, storage.SnapshotLevel)
}

// load lists the store into the in-memory index. After this the shipper
// knows what it wrote and needs no listing in steady state.
func (r *replica) load(ctx context.Context) error {
	levels := map[int][]storage.FileInfo{}
	for _, lvl := range r.levelNumbers() {
		it, err := r.c.List(ctx, lvl, 0)
		r.count("list", 0, err)
		if err != nil {
			return fmt.Errorf("replica %s: list level %d: %w", r.name, lvl, err)
		}
		for it.Next() {
			levels[lvl] = append(levels[lvl], it.Item())
		}
		err = it.Err()
		it.Close()
		if err != nil {
			return fmt.Errorf("replica %s: list level %d: %w", r.name, lvl, err)
		}
	}
	r.mu.Lock()
	r.levels = levels
	r.mu.Unlock()
	return nil
}

// newest returns the highest TXID in the store and that file's metadata.
func (r *replica) newest(ctx context.Context) (ltx.TXID, *storage.Metadata, error) {
	r.mu.Lock()
	var best storage.FileInfo
	claimed := r.d.opts.ClaimedTXID
	for _, lvl := range r.levelNumbers() {
		for _, f := range r.levels[lvl] {
			if claimed > 0 && f.MaxTXID > claimed {
				continue // a deposed writer's orphan above this node's claim
			}
			if f.MaxTXID > best.MaxTXID {
				best = f
			}
		}
	}
	r.mu.Unlock()
	if best.MaxTXID == 0 {
		return 0, nil, nil
	}
	octx, cancel := context.WithTimeout(ctx, RequestTimeout)
	defer cancel()
	obj, err := r.c.Open(octx, best.Level, best.MinTXID, best.MaxTXID, 0, 0)
	r.count("get", 0, err)
	if err != nil {
		return 0, nil, fmt.Errorf("replica %s: read metadata of level %d %s: %w", r.name, best.Level,
			storage.FormatFilename(best.MinTXID, best.MaxTXID), err)
	}
	obj.Close()
	return best.MaxTXID, obj.Info.Metadata, nil
}

// afterOpen sets the replica's position from its index once the DB knows
// the head, and notes whether it can catch up from local files.
func (r *replica) afterOpen() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pos = chainEnd(r.levels)
	head := ltx.TXID(r.d.head.Load())
	if r.pos > head {
		r.pos = head
	}
	if r.pos == head {
		r.posSum = ltx.Checksum(r.d.headSum.Load())
	} else if md, err := r.d.local.meta(r.pos); err == nil {
		r.posSum = md.Post
	}
	for t := r.pos + 1; t <= head; t++ {
		if !r.d.local.has(t) {
			r.needSnapshot = true
			r.log.Warn("replica is behind and the local files to catch up are gone; it will get a snapshot",
				"replica_txid", r.pos, "txid", head)
			break
		}
	}
	r.d.m.txid.WithLabelValues(r.d.metricsDB(), r.name).Set(float64(r.pos))
}

// dropFile removes a file from the index (a deposed writer's orphan that
// was deleted from the store).
func (r *replica) dropFile(level int, min, max ltx.TXID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.levels[level] = slices.DeleteFunc(r.levels[level], func(f storage.FileInfo) bool {
		return f.MinTXID == min && f.MaxTXID == max
	})
}

func (r *replica) addFile(fi storage.FileInfo) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fs := r.levels[fi.Level]
	fs = append(fs, fi)
	sort.Slice(fs, func(i, j int) bool { return fs[i].MinTXID < fs[j].MinTXID })
	r.levels[fi.Level] = fs
}

func (r *replica) status(head ltx.TXID) ReplicaStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := ReplicaStatus{Name: r.name, TXID: r.pos, Checksum: r.posSum, LastSync: r.lastSync, Fencing: string(r.opts.Fencing)}
	if r.lastErr != nil {
		s.LastError = r.lastErr.Error()
	}
	if head > r.pos {
		s.Pending = int(head - r.pos)
	}
	return s
}

// create uploads a file create-only. A key found taken is read back
// (ownedBy): our own earlier attempt that landed without our hearing of it
// is a success; only another writer's object fences the DB. When the
// object cannot be read back the verdict is unknown and the create fails
// as any store error does, to be retried.
func (r *replica) create(ctx context.Context, level int, min, max ltx.TXID, path string, size int64, md storage.Metadata) (storage.FileInfo, error) {
	return r.createOnce(ctx, level, min, max, path, size, md, false)
}

// createOnce is create; replaced is set on the second try, after a deposed
// writer's orphan was removed from the key (never more than once a call).
func (r *replica) createOnce(ctx context.Context, level int, min, max ltx.TXID, path string, size int64, md storage.Metadata, replaced bool) (storage.FileInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return storage.FileInfo{}, fmt.Errorf("open local %s: %w", path, err)
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil {
		return storage.FileInfo{}, fmt.Errorf("stat local %s: %w", path, err)
	} else if st.Size() != size {
		return storage.FileInfo{}, fmt.Errorf("local file %s is damaged (size %d, want %d)", path, st.Size(), size)
	}
	trailer, err := readTrailer(f, size)
	if err != nil {
		return storage.FileInfo{}, fmt.Errorf("local file %s: read LTX trailer: %w", path, err)
	}
	cctx, cancel := context.WithTimeout(ctx, uploadTimeout(size))
	info, err := r.c.Create(cctx, level, min, max, f, md)
	cancel()
	r.count("put", size, err)
	name := fmt.Sprintf("level %d %s", level, storage.FormatFilename(min, max))
	if errors.Is(err, storage.ErrExists) {
		got, rerr := r.readBack(ctx, level, min, max, size)
		if rerr != nil {
			return storage.FileInfo{}, fmt.Errorf("replica %s: create %s: the key is taken and reading the object back to tell whether it is our own earlier upload failed (will retry): %w", r.name, name, rerr)
		}
		verdict := ownedBy(upload{Size: size, Trailer: trailer, MD: md}, got)
		if verdict == ownedByUs {
			r.log.Debug("create found its own earlier upload in place", "level", level, "file", storage.FormatFilename(min, max))
			return storage.FileInfo{Level: level, MinTXID: min, MaxTXID: max, Size: size, CreatedAt: md.CommitTime, Metadata: &md}, nil
		}
		if level == storage.LevelL0 && !replaced && supersedes(md, got.MD) {
			r.log.Warn("replacing an L0 file that a deposed writer left above the history this node took over",
				"file", storage.FormatFilename(min, max), "its_node", got.MD.Node, "its_token", got.MD.FencingToken,
				"our_token", md.FencingToken)
			if err := r.c.Delete(ctx, []storage.FileInfo{{Level: level, MinTXID: min, MaxTXID: max}}); err != nil {
				r.count("delete", 0, err)
				return storage.FileInfo{}, fmt.Errorf("replica %s: create %s: remove a deposed writer's file at the key (will retry): %w", r.name, name, err)
			}
			r.count("delete", 0, nil)
			r.dropFile(level, min, max)
			return r.createOnce(ctx, level, min, max, path, size, md, true)
		}
		ferr := fmt.Errorf("replica %s: create %s: %w: the store holds %s; stop this writer: %s",
			r.name, name, ErrFenced, verdict.describe(got), r.d.fencedBy(got.MD))
		r.d.fence(ferr)
		return storage.FileInfo{}, ferr
	} else if err != nil {
		return storage.FileInfo{}, fmt.Errorf("replica %s: create %s: %w", r.name, name, err)
	}
	return info, nil
}

// uploadPending uploads the local L0 files the store does not have yet, in
// TXID order, then any snapshot waiting for this replica.
func (r *replica) uploadPending(ctx context.Context) error {
	r.upMu.Lock()
	defer r.upMu.Unlock()
	// L0 files first (followers wait for them), then snapshots, then the L0
	// files a catch-up snapshot made reachable.
	if err := r.uploadL0s(ctx); err != nil {
		return err
	}
	if err := r.uploadSnapshots(ctx); err != nil {
		return err
	}
	return r.uploadL0s(ctx)
}

// uploadSnapshots uploads the level-9 snapshots queued for this replica.
func (r *replica) uploadSnapshots(ctx context.Context) error {
	for _, j := range r.d.pendingSnapshots(r) {
		if r.hasFile(storage.SnapshotLevel, 1, j.txid) {
			r.d.snapshotDone(j, r)
			continue
		}
		info, err := r.create(ctx, storage.SnapshotLevel, 1, j.txid, j.path, j.md.Size, r.d.storeMetadata(j.md, false))
		if err != nil {
			return err
		}
		r.addFile(info)
		r.mu.Lock()
		if r.needSnapshot && r.pos < j.txid {
			r.pos, r.posSum, r.jump, r.needSnapshot, r.dropWarned = j.txid, j.md.Post, j.txid, false, false
			r.d.m.txid.WithLabelValues(r.d.metricsDB(), r.name).Set(float64(j.txid))
		}
		r.mu.Unlock()
		r.log.Info("uploaded snapshot", "txid", j.txid, "size", j.md.Size)
		r.d.snapshotDone(j, r)
	}
	return nil
}

// noteDropped is told, before it happens, that the local L0 files through
// upto are dropped to bound the shadow directory. A replica that has not
// uploaded them yet can only catch up with a snapshot now: it says so once
// (until a snapshot has caught it up), naming how far behind it is.
func (r *replica) noteDropped(upto, head ltx.TXID, limit int64) {
	r.mu.Lock()
	pos, warned, last, lastErr := r.pos, r.dropWarned, r.lastSync, r.lastErr
	if pos < upto {
		r.dropWarned = true
	}
	r.mu.Unlock()
	if pos >= upto || warned {
		return
	}
	args := []any{"replica_txid", pos, "txid", head, "behind_txids", uint64(head - pos), "max_shadow_size", limit}
	if !last.IsZero() {
		args = append(args, "last_upload", last.Format(time.RFC3339), "behind_for", r.d.clock.Now().Sub(last).Round(time.Second).String())
	}
	if lastErr != nil {
		args = append(args, "last_error", lastErr.Error())
	}
	r.log.Warn("replica is too far behind: dropping the local files it has not uploaded to bound the shadow directory (max-shadow-size); it will get a snapshot when it is back", args...)
}

func (r *replica) hasFile(level int, min, max ltx.TXID) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, f := range r.levels[level] {
		if f.MinTXID == min && f.MaxTXID == max {
			return true
		}
	}
	return false
}

// localFloor is the TXID through which this replica needs no local L0
// file any more: uploaded, and compacted into L1 (or covered by a snapshot).
func (r *replica) localFloor() ltx.TXID {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.d.opts.Levels) == 0 {
		return r.pos
	}
	var l1 ltx.TXID
	for _, f := range r.levels[1] {
		l1 = max(l1, f.MaxTXID)
	}
	return min(r.pos, max(l1, r.jump))
}

// openInput opens one compaction input: an L0 file from the shadow
// directory when it is still there, otherwise from the store.
func (r *replica) openInput(ctx context.Context, fi storage.FileInfo) (io.ReadCloser, *storage.Metadata, error) {
	if fi.Level == 0 && r.d.local.has(fi.MinTXID) {
		if md, err := r.d.local.meta(fi.MinTXID); err == nil {
			if f, err := os.Open(r.d.local.path(fi.MinTXID)); err == nil {
				smd := r.d.storeMetadata(md, true)
				return f, &smd, nil
			}
		}
	}
	obj, err := r.c.Open(ctx, fi.Level, fi.MinTXID, fi.MaxTXID, 0, -1)
	r.count("get", fi.Size, err)
	if err != nil {
		return nil, nil, err
	}
	return obj, obj.Info.Metadata, nil
}

// position is the TXID through which the store has the L0 chain.
func (r *replica) position() ltx.TXID {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pos
}
