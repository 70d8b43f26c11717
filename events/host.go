package events

import (
	"net/netip"
	"strings"
)

// Hostname returns host[:port] without its port. An IPv6 address keeps
// its brackets whether a port follows or not ("[::1]:8080" and "[::1]"
// both give "[::1]"), since hosts are compared in the form rvp's
// NormalizeHost writes them: the form of Host headers, principal URLs and
// the directory's host names. A bare IPv6 address (no brackets) is
// returned as it is.
//
// It is the one host helper below rvp: the directory projection, which
// may import only this package, needs it to find the IM domain of a Host
// that carries a port; rvp.URL.Hostname and every other package use it
// too.
func Hostname(hostport string) string {
	if strings.HasPrefix(hostport, "[") {
		if end := strings.IndexByte(hostport, ']'); end >= 0 {
			return hostport[:end+1]
		}
		return hostport
	}
	if i := strings.IndexByte(hostport, ':'); i >= 0 && i == strings.LastIndexByte(hostport, ':') {
		return hostport[:i]
	}
	return hostport
}

// Organisation names the organisation a host (with or without port)
// belongs to: its name in lower case, without the "im." of an IM host
// (im.example.com and example.com are one organisation's).
func Organisation(host string) string {
	return strings.TrimPrefix(strings.ToLower(Hostname(host)), "im.")
}

// ClientNetwork returns what a client address is counted as, for the
// limits on what one client may hold: an IPv4 address itself, an IPv6
// address its /64 (by the /64's first address), for one host is given a
// /64 and may send from any address in it.
func ClientNetwork(a netip.Addr) netip.Addr {
	if a = a.Unmap().WithZone(""); a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

// NetworkString renders a client network (ClientNetwork): an IPv4
// address, or an IPv6 /64.
func NetworkString(n netip.Addr) string {
	if n.Is6() {
		return netip.PrefixFrom(n, 64).String()
	}
	return n.String()
}

// SenderNetwork returns the network (ClientNetwork, rendered) of a client
// address given as text; the text itself when it is no address.
func SenderNetwork(client string) string {
	a, err := netip.ParseAddr(client)
	if err != nil {
		return client
	}
	return NetworkString(ClientNetwork(a))
}
