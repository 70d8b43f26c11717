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
	var s, home *NATSServer
	Eventually(t, 30*time.Second, func() error {
		if s, home = c.NATS.ServerOf("gateway-"+gw.Name), c.NATS.ServerOf("home-home1"); s == nil || home == nil {
			return fmt.Errorf("gateway %s is on %v, home1's node on %v", gw.Name, s, home)
		}
		return nil
	})
	if s == home {
		c.ReconnectOff(gw, "gateway-"+gw.Name, home)
		s = c.NATS.ServerOf("gateway-" + gw.Name)
	}
	must(t, "alice changes her state before the partition", alice.SetState("online", 600, 0), 207)
	c.NATS.Isolate(s)
	cut := time.Now()
	defer c.NATS.Heal()
	const limit = 40 * time.Second
	var served time.Time
	for time.Since(cut) < limit && served.IsZero() {
		r, err := alice.TryRaw(alice.request("", "PROPPATCH", "/instmsg/aliases/alice", StateBody("busy", 600, 0), "Content-Type: text/xml", alice.From()))
		if err == nil && r.Status == 207 {
			served = time.Now()
		}
	}
	now := c.NATS.ServerOf("gateway-" + gw.Name)
	c.NATS.Heal()
	if served.IsZero() {
		t.Fatalf("gateway %s, its NATS server %s cut off from the others: no request served in %v (the gateway now on %v)", gw.Name, s.Name, limit, now)
	}
	if d := served.Sub(cut); d > 20*time.Second {
		t.Errorf("gateway %s served again %v after its NATS server %s was cut off, want at most 20 s", gw.Name, d.Round(time.Millisecond), s.Name)
	}
	t.Logf("served again %v after %s was cut off (the gateway on %v)", served.Sub(cut).Round(time.Millisecond), s.Name, now)
}
