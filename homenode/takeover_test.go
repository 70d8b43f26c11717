package homenode

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
	"github.com/rvp-im/rvpd/rvp"
)

// TestDecidedRequestAnsweredAfterTakeover: an owner takes a request,
// decides it, makes its facts durable and dies before it answers and
// acknowledges it (the test plays that owner, with the node's own rules
// and messages). The node that takes the home server over gets the
// request again from JetStream and answers it with the outcome recorded
// in its facts, without deciding it a second time; before, it logged
// "request already decided; redelivery ignored" and the sender got 503
// when its deadline passed. Also when the next owner's first read of the
// recent facts is answered by a replica behind, without the last fact
// (laggingFirstRead): it took "nothing pending" for the end, read no
// fact, and decided the request again (chaos seed 21: one message in two
// facts of home1's under the same fact id, 9.4 s apart).
func TestDecidedRequestAnsweredAfterTakeover(t *testing.T) {
	for _, lagging := range []bool{false, true} {
		name := "replica current"
		if lagging {
			name = "the next owner's first read of its recent facts on a replica behind"
		}
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, "ann", "ben")
			sink := "http://" + h.sink.Addr().String()
			now := time.Now().UTC()
			req := func(id, alias string) events.Req {
				u := events.NewUser("example.test", alias)
				url := "http://im.example.test/instmsg/aliases/" + alias
				return events.Req{ID: id, At: now, Deadline: now.Add(30 * time.Second), Gateway: "gw", Client: "127.0.0.1",
					Node: u, NodeURL: url, From: url, FromUser: u, Auth: events.Identity{Scheme: "ntlm", User: u}}
			}
			h.send(&events.Subscribe{Req: req("login-ann", "ann"), NotificationType: events.NotifyPragma, CallBack: sink, Lifetime: 600}, false)
			h.awaitReplies(map[string]string{"login-ann": events.TypeSubscribe}, true)
			if err := h.stopNode(); err != nil {
				t.Fatal(err)
			}

			// The owner that dies: it takes the request from the home server's
			// consumer, decides it and appends its facts, and no more.
			login := &events.Subscribe{Req: req("login-ben", "ben"), NotificationType: events.NotifyPragma, CallBack: sink, Lifetime: 900}
			h.send(login, false)
			ctx := t.Context()
			cons, err := h.js.Consumer(ctx, events.StreamRequests, ConsumerName(h.home))
			if err != nil {
				t.Fatal(err)
			}
			batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			var taken jetstream.Msg
			for m := range batch.Messages() {
				taken = m
			}
			if taken == nil {
				t.Fatal("the request was not delivered to the dying owner")
			}
			proj, err := projections.OpenHome(h.db, h.home)
			if err != nil {
				t.Fatal(err)
			}
			d, err := decide(View{Home: h.home, State: projections.NewOverlay(proj), Dir: h.dir}, Policy{MinLifetime: time.Second}.withDefaults(), login, now)
			if err != nil {
				t.Fatal(err)
			}
			if d.reply == nil || d.reply.Status != 200 || d.reply.SubscriptionID == 0 || len(d.facts) == 0 {
				t.Fatalf("the dying owner's decision: %+v", d)
			}
			st, err := h.js.Stream(ctx, events.FactStream(h.home))
			if err != nil {
				t.Fatal(err)
			}
			last := st.CachedInfo().State.LastSeq
			last = h.appendAsOtherWriter(d, last)

			// The next owner: the request comes back when its acknowledgement is
			// overdue, and is answered as it was decided.
			if lagging {
				h.tweak = func(c *Config) {
					c.JetStream = &laggingFirstRead{JetStream: c.JetStream, stream: events.FactStream(h.home)}
				}
			}
			h.startNode()
			select {
			case r := <-h.replies:
				got, _ := json.Marshal(r)
				want, _ := json.Marshal(d.reply)
				if string(got) != string(want) {
					t.Errorf("the redelivered request was answered %s; its recorded outcome is %s", got, want)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("the request decided by the owner that died got no answer from the next")
			}
			if !strings.Contains(h.logs.tail(200), "answered again with its recorded outcome") {
				t.Errorf("the node does not say it answered a decided request again:\n%s", h.logs.tail(40))
			}
			// Asked again (a gateway whose answer was lost), the node gives the
			// recorded answer; for a request it never decided, nothing.
			m, err := h.nc.Request(events.AnswerSubject(h.home), []byte("login-ben"), 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if ev, err := events.Decode(m.Header.Get(events.HeaderType), m.Data); err != nil || ev.(*events.Reply).SubscriptionID != d.reply.SubscriptionID {
				t.Errorf("the answer asked for again: %v %s", err, m.Data)
			}
			if m, err := h.nc.Request(events.AnswerSubject(h.home), []byte("never-sent"), 5*time.Second); err != nil || len(m.Data) != 0 {
				t.Errorf("the answer to a request never decided: %v %q", err, m.Data)
			}
			// Decided once: ben has one login, the one the dying owner made.
			logins, err := h.node.Projection().Logins(events.NewUser("example.test", "ben"))
			if err != nil {
				t.Fatal(err)
			}
			if len(logins) != 1 || logins[0].ID != d.reply.SubscriptionID {
				t.Errorf("ben's logins after the takeover: %+v; want only subscription %d", logins, d.reply.SubscriptionID)
			}
			h.storedOnce()
		})
	}
}

// TestNotifyNotTriedSaysNothing: a NOTIFY whose time passed while it
// waited in the node (its decision's facts waited for a stream leader's
// election) is not a failure of its callback. Counted as one, three of
// them ended the logins of clients that answered, and their messages got
// 412 after a NATS server was lost (TestClusterNATSServerLoss).
func TestNotifyNotTriedSaysNothing(t *testing.T) {
	var dropped atomic.Uint64
	p := newPool(&rvp.Client{}, 1, 1, 1, 1, slog.New(slog.DiscardHandler), &dropped, nil)
	u, _ := rvp.ParseURL("http://127.0.0.1:1/")
	var got error
	p.run(t.Context(), job{out: rvp.Outbound{URL: u}, deadline: time.Now().Add(-time.Second), done: func(_ int, err error) { got = err }})
	if !errors.Is(got, errNotTried) {
		t.Fatalf("a NOTIFY past its time: %v, want errNotTried", got)
	}
	n := &Node{reaches: make(chan reach, 2)}
	ref := subRef{node: events.NewUser("example.test", "ann"), id: 1}
	n.reachability(ref)(0, got)
	if len(n.reaches) != 0 {
		t.Error("a NOTIFY not tried counted against its callback")
	}
	n.reachability(ref)(0, errors.New("connection refused"))
	if len(n.reaches) != 1 {
		t.Error("a NOTIFY refused did not count against its callback")
	}
}

// TestLapsedLeaseAppendsNothing: a node whose lease is not good now
// (Config.Owned false: the process was paused past its TTL, or a renewal
// is slow to be answered) decides and appends nothing; it goes on once
// the lease is good again, and when the lease is lost instead (its
// context ends) it stops with nothing appended, leaving its request to
// the next owner. Before, a paused owner resumed deciding and appending
// until its next renewal failed, and requests were decided twice
// (TestHomeOwnerPaused).
func TestLapsedLeaseAppendsNothing(t *testing.T) {
	var good atomic.Bool
	good.Store(true)
	h := newHarnessWith(t, func(c *Config) { c.Owned = good.Load }, "ann")
	sink := "http://" + h.sink.Addr().String()
	now := time.Now().UTC()
	u := events.NewUser("example.test", "ann")
	url := "http://im.example.test/instmsg/aliases/ann"
	login := func(id string) *events.Subscribe {
		return &events.Subscribe{Req: events.Req{ID: id, At: now, Deadline: now.Add(30 * time.Second), Gateway: "gw", Client: "127.0.0.1",
			Node: u, NodeURL: url, From: url, FromUser: u, Auth: events.Identity{Scheme: "ntlm", User: u}},
			NotificationType: events.NotifyPragma, CallBack: sink, Lifetime: 600}
	}
	h.send(login("login-1"), false)
	h.awaitReplies(map[string]string{"login-1": events.TypeSubscribe}, true)
	st, err := h.js.Stream(t.Context(), events.FactStream(h.home))
	if err != nil {
		t.Fatal(err)
	}
	last := func() uint64 {
		info, err := st.Info(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		return info.State.LastSeq
	}
	// held checks for a while that nothing is answered or appended.
	held := func(what string) {
		t.Helper()
		before := last()
		select {
		case r := <-h.replies:
			t.Fatalf("%s: answered with the lease not good: %+v", what, r)
		case <-time.After(time.Second):
		}
		if after := last(); after != before {
			t.Errorf("%s: the fact stream went from %d to %d with the lease not good", what, before, after)
		}
	}

	good.Store(false)
	h.send(login("login-2"), false)
	held("a renewal slow to be answered")
	good.Store(true)
	h.awaitReplies(map[string]string{"login-2": events.TypeSubscribe}, true)

	good.Store(false)
	h.send(login("login-3"), false)
	held("the lease lapsed")
	before := last()
	if err := h.stopNode(); err != nil && !errors.Is(err, ErrLeaseLapsed) {
		t.Fatalf("the node whose lease was lost stopped with %v", err)
	}
	if after := last(); after != before {
		t.Errorf("the fact stream went from %d to %d as the node whose lease was lost stopped", before, after)
	}
	// The next owner decides it.
	good.Store(true)
	h.startNode()
	h.awaitReplies(map[string]string{"login-3": events.TypeSubscribe}, true)
}

// TestOtherWritersDecisionUnderTheSameID: the previous owner, paused
// while its facts were on their way, decided a request that comes back to
// this node (its acknowledgement overdue), and those facts land in the
// stream after this node started, just before this node's own decision
// of the same request. Both decisions carry the same fact ids (the
// request's id), not the same facts (each decided at its own time). The
// node's chain is broken by them; it must not take the other writer's
// facts for its own stored ones (projecting its own facts, which the
// stream does not hold), but catch up with what the stream holds and
// answer as the other writer decided.
func TestOtherWritersDecisionUnderTheSameID(t *testing.T) {
	h := newHarness(t, "ann", "ben")
	_, login, _ := otherWritersLogin(t, h)
	ctx := t.Context()
	// The same request, to this node.
	h.send(login, false)
	h.awaitReplies(map[string]string{"login-ben": events.TypeSubscribe}, true)
	if err := h.stopNode(); err != nil {
		t.Fatal(err)
	}
	v, err := projections.VerifyHome(ctx, h.js, h.db, h.home)
	if err != nil {
		t.Fatal(err)
	}
	if !v.OK() {
		t.Fatalf("live projection (%d keys at seq %d) differs from the rebuild:\n%s", v.Keys, v.Position, v.Diff)
	}
}

// TestOtherWritersDecisionRemembered: the previous owner's decision of a
// request lands in the stream after this node started (it was paused with
// its facts on their way), and this node meets it through a conflict
// while deciding another request. When the request the other writer
// decided comes to this node (its acknowledgement overdue), it is
// answered with the other writer's outcome, not decided a second time.
func TestOtherWritersDecisionRemembered(t *testing.T) {
	h := newHarness(t, "ann", "ben", "cat")
	req, login, d := otherWritersLogin(t, h)
	sink := "http://" + h.sink.Addr().String()
	// This node meets it deciding another request.
	h.send(&events.Subscribe{Req: req("login-cat", "cat"), NotificationType: events.NotifyPragma, CallBack: sink, Lifetime: 600}, false)
	h.awaitReplies(map[string]string{"login-cat": events.TypeSubscribe}, true)
	if h.node.Stats().Conflicts == 0 {
		t.Fatal("the node never met the other writer's facts: the test tested nothing")
	}
	// Then the request the other writer decided comes.
	h.send(login, false)
	h.awaitReplies(map[string]string{"login-ben": events.TypeSubscribe}, true)
	h.storedOnce()
	logins, err := h.node.Projection().Logins(events.NewUser("example.test", "ben"))
	if err != nil {
		t.Fatal(err)
	}
	if len(logins) != 1 || logins[0].ID != d.reply.SubscriptionID {
		t.Errorf("ben's logins: %+v; want only subscription %d, the other writer's", logins, d.reply.SubscriptionID)
	}
}

// otherWritersLogin signs ann in, then appends to the fact stream, behind
// the node's back, another writer's decision of login-ben made seconds
// before (a previous owner paused with its facts on their way), under
// the fact ids the node's own decision of it would have. It returns the
// requests' maker, login-ben and the other writer's decision of it.
func otherWritersLogin(t *testing.T, h *harness) (func(id, alias string) events.Req, *events.Subscribe, *decision) {
	t.Helper()
	sink := "http://" + h.sink.Addr().String()
	now := time.Now().UTC()
	req := func(id, alias string) events.Req {
		u := events.NewUser("example.test", alias)
		url := "http://im.example.test/instmsg/aliases/" + alias
		return events.Req{ID: id, At: now, Deadline: now.Add(30 * time.Second), Gateway: "gw", Client: "127.0.0.1",
			Node: u, NodeURL: url, From: url, FromUser: u, Auth: events.Identity{Scheme: "ntlm", User: u}}
	}
	h.send(&events.Subscribe{Req: req("login-ann", "ann"), NotificationType: events.NotifyPragma, CallBack: sink, Lifetime: 600}, false)
	h.awaitReplies(map[string]string{"login-ann": events.TypeSubscribe}, true)
	ctx := t.Context()
	st, err := h.js.Stream(ctx, events.FactStream(h.home))
	if err != nil {
		t.Fatal(err)
	}
	last := st.CachedInfo().State.LastSeq
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := h.node.Projection().WaitFor(wctx, last); err != nil {
		t.Fatal(err)
	}

	// The other writer's decision of login-ben, made seconds earlier.
	login := &events.Subscribe{Req: req("login-ben", "ben"), NotificationType: events.NotifyPragma, CallBack: sink, Lifetime: 900}
	d, err := decide(View{Home: h.home, State: projections.NewOverlay(h.node.Projection()), Dir: h.dir}, Policy{MinLifetime: time.Second}.withDefaults(), login, now.Add(-5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	last = h.appendAsOtherWriter(d, last)
	return req, login, d
}

// appendAsOtherWriter appends d's facts to the home server's stream after
// sequence last, as another writer (the node that decided d) would have:
// the same messages, ids and recorded answer the node's own publish
// makes. It returns the stream's last sequence after them.
func (h *harness) appendAsOtherWriter(d *decision, last uint64) uint64 {
	h.t.Helper()
	for i, f := range d.facts {
		var answer []byte
		if i == len(d.facts)-1 {
			var err error
			if answer, err = d.encodedReply(); err != nil {
				h.t.Fatal(err)
			}
		}
		msg, err := factMessage(h.home, f, d.msgID+"/"+strconv.Itoa(i), answer)
		if err != nil {
			h.t.Fatal(err)
		}
		if _, err := h.js.PublishMsg(h.t.Context(), msg, jetstream.WithExpectLastSequence(last)); err != nil {
			h.t.Fatal(err)
		}
		last++
	}
	return last
}
