package primary

import (
	"fmt"

	"github.com/superfly/ltx"
)

// resumeAction is what Open does with the database it found.
type resumeAction int

const (
	// resumeContinue: the database is at the base position; ship from here.
	resumeContinue resumeAction = iota
	// resumeDelta: the WAL still holds the frames after the base position;
	// ship them as the next TXID.
	resumeDelta
	// resumeFull: the history since the base cannot be proven; write a full
	// image as the next TXID (and a level-9 snapshot of it).
	resumeFull
)

func (a resumeAction) String() string {
	return [...]string{"continue", "ship WAL since last position", "full snapshot"}[a]
}

// resumeInput is what Open knows when it decides how to go on.
type resumeInput struct {
	StoreTXID     ltx.TXID     // newest TXID over all replicas (0 = every store empty)
	StoreChecksum ltx.Checksum // its post-apply checksum
	StoreHasSum   bool         // false: the newest file has no metadata (another tool wrote it)

	HaveLocal     bool         // the shadow directory has a position
	LocalTXID     ltx.TXID     // TXID of the newest L0 file written locally
	LocalChecksum ltx.Checksum // its post-apply checksum
	// WALContinues: the WAL still holds, with the same salts and checksum
	// chain, every frame up to the local position, and more after it.
	WALContinues bool
	WALReason    string // why not, when not

	DBChecksum ltx.Checksum // checksum of the database as it is now

	// Adopting: the replicas hold another database's history, which this
	// one takes over (Options.AdoptReplica).
	Adopting bool
}

// resumeDecision is the outcome: the position the next TXID builds on
// (TXID+1 is the next one written) and what to write.
type resumeDecision struct {
	Action   resumeAction
	TXID     ltx.TXID     // base TXID
	Checksum ltx.Checksum // base checksum (pre-apply checksum of TXID+1)
	UseLocal bool         // the base is the local position
	Reason   string
}

// decideResume compares the database with the newest position known to the
// stores and the shadow directory. It never guesses: unless the database is
// exactly at the base position (same checksum), or the WAL provably holds
// everything since, the next TXID is a full image.
func decideResume(in resumeInput) resumeDecision {
	if in.StoreTXID == 0 {
		return resumeDecision{Action: resumeFull, Reason: "the replica stores are empty"}
	}
	d := resumeDecision{TXID: in.StoreTXID, Checksum: in.StoreChecksum}
	if in.Adopting {
		d.Action = resumeFull
		d.Reason = "adopting a replica of another database"
		return d
	}
	switch {
	case in.HaveLocal && in.LocalTXID > in.StoreTXID:
		// Written locally but not uploaded anywhere yet: the uploaders will
		// send the missing files.
		d = resumeDecision{TXID: in.LocalTXID, Checksum: in.LocalChecksum, UseLocal: true}
	case in.HaveLocal && in.LocalTXID == in.StoreTXID && (!in.StoreHasSum || in.StoreChecksum == in.LocalChecksum):
		d = resumeDecision{TXID: in.LocalTXID, Checksum: in.LocalChecksum, UseLocal: true}
	case !in.StoreHasSum:
		d.Action = resumeFull
		d.Reason = fmt.Sprintf("the newest file in the store (TXID %s) has no checksum metadata", in.StoreTXID)
		return d
	}
	if in.DBChecksum == d.Checksum {
		d.Action = resumeContinue
		d.Reason = "the database is at the newest position"
		return d
	}
	if d.UseLocal && in.WALContinues {
		d.Action = resumeDelta
		d.Reason = "the WAL holds every frame since the last position"
		return d
	}
	d.Action = resumeFull
	d.Reason = fmt.Sprintf("the database (checksum %s) is not at TXID %s (checksum %s) and the WAL history since cannot be proven",
		in.DBChecksum, d.TXID, d.Checksum)
	switch {
	case !d.UseLocal:
		d.Reason += fmt.Sprintf(" (the local position, TXID %s, is not the store's)", in.LocalTXID)
	case in.WALReason != "":
		d.Reason += ": " + in.WALReason
	}
	return d
}
