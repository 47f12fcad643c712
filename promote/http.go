package promote

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/lease"
)

// Control endpoints a node serves beside /status on its addr. Both are POST
// and take ?db=NAME (optional when the process runs one database).
const (
	// PathPromote: promote this follower; &force=1 breaks a live holder's
	// lease, &timeout=DURATION bounds the wait (default DefaultPromoteTimeout).
	PathPromote = "/promote"
	// PathHandOff: this primary hands over (planned promotion of a follower):
	// the answer carries the final TXID; &successor=NODE names the node that
	// asked, the only one a lease in mode kv then lets take over.
	PathHandOff = "/handoff"
)

// Answer is the JSON body of a control endpoint's reply.
type Answer struct {
	DB        string   `json:"db"`
	Role      string   `json:"role,omitempty"`
	TXID      ltx.TXID `json:"txid,omitempty"`
	Token     uint64   `json:"fencing_token,omitempty"`
	ElapsedMS int64    `json:"elapsed_ms"`
	Error     string   `json:"error,omitempty"`
	// JustPromoted: a hand-off refused because the node won a promotion
	// race moments ago (ErrJustPromoted).
	JustPromoted bool `json:"just_promoted,omitempty"`
}

// Handle registers the control endpoints for nodes on mux.
func Handle(mux *http.ServeMux, nodes []*Node) {
	HandleLookup(mux, func(name string) (*Node, error) {
		for _, n := range nodes {
			if n.Name() == name || (name == "" && len(nodes) == 1) {
				return n, nil
			}
		}
		return nil, fmt.Errorf("no database %q here", name)
	})
}

// HandleLookup registers the control endpoints on mux for the nodes find
// returns by the ?db= name ("" when none was given): for a set of nodes
// that changes (a dir: entry's databases), or names resolved more freely.
func HandleLookup(mux *http.ServeMux, find func(name string) (*Node, error)) {
	pick := func(w http.ResponseWriter, r *http.Request) *Node {
		if r.Method != http.MethodPost {
			http.Error(w, "use POST", http.StatusMethodNotAllowed)
			return nil
		}
		n, err := find(r.URL.Query().Get("db"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return nil
		}
		return n
	}
	mux.HandleFunc(PathPromote, func(w http.ResponseWriter, r *http.Request) {
		n := pick(w, r)
		if n == nil {
			return
		}
		q := r.URL.Query()
		force, _ := strconv.ParseBool(q.Get("force"))
		timeout := DefaultPromoteTimeout
		if s := q.Get("timeout"); s != "" {
			d, err := time.ParseDuration(s)
			if err != nil || d <= 0 {
				http.Error(w, "timeout must be a positive duration such as 30s", http.StatusBadRequest)
				return
			}
			timeout = d
		}
		t0 := time.Now()
		err := n.Promote(r.Context(), force, timeout)
		st := n.Status()
		writeAnswer(w, err, Answer{DB: n.Name(), Role: st.Role, Token: st.FencingToken, ElapsedMS: time.Since(t0).Milliseconds()})
	})
	mux.HandleFunc(PathHandOff, func(w http.ResponseWriter, r *http.Request) {
		n := pick(w, r)
		if n == nil {
			return
		}
		t0 := time.Now()
		txid, err := n.HandOffTo(r.Context(), r.URL.Query().Get("successor"))
		writeAnswer(w, err, Answer{DB: n.Name(), Role: n.Status().Role, TXID: txid, ElapsedMS: time.Since(t0).Milliseconds(),
			JustPromoted: errors.Is(err, ErrJustPromoted)})
	})
}

func writeAnswer(w http.ResponseWriter, err error, a Answer) {
	code := http.StatusOK
	if err != nil {
		a.Error = err.Error()
		code = http.StatusConflict
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(a)
}

// Call POSTs to a control endpoint and decodes the answer; a refusal is
// returned as an error carrying the node's explanation.
func Call(ctx context.Context, hc *http.Client, endpoint string) (Answer, error) {
	var a Answer
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, nil)
	if err != nil {
		return a, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return a, fmt.Errorf("POST %s: %w", redactQuery(endpoint), err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err := json.Unmarshal(body, &a); err != nil {
		return a, fmt.Errorf("POST %s: %s: %s", redactQuery(endpoint), resp.Status, body)
	}
	if a.Error != "" {
		return a, fmt.Errorf("%s", a.Error)
	}
	return a, nil
}

func redactQuery(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "?"
	}
	u.RawQuery = ""
	return u.String()
}

// requestHandOff asks the primary at advertise to hand over.
func (n *Node) requestHandOff(ctx context.Context, advertise string) (ltx.TXID, error) {
	u, err := EndpointURL(advertise, PathHandOff[1:], n.cfg.Name)
	if err != nil {
		return 0, err
	}
	// Name this node as the successor, so that no other may take the lease.
	successor := lease.NodeName(n.cfg.Lease)
	if successor == "" {
		successor = n.cfg.Node
	}
	u += "&successor=" + url.QueryEscape(successor)
	a, err := Call(ctx, n.cfg.HTTPClient, u)
	if a.JustPromoted {
		return 0, fmt.Errorf("%w: %w", ErrLostRace, err)
	}
	return a.TXID, err
}
