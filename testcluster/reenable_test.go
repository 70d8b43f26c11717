package testcluster

import (
	"context"
	"fmt"
	"testing"

	"github.com/rvp-im/rvpd/directory"
	"github.com/rvp-im/rvpd/events"
)

// TestClusterReEnableElsewhere: alice, online on home1 and watched from
// both home servers, is disabled, then enabled again on home2. Enabling
// wrote a fresh record on home2 with no move in it: home1 kept her state
// (her watchers' subscriptions, her views) and never handed it over, as
// it does for a move, and her watchers never heard of her again, their
// subscriptions being on a home server that no longer serves her. Enabled
// again elsewhere, she is moved there: home1 hands her state over, and
// her watchers see her next change.
func TestClusterReEnableElsewhere(t *testing.T) {
	c := Start(t, Options{Users: map[string]string{"alice": "home1", "bob": "home1", "carol": "home2"}, Inside: []string{"127.0.0.0/8"}})
	ctx := context.Background()
	alice, bob, carol := c.Client(t, "alice"), c.Client(t, "bob"), c.Client(t, "carol")
	for _, u := range []*Client{alice, bob, carol} {
		u.FollowRedirects = true
	}
	signIn(t, alice, bob, carol)
	for _, w := range []*Client{bob, carol} {
		must(t, w.Alias+" watches alice", w.Watch("alice", 3600), 207)
		w.WaitNotify(0, wait, fromState(alice, "online"))
	}
	au := events.NewUser(c.Domain, "alice")
	var s1, v1 int
	Eventually(t, wait, func() error {
		var err error
		if s1, v1, err = heldBy(c, "home1", au); err != nil || s1 != 3 || v1 != 1 {
			return fmt.Errorf("home1 holds of alice %d subscriptions, %d views (%v); want 3 (login, bob's, carol's) and 1", s1, v1, err)
		}
		return nil
	})

	if err := c.Admin.DisableUser(ctx, au); err != nil {
		t.Fatal(err)
	}
	if err := c.Admin.EnableUser(ctx, directory.UserSpec{User: au, Home: "home2"}); err != nil {
		t.Fatal(err)
	}
	if rec, err := c.Admin.Directory.User(au); err != nil || rec == nil || !rec.Enabled || rec.Home != "home2" {
		t.Fatalf("alice enabled again on home2: %+v (%v)", rec, err)
	}
	handedOver(t, c, au, "home1", "home2", s1, v1)

	seenBob, seenCarol := len(bob.Notifies()), len(carol.Notifies())
	must(t, "alice busy at home2", alice.SetState("busy", 1200, 0), 207)
	bob.WaitNotify(seenBob, wait, fromState(alice, "busy"))
	carol.WaitNotify(seenCarol, wait, fromState(alice, "busy"))
}
