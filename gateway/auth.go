package gateway

import (
	"time"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
	"github.com/rvp-im/rvpd/rvp"
)

// ConnState is what a connection remembers between requests. NTLM binds
// an identity to the connection that completed the handshake, so later
// requests on it need no Authorization.
type ConnState struct {
	// Identity is the identity the connection authenticated as, if any.
	Identity events.Identity
	// Scheme holds an authenticator's handshake state.
	Scheme any
}

// AuthRequest is what an Authenticator is asked about.
type AuthRequest struct {
	Req    *rvp.Request
	Client string // client IP address
	// Domain is the IM domain whose credentials apply: that of the user
	// RVP-From-Principal names, else that of the addressed node.
	Domain *projections.Domain
	// From is the local user RVP-From-Principal names, if any.
	From events.User
	// Required says the request must be authenticated: everything but a
	// request of another organisation's principal (judged by the ACL's
	// assertion rules, as requests from other organisations are).
	Required bool
}

// Verdict is what authentication decided about a request.
type Verdict int

// The verdicts. Only Authenticated lets a request go on; the others are
// answered by the gateway's renderer (respond), never by the
// authenticator.
const (
	// Authenticated: the request goes on as Outcome.Identity (Scheme ""
	// for a request that may go unauthenticated and sent no credentials).
	Authenticated Verdict = iota
	// Challenged: 401 with Outcome.Challenge, to start a sign-in or take
	// the next step of a handshake (NTLM's type 2 message).
	Challenged
	// Refused: the credentials were wrong (or unknown, or for an unknown
	// user). Answered like Challenged, with a fresh challenge: a client
	// learns nothing more, as from Exchange.
	Refused
	// Throttled: 403 with Retry-After, too many failed sign-ins for the
	// account from the address (lockout.go); Outcome.Msg says when to try
	// again.
	Throttled
	// Replayed: credentials that proved the password once, presented
	// again (a Digest nonce, cnonce and count already accepted, or a
	// nonce issued to another address): answered like Challenged, with a
	// fresh challenge, and counted apart (rvpd_gateway_refused_total
	// {reason="replayed"}): someone has seen another client's request.
	Replayed
	// Busy: 503 with Retry-After, the server cannot take the
	// credentials now (the Digest replay set is full); Outcome.Msg says
	// when to try again. Logged where it was decided.
	Busy
)

// Outcome is the answer of an Authenticator.
type Outcome struct {
	Verdict  Verdict
	Identity events.Identity // when Authenticated
	// Challenge holds the WWW-Authenticate values of a 401, in the order
	// they are sent (Challenged and Refused).
	Challenge []string
	// Msg says why, to the client (the body of a 401 or 403).
	Msg string
	// RetryAfter is how long a Throttled or Busy client must wait.
	RetryAfter time.Duration
}

// Authenticator establishes who sent a request: the credential checker
// (NTLM, Digest, Basic) or NoAuth.
type Authenticator interface {
	Authenticate(st *ConnState, ar AuthRequest) Outcome
}

// NoAuth accepts every request that names its user in
// RVP-From-Principal and takes it at its word. It exists for development
// and experiments only: anyone can act as anyone. A request that must be
// authenticated and names no user of ours is refused: there is nobody to
// take at their word.
type NoAuth struct{}

// Authenticate implements Authenticator.
func (NoAuth) Authenticate(_ *ConnState, ar AuthRequest) Outcome {
	if ar.From.IsZero() {
		if ar.Required {
			return Outcome{Verdict: Refused, Msg: "authentication is off here, so a request names the user it speaks for in RVP-From-Principal"}
		}
		return Outcome{}
	}
	return Outcome{Identity: events.Identity{Scheme: "none", User: ar.From}}
}
