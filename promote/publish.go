package promote

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/understudy-db/understudy/config"
)

// Service tags published for each role, so that
// primary.<service>.service.consul names the writer.
const (
	TagPrimary = "primary"
	TagReplica = "replica"
	TagHalted  = "halted"
)

// DefaultCheckInterval is how often Consul probes a node's /healthz.
const DefaultCheckInterval = "2s"

// RoleTag is the service tag for a role.
func RoleTag(role string) string {
	switch role {
	case RolePrimary:
		return TagPrimary
	case RoleHalted:
		return TagHalted
	default:
		return TagReplica
	}
}

var unsafeServiceChars = regexp.MustCompile(`[^a-zA-Z0-9-]+`)

// dnsSafe replaces anything DNS cannot carry by '-' (none at either end).
func dnsSafe(s string) string {
	return strings.Trim(unsafeServiceChars.ReplaceAllString(s, "-"), "-")
}

// ServiceName is the Consul service of a database: "understudy-<db>", with
// anything DNS cannot carry replaced by '-'.
func ServiceName(db string) string { return "understudy-" + dnsSafe(db) }

// ConsulPublisher returns a Published function that registers this node's
// instance of the database's service with the local Consul agent, tagged
// with its role and checked on advertiseURL's /healthz (no check without an
// advertise URL); the role "" deregisters it.
func ConsulPublisher(cc *config.ConsulLease, db, node, advertiseURL string) (func(ctx context.Context, role string) error, error) {
	cfg := api.DefaultConfig()
	if cc != nil && cc.Address != "" {
		cfg.Address = cc.Address
	}
	if cc != nil && cc.Token != "" {
		cfg.Token = cc.Token
	}
	client, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("consul client for service registration: %w", err)
	}
	name := ServiceName(db)
	id := name + "-" + dnsSafe(node)
	var check *api.AgentServiceCheck
	if advertiseURL != "" {
		u, err := EndpointURL(advertiseURL, "healthz", db)
		if err != nil {
			return nil, err
		}
		check = &api.AgentServiceCheck{HTTP: u, Interval: DefaultCheckInterval, Timeout: "1s",
			DeregisterCriticalServiceAfter: "10m"}
	}
	return func(ctx context.Context, role string) error {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if role == "" {
			if err := client.Agent().ServiceDeregisterOpts(id, (&api.QueryOptions{}).WithContext(ctx)); err != nil {
				return fmt.Errorf("deregister service %s (%s) from Consul: %w", name, id, err)
			}
			return nil
		}
		reg := &api.AgentServiceRegistration{ID: id, Name: name, Tags: []string{RoleTag(role)},
			Meta: map[string]string{"node": node, "role": role}, Check: check}
		if err := client.Agent().ServiceRegisterOpts(reg, api.ServiceRegisterOpts{}.WithContext(ctx)); err != nil {
			return fmt.Errorf("register service %s (%s) with Consul: %w", name, id, err)
		}
		return nil
	}, nil
}
