// Command demo shows Understudy on the embedded default: a sample database
// with a small writer, `understudy replicate` shipping it to a file replica in
// a temp directory, and `understudy follow` keeping a live copy that a reader
// queries. It prints both positions once a second and cleans up on Ctrl-C.
//
// Run it with `make demo` (which builds ./bin/understudy first).
package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	_ "github.com/mattn/go-sqlite3"
)

func main() {
	bin := flag.String("bin", "./bin/understudy", "understudy binary")
	keep := flag.Bool("keep", false, "keep the temp directory on exit")
	duration := flag.Duration("duration", 0, "stop by itself after this long (0 = until Ctrl-C)")
	flag.Parse()
	if err := run(*bin, *keep, *duration); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run(bin string, keep bool, duration time.Duration) error {
	bin, err := filepath.Abs(bin)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "understudy-demo-")
	if err != nil {
		return err
	}
	if !keep {
		defer os.RemoveAll(dir)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, duration)
		defer cancel()
	}

	dbPath := filepath.Join(dir, "app.db")
	replica := "file://" + filepath.Join(dir, "replica")
	followerPath := filepath.Join(dir, "follower.db")
	fmt.Printf("demo directory: %s\n  primary:  %s\n  replica:  %s\n  follower: %s\n\n", dir, dbPath, replica, followerPath)

	app, err := sql.Open("sqlite3", "file:"+dbPath+"?_journal_mode=WAL&_synchronous=NORMAL&_busy_timeout=5000")
	if err != nil {
		return err
	}
	defer app.Close()
	app.SetMaxOpenConns(1)
	if _, err := app.Exec(`CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, item TEXT, at TEXT)`); err != nil {
		return fmt.Errorf("create sample database: %w", err)
	}

	pAddr, fAddr := freeAddr(), freeAddr()
	procs := []*exec.Cmd{
		exec.Command(bin, "replicate", "-addr", pAddr, dbPath, replica),
	}
	for _, p := range procs {
		if err := startProc(p, dir, "replicate"); err != nil {
			return err
		}
	}
	// The follower needs something in the replica to bootstrap from.
	time.Sleep(1500 * time.Millisecond)
	follow := exec.Command(bin, "follow", "-addr", fAddr, "-poll-interval", "200ms", replica, followerPath)
	if err := startProc(follow, dir, "follow"); err != nil {
		return err
	}
	procs = append(procs, follow)
	defer func() {
		for _, p := range procs {
			_ = p.Process.Signal(syscall.SIGTERM)
			_ = p.Wait()
		}
		if keep {
			fmt.Println("kept", dir)
		} else {
			fmt.Println("cleaned up", dir)
		}
	}()

	fmt.Println("writing an order every 100 ms; Ctrl-C to stop (logs in the demo directory)")
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	report := time.NewTicker(time.Second)
	defer report.Stop()
	n := 0
	for {
		select {
		case <-ctx.Done():
			fmt.Println()
			return nil
		case <-tick.C:
			n++
			if _, err := app.Exec(`INSERT INTO orders(item, at) VALUES (?, datetime('now'))`, fmt.Sprintf("item-%d", n)); err != nil {
				return fmt.Errorf("write: %w", err)
			}
		case <-report.C:
			fmt.Println(line(app, pAddr, fAddr, followerPath))
		}
	}
}

func startProc(cmd *exec.Cmd, dir, name string) error {
	log, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start understudy %s: %w (run `make build` first)", name, err)
	}
	return nil
}

func freeAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// line is one report: rows and TXID on the primary, on the follower, lag.
func line(app *sql.DB, pAddr, fAddr, followerPath string) string {
	var rows int
	_ = app.QueryRow(`SELECT count(*) FROM orders`).Scan(&rows)
	var p struct {
		DBs []struct {
			TXID string `json:"txid"`
		} `json:"dbs"`
	}
	var f struct {
		DBs []struct {
			TXID       string  `json:"txid"`
			LagSeconds float64 `json:"lag_seconds"`
			LagTXIDs   uint64  `json:"lag_txids"`
			State      string  `json:"state"`
		} `json:"dbs"`
	}
	pTX, fTX, state := "-", "-", "starting"
	var lag float64
	var lagTX uint64
	if getJSON("http://"+pAddr+"/status", &p) == nil && len(p.DBs) > 0 {
		pTX = p.DBs[0].TXID
	}
	if getJSON("http://"+fAddr+"/status", &f) == nil && len(f.DBs) > 0 {
		fTX, lag, lagTX, state = f.DBs[0].TXID, f.DBs[0].LagSeconds, f.DBs[0].LagTXIDs, f.DBs[0].State
	}
	fRows := "-"
	if ro, err := sql.Open("sqlite3", "file:"+followerPath+"?mode=ro&_busy_timeout=2000"); err == nil {
		var n int
		if ro.QueryRow(`SELECT count(*) FROM orders`).Scan(&n) == nil {
			fRows = fmt.Sprint(n)
		}
		ro.Close()
	}
	return fmt.Sprintf("%s  primary: %5d rows, txid %s | follower (%s): %5s rows, txid %s, lag %.2fs / %d txids",
		time.Now().Format("15:04:05"), rows, pTX, state, fRows, fTX, lag, lagTX)
}

func getJSON(url string, v any) error {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}
