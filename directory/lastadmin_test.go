package directory_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rvp-im/rvpd/directory"
	"github.com/rvp-im/rvpd/events"
)

// orgAdmins counts the organisation administrators the stream leaves
// (read on a projection caught up with it).
func orgAdmins(t *testing.T, ctx context.Context, a *directory.Admin) []string {
	t.Helper()
	// Any change of a's makes its projection catch up with the stream.
	if err := a.SetInternetCapable(ctx, false); err != nil {
		t.Fatal(err)
	}
	admins, err := a.Directory.Administrators()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, adm := range admins {
		if adm.Role == events.RoleOrganization {
			out = append(out, adm.Name)
		}
	}
	return out
}

// TestLastOrganisationAdministrator: the directory keeps at least one
// organisation administrator. Nothing but an organisation administrator
// makes another, or an IM domain, or a home server, and rvpd init
// refuses an initialised cluster: with none left, the organisation can
// never be administered again. An administrator could demote itself to a
// domain administrator (rvpctl admin add root -role domain), the last one
// included; and two organisation administrators removing each other at
// once (each fenced by the other's subject alone) both succeeded, leaving
// none.
func TestLastOrganisationAdministrator(t *testing.T) {
	f := newAdminFixture(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	a, b := f.twoAdmins()
	k := newKeyring(t)
	a.Keyring, b.Keyring = k, k
	if err := a.CreateDomain(ctx, directory.DomainSpec{Domain: "example.test", IMHost: "im.example.test"}); err != nil {
		t.Fatal(err)
	}
	v, err := directory.NewAdminVerifier("pw-of-an-admin")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"root", "ops"} {
		if err := a.CreateAdmin(ctx, n, events.RoleOrganization, nil, v); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("remove each other", func(t *testing.T) {
		errB := f.lagging(ctx, a, b, func() error { return a.RemoveAdmin(ctx, "ops") }, func() error { return b.RemoveAdmin(ctx, "root") })
		if left := orgAdmins(t, ctx, a); len(left) == 0 {
			t.Fatalf("root and ops removed each other (the second: %v): no organisation administrator is left", errB)
		}
		if errB == nil {
			t.Fatal("the second removal succeeded, and there is an organisation administrator left: the test is wrong")
		}
		t.Logf("the second removal: %v", errB)
	})

	t.Run("demote the last", func(t *testing.T) {
		left := orgAdmins(t, ctx, a)
		if len(left) != 1 {
			t.Fatalf("organisation administrators: %v, want one", left)
		}
		err := a.SetAdmin(ctx, left[0], events.RoleDomain, []string{"example.test"}, v)
		if got := orgAdmins(t, ctx, a); len(got) == 0 {
			t.Fatalf("%s, the last organisation administrator, was made a domain administrator (%v): none is left", left[0], err)
		}
		if err == nil || !strings.Contains(err.Error(), "last organisation administrator") {
			t.Errorf("demoting the last organisation administrator: %v, want a refusal that says so", err)
		}
		if err := a.RemoveAdmin(ctx, left[0]); err == nil || !strings.Contains(err.Error(), "last organisation administrator") {
			t.Errorf("removing the last organisation administrator: %v, want a refusal that says so", err)
		}
		// Another made first, it may go.
		if err := a.CreateAdmin(ctx, "second", events.RoleOrganization, nil, v); err != nil {
			t.Fatal(err)
		}
		if err := a.SetAdmin(ctx, left[0], events.RoleDomain, []string{"example.test"}, v); err != nil {
			t.Errorf("demoting one of two organisation administrators: %v", err)
		}
	})

	t.Run("at once", func(t *testing.T) {
		for i := range 20 {
			left := orgAdmins(t, ctx, a)
			if len(left) != 1 {
				t.Fatalf("round %d: organisation administrators %v, want one", i, left)
			}
			p := fmt.Sprintf("p%d", i)
			if err := a.CreateAdmin(ctx, p, events.RoleOrganization, nil, v); err != nil {
				t.Fatal(err)
			}
			if err := b.Directory.WaitFor(ctx, a.Directory.Position()); err != nil {
				t.Fatal(err)
			}
			var errA, errB error
			var wg sync.WaitGroup
			wg.Go(func() { errA = a.RemoveAdmin(ctx, left[0]) })
			wg.Go(func() { errB = b.SetAdmin(ctx, p, events.RoleDomain, []string{"example.test"}, v) })
			wg.Wait()
			if errA == nil && errB == nil {
				t.Fatalf("round %d: %s removed and %s demoted at once, both successful", i, left[0], p)
			}
			if len(orgAdmins(t, ctx, a)) == 0 {
				t.Fatalf("round %d: no organisation administrator left (%v, %v)", i, errA, errB)
			}
		}
	})
}
