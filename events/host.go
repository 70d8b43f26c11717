package events

import "strings"

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

// PrincipalOrganisation names the organisation of a principal's URL
// (http://host[:port]/...) or of a server's name: Organisation of its
// host; "" when it names none.
func PrincipalOrganisation(principal string) string {
	host := principal
	if _, rest, ok := strings.Cut(principal, "://"); ok {
		host = rest
		if i := strings.IndexAny(rest, "/?#"); i >= 0 {
			host = rest[:i]
		}
	}
	return Organisation(host)
}
