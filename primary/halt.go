package primary

import (
	"context"
	"errors"
	"fmt"

	"github.com/superfly/ltx"
)

// ErrHalted means the shipper was told to stop acting as primary (the lease
// was lost, or the node handed over): nothing more is shipped and the
// application's writes are held until Close.
var ErrHalted = errors.New("this node may no longer act as primary: shipping stopped and application writes halted")

// Halt stops shipping at once and takes the database's write lock for good,
// so that the application's next write fails with SQLITE_BUSY: the node lost
// the right to write (reason says why). Run then returns an error wrapping
// ErrHalted. Uploads in flight finish or fail; no new one starts. Halt on a
// DB that is already halted or fenced only makes sure the writes are held.
func (d *DB) Halt(reason string) error {
	d.fence(fmt.Errorf("%s: %w", reason, ErrHalted))
	return d.haltWrites()
}

// errLeaseUnsafe is why a DB stops when its lease's safe window ended.
var errLeaseUnsafe = fmt.Errorf("the lease's safe window ended: %w", ErrHalted)

// leaseSafe asks the lease whether this node may still act as primary.
func (d *DB) leaseSafe() bool {
	return d.opts.LeaseSafe == nil || d.opts.LeaseSafe()
}

// keepHaltedLocked turns the write lock the writer connection holds now
// into the halt: it is kept for good, and the DB is fenced with why.
func (d *DB) keepHaltedLocked(why error) {
	d.keepWritesLocked()
	d.fence(why)
	d.log.Error("the lease's safe window ended while the write lock was held: keeping it; the application's writes stay halted")
}

// keepWritesLocked marks the write lock the writer holds now as the halt:
// kept for good, past the writer's transaction too (HoldableVFS), so that
// Detach can hand it to the follower the node becomes.
func (d *DB) keepWritesLocked() {
	d.halted = true
	if err := d.writer.SetKeepWriteLock(context.Background(), true); err != nil {
		// The open transaction still holds it; only the hand-over is lost.
		d.log.Warn("cannot keep the write lock past the writer's transaction", "error", err)
	}
}

// Halted reports whether the application's writes are held (after Halt,
// HandOff or a fence).
func (d *DB) Halted() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.halted
}

// HandOff ends this node's tenure for a planned handover: it holds the
// application's writes first (nothing commits after this point), ships
// everything committed before to every replica, then stops shipping. It
// returns the final TXID every replica holds; the next primary continues
// from there, so no committed transaction is lost. On error the writes stay
// held: the caller decides whether to resume (Close and reopen) or not.
func (d *DB) HandOff(ctx context.Context) (ltx.TXID, error) {
	if err := d.haltWrites(); err != nil {
		return 0, err
	}
	if err := d.Sync(ctx); err != nil {
		return 0, fmt.Errorf("database %s: hand-off: shipping the last transactions: %w", d.opts.Path, err)
	}
	txid := ltx.TXID(d.head.Load())
	for _, r := range d.Status().Replicas {
		if r.TXID != txid {
			return 0, fmt.Errorf("database %s: hand-off: replica %s is at TXID %s, not the final TXID %s", d.opts.Path, r.Name, r.TXID, txid)
		}
	}
	d.fence(fmt.Errorf("handed over at TXID %s: %w", txid, ErrHalted))
	return txid, nil
}

// Detach ends the DB as a shipper but keeps the application's writes held:
// the connection holding the write lock stays open, everything else is
// released, the shadow directory's lock included. With Options.Locks the
// connection goes there, for the follower the node becomes to apply
// through (the database stays at its path); without, it is never closed,
// so that the application's writes keep failing rather than commit a
// history nobody ships. Halt first.
func (d *DB) Detach() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return
	}
	d.closed = true
	for i, c := range d.pins {
		if c != nil {
			c.Close()
			d.pins[i] = nil
		}
	}
	if d.ckpt != nil {
		d.ckpt.Close()
		d.ckpt = nil
	}
	switch {
	case !d.halted && d.writer != nil:
		d.writer.Close() // nothing to hold: never halted
	case d.writer != nil && d.opts.Locks != nil:
		// The lock outlives the transaction (keepWritesLocked): the
		// follower the node becomes applies through this connection.
		if err := d.writer.Exec(context.Background(), "ROLLBACK"); err != nil {
			d.log.Warn("ending the halted writer's transaction", "error", err)
		}
		d.opts.Locks.Put(d.writer)
	}
	d.writer = nil // kept open on purpose when halted; see above
	// The checkpoint lock is let go but its descriptor stays open (and is
	// never closed): closing a descriptor of "-shm" would drop the write
	// lock held above.
	d.ckl.release()
	d.stage.close()
	d.local.close()
	d.local = nil
}
