// Package routernode is the router role: the public face of an IM domain.
// Routers consume the lookup events gateways emit for nodes they cannot
// place, find the user's home server in the directory projection, and
// answer with a 302 to the physical URL on that home server, or 404.
// Several routers share one durable work-queue consumer, so losing one
// loses no lookup: unacknowledged lookups are redelivered to another.
//
// Still to come (issue 6): proxying to home servers over NATS for clients
// outside the firewall topology, and federation with other organisations.
//
// It imports events, rvp and projections.
package routernode
