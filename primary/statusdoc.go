package primary

import (
	"time"

	"github.com/superfly/ltx"
)

// StatusDoc is one primary database in /status and `understudy status
// -json` (the follower's counterpart is follower.Status).
type StatusDoc struct {
	Role     string             `json:"role"`
	DB       string             `json:"db"`
	TXID     ltx.TXID           `json:"txid"`
	Checksum ltx.Checksum       `json:"checksum"`
	Fenced   bool               `json:"fenced"`
	Warning  string             `json:"warning,omitempty"`
	Replicas []ReplicaStatusDoc `json:"replicas"`
}

// ReplicaStatusDoc is one replica in a StatusDoc.
type ReplicaStatusDoc struct {
	Name      string       `json:"name"`
	TXID      ltx.TXID     `json:"txid"`
	Checksum  ltx.Checksum `json:"checksum"`
	LastSync  *time.Time   `json:"last_sync,omitempty"`
	LastError string       `json:"last_error,omitempty"`
	Pending   int          `json:"pending_txids"`
	// Fencing is storage.Fencing: "lease+create-only", "lock+read-back", ...
	Fencing string `json:"fencing,omitempty"`
}

// Document is st as its /status document.
func (st Status) Document() StatusDoc {
	doc := StatusDoc{Role: "primary", DB: st.Path, TXID: st.TXID, Checksum: st.Checksum, Fenced: st.Fenced, Warning: st.Warning}
	for _, r := range st.Replicas {
		rd := ReplicaStatusDoc{Name: r.Name, TXID: r.TXID, Checksum: r.Checksum, LastError: r.LastError, Pending: r.Pending, Fencing: r.Fencing}
		if !r.LastSync.IsZero() {
			t := r.LastSync.UTC()
			rd.LastSync = &t
		}
		doc.Replicas = append(doc.Replicas, rd)
	}
	return doc
}

// StatusDocument is /status for a process of primaries: {"dbs": [...]}.
func StatusDocument(dbs ...*DB) any {
	out := make([]StatusDoc, 0, len(dbs))
	for _, db := range dbs {
		out = append(out, db.Status().Document())
	}
	return map[string]any{"dbs": out}
}
