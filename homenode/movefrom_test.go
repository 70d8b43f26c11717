package homenode

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/directory"
	"github.com/rvp-im/rvpd/events"
)

// sendTo publishes ev to home's requests as a gateway does (h.send, for
// another home server than h's).
func (h *harness) sendTo(home string, ev events.Request) {
	h.t.Helper()
	data, err := events.Encode(ev)
	if err != nil {
		h.t.Fatal(err)
	}
	msg := nats.NewMsg(events.RequestSubject(home, ev.Request().Node))
	msg.Header.Set(events.HeaderType, ev.Type())
	msg.Header.Set(events.HeaderReply, events.ReplySubject("gw", ev.Request().ID))
	msg.Data = data
	if _, err := h.js.PublishMsg(h.t.Context(), msg, jetstream.WithMsgID(ev.Request().ID)); err != nil {
		h.t.Fatal(err)
	}
}

// reply waits for the answer to request id.
func (h *harness) reply(id string) *events.Reply {
	h.t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case r := <-h.replies:
			if r.ID == id {
				return r
			}
		case <-deadline:
			h.t.Fatalf("request %s not answered", id)
			return nil
		}
	}
}

// movedUserReq returns a request of from's (a user of example.test) about
// node's node, from from's client.
func movedUserReq(id, from, node string) events.Req {
	now := time.Now().UTC()
	url := func(a string) string { return "http://im.example.test/instmsg/aliases/" + a }
	fu := events.NewUser("example.test", from)
	return events.Req{ID: id, At: now, Deadline: now.Add(30 * time.Second), Gateway: "gw", Client: "127.0.0.1",
		Node: events.NewUser("example.test", node), NodeURL: url(node), From: url(from), FromUser: fu, Auth: events.Identity{Scheme: "ntlm", User: fu}}
}

// moveAnn moves ann to home and returns the move's directory sequence,
// once h's directory has it.
func moveAnn(t *testing.T, h *harness, admin *directory.Admin, ann events.User, home string) uint64 {
	t.Helper()
	if err := admin.MoveUser(t.Context(), ann, home); err != nil {
		t.Fatal(err)
	}
	var seq uint64
	until(t, 10*time.Second, "ann's move to "+home+" not in the directory", func() bool {
		rec, err := h.dir.User(ann)
		if err != nil || rec == nil || rec.Home != home {
			return false
		}
		seq = rec.Move
		return seq != 0
	})
	return seq
}

// TestForwardUnderAMoveBetweenOtherHomes: ann sets her mobile
// description on home1, moves to home2 (s12; home1 hands her off), clears
// it there, and moves on to home3 (s23; home2 hands her off). A gateway
// whose directory is far behind still routes a request of hers to home1,
// which forwards it; or home1's node starts again. forward (and strays,
// at the start) handed her off first under her record's move, s23, from
// home2 to home3, not from here: home1, which holds nothing of hers but
// the ACL and properties a handoff leaves behind, sent them to home3 as
// her state and recorded her departure under s23; home3, which has no
// description of hers, took the stale one: the description she cleared
// came back. A move between two other home servers is handed off from
// here only when this node holds state of hers not handed over (a move
// it missed).
func TestForwardUnderAMoveBetweenOtherHomes(t *testing.T) {
	for _, restart := range []bool{false, true} {
		name := "forwarded"
		if restart {
			name = "at home1's start"
		}
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, "ann", "ben")
			ctx := t.Context()
			admin := &directory.Admin{JetStream: h.js, Directory: h.dir, Actor: "test"}
			for _, home := range []string{"home2", "home3"} {
				if err := admin.CreateHomeServer(ctx, home, home+".example.test", "", true); err != nil {
					t.Fatal(err)
				}
			}
			n2 := startOtherNode(t, h, "home2", nil, &logBuffer{})
			n3 := startOtherNode(t, h, "home3", nil, &logBuffer{})
			ann := events.NewUser("example.test", "ann")
			desc := func(v string) []events.PropValue {
				return []events.PropValue{{Prop: events.PropMobileDescription, Value: v}}
			}
			h.sendTo("home1", &events.PropPatch{Req: movedUserReq("ann-desc-1", "ann", "ann"), Set: desc("in a meeting")})
			if r := h.reply("ann-desc-1"); r.Status != 207 {
				t.Fatalf("ann's description on home1: %d %s", r.Status, r.Error)
			}

			s12 := moveAnn(t, h, admin, ann, "home2")
			until(t, 20*time.Second, "home2 did not take ann's handoff", func() bool {
				done, err := n2.Projection().Arrived(ann)
				return err == nil && done == s12
			})
			h.sendTo("home2", &events.PropPatch{Req: movedUserReq("ann-desc-2", "ann", "ann"), Set: desc("")})
			if r := h.reply("ann-desc-2"); r.Status != 207 {
				t.Fatalf("ann's description cleared on home2: %d %s", r.Status, r.Error)
			}
			s23 := moveAnn(t, h, admin, ann, "home3")
			until(t, 20*time.Second, "home3 did not take ann's handoff", func() bool {
				done, err := n3.Projection().Arrived(ann)
				return err == nil && done == s23
			})

			to := "home1" // a gateway far behind routes ann's request there
			if restart {
				h.restart()
				until(t, 20*time.Second, "home1's node did not start again", func() bool { return h.node.Ready() == nil })
				to = "home3"
			}
			h.sendTo(to, &events.PropFind{Req: movedUserReq("ann-reads", "ann", "ann"), Props: []events.Prop{events.PropMobileDescription}})
			r := h.reply("ann-reads")
			for _, pv := range r.Found {
				if pv.Prop == events.PropMobileDescription && pv.Value != "" {
					t.Errorf("ann's description on home3: %q, want none (cleared on home2)", pv.Value)
				}
			}
			if done, err := h.node.Projection().Departed(ann); err != nil || done != s12 {
				t.Errorf("home1 recorded ann's departure under %d (%v), want %d: the move from home2 to home3 is not home1's to hand off", done, err, s12)
			}
		})
	}
}

// TestRequestAfterDepartureDirectoryBehind: ann lives on home1, whose
// directory projection is behind; she is moved to home2, which home1
// hears of from the directory stream (watchMoves) and hands her off. A
// gateway that has not the move yet routes ben's watch of her to home1:
// its directory has her here still, and it was decided here, after her
// state had gone: ben's subscription stayed on home1, where she no longer
// lives, and never reached home2 (nothing hands it over: her departure
// under that move is done). A request for a user handed off from here
// under a move the directory has not applied waits for it, as a handoff
// does, and is forwarded.
func TestRequestAfterDepartureDirectoryBehind(t *testing.T) {
	lag := newLaggingDir(t)
	h := newHarnessWith(t, lag.configure, "ann", "ben")
	ctx := t.Context()
	admin := &directory.Admin{JetStream: h.js, Directory: h.dir, Actor: "test"}
	if err := admin.CreateHomeServer(ctx, "home2", "home2.example.test", "", true); err != nil {
		t.Fatal(err)
	}
	n2 := startOtherNode(t, h, "home2", nil, &logBuffer{})
	ann, ben := events.NewUser("example.test", "ann"), events.NewUser("example.test", "ben")
	if err := lag.dir.WaitFor(ctx, h.dir.Position()); err != nil {
		t.Fatal(err)
	}
	lag.stop() // home1's directory stays behind ann's move
	s := moveAnn(t, h, admin, ann, "home2")
	until(t, 10*time.Second, "home1 did not hand ann off", func() bool {
		done, err := h.node.Projection().Departed(ann)
		return err == nil && done == s
	})

	watch := &events.Subscribe{Req: movedUserReq("ben-watches-ann", "ben", "ann"), NotificationType: events.NotifyPropChange,
		CallBack: "http://im.example.test/instmsg/aliases/ben", CallBackUser: ben, Lifetime: 3600}
	h.sendTo("home1", watch)
	const held = "directory behind the move the user was handed off"
	until(t, 20*time.Second, "ben's watch of ann neither decided on home1 nor held there", func() bool {
		subs, err := h.node.Projection().Subscriptions(ann)
		return (err == nil && len(subs) > 0) || h.logs.count(held, watch.ID) > 0
	})
	lag.follow()
	if r := h.reply(watch.ID); r.Status != 207 {
		t.Fatalf("ben's watch of ann: %d %s", r.Status, r.Error)
	}
	until(t, 20*time.Second, "ben's watch of ann never reached home2, where she lives", func() bool {
		subs, err := n2.Projection().Watchers(ann)
		return err == nil && len(subs) == 1 && subs[0].Watcher == ben
	})
	if subs, err := h.node.Projection().Subscriptions(ann); err != nil || len(subs) != 0 {
		t.Errorf("home1, which ann left, holds %d subscriptions of hers (%v): %+v", len(subs), err, subs)
	}
}
