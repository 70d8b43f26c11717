package testcluster

import (
	"context"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/directory"
	"github.com/rvp-im/rvpd/events"
)

// departures counts the user.departed facts of u in home server h's
// stream.
func departures(t *testing.T, c *Cluster, h string, u events.User) int {
	t.Helper()
	ctx := t.Context()
	cons, err := c.JS.OrderedConsumer(ctx, c.FactStream(h), jetstream.OrderedConsumerConfig{FilterSubjects: []string{events.FactSubject(h, u)}})
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for left := info.NumPending; left > 0; {
		batch, err := cons.Fetch(int(min(left, 100)))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			left--
			if m.Headers().Get(events.HeaderType) == events.TypeUserDeparted {
				n++
			}
		}
		if err := batch.Error(); err != nil {
			t.Fatal(err)
		}
	}
	return n
}

// TestClusterReEnableAfterMoveHandsOffOnce: alice, with an ACL, is moved
// from home1 to home2 while home1's node is down, then disabled and
// enabled again on home2 (her record has no move then). home1 hands her
// state over at its start (TestClusterReEnableAfterMoveWhileDown). A
// handoff ends her subscriptions and views on home1, not her ACL: home1
// still "holds" her, and named the handoff by the directory sequence of
// her last event. After any later change of her record, every start of
// home1 handed her over again under a new sequence (a user.departed
// more, and home2 takes its stale ACL and properties as a new arrival).
func TestClusterReEnableAfterMoveHandsOffOnce(t *testing.T) {
	c := Start(t, Options{Users: map[string]string{"alice": "home1", "bob": "home1", "carol": "home2"}, Inside: []string{"127.0.0.0/8"}})
	ctx := context.Background()
	alice, bob, carol := c.Client(t, "alice"), c.Client(t, "bob"), c.Client(t, "carol")
	for _, u := range []*Client{alice, bob, carol} {
		u.FollowRedirects = true
	}
	signIn(t, alice, bob, carol)
	acl := `<a:rvpacl xmlns:a="http://schemas.microsoft.com/rvp/acl/"><a:acl><a:inheritance>none</a:inheritance>` +
		`<a:ace><a:principal><a:rvp-principal>` + bob.URL + `</a:rvp-principal><a:credentials><a:ntlm/></a:credentials></a:principal><a:grant/><a:deny><a:presence/></a:deny></a:ace>` +
		`<a:ace><a:principal><a:allprincipals/><a:credentials><a:assertion/><a:digest/><a:ntlm/></a:credentials></a:principal><a:grant><a:list/><a:read/><a:send-to/><a:presence/></a:grant><a:deny/></a:ace></a:acl></a:rvpacl>`
	must(t, "alice's ACL", alice.Do("ACL", "/instmsg/aliases/alice", []byte(acl), alice.From(), "Content-Type: text/xml"), 200)
	must(t, "carol watches alice", carol.Watch("alice", 3600), 207)
	carol.WaitNotify(0, wait, fromState(alice, "online"))
	au := events.NewUser(c.Domain, "alice")

	reenableAfterMoveWhileDown(t, c, au)
	Eventually(t, wait, func() error {
		if s, v, err := heldBy(c, "home1", au); err != nil || s+v != 0 {
			return fmt.Errorf("home1 still holds %d subscriptions and %d views of alice (%v)", s, v, err)
		}
		return nil
	})
	// bob's request is decided after home1's start handed alice off.
	must(t, "bob online", bob.SetState("online", 1200, 0), 207)
	if n := departures(t, c, "home1", au); n != 1 {
		t.Fatalf("home1 recorded %d departures of alice at its start, want 1", n)
	}

	// A later change of her record (disabled and enabled again where she
	// is), and home1 restarts.
	if err := c.Admin.DisableUser(ctx, au); err != nil {
		t.Fatal(err)
	}
	if err := c.Admin.EnableUser(ctx, directory.UserSpec{User: au, Home: "home2"}); err != nil {
		t.Fatal(err)
	}
	if err := c.Homes["home1"].Stop(); err != nil {
		t.Fatal(err)
	}
	c.Homes["home1"] = c.StartHome("home1")
	// Decided after the start's strays, whose handoffs are published
	// before it.
	Eventually(t, wait, func() error {
		if r := bob.SetState("busy", 1200, 0); r.Status != 207 {
			return fmt.Errorf("bob busy: status %d", r.Status)
		}
		return nil
	})
	if n := departures(t, c, "home1", au); n != 1 {
		t.Errorf("home1 handed alice over %d times, want once: each start after a change of her record hands her stale state over again", n)
	}
}
