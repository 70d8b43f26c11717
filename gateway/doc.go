// Package gateway is the HTTP edge of the RVP service. It parses RVP
// requests (rvp), authenticates them (an Authenticator; NTLM and Digest plug
// in here), checks that RVP-From-Principal names the authenticated user,
// finds the node a request addresses through the directory projection,
// turns the request into a typed request event appended to JetStream on the
// subject of the node's home server, waits for the home node's reply, and
// renders it. A host no IM domain answers to becomes a lookup event for the
// routers.
//
// Malformed requests (framing, XML, missing headers) are refused here with
// the status the RVP digest names (rvp/status.go says why each), before
// anything is appended: bad input changes no state. Every response is
// made by one renderer (respond), from a reply or from the gateway's own
// refusal; an Authenticator returns an Outcome, never a response. Every
// response carries RVP-Notifications-Version and Content-Length.
//
// The gateway holds no state of its own beyond connections: any gateway
// can take any request.
//
// It imports events, rvp and projections (the directory read model). It
// opens sealed password verifiers through the Keyring interface it
// declares, which cmd/rvpd fills with directory.Keyring: the gateway does
// not import package directory (its doc says why).
package gateway
