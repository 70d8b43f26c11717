package testcluster

import (
	"fmt"
	"testing"

	"github.com/rvp-im/rvpd/directory"
)

// TestClusterDisableAndReEnableWhileDown: alice, online on home1 and
// watched by carol (home2), is disabled and enabled again while home1's
// node is down, on home1 itself or on home2 (enabled on home1 and moved
// there). Her disable ended nothing: home1 was down, and at its start
// she is enabled. On home1 her logins and views stayed; moved, home1
// handed them over with her watchers' subscriptions, and home2 took them
// as hers. Either way she was signed in and online, though no client of
// hers was, until their leases ran out (hours), and carol, last told she
// was online, was told nothing. Disabled, her logins and presence end,
// as they do when her home server hears of it; enabled again, she is
// seen when she signs in again.
func TestClusterDisableAndReEnableWhileDown(t *testing.T) {
	for _, to := range []string{"home1", "home2"} {
		t.Run("enabled on "+to, func(t *testing.T) {
			c, alice, carol, au := aliceWatchedFromHome2(t)
			if err := c.Homes["home1"].Stop(); err != nil {
				t.Fatal(err)
			}
			seen := len(carol.Notifies())
			if err := c.Admin.DisableUser(t.Context(), au); err != nil {
				t.Fatal(err)
			}
			if err := c.Admin.EnableUser(t.Context(), directory.UserSpec{User: au, Home: to}); err != nil {
				t.Fatal(err)
			}
			c.Homes["home1"] = c.StartHome("home1")
			// Her watcher's subscription is where she lives.
			Eventually(t, wait, func() error {
				if w, err := c.Homes[to].Node.Projection().Watchers(au); err != nil || len(w) != 1 {
					return fmt.Errorf("%s holds %d watchers of alice (%v), want carol", to, len(w), err)
				}
				return nil
			})
			carol.WaitNotify(seen, wait, fromState(alice, "offline"))
			logins, err := c.Homes[to].Node.Projection().Logins(au)
			if err != nil {
				t.Fatal(err)
			}
			views, err := c.Homes[to].Node.Projection().Views(au)
			if err != nil {
				t.Fatal(err)
			}
			if len(logins)+len(views) != 0 {
				t.Errorf("alice, disabled and enabled again while home1 was down, holds %d logins and %d views on %s from before", len(logins), len(views), to)
			}
		})
	}
}
