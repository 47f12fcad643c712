package lease_test

import (
	"strings"
	"testing"
	"time"

	"github.com/understudy-db/understudy/config"
	"github.com/understudy-db/understudy/lease"
)

func TestNewValidates(t *testing.T) {
	consul := func(mod func(*config.ConsulLease)) *config.Lease {
		cc := &config.ConsulLease{Address: "127.0.0.1:1", Mode: lease.ModeSession}
		if mod != nil {
			mod(cc)
		}
		return &config.Lease{Type: "consul", Node: "n1", Consul: cc}
	}
	tests := []struct {
		name    string
		cfg     *config.Lease
		db      string
		opts    []lease.Option
		wantErr string // "" = valid
	}{
		{"consul defaults", consul(nil), "db", nil, ""},
		{"mode defaults to kv", &config.Lease{Type: "consul", Node: "n1", Consul: &config.ConsulLease{Address: "127.0.0.1:1", TTL: time.Second}}, "db", nil, ""},
		{"kv ttl below 1s", &config.Lease{Type: "consul", Node: "n1", Consul: &config.ConsulLease{Address: "127.0.0.1:1", TTL: 500 * time.Millisecond}}, "db", nil, "out of range for mode kv"},
		{"consul section absent uses environment", &config.Lease{Type: "consul", Node: "n1"}, "db", nil, ""},
		{"type defaults to consul", &config.Lease{Node: "n1"}, "db", nil, ""},
		{"no node falls back to host name", &config.Lease{Type: "consul"}, "db", nil, ""},
		{"static", &config.Lease{Type: "static", Node: "n1", StaticPrimary: "n1"}, "db", nil, ""},
		{"nil config", nil, "db", nil, "no lease section"},
		{"empty db name", consul(nil), "", nil, "database name"},
		{"db of a directory", consul(nil), "tenants/eu/a.db", nil, ""},
		{"db name with a leading slash", consul(nil), "/a/b", nil, "database name"},
		{"db name with a trailing slash", consul(nil), "a/b/", nil, "database name"},
		{"db name with an empty part", consul(nil), "a//b", nil, "database name"},
		{"db name with ..", consul(nil), "a/../b", nil, "database name"},
		{"db name with .", consul(nil), "a/./b", nil, "database name"},
		{"unknown type", &config.Lease{Type: "etcd", Node: "n1"}, "db", nil, `unknown type "etcd"`},
		{"static without primary", &config.Lease{Type: "static", Node: "n1"}, "db", nil, "static-primary"},
		{"ttl below Consul's minimum", consul(func(c *config.ConsulLease) { c.TTL = 5 * time.Second }), "db", nil, "ttl 5s is out of range"},
		{"ttl above Consul's maximum", consul(func(c *config.ConsulLease) { c.TTL = 25 * time.Hour }), "db", nil, "out of range"},
		{"ttl 15s", consul(func(c *config.ConsulLease) { c.TTL = 15 * time.Second }), "db", nil, ""},
		{"negative lock-delay", consul(func(c *config.ConsulLease) { c.LockDelay = -time.Second }), "db", nil, "lock-delay"},
		{"lock-delay above 60s", consul(func(c *config.ConsulLease) { c.LockDelay = 61 * time.Second }), "db", nil, "lock-delay"},
		{"sub-millisecond lock-delay", consul(func(c *config.ConsulLease) { c.LockDelay = time.Microsecond }), "db", nil, "lock-delay"},
		{"key prefix with leading slash", consul(func(c *config.ConsulLease) { c.KeyPrefix = "/x/" }), "db", nil, "key-prefix"},
		{"margin eats the ttl", consul(nil), "db", []lease.Option{lease.WithMargin(10 * time.Second)}, "margin"},
		{"relative advertise URL", &config.Lease{Type: "static", Node: "n1", StaticPrimary: "n1", AdvertiseURL: "/status"}, "db", nil, "advertise-url"},
		{"advertise URL not http", &config.Lease{Type: "static", Node: "n1", StaticPrimary: "n1", AdvertiseURL: "ftp://x/"}, "db", nil, "advertise-url"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := lease.New(tt.cfg, tt.db, nil, tt.opts...)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("New: %v", err)
			case tt.wantErr == "" && l == nil:
				t.Fatal("New returned nil lease and no error")
			case tt.wantErr != "" && err == nil:
				t.Fatalf("New accepted the config; want an error containing %q", tt.wantErr)
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
				t.Fatalf("New: %v; want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestKeyLayout(t *testing.T) {
	tests := []struct {
		prefix, db, want string
	}{
		{"", "app.db", "understudy/app.db/primary"},
		{"svc/leases/", "app", "svc/leases/app/primary"},
	}
	for _, tt := range tests {
		l, err := lease.New(&config.Lease{Node: "n1", Consul: &config.ConsulLease{KeyPrefix: tt.prefix}}, tt.db, nil)
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		if got := lease.KeyOf(l); got != tt.want {
			t.Errorf("prefix %q db %q: key %q, want %q", tt.prefix, tt.db, got, tt.want)
		}
	}
}
