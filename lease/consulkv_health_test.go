package lease_test

import (
	"errors"
	"testing"

	"github.com/hashicorp/consul/api"

	"github.com/understudy-db/understudy/lease"
)

func TestKVCheckVerdict(t *testing.T) {
	checks := map[string]*api.AgentCheck{
		"ok": {Status: api.HealthPassing}, "warn": {Status: api.HealthWarning},
		"down": {Status: api.HealthCritical, Output: "TTL expired"}, "nil": nil,
	}
	for _, tt := range []struct {
		id      string
		healthy bool
	}{{"ok", true}, {"warn", true}, {"down", false}, {"nil", false}, {"gone", false}} {
		err := lease.KVCheckVerdict(checks, tt.id)
		if got := err == nil; got != tt.healthy {
			t.Errorf("%s: %v, want healthy %v", tt.id, err, tt.healthy)
		}
		if err != nil && !errors.Is(err, lease.ErrUnhealthy) {
			t.Errorf("%s: %v does not wrap ErrUnhealthy", tt.id, err)
		}
	}
}
