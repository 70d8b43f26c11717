// Package homenode is the write side of a home server: the logical unit
// (imhome1.example.com) users are assigned to. A Node owns one home server:
// it consumes the request events gateways append for it, in order, decides
// each against its projection with the facts still in flight over it,
// appends the fact events to the home server's own stream asynchronously
// (chained by expected last sequence, each naming its decision), and
// once they are acknowledged replies to the gateway and delivers NOTIFYs
// to client callbacks through a bounded pool (pipeline.go).
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
//   - Nothing is visible before it is durable: a reply or NOTIFY goes out
//     only after the facts it depends on, and every fact before them, are
//     acknowledged by JetStream.
//   - One writer per home server, fenced: each fact expects the sequence
//     of the one before it in the home server's stream.
//   - Decisions are made by one goroutine per home server, so they see
//     every earlier decision (durable or in flight); the time of a
//     decision is read once and carried in its facts.
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
