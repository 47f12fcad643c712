package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"
)

// statusTimeout bounds the whole request to the daemon: a daemon that
// accepts the connection but does not answer is reported, not waited for.
const statusTimeout = 10 * time.Second

func init() {
	registerCommand(&cli.Command{
		Name:  "status",
		Usage: "show the positions, lag and health of the running daemon (primary or follower)",
		Description: "Reads the /status document of the daemon listening on ADDR (default: the config's addr)\n" +
			"and prints it as a table, or as the daemon's JSON with -json.",
		Flags: commonFlags(
			&cli.StringFlag{Name: "addr", Usage: "the daemon's `ADDR` (host:port or http://host:port; default: the config's addr)"},
			&cli.BoolFlag{Name: "json", Usage: "print the daemon's JSON document instead of a table"},
			&cli.StringFlag{Name: "db", Usage: "show one database of a dir: entry in full: `NAME` is its path relative to the directory"},
		),
		Action: runStatus,
	})
}

func runStatus(c *cli.Context) error {
	if c.NArg() > 0 {
		return fmt.Errorf("status: takes no arguments (got %q); use -addr ADDR or -config PATH", c.Args().First())
	}
	addr := c.String("addr")
	if addr == "" {
		cfg, err := loadConfig(c)
		if err != nil {
			return fmt.Errorf("status: give -addr ADDR, or a config whose addr: the daemon serves: %w", err)
		}
		if cfg.Addr == "" {
			path, _ := configPath(c)
			return fmt.Errorf("status: %s sets no addr:, so no daemon of it serves /status; give -addr ADDR", path)
		}
		addr = cfg.Addr
	}
	url, err := statusURL(addr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(c.Context, statusTimeout)
	defer cancel()
	if name := c.String("db"); name != "" {
		url = strings.TrimSuffix(url, "/status") + "/status/db/" + strings.TrimPrefix(name, "/")
	}
	body, err := fetchStatus(ctx, url)
	if err != nil {
		return err
	}
	if c.Bool("json") {
		_, err := c.App.Writer.Write(body)
		return err
	}
	var doc statusView
	if c.String("db") != "" {
		var one dbStatusView
		if err := json.Unmarshal(body, &one); err != nil {
			return fmt.Errorf("status: %s answered something that is not an understudy status document: %w", url, err)
		}
		doc.DBs = []dbStatusView{one}
	} else if err := json.Unmarshal(body, &doc); err != nil {
		return fmt.Errorf("status: %s answered something that is not an understudy status document: %w", url, err)
	}
	return printStatus(c.App.Writer, doc, time.Now())
}

// statusURL turns a configured addr (":9090", "host:port" or a URL) into the
// URL of its /status document. An empty host means this machine.
func statusURL(addr string) (string, error) {
	base, err := daemonURL(addr)
	if err != nil {
		return "", fmt.Errorf("status: addr %q is not host:port or http://host:port: %w", addr, err)
	}
	return base + "/status", nil
}

// daemonURL is the base URL of the daemon serving on addr (":9090",
// "host:port" or a URL, for status and promote); an empty or wildcard host
// means this machine.
func daemonURL(addr string) (string, error) {
	base := strings.TrimRight(addr, "/")
	if !strings.Contains(base, "://") {
		host, port, err := net.SplitHostPort(base)
		if err != nil {
			return "", err
		}
		if host == "" || host == "0.0.0.0" || host == "::" {
			host = "127.0.0.1"
		}
		base = "http://" + net.JoinHostPort(host, port)
	}
	return base, nil
}

func fetchStatus(ctx context.Context, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return nil, fmt.Errorf("status: no understudy daemon answers at %s (is `understudy replicate` or `understudy follow` running with this addr?): %w", url, err)
		}
		return nil, fmt.Errorf("status: get %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("status: read %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status: %s answered %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	return body, nil
}

// statusView is the union of the primary's and the follower's /status
// fields that the table shows; both documents are {"dbs": [...]}.
type statusView struct {
	DBs  []dbStatusView  `json:"dbs"`
	Dirs []dirStatusView `json:"dirs"` // replicate's dir: entries
}

// dirStatusView is a dir: entry of replicate: totals and the databases
// furthest behind (fleet.Status).
type dirStatusView struct {
	Role      string         `json:"role"` // "follower" for follow's directories (followdir.Status)
	Dir       string         `json:"dir"`
	Databases int            `json:"databases"`
	Active    int            `json:"active"`
	Parked    int            `json:"parked"`
	Opening   int            `json:"opening"`
	Failed    int            `json:"failed"`
	Pending   int            `json:"pending_txids"`
	Worst     []dbStatusView `json:"worst"`
	// follow's
	Replica       string  `json:"replica"`
	Polling       string  `json:"polling"`
	Following     int     `json:"following"`
	Starting      int     `json:"starting"`
	Stalled       int     `json:"stalled"`
	Stopped       int     `json:"stopped"`
	Gone          int     `json:"gone"`
	CaughtUp      int     `json:"caught_up"`
	LagTXIDs      uint64  `json:"lag_txids"`
	MaxLagSeconds float64 `json:"max_lag_seconds"`
	DiscoverError string  `json:"discover_error"`
}

type dbStatusView struct {
	Role     string `json:"role"`
	DB       string `json:"db"`
	TXID     string `json:"txid"`
	Checksum string `json:"checksum"`
	// a node under a lease (replicate or follow with a lease: section)
	Node         string  `json:"node"`
	FencingToken *uint64 `json:"fencing_token"`
	Diverged     string  `json:"diverged_saved_to"`
	// primary
	Fenced   bool `json:"fenced"`
	Replicas []struct {
		Name      string     `json:"name"`
		TXID      string     `json:"txid"`
		LastSync  *time.Time `json:"last_sync"`
		LastError string     `json:"last_error"`
		Pending   int        `json:"pending_txids"`
		Fencing   string     `json:"fencing"`
	} `json:"replicas"`
	// follower
	State      string     `json:"state"`
	Healthy    *bool      `json:"healthy"`
	Replica    string     `json:"replica"`
	HeadTXID   string     `json:"head_txid"`
	LagSeconds float64    `json:"lag_seconds"`
	LagTXIDs   uint64     `json:"lag_txids"`
	LastApply  *time.Time `json:"last_apply"`
	MovedAside string     `json:"moved_aside"`
	Error      string     `json:"error"`
	// a database of a dir: entry
	Name string `json:"name"`
}

// printStatus writes doc as a table: one line per database, one indented
// line per replica of a primary, then any errors in full. A daemon under a
// lease adds the columns NODE and FENCING TOKEN (the token every upload of
// the primary carries, which tells one holder of the lease from the next).
func printStatus(w io.Writer, doc statusView, now time.Time) error {
	for _, dir := range doc.Dirs {
		if dir.Role == "follower" {
			fmt.Fprintf(w, "directory %s following %s: %d databases (%d following, %d caught up, %d starting, %d stalled, %d stopped, %d gone), %d TXIDs behind, worst lag %.1fs, polling %s\n",
				dir.Dir, dir.Replica, dir.Databases, dir.Following, dir.CaughtUp, dir.Starting, dir.Stalled, dir.Stopped, dir.Gone, dir.LagTXIDs, dir.MaxLagSeconds, orDash(dir.Polling))
			if dir.DiscoverError != "" {
				fmt.Fprintf(w, "  cannot list the prefix for new databases: %s\n", dir.DiscoverError)
			}
		} else {
			fmt.Fprintf(w, "directory %s: %d databases (%d active, %d parked, %d opening, %d failed), %d TXIDs pending\n",
				dir.Dir, dir.Databases, dir.Active, dir.Parked, dir.Opening, dir.Failed, dir.Pending)
		}
		if len(dir.Worst) > 0 {
			fmt.Fprintf(w, "  furthest behind (status -db NAME for one): ")
			for i, d := range dir.Worst {
				if i > 0 {
					fmt.Fprint(w, ", ")
				}
				fmt.Fprint(w, d.Name)
			}
			fmt.Fprintln(w)
		}
		doc.DBs = append(doc.DBs, dir.Worst...)
	}
	if len(doc.DBs) == 0 && len(doc.Dirs) > 0 {
		return nil
	}
	if len(doc.DBs) == 0 {
		_, err := fmt.Fprintln(w, "the daemon serves no databases")
		return err
	}
	leased := slices.ContainsFunc(doc.DBs, func(d dbStatusView) bool { return d.FencingToken != nil })
	// lease is the end of a database's line: its lease columns, if any.
	lease := func(d dbStatusView) string {
		switch {
		case !leased:
			return "\n"
		case d.FencingToken == nil:
			return "\t-\t-\n"
		}
		return fmt.Sprintf("\t%s\t%d\n", orDash(d.Node), *d.FencingToken)
	}
	// A replica's line ends its LAST CHANGE cell with a tab under a lease,
	// so that the cell counts in the column's width.
	replicaEnd := "\n"
	if leased {
		replicaEnd = "\t\n"
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprint(tw, "ROLE\tDATABASE\tSTATE\tTXID\tCHECKSUM\tLAG\tLAST CHANGE")
	if leased {
		fmt.Fprint(tw, "\tNODE\tFENCING TOKEN")
	}
	fmt.Fprintln(tw)
	var notes []string
	for _, d := range doc.DBs {
		switch d.Role {
		case "follower":
			state := d.State
			if d.Healthy != nil && !*d.Healthy {
				state += " (unhealthy)"
			}
			lag := fmt.Sprintf("%.1fs, %d TXIDs", d.LagSeconds, d.LagTXIDs)
			applied := "no change applied since start"
			if d.LastApply != nil {
				applied = "applied " + ago(d.LastApply, now)
			}
			fmt.Fprintf(tw, "follower\t%s\t%s\t%s\t%s\t%s\t%s%s", d.DB, state, d.TXID, d.Checksum, lag, applied, lease(d))
			if d.MovedAside != "" {
				notes = append(notes, fmt.Sprintf("%s: a local copy that did not verify was kept aside as %s", d.DB, d.MovedAside))
			}
		default:
			state := "shipping"
			if d.State != "" && d.State != "active" {
				state = d.State // a database of a dir: entry (parked, opening, failed)
			}
			if d.Fenced {
				state = "fenced"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t\t%s", orDash(d.Role), d.DB, state, d.TXID, d.Checksum, lease(d))
			for _, r := range d.Replicas {
				rstate := "ok"
				if r.LastError != "" {
					rstate = "failing"
				}
				fencing := ""
				if r.Fencing != "" {
					fencing = ", fencing " + r.Fencing
				}
				fmt.Fprintf(tw, "  replica\t%s\t%s\t%s\t\t%d TXIDs pending\tsynced %s%s%s", r.Name, rstate, r.TXID, r.Pending, ago(r.LastSync, now), fencing, replicaEnd)
				if r.LastError != "" {
					notes = append(notes, fmt.Sprintf("%s replica %s: %s", d.DB, r.Name, r.LastError))
				}
			}
		}
		if d.Error != "" {
			notes = append(notes, fmt.Sprintf("%s: %s", d.DB, d.Error))
		}
		if d.Diverged != "" {
			notes = append(notes, fmt.Sprintf("%s: the transactions this node had not shipped when it was deposed are saved in %s", d.DB, d.Diverged))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, n := range notes {
		if _, err := fmt.Fprintln(w, n); err != nil {
			return err
		}
	}
	return nil
}

func ago(t *time.Time, now time.Time) string {
	if t == nil || t.IsZero() {
		return "never"
	}
	return fmt.Sprintf("%s ago", now.Sub(*t).Round(time.Millisecond))
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
