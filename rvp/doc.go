// Package rvp is the RVP wire protocol: Exchange 2000 Instant Messaging's
// HTTP/1.1 with extra methods and XML bodies. It parses requests (leniently,
// as real clients send them: bare LF line ends, any header case, missing
// Content-Length), writes responses (always with Content-Length and
// RVP-Notifications-Version, never chunked, Exchange's reason phrases),
// parses and renders the XML bodies with the literal d:, r: and a: prefixes
// Miranda matches on, parses principal and node URLs, and sends NOTIFYs to
// client callbacks and other servers.
//
// Three roles speak the wire format (gateway, home node, router), so it
// lives here rather than in one of them. It may import events and nothing
// else of ours. Every parser is bounded by explicit limits and fuzzed.
package rvp
