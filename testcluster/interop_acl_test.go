package testcluster

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestInteropLibrvpACL: librvp writes its ACL one entry at a time (the
// allprincipals entry and its own at sign-in, one per buddy it adds, one
// per principal it blocks); each write updates only the entry it names.
// alice adds bob; carol, whom alice's writes never name, still messages
// alice and sees her presence; when alice blocks carol, carol and only
// carol is refused. On one home server, and with carol on another.
func TestInteropLibrvpACL(t *testing.T) {
	Driver(t)
	t.Run("one home server", func(t *testing.T) {
		c := Start(t, Options{Users: map[string]string{"alice": "home1", "bob": "home1", "carol": "home1"}, Hosts: []string{"127.0.0.1"}})
		librvpACL(t, c, c.Gateways[0].Addr)
	})
	t.Run("carol on another home server", func(t *testing.T) {
		// As in TestInteropLibrvpRedirect: librvp finds the router at the
		// third gateway and is redirected to its home server's.
		c := Start(t, Options{Users: map[string]string{"alice": "home1", "bob": "home1", "carol": "home2"}, Gateways: 3, Routers: 1,
			Inside: []string{"127.0.0.0/8"}, Hosts: []string{"127.0.0.1"}})
		librvpACL(t, c, c.Gateways[2].Addr)
	})
}

func librvpACL(t *testing.T, c *Cluster, server string) {
	const w = 20 * time.Second
	start := func(alias string) *Pidgin {
		return StartPidgin(t, PidginOptions{User: alias + "@" + c.Domain, Password: c.Password, Server: server, Domain: c.NTDomain})
	}
	alice, bob, carol := start("alice"), start("bob"), start("carol")
	for _, p := range []*Pidgin{alice, bob, carol} {
		p.Wait(w, "^SIGNED_ON$")
	}
	alice.Do("add bob@example.test")
	bob.Do("add alice@example.test")
	carol.Do("add alice@example.test") // alice never adds carol
	alice.Wait(w, `^PRESENCE bob@example\.test online 1$`)
	bob.Wait(w, `^PRESENCE alice@example\.test online 1$`)
	carol.Wait(w, `^PRESENCE alice@example\.test online 1$`)

	// Both reach alice: bob, her buddy, and carol, whom no entry names.
	// librvp names a sender that is not on the list by its URL
	// (carol@127.0.0.1:<port>), a buddy by its buddy name.
	send := func(from, to *Pidgin, text string) {
		t.Helper()
		from.Do("send " + to.Name + " " + text)
		alias := from.Name[:strings.IndexByte(from.Name, '@')]
		to.Wait(w, `^IM `+regexp.QuoteMeta(alias)+`@\S+ `+regexp.QuoteMeta(text)+`$`)
	}
	send(carol, alice, "carol here, not on your list")
	send(bob, alice, "bob here")
	send(alice, carol, "hello carol")
	fromBob, fromCarol := len(bob.Lines()), len(carol.Lines())
	alice.Do("status away")
	bob.WaitFrom(fromBob, w, `^PRESENCE alice@example\.test away 1$`)
	carol.WaitFrom(fromCarol, w, `^PRESENCE alice@example\.test away 1$`)

	// alice blocks carol: carol sees her offline and may not message her;
	// bob is untouched.
	fromCarol = len(carol.Lines())
	alice.Do("deny carol@example.test")
	carol.WaitFrom(fromCarol, w, `^PRESENCE alice@example\.test offline 0$`)
	// librvp shows nothing for the 403; carol's next message, to bob,
	// marks that the refused one was answered.
	fromAlice := len(alice.Lines())
	carol.Do("send alice@example.test let me in")
	send(carol, bob, "carol's marker")
	fromBob = len(bob.Lines())
	alice.Do("status busy")
	bob.WaitFrom(fromBob, w, `^PRESENCE alice@example\.test busy 1$`)
	send(bob, alice, "still reaching you")
	for _, l := range alice.Lines()[fromAlice:] {
		if strings.HasSuffix(l, " let me in") {
			t.Errorf("alice received carol's message after blocking her: %q", l)
		}
	}
	if got := carol.Count(`^PRESENCE alice@example\.test busy`); got != 0 {
		t.Errorf("carol was shown alice busy %d times after the block", got)
	}
	if n := alice.Count("^CONNECTION_ERROR") + bob.Count("^CONNECTION_ERROR") + carol.Count("^CONNECTION_ERROR"); n != 0 {
		t.Errorf("%d connection errors", n)
	}
}

// TestInteropLibrvpSignInAgain: alice (home1) and dave (home2) sign in
// with librvp at different gateways, add each other, chat and sign off;
// then both sign in again from the same places: each sees the other
// online and their messages are accepted. With the router redirecting
// them to their home servers, and proxying.
func TestInteropLibrvpSignInAgain(t *testing.T) {
	Driver(t)
	for _, mode := range []string{"redirect", "proxy"} {
		t.Run(mode, func(t *testing.T) {
			c := Start(t, Options{Users: map[string]string{"alice": "home1", "dave": "home2"}, Gateways: 2, Routers: 1, RouterMode: mode,
				Inside: []string{"127.0.0.0/8"}, Hosts: []string{"127.0.0.1"}})
			const w = 20 * time.Second
			for round := 1; round <= 2; round++ {
				alice := StartPidgin(t, PidginOptions{User: "alice@" + c.Domain, Password: c.Password, Server: c.Gateways[0].Addr, Domain: c.NTDomain})
				dave := StartPidgin(t, PidginOptions{User: "dave@" + c.Domain, Password: c.Password, Server: c.Gateways[1].Addr, Domain: c.NTDomain})
				// The driver starts with a new configuration each time,
				// so each round adds the buddy again.
				Befriend(w, alice, dave)
				for _, m := range []struct {
					from, to *Pidgin
					text     string
				}{{alice, dave, "round " + strconv.Itoa(round) + " from alice"}, {dave, alice, "round " + strconv.Itoa(round) + " from dave"}} {
					m.from.Do("send " + m.to.Name + " " + m.text)
					m.to.Wait(w, `^IM \S+ `+regexp.QuoteMeta(m.text)+`$`)
				}
				if n := alice.Count("^CONV_ERROR") + dave.Count("^CONV_ERROR"); n != 0 {
					t.Errorf("round %d: %d conversation errors", round, n)
				}
				alice.Quit()
				dave.Quit()
			}
		})
	}
}
