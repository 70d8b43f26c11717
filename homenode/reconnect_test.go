package homenode

import (
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/testcluster/natstest"
)

// reconnectBound is how soon after its connection is back a node has the
// requests whose facts were in flight when it broke answered: well inside
// the publish timeout the test gives it (reconnectAckTimeout), after which
// the facts' answers would count as lost anyway.
const (
	reconnectBound      = 2 * time.Second
	reconnectAckTimeout = 10 * time.Second
)

// TestPipelineFactsInFlightAtServerLoss: the node's connection to its NATS
// server breaks (the server dies: the connection is closed) while facts
// of its decisions are in flight, their answers never to come: facts the
// server never got, and facts it stored whose acknowledgements were lost
// with the connection. nats.go fails the publishes waiting for an answer
// as the connection breaks (ErrDisconnected), so the node recovers its
// window once the connection is back, well before the publish timeout:
// every request is answered within reconnectBound of the reconnection,
// the facts stored are kept (none is stored twice), those not stored are
// published again, and the projection equals a rebuild.
func TestPipelineFactsInFlightAtServerLoss(t *testing.T) {
	for _, c := range []struct {
		name   string
		stored bool
	}{{"not stored", false}, {"stored, acknowledgements lost", true}} {
		t.Run(c.name, func(t *testing.T) { factsInFlightAtServerLoss(t, c.stored) })
	}
}

// gatedConn connects to ns through a gate of its own, reconnecting for
// ever, soon.
func gatedConn(t *testing.T, ns *server.Server) (*gate, *nats.Conn, jetstream.JetStream) {
	g := newGate(t, ns.Addr().String())
	gnc, err := nats.Connect("nats://"+g.ln.Addr().String(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gnc.Close)
	gjs, err := jetstream.New(gnc)
	if err != nil {
		t.Fatal(err)
	}
	return g, gnc, gjs
}

func factsInFlightAtServerLoss(t *testing.T, stored bool) {
	ns := natstest.Start(t, natstest.Listen())
	g, gnc, gjs := gatedConn(t, ns)
	h := newHarnessOn(t, ns, func(c *Config) {
		c.Conn, c.JetStream = gnc, gjs
		c.AckTimeout = reconnectAckTimeout
	}, propertyUsers...)
	ctx := t.Context()
	lastSeq := func() uint64 {
		st, err := h.js.Stream(ctx, events.FactStream(h.home))
		if err != nil {
			t.Fatal(err)
		}
		return st.CachedInfo().State.LastSeq
	}
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !ok(); {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 10 s", what)
			}
			time.Sleep(5 * time.Millisecond) // polling, with a deadline
		}
	}
	states := []string{"online", "busy", "away", "idle"}
	round := func(r int) map[string]string {
		kinds := map[string]string{}
		for i, u := range propertyUsers {
			ev := statePatch(fmt.Sprintf("p%d-%s", r, u), u, states[(i+r)%len(states)])
			h.send(ev, false)
			kinds[ev.ID] = ev.Type()
		}
		return kinds
	}
	h.awaitReplies(round(0), true)

	// The requests are delivered, and decided; their facts go no further
	// than the gate.
	g.up.Lock()
	before := h.node.Stats().Published
	kinds := round(1)
	waitFor("the facts of the requests published", func() bool { return h.node.Stats().Published >= before+uint64(len(kinds)) })
	published := h.node.Stats().Published
	held := &g.up
	if stored {
		// The server takes them; their acknowledgements go no further
		// than the gate.
		g.down.Lock()
		g.up.Unlock()
		held = &g.down
		waitFor("the facts stored", func() bool { return lastSeq() == published })
	}
	back := gnc.StatusChanged(nats.CONNECTED)
	defer gnc.RemoveStatusListener(back)
	// The server dies: what the gate held is lost with the connection.
	g.cut()
	cut := time.Now()
	held.Unlock()
	var reconnected time.Time
	select {
	case <-back:
		reconnected = time.Now()
	case <-time.After(10 * time.Second):
		t.Fatal("the node's connection not back 10 s after the cut")
	}
	got := map[string]bool{}
	var last time.Time
	for deadline := time.After(30 * time.Second); len(got) < len(kinds); {
		select {
		case r := <-h.replies:
			if _, ok := kinds[r.ID]; ok && !got[r.ID] {
				got[r.ID] = true
				last = time.Now()
			}
		case <-deadline:
			t.Fatalf("%d of %d requests answered 30 s after the cut", len(got), len(kinds))
		}
	}
	d := last.Sub(reconnected)
	t.Logf("facts stored before the cut: %v; reconnected %v after the cut; the %d requests answered by %v after the reconnection (publish timeout %v)",
		stored, reconnected.Sub(cut).Round(time.Millisecond), len(kinds), d.Round(time.Millisecond), reconnectAckTimeout)
	if d > reconnectBound {
		t.Errorf("the requests whose facts were in flight at the cut answered %v after the reconnection, want at most %v (publish timeout %v): the window waited for the publish timeout",
			d.Round(time.Millisecond), reconnectBound, reconnectAckTimeout)
	}
	h.awaitReplies(round(2), true)
	if h.node.Stats().Recovered == 0 {
		t.Error("the node recovered no window: the test tested nothing")
	}
	v := h.verify()
	if n := h.storedOnce(); uint64(n) != v.Position {
		t.Errorf("%d facts in the stream, the projection is at %d", n, v.Position)
	}
}

// TestPipelineAnswersLostAtServerLoss: the node's NATS server dies as the
// answer of a request decided (its facts stored, acknowledged) is on its
// way to it; the answer is lost with it, and so is the request's
// acknowledgement. Once the node's connection is back it sends again the
// answers it sent just before the connection broke: every request is
// answered within reconnectBound of the reconnection, not when the
// gateway asks (its askAfter, 3 s) or the request is redelivered
// (AckWait).
func TestPipelineAnswersLostAtServerLoss(t *testing.T) {
	ns := natstest.Start(t, natstest.Listen())
	g, gnc, gjs := gatedConn(t, ns)
	const ackWait = 5 * time.Second
	h := newHarnessOn(t, ns, func(c *Config) {
		c.Conn, c.JetStream = gnc, gjs
		c.AckWait = ackWait
	}, propertyUsers...)
	// A round: each user sets a state; ids in the users' order.
	sendRound := func(r int) ([]string, map[string]string) {
		var ids []string
		kinds := map[string]string{}
		for _, u := range propertyUsers {
			ev := statePatch(fmt.Sprintf("p%d-%s", r, u), u, []string{"online", "busy"}[r%2])
			h.send(ev, false)
			ids = append(ids, ev.ID)
			kinds[ev.ID] = ev.Type()
		}
		return ids, kinds
	}
	_, warm := sendRound(0)
	h.awaitReplies(warm, true)

	back := gnc.StatusChanged(nats.CONNECTED)
	defer gnc.RemoveStatusListener(back)
	// The server dies as the first answer of the round travels to it.
	g.cutAt(events.ReplySubject("gw", fmt.Sprintf("p1-%s", propertyUsers[0])))
	start := time.Now()
	ids, kinds := sendRound(1)
	var reconnected time.Time
	select {
	case <-back:
		reconnected = time.Now()
	case <-time.After(10 * time.Second):
		t.Fatal("the node's connection not back 10 s after the requests were sent")
	}
	if g.trip.Load() != nil {
		t.Fatal("the connection broke before the answer was sent")
	}
	got := map[string]time.Time{}
	for deadline := time.After(30 * time.Second); len(got) < len(kinds); {
		select {
		case r := <-h.replies:
			if _, ok := kinds[r.ID]; ok {
				if _, dup := got[r.ID]; !dup {
					got[r.ID] = time.Now()
				}
			}
		case <-deadline:
			t.Fatalf("%d of %d requests answered 30 s after they were sent", len(got), len(kinds))
		}
	}
	d := got[ids[0]].Sub(reconnected)
	t.Logf("reconnected %v after the requests were sent; the answer lost with the server given %v after the reconnection (askAfter 3 s, AckWait %v)",
		reconnected.Sub(start).Round(time.Millisecond), d.Round(time.Millisecond), ackWait)
	if d > reconnectBound {
		t.Errorf("the answer lost with the server given %v after the reconnection, want at most %v", d.Round(time.Millisecond), reconnectBound)
	}
	v := h.verify()
	if n := h.storedOnce(); uint64(n) != v.Position {
		t.Errorf("%d facts in the stream, the projection is at %d", n, v.Position)
	}
}

// statePatch is user u's request, id id, to set her state to value.
func statePatch(id, u, value string) *events.PropPatch {
	user := events.NewUser("example.test", u)
	url := "http://im.example.test/instmsg/aliases/" + u
	now := time.Now().UTC()
	return &events.PropPatch{Req: events.Req{ID: id, At: now, Deadline: now.Add(30 * time.Second), Gateway: "gw",
		Client: "127.0.0.1", Node: user, NodeURL: url, From: url, FromUser: user, Auth: events.Identity{Scheme: "ntlm", User: user}},
		State: &events.StateUpdate{Value: value, Default: "offline", Timeout: 600}}
}
