package rvp

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// A Call-Back is an address the server will connect to, on behalf of
// whoever registered it. CallbackPolicy decides which addresses those may
// be, so that the server cannot be turned into a port scanner or a relay
// into its own network:
//
//   - A Call-Back that is a principal's URL (a logical Call-Back) is not an
//     address: the home server of that principal delivers to its clients.
//     The gateway judges those (a user of ours, or the requester itself).
//   - A client's own listener must be named by an IP address, with a port
//     from 1 to 65535; never an unspecified (0.0.0.0, ::), multicast or
//     broadcast address.
//   - It must be the address the client connects from (librvp, Miranda and
//     Messenger advertise the address they connect from; Net::RVP the host
//     it is configured with), a loopback address when the client itself is
//     on loopback (the same machine), or an address in a range the
//     administrator allows (Allow: trusted ranges, and the inside of NATs
//     whose clients advertise private addresses).
//   - Never one of the server's own listeners (the RVP listener, NATS),
//     unless that exact endpoint is allowed (AllowEndpoints).
//
// Check applies all of it when a subscription is made; Dialable applies
// what needs no client (the address kinds and the server's own endpoints)
// to every connection the NOTIFY client makes, after name resolution and
// redirects, as a last guard.
type CallbackPolicy struct {
	// Allow lists address ranges a Call-Back may name whatever address
	// its client connects from.
	Allow []netip.Prefix
	// AllowEndpoints lists endpoints (address and port) a Call-Back may
	// name even though they are the server's own.
	AllowEndpoints []netip.AddrPort
	// Own lists the server's own listeners. An unspecified address
	// (0.0.0.0:4222, [::]:4222) stands for the port on every address of
	// this machine (Local, and loopback).
	Own []netip.AddrPort
	// Local lists this machine's addresses (LocalAddrs).
	Local []netip.Addr
	// Federation lists the address ranges other than public ones that
	// another organisation's server found by DNS may have (a partner
	// reached over a VPN): Discovered refuses the rest.
	Federation []netip.Prefix
}

// ErrCallBackMalformed marks a Call-Back that is not a usable URL at all
// (400), as against one the policy refuses (403).
var ErrCallBackMalformed = errors.New("malformed Call-Back")

// Check reports whether the server may connect to the client listener u
// for a client connecting from client. u must not be a principal's URL
// (IsNodeURL): those are judged by who they name.
func (p *CallbackPolicy) Check(u URL, client netip.Addr) error {
	ap, err := callBackEndpoint(u)
	if err != nil {
		return err
	}
	if err := p.Dialable(ap); err != nil {
		return fmt.Errorf("Call-Back %s: %w", u, err)
	}
	ip, client := ap.Addr(), client.Unmap()
	switch {
	case ip == client:
		return nil
	case ip.IsLoopback() && client.IsLoopback():
		return nil // the same machine
	case p.allowed(ip):
		return nil
	case ip.IsLoopback():
		return fmt.Errorf("Call-Back %s is a loopback address, and the client connects from %s: the server would connect to itself", u, client)
	}
	return fmt.Errorf("Call-Back %s is not the address the client connects from (%s): the server delivers only there, or into the ranges its administrator allows (-callback.allow, for clients behind NAT)", u, client)
}

func (p *CallbackPolicy) allowed(ip netip.Addr) bool {
	if p == nil {
		return false
	}
	for _, r := range p.Allow {
		if r.Contains(ip) {
			return true
		}
	}
	return false
}

// callBackEndpoint returns the IP address and port a client listener's URL
// names.
func callBackEndpoint(u URL) (netip.AddrPort, error) {
	port, err := strconv.Atoi(u.Port())
	if err != nil || port < 1 || port > 65535 {
		return netip.AddrPort{}, fmt.Errorf("%w: %s: port %s is not between 1 and 65535", ErrCallBackMalformed, u, u.Port())
	}
	ip, err := netip.ParseAddr(strings.Trim(u.Hostname(), "[]"))
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("Call-Back %s names a host name, not an IP address: a client's listener is named by its address (as librvp, Miranda and Messenger do; set Net::RVP's host to the address)", u)
	}
	return netip.AddrPortFrom(ip.Unmap(), uint16(port)), nil
}

// Dialable reports whether the server may connect to ap at all: not an
// unspecified, multicast or broadcast address, not port 0, and not one of
// the server's own listeners unless that endpoint is allowed.
func (p *CallbackPolicy) Dialable(ap netip.AddrPort) error {
	ip := ap.Addr().Unmap()
	switch {
	case ap.Port() == 0:
		return errors.New("port 0 is no listener")
	case ip.IsUnspecified() || ip.Is4() && ip.As4()[0] == 0:
		return fmt.Errorf("%s is an unspecified address, not a listener", ip)
	case ip.IsMulticast():
		return fmt.Errorf("%s is a multicast address", ip)
	case ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return fmt.Errorf("%s is the broadcast address", ip)
	}
	ap = netip.AddrPortFrom(ip, ap.Port())
	if p == nil || !p.own(ap) {
		return nil
	}
	for _, e := range p.AllowEndpoints {
		if e.Addr().Unmap() == ip && e.Port() == ap.Port() {
			return nil
		}
	}
	return fmt.Errorf("%s is one of this server's own listeners", ap)
}

// Discovered reports whether the server may connect to ap for another
// organisation it found by DNS (an SRV record and its target's
// addresses, or a redirect one of them answered): Dialable, and a public
// address unless a Federation range holds it. Whoever controls another
// domain's DNS controls those addresses; without this, one SRV record
// naming 127.0.0.1 or 10.0.0.5 would point the server's router at the
// network it stands in. Peers in the administrator's peer table are
// trusted as given.
func (p *CallbackPolicy) Discovered(ap netip.AddrPort) error {
	if err := p.Dialable(ap); err != nil {
		return err
	}
	ip := ap.Addr().Unmap()
	if nat64.Contains(ip) {
		// Reached through the network's NAT64 translator at the IPv4
		// address it embeds (RFC 6052), which is what is judged.
		b := ip.As16()
		ip = netip.AddrFrom4([4]byte(b[12:]))
	}
	if p != nil {
		for _, r := range p.Federation {
			if r.Contains(ip) {
				return nil
			}
		}
	}
	if kind := nonPublic(ip); kind != "" {
		return fmt.Errorf("%s is %s: another organisation found by DNS is reached at public addresses only (put it in the peer table, or its range in -federation.allow)", ip, kind)
	}
	return nil
}

// nonPublic names the kind of address ip is when it is not a public
// unicast one; "" when it is.
func nonPublic(ip netip.Addr) string {
	switch {
	case ip.IsLoopback():
		return "a loopback address"
	case ip.IsPrivate():
		return "a private address"
	case ip.IsLinkLocalUnicast():
		return "a link-local address"
	case sharedSpace.Contains(ip):
		return "a carrier-grade NAT address"
	case nat64Local.Contains(ip):
		return "a local-use NAT64 address (of this network's own translator)"
	case !ip.IsGlobalUnicast():
		return "not a unicast address"
	}
	return ""
}

// sharedSpace is RFC 6598's shared address space (carrier-grade NAT).
var sharedSpace = netip.MustParsePrefix("100.64.0.0/10")

// nat64 is RFC 6052's well-known NAT64 prefix: an address in it is the
// IPv4 address of its last 32 bits, which a translator on an IPv6-only
// network connects to (private ones of its network too, as a cloud's NAT
// gateway does). nat64Local is RFC 8215's local-use prefix, whose
// translators are the network's own.
var (
	nat64      = netip.MustParsePrefix("64:ff9b::/96")
	nat64Local = netip.MustParsePrefix("64:ff9b:1::/48")
)

// ParseRanges parses a comma-separated list of address ranges
// (10.0.0.0/8) and single addresses (192.0.2.7).
func ParseRanges(s string) ([]netip.Prefix, error) {
	ranges, endpoints, err := ParseCallbackAllow(s)
	if err != nil {
		return nil, err
	}
	if len(endpoints) > 0 {
		return nil, fmt.Errorf("%s: want a range or an address, not an endpoint", endpoints[0])
	}
	return ranges, nil
}

// own reports whether ap is one of the server's own listeners.
func (p *CallbackPolicy) own(ap netip.AddrPort) bool {
	ip := ap.Addr()
	for _, o := range p.Own {
		if o.Port() != ap.Port() {
			continue
		}
		oa := o.Addr().Unmap()
		if oa == ip {
			return true
		}
		if oa.IsUnspecified() && (ip.IsLoopback() || p.local(ip)) {
			return true
		}
	}
	return false
}

func (p *CallbackPolicy) local(ip netip.Addr) bool {
	for _, a := range p.Local {
		if a.Unmap() == ip {
			return true
		}
	}
	return false
}

// ParseCallbackAllow parses the -callback.allow setting: a comma-separated
// list of address ranges (10.0.0.0/8), single addresses (192.0.2.7), and
// endpoints (127.0.0.1:8081, [::1]:8081) that may be named even though
// they are the server's own.
func ParseCallbackAllow(s string) (ranges []netip.Prefix, endpoints []netip.AddrPort, err error) {
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		switch {
		case item == "":
			continue
		case strings.Contains(item, "/"):
			r, perr := netip.ParsePrefix(item)
			if perr != nil {
				return nil, nil, fmt.Errorf("%q: want a range such as 10.0.0.0/8: %v", item, perr)
			}
			ranges = append(ranges, r.Masked())
		default:
			if ip, perr := netip.ParseAddr(item); perr == nil {
				ranges = append(ranges, netip.PrefixFrom(ip.Unmap(), ip.Unmap().BitLen()))
				continue
			}
			ap, perr := netip.ParseAddrPort(item)
			if perr != nil {
				return nil, nil, fmt.Errorf("%q: want a range (10.0.0.0/8), an address, or an endpoint (127.0.0.1:8081)", item)
			}
			endpoints = append(endpoints, ap)
		}
	}
	return ranges, endpoints, nil
}

// ListenerEndpoints returns the endpoints a listener address (host:port,
// as given to net.Listen or shown by a listener) stands for; a host name
// is resolved. Unresolvable names give nothing.
func ListenerEndpoints(addr string) []netip.AddrPort {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil
	}
	pn, err := strconv.Atoi(port)
	if err != nil || pn <= 0 || pn > 65535 {
		return nil
	}
	if host == "" {
		host = "::"
	}
	var ips []netip.Addr
	if ip, err := netip.ParseAddr(host); err == nil {
		ips = []netip.Addr{ip}
	} else if addrs, err := net.LookupHost(host); err == nil {
		for _, a := range addrs {
			if ip, err := netip.ParseAddr(a); err == nil {
				ips = append(ips, ip)
			}
		}
	}
	out := make([]netip.AddrPort, 0, len(ips))
	for _, ip := range ips {
		out = append(out, netip.AddrPortFrom(ip.Unmap(), uint16(pn)))
	}
	return out
}

// LocalAddrs returns the addresses of this machine's interfaces.
func LocalAddrs() []netip.Addr {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok {
				out = append(out, ip.Unmap())
			}
		}
	}
	return out
}

// SenderStatus is the status a message's sender is told when no client of
// the recipient took the message and one answered with status: 500 (the
// recipient left the conversation, which Messenger shows) passes; any
// other answer is 412, as when no client could be reached. A recipient's
// Call-Back is an address its client chose; what answers there (a web
// server's 404, an authenticating proxy's 401, a redirect) is none of the
// sender's business, and relaying it would let anyone probe addresses
// through the server.
func SenderStatus(status int) int {
	if status == StatusInternalError {
		return status
	}
	return StatusPreconditionFailed
}
