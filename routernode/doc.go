// Package routernode is the router role: the public face of an IM domain.
// Routers consume the lookup events gateways emit for nodes they cannot
// serve themselves: for a user of ours whose client the router's policy
// redirects (inside the firewall topology, or mode "redirect"), a 302 with
// the physical URL on the user's home server, or 404; for a user of
// another organisation, the request forwarded as RVP over HTTP to that
// organisation's router (peer table, then DNS SRV _rvp._tcp.<domain>),
// with RVP-Hop-Count incremented (508 past the limit), and its answer
// relayed unchanged; 403 when the deployment is intranet-only. Clients the
// policy proxies never reach a router: their gateway sends the request to
// the home server over NATS itself.
//
// Several routers share one durable work-queue consumer, so losing one
// loses no lookup: unacknowledged lookups are redelivered to another.
//
// It imports events, rvp and projections.
package routernode
