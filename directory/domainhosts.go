package directory

import (
	"context"
	"fmt"
	"slices"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
)

// DomainHostsSpec changes the host names of an existing IM domain: the
// extra host names requests may name it by (a new DNS alias of the IM
// server, a gateway's own name that clients use) and the e-mail domains
// mapped to it. Each list names what to add or remove; what it does not
// name is kept.
type DomainHostsSpec struct {
	Domain             string   `json:"domain"`
	AddHosts           []string `json:"add_hosts,omitempty"`
	RemoveHosts        []string `json:"remove_hosts,omitempty"`
	AddEmailDomains    []string `json:"add_email_domains,omitempty"`
	RemoveEmailDomains []string `json:"remove_email_domains,omitempty"`
}

func (s DomainHostsSpec) domain() string { return s.Domain }

func (s DomainHostsSpec) canonical() DomainHostsSpec { s.Domain = domainName(s.Domain); return s }

// SetDomainHosts replaces the extra host names and the e-mail domains of
// IM domain domain with hosts and emailDomains. Its name and IM host
// always reach it, whatever the lists say. It fails with ErrNotFound
// when the domain does not exist, and when a name it would gain already
// reaches another domain.
func (a *Admin) SetDomainHosts(ctx context.Context, domain string, hosts, emailDomains []string) error {
	hosts, err := hostNames("host", hosts)
	if err != nil {
		return err
	}
	if emailDomains, err = hostNames("e-mail domain", emailDomains); err != nil {
		return err
	}
	_, err = a.setDomainHosts(ctx, domainName(domain), func(projections.Domain) ([]string, []string, error) {
		return hosts, emailDomains, nil
	})
	return err
}

// ChangeDomainHosts adds and removes host names and e-mail domains of
// an existing IM domain, and returns the domain as changed. Removing a
// name the domain does not have, or its name or IM host (which always
// reach it), is refused, as SetDomainHosts refuses a name of another
// domain.
func (a *Admin) ChangeDomainHosts(ctx context.Context, s DomainHostsSpec) (projections.Domain, error) {
	var err error
	lists := []*[]string{&s.AddHosts, &s.RemoveHosts, &s.AddEmailDomains, &s.RemoveEmailDomains}
	for i, what := range []string{"host", "host", "e-mail domain", "e-mail domain"} {
		if *lists[i], err = hostNames(what, *lists[i]); err != nil {
			return projections.Domain{}, err
		}
	}
	return a.setDomainHosts(ctx, domainName(s.Domain), func(dom projections.Domain) ([]string, []string, error) {
		// A domain created before host names were kept as requests name
		// them holds them as given (a trailing dot, capitals): compared,
		// and kept, in the form the lists give.
		dom.Hosts, dom.EmailDomains = asRequestsName(dom.Hosts), asRequestsName(dom.EmailDomains)
		dom.Domain, dom.IMHost = asRequestName(dom.Domain), asRequestName(dom.IMHost)
		for _, h := range s.RemoveHosts {
			switch {
			case slices.Contains(dom.Hosts, h):
				// Listed among the hosts as well, it may leave the list:
				// the domain's name and IM host reach it all the same.
			case h == dom.Domain || h == dom.IMHost:
				return nil, nil, fmt.Errorf("host %s is IM domain %s's name or IM host, which always reach it; it cannot be removed", h, dom.Domain)
			default:
				return nil, nil, fmt.Errorf("host %s is not a host name of IM domain %s (its hosts: %s); nothing removed", h, dom.Domain, listOrNone(dom.Hosts))
			}
		}
		for _, h := range s.RemoveEmailDomains {
			if !slices.Contains(dom.EmailDomains, h) {
				return nil, nil, fmt.Errorf("e-mail domain %s is not an e-mail domain of IM domain %s (its e-mail domains: %s); nothing removed", h, dom.Domain, listOrNone(dom.EmailDomains))
			}
		}
		// The domain's name and IM host reach it without being listed.
		addHosts := slices.DeleteFunc(slices.Clone(s.AddHosts), func(h string) bool { return h == dom.Domain || h == dom.IMHost })
		keep := func(have, add, remove []string) []string {
			out := slices.DeleteFunc(slices.Clone(have), func(h string) bool { return slices.Contains(remove, h) })
			for _, h := range add {
				if !slices.Contains(out, h) {
					out = append(out, h)
				}
			}
			return out
		}
		return keep(dom.Hosts, addHosts, s.RemoveHosts), keep(dom.EmailDomains, s.AddEmailDomains, s.RemoveEmailDomains), nil
	})
}

// asRequestName returns a host name the directory holds as hostName
// gives it, or as held when hostName refuses it.
func asRequestName(h string) string {
	if n, err := hostName("host", h); err == nil {
		return n
	}
	return h
}

// asRequestsName returns asRequestName of each of names, without repeats.
func asRequestsName(names []string) []string {
	var out []string
	for _, h := range names {
		if n := asRequestName(h); !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

// hostNames returns names as hostName gives each, without repeats.
func hostNames(what string, names []string) ([]string, error) {
	var out []string
	for _, n := range names {
		h, err := hostName(what, n)
		if err != nil {
			return nil, err
		}
		if !slices.Contains(out, h) {
			out = append(out, h)
		}
	}
	return out, nil
}

func listOrNone(l []string) string {
	if len(l) == 0 {
		return "none"
	}
	return fmt.Sprint(l)
}

// setDomainHosts sets the host names of IM domain domain to those lists
// gives for the domain as the directory holds it, and returns the
// domain as set. It is fenced, as createDomain is, by every IM domain's
// events: a domain created (or given hosts) meanwhile may claim one of
// the names it gains.
func (a *Admin) setDomainHosts(ctx context.Context, domain string, lists func(projections.Domain) (hosts, emailDomains []string, err error)) (projections.Domain, error) {
	var set projections.Domain
	err := retryFenced(ctx, func() error {
		ver, err := a.current(ctx, events.DomainsFilter)
		if err != nil {
			return err
		}
		dom, err := a.Directory.Domain(domain)
		if err != nil {
			return err
		}
		if dom == nil {
			return fmt.Errorf("IM domain %s: %w", domain, ErrNotFound)
		}
		hosts, emailDomains, err := lists(*dom)
		if err != nil {
			return err
		}
		if err := a.hostsFree(slices.Concat(hosts, emailDomains), dom.Domain); err != nil {
			return err
		}
		set = *dom
		if slices.Equal(hosts, dom.Hosts) && slices.Equal(emailDomains, dom.EmailDomains) {
			return nil // nothing to change: no event
		}
		set.Hosts, set.EmailDomains = hosts, emailDomains
		ev := &events.DomainHostsSet{Meta: a.meta(), Domain: dom.Domain, EmailDomains: emailDomains, Hosts: hosts}
		return a.appendFenced(ctx, ev, ver, events.DomainsFilter, "the IM domains")
	})
	return set, err
}
