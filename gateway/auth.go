package gateway

import (
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
	// Required says the request must be authenticated: it speaks for a
	// local user, or it is an owner-only operation without
	// RVP-From-Principal. Others may go unauthenticated (assertion, as
	// requests from other organisations do) and are judged by ACL.
	Required bool
}

// Authenticator establishes who sent a request: the credential checker
// (NTLM, Digest, Basic) or NoAuth.
type Authenticator interface {
	// Authenticate returns the requester's identity (Scheme "" when
	// unauthenticated), or a response to send instead: a 401 challenge, or
	// a 403 when the account or address is throttled.
	Authenticate(st *ConnState, ar AuthRequest) (events.Identity, *rvp.Response)
}

// NoAuth accepts every request and takes RVP-From-Principal at its word.
// It exists for development and experiments only: anyone can act as
// anyone.
type NoAuth struct{}

// Authenticate implements Authenticator.
func (NoAuth) Authenticate(_ *ConnState, ar AuthRequest) (events.Identity, *rvp.Response) {
	if ar.From.IsZero() {
		return events.Identity{}, nil
	}
	return events.Identity{Scheme: "none", User: ar.From}, nil
}
