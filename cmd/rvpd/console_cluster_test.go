package main

import (
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
	"github.com/rvp-im/rvpd/testcluster"
)

// TestConsoleAuditOnACluster: the console's audit, on a site of three
// NATS servers with streams of three replicas, shows every recent event
// each time it is asked. Its reader makes an ordered consumer afresh for
// each fetch, and a consumer just made is not known yet on every server
// (its interest crosses the routes after it is made): a fetch then finds
// no responder. The page failed ("no responders available for request")
// on some loads; it now asks again, for up to a few seconds.
func TestConsoleAuditOnACluster(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three NATS servers")
	}
	c := testcluster.StartNATSCluster(t, testcluster.NATSClusterOptions{})
	js := c.JetStream("console")
	ctx := t.Context()
	if err := projections.EnsureStreams(ctx, js, projections.StreamOptions{Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	stream := events.FactStream("home1")
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: stream, Subjects: []string{events.FactFilter("home1")}, Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	c.WaitReady(js, stream, events.StreamDirectory)
	bob := events.NewUser("example.test", "bob")
	const n = 5
	publishViewSets(t, js, bob, n)
	con, err := newConsole(js.Conn(), js, nil, nil, discardLogger(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	for i := range 40 {
		// The overview's, and a user page's (her node's facts alone).
		for _, node := range []string{"", events.FactRoot + ".*." + events.Token(bob.Domain) + "." + events.Token(bob.Alias)} {
			evs, err := con.audit(ctx, node, auditRows)
			if err != nil || len(evs) != n {
				t.Fatalf("the console's audit of %q, asked the %d time: %d events, %v; want %d", node, i+1, len(evs), err, n)
			}
		}
	}
}
