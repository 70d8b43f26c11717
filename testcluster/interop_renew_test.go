package testcluster

import (
	"fmt"
	"regexp"
	"testing"
	"time"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/homenode"
	"github.com/rvp-im/rvpd/projections"
)

// TestInteropLibrvpRenewal: librvp keeps its subscriptions by renewing
// them at a keepalive (every 30 s) once its login subscription has under
// 30 s left: the login by its id (or, in other captures, its self-watch),
// and each buddy's by the buddy's. With the home server granting 45 s,
// everything alice and bob made at sign-in, their buddies added after
// it, would lapse 45 s in unless the server took those renewals. Past
// that first lifetime both still hold every subscription, messages reach
// both, and a change of presence reaches the buddy.
func TestInteropLibrvpRenewal(t *testing.T) {
	Driver(t)
	const lifetime = 45 * time.Second
	c := Start(t, Options{Users: map[string]string{"alice": "home1", "bob": "home1"}, Hosts: []string{"127.0.0.1"},
		Policy: homenode.Policy{MinLease: time.Second, MinLifetime: time.Second, MaxLifetime: lifetime, DeliveryTimeout: 5 * time.Second}})
	start := func(alias string) *Pidgin {
		return StartPidgin(t, PidginOptions{User: alias + "@" + c.Domain, Password: c.Password, Server: c.Gateways[0].Addr, Domain: c.NTDomain})
	}
	const w = 20 * time.Second
	alice, bob := start("alice"), start("bob")
	Befriend(w, alice, bob)

	// What each node holds now, all of it granted 45 s at most.
	p := c.Homes["home1"].Node.Projection()
	users := []events.User{events.NewUser(c.Domain, "alice"), events.NewUser(c.Domain, "bob")}
	first := map[string]time.Time{}
	for _, u := range users {
		subs, err := p.Subscriptions(u)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range subs {
			first[subKey(s)] = s.Expires
		}
	}
	if len(first) < 4 { // two logins, two buddies' watches at least
		t.Fatalf("%d subscriptions after sign-in, want at least 4: %v", len(first), first)
	}
	// Wait until every one of them is past the expiry it was first
	// granted, and still there.
	Eventually(t, lifetime+w, func() error {
		held := map[string]bool{}
		for _, u := range users {
			subs, err := p.Subscriptions(u)
			if err != nil {
				return err
			}
			for _, s := range subs {
				held[subKey(s)] = true
			}
		}
		for k, exp := range first {
			if !held[k] {
				return fmt.Errorf("subscription %s (first expiring %s) is gone; held: %v", k, exp.Format(time.TimeOnly), held)
			}
			if time.Now().Before(exp.Add(time.Second)) {
				return fmt.Errorf("subscription %s first expires at %s", k, exp.Format(time.TimeOnly))
			}
		}
		return nil
	})
	fromAlice := len(alice.Lines())
	bob.Do("status away")
	alice.WaitFrom(fromAlice, w, `^PRESENCE bob@example\.test away 1$`)
	for _, m := range []struct {
		from, to *Pidgin
		text     string
	}{{bob, alice, "still here after the first lifetime"}, {alice, bob, "and so am I"}} {
		m.from.Do("send " + m.to.Name + " " + m.text)
		m.to.Wait(w, `^IM \S+ `+regexp.QuoteMeta(m.text)+`$`)
	}
	if n := alice.Count("^CONNECTION_ERROR") + bob.Count("^CONNECTION_ERROR"); n != 0 {
		t.Errorf("%d connection errors", n)
	}
}

func subKey(s projections.Subscription) string {
	return fmt.Sprintf("%s#%d(%s)", s.Node, s.ID, s.Kind)
}
