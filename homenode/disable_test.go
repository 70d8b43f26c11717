package homenode

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rvp-im/rvpd/directory"
	"github.com/rvp-im/rvpd/events"
)

// TestDisabledSignInInFlight: ann is disabled and her home server ends
// her login and presence (decideDisabled). A sign-in and a presence
// update of hers that a gateway accepted before its directory had the
// disable (they were in the request stream already) are decided after
// it: they must not sign her in again, or her watchers see a disabled
// user online until the lease her client asked runs out, and nothing
// ends it but the next start of the node.
func TestDisabledSignInInFlight(t *testing.T) {
	w := newWorld(t)
	w.login("ann", "10.0.0.1", annCB)
	w.login("ben", "10.0.0.3", benCB)
	w.watch("ben", "ann")
	w.setState("ann", "10.0.0.1", "online", 600)
	w.dir.users[user("ann")].Enabled = false
	w.do(disabled(user("ann")))
	if w.presence("ann").Others != events.StateOffline {
		t.Fatalf("disabled: ann is %s, want offline", w.presence("ann").Others)
	}

	d := w.do(&events.Subscribe{Req: w.req("late-login", "ann", "ann", "10.0.0.1"), NotificationType: events.NotifyPragma, CallBack: annCB, Lifetime: 14400})
	if d.reply == nil || d.reply.Status < 400 {
		t.Errorf("sign-in of a disabled user decided after the disable: reply %+v, facts %v", d.reply, types(d))
	}
	d = w.setState("ann", "10.0.0.1", "online", 600)
	if d.reply == nil || d.reply.Status < 400 {
		t.Errorf("presence of a disabled user set after the disable: reply %+v, facts %v", d.reply, types(d))
	}
	if p := w.presence("ann"); p.Others != events.StateOffline {
		t.Errorf("disabled ann is %s to her watchers, want offline", p.Others)
	}
	logins, _ := w.st.Logins(user("ann"))
	if len(logins) != 0 {
		t.Errorf("disabled ann holds %d logins", len(logins))
	}
}

// TestDisableWithDirectoryBehind: ann, signed in, is disabled while the
// home node's directory projection is behind the stream (a site's copy
// lagging). The node hears of the disable from the stream and waited in
// its deciding loop, up to 5 s, for its directory to have it: every
// request of every user of the home server waited as long (and as many
// times over as users disabled). Its other users are answered at once.
func TestDisableWithDirectoryBehind(t *testing.T) {
	lag := newLaggingDir(t)
	h := newHarnessWith(t, lag.configure, "ann", "ben")
	url := func(a string) string { return "http://im.example.test/instmsg/aliases/" + a }
	req := func(id, alias string) events.Req {
		u := events.NewUser("example.test", alias)
		now := time.Now().UTC()
		return events.Req{ID: id, At: now, Deadline: now.Add(30 * time.Second), Gateway: "gw", Client: "127.0.0.1",
			Node: u, NodeURL: url(alias), From: url(alias), FromUser: u, Auth: events.Identity{Scheme: "ntlm", User: u}}
	}
	answer := func(id string, within time.Duration) {
		t.Helper()
		deadline := time.After(within)
		for {
			select {
			case r := <-h.replies:
				if r.ID == id {
					return
				}
			case <-deadline:
				t.Fatalf("request %s not answered within %v", id, within)
			}
		}
	}
	h.send(&events.Subscribe{Req: req("ann-login", "ann"), NotificationType: events.NotifyPragma, CallBack: "http://" + h.sink.Addr().String(), Lifetime: 600}, false)
	answer("ann-login", 10*time.Second)

	lag.stop() // the node's directory falls behind
	admin := &directory.Admin{JetStream: h.js, Directory: h.dir, Actor: "test"}
	if err := admin.DisableUser(t.Context(), events.NewUser("example.test", "ann")); err != nil {
		t.Fatal(err)
	}
	// ben's requests, one after another, for 3 s: none waits on ann's.
	start := time.Now()
	for i := 0; time.Since(start) < 3*time.Second; i++ {
		id := fmt.Sprintf("ben-%d", i)
		sent := time.Now()
		h.send(&events.PropPatch{Req: req(id, "ben"), State: &events.StateUpdate{Value: "online", Default: "offline", Timeout: 60}}, false)
		answer(id, 10*time.Second)
		if took := time.Since(sent); took > 2*time.Second {
			t.Fatalf("ben's request %d answered after %v: the home server's loop waited for its directory to have ann disabled", i, took)
		}
	}
	// Her login ends once the directory has her disabled.
	lag.follow()
	ann := events.NewUser("example.test", "ann")
	h.waitLogins(ann, 0, "disabled ann, after the directory caught up")
}

// TestDisableBehindTheDirectoryAtStart: ann, signed in, is disabled while
// her home node is down, and it starts with a directory projection that
// has not the disable yet (its follower a moment behind the stream, as a
// standby taking over has it). disabledHere, reading the projection,
// found her enabled, and watchMoves, following the directory from its
// new events on, never heard of it: her login and presence stayed until
// their leases ran out, or the next start. The node follows the
// directory from its projection's position instead.
func TestDisableBehindTheDirectoryAtStart(t *testing.T) {
	lag := newLaggingDir(t)
	h := newHarnessWith(t, lag.configure, "ann", "ben")
	ann := events.NewUser("example.test", "ann")
	now := time.Now().UTC()
	url := "http://im.example.test/instmsg/aliases/ann"
	h.send(&events.Subscribe{Req: events.Req{ID: "ann-login", At: now, Deadline: now.Add(30 * time.Second), Gateway: "gw", Client: "127.0.0.1",
		Node: ann, NodeURL: url, From: url, FromUser: ann, Auth: events.Identity{Scheme: "ntlm", User: ann}},
		NotificationType: events.NotifyPragma, CallBack: "http://" + h.sink.Addr().String(), Lifetime: 600}, false)
	for deadline := time.After(10 * time.Second); ; {
		select {
		case r := <-h.replies:
			if r.ID != "ann-login" {
				continue
			}
		case <-deadline:
			t.Fatal("ann's login not answered")
		}
		break
	}

	if err := h.stopNode(); err != nil {
		t.Fatal(err)
	}
	lag.stop() // the node's directory a moment behind
	admin := &directory.Admin{JetStream: h.js, Directory: h.dir, Actor: "test"}
	if err := admin.DisableUser(t.Context(), ann); err != nil {
		t.Fatal(err)
	}
	h.startNode()
	// The node serves before its directory catches up.
	for deadline := time.Now().Add(10 * time.Second); h.node.Ready() != nil; {
		if time.Now().After(deadline) {
			t.Fatal("the node did not start")
		}
		<-time.After(10 * time.Millisecond) // poll interval
	}
	lag.follow()
	h.waitLogins(ann, 0, "ann, disabled before her home node started, after its directory caught up")
}

// TestHandoffOfDisabledUser: ann, online on home1, is moved to home2
// while home1's node is down, then disabled. home2 had none of her
// logins and views when it heard of the disable; home1, at its start,
// hands her state over, logins and views included, and home2 took them:
// a disabled user signed in and online on home2 until the leases ran
// out, which no start of home1 ends (she is not homed there). Her
// watchers' subscriptions are taken; her logins and views are not.
func TestHandoffOfDisabledUser(t *testing.T) {
	from := newWorld(t)
	from.login("ann", "10.0.0.1", annCB)
	from.login("ben", "10.0.0.3", benCB)
	from.watch("ben", "ann")
	from.setState("ann", "10.0.0.1", "online", 600)
	d := from.do(departure{user: user("ann"), to: "home2", seq: 40})
	if d.handoff == nil {
		t.Fatal("no handoff")
	}

	to := newWorld(t)
	rec := to.dir.users[user("ann")]
	rec.Home, rec.MovedFrom, rec.Move, rec.MovedAt, rec.Enabled = "home2", testHome, 40, to.now, false
	got := to.do(d.handoff)
	logins, _ := to.st.Logins(user("ann"))
	views, _ := to.st.Views(user("ann"))
	watchers, _ := to.st.Watchers(user("ann"))
	if len(logins) != 0 || len(views) != 0 {
		t.Errorf("disabled ann handed over with %d logins and %d views taken (facts %v)", len(logins), len(views), types(got))
	}
	if len(watchers) != 1 {
		t.Errorf("ben's subscription to ann not taken: %d watchers", len(watchers))
	}
}

// TestHandoffOfDisabledUserTellsWatchers: ben saw ann online when her
// former home server handed her over, disabled. Her new home server
// leaves out her logins and views, so she is offline there; a handoff
// tells no watcher anything (a move changes nothing for them), and
// nothing else does: ben would see her online for as long as he watches.
func TestHandoffOfDisabledUserTellsWatchers(t *testing.T) {
	from := newWorld(t)
	from.login("ann", "10.0.0.1", annCB)
	from.login("ben", "10.0.0.3", benCB)
	from.watch("ben", "ann")
	from.setState("ann", "10.0.0.1", "online", 600)
	d := from.do(departure{user: user("ann"), to: "home2", seq: 40})
	if d.handoff == nil {
		t.Fatal("no handoff")
	}

	to := newWorld(t)
	to.login("ben", "10.0.0.3", benCB)
	rec := to.dir.users[user("ann")]
	rec.Home, rec.MovedFrom, rec.Move, rec.MovedAt, rec.Enabled = "home2", testHome, 40, to.now, false
	got := to.do(d.handoff)
	wantStrings(t, "watchers told", sent(got), []string{benCB + " offline"})

	// An enabled user's handoff tells nobody: nothing changed for them.
	to2 := newWorld(t)
	to2.login("ben", "10.0.0.3", benCB)
	rec = to2.dir.users[user("ann")]
	rec.Home, rec.MovedFrom, rec.Move, rec.MovedAt = "home2", testHome, 40, to2.now
	if s := sent(to2.do(d.handoff)); len(s) != 0 {
		t.Errorf("an enabled user's handoff told watchers %v", s)
	}
}

// TestDisabledResumedDeliveryEnds: a message to ann was accepted before
// her node stopped, its delivery unfinished; she was disabled meanwhile.
// Resumed at the next start, it is decided again and refused 404 like a
// new request of her node: with no fact, the message accepted stays
// accepted for ever (never delivered, nor recorded as not), as a lapsed
// one would without its MessageDelivered.
func TestDisabledResumedDeliveryEnds(t *testing.T) {
	w := newWorld(t)
	w.login("ann", "10.0.0.1", annCB)
	w.login("ben", "10.0.0.3", benCB)
	m := &events.Notify{Req: w.req("m", "ben", "ann", "10.0.0.3"), AckType: "DeepOr", HopCount: 1,
		Body: []byte(`<r:notification><r:message><r:notification-from><r:contact><d:href>` + nodeURL("ben") + `</d:href></r:contact></r:notification-from></r:message></r:notification>`)}
	w.do(m)
	w.dir.users[user("ann")].Enabled = false
	w.do(disabled(user("ann")))

	d := w.decide(resumed{m})
	var ended *events.MessageDelivered
	for _, f := range d.facts {
		if md, ok := f.(*events.MessageDelivered); ok {
			ended = md
		}
	}
	if ended == nil || ended.Node != user("ann") || ended.Meta.Request != "m" || ended.Status < 400 {
		t.Fatalf("resumed delivery to disabled ann: facts %v (%+v), reply %+v; want the accepted message ended", types(d), ended, d.reply)
	}
	if d.deliver != nil {
		t.Errorf("resumed delivery to disabled ann delivered")
	}
	if d.msgID != "m/resumed" {
		t.Errorf("resumed decision's id %q, want m/resumed (the request's own facts are recorded under m)", d.msgID)
	}
}

// TestDisableHeardAheadBeforeLogin: ann holds no login when her home
// node hears of her disable, its directory behind the stream. endDisabled
// found nothing to end and dropped the disable; a sign-in of hers that a
// gateway as far behind took next was decided with the directory that
// still had her enabled, and nothing ended it once the directory caught
// up: a disabled user signed in until her lease ran out (decideRequest's
// 404 refuses only what is decided after the directory has the disable).
func TestDisableHeardAheadBeforeLogin(t *testing.T) {
	lag := newLaggingDir(t)
	h := newHarnessWith(t, lag.configure, "ann", "cat")
	url := func(a string) string { return "http://im.example.test/instmsg/aliases/" + a }
	login := func(id, alias string) {
		t.Helper()
		u := events.NewUser("example.test", alias)
		now := time.Now().UTC()
		h.send(&events.Subscribe{Req: events.Req{ID: id, At: now, Deadline: now.Add(30 * time.Second), Gateway: "gw", Client: "127.0.0.1",
			Node: u, NodeURL: url(alias), From: url(alias), FromUser: u, Auth: events.Identity{Scheme: "ntlm", User: u}},
			NotificationType: events.NotifyPragma, CallBack: "http://" + h.sink.Addr().String(), Lifetime: 600}, false)
		h.awaitReplies(map[string]string{id: "login"}, false)
	}
	ann, cat := events.NewUser("example.test", "ann"), events.NewUser("example.test", "cat")
	login("cat-login", "cat")

	lag.stop() // the node's directory falls behind
	admin := &directory.Admin{JetStream: h.js, Directory: h.dir, Actor: "test"}
	if err := admin.DisableUser(t.Context(), ann); err != nil {
		t.Fatal(err)
	}
	// cat, disabled after ann and signed in, is waited for: once the node
	// says so, it has heard of ann's disable (they come in order).
	if err := admin.DisableUser(t.Context(), cat); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(h.logs.tail(50), `end once the directory has the disable" home=home1 user=`+cat.String()); {
		if time.Now().After(deadline) {
			t.Fatal("the node did not hear of cat's disable")
		}
		<-time.After(10 * time.Millisecond) // poll interval
	}
	// A gateway as far behind takes ann's sign-in; the node's directory
	// has her enabled still.
	login("ann-login", "ann")
	h.waitLogins(ann, 1, "ann's login applied to the projection")

	lag.follow()
	h.waitLogins(ann, 0, "disabled ann, after the directory caught up")
}

// signIn sends u's login (NTLM, from 127.0.0.1, to callback, for 10 min)
// and waits until the node has taken it.
func (h *harness) signIn(u events.User, callback string) {
	h.t.Helper()
	now := time.Now().UTC()
	url := "http://im.example.test/instmsg/aliases/" + u.Alias // the harness's users are example.test's
	h.send(&events.Subscribe{Req: events.Req{ID: "login-" + u.Alias, At: now, Deadline: now.Add(30 * time.Second), Gateway: "gw", Client: "127.0.0.1",
		Node: u, NodeURL: url, From: url, FromUser: u, Auth: events.Identity{Scheme: "ntlm", User: u}},
		NotificationType: events.NotifyPragma, CallBack: callback, Lifetime: 600}, false)
	h.waitLogins(u, 1, u.String()+"'s login")
}

// waitLogins waits up to 10 s for the node's projection to hold want
// logins of u, and fails the test naming what (the state waited for).
func (h *harness) waitLogins(u events.User, want int, what string) {
	h.t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; {
		logins, err := h.node.Projection().Logins(u)
		if err != nil {
			h.t.Fatal(err)
		}
		if len(logins) == want {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("%s: %d logins of %s 10 s on, want %d", what, len(logins), u, want)
		}
		<-time.After(10 * time.Millisecond) // poll interval
	}
}
