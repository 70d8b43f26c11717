package directory_test

import (
	"context"
	"testing"
	"time"

	"github.com/rvp-im/rvpd/directory"
	"github.com/rvp-im/rvpd/events"
)

// staleAdmins returns two administrators on two directory projections
// that hold the IM domains example.test (with bob, on home1) and
// other.test (no users), and the home servers home1 and home2; the
// second's projection is stopped, and resumeB resumes it.
func staleAdmins(t *testing.T, f *adminFixture, ctx context.Context) (a, b *directory.Admin, resumeB func()) {
	t.Helper()
	a, b = f.twoAdmins()
	if err := a.CreateDomain(ctx, directory.DomainSpec{Domain: "example.test", IMHost: "im.example.test"}); err != nil {
		t.Fatal(err)
	}
	if err := a.CreateDomain(ctx, directory.DomainSpec{Domain: "other.test", IMHost: "im.other.test"}); err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"home1", "home2"} {
		if err := a.CreateHomeServer(ctx, h, "im"+h+".example.test", "", true); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.EnableUser(ctx, directory.UserSpec{User: events.NewUser("example.test", "bob"), Home: "home1"}); err != nil {
		t.Fatal(err)
	}
	if err := b.Directory.WaitFor(ctx, a.Directory.Position()); err != nil {
		t.Fatal(err)
	}
	f.stopB() // b's projection falls behind
	return a, b, func() { f.follow(b.Directory) }
}

// raceStale runs op (on the lagging administrator) and lets its
// projection catch up after a moment: an operation decided on the stale
// projection is done at once.
func raceStale(op func() error, resume func()) error {
	done := make(chan error, 1)
	go func() { done <- op() }()
	select {
	case err := <-done:
		done <- err
	case <-time.After(300 * time.Millisecond):
	}
	resume()
	return <-done
}

// TestEnableInDeletedDomain: an administrator deletes an IM domain; another,
// on a node whose projection has not that yet, enables a user in it. The
// enabling was fenced by the user's subject alone and checked the domain
// on the stale projection: it succeeded, and the directory held an enabled
// user of a domain that no longer exists (unreachable, blocking nothing,
// and back the day a domain of that name is created again).
func TestEnableInDeletedDomain(t *testing.T) {
	f := newAdminFixture(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	a, b, resume := staleAdmins(t, f, ctx)
	if err := a.DisableUser(ctx, events.NewUser("example.test", "bob")); err != nil {
		t.Fatal(err)
	}
	if err := a.DeleteDomain(ctx, "example.test"); err != nil {
		t.Fatal(err)
	}
	alice := events.NewUser("example.test", "alice")
	err := raceStale(func() error { return b.EnableUser(ctx, directory.UserSpec{User: alice, Home: "home1"}) }, resume)
	if err == nil {
		rec, _ := a.Directory.User(alice)
		t.Fatalf("alice was enabled in example.test after its deletion: %+v", rec)
	}
	t.Logf("refused: %v", err)
}

// TestEnableOnDeletedHomeServer: as TestEnableInDeletedDomain, with the
// home server deleted and a user enabled on it, or moved to it.
func TestEnableOnDeletedHomeServer(t *testing.T) {
	alice, bob := events.NewUser("example.test", "alice"), events.NewUser("example.test", "bob")
	for _, c := range []struct {
		name string
		op   func(context.Context, *directory.Admin) error
		who  events.User
	}{
		{"enable", func(ctx context.Context, b *directory.Admin) error {
			return b.EnableUser(ctx, directory.UserSpec{User: alice, Home: "home2"})
		}, alice},
		{"move", func(ctx context.Context, b *directory.Admin) error { return b.MoveUser(ctx, bob, "home2") }, bob},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newAdminFixture(t)
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			a, b, resume := staleAdmins(t, f, ctx)
			if err := a.DeleteHomeServer(ctx, "home2"); err != nil {
				t.Fatal(err)
			}
			if err := raceStale(func() error { return c.op(ctx, b) }, resume); err == nil {
				rec, _ := a.Directory.User(c.who)
				t.Errorf("%s: %s homed on home2 after its deletion: %+v", c.name, c.who, rec)
			} else {
				t.Logf("%s refused: %v", c.name, err)
			}
		})
	}
}

// TestDeleteHomeServerOfNewUser: an administrator enables a user on a home
// server; another, on a node whose projection has not that yet, deletes
// the home server. The deletion was fenced by the home server's subject
// alone and looked for its users on the stale projection: it succeeded,
// and the user was homed on a home server that no longer exists (the
// routers answer 503 for it, and no home node serves it).
func TestDeleteHomeServerOfNewUser(t *testing.T) {
	f := newAdminFixture(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	a, b, resume := staleAdmins(t, f, ctx)
	alice := events.NewUser("example.test", "alice")
	if err := a.EnableUser(ctx, directory.UserSpec{User: alice, Home: "home2"}); err != nil {
		t.Fatal(err)
	}
	if err := raceStale(func() error { return b.DeleteHomeServer(ctx, "home2") }, resume); err == nil {
		t.Fatalf("home2 was deleted while alice is homed on it")
	} else {
		t.Logf("refused: %v", err)
	}
}

// TestDeleteDomainOfNewUser: as TestDeleteHomeServerOfNewUser, with the
// IM domain deleted under its new user.
func TestDeleteDomainOfNewUser(t *testing.T) {
	f := newAdminFixture(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	a, b, resume := staleAdmins(t, f, ctx)
	carol := events.NewUser("other.test", "carol")
	if err := a.EnableUser(ctx, directory.UserSpec{User: carol, Home: "home1"}); err != nil {
		t.Fatal(err)
	}
	if err := raceStale(func() error { return b.DeleteDomain(ctx, "other.test") }, resume); err == nil {
		t.Fatalf("other.test was deleted while carol is enabled in it")
	} else {
		t.Logf("refused: %v", err)
	}
}

// TestReEnableKeepsRecord: a disabled user enabled again with its home
// server only (as the import's refusal of a disabled user says to) keeps
// its display name, e-mail and Windows account. The record was written
// afresh from what the enabling gave: they were lost, and its watchers
// saw its alias for a name.
func TestReEnableKeepsRecord(t *testing.T) {
	f := newAdminFixture(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	a, _, _ := staleAdmins(t, f, ctx)
	alice := events.NewUser("example.test", "alice")
	if err := a.EnableUser(ctx, directory.UserSpec{User: alice, Home: "home1", DisplayName: "Alice A.", Email: "alice@mail.example.test", NTAccount: "aa"}); err != nil {
		t.Fatal(err)
	}
	if err := a.DisableUser(ctx, alice); err != nil {
		t.Fatal(err)
	}
	if err := a.EnableUser(ctx, directory.UserSpec{User: alice, Home: "home1", Email: "alice@new.example.test"}); err != nil {
		t.Fatal(err)
	}
	rec, err := a.Directory.User(alice)
	if err != nil || rec == nil {
		t.Fatal(rec, err)
	}
	if rec.DisplayName != "Alice A." || rec.Email != "alice@new.example.test" || rec.NTAccount != "aa" || !rec.Enabled {
		t.Errorf("alice enabled again: %+v; want her name and Windows account kept, her new e-mail", rec)
	}
}
