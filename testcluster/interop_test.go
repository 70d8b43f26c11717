package testcluster

import (
	"context"
	"regexp"
	"testing"
	"time"

	"github.com/rvp-im/rvpd/events"
)

// TestInteropLibrvpRedirect signs two real librvp clients on through a
// router that redirects them (inside the firewall topology) to their home
// servers, alice on home1 and bob on home2: librvp follows a 302 on the
// same connection with only the path of Location, so the gateway it talks
// to serves both home servers' physical URLs.
func TestInteropLibrvpRedirect(t *testing.T) {
	Driver(t)
	// librvp finds the router as 127.0.0.1 at the third gateway (the
	// driver's SRV answer); the first two are the home servers' hosts.
	c := Start(t, Options{Users: map[string]string{"alice": "home1", "bob": "home2"}, Gateways: 3, Routers: 1,
		Inside: []string{"127.0.0.0/8"}, Hosts: []string{"127.0.0.1"}})
	start := func(alias string) *Pidgin {
		return StartPidgin(t, PidginOptions{User: alias + "@" + c.Domain, Password: c.Password, Server: c.Gateways[2].Addr, Domain: c.NTDomain})
	}
	const w = 20 * time.Second
	alice, bob := start("alice"), start("bob")
	Befriend(w, alice, bob)
	from := len(alice.Lines())
	bob.Do("status away")
	alice.WaitFrom(from, w, `^PRESENCE bob@example\.test away 1$`)
	alice.Do("send bob@example.test through the router ✓")
	bob.Wait(w, `^IM alice@example\.test `+regexp.QuoteMeta("through the router ✓")+`$`)
	bob.Do("send alice@example.test and back")
	alice.Wait(w, `^IM bob@example\.test and back$`)
	if n := alice.Count("^CONNECTION_ERROR") + bob.Count("^CONNECTION_ERROR"); n != 0 {
		t.Errorf("%d connection errors", n)
	}
	// The router did redirect: each redirect was a lookup.
	st, err := c.JS.Stream(context.Background(), events.StreamLookups)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := st.Info(context.Background()); err != nil || info.State.LastSeq < 2 {
		t.Errorf("%v lookups (redirects) seen, want some: %v", info.State.LastSeq, err)
	}
}
