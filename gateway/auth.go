package gateway

import (
	"github.com/rvp-im/rvpd/events"
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

// Authenticator establishes who sent a request: an NTLM, Digest or Basic
// verifier, or NoAuth.
type Authenticator interface {
	// Authenticate returns the requester's identity, or a response to send
	// instead (a 401 challenge, a 403 refusal). from is the local user the
	// request's RVP-From-Principal names, if any.
	Authenticate(st *ConnState, req *rvp.Request, from events.User) (events.Identity, *rvp.Response)
}

// NoAuth accepts every request and takes RVP-From-Principal at its word.
// It exists for development and experiments only: anyone can act as
// anyone.
type NoAuth struct{}

// Authenticate implements Authenticator.
func (NoAuth) Authenticate(_ *ConnState, _ *rvp.Request, from events.User) (events.Identity, *rvp.Response) {
	if from.IsZero() {
		return events.Identity{}, nil
	}
	return events.Identity{Scheme: "none", User: from}, nil
}
