package testcluster

import (
	"strings"
	"testing"
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
	for _, want := range []string{"gw7.example.test", "rvpctl domain"} {
		if !strings.Contains(string(r.Body), want) {
			t.Errorf("the refusal %q does not say %q", r.Body, want)
		}
	}
}
