package homenode

import (
	"fmt"
	"net"
	"strings"
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
	// A failure is reported beside its message's outcome and may not have
	// reached the node before it stops: the last round's then counts for
	// nothing either way, the four before it still do.
	if err := h.stopNode(); err != nil {
		t.Fatal(err)
	}
	if n := len(h.node.reach.failures); n != 0 {
		t.Errorf("the node still counts failures of %d subscriptions that ended (%v), want none", n, h.node.reach.failures)
	}
}

// aclHarness is a harness whose user ann writes her ACL.
type aclHarness struct {
	*harness
	t   *testing.T
	ann events.User
}

func (h *aclHarness) req(id string) events.Req {
	url := "http://im.example.test/instmsg/aliases/ann"
	now := time.Now().UTC()
	return events.Req{ID: id, At: now, Deadline: now.Add(20 * time.Second), Gateway: "gw", Client: "127.0.0.1",
		Node: h.ann, NodeURL: url, From: url, FromUser: h.ann, Auth: events.Identity{Scheme: "ntlm", User: h.ann}}
}

// ask sends ev and returns its answer, nil when none comes within 10 s.
func (h *aclHarness) ask(ev events.Request) *events.Reply {
	h.t.Helper()
	h.send(ev, false)
	timeout := time.After(10 * time.Second)
	for {
		select {
		case r := <-h.replies:
			if r.ID == ev.Request().ID {
				return r
			}
		case <-timeout:
			return nil
		}
	}
}

// alive checks that the home server still answers.
func (h *aclHarness) alive() {
	h.t.Helper()
	if r := h.ask(&events.PropFind{Req: h.req("alive"), Props: []events.Prop{events.PropState}}); r == nil {
		h.t.Fatal("a PROPFIND not answered: the home server is stuck")
	}
}

// TestLargeACLWritten: a user blocks principals of another organisation
// 249 at a time (the gateway takes 256 ACEs a request), up to the 1,000
// entries an ACL may hold. Each write is answered and the home server
// goes on serving: the answer recorded with the acl.set fact (the whole
// ACL) must not make a fact JetStream refuses (its headers are held to
// 64 KB), which the node would publish again for ever, deciding nothing
// else.
func TestLargeACLWritten(t *testing.T) {
	h := &aclHarness{harness: newHarness(t, "ann", "ben"), t: t, ann: events.NewUser("example.test", "ann")}
	for i := range 4 {
		var aces []events.ACE
		for j := range 249 { // with ann's own entry and allprincipals', 998 in the end
			aces = append(aces, events.ACE{Principal: fmt.Sprintf("http://im.other.test/instmsg/aliases/user%04d", 249*i+j),
				Credentials: []string{events.CredAssertion}, Deny: []string{events.RightPresence, events.RightSendTo}})
		}
		r := h.ask(&events.ACL{Req: h.req(fmt.Sprintf("acl-%d", i)), Write: true, ACEs: aces})
		if r == nil {
			t.Fatalf("ACL write %d (ACL of %d entries) not answered: the home server is stuck", i, 249*i)
		}
		if r.Status != rvp.StatusOK || len(r.ACL) < 249*(i+1) {
			t.Fatalf("ACL write %d: %d %s, %d entries", i, r.Status, r.Error, len(r.ACL))
		}
	}
	h.alive()
}

// TestHugeACLRefused: principals of a user's choosing (server names of
// any length; the gateway takes 256 KB and 256 ACEs a request: here 150
// ACEs of 1.5 KB) make an ACL larger than a fact may be (NATS's 1 MB)
// well within its 1,000 entries. The write that would make it so is
// refused, the ACL left as it was, and the home server goes on serving:
// a fact NATS refuses would be published again for ever, the node
// deciding nothing else.
func TestHugeACLRefused(t *testing.T) {
	h := &aclHarness{harness: newHarness(t, "ann", "ben"), t: t, ann: events.NewUser("example.test", "ann")}
	long := strings.Repeat("x", 1500)
	refused := false
	for i := range 6 {
		var aces []events.ACE
		for j := range 150 {
			aces = append(aces, events.ACE{Principal: fmt.Sprintf("server%d-%d.%s.test", i, j, long),
				Credentials: []string{events.CredAssertion}, Deny: []string{events.RightPresence}})
		}
		r := h.ask(&events.ACL{Req: h.req(fmt.Sprintf("acl-%d", i)), Write: true, ACEs: aces})
		if r == nil {
			t.Fatalf("ACL write %d (ACL of %d entries) not answered: the home server is stuck", i, 150*i)
		}
		if r.Status != rvp.StatusOK {
			refused = true
			if r.Status != rvp.StatusInsufficientStorage {
				t.Errorf("ACL write %d refused with %d (%s), want 507", i, r.Status, r.Error)
			}
			break
		}
	}
	if !refused {
		t.Error("an ACL of 900 entries of 1.5 KB each was taken")
	}
	h.alive()
}

// TestDeliveryRefusedWhenQueueFull: a message to a user whose clients
// have more NOTIFYs waiting than KeyQueue is refused at once (recorded as
// 503; its sender told 412, as when no client took it), its outcome
// decided by the deciding loop itself (no goroutine of its own), while
// the messages before it wait for the client.
func TestDeliveryRefusedWhenQueueFull(t *testing.T) {
	h := newHarnessWith(t, func(c *Config) { c.PerKey, c.KeyQueue, c.Workers = 1, 1, 1 }, "ann", "ben")
	// ann's client accepts NOTIFYs and never answers.
	hang, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	held := make(chan net.Conn, 16)
	go func() {
		for {
			c, err := hang.Accept()
			if err != nil {
				return
			}
			held <- c
		}
	}()
	t.Cleanup(func() {
		hang.Close()
		for {
			select {
			case c := <-held:
				c.Close()
			default:
				return
			}
		}
	})
	ann, ben := events.NewUser("example.test", "ann"), events.NewUser("example.test", "ben")
	url := func(a string) string { return "http://im.example.test/instmsg/aliases/" + a }
	req := func(id string, from, node events.User) events.Req {
		now := time.Now().UTC()
		return events.Req{ID: id, At: now, Deadline: now.Add(20 * time.Second), Gateway: "gw", Client: "127.0.0.1",
			Node: node, NodeURL: url(node.Alias), From: url(from.Alias), FromUser: from,
			Auth: events.Identity{Scheme: "ntlm", User: from}}
	}
	h.send(&events.Subscribe{Req: req("login", ann, ann), NotificationType: events.NotifyPragma,
		CallBack: "http://" + hang.Addr().String(), Lifetime: 600}, false)
	body := []byte(`<r:notification xmlns:r="http://schemas.microsoft.com/rvp/"><r:message/></r:notification>`)
	// The first is under way (and hangs), the second waits, the third
	// finds the queue full.
	for i := range 3 {
		h.send(&events.Notify{Req: req(fmt.Sprintf("msg-%d", i), ben, ann), AckType: "DeepOr", HopCount: 1, Body: body}, false)
	}
	deadline := time.After(time.Second) // well before a delivery's 2 s timeout
	for {
		select {
		case r := <-h.replies:
			switch r.ID {
			case "msg-2":
				// Refused when its delivery could not be queued (412, the
				// outcome decided by the loop), or, when msg-1 was released
				// to the queue before msg-2 was decided (the pipeline's
				// timing), at its decision (503, nothing recorded).
				switch r.Status {
				case rvp.StatusPreconditionFailed:
				case rvp.StatusUnavailable:
					t.Logf("msg-2 decided after msg-1 was queued: refused at its decision (503)")
				default:
					t.Fatalf("a message past a full queue: %d %s, want 412 (or 503)", r.Status, r.Error)
				}
				return
			case "msg-0", "msg-1":
				t.Fatalf("%s, waiting for a client that does not answer, answered %d first", r.ID, r.Status)
			}
		case <-deadline:
			t.Fatal("a message past a full queue not answered within a second")
		}
	}
}

// TestUnstorableFactDropped: a decision whose fact the stream refuses
// for good (here an ACL over the fact stream's MaxMsgSize; in a
// deployment anything over NATS's max_payload) is answered 507 and not
// carried out, and the decisions after it are decided again and
// answered: before, the node published the fact again for ever and
// decided nothing more for anyone on its home server.
func TestUnstorableFactDropped(t *testing.T) {
	h := &aclHarness{harness: newHarness(t, "ann", "ben"), t: t, ann: events.NewUser("example.test", "ann")}
	ctx := t.Context()
	// The node serves: its fact stream is made.
	if r := h.ask(&events.PropFind{Req: h.req("first"), Props: []events.Prop{events.PropState}}); r == nil {
		t.Fatal("the home node does not answer")
	}
	st, err := h.js.Stream(ctx, events.FactStream("home1"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	cfg.MaxMsgSize = 4096
	if _, err := h.js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	var aces []events.ACE
	for j := range 60 {
		aces = append(aces, events.ACE{Principal: fmt.Sprintf("http://im.other.test/instmsg/aliases/user%04d", j),
			Credentials: []string{events.CredAssertion}, Deny: []string{events.RightPresence}})
	}
	// The large ACL, and right behind it a state that is decided over it.
	h.send(&events.ACL{Req: h.req("big"), Write: true, ACEs: aces}, false)
	h.send(&events.PropPatch{Req: h.req("state"), State: &events.StateUpdate{Value: "busy", Timeout: 600}}, false)
	answers := map[string]*events.Reply{}
	timeout := time.After(10 * time.Second)
	for len(answers) < 2 {
		select {
		case r := <-h.replies:
			answers[r.ID] = r
		case <-timeout:
			t.Fatalf("answered within 10 s: %v; the node is stuck on a fact the stream refuses", answers)
		}
	}
	if r := answers["big"]; r.Status != rvp.StatusInsufficientStorage {
		t.Errorf("the ACL over the stream's limit: %d %s, want 507", r.Status, r.Error)
	}
	if r := answers["state"]; r.Status != rvp.StatusMultiStatus {
		t.Errorf("the state set behind it: %d %s, want 207", r.Status, r.Error)
	}
	// The ACL was not recorded: a small one is, whole.
	if r := h.ask(&events.ACL{Req: h.req("small"), Write: true, ACEs: aces[:2]}); r == nil || r.Status != rvp.StatusOK || len(r.ACL) > 6 {
		t.Fatalf("a small ACL after it: %+v", r)
	}
	h.alive()
}
