package directory_test

import (
	"context"
	"testing"
	"time"

	"github.com/rvp-im/rvpd/directory"
	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/rvp"
)

// TestUserAddressAsTyped: a user named with its domain in upper case, or
// written in full with its trailing dot (alice@Example.Test.), through
// the directory service (which clients other than rvpctl may send as
// typed), is the user alice@example.test, for an organisation
// administrator and for a domain administrator of example.test. Looked
// up as sent, she did not exist ("user show", "user disable", "password
// set", "user move" refused), and a domain administrator was forbidden
// to act in "IM domain example.test.".
func TestUserAddressAsTyped(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	f := newServiceFixture(t, ctx)
	if err := f.admin.CreateHomeServer(ctx, "home2", "imhome2.example.test", "", true); err != nil {
		t.Fatal(err)
	}
	alice := events.NewUser("example.test", "alice")
	if err := f.admin.EnableUser(ctx, directory.UserSpec{User: alice, Home: "home1"}); err != nil {
		t.Fatal(err)
	}
	v, err := directory.NewAdminVerifier("ops-pw")
	if err != nil {
		t.Fatal(err)
	}
	if err := f.admin.CreateAdmin(ctx, "ops", events.RoleDomain, []string{"example.test"}, v); err != nil {
		t.Fatal(err)
	}
	root, ops := f.client(), &directory.Client{Conn: f.conn, Name: "ops", Password: "ops-pw"}
	typed := []events.User{{Domain: "Example.Test.", Alias: "Alice"}, {Domain: "example.test.", Alias: "alice"}, {Domain: "EXAMPLE.TEST", Alias: "ALICE"}}
	for _, c := range []*directory.Client{root, ops} {
		for _, u := range typed {
			sum, err := c.User(ctx, u)
			if err != nil || sum.User != alice {
				t.Errorf("%s: user show %q: %+v, %v; want alice@example.test", c.Name, u, sum.User, err)
			}
		}
		u := typed[0]
		if err := c.DisableUser(ctx, u); err != nil {
			t.Errorf("%s: user disable %q: %v", c.Name, u, err)
		}
		if err := c.EnableUser(ctx, directory.UserSpec{User: u, Home: "home1"}); err != nil {
			t.Errorf("%s: user enable %q: %v", c.Name, u, err)
		}
		if err := c.SetPassword(ctx, u, rvp.NewVerifiers(alice, "EXAMPLE", "", "example.test", "pw")); err != nil {
			t.Errorf("%s: password set %q: %v", c.Name, u, err)
		}
		if err := c.MoveUser(ctx, u, "home2"); err != nil {
			t.Errorf("%s: user move %q: %v", c.Name, u, err)
		}
		if users, err := c.Users(ctx, "Example.Test."); err != nil || len(users) != 1 {
			t.Errorf("%s: user list -domain Example.Test.: %v, %v", c.Name, users, err)
		}
	}
	if rec, _ := f.admin.Directory.User(events.User{Domain: "example.test.", Alias: "alice"}); rec != nil {
		t.Errorf("a user record under example.test.: %+v", rec)
	}
}
