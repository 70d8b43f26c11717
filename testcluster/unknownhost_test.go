package testcluster

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestOwnUserByUnknownHost: one of our users whose client names this
// server by a name none of our IM domains has (an address, a gateway's
// own name) speaks as a principal of that host, which the gateway takes
// for another organisation; in an intranet-only organisation the 403
// said only that other organisations are refused. It says which host is
// not ours and where the hosts are set, for the user and the operator.
func TestOwnUserByUnknownHost(t *testing.T) {
	c := Start(t, Options{})
	alice := c.Client(t, "alice")
	alice.UseHost("gw7.example.test")
	r := alice.Login(3600)
	if r.Status != 403 {
		t.Fatalf("login as a principal of gw7.example.test: %d %s", r.Status, r.Body)
	}
	for _, want := range []string{"gw7.example.test", "rvpctl domain hosts DOMAIN -add gw7.example.test"} {
		if !strings.Contains(string(r.Body), want) {
			t.Errorf("the refusal %q does not say %q", r.Body, want)
		}
	}
}

// TestOwnUserByNewHost: the host TestOwnUserByUnknownHost's client names
// is given to the IM domain, which has users by then (rvpctl domain
// hosts): the client's login is served as the domain's user. Removed
// again, the host is refused again. Domain hosts could only be given at
// the domain's creation, and the 403 told the operator to do that.
func TestOwnUserByNewHost(t *testing.T) {
	c := Start(t, Options{})
	alice := c.Client(t, "alice")
	alice.UseHost("gw7.example.test")
	if r := alice.Login(3600); r.Status != 403 {
		t.Fatalf("login as a principal of gw7.example.test before it is the domain's: %d %s", r.Status, r.Body)
	}
	ctx := t.Context()
	if err := c.Admin.SetDomainHosts(ctx, c.Domain, []string{"gw7.example.test"}, []string{c.Domain}); err != nil {
		t.Fatal(err)
	}
	// The gateways' directories apply it a moment later.
	Eventually(t, 10*time.Second, func() error {
		if r := alice.Login(3600); r.Status != 200 {
			return fmt.Errorf("login by gw7.example.test, given to %s: %d %s", c.Domain, r.Status, r.Body)
		}
		return nil
	})
	if err := c.Admin.SetDomainHosts(ctx, c.Domain, nil, []string{c.Domain}); err != nil {
		t.Fatal(err)
	}
	Eventually(t, 10*time.Second, func() error {
		if r := alice.Login(3600); r.Status != 403 {
			return fmt.Errorf("login by gw7.example.test, removed from %s: %d %s", c.Domain, r.Status, r.Body)
		}
		return nil
	})
}
