// Package directory is the directory's write side and the sealing of
// credentials: Admin validates an administrative change against the
// directory projection (projections.Directory, the read side) and appends
// its directory event fenced by the expected last sequence of the
// aggregate's subject, so two administrators changing one aggregate cannot
// both win; Service answers rvpctl over NATS request/reply (challenge and
// response, roles, typed operations) and Client is rvpctl's side of it;
// Keyring holds the cluster key that seals password verifiers and
// administrator verifiers before they enter an event, and signs nonces.
// rvpd's bootstrap of the demo deployment goes through Admin too.
//
// It imports events, rvp and projections (DESIGN §3).
//
// # How the gateway checks passwords without importing this package
//
// The gateway may import events, rvp and projections only, yet it must
// open the verifiers sealed here. The format of a verifier (rvp.Verifiers:
// the NT hash and the Digest HA1 values of each user name form clients
// send) belongs to the wire protocol's authentication schemes, so it lives
// in rvp, where the gateway checks it, rvpctl and rvpd dev compute it, and
// this package seals it. Opening is the sealer's: the gateway declares
// the small interface it needs (gateway.Keyring: OpenVerifiers and MAC),
// which *Keyring satisfies, and cmd/rvpd (or testcluster) passes the
// Keyring in. The cluster key thus stays in one type, the gateway keeps
// its narrow import table, and a test gateway can be given any keyring.
//
// Operations, their arguments and results are typed (Op and the *Spec and
// *Ref types): the Client sends an operation's argument type, the Service
// decodes the same type, and a domain administrator's reach is read from
// it, never from JSON keys matched by hand.
package directory
