package main

import (
	"strings"
	"testing"
)

// TestDevDemoUsers: -demo-users N enables user1..userN with the demo
// password, which sign in with NTLM as any user does; a restart creates
// none again.
func TestDevDemoUsers(t *testing.T) {
	data := t.TempDir()
	p := startDev(t, data, "-demo-users", "300")
	if !strings.Contains(p.stderr.String(), "created=300") {
		t.Errorf("log does not report 300 users created:\n%s", tail(p.stderr.String(), 20))
	}
	for _, alias := range []string{"user1", "user300"} {
		c := newClient(t, p.addr, alias)
		mustStatus(t, alias+" login", c.Login(14400), 200)
		mustStatus(t, alias+" online", c.SetState("online", 1200, 0), 207)
	}
	c := newClient(t, p.addr, "user301")
	if r := c.Login(14400); r.Status == 200 {
		t.Errorf("user301 login: 200, want a refusal (only user1..user300 exist)")
	}
	p.stop(t)

	p = startDev(t, data, "-demo-users", "300")
	if !strings.Contains(p.stderr.String(), "created=0") {
		t.Errorf("restart: log does not report 0 users created:\n%s", tail(p.stderr.String(), 20))
	}
	mustStatus(t, "user300 login after restart", newClient(t, p.addr, "user300").Login(14400), 200)
}
