package main

import (
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
	"github.com/rvp-im/rvpd/testcluster"
)

// TestPresenceOnACluster: rvpctl presence on a site of three NATS
// servers, streams of three replicas, asked again and again. It failed
// about one time in three ("read the facts of alice@example.test in
// RVP_FACTS_home1: nats: no responders available for request"): it read
// each fact with Next, which makes the ordered consumer afresh, and a
// consumer just made is not yet known on every server (its interest
// crosses the routes after it is made), so a pull request sent at once
// found no responder. It now reads in batches and asks again while a new
// consumer has no responder, as rvpctl audit does.
func TestPresenceOnACluster(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three NATS servers")
	}
	c := testcluster.StartNATSCluster(t, testcluster.NATSClusterOptions{})
	js := c.JetStream("test")
	ctx := t.Context()
	if err := projections.EnsureStreams(ctx, js, projections.StreamOptions{Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: events.FactStream("home1"), Subjects: []string{events.FactFilter("home1")}, Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	c.WaitReady(js, events.FactStream("home1"), events.StreamDirectory)
	publishEvent(t, js, events.HomeServerSubject("home1"), "", &events.HomeServerCreated{Name: "home1", Host: "home1.example.test", HostsUsers: true}, nil)
	alice := events.NewUser("example.test", "alice")
	publishEvent(t, js, events.UserSubject(alice), "", &events.UserEnabled{User: alice, Home: "home1"}, nil)
	at := time.Now().Add(-time.Minute)
	for i, state := range []string{"online", "busy", "away", "online", "busy"} {
		publishEvent(t, js, events.FactSubject("home1", alice), "", &events.ViewSet{Meta: events.Meta{At: at.Add(time.Duration(i) * time.Second)}, Node: alice, ID: 1, Value: state}, nil)
	}
	for i := range 40 {
		out, errOut, err := auditRun(c.URLs(), "presence", "alice@example.test")
		if err != nil || !strings.Contains(out, "5 facts folded") {
			t.Fatalf("presence of alice, asked the %d time: %v\n%s%s", i+1, err, out, errOut)
		}
	}
}
