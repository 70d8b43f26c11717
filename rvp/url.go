package rvp

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/rvp-im/rvpd/events"
)

// URL is an absolute http URL as RVP uses them for principals, nodes and
// callbacks, normalised: host lower-case, the default port 80 dropped, no
// trailing '/', no query or fragment.
type URL struct {
	Host string // host[:port]
	Path string // "" or a path starting with '/'
}

// String returns the URL as RVP emits it.
func (u URL) String() string { return "http://" + u.Host + u.Path }

// Hostname returns the host without its port (see events.Hostname).
func (u URL) Hostname() string { return events.Hostname(u.Host) }

// Port returns the port, 80 when none is given.
func (u URL) Port() string {
	if _, p, err := net.SplitHostPort(u.Host); err == nil {
		return p
	}
	return "80"
}

// ParseURL parses an absolute http URL. Surrounding whitespace is ignored
// (servers strip it from d:href and a:rvp-principal).
func ParseURL(s string) (URL, error) {
	s = strings.TrimSpace(s)
	if len(s) > 2048 {
		return URL{}, errors.New("url longer than 2048 bytes")
	}
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok || !strings.EqualFold(scheme, "http") {
		return URL{}, fmt.Errorf("url %q: want http://host[:port]/path", s)
	}
	host, path := rest, ""
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		host, path = rest[:i], rest[i:]
	}
	if i := strings.IndexAny(path, "?#"); i >= 0 {
		path = path[:i]
	}
	// A space or a control character is no part of a URL (RFC 3986: it is
	// written %20); one read as part of the path would make the URL, once
	// written in a header or a log line, mean something else.
	if i := strings.IndexFunc(path, func(r rune) bool { return r <= ' ' || r == 0x7f }); i >= 0 {
		return URL{}, fmt.Errorf("url %q: a space or control character in its path (write it %%%02X)", s, path[i])
	}
	h, err := NormalizeHost(host)
	if err != nil {
		return URL{}, fmt.Errorf("url %q: %w", s, err)
	}
	return URL{Host: h, Path: strings.TrimRight(path, "/")}, nil
}

// NormalizeHost lower-cases a host[:port], checks it is a host name, an
// IPv4 address or a bracketed IPv6 address with an optional port (a
// number up to 65535), writes the port without leading zeros and drops
// it when it is 80 (host:080, host:80 and host are one host), and drops
// the trailing dot of a name written in full (im.example.com.: the same
// DNS name, which a client sends when its user typed it so, and which
// the directory keeps without).
func NormalizeHost(host string) (string, error) {
	host = strings.ToLower(strings.TrimSpace(host))
	name, port := host, ""
	if strings.HasPrefix(host, "[") {
		end := strings.IndexByte(host, ']')
		if end < 0 {
			return "", fmt.Errorf("bad host %q: unclosed [", host)
		}
		name, port = host[1:end], host[end+1:]
		if ip := net.ParseIP(name); ip == nil || !strings.Contains(name, ":") {
			return "", fmt.Errorf("bad host %q: not an IPv6 address", host)
		}
		name = "[" + name + "]"
		if port != "" && port[0] != ':' {
			return "", fmt.Errorf("bad host %q", host)
		}
	} else if i := strings.LastIndexByte(host, ':'); i >= 0 {
		name, port = host[:i], host[i:]
	}
	if !strings.HasPrefix(name, "[") {
		// All of them: a.. read as a. would read as a the next time,
		// and a name must read the same however often it is normalised.
		name = strings.TrimRight(name, ".")
	}
	if name == "" {
		return "", errors.New("empty host")
	}
	if !strings.HasPrefix(name, "[") {
		for i := 0; i < len(name); i++ {
			if c := name[i]; !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_') {
				return "", fmt.Errorf("bad host %q", host)
			}
		}
	}
	if port == "" {
		return name, nil
	}
	port = port[1:]
	if port == "" {
		return "", fmt.Errorf("bad host %q: bad port", host)
	}
	for _, c := range port {
		if c < '0' || c > '9' {
			return "", fmt.Errorf("bad host %q: port not numeric", host)
		}
	}
	// A port is a number: :080 is port 80 (as a dialer reads it), so
	// written as 80 is, or not at all.
	if port = strings.TrimLeft(port, "0"); port == "" {
		port = "0"
	}
	if n, err := strconv.Atoi(port); err != nil || n > 65535 {
		return "", fmt.Errorf("bad host %q: port above 65535", host)
	}
	if port == "80" {
		return name, nil
	}
	if len(host) == len(name)+1+len(port) && strings.HasPrefix(host, name) && strings.HasSuffix(host, port) {
		return host, nil // normal already: no new string (each request's URLs are read)
	}
	return name + ":" + port, nil
}

// DialAddr returns host[:port] as a dialer takes it: with HTTP's port 80
// when none is given.
func DialAddr(hostport string) string {
	if _, _, err := net.SplitHostPort(hostport); err == nil {
		return hostport
	}
	return net.JoinHostPort(strings.Trim(hostport, "[]"), "80")
}

// NodeRef is what a request path names: a principal's alias, and for a
// physical URL (/instmsg/local/<IM host>/instmsg/aliases/<alias>) the IM
// host it belongs to.
type NodeRef struct {
	IMHost string // "" for a logical path
	Alias  string // lower-case
}

// Path forms of principal nodes.
const (
	aliasesPrefix  = "/instmsg/aliases/"
	shortPrefix    = "/aliases/"
	physicalPrefix = "/instmsg/local/"
)

// MaxAliasLen bounds an alias; Windows account names are far shorter.
const MaxAliasLen = 256

// ParseNodePath parses the path of a principal node URL in any of the forms
// RVP servers answer to: /instmsg/aliases/<alias>, /aliases/<alias> (as
// Exchange's protocol log shows) and the physical
// /instmsg/local/<IM host>/instmsg/aliases/<alias>. Prefixes and aliases
// compare case-insensitively, a trailing '/' is ignored and the alias is
// percent-decoded.
func ParseNodePath(p string) (NodeRef, error) {
	p = strings.TrimRight(p, "/")
	var ref NodeRef
	lower := strings.ToLower(p)
	switch {
	case strings.HasPrefix(lower, physicalPrefix):
		rest := p[len(physicalPrefix):]
		host, tail, ok := strings.Cut(rest, "/")
		if !ok || !strings.HasPrefix(strings.ToLower("/"+tail), aliasesPrefix) {
			return NodeRef{}, fmt.Errorf("path %q: want %s<IM host>%s<alias>", p, physicalPrefix, aliasesPrefix)
		}
		h, err := NormalizeHost(host)
		if err != nil {
			return NodeRef{}, fmt.Errorf("path %q: %w", p, err)
		}
		ref.IMHost = h
		p = "/" + tail
		lower = strings.ToLower(p)
		fallthrough
	case strings.HasPrefix(lower, aliasesPrefix):
		p = p[len(aliasesPrefix):]
	case strings.HasPrefix(lower, shortPrefix):
		p = p[len(shortPrefix):]
	default:
		return NodeRef{}, fmt.Errorf("path %q names no principal: want %s<alias>", p, aliasesPrefix)
	}
	alias, err := url.PathUnescape(p)
	if err != nil {
		return NodeRef{}, fmt.Errorf("alias %q: %w", p, err)
	}
	if err := checkAlias(alias); err != nil {
		return NodeRef{}, err
	}
	// Lower-cased, an alias may grow (a letter whose lower case takes
	// more bytes): the bound is on what is kept.
	ref.Alias = strings.ToLower(alias)
	if len(ref.Alias) > MaxAliasLen {
		return NodeRef{}, fmt.Errorf("alias longer than %d bytes", MaxAliasLen)
	}
	return ref, nil
}

// checkAlias reports what makes a an alias no node may have: empty,
// longer than MaxAliasLen, not UTF-8 (lower-cased, each byte of it would
// become a replacement character, and two aliases one), or with a
// control character, a space or a slash.
func checkAlias(a string) error {
	if a == "" {
		return errors.New("empty alias")
	}
	if len(a) > MaxAliasLen {
		return fmt.Errorf("alias longer than %d bytes", MaxAliasLen)
	}
	if !utf8.ValidString(a) {
		return fmt.Errorf("alias %q: not UTF-8", a)
	}
	for i := 0; i < len(a); i++ {
		if c := a[i]; c <= ' ' || c == '/' || c == 0x7f {
			return fmt.Errorf("alias %q: character %q not allowed", a, c)
		}
	}
	return nil
}

// LogicalURL returns the public URL of alias at IM host host.
func LogicalURL(host, alias string) string {
	return "http://" + host + aliasesPrefix + url.PathEscape(alias)
}

// PhysicalURL returns the URL of alias (of IM host imHost) on home server
// host: the target of a router's redirect.
func PhysicalURL(host, imHost, alias string) string {
	return "http://" + host + physicalPrefix + imHost + aliasesPrefix + url.PathEscape(alias)
}

// IsNodeURL reports whether u's path names a principal node (a logical
// Call-Back) rather than a client's own listener (a local node).
func IsNodeURL(u URL) bool {
	_, err := ParseNodePath(u.Path)
	return err == nil
}
