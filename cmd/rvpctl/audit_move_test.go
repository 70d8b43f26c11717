package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/testcluster"
)

// TestAuditMovedUser: real home nodes, a real move. Alice signs in and
// sets her state on home1, is moved to home2 by an administrator, and
// sets it again there; her audit (-user) shows both home servers' facts
// and the move, in the order they happened, each fact from her client's
// address with how she authenticated, the move with who made it; and
// -by shows the message she sent bob (a fact of bob's node).
func TestAuditMovedUser(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a cluster")
	}
	c := testcluster.Start(t, testcluster.Options{Users: map[string]string{"alice": "home1", "bob": "home2"},
		NATS: &testcluster.NATSClusterOptions{}})
	url := c.NATS.Servers[0].URL()
	alice, bob := c.Client(t, "alice"), c.Client(t, "bob")
	bob.Creds.Scheme = testcluster.SchemeNTLMv2
	for _, u := range []*testcluster.Client{alice, bob} {
		if r := u.Login(3600); r.Status != 200 {
			t.Fatalf("%s's login: %d %s", u.Alias, r.Status, r.Body)
		}
	}
	if r := alice.SetState("online", 1200, 0); r.Status != 207 {
		t.Fatalf("alice online: %d %s", r.Status, r.Body)
	}
	au := events.NewUser(c.Domain, "alice")
	if err := c.Admin.MoveUser(context.Background(), au, "home2"); err != nil {
		t.Fatal(err)
	}
	testcluster.Eventually(t, 10*time.Second, func() error {
		if r := alice.SetState("busy", 1200, 0); r.Status != 207 {
			return fmt.Errorf("alice busy at home2: %d %s", r.Status, r.Body)
		}
		return nil
	})
	if r := alice.Send("bob", alice.MessageBody("bob", "hello")); r.Status != 200 {
		t.Fatalf("alice's message to bob: %d %s", r.Status, r.Body)
	}
	testcluster.Eventually(t, 10*time.Second, func() error {
		out, errOut, err := auditRun(url, "-json", "audit", "-user", "alice@example.test")
		if err != nil {
			return fmt.Errorf("audit: %v %s", err, errOut)
		}
		var got []string
		for _, e := range auditLines(t, out) {
			home := strings.TrimPrefix(e.Stream, events.FactStreamPrefix)
			got = append(got, home+":"+e.Type)
		}
		s := strings.Join(got, " ")
		// home1: sign-in, online; the move; home2: her state handed over, then busy.
		for _, want := range []string{"home1:subscription.created.v1", "home1:view.set.v1", "RVP_DIR:user.moved.v1", "home2:view.set.v1"} {
			i := strings.Index(s, want)
			if i < 0 {
				return fmt.Errorf("audit -user alice lacks %s (so far): %s", want, s)
			}
			s = s[i+len(want):]
		}
		return nil
	})
	out, errOut, err := auditRun(url, "audit", "-user", "alice@example.test")
	if err != nil {
		t.Fatalf("audit: %v\n%s", err, errOut)
	}
	for _, want := range []string{"(ntlm:alice@example.test)", "127.0.0.1", c.Admin.Actor, "alice@example.test from home1 to home2", "user.arrived"} {
		if !strings.Contains(out, want) {
			t.Errorf("audit -user alice lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "system (unauthenticated") {
		t.Errorf("the handoff's facts, the home nodes' own, are said unauthenticated:\n%s", out)
	}
	out, errOut, err = auditRun(url, "audit", "-by", "alice@example.test", "-type", "message")
	if err != nil || !strings.Contains(out, "bob@example.test") || !strings.Contains(out, "message.accepted") {
		t.Errorf("audit -by alice -type message: %v\n%s%s", err, out, errOut)
	}
}
