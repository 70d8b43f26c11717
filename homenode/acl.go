package homenode

import (
	"slices"
	"strings"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
)

// ACL evaluation (digest §3.7). The digest leaves the rules open; these
// are ours:
//   - A node's owner has every right on it, whatever its ACL says: librvp's
//     first ACL write names only "allprincipals", and its next write (for
//     itself) must still be allowed.
//   - An ACE matches a requester when its principal names the requester
//     (by local user when both are ours, whatever host the URL was written
//     with; else by URL or server name) or is a:allprincipals, and it
//     accepts the requester's credential (a:any accepts all).
//   - ACEs naming the requester are weighed before a:allprincipals; at the
//     same specificity a deny beats a grant; no match denies.
//   - A write updates the entries of the principals it names and leaves
//     the others (librvp writes one ACE at a time: allprincipals, itself,
//     each buddy it adds); an ACE with neither grant nor deny removes its
//     principal's entry. The owner's entry always grants every right: a
//     write may change its credentials, not take its rights away.

// principal is a requester in ACL terms.
type principal struct {
	url   string
	user  events.User
	cred  string
	owner bool
}

func requester(r *events.Req) principal {
	return principal{url: r.From, user: r.FromUser, cred: r.Credential(), owner: owner(r)}
}

func subscriber(node events.User, s *projections.Subscription) principal {
	p := principal{url: s.Subscriber, user: s.SubscriberUser, cred: s.Credential}
	if p.user.IsZero() && s.Watcher == node {
		p.user = s.Watcher
	}
	p.owner = !p.user.IsZero() && p.user == node
	if p.cred == "" {
		p.cred = events.CredAny // subscriptions made before credentials were recorded
	}
	return p
}

// permitted reports whether p holds right under aces.
func permitted(aces []events.ACE, p principal, right string) bool {
	if p.owner {
		return true
	}
	for _, specific := range []bool{true, false} {
		granted := false
		for _, a := range aces {
			if a.AllPrincipals() == specific || !aceMatches(a, p) || !credentialMatches(a, p.cred) {
				continue
			}
			if hasRight(a.Deny, right) {
				return false
			}
			granted = granted || hasRight(a.Grant, right)
		}
		if granted {
			return true
		}
	}
	return false
}

func aceMatches(a events.ACE, p principal) bool {
	switch {
	case a.AllPrincipals():
		return true
	case !a.User.IsZero() && !p.user.IsZero():
		return a.User == p.user
	}
	return p.url != "" && strings.EqualFold(a.Principal, p.url)
}

func credentialMatches(a events.ACE, cred string) bool {
	return cred == events.CredAny || slices.Contains(a.Credentials, events.CredAny) || slices.Contains(a.Credentials, cred)
}

func hasRight(rights []string, right string) bool {
	return slices.Contains(rights, right) || slices.Contains(rights, events.RightAll)
}

// aclOf returns u's ACL: the one written, else the default.
func (c *core) aclOf(u events.User, nodeURL string) ([]events.ACE, error) {
	aces, ok, err := c.State.ACL(u)
	if err != nil || ok {
		return aces, err
	}
	return events.DefaultACL(u, nodeURL), nil
}

// maxACLEntries bounds a node's ACL: one entry per principal named, so a
// user who blocks or befriends more than this many principals is refused
// (507) rather than growing its ACL without end.
const maxACLEntries = 1000

// maxACLBytes bounds a node's ACL encoded, as its acl.set fact holds it
// whole: principals are of the writer's choosing (a server name of any
// length), and 1,000 long ones would make a fact larger than NATS takes
// (1 MB). 1,000 entries naming users' URLs are some 130 KB.
const maxACLBytes = 256 << 10

// mergeACL returns acl updated by written, entry by entry (see the rules
// above); acl is not modified. owner is the node's user.
func mergeACL(acl, written []events.ACE, owner events.User) []events.ACE {
	out := slices.Clone(acl)
	for _, w := range written {
		isOwner := !owner.IsZero() && w.User == owner
		if isOwner {
			w.Grant, w.Deny = events.Rights(), nil
		}
		i := slices.IndexFunc(out, w.SamePrincipal)
		switch {
		case len(w.Grant) == 0 && len(w.Deny) == 0:
			if i >= 0 {
				out = slices.Delete(out, i, i+1)
			}
		case i >= 0:
			out[i] = w
		default:
			out = append(out, w)
		}
	}
	return out
}

// sameACL reports whether a and b hold the same entries in the same order.
func sameACL(a, b []events.ACE) bool {
	return slices.EqualFunc(a, b, func(x, y events.ACE) bool {
		return x.Principal == y.Principal && x.User == y.User && slices.Equal(x.Credentials, y.Credentials) &&
			slices.Equal(x.Grant, y.Grant) && slices.Equal(x.Deny, y.Deny)
	})
}
