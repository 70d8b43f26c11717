package testcluster

import (
	"testing"
)

// TestLockoutAcrossGateways: password guesses spread over two gateways
// count as if they came to one. carol's password is guessed at gw1
// until gw1 throttles; gw2, which has seen no failure of its own, then
// throttles the same account from the same address at once or nearly
// (alone it would answer as many guesses as gw1 did: each of the test
// client's sign-ins is several failed NTLM answers, Free = 10 of them),
// her right password included.
func TestLockoutAcrossGateways(t *testing.T) {
	c := Start(t, Options{Gateways: 2})
	at := func(gw int, password string) *Client {
		cl := NewClient(t, c.Gateways[gw].Addr, "carol")
		cl.UseHost(c.IMHost)
		cl.Creds = &Credentials{Scheme: SchemeNTLMv1, User: "carol", Domain: c.NTDomain, Password: password}
		return cl
	}
	guess := at(0, "guess")
	attempts := 0
	for r := guess.Login(600); r.Status != 403; r = guess.Login(600) {
		must(t, "a guess at gw1", r, 401)
		if attempts++; attempts > 30 {
			t.Fatal("gw1 never throttled the guesses")
		}
	}
	// gw2 has the notes of gw1's failures a moment after they were
	// made: a guess or two may come first, each counted as gw1's were.
	guess2 := at(1, "guess")
	tries := 0
	for r := guess2.Login(600); r.Status != 403; r = guess2.Login(600) {
		must(t, "a guess at gw2", r, 401)
		if tries++; tries >= attempts {
			t.Fatalf("gw2 answered %d guesses, as many as gw1 did (%d) before it throttled: it does not hear of gw1's failures", tries, attempts)
		}
	}
	r := at(1, c.Password).Login(600)
	must(t, "carol's own password at gw2, from the address guessing her", r, 403)
	if r.Header.Get("Retry-After") == "" {
		t.Error("the throttled sign-in at gw2 says not when to try again")
	}
	st := c.Gateways[1].Gateway.Stats()
	if st.SignInsThrottled < 2 {
		t.Errorf("gw2 counted %d sign-ins throttled, want at least 2", st.SignInsThrottled)
	}
}
