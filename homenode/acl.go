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
			if (a.Principal != "") != specific || !aceMatches(a, p) || !credentialMatches(a, p.cred) {
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
	case a.Principal == "":
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
	return events.DefaultACL(nodeURL), nil
}
