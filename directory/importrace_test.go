package directory_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rvp-im/rvpd/directory"
	"github.com/rvp-im/rvpd/events"
)

// TestImportRacingEnableThenDisable: another administrator enables alice,
// and disables her again, between the import's check (she was unknown)
// and its append of her user.enabled, which is refused. The import
// reported her "exists" (an enabled user already, left as it is), which
// she is not: the administrator took her for imported, and she cannot
// sign in. Reported otherwise, with what the directory holds of her.
func TestImportRacingEnableThenDisable(t *testing.T) {
	f := newAdminFixture(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	a := f.exampleAdmin(ctx)
	b := &directory.Admin{JetStream: f.js, Directory: a.Directory, Actor: "b"}
	alice, bob := events.NewUser("example.test", "alice"), events.NewUser("example.test", "bob")
	var stamps atomic.Int32
	var other atomic.Value
	a.Now = func() time.Time {
		if stamps.Add(1) == 1 { // the import's first user.enabled (alice's)
			for _, u := range []events.User{alice, bob} {
				if err := b.EnableUser(ctx, directory.UserSpec{User: u, Home: "home1", DisplayName: "by b"}); err != nil {
					other.Store(err)
				}
			}
			if err := b.DisableUser(ctx, alice); err != nil {
				other.Store(err)
			}
		}
		return time.Now()
	}
	res, err := a.ImportUsers(ctx, directory.ImportSpec{Users: []directory.ImportUser{
		{Spec: directory.UserSpec{User: alice, Home: "home1", DisplayName: "Alice"}},
		{Spec: directory.UserSpec{User: bob, Home: "home1", DisplayName: "Bob"}},
	}}, func(string) error { return nil })
	if e, ok := other.Load().(error); ok {
		t.Fatalf("the other administrator's change: %v", e)
	}
	if err != nil {
		t.Fatal(err)
	}
	if rec, _ := a.Directory.User(alice); rec == nil || rec.Enabled {
		t.Fatalf("alice: %+v, want disabled by b", rec)
	}
	if res[0].Outcome == directory.ImportExists || res[0].Outcome == directory.ImportCreated {
		t.Errorf("alice, disabled by b meanwhile: %+v; want her reported as not imported", res[0])
	} else {
		t.Logf("alice: %+v", res[0])
	}
	// bob, enabled by b meanwhile, exists: with what differs from the
	// import, as a user found at the check is reported.
	if res[1].Outcome != directory.ImportExists || len(res[1].Differs) == 0 {
		t.Errorf("bob, enabled by b meanwhile: %+v; want exists, his display name differing", res[1])
	}
}
