package directory_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/rvp-im/rvpd/directory"
	"github.com/rvp-im/rvpd/events"
)

// TestEnableAndDeleteHomeServerAtOnce: one administrator enables a user
// on a home server while another deletes that home server, both on
// projections that are up to date. The deletion is fenced by the users'
// events (1aacc9e), but the enabling by the user's own subject alone: a
// deletion appended between the enabling's check of the home server and
// its append left both successful, and the user homed on a home server
// that no longer exists; and so with a user moved to it. One of the two
// must fail.
func TestEnableAndDeleteHomeServerAtOnce(t *testing.T) {
	f := newAdminFixture(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	a, b, resume := staleAdmins(t, f, ctx)
	resume()
	for i := range 60 {
		home := fmt.Sprintf("h%d", i)
		if err := a.CreateHomeServer(ctx, home, home+".example.test", "", true); err != nil {
			t.Fatal(err)
		}
		if err := b.Directory.WaitFor(ctx, a.Directory.Position()); err != nil {
			t.Fatal(err)
		}
		u := events.NewUser("example.test", fmt.Sprintf("u%d", i))
		var enErr, delErr error
		var wg sync.WaitGroup
		wg.Go(func() {
			if i%2 == 0 {
				enErr = a.EnableUser(ctx, directory.UserSpec{User: u, Home: home})
				return
			}
			// bob moved to it (home1 is never deleted).
			u = events.NewUser("example.test", "bob")
			enErr = a.MoveUser(ctx, u, home)
		})
		wg.Go(func() { delErr = b.DeleteHomeServer(ctx, home) })
		wg.Wait()
		if enErr == nil && delErr == nil {
			rec, _ := a.Directory.User(u)
			t.Fatalf("attempt %d: %s enabled on (or moved to) %s and %s deleted, both successful: %+v", i, u, home, home, rec)
		}
	}
}
