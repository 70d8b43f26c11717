package testcluster

import (
	"testing"
)

// TestLockoutAcrossGateways: password guesses spread over two gateways
// count as if they came to one.
func TestLockoutAcrossGateways(t *testing.T) {
	c := Start(t, Options{Gateways: 2})
	lockoutShared(t, func(gw int, password string) *Client {
		cl := c.Client(t, "carol")
		cl.Server = c.Gateways[gw].Addr
		cl.Creds.Password = password
		return cl
	}, c.Password, func(gw int) uint64 { return c.Gateways[gw].Gateway.Stats().SignInsThrottled })
}

// TestSitesLockout: the same across two sites, the notes going over the
// leaf connections. Outside the firewall topology, so that each site's
// gateway signs carol in itself (inside it, site a's router would send
// her to her home site's gateway before any sign-in).
func TestSitesLockout(t *testing.T) {
	ss := StartSites(t, SitesOptions{Options: Options{Inside: []string{"10.0.0.0/8"}}})
	sites := []*Cluster{ss.Site("a"), ss.Site("b")}
	lockoutShared(t, func(gw int, password string) *Client {
		cl := sites[gw].Client(t, "carol")
		cl.Creds.Password = password
		return cl
	}, sites[0].Password, func(gw int) uint64 { return sites[gw].Gateways[0].Gateway.Stats().SignInsThrottled })
}

// lockoutShared guesses carol's password at gateway 0 until it
// throttles; gateway 1, which has seen no failure of its own, must then
// throttle the same account from the same address at once or nearly
// (alone it would answer as many guesses as gateway 0 did: each of the
// test client's sign-ins is several failed NTLM answers, Free = 10 of
// them), her right password included.
func lockoutShared(t *testing.T, at func(gw int, password string) *Client, password string, throttled func(gw int) uint64) {
	t.Helper()
	guess := at(0, "guess")
	attempts := 0
	for r := guess.Login(600); r.Status != 403; r = guess.Login(600) {
		must(t, "a guess at the first gateway", r, 401)
		if attempts++; attempts > 30 {
			t.Fatal("the first gateway never throttled the guesses")
		}
	}
	// The second has the notes of the first's failures a moment after
	// they were made: a guess may come first, counted as the others.
	guess2 := at(1, "guess")
	tries := 0
	for r := guess2.Login(600); r.Status != 403; r = guess2.Login(600) {
		must(t, "a guess at the second gateway", r, 401)
		if tries++; tries >= attempts {
			t.Fatalf("the second gateway answered %d guesses, as many as the first did (%d) before it throttled: it does not hear of the first's failures", tries, attempts)
		}
	}
	r := at(1, password).Login(600)
	must(t, "carol's own password at the second gateway, from the address guessing her", r, 403)
	if r.Header.Get("Retry-After") == "" {
		t.Error("the throttled sign-in says not when to try again")
	}
	if n := throttled(1); n < 2 {
		t.Errorf("the second gateway counted %d sign-ins throttled, want at least 2", n)
	}
}
