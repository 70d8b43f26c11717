// Package projections maintains the Pebble read models derived from the
// event streams: a home server's state (subscriptions, presence views,
// expiry index) from its fact events, and the directory (IM domains, home
// servers, users) from the directory events. It publishes no events: the
// directory's write side is package directory. It owns the stream
// definitions (EnsureStreams), since every projection is derived from
// them.
//
// Every write comes from applying events, in stream order, in one Pebble
// batch that also records the stream position, so applying the same events
// again changes nothing and a rebuild from sequence 1 yields the same keys
// and values as the live store. Apply never reads a clock: times come from
// the events.
//
// Because the stream is the truth, Pebble commits are not synced one by
// one: after a crash the store holds an ordered prefix of its batches, with
// the position that matches, and Follow resumes from position+1 through an
// ordered consumer. Nothing is acknowledged to JetStream by a projection.
//
// Several projections may share one DB; each owns a key prefix.
//
// It imports events and no other package of ours.
package projections
