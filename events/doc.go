// Package events is the vocabulary of the RVP service: the request events a
// gateway appends for a home node, the fact events a home node decides, the
// lookup events routers consume, the directory events administrators write,
// and the names of the streams and subjects that carry them.
//
// It is pure: no I/O, no clock, no randomness. Every event type has a
// versioned type name (for example "subscription.created.v1") that travels in
// the Rvp-Type header; Decode switches on that name and never on Go type
// names, so renaming a Go type never changes stored data. A changed schema
// gets a new type name, and the old decoder stays.
//
// Names that contain characters NATS reserves (dots in IM domains, for
// example) are encoded into subject tokens by Token, which is injective and
// reversible (Untoken), and fuzzed.
//
// It imports nothing of ours.
package events
