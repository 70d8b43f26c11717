package events

import (
	"strings"
	"testing"
)

// TestDescribeTellsApart: events that differ in what an auditor must
// know (federation switched on or off, which ranges are inside the
// firewall, what an ACL grants, which domains an administrator holds,
// what was deleted) are described differently, and no directory event
// is described by nothing.
func TestDescribeTellsApart(t *testing.T) {
	bob := NewUser("example.test", "bob")
	pairs := []struct {
		what string
		a, b Event
	}{
		{"federation on or off", &FederationSet{InternetCapable: true}, &FederationSet{InternetCapable: false}},
		{"firewall ranges", &TopologySet{Inside: []string{"10.0.0.0/8"}}, &TopologySet{Inside: []string{"0.0.0.0/0"}}},
		{"home server hosting users or not", &HomeServerChanged{Name: "home1", HostsUsers: true}, &HomeServerChanged{Name: "home1", HostsUsers: false}},
		{"an administrator's domains", &AdminSet{Name: "ops", Role: RoleDomain, Domains: []string{"a.test"}}, &AdminSet{Name: "ops", Role: RoleDomain, Domains: []string{"b.test"}}},
		{"an ACL granting or denying", &ACLSet{Node: bob, ACEs: []ACE{{Credentials: []string{CredAny}, Grant: []string{RightPresence}}}},
			&ACLSet{Node: bob, ACEs: []ACE{{Credentials: []string{CredAny}, Deny: []string{RightPresence}}}}},
		{"an ACL's principal", &ACLSet{Node: bob, ACEs: []ACE{{Principal: "http://x/instmsg/aliases/eve", Credentials: []string{CredAny}, Grant: []string{RightAll}}}},
			&ACLSet{Node: bob, ACEs: []ACE{{Principal: "http://x/instmsg/aliases/bob", Credentials: []string{CredAny}, Grant: []string{RightAll}}}}},
		{"a user's Windows account", &UserEnabled{User: bob, Home: "home1", NTAccount: "alice"}, &UserEnabled{User: bob, Home: "home1"}},
		{"a domain's Windows domain", &DomainCreated{Domain: "example.test", IMHost: "im.example.test", NTDomain: "EXAMPLE"},
			&DomainCreated{Domain: "example.test", IMHost: "im.example.test", NTDomain: "OTHER"}},
		{"a domain's other hosts", &DomainCreated{Domain: "example.test", IMHost: "im.example.test", Hosts: []string{"im2.example.test"}},
			&DomainCreated{Domain: "example.test", IMHost: "im.example.test"}},
		{"a domain's hosts set", &DomainHostsSet{Domain: "example.test", Hosts: []string{"gw7.example.test"}, EmailDomains: []string{"example.test"}},
			&DomainHostsSet{Domain: "example.test", EmailDomains: []string{"example.test"}}},
		{"a domain's e-mail domains set", &DomainHostsSet{Domain: "example.test", Hosts: []string{"a.example.test"}},
			&DomainHostsSet{Domain: "example.test", EmailDomains: []string{"a.example.test"}}},
		{"the domain deleted", &DomainDeleted{Domain: "a.test"}, &DomainDeleted{Domain: "b.test"}},
		{"the home server deleted", &HomeServerDeleted{Name: "home1"}, &HomeServerDeleted{Name: "home2"}},
		{"the router deleted", &RouterDeleted{Name: "r1"}, &RouterDeleted{Name: "r2"}},
		{"the administrator removed", &AdminRemoved{Name: "ops"}, &AdminRemoved{Name: "root"}},
		{"the cluster's replicas", &ClusterCreated{KeyCheck: "k", Replicas: 1}, &ClusterCreated{KeyCheck: "k", Replicas: 3}},
	}
	for _, p := range pairs {
		da, db := Describe(p.a), Describe(p.b)
		if da == db {
			t.Errorf("%s: both described as %q", p.what, da)
		}
	}
	for _, e := range sampleEvents() {
		if _, ok := e.(DirectoryEvent); ok && strings.TrimSpace(Describe(e)) == "" {
			t.Errorf("%s is described by nothing", e.Type())
		}
	}
}

// TestDescribeSubscriber: a subscription's description names who
// subscribed and on which credential: a subscription handed over from
// another home server is the system's by its actor, so the description
// is the only place the audit says whose it is.
func TestDescribeSubscriber(t *testing.T) {
	bob := NewUser("example.test", "bob")
	sub := func(subscriber string, u User, cred string) Event {
		return &SubscriptionCreated{Meta: Meta{Actor: "system"}, Node: bob, ID: 4, Kind: NotifyPropChange, CallBack: "http://im.example.test/instmsg/aliases/x",
			Subscriber: subscriber, SubscriberUser: u, Lifetime: 60, Credential: cred}
	}
	eve := sub("http://im.example.test/instmsg/aliases/eve", NewUser("example.test", "eve"), CredNTLM)
	ann := sub("http://im.example.test/instmsg/aliases/ann", NewUser("example.test", "ann"), CredNTLM)
	foreign := sub("http://im.other.test/instmsg/aliases/eve", User{}, CredAssertion)
	if d := Describe(eve); !strings.Contains(d, "eve@example.test") || !strings.Contains(d, CredNTLM) {
		t.Errorf("eve's subscription described as %q", d)
	}
	if d := Describe(foreign); !strings.Contains(d, "http://im.other.test/instmsg/aliases/eve") || !strings.Contains(d, CredAssertion) {
		t.Errorf("a foreign subscription described as %q", d)
	}
	if Describe(eve) == Describe(ann) {
		t.Errorf("eve's and ann's subscriptions both described as %q", Describe(eve))
	}
}

// TestDescribeCounts: counts in descriptions are read as written, one
// thing in the singular ("1 byte to 1 client", where it said "1 bytes to
// 1 clients"), none or many in the plural.
func TestDescribeCounts(t *testing.T) {
	ace := ACE{Credentials: []string{CredAny}, Grant: []string{RightPresence}}
	for _, tt := range []struct {
		ev   Event
		want string
	}{
		{&MessageAccepted{Body: []byte("x"), Endpoints: 1}, "1 byte to 1 client"},
		{&MessageAccepted{Body: []byte("hi"), Endpoints: 0}, "2 bytes to 0 clients"},
		{&MessageAccepted{BodySize: 1, BodySHA256: "ab", Endpoints: 1}, "1 byte (not kept; sha256 ab) to 1 client"},
		{&MessageAccepted{BodySize: 3, BodySHA256: "ab", Endpoints: 2}, "3 bytes (not kept; sha256 ab) to 2 clients"},
		{&UserDeparted{To: "home2", Subs: 1, Views: 1, Move: 7}, "to home2: 1 subscription, 1 view (move 7)"},
		{&UserArrived{From: "home1", Subs: 2, Views: 0, Move: 7}, "from home1: 2 subscriptions, 0 views (move 7)"},
		{&ClusterCreated{KeyCheck: "k", Replicas: 1}, "key check k, 1 replica"},
		{&ClusterCreated{KeyCheck: "k", Replicas: 3}, "key check k, 3 replicas"},
		{&ACLSet{ACEs: []ACE{ace}}, "1 ACE: all principals [any] grant presence"},
		{&ACLSet{ACEs: []ACE{ace, ace}}, "2 ACEs: all principals [any] grant presence; all principals [any] grant presence"},
	} {
		if got := Describe(tt.ev); got != tt.want {
			t.Errorf("Describe(%s) = %q, want %q", tt.ev.Type(), got, tt.want)
		}
	}
}
