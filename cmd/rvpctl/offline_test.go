package main

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/testcluster"
)

// TestStreamOffline: one fact stream offline (the one NATS server that
// holds it is down), the others readable. rvpctl audit shows what it can
// read, says which stream it cannot, and fails saying the audit is
// incomplete and what to do; rvpctl status shows every other stream and
// the offline one as unreadable, and fails naming it. Before, each
// stopped at the offline stream and printed nothing but
// "stream RVP_FACTS_home2: ... stream is offline".
func TestStreamOffline(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three NATS servers")
	}
	c := testcluster.StartNATSCluster(t, testcluster.NATSClusterOptions{})
	js := c.JetStream("test")
	ctx := context.Background()
	create := func(h string) *testcluster.NATSServer {
		t.Helper()
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: events.FactStream(h), Subjects: []string{events.FactFilter(h)}, Replicas: 1}); err != nil {
			t.Fatal(err)
		}
		return c.WaitStreamLeader(js, events.FactStream(h), 10*time.Second)
	}
	home1 := create("home1")
	// home2's on another server than home1's.
	home2 := create("home2")
	for i := 0; home2 == home1; i++ {
		if i == 20 {
			t.Fatalf("stream %s placed on %s, as %s, 20 times", events.FactStream("home2"), home1.Name, events.FactStream("home1"))
		}
		if err := js.DeleteStream(ctx, events.FactStream("home2")); err != nil {
			t.Fatal(err)
		}
		home2 = create("home2")
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: events.StreamDirectory, Subjects: []string{events.DirectoryFilter}, Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	alice, bob := events.NewUser("example.test", "alice"), events.NewUser("example.test", "bob")
	publishEvent(t, js, events.FactSubject("home1", alice), "", &events.ViewSet{Meta: events.Meta{At: time.Now()}, Node: alice, ID: 1, Value: "online"}, nil)
	publishEvent(t, js, events.FactSubject("home2", bob), "", &events.ViewSet{Meta: events.Meta{At: time.Now()}, Node: bob, ID: 1, Value: "busy"}, nil)
	home2.Kill()
	// Once the cluster has a meta leader again, the stream is said
	// offline.
	testcluster.Eventually(t, 30*time.Second, func() error {
		if _, err := js.Stream(ctx, events.FactStream("home2")); err == nil || !strings.Contains(err.Error(), "offline") {
			return fmt.Errorf("stream %s: %v, want it offline", events.FactStream("home2"), err)
		}
		return nil
	})
	out, errOut, err := auditRun(c.URLs(), "audit")
	if err == nil || !strings.Contains(err.Error(), "1 stream could not be read ("+events.FactStream("home2")+"): the audit is incomplete") {
		t.Errorf("audit with %s offline: %v, want it to fail naming it", events.FactStream("home2"), err)
	}
	if !strings.Contains(out, "view 1 online") || strings.Contains(out, "busy") {
		t.Errorf("audit with %s offline does not show home1's fact alone:\n%s", events.FactStream("home2"), out)
	}
	if !strings.Contains(errOut, events.FactStream("home2")+" cannot be read") {
		t.Errorf("audit does not say at once which stream it cannot read:\n%s", errOut)
	}
	out, errOut, err = auditRun(c.URLs(), "status")
	if err == nil || !strings.Contains(err.Error(), events.FactStream("home2")) || !strings.Contains(err.Error(), "start them") {
		t.Errorf("status with %s offline: %v, want it to fail naming it and what to do", events.FactStream("home2"), err)
	}
	for _, want := range []string{events.FactStream("home1") + " ", events.FactStream("home2") + "  UNREADABLE", events.StreamDirectory + " "} {
		if !strings.Contains(out, want) {
			t.Errorf("status with %s offline lacks %q:\n%s%s", events.FactStream("home2"), want, out, errOut)
		}
	}
}

// TestStatusNoQuorum: with two of a site's three NATS servers down (no
// meta leader, no stream leader) rvpctl status answered only "list fact
// streams: context deadline exceeded", which says neither what is wrong
// nor what to do (docs/operations.md, "A NATS server died"). It now says
// the servers answer no JetStream request, the two causes (no quorum:
// start them; a leader being elected: run it again) and where the
// runbook is.
func TestStatusNoQuorum(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three NATS servers")
	}
	c := testcluster.StartNATSCluster(t, testcluster.NATSClusterOptions{})
	js := c.JetStream("test")
	ctx := context.Background()
	for name, subj := range map[string]string{events.FactStream("home1"): events.FactFilter("home1"), events.StreamDirectory: events.DirectoryFilter} {
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{subj}, Replicas: 3}); err != nil {
			t.Fatal(err)
		}
	}
	c.WaitReady(js, events.FactStream("home1"), events.StreamDirectory)
	// The server left running must not be the meta leader: one cut off
	// from its quorum goes on answering as leader for 10–20 s
	// (docs/operations.md), and status then lists the streams.
	led, err := c.GroupLeaders(c.Servers[0])
	if err != nil {
		t.Fatal(err)
	}
	meta := c.Server(led["meta"])
	if meta == nil {
		t.Fatalf("no meta leader (%q)", led["meta"])
	}
	meta.Kill()
	for _, s := range c.Servers {
		if s != meta {
			s.Kill()
			break
		}
	}
	// As rvpctl runs from a shell: no deadline but each request's own
	// (auditRun's minute would be spent whole).
	var out, errOut bytes.Buffer
	lookup := func(k string) (string, bool) { return c.URLs(), k == "RVPCTL_NATS" }
	start := time.Now()
	err = exec(context.Background(), []string{"status"}, lookup, strings.NewReader(""), &out, &errOut)
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("status with two of three NATS servers down took %v, want it to give up on its own within seconds", d)
	}
	for _, want := range []string{"answer no JetStream request", "fewer than two of a site's three", "start them", "run it again", "A NATS server died"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("status with two of three NATS servers down: %v; want it to say %q", err, want)
		}
	}
}
