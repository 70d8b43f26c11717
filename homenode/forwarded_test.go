package homenode

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/directory"
	"github.com/rvp-im/rvpd/events"
)

// decidedIn returns the types of the facts of home's stream recorded for
// request id.
func (h *harness) decidedIn(home, id string) []string {
	h.t.Helper()
	var out []string
	h.eachFact(home, func(m jetstream.Msg) {
		if m.Headers().Get(events.HeaderRequest) == id {
			out = append(out, m.Headers().Get(events.HeaderType))
		}
	})
	return out
}

// TestForwardedRequestRedeliveredAfterMoveBack: ann is moved from home1
// to home2; a gateway behind the move routes her request to home1, which
// forwards it to home2, where it is decided. Home1's acknowledgement of
// the request is lost (in a partition: chaos seed 14 saw it), and it is
// delivered to home1 again after AckWait — by then ann has been moved
// back to home1. Home1 had no record of the forward, found her homed
// there, and decided the request a second time: its facts were in both
// home servers' streams. A forward is now recorded (request.forwarded),
// and the request taken again here is passed on again, not decided.
func TestForwardedRequestRedeliveredAfterMoveBack(t *testing.T) {
	h := newHarness(t, "ann", "ben")
	ctx := t.Context()
	admin := &directory.Admin{JetStream: h.js, Directory: h.dir, Actor: "test"}
	if err := admin.CreateHomeServer(ctx, "home2", "home2.example.test", "", true); err != nil {
		t.Fatal(err)
	}
	n2 := startOtherNode(t, h, "home2", nil, &logBuffer{})
	ann := events.NewUser("example.test", "ann")

	s12 := moveAnn(t, h, admin, ann, "home2")
	until(t, 20*time.Second, "home2 did not take ann's handoff", func() bool {
		done, err := n2.Projection().Arrived(ann)
		return err == nil && done == s12
	})
	req := annDescription("ann-desc")
	h.sendTo("home1", req) // routed with a directory from before her move
	if r := h.reply(req.ID); r.Status != 207 {
		t.Fatalf("ann's request forwarded to home2: %d %s", r.Status, r.Error)
	}
	if got := h.decidedIn("home2", req.ID); len(got) != 1 {
		t.Fatalf("home2 recorded %v for ann's request, want one fact", got)
	}

	s21 := moveAnn(t, h, admin, ann, "home1")
	until(t, 20*time.Second, "home1 did not take ann's handoff back", func() bool {
		done, err := h.node.Projection().Arrived(ann)
		return err == nil && done == s21
	})
	h.deliverAgain("home1", req)
	h.decidedOnce(req.ID, "home2")
}

// TestRecentFactsForwarded: a node that starts with requests handed out
// and not acknowledged reads the recent facts' headers (readRecent); a
// forward among them is known as a forward (where the request went), not
// as a decision, which a copy forwarded back here would have been
// acknowledged for and never decided.
func TestRecentFactsForwarded(t *testing.T) {
	ann := events.NewUser("example.test", "ann")
	req := annDescription("ann-desc")
	f := &events.RequestForwarded{Meta: req.Meta(time.Now(), "home1"), Node: ann, To: "home2", Move: 12}
	msg, err := factMessage("home1", f, "ann-desc/forwarded/12/0", nil)
	if err != nil {
		t.Fatal(err)
	}
	rf := recentFacts{decided: map[string]decided{}, forwarded: map[string]forwardRecord{}}
	rf.add(msg.Header, 1)
	if fw, ok := rf.forwarded[req.ID]; !ok || fw != (forwardRecord{to: "home2", move: 12}) {
		t.Errorf("the forward read back as %+v (%v), want to home2 under 12", fw, ok)
	}
	if _, ok := rf.decided[req.ID]; ok {
		t.Errorf("the forward read back as a decision of the request")
	}
}

// TestForwardedRequestForwardedBack: ann is moved to home2, whose node is
// down; home1 forwards her request there. She is moved back before home2
// has taken it, and home2, once up, forwards it back to home1 under the
// later move: home1 decides it then, once, though it forwarded it before;
// and delivered to home1 again, it is not decided again.
func TestForwardedRequestForwardedBack(t *testing.T) {
	h := newHarness(t, "ann", "ben")
	ctx := t.Context()
	admin := &directory.Admin{JetStream: h.js, Directory: h.dir, Actor: "test"}
	if err := admin.CreateHomeServer(ctx, "home2", "home2.example.test", "", true); err != nil {
		t.Fatal(err)
	}
	ann := events.NewUser("example.test", "ann")
	// Started before the move: one that starts after it finds nothing
	// of hers to hand off.
	until(t, 30*time.Second, "home1's node did not start", func() bool { return h.node.Ready() == nil })
	s12 := moveAnn(t, h, admin, ann, "home2")
	until(t, 20*time.Second, "home1 did not hand ann off", func() bool {
		done, err := h.node.Projection().Departed(ann)
		return err == nil && done == s12
	})
	req := annDescription("ann-desc")
	h.sendTo("home1", req)
	until(t, 20*time.Second, "home1 did not forward ann's request", func() bool {
		got := h.decidedIn("home1", req.ID)
		return len(got) == 1 && got[0] == events.TypeRequestForwarded
	})
	moveAnn(t, h, admin, ann, "home1")
	startOtherNode(t, h, "home2", nil, &logBuffer{})
	if r := h.reply(req.ID); r.Status != 207 {
		t.Fatalf("ann's request forwarded back to home1: %d %s", r.Status, r.Error)
	}
	h.deliverAgain("home1", req)
	h.decidedOnce(req.ID, "home1")
}

// annDescription is a request of ann's that sets her mobile description.
func annDescription(id string) *events.PropPatch {
	return &events.PropPatch{Req: movedUserReq(id, "ann", "ann"),
		Set: []events.PropValue{{Prop: events.PropMobileDescription, Value: "in a meeting"}}}
}

// deliverAgain publishes req to home's requests again, under a message
// id of its own: to the node, a delivery of the same request again (its
// acknowledgement lost). It returns once the node has taken it: a
// request of ann's sent after it is answered.
func (h *harness) deliverAgain(home string, req events.Request) {
	h.t.Helper()
	data, err := events.Encode(req)
	if err != nil {
		h.t.Fatal(err)
	}
	r := req.Request()
	msg := nats.NewMsg(events.RequestSubject(home, r.Node))
	msg.Header.Set(events.HeaderType, req.Type())
	msg.Header.Set(events.HeaderReply, events.ReplySubject("gw", r.ID))
	msg.Data = data
	if _, err := h.js.PublishMsg(h.t.Context(), msg, jetstream.WithMsgID(r.ID+"/again")); err != nil {
		h.t.Fatal(err)
	}
	after := &events.PropFind{Req: movedUserReq(r.ID+"-after", "ann", "ann"), Props: []events.Prop{events.PropMobileDescription}}
	h.sendTo(home, after)
	if a := h.reply(after.ID); a.Status != 207 {
		h.t.Fatalf("ann's request on %s after %s was delivered again: %d %s", home, r.ID, a.Status, a.Error)
	}
}

// decidedOnce checks that request id was decided once, on home server
// at, and only forwarded (if at all) on the other of home1 and home2.
func (h *harness) decidedOnce(id, at string) {
	h.t.Helper()
	for _, home := range []string{"home1", "home2"} {
		var decided []string
		for _, typ := range h.decidedIn(home, id) {
			if typ != events.TypeRequestForwarded {
				decided = append(decided, typ)
			}
		}
		if want := btoi(home == at); len(decided) != want {
			h.t.Errorf("%s recorded %v for request %s (besides forwards), want %d fact: decided on %s, and not again", home, decided, id, want, at)
		}
	}
}
