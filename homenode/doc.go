// Package homenode is the write side of a home server: the logical unit
// (imhome1.example.com) users are assigned to. A Node owns one home server:
// it consumes the request events gateways append for it, in order, decides
// each against its projection, appends the fact events (fenced by the
// expected last sequence of the user's subject, deduplicated by request id),
// waits until its projection has applied them, replies to the gateway, and
// delivers NOTIFYs to client callbacks through a bounded pool.
//
// Every decision is made by the decision core (core.go): a pure function
// decide(view, policy, input, now) of the home server's state, the
// directory, the policy and one input — a request, an expiry, a delivery
// outcome, a callback that stopped answering, a user moving away, a
// takeover — that returns the facts to append, the reply, and the work
// that follows (NOTIFYs, relays, a delivery, a handoff). The node only
// executes decisions. The rules are table-tested against a map-backed
// view (decide_test.go).
//
// Invariants:
//   - Nothing is visible before it is durable: a reply is published only
//     after the facts it reports are acknowledged by JetStream and applied.
//   - Decisions are made by one goroutine per home server, so they see
//     every earlier decision; the time of a decision is read once and
//     carried in its facts.
//   - Delivery never blocks deciding: message deliveries run in the pool
//     and their outcome comes back to the deciding goroutine as an input,
//     which records it as a fact and only then answers the sender.
//   - Expiry of subscriptions and presence leases is decided by the same
//     goroutine, from the projection's expiry index, on a timer.
//
// Delivery policy: the pool has a fixed number of workers and a bounded
// queue. When the queue is full, a presence notification is dropped
// (counted and logged: RVP has no retry for them), and a message is
// answered 503 so that its sender knows it was not delivered.
//
// It imports events, rvp and projections.
package homenode
