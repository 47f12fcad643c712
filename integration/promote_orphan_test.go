package integration

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/internal/ltxtest"
	"github.com/understudy-db/understudy/internal/storage"
	"github.com/understudy-db/understudy/internal/storage/file"
)

// TestPromoteForcedReplacesDeposedOrphan: a primary that uploads several L0
// files at once and is killed can leave a file above a missing one (TXIDs n
// and n+2 landed, n+1 did not). The node that takes over replays to n,
// claims n+1 and would then find n+2 taken by the dead writer and fence
// itself on its first upload: a failover that stops at once. The orphan
// holds nothing restorable (no chain reaches it past the claim), carries
// the deposed writer's lower fencing token and this history's identity, so
// the new primary replaces it, says so, and ships on.
func TestPromoteForcedReplacesDeposedOrphan(t *testing.T) {
	c := newCluster(t)
	a := c.kvNode("a", false)
	b := c.kvNode("b", false)
	ap := startApp(t, a.dbPath)
	a.replicate(t)
	a.waitPrimary(t)
	b.follow(t)
	ap.waitCommits(t, 200)
	b.waitFollowing(t)
	a.d.kill()
	ap.halt()
	ap.db.Close()

	// The dead primary's orphan: a file two TXIDs above the store's head
	// with its metadata (node a, a's token, the history's identity), as a
	// window upload that outran the one below it leaves it. (A zero-page
	// file: what it holds does not matter, only whose key it takes.)
	store, err := file.New(c.store)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	it, err := store.List(ctx, storage.LevelL0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var head storage.FileInfo
	for it.Next() {
		head = it.Item()
	}
	it.Close()
	obj, err := store.Open(ctx, storage.LevelL0, head.MinTXID, head.MaxTXID, 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	dec := ltx.NewDecoder(obj)
	err = dec.DecodeHeader()
	obj.Close()
	if err != nil || obj.Info.Metadata == nil || obj.Info.Metadata.DatabaseID == "" {
		t.Fatalf("read the head L0 file: %v, metadata %+v", err, obj.Info.Metadata)
	}
	h := dec.Header()
	orphan := head.MaxTXID + 2
	data := ltxtest.Encode(t, h.PageSize, h.Commit, orphan, orphan, time.Now(), nil, nil)
	md := *obj.Info.Metadata
	// Its own transition: from a's TXID head+1 (never uploaded) onwards.
	md.PreApplyChecksum, md.PostApplyChecksum = ltx.ChecksumFlag|0x1234, ltx.ChecksumFlag|0x5678
	if _, err := store.Create(ctx, storage.LevelL0, orphan, orphan, bytes.NewReader(data), md); err != nil {
		t.Fatal(err)
	}

	if res := run(t, nil, "promote", "-config", b.config, "-force", "-timeout", "30s"); res.code != 0 {
		t.Fatalf("promote -force: exit %d\n%s%s\nfollower:\n%s", res.code, res.stdout, res.stderr, tailLines(b.d.out.String(), 30))
	}
	b.waitPrimary(t)
	nb := openDB(t, b.dbPath)
	for i := 0; i < 20; i++ {
		mustExec(t, nb, `INSERT INTO log(v) VALUES ('after promotion')`)
		time.Sleep(20 * time.Millisecond) // several syncs: the orphan's TXID gets written
	}
	img := snapshotImage(t, nb)
	at := b.waitShippedAt(t, img.checksum)
	if at < orphan {
		t.Fatalf("the new primary is at TXID %s, below the orphan's %s: the test did not reach it", at, ltx.TXID(orphan))
	}
	if !strings.Contains(b.d.out.String(), "deposed writer left") {
		t.Errorf("the new primary did not say it replaced the orphan:\n%s", tailLines(b.d.out.String(), 30))
	}
	if got := fileChecksum(t, c.restoreStore(t)); got != img.checksum {
		t.Fatalf("restore of the store has checksum %s, the new primary %s", got, img.checksum)
	}
}
