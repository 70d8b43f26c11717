package main

import (
	"bytes"
	"context"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
	"github.com/rvp-im/rvpd/testcluster"
)

// verifyProjections opens a stopped rvpd dev's data directory, rebuilds
// its projections from the streams into memory and compares them with the
// Pebble store on disk.
func verifyProjections(t *testing.T, data string) {
	t.Helper()
	ns, _, err := startNATS(natsConfig{Name: "verify", StoreDir: filepath.Join(data, "nats")}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
	nc, err := nats.Connect("", nats.InProcessServer(ns))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	db, err := projections.Open(filepath.Join(data, "pebble"), projections.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	home, err := projections.OpenHome(db, demoHome)
	if err != nil {
		t.Fatal(err)
	}
	if home.Position() == 0 {
		t.Fatal("the home projection is empty: nothing to compare")
	}
	for _, verify := range []func() (projections.Verification, error){
		func() (projections.Verification, error) { return projections.VerifyHome(ctx, js, db, demoHome) },
		func() (projections.Verification, error) { return projections.VerifyDirectory(ctx, js, db) },
	} {
		v, err := verify()
		if err != nil || !v.OK() || v.Keys == 0 || v.Position == 0 {
			t.Errorf("%s rebuilt from its stream differs from the live one (err %v, %d keys at seq %d):\n%s", v.Projection, err, v.Keys, v.Position, v.Diff)
		}
	}
}

// factsOfType returns the bodies of every fact of type typ.
func factsOfType(t *testing.T, natsURL, typ string) [][]byte {
	t.Helper()
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cons, err := js.OrderedConsumer(ctx, events.FactStream(demoHome), jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for {
		batch, err := cons.FetchNoWait(256)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			if m.Headers().Get(events.HeaderType) == typ {
				out = append(out, m.Data())
			}
		}
		if n == 0 {
			return out
		}
	}
}

// TestDevRestart stops rvpd dev and starts it again on the same data:
// subscriptions, presence and the message's facts survive, the clients
// keep working without logging in again, and the projections rebuilt from
// the streams equal the live ones.
func TestDevRestart(t *testing.T) {
	data := t.TempDir()
	p1 := startDev(t, data, "-http", stablePort(t))
	alice := newClient(t, p1.addr, "alice")
	bob := newClient(t, p1.addr, "bob")
	for _, c := range []*testcluster.Client{alice, bob} {
		mustStatus(t, c.Alias+" login", c.Login(14400), 200)
		mustStatus(t, c.Alias+" online", c.SetState("online", 1200, 0), 207)
	}
	mustStatus(t, "alice watches bob", alice.Watch("bob", 14400), 207)
	alice.WaitNotify(0, wait, stateFrom(bob, "online"))
	msg := alice.MessageBody("bob", "before the restart")
	mustStatus(t, "alice → bob", alice.Send("bob", msg), 200)
	bob.WaitNotify(0, wait, func(n testcluster.Notify) bool { return bytes.Equal(n.Body, msg) })
	subsBefore := bob.Do("SUBSCRIPTIONS", "/instmsg/aliases/bob", nil, bob.From(), "Notification-Type: update/propchange")
	mustStatus(t, "subscriptions on bob", subsBefore, 200)

	p1.stop(t)
	verifyProjections(t, data)

	p2 := startDev(t, data, "-http", p1.addr)
	// The subscriptions survived with their ids (timeouts tick on).
	subsAfter := bob.Do("SUBSCRIPTIONS", "/instmsg/aliases/bob", nil, bob.From(), "Notification-Type: update/propchange")
	mustStatus(t, "subscriptions on bob after restart", subsAfter, 200)
	strip := func(b []byte) string { return regexpTimeout.ReplaceAllString(string(b), "") }
	if strip(subsBefore.Body) != strip(subsAfter.Body) || !strings.Contains(string(subsAfter.Body), "<r:subscription-id>") {
		t.Errorf("subscriptions changed across the restart:\nbefore %s\n after %s", subsBefore.Body, subsAfter.Body)
	}
	// Presence survived.
	r := alice.Do("PROPFIND", "/instmsg/aliases/bob", []byte(`<?xml version="1.0"?><d:propfind xmlns:d="DAV:" xmlns:r="http://schemas.microsoft.com/rvp/"><d:prop><r:state/></d:prop></d:propfind>`),
		alice.From(), "Depth: 0", "Content-Type: text/xml")
	mustStatus(t, "PROPFIND bob", r, 207)
	if !strings.Contains(string(r.Body), "<r:state><r:online/></r:state>") {
		t.Errorf("bob's presence did not survive the restart:\n%s", r.Body)
	}
	// The subscriptions still work: a change reaches alice, a message
	// reaches bob's login callback.
	mustStatus(t, "bob busy", bob.SetState("busy", 1200, 0), 207)
	alice.WaitNotify(0, wait, stateFrom(bob, "busy"))
	msg2 := alice.MessageBody("bob", "after the restart")
	mustStatus(t, "alice → bob after restart", alice.Send("bob", msg2), 200)
	bob.WaitNotify(0, wait, func(n testcluster.Notify) bool { return bytes.Equal(n.Body, msg2) })

	// Both messages are facts, with their bodies.
	var found int
	for _, f := range factsOfType(t, p2.natsURL, events.TypeMessageAccepted) {
		ev, err := events.Decode(events.TypeMessageAccepted, f)
		if err != nil {
			t.Fatal(err)
		}
		if body := ev.(*events.MessageAccepted).Body; bytes.Equal(body, msg) || bytes.Equal(body, msg2) {
			found++
		}
	}
	if found != 2 {
		t.Errorf("found %d message.accepted facts with the sent bodies, want 2", found)
	}

	p2.stop(t)
	verifyProjections(t, data)
}

var regexpTimeout = regexp.MustCompile(`<d:timeout>\d+</d:timeout>`)

// stablePort returns a free loopback address whose port lies below the
// kernel's ephemeral range, for a server restarted on the same address:
// between the stop and the start, an ephemeral port can be handed to any
// outgoing connection on the machine, one of these cannot.
func stablePort(t *testing.T) string {
	t.Helper()
	for range 100 {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(20000+mrand.IntN(12000)))
		if ln, err := net.Listen("tcp", addr); err == nil {
			ln.Close()
			return addr
		}
	}
	t.Fatal("no free port between 20000 and 32000")
	return ""
}
