package projections

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/rvp-im/rvpd/events"
)

// OwnNames is what, besides the directory, says whether a host is ours:
// the configuration of the process that asks (the router before it
// sends a request to another organisation, the gateway before it lets a
// principal speak without credentials as another organisation's).
type OwnNames struct {
	// Internal are DNS suffixes of our own network
	// (-federation.internal): each, and every name under it, is ours,
	// whatever the peer table says.
	Internal []string
	// Peered, when set, reports whether the federation peer table names
	// the organisation of host (with or without port): a name under one
	// of our IM domains' names that it names is another organisation's
	// (a subsidiary with servers of its own: the administrator says
	// so). Our servers' hosts and Internal names never are.
	Peered func(host string) bool
}

// OurHost says why a host is ours rather than another organisation's.
type OurHost struct {
	// What names it ("the host of our home server home1", "under
	// example.com, a name of our IM domain example.com"); "" when the
	// host is no host of ours.
	What string
	// Fix says what an administrator does if it was not meant to be.
	Fix string
}

// OurHost says whether host (with or without port, in any case, with or
// without a trailing dot) is ours rather than another organisation's,
// and why: a name under own.Internal, the host of one of our home
// servers or routers (whatever the port), or a name under one of our IM
// domains' names (its own, its IM host's, its e-mail domains', its other
// hosts') unless own.Peered names it. An address is nobody's here: the
// guards judge addresses.
//
// The router asks it of every lookup no IM domain answers, the gateway
// of every request another organisation's principal makes: it costs a
// look in the names index (dirMemory.names) for each label of host, and
// a comparison for each Internal suffix, however many IM domains, home
// servers and routers the directory holds.
func (d *Directory) OurHost(host string, own OwnNames) (OurHost, error) {
	name := strings.TrimRight(strings.ToLower(events.Hostname(host)), ".")
	if name == "" || isAddr(name) {
		return OurHost{}, nil
	}
	for _, s := range own.Internal {
		if under(name, s) {
			return OurHost{What: fmt.Sprintf("under %s, a name of our own network (-federation.internal)", s),
				Fix: "if it is another organisation's, take " + s + " out of -federation.internal"}, nil
		}
	}
	m := &d.mem
	m.mu.RLock()
	home, _ := m.named(name, "home").(HomeServer)
	router, _ := m.named(name, "router").(Router)
	var (
		dom    Domain
		suffix string
	)
	for s := name; ; {
		if v, ok := m.named(s, "dom").(Domain); ok {
			dom, suffix = v, s
			break
		}
		i := strings.IndexByte(s, '.')
		if i < 0 {
			break
		}
		s = s[i+1:]
	}
	m.mu.RUnlock()
	switch {
	case home.Name != "":
		return OurHost{What: "the host of our home server " + home.Name, Fix: give("DOMAIN", name)}, nil
	case router.Name != "":
		return OurHost{What: "the host of our router " + router.Name, Fix: give(router.Domain, name)}, nil
	case dom.Domain == "":
		return OurHost{}, nil
	case own.Peered != nil && own.Peered(host):
		return OurHost{}, nil // a subsidiary's
	}
	return OurHost{What: fmt.Sprintf("under %s, a name of our IM domain %s", suffix, dom.Domain),
		Fix: give(dom.Domain, name) + "; if it is another organisation's, name it in -federation.peers"}, nil
}

// give says how a name clients name users of ours at is given to their
// IM domain.
func give(domain, name string) string {
	return "if clients name users of ours at it, give it to their IM domain (rvpctl domain hosts " + domain + " -add " + name + ")"
}

// hostName is the form the names index keeps a host of ours in: its name
// (no port) in lower case without dots at either end; "" for an address,
// which is under nothing.
func hostName(host string) string {
	name := strings.Trim(strings.ToLower(events.Hostname(host)), ".")
	if isAddr(name) {
		return ""
	}
	return name
}

// isAddr reports whether name is an IP address (an IPv6 one with or
// without brackets). A name ending in a letter without a colon is none:
// it is told without parsing, which allocates its error.
func isAddr(name string) bool {
	if n := len(name); n == 0 || (!strings.Contains(name, ":") && 'a' <= name[n-1]|0x20 && name[n-1]|0x20 <= 'z') {
		return false
	}
	_, err := netip.ParseAddr(strings.Trim(name, "[]"))
	return err == nil
}

// under reports whether name (lower case, without a trailing dot) is
// suffix, or a name under it; an address is under nothing. It allocates
// nothing for a suffix written as ParseInternal writes it.
func under(name, suffix string) bool {
	suffix = strings.Trim(suffix, ".")
	if suffix == "" || len(name) < len(suffix) {
		return false
	}
	tail := name[len(name)-len(suffix):]
	if !strings.EqualFold(tail, suffix) || (len(name) > len(suffix) && name[len(name)-len(suffix)-1] != '.') {
		return false
	}
	return !isAddr(suffix)
}

// names lists the names (hostName) a record of kind has in the names
// index: an IM domain's own, its IM host's, its e-mail domains' and
// hosts'; a home server's or router's host's.
func names(value any) []string {
	var hosts []string
	switch r := value.(type) {
	case Domain:
		hosts = domainHosts(r)
	case HomeServer:
		hosts = []string{r.Host}
	case Router:
		hosts = []string{r.Host}
	default:
		return nil
	}
	out := hosts[:0]
	for _, h := range hosts {
		if n := hostName(h); n != "" {
			out = append(out, n)
		}
	}
	return out
}

// indexNames adds (add) or removes the names of a record of kind at rest
// to or from the names index.
func (m *dirMemory) indexNames(kind, rest string, value any, add bool) {
	for _, n := range names(value) {
		owners := m.names[n]
		k := memKey{kind: kind, rest: rest}
		if !add {
			delete(owners, k)
			if len(owners) == 0 {
				delete(m.names, n)
			}
			continue
		}
		if owners == nil {
			if m.names == nil {
				m.names = map[string]map[memKey]struct{}{}
			}
			owners = map[memKey]struct{}{}
			m.names[n] = owners
		}
		owners[k] = struct{}{}
	}
}

// named returns the record of kind that has name (hostName), the first
// by key when several have it (as a list of them would); nil when none
// has. The caller holds m.mu.
func (m *dirMemory) named(name, kind string) any {
	first, found := "", false
	for k := range m.names[name] {
		if k.kind == kind && (!found || k.rest < first) {
			first, found = k.rest, true
		}
	}
	if !found {
		return nil
	}
	return m.kinds[kind][first]
}
