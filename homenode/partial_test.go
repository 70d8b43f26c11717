package homenode

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
)

// TestPartialDecisionDecidedAgain: two owners for a moment (the old one's
// facts in flight land after the new one has caught up). The new one
// published ann's PROPPATCH, two facts (her description, then her view
// with the answer); the old one's fact took the place of the first, and
// the chain of expected sequences let the second on. The stream so holds
// the answer 207 without the description. The request, delivered again,
// was answered 207 from that last fact, and her description was never
// stored (chaos seed 26: an acknowledged request whose fact is not in the
// streams). A decision not whole is decided again: her description is
// stored, and she is answered from that decision.
func TestPartialDecisionDecidedAgain(t *testing.T) {
	h := newHarness(t, "ann", "ben")
	h.annDescribed("ann-first")
	if err := h.stopNode(); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()

	// The request, taken by the owner that stops, never acknowledged.
	req := annDescription("ann-busy")
	req.State = &events.StateUpdate{Value: events.StateBusy, Default: events.StateOffline, Timeout: 600}
	h.sendTo("home1", req)
	cons, err := h.js.Consumer(ctx, events.StreamRequests, ConsumerName(h.home))
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	taken := 0
	for range batch.Messages() {
		taken++
	}
	if taken != 1 {
		t.Fatalf("the request was not delivered to the owner that stops (%d)", taken)
	}

	// Its decision: the description, then the view with the answer. Another
	// writer's fact (ben's description) took the place of the first.
	proj, err := projections.OpenHome(h.db, h.home)
	if err != nil {
		t.Fatal(err)
	}
	view := View{Home: h.home, State: projections.NewOverlay(proj), Dir: h.dir}
	policy := Policy{MinLifetime: time.Second}.withDefaults()
	d, err := decide(view, policy, req, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(d.facts) != 2 || d.facts[0].Type() != events.TypePropertySet || d.reply == nil || d.reply.Status != 207 {
		t.Fatalf("ann's PROPPATCH decided as %v, answer %+v; want her description, then her view, answered 207", types(d), d.reply)
	}
	benReq := &events.PropPatch{Req: movedUserReq("ben-desc", "ben", "ben"), Set: []events.PropValue{{Prop: events.PropMobileDescription, Value: "out"}}}
	other, err := decide(view, policy, benReq, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	st, err := h.js.Stream(ctx, events.FactStream(h.home))
	if err != nil {
		t.Fatal(err)
	}
	last := h.appendAsOtherWriter(other, st.CachedInfo().State.LastSeq)
	answer, err := d.encodedReply()
	if err != nil {
		t.Fatal(err)
	}
	msg, err := factMessage(h.home, d.facts[1], d.msgID+"/1", answer) // its place in the decision: fact 1
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.js.PublishMsg(ctx, msg, jetstream.WithExpectLastSequence(last)); err != nil {
		t.Fatal(err)
	}

	h.startNode() // the next owner; the request comes back after AckWait
	select {
	case r := <-h.replies:
		if r.ID != req.ID || r.Status != 207 {
			t.Fatalf("the request delivered again was answered %+v", r)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the request delivered again was not answered")
	}
	until(t, 10*time.Second, "ann's description not stored", func() bool {
		got := h.decidedIn(h.home, req.ID)
		return len(got) > 0 && got[len(got)-1] != events.TypePropertySet && countOf(got, events.TypePropertySet) == 1
	})
	if n := h.logs.count("facts of decisions not whole"); n == 0 {
		t.Errorf("the node did not say it found a decision not whole")
	}
}

func countOf(list []string, s string) int {
	n := 0
	for _, x := range list {
		n += btoi(x == s)
	}
	return n
}

// TestRecentFactsWhole: a request is taken as decided, with its answer,
// from a decision whose facts follow one another; not from one whose
// earlier fact another writer's took the place of, nor from the facts of
// it after that.
func TestRecentFactsWhole(t *testing.T) {
	rf := recentFacts{decided: map[string]decided{}, forwarded: map[string]forwardRecord{}}
	answer := `{"id":"x","status":207}`
	for i, f := range []struct{ req, factID, answer string }{
		{"a", "a/0", ""}, {"a", "a/1", answer}, // whole
		{"x", "x/0", answer},                   // another writer's, in the place of b/0
		{"b", "b/1", ""}, {"b", "b/2", answer}, // not whole
		{"c", "c/0", ""}, {"c", "c/a1/0", ""}, // another decision's first fact
		{"c", "c/a1/1", answer},
	} {
		h := nats.Header{}
		h.Set(events.HeaderRequest, f.req)
		h.Set(events.HeaderFactID, f.factID)
		if f.answer != "" {
			h.Set(events.HeaderAnswer, f.answer)
		}
		rf.add(h, uint64(100+i))
	}
	for id, want := range map[string]bool{"a": true, "x": true, "c": true} {
		if d, ok := rf.decided[id]; !ok || (d.answer != nil) != want {
			t.Errorf("request %s: decided %v, answer %q", id, ok, d.answer)
		}
	}
	if _, ok := rf.decided["b"]; ok || rf.broken != 2 {
		t.Errorf("request b, whose first fact another writer's took the place of, taken as decided (%v); %d facts counted not whole, want 2", ok, rf.broken)
	}
}
