package homenode

import (
	"fmt"
	"testing"
	"time"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/rvp"
)

// TestReachabilityForgetsEndedSubscriptions: a client whose callback
// fails fewer times than MaxCallbackFailures and whose subscription then
// ends (a logout, an expiry) leaves nothing behind in the node's count
// of failures: the count is per subscription id, ids are never used
// again, and a count kept for an ended subscription would only grow
// with every such client, for as long as the node runs.
func TestReachabilityForgetsEndedSubscriptions(t *testing.T) {
	h := newHarness(t, "ann", "ben")
	url := func(a string) string { return "http://im.example.test/instmsg/aliases/" + a }
	ann, ben := events.NewUser("example.test", "ann"), events.NewUser("example.test", "ben")
	req := func(id string, from, node events.User) events.Req {
		now := time.Now().UTC()
		return events.Req{ID: id, At: now, Deadline: now.Add(20 * time.Second), Gateway: "gw", Client: "127.0.0.1",
			Node: node, NodeURL: url(node.Alias), From: url(from.Alias), FromUser: from,
			Auth: events.Identity{Scheme: "ntlm", User: from}}
	}
	ask := func(ev events.Request) *events.Reply {
		t.Helper()
		h.send(ev, false)
		for {
			select {
			case r := <-h.replies:
				if r.ID == ev.Request().ID {
					return r
				}
			case <-time.After(20 * time.Second):
				t.Fatalf("%s not answered", ev.Request().ID)
			}
		}
	}
	const rounds = 5
	for i := range rounds {
		// ann signs in with a callback that refuses connections; ben's
		// message fails there once (MaxCallbackFailures is 2); ann signs
		// out.
		login := ask(&events.Subscribe{Req: req(fmt.Sprintf("login-%d", i), ann, ann), NotificationType: events.NotifyPragma,
			CallBack: "http://127.0.0.1:1", Lifetime: 600})
		if login.Status != rvp.StatusOK {
			t.Fatalf("login: %d %s", login.Status, login.Error)
		}
		if r := ask(&events.Notify{Req: req(fmt.Sprintf("msg-%d", i), ben, ann), AckType: "DeepOr", HopCount: 1,
			Body: []byte(`<r:notification xmlns:r="http://schemas.microsoft.com/rvp/"><r:message/></r:notification>`)}); r.Status == rvp.StatusOK {
			t.Fatalf("message to a callback that refuses connections: %d", r.Status)
		}
		if r := ask(&events.Unsubscribe{Req: req(fmt.Sprintf("logout-%d", i), ann, ann), ID: login.SubscriptionID}); r.Status != rvp.StatusOK {
			t.Fatalf("logout: %d %s", r.Status, r.Error)
		}
	}
	// The failures are reported beside the outcomes: give the last a
	// moment to come in.
	time.Sleep(200 * time.Millisecond)
	if err := h.stopNode(); err != nil {
		t.Fatal(err)
	}
	if n := len(h.node.reach.failures); n != 0 {
		t.Errorf("the node still counts failures of %d subscriptions that ended (%v), want none", n, h.node.reach.failures)
	}
}
