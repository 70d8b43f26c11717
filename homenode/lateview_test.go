package homenode

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
)

// stateNamed PROPPATCHes alias's state from client, naming view id (0:
// none), and returns the decision.
func (w *world) stateNamed(alias, client, state string, id int32) *decision {
	w.t.Helper()
	d := w.do(&events.PropPatch{Req: w.req(fmt.Sprintf("state-%s-%s-%s-%d", alias, client, state, w.now.UnixNano()), alias, alias, client),
		State: &events.StateUpdate{Value: state, Default: events.StateOffline, Timeout: 1200, ViewID: id}})
	wantStatus(w.t, d, 207)
	return d
}

// lateHandoff returns ann's handoff from a former home server (homeA) on
// which her client 10.0.0.1 signed in and set busy at t0, and a world for
// this home server, to which she moved (move 10) while homeA was slow.
func lateHandoff(t *testing.T) (late *events.Handoff, xView int32, to *world) {
	t.Helper()
	from := newWorld(t)
	from.login("ann", "10.0.0.1", annCB)
	xView = from.stateNamed("ann", "10.0.0.1", events.StateBusy, 0).reply.Lease.ViewID
	late = from.do(departure{user: user("ann"), to: "homeC", seq: 10}).handoff
	if late == nil || len(late.Views) != 1 {
		t.Fatalf("the former home server's handoff: %+v, want ann's view in it", late)
	}
	late.From = "homeA"
	to = newWorld(t)
	to.now = t0.Add(time.Minute)
	rec := to.dir.users[user("ann")]
	rec.Home, rec.MovedFrom, rec.Move, rec.MovedAt = testHome, "homeA", 10, to.now
	return late, xView, to
}

// viewOf returns ann's view set from client, or nil.
func (w *world) viewOf(client string) *projections.View {
	w.t.Helper()
	views, err := w.st.Views(user("ann"))
	if err != nil {
		w.t.Fatal(err)
	}
	var found *projections.View
	for i := range views {
		if views[i].Source == client {
			if found != nil {
				w.t.Errorf("two views of ann from %s: %+v", client, views)
			}
			found = &views[i]
		}
	}
	return found
}

// TestLateHandoffViewIDClash: ann is signed in from two clients: from
// 10.0.0.1 on her former home server, where she set busy (view 2 there),
// and, her handoff late, from 10.0.0.2 here, where she set online a
// minute later (view 2 here too: the home servers allocate ids each on
// its own). decideHandoff took the handed view for one it had already
// (same id) and skipped it: the first client's presence lost, and its
// refreshes, naming view 2, updated the second client's view. It is kept
// under an id of this home server's, and the first client, which knows
// it as 2, refreshes and ends it by that id; the second's view 2 is its
// own still. Her presence is the view set last, the second client's
// online: the handed view keeps the time it was set.
func TestLateHandoffViewIDClash(t *testing.T) {
	late, xView, to := lateHandoff(t)
	to.login("ann", "10.0.0.2", annCB2)
	if yView := to.stateNamed("ann", "10.0.0.2", events.StateOnline, 0).reply.Lease.ViewID; yView != xView {
		t.Fatalf("the second client's view is %d, the first's was %d: no clash to test", yView, xView)
	}
	to.now = to.now.Add(time.Minute)
	to.do(late)
	x, y := to.viewOf("10.0.0.1"), to.viewOf("10.0.0.2")
	if x == nil || y == nil {
		t.Fatalf("ann's views after the late handoff: first client's %+v, second's %+v; want both", x, y)
	}
	if y.ID != xView || x.ID == xView || x.Known != xView || x.Value != events.StateBusy {
		t.Fatalf("ann's views after the late handoff: first client's %+v, second's %+v; want the second's %d, the first's busy renumbered and known by %d",
			x, y, xView, xView)
	}
	if p := to.presence("ann"); p.Others != events.StateOnline {
		t.Errorf("ann's presence after the late handoff: %s, want online (the second client's, set after the first's busy)", p.Others)
	}

	// The first client refreshes its view by the id it knows.
	to.now = to.now.Add(time.Minute)
	d := to.stateNamed("ann", "10.0.0.1", events.StateAway, xView)
	if d.reply.Lease.ViewID != xView {
		t.Errorf("the first client's refresh answered with view %d, want the id it named (%d)", d.reply.Lease.ViewID, xView)
	}
	if v := to.viewOf("10.0.0.1"); v == nil || v.ID != x.ID || v.Value != events.StateAway {
		t.Errorf("the first client's refresh of view %d did not update its view (%d): %+v", xView, x.ID, v)
	}
	if v := to.viewOf("10.0.0.2"); v == nil || v.ID != xView || v.Value != events.StateOnline {
		t.Errorf("the first client's refresh of view %d changed the second client's view: %+v", xView, v)
	}
	// and ends it at sign-out; the second client's stays.
	to.stateNamed("ann", "10.0.0.1", events.StateOffline, xView)
	if v := to.viewOf("10.0.0.1"); v != nil {
		t.Errorf("the first client's offline left its view: %+v", v)
	}
	if v := to.viewOf("10.0.0.2"); v == nil {
		t.Errorf("the first client's offline naming view %d ended the second client's view", xView)
	}
	if p := to.presence("ann"); p.Others != events.StateOnline {
		t.Errorf("ann's presence after the first client's sign-out: %s, want online (the second client's)", p.Others)
	}
}

// TestLateHandoffViewKeepsItsTime: as TestLateHandoffViewIDClash, with no
// clash of ids. The handed view (busy, set at t0 on the former home
// server) was recorded as set when the handoff came: it outdid the online
// the second client set here a minute after it, and ann showed busy. Her
// presence is the view set last.
func TestLateHandoffViewKeepsItsTime(t *testing.T) {
	late, xView, to := lateHandoff(t)
	to.login("ann", "10.0.0.2", annCB2)
	to.login("ann", "10.0.0.3", "http://10.0.0.3:4000") // ids here past the handed view's
	if yView := to.stateNamed("ann", "10.0.0.2", events.StateOnline, 0).reply.Lease.ViewID; yView == xView {
		t.Fatalf("the second client's view is %d, as the first's: a clash", yView)
	}
	to.now = to.now.Add(time.Minute)
	to.do(late)
	if x := to.viewOf("10.0.0.1"); x == nil || x.ID != xView || !x.Set.Equal(t0) {
		t.Errorf("the first client's view after the late handoff: %+v, want %d, set at %v", x, xView, t0)
	}
	if p := to.presence("ann"); p.Others != events.StateOnline {
		t.Errorf("ann's presence after the late handoff: %s, want online (set here after the handed busy)", p.Others)
	}
}

// TestLateHandoffViewOfAClientThatSetItsStateHere: ann's client set busy
// on her former home server (view 2 there); her handoff late, its
// requests came here, where it went idle, or chose to appear offline
// (invisible): a new view, as view 2 is not here. The handed view was
// taken too, and outdid the one set since: others saw her busy, until its
// lease ran out. The view its client set here since is its state: the
// handed one is left out, and the watchers it hands over, who were shown
// busy, are told what she is now.
func TestLateHandoffViewOfAClientThatSetItsStateHere(t *testing.T) {
	for _, tc := range []struct{ last, shown string }{
		{events.StateInvisible, events.StateOffline},
		{events.StateIdle, events.StateIdle},
	} {
		t.Run(tc.last, func(t *testing.T) {
			from := newWorld(t)
			from.login("ann", "10.0.0.1", annCB)
			from.login("ben", "10.0.0.3", benCB)
			from.watch("ben", "ann")
			xView := from.stateNamed("ann", "10.0.0.1", events.StateBusy, 0).reply.Lease.ViewID
			late, to := annMovedHere(t, from)
			to.login("ben", "10.0.0.3", benCB)
			to.stateNamed("ann", "10.0.0.1", tc.last, xView)
			to.now = to.now.Add(time.Minute)
			d := to.do(late)
			if p := to.presence("ann"); p.Others != tc.shown {
				t.Errorf("ann's presence to others after the late handoff: %s, want %s (her client's %s, set here since)", p.Others, tc.shown, tc.last)
			}
			if v := to.viewOf("10.0.0.1"); v == nil || v.Value != tc.last {
				t.Errorf("ann's view from her client after the late handoff: %+v, want the %s it set here", v, tc.last)
			}
			wantStrings(t, "NOTIFYs of the late handoff", sent(d), []string{benCB + " " + tc.shown})
		})
	}
}

// TestMoveBackTakesTheACLAndPropertiesHandedOver: ann, on home1, sets
// her mobile description and writes her ACL as librvp does at sign-in; she
// is moved to home2 (handed off: home1 keeps her ACL and properties, which
// a handoff leaves behind), where she blocks cat and changes or clears
// her description; she is moved back. decideHandoff took the handed ACL
// and properties only where home1 had none ("one set here since the move
// is newer"): home1's, from before she left, were kept, and what she had
// changed on home2 was lost: cat saw her again, and her old description
// came back.
func TestMoveBackTakesTheACLAndPropertiesHandedOver(t *testing.T) {
	for _, desc := range []string{"desk 2", ""} {
		t.Run(fmt.Sprintf("description %q", desc), func(t *testing.T) {
			w := newWorld(t)
			creds := []string{events.CredAssertion, events.CredDigest, events.CredNTLM}
			all := events.ACE{Credentials: creds, Grant: []string{events.RightSendTo, events.RightPresence}}
			wantStatus(t, w.do(&events.ACL{Req: w.req("acl-1", "ann", "ann", "10.0.0.1"), Write: true, ACEs: []events.ACE{all}}), 200)
			wantStatus(t, w.do(&events.PropPatch{Req: w.req("desc-1", "ann", "ann", "10.0.0.1"),
				Set: []events.PropValue{{Prop: events.PropMobileDescription, Value: "desk 1"}}}), 207)
			away := w.do(departure{user: user("ann"), to: "home2", seq: 10}).handoff
			if away == nil || len(away.ACL) == 0 {
				t.Fatalf("ann's handoff to home2: %+v, want her ACL in it", away)
			}

			// On home2: cat blocked, the description changed or cleared.
			block := events.ACE{Principal: nodeURL("cat"), User: user("cat"), Credentials: creds,
				Deny: []string{events.RightSendTo, events.RightPresence}}
			now := w.now.Add(time.Hour)
			back := &events.Handoff{Req: events.Req{ID: handoffID("home2", user("ann"), 20), At: now, Deadline: now.Add(time.Minute),
				Gateway: "home:home2", Node: user("ann"), Auth: events.Identity{Scheme: "internal"}, DirPos: 20},
				From: "home2", Move: 20, ACL: mergeACL(away.ACL, []events.ACE{block}, user("ann"))}
			if desc != "" {
				back.Props = []events.PropValue{{Prop: events.PropMobileDescription, Value: desc}}
			}
			w.now = now
			rec := w.dir.users[user("ann")]
			rec.Home, rec.MovedFrom, rec.Move, rec.MovedAt = testHome, "home2", 20, w.now
			w.do(back)

			acl, cat := annACL(t, w), ntlmPrincipal("cat")
			if permitted(acl, cat, events.RightPresence) {
				t.Errorf("cat, blocked by ann on home2, sees her presence after she moved back: ACL %+v", acl)
			}
			if got, _ := w.st.Property(user("ann"), events.PropMobileDescription); got != desc {
				t.Errorf("ann's description after she moved back: %q, want %q (as on home2)", got, desc)
			}
		})
	}
}

// annACL is ann's effective ACL on w's home server.
func annACL(t *testing.T, w *world) []events.ACE {
	t.Helper()
	c := &core{View: w.view(), policy: w.policy}
	acl, err := c.aclOf(user("ann"), nodeURL("ann"))
	if err != nil {
		t.Fatal(err)
	}
	return acl
}

// ntlmPrincipal is local user alias signed in with NTLM.
func ntlmPrincipal(alias string) principal {
	return principal{url: nodeURL(alias), user: user(alias), cred: events.CredNTLM}
}

// annBlockedCatLate: ann, who allows everyone but blocked cat on her
// former home server homeA, moved here (move 10); her handoff late, she
// signed in here and is online. It returns the handoff, her entry for
// all principals, and this home server.
func annBlockedCatLate(t *testing.T) (late *events.Handoff, all events.ACE, to *world) {
	t.Helper()
	creds := []string{events.CredAssertion, events.CredDigest, events.CredNTLM}
	all = events.ACE{Credentials: creds, Grant: []string{events.RightSendTo, events.RightPresence}}
	block := events.ACE{Principal: nodeURL("cat"), User: user("cat"), Credentials: creds,
		Deny: []string{events.RightSendTo, events.RightPresence}}
	from := newWorld(t)
	wantStatus(t, from.do(&events.ACL{Req: from.req("acl-1", "ann", "ann", "10.0.0.1"), Write: true, ACEs: []events.ACE{all, block}}), 200)
	late, to = annMovedHere(t, from)
	to.login("ann", "10.0.0.1", annCB)
	to.stateNamed("ann", "10.0.0.1", events.StateOnline, 0)
	return late, all, to
}

// TestLateHandoffACLWrittenHere: ann blocked cat on her former home
// server; moved here while it was slow, her client signed in here and
// wrote its entries for all principals, as librvp does at every sign-in,
// before her handoff came. decideHandoff kept the ACL written here whole
// and dropped the handed one: cat saw her again (and cat, watching
// her here, was shown her presence). The entries written here are the
// newer; the handed ones they do not name stand, and a watcher the merged
// ACL refuses is told she is offline.
func TestLateHandoffACLWrittenHere(t *testing.T) {
	late, all, to := annBlockedCatLate(t)
	wantStatus(t, to.do(&events.ACL{Req: to.req("acl-2", "ann", "ann", "10.0.0.1"), Write: true, ACEs: []events.ACE{all}}), 200)
	to.login("cat", "10.0.0.4", "http://10.0.0.4:4000")
	to.watch("cat", "ann")
	to.now = to.now.Add(time.Minute)
	d := to.do(late)

	acl, cat := annACL(t, to), ntlmPrincipal("cat")
	if permitted(acl, cat, events.RightPresence) || permitted(acl, cat, events.RightSendTo) {
		t.Errorf("cat, blocked by ann on her former home server, sees her after the late handoff: ACL %+v", acl)
	}
	dan := ntlmPrincipal("dan")
	if !permitted(acl, dan, events.RightPresence) {
		t.Errorf("dan, whom nothing blocks, is refused ann's presence after the late handoff: ACL %+v", acl)
	}
	wantStrings(t, "NOTIFYs of the late handoff", sent(d), []string{"http://10.0.0.4:4000 offline"})
}

// TestLateHandoffTellsWatchersWhatChanged: ann's client 10.0.0.1 set a
// state on her former home server, where ben watched her; her handoff
// late, her client 10.0.0.2 set another here, where cat watches her. Her
// presence once the handoff is taken is the view set last; a handoff is
// quiet (for a timely one nothing changed), and nobody was told: ben
// went on seeing what her former home server showed, or cat what this
// one did, whichever differed. Each is told what changed for it.
func TestLateHandoffTellsWatchersWhatChanged(t *testing.T) {
	for _, tc := range []struct {
		there, here string // the states set on her former home server, then here
		want        []string
	}{
		{events.StateAway, events.StateOnline, []string{benCB + " online"}},
		{events.StateOnline, events.StateIdle, []string{"http://10.0.0.4:4000 online"}},
		{events.StateOnline, events.StateBusy, []string{benCB + " busy"}},
	} {
		t.Run(tc.there+" then "+tc.here, func(t *testing.T) {
			from := newWorld(t)
			from.login("ann", "10.0.0.1", annCB)
			from.login("ben", "10.0.0.3", benCB)
			from.watch("ben", "ann")
			from.stateNamed("ann", "10.0.0.1", tc.there, 0)
			late, to := annMovedHere(t, from)
			to.login("ben", "10.0.0.3", benCB)
			to.login("cat", "10.0.0.4", "http://10.0.0.4:4000")
			to.watch("cat", "ann")
			to.login("ann", "10.0.0.2", annCB2)
			to.stateNamed("ann", "10.0.0.2", tc.here, 0)
			to.now = to.now.Add(time.Minute)
			d := to.do(late)
			wantStrings(t, "NOTIFYs of the late handoff", sent(d), tc.want)
		})
	}
}

// TestHandoffViewExpiredOnTheWay: ann, watched by ben, set busy on her
// former home server with a lease that ran out while her handoff was on
// its way. The expired view is not taken, and nothing else ends it: ben
// went on seeing her busy. He is told she is offline.
func TestHandoffViewExpiredOnTheWay(t *testing.T) {
	from := newWorld(t)
	from.login("ann", "10.0.0.1", annCB)
	from.login("ben", "10.0.0.3", benCB)
	from.watch("ben", "ann")
	from.setState("ann", "10.0.0.1", events.StateBusy, 600)
	late := from.do(departure{user: user("ann"), to: "homeC", seq: 10}).handoff
	late.From = "homeA"

	to := newWorld(t)
	to.now = t0.Add(11 * time.Minute)
	rec := to.dir.users[user("ann")]
	rec.Home, rec.MovedFrom, rec.Move, rec.MovedAt = testHome, "homeA", 10, to.now
	to.login("ben", "10.0.0.3", benCB)
	d := to.do(late)
	if views, _ := to.st.Views(user("ann")); len(views) != 0 {
		t.Errorf("ann's views after the handoff: %+v, want none (expired on the way)", views)
	}
	wantStrings(t, "NOTIFYs of the handoff", sent(d), []string{benCB + " offline"})
}

// TestLateHandoffLoginMadeAgainHere: ann's client signed in on her former
// home server (login 1 there, callback annCB); her handoff late, its
// renewal of 1 came here, was answered 412, and it signed in again with
// the same callback (login 3 here: other requests took 1 and 2). The
// late handoff's login 1 was taken besides it: a message to ann went to
// her client twice, until the old login lapsed. A handed-over
// subscription the same as one here (made again since the move) is not
// taken.
func TestLateHandoffLoginMadeAgainHere(t *testing.T) {
	from := newWorld(t)
	first := from.login("ann", "10.0.0.1", annCB)
	late, to := annMovedHere(t, from)
	to.login("ben", "10.0.0.3", benCB)
	to.login("cat", "10.0.0.4", "http://10.0.0.4:4000")
	wantStatus(t, to.do(&events.Renew{Req: to.req("ann-renews", "ann", "ann", "10.0.0.1"), ID: first, Lifetime: 14400}), 412)
	if again := to.login("ann", "10.0.0.1", annCB); again == first {
		t.Fatalf("ann's login made again here is %d, as on her former home server: no case to test", again)
	}
	to.now = to.now.Add(time.Minute)
	to.do(late)
	if logins, _ := to.st.Logins(user("ann")); len(logins) != 1 {
		t.Errorf("ann's logins after the late handoff: %+v, want the one made again here", logins)
	}
	d := to.do(&events.Notify{Req: to.req("ben-says-hi", "ben", "ann", "10.0.0.3"), Body: []byte("hi")})
	if d.deliver == nil || len(d.deliver.targets) != 1 {
		t.Errorf("ben's message to ann goes to %+v, want her one client once", d.deliver)
	}
}

// TestLateHandoffACLNoneHere: ann blocked cat on her former home server;
// her handoff late, she signed in here from Windows Messenger, which
// never writes an ACL, so this home server had only the default ACL, and
// cat, watching her here, was shown her online. The handed ACL is taken
// whole (none written here to merge with), and cat is denied her
// presence from then on: he is told she is offline, not left seeing her
// online until his subscription ends.
func TestLateHandoffACLNoneHere(t *testing.T) {
	late, _, to := annBlockedCatLate(t)
	to.login("cat", "10.0.0.4", "http://10.0.0.4:4000")
	w := to.do(&events.Subscribe{Req: to.req("watch-cat-ann", "cat", "ann", "10.0.0.4"), NotificationType: events.NotifyPropChange,
		CallBack: nodeURL("cat"), CallBackUser: user("cat"), Lifetime: 14400})
	wantStatus(t, w, 207)
	wantStrings(t, "NOTIFYs of cat's watch here, before the handoff", sent(w), []string{"http://10.0.0.4:4000 online"})
	to.now = to.now.Add(time.Minute)
	d := to.do(late)

	acl, cat := annACL(t, to), ntlmPrincipal("cat")
	if permitted(acl, cat, events.RightPresence) {
		t.Errorf("cat, blocked by ann on her former home server, sees her after the late handoff: ACL %+v", acl)
	}
	wantStrings(t, "NOTIFYs of the late handoff", sent(d), []string{"http://10.0.0.4:4000 offline"})
}

// TestLateHandoffWatchOfAnotherClientOfTheWatcher: ben watches ann from
// two clients, each with a subscription of its own under the same
// logical Call-Back (his node URL, as librvp subscribes): 10.0.0.3's made
// on her former home server, 10.0.0.5's here after the move while her
// handoff was late. They are two subscriptions, not one made again: each
// client renews its own.
func TestLateHandoffWatchOfAnotherClientOfTheWatcher(t *testing.T) {
	watch := func(w *world, client string) int32 {
		d := w.do(&events.Subscribe{Req: w.req("watch-ben-ann-"+client, "ben", "ann", client), NotificationType: events.NotifyPropChange,
			CallBack: nodeURL("ben"), CallBackUser: user("ben"), Lifetime: 14400})
		wantStatus(t, d, 207)
		return d.reply.SubscriptionID
	}
	from := newWorld(t)
	from.login("ben", "10.0.0.3", benCB)
	there := watch(from, "10.0.0.3")
	late, to := annMovedHere(t, from)
	to.login("cat", "10.0.0.4", "http://10.0.0.4:4000")
	to.login("ben", "10.0.0.3", benCB)
	to.login("ben", "10.0.0.5", "http://10.0.0.5:5000")
	here := watch(to, "10.0.0.5")
	if here == there {
		t.Fatalf("ben's watch here has id %d, as his other client's there: no case to test", here)
	}
	to.now = to.now.Add(time.Minute)
	to.do(late)
	// His client here signs out (Net::RVP's logout unsubscribes each
	// watch): his other client's watch stays.
	wantStatus(t, to.do(&events.Unsubscribe{Req: to.req("ben-unwatches-here", "ben", "ann", "10.0.0.5"), ID: here}), 200)
	d := to.do(&events.Renew{Req: to.req("ben-renews-there", "ben", "ann", "10.0.0.3"), ID: there, Lifetime: 14400})
	if d.reply.Status != 200 {
		t.Errorf("ben's client 10.0.0.3 renewing its watch of ann (%d) after the late handoff: %d %s, want 200", there, d.reply.Status, d.reply.Error)
	}
}

// TestLateHandoffTellsWatchersHereOfHerPresence: ann set a state on her
// former home server homeA and moved here while it was slow; ben and cat
// subscribed to her here before her handoff came, while she showed no
// state here, and were shown her offline. The late handoff brought her
// views, and nobody here was told: the handoff is quiet, and the
// watchers here were told of it only when views had been set here
// since the move. ben sees her state from then on, as her ACL and an
// invisible state show it; cat, whom she blocked there, is told nothing
// of it.
func TestLateHandoffTellsWatchersHereOfHerPresence(t *testing.T) {
	for _, tc := range []struct {
		state string
		want  []string
	}{
		{events.StateOnline, []string{benCB + " online"}},
		{events.StateBusy, []string{benCB + " busy"}},
		{events.StateInvisible, nil},
	} {
		t.Run(tc.state, func(t *testing.T) {
			creds := []string{events.CredAssertion, events.CredDigest, events.CredNTLM}
			block := events.ACE{Principal: nodeURL("cat"), User: user("cat"), Credentials: creds,
				Deny: []string{events.RightSendTo, events.RightPresence}}
			from := newWorld(t)
			from.login("ann", "10.0.0.1", annCB)
			wantStatus(t, from.do(&events.ACL{Req: from.req("acl-1", "ann", "ann", "10.0.0.1"), Write: true,
				ACEs: append(events.DefaultACL(user("ann"), ""), block)}), 200)
			from.stateNamed("ann", "10.0.0.1", tc.state, 0)
			late, to := annMovedHere(t, from)
			to.login("ben", "10.0.0.3", benCB)
			to.login("cat", "10.0.0.4", "http://10.0.0.4:4000")
			to.watch("ben", "ann")
			to.watch("cat", "ann")
			to.now = to.now.Add(time.Minute)
			d := to.do(late)
			for _, s := range sent(d) {
				if strings.HasPrefix(s, "http://10.0.0.4:4000 ") && s != "http://10.0.0.4:4000 offline" {
					t.Errorf("cat, blocked by ann, is told %q", s)
				}
			}
			var ben []string
			for _, s := range sent(d) {
				if strings.HasPrefix(s, benCB+" ") {
					ben = append(ben, s)
				}
			}
			wantStrings(t, "NOTIFYs to ben of the late handoff", ben, tc.want)
		})
	}
}

// TestHandoffInPartsTellsItsWatchersWhatChanged: ann, online on her
// former home server homeA, is watched there by ben and some 300 others:
// her handoff goes in parts, the subscriptions in those before the last.
// Taken on time, nobody is told anything (for them nothing changed).
// Late, after she set busy here from another client, her presence is
// that busy (set last): ben, whose watch an earlier part brought, saw
// her online there, and is told. The watchers of earlier parts were
// taken for watchers made here, shown busy already, and told nothing.
func TestHandoffInPartsTellsItsWatchersWhatChanged(t *testing.T) {
	for _, tc := range []struct {
		name string
		late bool
		want []string
	}{
		{"on time", false, nil},
		{"late", true, []string{benCB + " busy"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			from := newWorld(t)
			from.login("ann", "10.0.0.1", annCB)
			from.login("ben", "10.0.0.3", benCB)
			from.watch("ben", "ann")
			addWatchers(from, "ann", 300)
			from.stateNamed("ann", "10.0.0.1", events.StateOnline, 0)
			h := from.do(departure{user: user("ann"), to: "homeC", seq: 10}).handoff
			h.From = "homeA"
			parts, err := handoffParts(h, 16<<10)
			if err != nil {
				t.Fatal(err)
			}
			if len(parts) < 3 {
				t.Fatalf("%d parts, want some: no case to test", len(parts))
			}

			to := newWorld(t)
			to.now = t0.Add(time.Minute)
			rec := to.dir.users[user("ann")]
			rec.Home, rec.MovedFrom, rec.Move, rec.MovedAt = testHome, "homeA", 10, to.now
			to.login("ben", "10.0.0.3", benCB)
			if tc.late {
				to.login("ann", "10.0.0.2", annCB2)
				to.stateNamed("ann", "10.0.0.2", events.StateBusy, 0)
			}
			to.now = to.now.Add(time.Minute)
			var got []string
			for _, p := range parts {
				got = append(got, sent(to.do(handoffOf(t, p)))...)
			}
			wantStrings(t, "NOTIFYs of the handoff's parts", got, tc.want)
		})
	}
}

// TestLateHandoffSubscriptionUnsubscribedHere: ben watched ann from her
// former home server homeA; she moved here while it was slow, and his
// client, signing out, UNSUBSCRIBEd his watch here, where it was not yet
// (answered 200: an unknown id is gone). The late handoff brought it
// back with its old lifetime: ann's presence went to a client that had
// asked to stop, until it lapsed. An UNSUBSCRIBE here of an id not here,
// while her state is awaited, is recorded; the handoff does not take a
// subscription its requester could end and its client knows by that id.
// dan's UNSUBSCRIBE of the same id (not his) ends nothing of ben's.
func TestLateHandoffSubscriptionUnsubscribedHere(t *testing.T) {
	for _, tc := range []struct {
		by       string
		wantBens int
	}{
		{"ben", 0},
		{"dan", 1},
	} {
		t.Run(tc.by, func(t *testing.T) {
			from := newWorld(t)
			from.login("ann", "10.0.0.1", annCB)
			from.login("ben", "10.0.0.3", benCB)
			there := from.watch("ben", "ann")
			from.stateNamed("ann", "10.0.0.1", events.StateOnline, 0)
			late, to := annMovedHere(t, from)
			to.login("ben", "10.0.0.3", benCB)
			wantStatus(t, to.do(&events.Unsubscribe{Req: to.req("unwatch-"+tc.by, tc.by, "ann", "10.0.0.3"), ID: there}), 200)
			to.now = to.now.Add(time.Minute)
			d := to.do(late)
			bens := watchesOf(t, to, "ben", "ann")
			if bens != tc.wantBens {
				t.Errorf("ben's watches of ann after the late handoff: %d, want %d", bens, tc.wantBens)
			}
			if tc.wantBens == 0 && len(sent(d)) != 0 {
				t.Errorf("NOTIFYs of the late handoff: %q, want none (ben asked to stop)", sent(d))
			}
		})
	}
}

// TestLateHandoffUnsubscribesRecordedBounded: while ann's handoff is
// awaited, an UNSUBSCRIBE here of an id not here is recorded (the handoff
// does not take that subscription), and each record stays. Any signed-in
// user (dan) may UNSUBSCRIBE ids of his choosing on her node: without a
// bound each one added keys to her state for good. At most
// MaxWatchers+MaxLogins are recorded per user and move, as many as a
// handoff brings; the same requester's UNSUBSCRIBE of an id again is not
// counted again; beyond the bound it is answered 200 as before.
func TestLateHandoffUnsubscribesRecordedBounded(t *testing.T) {
	to := newWorld(t)
	to.policy.MaxWatchers, to.policy.MaxLogins = 2, 1
	rec := to.dir.users[user("ann")]
	rec.Home, rec.MovedFrom, rec.Move, rec.MovedAt = testHome, "homeA", 10, to.now
	dan := projections.EndedBy(user("dan"), "")
	for i, id := range []int32{500, 500, 500, 501, 502, 503, 504} {
		wantStatus(t, to.do(&events.Unsubscribe{Req: to.req(fmt.Sprintf("unwatch-%d", i), "dan", "ann", "10.0.0.4"), ID: id}), 200)
	}
	for _, tc := range []struct {
		id   int32
		want bool
	}{{500, true}, {501, true}, {502, true}, {503, false}, {504, false}} {
		if got, err := to.st.Ended(user("ann"), 10, tc.id, dan); err != nil {
			t.Fatal(err)
		} else if got != tc.want {
			t.Errorf("dan's UNSUBSCRIBE of %d recorded: %v, want %v (at most %d per user and move)", tc.id, got, tc.want, 3)
		}
	}
	if n, err := to.st.EndedCount(user("ann"), 10); err != nil || n != 3 {
		t.Errorf("ends recorded for ann under move 10: %d (%v), want 3", n, err)
	}
}

// TestLateHandoffLoginEndedHere: ann signed in from 10.0.0.1 on her
// former home server homeA and set busy there; she moved here while homeA
// was slow, and her client, signing out, UNSUBSCRIBEd its login here,
// where it was not yet (recorded: the handoff does not take the login).
// The late handoff still took the view her client had set on homeA:
// she showed busy with no login until its lease ran out, and ben,
// watching her here, was told she was busy after she had signed out. As
// with the end of a last login here (endViewsWithLastLogin), a handoff
// that leaves her no login, one it brings ended here, takes none of her
// views, and ends those here.
func TestLateHandoffLoginEndedHere(t *testing.T) {
	for _, tc := range []struct {
		name      string
		viewHere  bool     // her client refreshed its state here meanwhile
		loginHere bool     // another client of hers signed in here meanwhile
		want      []string // NOTIFYs of the handoff
	}{
		{"handed view", false, false, nil},
		{"view here too", true, false, []string{benCB + " offline"}},
		// Still signed in: her presence stays, the handed view with it.
		{"another client signed in here", false, true, []string{benCB + " busy"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			late, _, to := lateHandoff(t)
			var login int32
			for _, s := range late.Subs {
				if s.Kind == events.NotifyPragma {
					login = s.ID
				}
			}
			if login == 0 {
				t.Fatalf("ann's login not in the handoff: %+v", late.Subs)
			}
			to.login("ben", "10.0.0.3", benCB)
			to.watch("ben", "ann")
			if tc.loginHere {
				to.login("ann", "10.0.0.2", "http://10.0.0.2:4000")
			}
			if tc.viewHere {
				// Its view not here yet: one here from the same client.
				to.stateNamed("ann", "10.0.0.1", events.StateBusy, 0)
			}
			wantStatus(t, to.do(&events.Unsubscribe{Req: to.req("logout", "ann", "ann", "10.0.0.1"), ID: login}), 200)
			to.now = to.now.Add(time.Minute)
			d := to.do(late)
			wantLeft := 0
			if tc.loginHere {
				wantLeft = 1
			}
			if logins, err := to.st.Logins(user("ann")); err != nil || len(logins) != wantLeft {
				t.Errorf("ann's logins after the late handoff: %+v (%v), want %d (the one she signed out of ended)", logins, err, wantLeft)
			}
			if views, err := to.st.Views(user("ann")); err != nil || len(views) != wantLeft {
				t.Errorf("ann's views after the late handoff: %+v (%v), want %d", views, err, wantLeft)
			}
			wantStrings(t, "NOTIFYs of the late handoff", sent(d), tc.want)
		})
	}
}

// TestLateHandoffInPartsLoginEndedHere: as TestLateHandoffLoginEndedHere,
// but ann is watched by more than a handoff message holds, and her state
// goes in parts. Her login came in a part before the last, and the last,
// which brings her views, did not see it ended here: it took the busy
// view her client had set on homeA, and she showed busy with no login
// until its lease ran out. Her logins now come with her views.
func TestLateHandoffInPartsLoginEndedHere(t *testing.T) {
	from := newWorld(t)
	login := from.login("ann", "10.0.0.1", annCB)
	from.stateNamed("ann", "10.0.0.1", events.StateBusy, 0)
	addWatchers(from, "ann", 300)
	late, to := annMovedHere(t, from)
	parts, err := handoffParts(late, 16<<10)
	if err != nil {
		t.Fatal(err)
	}
	if len(parts) < 3 {
		t.Fatalf("%d parts, want some: no case to test", len(parts))
	}
	to.login("ben", "10.0.0.3", benCB)
	to.watch("ben", "ann")
	wantStatus(t, to.do(&events.Unsubscribe{Req: to.req("logout", "ann", "ann", "10.0.0.1"), ID: login}), 200)
	to.now = to.now.Add(time.Minute)
	var got []string
	for _, p := range parts {
		got = append(got, sent(to.do(handoffOf(t, p)))...)
	}
	if logins, err := to.st.Logins(user("ann")); err != nil || len(logins) != 0 {
		t.Errorf("ann's logins after the late handoff: %+v (%v), want none (she signed out here)", logins, err)
	}
	if views, err := to.st.Views(user("ann")); err != nil || len(views) != 0 {
		t.Errorf("ann's views after the late handoff: %+v (%v), want none: signed out, she shows offline", views, err)
	}
	if n, err := to.st.CountWatchers(user("ann"), nil); err != nil || n != 301 {
		t.Errorf("ann's watchers after the late handoff: %d (%v), want the 300 handed over and ben's", n, err)
	}
	wantStrings(t, "NOTIFYs of the late handoff's parts", got, nil)
}

// addWatchers gives node n watchers in world w, watcher0..watcher<n-1>,
// their subscriptions ids 1000 on.
func addWatchers(w *world, node string, n int) {
	for i := range n {
		w.given(&events.SubscriptionCreated{Meta: events.Meta{At: w.now}, Node: user(node), ID: int32(1000 + i), Kind: events.NotifyPropChange,
			CallBack: nodeURL(fmt.Sprintf("watcher%d", i)), Watcher: user(fmt.Sprintf("watcher%d", i)), NodeURL: nodeURL(node),
			Lifetime: 14400, Expires: w.now.Add(4 * time.Hour)})
	}
}

// TestLateHandoffRenewalRefusedThenSubscribedAgain: ben watched ann from
// her former home server homeA; she moved here while it was slow, and his
// client's renewal of his watch, not here yet, was answered 412 (gone:
// subscribe again). librvp subscribes again; the late handoff then does
// not take the old one too (the same watch, made again here: place), so
// ben's client is not told each change twice.
func TestLateHandoffRenewalRefusedThenSubscribedAgain(t *testing.T) {
	from := newWorld(t)
	from.login("ann", "10.0.0.1", annCB)
	there := from.watch("ben", "ann")
	from.stateNamed("ann", "10.0.0.1", events.StateOnline, 0)
	late, to := annMovedHere(t, from)
	wantStatus(t, to.do(&events.Renew{Req: to.req("renew-ben", "ben", "ann", "10.0.0.1"), ID: there, Lifetime: 14400}), 412)
	to.watch("ben", "ann")
	to.now = to.now.Add(time.Minute)
	to.do(late)
	bens := watchesOf(t, to, "ben", "ann")
	if bens != 1 {
		t.Errorf("ben's watches of ann after the late handoff: %d, want 1", bens)
	}
}

// TestLateHandoffUnsubscribeOfAnIDTakenHere: ben watched ann from her
// former home server homeA (his watch there: id 3); she moved here while
// homeA was slow, and signed in here, her login given id 3 here (the home
// servers allocate ids each on its own). ben's client, signing out,
// UNSUBSCRIBEd its watch 3: the id here named ann's login, not his, and
// he was refused 403 with nothing recorded; the late handoff then took
// his watch (renumbered, known as 3), and ann's presence went to a client
// that had asked to stop until it lapsed. While her state is awaited, an
// id here that is not the requester's may name one the handoff brings:
// the end is recorded as for an id not here, and answered 200.
func TestLateHandoffUnsubscribeOfAnIDTakenHere(t *testing.T) {
	from := newWorld(t)
	from.login("ann", "10.0.0.1", annCB)
	from.login("ben", "10.0.0.3", benCB)
	there := from.watch("ben", "ann")
	from.stateNamed("ann", "10.0.0.1", events.StateOnline, 0)
	late, to := annMovedHere(t, from)
	to.login("ben", "10.0.0.3", benCB)
	to.login("cat", "10.0.0.5", "http://10.0.0.5:4000")
	if id := to.login("ann", "10.0.0.2", "http://10.0.0.2:4000"); id != there {
		t.Fatalf("ann's login here: id %d, want %d (ben's watch's id on homeA)", id, there)
	}
	d := to.do(&events.Unsubscribe{Req: to.req("unwatch-ben", "ben", "ann", "10.0.0.3"), ID: there})
	wantStatus(t, d, 200)
	to.now = to.now.Add(time.Minute)
	to.do(late)
	watchers, err := to.st.Watchers(user("ann"))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range watchers {
		if s.Watcher == user("ben") {
			t.Errorf("ben's watch of ann back after the late handoff: %+v", s)
		}
	}
	if logins, err := to.st.Logins(user("ann")); err != nil || len(logins) != 2 {
		t.Errorf("ann's logins: %+v (%v), want hers here and the one handed over", logins, err)
	}
}

// annMovedHere returns ann's handoff from world from, sent as homeA's of
// her move 10, and a world at testHome a minute later whose directory
// has her here under that move: her requests are decided here, the
// handoff not taken yet (late once it is).
func annMovedHere(t *testing.T, from *world) (*events.Handoff, *world) {
	t.Helper()
	late := from.do(departure{user: user("ann"), to: "homeC", seq: 10}).handoff
	late.From = "homeA"
	to := newWorld(t)
	to.now = t0.Add(time.Minute)
	rec := to.dir.users[user("ann")]
	rec.Home, rec.MovedFrom, rec.Move, rec.MovedAt = testHome, "homeA", 10, to.now
	return late, to
}

// watchesOf counts the subscriptions to node's presence that watcher
// holds in world w.
func watchesOf(t *testing.T, w *world, watcher, node string) int {
	t.Helper()
	watchers, err := w.st.Watchers(user(node))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, s := range watchers {
		if s.Watcher == user(watcher) {
			n++
		}
	}
	return n
}
