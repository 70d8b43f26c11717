package directory_test

import (
	"context"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rvp-im/rvpd/directory"
	"github.com/rvp-im/rvpd/events"
)

// holdAdmin makes the next directory event a stamps (its Meta, built
// once the change is checked, just before it is appended) wait until
// release is called; entered is closed once one does.
func holdAdmin(t *testing.T, a *directory.Admin) (entered <-chan struct{}, release func()) {
	in, out := make(chan struct{}), make(chan struct{})
	var armed atomic.Bool
	armed.Store(true)
	a.Now = func() time.Time {
		if armed.CompareAndSwap(true, false) {
			close(in)
			<-out
		}
		return time.Now()
	}
	var once sync.Once
	release = func() { once.Do(func() { close(out) }) }
	t.Cleanup(release)
	return in, release
}

// routersOf returns the names of the routers the directory holds for
// domain, read on a's projection caught up with the stream.
func routersOf(t *testing.T, ctx context.Context, a *directory.Admin, domain string) []string {
	t.Helper()
	if err := a.SetInternetCapable(ctx, false); err != nil { // catches the projection up
		t.Fatal(err)
	}
	rs, err := a.Directory.RoutersOf(domain)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range rs {
		out = append(out, r.Name)
	}
	return out
}

// TestDeleteDomainWithRouters: an IM domain that has routers is not
// deleted: the administrator is told to delete them first. DeleteDomain
// did not look at routers: the domain's routers stayed in "rvpctl router
// list", and their mode (redirect or proxy) applied again, unseen, to a
// domain of that name created later.
func TestDeleteDomainWithRouters(t *testing.T) {
	f := newAdminFixture(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	a := f.exampleAdmin(ctx)
	if err := a.CreateRouter(ctx, "r1", "example.test", "im.example.test", events.RouterRedirect); err != nil {
		t.Fatal(err)
	}
	err := a.DeleteDomain(ctx, "example.test")
	if err == nil {
		if err := a.CreateDomain(ctx, directory.DomainSpec{Domain: "example.test", IMHost: "im.example.test"}); err != nil {
			t.Fatal(err)
		}
		t.Fatalf("example.test was deleted with its router r1, which now serves the domain of that name created again: %v", routersOf(t, ctx, a, "example.test"))
	}
	if !strings.Contains(err.Error(), "r1") || !strings.Contains(err.Error(), "router delete") {
		t.Errorf("refusal %q: want it to name r1 and say to delete it first", err)
	}
	if err := a.DeleteRouter(ctx, "r1"); err != nil {
		t.Fatal(err)
	}
	if err := a.DeleteDomain(ctx, "example.test"); err != nil {
		t.Fatalf("deleting example.test once its router is deleted: %v", err)
	}
}

// TestRouterAndDomainDeletionAtOnce: a router created in an IM domain
// while the domain is deleted. CreateRouter was fenced by its own subject
// alone and checked the domain on a projection that did not wait for the
// stream; DeleteDomain did not look at routers. Whatever the order, the
// directory must never be left with a router of a domain that no longer
// exists.
func TestRouterAndDomainDeletionAtOnce(t *testing.T) {
	check := func(t *testing.T, ctx context.Context, a *directory.Admin, createErr, deleteErr error) {
		t.Helper()
		t.Logf("deletion: %v; creation: %v", deleteErr, createErr)
		rs := routersOf(t, ctx, a, "other.test")
		dom, _ := a.Directory.Domain("other.test")
		if dom == nil && len(rs) > 0 {
			t.Errorf("other.test is deleted (%v) and its router r1 created (%v): routers %v left", deleteErr, createErr, rs)
		}
		if deleteErr != nil && createErr != nil {
			t.Errorf("both refused: deletion %v, creation %v", deleteErr, createErr)
		}
	}
	// b's projection has not the deletion yet when it creates the router.
	t.Run("create-on-stale", func(t *testing.T) {
		f := newAdminFixture(t)
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		a, b, resume := staleAdmins(t, f, ctx)
		delErr := a.DeleteDomain(ctx, "other.test")
		createErr := raceStale(func() error { return b.CreateRouter(ctx, "r1", "other.test", "im.other.test", "") }, resume)
		check(t, ctx, a, createErr, delErr)
	})
	// b's projection has not the router yet when it deletes the domain.
	t.Run("delete-on-stale", func(t *testing.T) {
		f := newAdminFixture(t)
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		a, b, resume := staleAdmins(t, f, ctx)
		createErr := a.CreateRouter(ctx, "r1", "other.test", "im.other.test", "")
		delErr := raceStale(func() error { return b.DeleteDomain(ctx, "other.test") }, resume)
		check(t, ctx, a, createErr, delErr)
	})
	// The router is created between the deletion's check and its append.
	t.Run("create-within-delete", func(t *testing.T) {
		f := newAdminFixture(t)
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		a, b, resume := staleAdmins(t, f, ctx)
		resume()
		entered, release := holdAdmin(t, b)
		var delErr error
		var wg sync.WaitGroup
		wg.Go(func() { delErr = b.DeleteDomain(ctx, "other.test") })
		<-entered
		createErr := a.CreateRouter(ctx, "r1", "other.test", "im.other.test", "")
		release()
		wg.Wait()
		check(t, ctx, a, createErr, delErr)
		if createErr == nil && delErr == nil {
			// The router created meanwhile is deleted with the domain, as
			// an event of the deleting administrator's.
			if ev, ok := f.lastEvent(events.RouterSubject("r1")).(*events.RouterDeleted); !ok || ev.Actor != "b" {
				t.Errorf("r1's last event: %#v, want its deletion by b", f.lastEvent(events.RouterSubject("r1")))
			}
		}
	})
	// The domain is deleted between the router's check and its append.
	t.Run("delete-within-create", func(t *testing.T) {
		f := newAdminFixture(t)
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		a, b, resume := staleAdmins(t, f, ctx)
		resume()
		entered, release := holdAdmin(t, b)
		var createErr error
		var wg sync.WaitGroup
		wg.Go(func() { createErr = b.CreateRouter(ctx, "r1", "other.test", "im.other.test", "") })
		<-entered
		delErr := a.DeleteDomain(ctx, "other.test")
		release()
		wg.Wait()
		check(t, ctx, a, createErr, delErr)
	})
}

// TestDomainAdminOfDeletedDomain: a domain administrator made for an IM
// domain deleted at the same moment. setAdmin checked that the domains
// exist on its projection, without waiting for the stream, and appended
// fenced by the administrator's subject (or the administrators'): one
// decided on a projection that had not the deletion yet was made, for a
// domain that no longer exists (and administered it again the day a
// domain of that name was created).
func TestDomainAdminOfDeletedDomain(t *testing.T) {
	for _, create := range []bool{true, false} {
		name := map[bool]string{true: "create", false: "set"}[create]
		t.Run(name, func(t *testing.T) {
			f := newAdminFixture(t)
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			a, b, _ := staleAdmins(t, f, ctx)
			stopB := f.follow(b.Directory)
			k := newKeyring(t)
			a.Keyring, b.Keyring = k, k
			v, err := directory.NewAdminVerifier("pw-of-an-admin")
			if err != nil {
				t.Fatal(err)
			}
			if err := a.CreateAdmin(ctx, "root", events.RoleOrganization, nil, v); err != nil {
				t.Fatal(err)
			}
			if !create {
				if err := a.CreateAdmin(ctx, "ops", events.RoleDomain, []string{"example.test"}, v); err != nil {
					t.Fatal(err)
				}
			}
			if err := b.Directory.WaitFor(ctx, a.Directory.Position()); err != nil {
				t.Fatal(err)
			}
			stopB()
			if err := a.DeleteDomain(ctx, "other.test"); err != nil {
				t.Fatal(err)
			}
			err = raceStale(func() error {
				if create {
					return b.CreateAdmin(ctx, "ops", events.RoleDomain, []string{"other.test"}, v)
				}
				return b.SetAdmin(ctx, "ops", events.RoleDomain, []string{"example.test", "other.test"}, v)
			}, func() { f.follow(b.Directory) })
			if err == nil {
				adm, _ := a.Directory.Administrator("ops")
				t.Fatalf("ops made a domain administrator of other.test, deleted: %v", adm.Domains)
			}
			t.Logf("refused: %v", err)
		})
	}
}

// TestDeleteDomainWithDomainAdministrators: an IM domain that has domain
// administrators is not deleted (as one with routers): left naming it,
// they administered a domain of that name created later, whoever it was
// made for. Once the administrator has other domains, it is.
func TestDeleteDomainWithDomainAdministrators(t *testing.T) {
	f := newAdminFixture(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	a := f.exampleAdmin(ctx)
	if err := a.CreateDomain(ctx, directory.DomainSpec{Domain: "other.test", IMHost: "im.other.test"}); err != nil {
		t.Fatal(err)
	}
	v, err := directory.NewAdminVerifier("exops-pw")
	if err != nil {
		t.Fatal(err)
	}
	if err := a.CreateAdmin(ctx, "exops", events.RoleDomain, []string{"example.test"}, v); err != nil {
		t.Fatal(err)
	}
	err = a.DeleteDomain(ctx, "example.test")
	if err == nil {
		t.Fatal("example.test was deleted with its domain administrator exops, who would administer a domain of that name created again")
	}
	if !strings.Contains(err.Error(), "exops") || !strings.Contains(err.Error(), "admin remove exops") {
		t.Errorf("refusal %q: want it to name exops and what to do", err)
	}
	if err := a.SetAdmin(ctx, "exops", events.RoleDomain, []string{"other.test"}, v); err != nil {
		t.Fatal(err)
	}
	if err := a.DeleteDomain(ctx, "example.test"); err != nil {
		t.Fatalf("deleting example.test once exops administers other.test: %v", err)
	}
}

// TestDomainAdminMadeWithinDomainDeletion: a domain administrator made
// for an IM domain between the domain's deletion's check (no domain
// administrators) and its append. The deletion is fenced by the domain's
// users' events, the administrator's change by the configuration's:
// neither saw the other, both were made, and the administrator named the
// deleted domain (and would administer a domain of that name created
// later). The domain is taken from it once the deletion is made, as the
// deleting administrator's event: from its domains when it has others,
// with the administrator when it had only this one.
func TestDomainAdminMadeWithinDomainDeletion(t *testing.T) {
	for _, others := range []bool{true, false} {
		t.Run(map[bool]string{true: "other-domains", false: "only-domain"}[others], func(t *testing.T) {
			f := newAdminFixture(t)
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			a, b, resume := staleAdmins(t, f, ctx)
			resume()
			k := newKeyring(t)
			a.Keyring, b.Keyring = k, k
			v, err := directory.NewAdminVerifier("pw-of-an-admin")
			if err != nil {
				t.Fatal(err)
			}
			domains := []string{"other.test"}
			if others {
				domains = []string{"example.test", "other.test"}
			}
			entered, release := holdAdmin(t, b)
			var delErr error
			var wg sync.WaitGroup
			wg.Go(func() { delErr = b.DeleteDomain(ctx, "other.test") })
			<-entered
			createErr := a.CreateAdmin(ctx, "ops", events.RoleDomain, domains, v)
			release()
			wg.Wait()
			t.Logf("deletion: %v; creation: %v", delErr, createErr)
			if delErr != nil || createErr != nil {
				t.Fatalf("both should be made (the race this test is about): deletion %v, creation %v", delErr, createErr)
			}
			routersOf(t, ctx, a, "other.test") // catches a's projection up
			adm, err := a.Directory.Administrator("ops")
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case others && (adm == nil || !slices.Equal(adm.Domains, []string{"example.test"})):
				t.Errorf("ops after other.test's deletion: %+v, want a domain administrator of example.test only", adm)
			case !others && adm != nil:
				t.Errorf("ops after other.test's deletion, its only domain: %+v, want it removed", adm)
			}
			if ev := f.lastEvent(events.AdminSubject("ops")); metaActor(ev) != "b" {
				t.Errorf("ops's last event: %#v, want the deleting administrator b's", ev)
			}
		})
	}
}

// metaActor is the actor of a directory event (AdminSet, AdminRemoved),
// "" for another.
func metaActor(ev any) string {
	switch ev := ev.(type) {
	case *events.AdminSet:
		return ev.Actor
	case *events.AdminRemoved:
		return ev.Actor
	}
	return ""
}
