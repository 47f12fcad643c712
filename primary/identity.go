package primary

import (
	"errors"
	"fmt"
	"strings"

	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/internal/dbid"
	"github.com/understudy-db/understudy/internal/storage"
)

// ErrForeignReplica means a replica holds the history of another database
// (its objects carry another database identity): the primary refuses it
// unless Options.AdoptReplica says to take it over.
var ErrForeignReplica = errors.New("the replica holds another database's history")

// storeIdentity is what one replica's newest object says about whose
// history the replica holds.
type storeIdentity struct {
	Replica  string // replica name
	Location string // its URL, for messages ("" unknown)
	TXID     ltx.TXID
	Checksum ltx.Checksum // post-apply checksum of the newest object
	HasSum   bool
	ID       string // database identity ("" none: Litestream, an older Understudy)
	Path     string // path of the database its writer shipped ("" unknown)
	Node     string // node of its writer
}

func (s storeIdentity) name() string {
	if s.Location != "" {
		return fmt.Sprintf("%s (%s)", s.Replica, s.Location)
	}
	return s.Replica
}

// owner describes the database whose history s holds.
func (s storeIdentity) owner() string {
	return describeOwner(s.Path, s.Node, s.ID)
}

func describeOwner(path, node, id string) string {
	var b strings.Builder
	if path != "" {
		b.WriteString(path)
	} else {
		b.WriteString("a database")
	}
	if node != "" {
		fmt.Fprintf(&b, " on node %s", node)
	}
	fmt.Fprintf(&b, " (database id %s)", id)
	return b.String()
}

// identityInput is what Open knows when it decides which history this
// database continues.
type identityInput struct {
	Path       string // this database
	ShadowDir  string // where its identity is recorded
	Local      string // identity recorded in the shadow directory ("" none)
	Stores     []storeIdentity
	DBChecksum ltx.Checksum // the database as it is now
	Adopt      bool         // Options.AdoptReplica
}

// identityDecision is the identity the database goes on with, and what to
// tell the operator about it.
type identityDecision struct {
	ID      string
	Adopted bool     // a replica of another database is taken over
	Origin  string   // how it was found, recorded beside the database
	Warn    []string // things to log as warnings
	Info    []string // things to log as information
}

// decideIdentity decides whose history the replicas hold and whether this
// database may continue it:
//   - a replica with no identity (empty, or written by Litestream or an
//     older Understudy) is taken on as it always was, and the log says so
//     when it held something;
//   - one that carries this database's recorded identity is its own;
//   - one that carries another identity belongs to another database:
//     refused (ErrForeignReplica, naming both), unless the database has no
//     identity of its own yet and is exactly at the replica's newest
//     position (a restored, followed or promoted copy of that history; the
//     checksum proves it), or the operator said to adopt the replica.
//
// A database with no identity that takes no one's history on gets a new
// one. An adopted replica gets this database's identity: the other
// database is then refused (not fenced again and again) when it comes back.
func decideIdentity(in identityInput, mint func() string) (identityDecision, error) {
	var dec identityDecision
	var owned *storeIdentity // a replica with an identity
	for i := range in.Stores {
		s := &in.Stores[i]
		switch {
		case s.TXID == 0:
		case s.ID == "":
			dec.Info = append(dec.Info, fmt.Sprintf("replica %s has no database identity (written by Litestream or an older Understudy, TXID %s): "+
				"continuing it as the history of %s", s.name(), s.TXID, in.Path))
		case owned == nil:
			owned = s
		case s.ID != owned.ID && !in.Adopt:
			return dec, fmt.Errorf("database %s: replicas %s and %s hold the histories of two different databases: %s and %s; "+
				"give each database replicas of its own (or start once with -adopt-replica to replace both with this database's history): %w",
				in.Path, owned.name(), s.name(), owned.owner(), s.owner(), ErrForeignReplica)
		}
	}
	switch {
	case owned == nil:
		dec.ID, dec.Origin = in.Local, "recorded"
		if dec.ID == "" {
			dec.ID, dec.Origin = mint(), "minted for a new history"
		}
	case owned.ID == in.Local:
		dec.ID, dec.Origin = in.Local, "recorded"
	case in.Local == "" && owned.HasSum && owned.Checksum == in.DBChecksum:
		dec.ID, dec.Origin = owned.ID, fmt.Sprintf("continued from replica %s at TXID %s", owned.Replica, owned.TXID)
		dec.Info = append(dec.Info, fmt.Sprintf("the database is exactly at the newest position of replica %s (TXID %s, checksum %s): "+
			"continuing the history of %s", owned.name(), owned.TXID, owned.Checksum, owned.owner()))
	case in.Adopt:
		dec.ID, dec.Origin, dec.Adopted = in.Local, "adopted a replica", true
		if dec.ID == "" {
			dec.ID = mint()
		}
		for _, s := range in.Stores {
			if s.ID != "" && s.ID != dec.ID {
				dec.Warn = append(dec.Warn, fmt.Sprintf("adopting replica %s (adopt-replica): it held the history of %s; "+
					"it now continues %s (database id %s) with a full image, and the other database will be refused by it",
					s.name(), s.owner(), in.Path, dec.ID))
			}
		}
	default:
		this := fmt.Sprintf("no database identity recorded in %s", in.ShadowDir)
		if in.Local != "" {
			this = "database id " + in.Local
		}
		return dec, fmt.Errorf("database %s: replica %s holds the history of another database: %s, not %s (%s); "+
			"refusing to take it over. Point this database at a replica of its own; if it really is to replace that history "+
			"(or it is a copy of that database restored without its identity), start once with -adopt-replica (config: adopt-replica: true): %w",
			in.Path, owned.name(), owned.owner(), in.Path, this, ErrForeignReplica)
	}
	return dec, nil
}

// fencedBy says who owns an object that a create-only upload found in its
// way: another node continuing this database's history, or another
// database altogether (whose identity the object carries).
func (d *DB) fencedBy(md *storage.Metadata) string {
	if md != nil && md.DatabaseID != "" && d.dbID != "" && md.DatabaseID != d.dbID {
		return fmt.Sprintf("another database writes to this replica: %s, not %s (database id %s); "+
			"point one of them at a replica of its own", describeOwner(md.DatabasePath, md.Node, md.DatabaseID), d.opts.Path, d.dbID)
	}
	if md != nil && md.Node != "" {
		return fmt.Sprintf("another node is primary (node %s)", md.Node)
	}
	return "another node is primary"
}

// settleIdentityLocked decides, at Open, which history the database
// continues (decideIdentity), records it beside the database and logs why.
// It returns whether a replica is being adopted (then the next TXID is a
// full image whatever the positions say).
func (d *DB) settleIdentityLocked(stores []storeIdentity, dbSum ltx.Checksum) (adopting bool, err error) {
	rec, err := dbid.Read(d.shadowDir)
	if err != nil {
		return false, err
	}
	in := identityInput{Path: d.opts.Path, ShadowDir: d.shadowDir, Local: rec.ID, Stores: stores, DBChecksum: dbSum, Adopt: d.opts.AdoptReplica}
	dec, err := decideIdentity(in, dbid.New)
	if err != nil {
		return false, err
	}
	for _, m := range dec.Warn {
		d.log.Warn(m)
	}
	for _, m := range dec.Info {
		d.log.Info(m)
	}
	if dec.ID != rec.ID {
		if err := dbid.Write(d.shadowDir, dbid.Record{ID: dec.ID, Origin: dec.Origin}); err != nil {
			return false, err
		}
	}
	d.dbID = dec.ID
	return dec.Adopted, nil
}
