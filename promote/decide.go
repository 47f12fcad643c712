package promote

import (
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/superfly/ltx"

	"github.com/understudy-db/understudy/config"
	"github.com/understudy-db/understudy/lease"
)

// Step is what a promoting node does about the lease next.
type Step int

const (
	// StepAcquire: the lease is free; race for it.
	StepAcquire Step = iota
	// StepHandOff: a holder advertises its endpoint; ask it to hand over
	// (planned, nothing lost), then race for the lease it releases.
	StepHandOff
	// StepBreak: -force; destroy the holder's claim, then race.
	StepBreak
	// StepWait: another node holds the lease and cannot be asked; wait
	// until it expires or is released.
	StepWait
	// StepHolding: this node holds the lease already.
	StepHolding
)

func (s Step) String() string {
	return [...]string{"acquire", "hand-off", "break", "wait", "holding"}[s]
}

// PlanPromotion decides the first step of a promotion from the lease as it
// is now. holding: this node holds it; force: the operator said -force.
func PlanPromotion(h lease.Holder, holding, force bool) Step {
	switch {
	case holding:
		return StepHolding
	case !h.Held:
		return StepAcquire
	case force:
		return StepBreak
	case h.AdvertiseURL != "":
		return StepHandOff
	default:
		return StepWait
	}
}

// LostRace reports whether a promotion that found the lease free when it
// started must give up rather than wait: another node took the lease first.
// A promotion that started against a holder (a hand-off, a wait for a dead
// primary's lease) keeps waiting for it instead.
func LostRace(startedFree bool, h lease.Holder) bool {
	return startedFree && h.Held
}

// ShouldContend is the automatic failover's trigger: the lease is free and
// this follower is in a state to take over (it follows, healthy).
func ShouldContend(h lease.Holder, followerHealthy bool) bool {
	return !h.Held && followerHealthy
}

// HolderDead reports whether a lease holder whose health check has failed
// since failingSince (zero: it answers) counts as gone at now: it failed for
// deadAfter without a break. deadAfter 0 disables the judgement.
func HolderDead(failingSince, now time.Time, deadAfter time.Duration) bool {
	return deadAfter > 0 && !failingSince.IsZero() && now.Sub(failingSince) >= deadAfter
}

// ReportedRole is the role a node states (in /status, /healthz, the
// Consul tag) at the moment it answers: a primary whose lease is no longer
// safe at that moment is halted, whatever its loop has noticed so far. A
// node is never reported primary past its safe window.
func ReportedRole(role string, leaseSafe bool) string {
	if role == RolePrimary && !leaseSafe {
		return RoleHalted
	}
	return role
}

// OnDemote is what a primary does after it halted.
type OnDemote string

// The on-demote choices of the config's lease section.
const (
	DemoteHalt   OnDemote = "halt"   // keep holding the app's writes; wait for an operator
	DemoteExit   OnDemote = "exit"   // exit non-zero (the write lock goes with the process)
	DemoteFollow OnDemote = "follow" // rejoin as a follower of the new primary
)

// ParseOnDemote validates the config's on-demote ("" = the default, halt).
func ParseOnDemote(s string) (OnDemote, error) {
	switch OnDemote(s) {
	case "":
		return OnDemote(config.DefaultOnDemote), nil
	case DemoteHalt, DemoteExit, DemoteFollow:
		return OnDemote(s), nil
	}
	return "", fmt.Errorf("lease on-demote %q: use %q, %q or %q", s, DemoteHalt, DemoteExit, DemoteFollow)
}

// Diverged reports whether a halted primary's database holds transactions
// the store lacks: its checksum is not the one of the last TXID every
// replica confirmed (confirmed == 0: nothing was ever confirmed, so any
// content at all is unshipped).
func Diverged(local ltx.Checksum, confirmedTXID ltx.TXID, confirmed ltx.Checksum) bool {
	if confirmedTXID == 0 {
		return true
	}
	return local != confirmed
}

// EndpointURL turns a node's advertise URL (its status endpoint, or the base
// of its endpoints) into the URL of one of its control endpoints for db.
func EndpointURL(advertise, endpoint, db string) (string, error) {
	u, err := url.Parse(advertise)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("advertise URL %q is not an absolute http(s) URL", advertise)
	}
	u.Path = strings.TrimSuffix(strings.TrimSuffix(u.Path, "/"), "/status") + "/" + endpoint
	u.RawQuery = url.Values{"db": {db}}.Encode()
	return u.String(), nil
}
