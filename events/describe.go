package events

import (
	"fmt"
	"strconv"
	"strings"
)

// Describe says in a few words what an event records, for the audit's
// readers (rvpctl audit, the operator console): the detail beside its
// type, node and actor. It never shows a secret: sealed verifiers and
// message bodies are left out. Whatever changes a right, a setting or
// what exists is told in full (what an ACL grants and denies to whom,
// whether federation was switched on or off, which ranges are inside the
// firewall, which domains an administrator holds), so that two events
// doing opposite things are never described alike.
func Describe(ev Event) string {
	switch x := ev.(type) {
	case *SubscriptionCreated:
		s := fmt.Sprintf("#%d %s → %s for %ds", x.ID, x.Kind, x.CallBack, x.Lifetime)
		// Whose it is: a handed-over subscription's actor is "system".
		switch {
		case !x.SubscriberUser.IsZero():
			s += " by " + x.SubscriberUser.String()
		case x.Subscriber != "":
			s += " by " + x.Subscriber
		}
		if !x.Watcher.IsZero() {
			s += " for " + x.Watcher.String()
		}
		if x.Credential != "" {
			s += " (" + x.Credential + ")"
		}
		return s
	case *SubscriptionRenewed:
		return fmt.Sprintf("#%d for %ds", x.ID, x.Lifetime)
	case *SubscriptionEnded:
		return fmt.Sprintf("#%d %s", x.ID, x.Reason)
	case *ViewSet:
		return fmt.Sprintf("view %d %s (lease %ds)", x.ID, x.Value, x.Timeout)
	case *ViewEnded:
		return fmt.Sprintf("view %d %s", x.ID, x.Reason)
	case *MessageAccepted:
		if x.BodySHA256 != "" {
			return fmt.Sprintf("%d %s (not kept; sha256 %s) to %d %s", x.BodySize, plural(x.BodySize, "byte"), x.BodySHA256, x.Endpoints, plural(x.Endpoints, "client"))
		}
		return fmt.Sprintf("%d %s to %d %s", len(x.Body), plural(len(x.Body), "byte"), x.Endpoints, plural(x.Endpoints, "client"))
	case *MessageDelivered:
		return fmt.Sprintf("status %d, %d delivered, %d failed", x.Status, x.Delivered, x.Failed)
	case *DomainCreated:
		s := x.Domain + " (IM host " + x.IMHost
		if len(x.Hosts) > 0 {
			s += "; also " + strings.Join(x.Hosts, ", ")
		}
		if len(x.EmailDomains) > 0 {
			s += "; e-mail " + strings.Join(x.EmailDomains, ", ")
		}
		if x.NTDomain != "" {
			s += "; Windows domain " + x.NTDomain
		}
		return s + ")"
	case *DomainHostsSet:
		s := x.Domain + ": hosts "
		if len(x.Hosts) == 0 {
			s += "none"
		} else {
			s += strings.Join(x.Hosts, ", ")
		}
		if len(x.EmailDomains) == 0 {
			return s + "; e-mail domains none"
		}
		return s + "; e-mail domains " + strings.Join(x.EmailDomains, ", ")
	case *DomainDeleted:
		return x.Domain
	case *HomeServerCreated:
		s := x.Name + " at " + x.Host
		if x.Site != "" {
			s += " in site " + x.Site
		}
		return s + ", hosts users: " + strconv.FormatBool(x.HostsUsers)
	case *HomeServerChanged:
		return x.Name + ", hosts users: " + strconv.FormatBool(x.HostsUsers)
	case *HomeServerDeleted:
		return x.Name
	case *RouterDeleted:
		return x.Name
	case *UserEnabled:
		s := x.User.String() + " on " + x.Home
		if x.NTAccount != "" {
			s += " (Windows account " + x.NTAccount + ")"
		}
		return s
	case *UserDisabled:
		return x.User.String()
	case *UserMoved:
		return x.User.String() + " from " + x.From + " to " + x.Home
	case *UserDeparted:
		return fmt.Sprintf("to %s: %d %s, %d %s (move %d)", x.To, x.Subs, plural(x.Subs, "subscription"), x.Views, plural(x.Views, "view"), x.Move)
	case *RequestForwarded:
		return fmt.Sprintf("to %s (move %d)", x.To, x.Move)
	case *HomeFenced:
		if x.Part > 1 {
			return fmt.Sprintf("fence %d of %d (lease revision %d)", x.Part, x.Parts, x.Term)
		}
		return fmt.Sprintf("owned by node %s from here (lease revision %d): a previous owner's facts still on their way are refused after these %d", x.Holder, x.Term, x.Parts)
	case *UserArrived:
		if x.Part != 0 {
			return fmt.Sprintf("from %s: part %d, %d %s (move %d)", x.From, x.Part, x.Subs, plural(x.Subs, "subscription"), x.Move)
		}
		return fmt.Sprintf("from %s: %d %s, %d %s (move %d)", x.From, x.Subs, plural(x.Subs, "subscription"), x.Views, plural(x.Views, "view"), x.Move)
	case *ACLSet:
		return describeACL(x.ACEs)
	case *PropertySet:
		return x.Value.Local + " = " + x.Value.Value
	case *RouterCreated:
		return x.Name + " for " + x.Domain + " at " + x.Host + " (" + x.Mode + ")"
	case *PasswordSet:
		return x.User.String() + " (verifiers sealed)"
	case *AdminSet:
		s := x.Name + " (" + x.Role
		if len(x.Domains) > 0 {
			s += " of " + strings.Join(x.Domains, ", ")
		}
		return s + "; verifier sealed)"
	case *AdminRemoved:
		return x.Name
	case *TopologySet:
		if len(x.Inside) == 0 {
			return "inside the firewall: nothing"
		}
		return "inside the firewall: " + strings.Join(x.Inside, ", ")
	case *FederationSet:
		if x.InternetCapable {
			return "Internet-capable: on"
		}
		return "Internet-capable: off"
	case *ClusterCreated:
		return fmt.Sprintf("key check %s, %d %s", x.KeyCheck, x.Replicas, plural(x.Replicas, "replica"))
	}
	return ""
}

// describeACL tells each entry of an ACL: whom it is for, on which
// credentials, and what it grants and denies.
func describeACL(aces []ACE) string {
	if len(aces) == 0 {
		return "0 ACEs"
	}
	parts := make([]string, len(aces))
	for i, a := range aces {
		who := a.Principal
		switch {
		case a.AllPrincipals():
			who = "all principals"
		case who == "":
			who = a.User.String()
		}
		s := who + " [" + strings.Join(a.Credentials, ",") + "]"
		if len(a.Grant) > 0 {
			s += " grant " + strings.Join(a.Grant, ",")
		}
		if len(a.Deny) > 0 {
			s += " deny " + strings.Join(a.Deny, ",")
		}
		parts[i] = s
	}
	return fmt.Sprintf("%d %s: %s", len(aces), plural(len(aces), "ACE"), strings.Join(parts, "; "))
}

// plural is noun as counted n times: "client" for 1, "clients" otherwise
// (every noun counted here takes an s).
func plural(n int, noun string) string {
	if n == 1 {
		return noun
	}
	return noun + "s"
}
