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

	seenBob, seenCarol := len(bob.Notifies()), len(carol.Notifies())
	if err := c.Admin.DisableUser(ctx, au); err != nil {
		t.Fatal(err)
	}
	// Disabled, her logins and views end (TestClusterDisableOnline); her
	// watchers' subscriptions stay.
	bob.WaitNotify(seenBob, wait, fromState(alice, "offline"))
	carol.WaitNotify(seenCarol, wait, fromState(alice, "offline"))
	Eventually(t, wait, func() error {
		if s, v, err := heldBy(c, "home1", au); err != nil || s != s1-1 || v != 0 {
			return fmt.Errorf("home1 holds of alice, disabled, %d subscriptions, %d views (%v); want %d (her watchers') and 0", s, v, err, s1-1)
		}
		return nil
	})
	if err := c.Admin.EnableUser(ctx, directory.UserSpec{User: au, Home: "home2"}); err != nil {
		t.Fatal(err)
	}
	if rec, err := c.Admin.Directory.User(au); err != nil || rec == nil || !rec.Enabled || rec.Home != "home2" {
		t.Fatalf("alice enabled again on home2: %+v (%v)", rec, err)
	}
	handedOver(t, c, au, "home1", "home2", s1-1, 0)

	seenBob, seenCarol = len(bob.Notifies()), len(carol.Notifies())
	signInAgain(t, alice)
	must(t, "alice busy at home2", alice.SetState("busy", 1200, 0), 207)
	bob.WaitNotify(seenBob, wait, fromState(alice, "busy"))
	carol.WaitNotify(seenCarol, wait, fromState(alice, "busy"))
}

// TestClusterDisableOnline: alice, online and watched from both home
// servers, is disabled. Her sign-ins are refused from then on and nothing
// reaches her clients, yet her presence stayed as she left it: her
// watchers saw her online until her view's lease ran out (up to hours),
// as when a client logs out they see her offline at once. Disabled, her
// logins and views end, and her watchers are told she is offline; their
// subscriptions stay, so that enabled again she is seen as before.
func TestClusterDisableOnline(t *testing.T) {
	c := Start(t, Options{Users: map[string]string{"alice": "home1", "bob": "home1", "carol": "home2"}, Inside: []string{"127.0.0.0/8"}})
	ctx := context.Background()
	alice, bob, carol := c.Client(t, "alice"), c.Client(t, "bob"), c.Client(t, "carol")
	signIn(t, alice, bob, carol)
	for _, w := range []*Client{bob, carol} {
		must(t, w.Alias+" watches alice", w.Watch("alice", 3600), 207)
		w.WaitNotify(0, wait, fromState(alice, "online"))
	}
	au := events.NewUser(c.Domain, "alice")
	seenBob, seenCarol := len(bob.Notifies()), len(carol.Notifies())
	if err := c.Admin.DisableUser(ctx, au); err != nil {
		t.Fatal(err)
	}
	bob.WaitNotify(seenBob, wait, fromState(alice, "offline"))
	carol.WaitNotify(seenCarol, wait, fromState(alice, "offline"))
	p := c.Homes["home1"].Node.Projection()
	Eventually(t, wait, func() error {
		logins, err := p.Logins(au)
		if err != nil {
			return err
		}
		views, err := p.Views(au)
		if err != nil || len(logins)+len(views) != 0 {
			return fmt.Errorf("home1 holds %d logins and %d views of alice, disabled (%v)", len(logins), len(views), err)
		}
		if subs, err := p.Subscriptions(au); err != nil || len(subs) != 2 {
			return fmt.Errorf("home1 holds %d subscriptions of alice (%v), want her watchers' 2", len(subs), err)
		}
		return nil
	})

	// Enabled again, she signs in and is seen as before.
	if err := c.Admin.EnableUser(ctx, directory.UserSpec{User: au, Home: "home1"}); err != nil {
		t.Fatal(err)
	}
	seenBob, seenCarol = len(bob.Notifies()), len(carol.Notifies())
	signInAgain(t, alice)
	bob.WaitNotify(seenBob, wait, fromState(alice, "online"))
	carol.WaitNotify(seenCarol, wait, fromState(alice, "online"))
}

// TestClusterDisableWhileDown: alice is disabled while the node of her
// home server is down; it ends her logins and presence when it starts,
// and her watcher on the other home server is told she is offline.
func TestClusterDisableWhileDown(t *testing.T) {
	c, alice, carol, au := aliceWatchedFromHome2(t)
	if err := c.Homes["home1"].Stop(); err != nil {
		t.Fatal(err)
	}
	seen := len(carol.Notifies())
	if err := c.Admin.DisableUser(context.Background(), au); err != nil {
		t.Fatal(err)
	}
	c.Homes["home1"] = c.StartHome("home1")
	carol.WaitNotify(seen, wait, fromState(alice, "offline"))
}

// signInAgain signs u in and sets it online once the gateway's directory
// has it enabled again.
func signInAgain(t *testing.T, u *Client) {
	t.Helper()
	Eventually(t, wait, func() error {
		if r := u.Login(3600); r.Status != 200 {
			return fmt.Errorf("%s login: status %d, body %q", u.Alias, r.Status, r.Body)
		}
		return nil
	})
	must(t, u.Alias+" online", u.SetState("online", 1200, 0), 207)
}

// TestClusterReEnableAfterMoveWhileDown: alice is moved from home1 to
// home2 while home1's node is down, then disabled and enabled again on
// home2 before it starts. Enabling wrote her record afresh, without the
// move: home1, at its start, found her homed elsewhere with no move to
// hand her off by, and kept her state; her watcher's subscription stayed
// there, and it never heard of her again.
func TestClusterReEnableAfterMoveWhileDown(t *testing.T) {
	c, alice, carol, au := aliceWatchedFromHome2(t)
	reenableAfterMoveWhileDown(t, c, au)
	Eventually(t, wait, func() error {
		if s, v, err := heldBy(c, "home1", au); err != nil || s+v != 0 {
			return fmt.Errorf("home1 still holds %d subscriptions and %d views of alice, homed on home2 (%v)", s, v, err)
		}
		if s, _, err := heldBy(c, "home2", au); err != nil || s == 0 {
			return fmt.Errorf("home2 holds %d subscriptions of alice (%v)", s, err)
		}
		return nil
	})
	seen := len(carol.Notifies())
	signInAgain(t, alice)
	must(t, "alice busy at home2", alice.SetState("busy", 1200, 0), 207)
	carol.WaitNotify(seen, wait, fromState(alice, "busy"))
}

// aliceWatchedFromHome2 starts a cluster of two home servers, alice on
// home1 (following redirects) and carol on home2, both signed in, and
// returns it once carol watches alice online and home1 holds alice's
// login, carol's watch and her view.
func aliceWatchedFromHome2(t *testing.T) (c *Cluster, alice, carol *Client, au events.User) {
	t.Helper()
	c = Start(t, Options{Users: map[string]string{"alice": "home1", "carol": "home2"}, Inside: []string{"127.0.0.0/8"}})
	alice, carol = c.Client(t, "alice"), c.Client(t, "carol")
	alice.FollowRedirects = true
	signIn(t, alice, carol)
	must(t, "carol watches alice", carol.Watch("alice", 3600), 207)
	carol.WaitNotify(0, wait, fromState(alice, "online"))
	au = events.NewUser(c.Domain, "alice")
	Eventually(t, wait, func() error {
		if s, v, err := heldBy(c, "home1", au); err != nil || s != 2 || v != 1 {
			return fmt.Errorf("home1 holds %d subscriptions and %d views of alice (%v), want 2 and 1", s, v, err)
		}
		return nil
	})
	return c, alice, carol, au
}

// reenableAfterMoveWhileDown moves u from home1 to home2 while home1's
// node is down, disables u and enables it again on home2 (its record then
// has no move), and starts home1 again.
func reenableAfterMoveWhileDown(t *testing.T, c *Cluster, u events.User) {
	t.Helper()
	ctx := t.Context()
	if err := c.Homes["home1"].Stop(); err != nil {
		t.Fatal(err)
	}
	if err := c.Admin.MoveUser(ctx, u, "home2"); err != nil {
		t.Fatal(err)
	}
	if err := c.Admin.DisableUser(ctx, u); err != nil {
		t.Fatal(err)
	}
	if err := c.Admin.EnableUser(ctx, directory.UserSpec{User: u, Home: "home2"}); err != nil {
		t.Fatal(err)
	}
	c.Homes["home1"] = c.StartHome("home1")
}
