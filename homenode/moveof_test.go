package homenode

import (
	"testing"
	"time"

	"github.com/rvp-im/rvpd/directory"
	"github.com/rvp-im/rvpd/events"
)

// watchedAnnReEnabledElsewhere starts home1's node (with a directory
// that can be held back) with ann watched by ben, stops it, and while it
// is down moves ann to home2, disables her and enables her again there
// (her record then has no move); it returns with home1's directory up to
// date, the node stopped, and req making ben's requests for a node.
func watchedAnnReEnabledElsewhere(t *testing.T) (h *harness, lag *laggingDir, admin *directory.Admin, ann, ben events.User, req func(id string, node events.User) events.Req) {
	t.Helper()
	lag = newLaggingDir(t)
	h = newHarnessWith(t, lag.configure, "ann", "ben")
	ctx := t.Context()
	admin = &directory.Admin{JetStream: h.js, Directory: h.dir, Actor: "test"}
	if err := admin.CreateHomeServer(ctx, "home2", "home2.example.test", "", true); err != nil {
		t.Fatal(err)
	}
	ann, ben = events.NewUser("example.test", "ann"), events.NewUser("example.test", "ben")
	url := func(a string) string { return "http://im.example.test/instmsg/aliases/" + a }
	req = func(id string, node events.User) events.Req {
		now := time.Now().UTC()
		return events.Req{ID: id, At: now, Deadline: now.Add(30 * time.Second), Gateway: "gw", Client: "127.0.0.1",
			Node: node, NodeURL: url(node.Alias), From: url("ben"), FromUser: ben, Auth: events.Identity{Scheme: "ntlm", User: ben}}
	}
	h.send(&events.Subscribe{Req: req("ben-watches-ann", ann),
		NotificationType: events.NotifyPropChange, CallBack: url("ben"), CallBackUser: ben, Lifetime: 3600}, false)
	h.awaitReplies(map[string]string{"ben-watches-ann": "watch"}, false)

	if err := h.stopNode(); err != nil {
		t.Fatal(err)
	}
	if err := admin.MoveUser(ctx, ann, "home2"); err != nil {
		t.Fatal(err)
	}
	if err := admin.DisableUser(ctx, ann); err != nil {
		t.Fatal(err)
	}
	if err := admin.EnableUser(ctx, directory.UserSpec{User: ann, Home: "home2"}); err != nil {
		t.Fatal(err)
	}
	if err := lag.dir.WaitFor(ctx, h.dir.Position()); err != nil {
		t.Fatal(err)
	}
	return h, lag, admin, ann, ben, req
}

// TestStrayNamedByALaterMoveBack: ann, watched by ben, is moved from
// home1 to home2 while home1's node is down, disabled and enabled again
// on home2 (her record has no move then), and moved back to home1. home1
// starts with a directory projection a moment behind the last move: it
// has her on home2 with no move. e281c48 names such a handoff by the
// directory sequence of her last event, read from the stream: the move
// back here. home1 handed her state to home2 under the move that brings
// her back, and ended it here; home2, which has her on home1 by then,
// sends its own handoff of that move first and forwards home1's after
// it, which home1 drops as taken already: ben's subscription lost. The
// record and the sequence must be of the same directory: home1 hands
// nothing off, her state is where she lives.
func TestStrayNamedByALaterMoveBack(t *testing.T) {
	h, lag, admin, ann, _, _ := watchedAnnReEnabledElsewhere(t)
	ctx := t.Context()
	lag.stop() // home1's directory a moment behind
	if err := admin.MoveUser(ctx, ann, "home1"); err != nil {
		t.Fatal(err)
	}
	h.startNode()
	for deadline := time.Now().Add(20 * time.Second); h.node.Ready() != nil; {
		if time.Now().After(deadline) {
			t.Fatal("the node did not start")
		}
		<-time.After(10 * time.Millisecond) // poll interval
	}
	if done, err := h.node.Projection().Departed(ann); err != nil || done != 0 {
		t.Errorf("home1 handed ann off under directory sequence %d (%v), though the stream has her moved back to home1", done, err)
	}
	watchers, err := h.node.Projection().Watchers(ann)
	if err != nil || len(watchers) != 1 {
		t.Errorf("home1, where ann lives, holds %d of her watchers' subscriptions (%v), want ben's", len(watchers), err)
	}
}

// TestForwardWithDirectoryBehindHoldsNoOne: ann, watched by ben, is moved
// from home1 to home2 while home1's node is down, disabled and enabled
// again on home2 (no move in her record), and disabled once more while
// home1's directory projection is behind. A request for her that a
// lagging gateway still routes to home1 is forwarded (moveOf), which
// waited, in the deciding loop and on a context the node's stop does not
// end, up to 5 s for the directory to reach her last event: every other
// user's request waited as long, and a stop too. The request is taken
// again later instead; ben's own request is answered at once.
func TestForwardWithDirectoryBehindHoldsNoOne(t *testing.T) {
	h, lag, admin, ann, ben, req := watchedAnnReEnabledElsewhere(t)
	ctx := t.Context()
	lag.stop() // home1's directory behind
	if err := admin.DisableUser(ctx, ann); err != nil {
		t.Fatal(err)
	}
	h.startNode()
	for deadline := time.Now().Add(20 * time.Second); h.node.Ready() != nil; {
		if time.Now().After(deadline) {
			t.Fatal("the node did not start")
		}
		<-time.After(10 * time.Millisecond) // poll interval
	}
	answered := func(id string, within time.Duration) time.Duration {
		t.Helper()
		start := time.Now()
		deadline := time.After(within)
		for {
			select {
			case r := <-h.replies:
				if r.ID == id {
					return time.Since(start)
				}
			case <-deadline:
				t.Fatalf("request %s not answered within %v", id, within)
			}
		}
	}
	h.send(&events.PropPatch{Req: req("ben-online-0", ben), State: &events.StateUpdate{Value: "online", Default: "offline", Timeout: 60}}, false)
	answered("ben-online-0", 20*time.Second) // the node is past its start

	h.send(&events.PropFind{Req: req("ben-reads-ann", ann), All: true}, false)
	h.send(&events.PropPatch{Req: req("ben-online-1", ben), State: &events.StateUpdate{Value: "busy", Default: "offline", Timeout: 60}}, false)
	if took := answered("ben-online-1", 20*time.Second); took > 2*time.Second {
		t.Errorf("ben's request answered after %v: the deciding loop waited for the directory to forward a request of ann's", took)
	}
	stopped := time.Now()
	if err := h.stopNode(); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(stopped); took > 2*time.Second {
		t.Errorf("the node took %v to stop", took)
	}
}

// TestStraysWaitForTheDirectoryOnce: ann and cat, both watched by ben,
// are moved from home1 to home2 while home1's node is down, disabled and
// enabled again on home2 (no move in their records), then disabled once
// more while home1's directory projection is stuck behind. At its start
// home1 waited up to 5 s for the directory for each of them in turn,
// serving nothing meanwhile: a takeover with a lagging directory served
// nothing for 5 s times the users in that case. The start waits 5 s in
// all.
func TestStraysWaitForTheDirectoryOnce(t *testing.T) {
	lag := newLaggingDir(t)
	h := newHarnessWith(t, lag.configure, "ann", "ben", "cat")
	ctx := t.Context()
	admin := &directory.Admin{JetStream: h.js, Directory: h.dir, Actor: "test"}
	if err := admin.CreateHomeServer(ctx, "home2", "home2.example.test", "", true); err != nil {
		t.Fatal(err)
	}
	ben := events.NewUser("example.test", "ben")
	url := func(a string) string { return "http://im.example.test/instmsg/aliases/" + a }
	moved := []events.User{events.NewUser("example.test", "ann"), events.NewUser("example.test", "cat")}
	for _, u := range moved {
		now := time.Now().UTC()
		id := "ben-watches-" + u.Alias
		h.send(&events.Subscribe{Req: events.Req{ID: id, At: now, Deadline: now.Add(30 * time.Second), Gateway: "gw", Client: "127.0.0.1",
			Node: u, NodeURL: url(u.Alias), From: url("ben"), FromUser: ben, Auth: events.Identity{Scheme: "ntlm", User: ben}},
			NotificationType: events.NotifyPropChange, CallBack: url("ben"), CallBackUser: ben, Lifetime: 3600}, false)
		h.awaitReplies(map[string]string{id: "watch"}, false)
	}
	if err := h.stopNode(); err != nil {
		t.Fatal(err)
	}
	for _, u := range moved {
		if err := admin.MoveUser(ctx, u, "home2"); err != nil {
			t.Fatal(err)
		}
		if err := admin.DisableUser(ctx, u); err != nil {
			t.Fatal(err)
		}
		if err := admin.EnableUser(ctx, directory.UserSpec{User: u, Home: "home2"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := lag.dir.WaitFor(ctx, h.dir.Position()); err != nil {
		t.Fatal(err)
	}
	lag.stop() // home1's directory stuck behind
	for _, u := range moved {
		if err := admin.DisableUser(ctx, u); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	h.startNode()
	for deadline := time.Now().Add(30 * time.Second); h.node.Ready() != nil; {
		if time.Now().After(deadline) {
			t.Fatal("the node did not start")
		}
		<-time.After(10 * time.Millisecond) // poll interval
	}
	if took := time.Since(start); took > 8*time.Second {
		t.Errorf("the node served after %v: its start waited for the directory once per stray", took)
	}
}
