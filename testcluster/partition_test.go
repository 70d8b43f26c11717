package testcluster

import (
	"fmt"
	"testing"
	"time"
)

// TestGatewayNATSServerPartitioned cuts the NATS server a gateway is
// connected to off from the other two (a network partition: its routes
// silent, the gateway's connection to it up, its pings answered). The
// server left alone has no quorum for anything, and every request the
// gateway takes fails there; the gateway should notice that its server
// no longer reaches JetStream while another does, and move to that one,
// serving again well within the partition.
func TestGatewayNATSServerPartitioned(t *testing.T) {
	LongTest(t)
	const timeout = 5 * time.Second
	c := Start(t, Options{Users: map[string]string{"alice": "home1"}, NATS: &NATSClusterOptions{Processes: true, Partitionable: true}, RequestTimeout: timeout})
	alice := c.Client(t, "alice")
	must(t, "alice signs in", alice.Login(3600), 200)
	gw := c.Gateways[0]
	// The gateway's server leads neither the meta group nor any group
	// home1 needs, and has not home1's node: what the partition costs is
	// then the gateway's alone, not an election's (which the chaos test
	// has beside it).
	var s *NATSServer
	for attempt := 1; ; attempt++ {
		var home *NATSServer
		Eventually(t, 30*time.Second, func() error {
			if s, home = c.NATS.ServerOf("gateway-"+gw.Name), c.NATS.ServerOf("home-home1"); s == nil || home == nil {
				return fmt.Errorf("gateway %s is on %v, home1's node on %v", gw.Name, s, home)
			}
			return nil
		})
		led, err := c.NATS.GroupLeaders(s)
		if err != nil {
			t.Fatal(err)
		}
		if s != home && led["meta"] != s.Name {
			break
		}
		if attempt == 10 {
			t.Fatalf("gateway %s on %s, home1's node on %s, the meta leader %s, after %d reconnections", gw.Name, s, home, led["meta"], attempt-1)
		}
		c.ReconnectOff(gw, "gateway-"+gw.Name, s)
	}
	c.NATS.PlaceLeaders(c.JS, s, nil, homeNeeds(c, "home1"))
	must(t, "alice changes her state before the partition", alice.SetState("online", 600, 0), 207)
	c.NATS.Isolate(s)
	cut := time.Now()
	defer c.NATS.Heal()
	const limit = 40 * time.Second
	var served, moved time.Time
	var statuses []string
	for time.Since(cut) < limit && served.IsZero() {
		r, err := alice.TryRaw(alice.request("", "PROPPATCH", "/instmsg/aliases/alice", StateBody("busy", 600, 0), "Content-Type: text/xml", alice.From()))
		switch {
		case err != nil:
			statuses = append(statuses, fmt.Sprintf("%v: %v", time.Since(cut).Round(time.Millisecond), err))
		case r.Status == 207:
			served = time.Now()
		default:
			statuses = append(statuses, fmt.Sprintf("%v: %d", time.Since(cut).Round(time.Millisecond), r.Status))
		}
		if on := c.NATS.ServerOf("gateway-" + gw.Name); moved.IsZero() && on != nil && on != s {
			moved = time.Now()
		}
	}
	now := c.NATS.ServerOf("gateway-" + gw.Name)
	t.Logf("the gateway seen on %v %v after the cut; answers before success: %v", now, moved.Sub(cut).Round(time.Millisecond), statuses)
	c.NATS.Heal()
	if served.IsZero() {
		t.Fatalf("gateway %s, its NATS server %s cut off from the others: no request served in %v (the gateway now on %v)", gw.Name, s.Name, limit, now)
	}
	// Three questions unanswered, 2 s apart, the others asked, the move,
	// and a request: 8 s in every run on a quiet machine.
	if d := served.Sub(cut); d > 15*time.Second {
		t.Errorf("gateway %s served again %v after its NATS server %s was cut off, want at most 15 s", gw.Name, d.Round(time.Millisecond), s.Name)
	}
	t.Logf("served again %v after %s was cut off (the gateway on %v)", served.Sub(cut).Round(time.Millisecond), s.Name, now)
}
