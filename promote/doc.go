// Package promote composes the primary and the follower into one node that
// changes role safely: a follower promotes (planned hand-off from a live
// primary, forced after a dead one, or automatically when the lease is
// free), a primary steps down the moment its lease is lost or its upload is
// fenced, and the history in the store stays one unbroken chain.
//
// The order of a promotion is the safety argument: (1) hold the lease, (2)
// replay the store, (3) claim the next TXID with a create-only zero-page
// file, and only then (4) open the database read-write and ship. A deposed
// primary that still uploads after (1) (an upload in flight) loses at (3)
// or is fenced by it; one that is frozen and wakes up later finds the
// claimed key taken and halts.
//
// The decisions ("may this node promote now", "what does a demotion do",
// "did this primary diverge", "is the holder dead") are plain functions in
// decide.go; Node runs the loops around them.
//
// Operating notes:
//
//   - `replicate` and `follow` run a Node for every database with a lease:
//     section. Its addr serves /status (role, fencing token), /healthz
//     (503 when halted or fenced), /metrics, and the control endpoints
//     POST /promote and POST /handoff (see PathPromote, PathHandOff).
//     `understudy promote` is a client of /promote.
//   - Planned hand-off needs the holder's advertise-url: the follower asks
//     it to hand over. Without one, a promotion waits for the lease to be
//     free (or breaks it with -force).
//   - Auto-promote followers race for a free lease, and also break the
//     lease of a holder whose /healthz (at its advertise URL) has not
//     answered healthy for one TTL (DeadAfter): Consul alone would keep a
//     dead holder's session for up to twice the TTL. A primary that is
//     alive but unreachable from its followers for a TTL is therefore
//     deposed too (it notices, halts, and the claim fences it).
//   - After a step-down the app's writes on the old node stay held: with
//     on-demote halt the shipper keeps the write lock; with follow the old
//     file is moved aside with the lock still held, and the app must reopen
//     the path (read-only) to see the follower's copy. Applications on
//     followers open the database read-only.
//   - On every role change the node registers its instance of the Consul
//     service understudy-<db> with the tag primary, replica or halted and an
//     HTTP check on /healthz, so primary.understudy-<db>.service.consul
//     names the writer; on-promote runs after each promotion.
package promote
