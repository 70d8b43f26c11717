package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/testcluster/jsfault"
	"github.com/rvp-im/rvpd/testcluster/natstest"
)

// TestConsoleAuditStreamDeletedMidway: a fact stream deleted while the
// console reads a user's facts from it (after its first batch) fails
// the read within seconds, naming the stream. Before, the page's
// handler never returned: each fetch of the ordered consumer creates it
// anew, retried without bound and heeding no context (the page's 5 s
// included); each click on the page left one more handler hung.
func TestConsoleAuditStreamDeletedMidway(t *testing.T) {
	nc, js := natstest.Connect(t, natstest.Start(t, natstest.Listen()))
	ctx := context.Background()
	stream := events.FactStream("home1")
	for name, subj := range map[string]string{stream: events.FactFilter("home1"), events.StreamDirectory: events.DirectoryFilter} {
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{subj}}); err != nil {
			t.Fatal(err)
		}
	}
	bob := events.NewUser("example.test", "bob")
	const n = 600 // more than two fetches (256)
	publishViewSets(t, js, bob, n)
	djs := &jsfault.DeletingJetStream{JetStream: js, StreamName: stream, At: 1}
	c, err := newConsole(nc, djs, nil, nil, discardLogger(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		evs []auditEvent
		err error
	}
	done := make(chan result, 1)
	pctx, cancel := context.WithTimeout(ctx, pageTimeout)
	defer cancel()
	start := time.Now()
	go func() {
		evs, err := c.audit(pctx, events.FactRoot+".*."+events.Token(bob.Domain)+"."+events.Token(bob.Alias), auditRows)
		done <- result{evs, err}
	}()
	select {
	case r := <-done:
		if djs.Deleted() != nil {
			t.Fatalf("delete %s: %v", stream, djs.Deleted())
		}
		if r.err == nil || !strings.Contains(r.err.Error(), stream) {
			t.Errorf("audit: %d events, error %v; want an error naming %s", len(r.evs), r.err, stream)
		}
		t.Logf("returned after %v: %v", time.Since(start).Round(time.Millisecond), r.err)
	case <-time.After(30 * time.Second):
		_, err := js.Stream(ctx, stream)
		t.Fatalf("the console's audit did not return in 30 s; %s now: %v", stream, err)
	}
}

// publishViewSets publishes n facts of u's node on home1 (a view set
// online, ids 1 to n), for a reader of home1's facts to read.
func publishViewSets(t *testing.T, js jetstream.JetStream, u events.User, n int) {
	t.Helper()
	for i := range n {
		body, err := events.Encode(&events.ViewSet{Meta: events.Meta{At: time.Now()}, Node: u, ID: int32(i + 1), Value: "online"})
		if err != nil {
			t.Fatal(err)
		}
		m := nats.NewMsg(events.FactSubject("home1", u))
		m.Header.Set(events.HeaderType, events.TypeViewSet)
		m.Data = body
		if _, err := js.PublishMsg(t.Context(), m); err != nil {
			t.Fatal(err)
		}
	}
}
