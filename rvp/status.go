package rvp

// The RVP statuses this server sends, each named once with why it is the
// one used. Real clients read only the number, and react to it in ways
// the choices below are made for (librvp-wire.md §8, rvp-protocol.md
// §3.1.4, §3.6.8 and §10.1, docs/decisions.md).
//
// They are untyped constants: a status travels as a plain int in
// events.Reply, in Response and in ProtocolError, and events (which rvp
// may import, not the other way round) cannot name a type of ours.
const (
	// StatusOK ("Successful", Exchange's reason phrase): a pragma/notify
	// SUBSCRIBE, a renewal, UNSUBSCRIBE (an unknown id too, for clean
	// logouts), SUBSCRIPTIONS (librvp counts exactly 200, never 207), ACL,
	// a NOTIFY delivered.
	StatusOK = 200
	// StatusMultiStatus: an update/propchange SUBSCRIBE, PROPFIND and
	// PROPPATCH, with a d:multistatus body (no whitespace between elements:
	// librvp does not understand it otherwise).
	StatusMultiStatus = 207
	// StatusMoved ("Object moved"): a router's redirect to a user's
	// physical URL on its home server, and an old physical URL of a moved
	// user. Clients follow exactly 302 and no other 3xx (librvp re-sends on
	// the same connection with the path only).
	StatusMoved = 302
	// StatusBadRequest: malformed framing, XML or headers, refused before
	// anything is appended. Kept for what is truly malformed: librvp tears
	// its session down on a 400 while it is still logging in.
	StatusBadRequest = 400
	// StatusUnauthorized ("Access Denied"): credentials missing or wrong,
	// with WWW-Authenticate challenges (one header, or Exchange's three in
	// Exchange's order: librvp merges repeated headers).
	StatusUnauthorized = 401
	// StatusForbidden: authenticated but not allowed: the ACL denies it, a
	// RVP-From-Principal or a message's r:notification-from that is not
	// the authenticated user, a message not addressed to the node it is
	// sent to, a Call-Back the server will not connect to, an
	// intranet-only organisation asked to federate, an account throttled
	// after failed sign-ins from an address (with Retry-After). librvp
	// disconnects on it only while logging in, which is what a refused
	// login should do: the user sees an error instead of a client waiting
	// for notifications that never come.
	StatusForbidden = 403
	// StatusNotFound: no such user or node. librvp stalls silently on a 404
	// to SUBSCRIBE, PROPFIND or SUBSCRIPTIONS, and shows "could not be
	// delivered" for a NOTIFY.
	StatusNotFound = 404
	// StatusMethodNotAllowed: COPY and MOVE on RVP nodes (WebDAV methods
	// that exist but make no sense there).
	StatusMethodNotAllowed = 405
	// StatusRequestTimeout: a client that began a request and did not
	// finish sending it in time (the gateway's ReadTimeout), which would
	// otherwise hold a connection for as long as it trickles bytes; the
	// connection is closed after the answer. No RVP client sends a
	// request but whole.
	StatusRequestTimeout = 408
	// StatusPreconditionFailed: PROPFIND without Depth: 0; a message to a
	// user with no client logged in (offline or invisible alike, so
	// invisibility does not show); a renewal or UNSUBSCRIBE of a
	// subscription that does not exist. librvp ignores it on everything
	// but NOTIFY, where it says the message was not delivered.
	StatusPreconditionFailed = 412
	// StatusTooLarge: a body over the limit.
	StatusTooLarge = 413
	// StatusTooManyRequests (RFC 6585), with Retry-After: a sender past
	// its share (messages per second, bytes per second, per gateway) is
	// refused before anything is appended, and told when to try again.
	// librvp ignores it (it is neither 404 nor 412), so a flooding client
	// is slowed without being disconnected.
	StatusTooManyRequests = 429
	// StatusHeaderTooLarge: too many header fields, or too long ones.
	StatusHeaderTooLarge = 431
	// StatusInternalError is never chosen by this server for its own
	// failures (see StatusUnavailable): it is relayed when a recipient's
	// client answered a NOTIFY with it, which means the recipient left the
	// conversation (Messenger shows that; librvp ignores it for NOTIFY).
	// It is the only status of a recipient's client that reaches a
	// message's sender (SenderStatus).
	StatusInternalError = 500
	// StatusNotImplemented: GET, HEAD, POST, PUT, LOCK, UNLOCK, OPTIONS,
	// POLL and unknown methods (Exchange answered them so, S§5.8), and
	// chunked bodies. Never for a failure: librvp disconnects on it.
	StatusNotImplemented = 501
	// StatusUnavailable: this server did not take the request, and
	// nothing of it was carried out (another site cannot be reached, the
	// directory could not be read, too many connections, subscription ids
	// exhausted); retrying later may work. It stands where 500 would: librvp disconnects on 500
	// and 501 to anything but NOTIFY, and a passing failure must not end a
	// session.
	StatusUnavailable = 503
	// StatusGatewayTimeout: no answer came in time from where the request
	// went (the home node, another site's home node, another
	// organisation's server a router forwarded it to), so its outcome is
	// unknown: it may have been carried out. StatusUnavailable says it
	// was not. Not 500, for the same reason as StatusUnavailable; librvp
	// ignores it, as it does 503.
	StatusGatewayTimeout = 504
	// StatusHTTPVersion: a request line with an HTTP version other than
	// 1.x.
	StatusHTTPVersion = 505
	// StatusInsufficientStorage (WebDAV's status for a resource that
	// cannot hold more): an ACL write that would take a node's ACL past
	// its limit of entries (a user blocking or befriending more than a
	// thousand principals). Not 500 or 501, on which librvp disconnects.
	StatusInsufficientStorage = 507
	// StatusLoopDetected: RVP-Hop-Count above the limit (8): servers are
	// forwarding a request or a NOTIFY in a loop. WebDAV's status for
	// loops.
	StatusLoopDetected = 508
)
