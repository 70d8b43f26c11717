package homenode

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
	"github.com/rvp-im/rvpd/rvp"
)

// Table tests of the protocol rules, decided against a map-backed view.

const (
	annCB  = "http://10.0.0.1:4000"
	annCB2 = "http://10.0.0.2:4000"
	benCB  = "http://10.0.0.3:4000"
	catCB  = "http://10.0.0.4:4000"
)

func TestEffectiveState(t *testing.T) {
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	v := func(id int32, value string, set int) projections.View {
		return projections.View{ID: id, Value: value, Set: at(set)}
	}
	for _, tc := range []struct {
		name         string
		views        []projections.View
		self, others string
	}{
		{"no view is offline", nil, "offline", "offline"},
		{"one view", []projections.View{v(1, "busy", 0)}, "busy", "busy"},
		{"most recent wins", []projections.View{v(1, "busy", 5), v(2, "away", 3)}, "busy", "busy"},
		{"same time: higher id", []projections.View{v(1, "busy", 3), v(2, "away", 3)}, "away", "away"},
		{"active beats idle", []projections.View{v(1, "idle", 9), v(2, "on-phone", 1)}, "on-phone", "on-phone"},
		{"idle beats invisible", []projections.View{v(1, "invisible", 9), v(2, "idle", 1)}, "idle", "idle"},
		{"invisible: others see offline", []projections.View{v(1, "invisible", 0)}, "invisible", "offline"},
		{"offline views count for nothing", []projections.View{v(1, "offline", 9), v(2, "online", 1)}, "online", "online"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := effective(tc.views)
			if p.Self != tc.self || p.Others != tc.others {
				t.Errorf("effective = %+v, want self %s others %s", p, tc.self, tc.others)
			}
		})
	}
}

func TestViews(t *testing.T) {
	t.Run("a state sets a view with a clamped lease", func(t *testing.T) {
		w := newWorld(t)
		for _, tc := range []struct{ asked, granted int }{{0, 1200}, {5, 30}, {600, 600}, {99999, 14400}} {
			d := w.setState("ann", "10.0.0.1", "busy", tc.asked)
			wantStatus(t, d, 207)
			if d.reply.Lease == nil || d.reply.Lease.Timeout != tc.granted {
				t.Errorf("lease %d asked: %+v, want %d s", tc.asked, d.reply.Lease, tc.granted)
			}
			vs := d.facts[len(d.facts)-1].(*events.ViewSet)
			if !vs.Expires.Equal(w.now.Add(time.Duration(tc.granted) * time.Second)) {
				t.Errorf("expires %v", vs.Expires)
			}
		}
	})
	t.Run("a client without view ids reuses the view of its address", func(t *testing.T) {
		w := newWorld(t)
		first := w.setState("ann", "10.0.0.1", "busy", 600).reply.Lease.ViewID
		second := w.setState("ann", "10.0.0.1", "away", 600).reply.Lease.ViewID
		other := w.setState("ann", "10.0.0.2", "online", 600).reply.Lease.ViewID
		if first != second || other == first {
			t.Errorf("view ids %d, %d (same address), %d (another): want the first two equal", first, second, other)
		}
		if vs, _ := w.st.Views(user("ann")); len(vs) != 2 {
			t.Errorf("%d views, want 2", len(vs))
		}
	})
	t.Run("a named view is updated", func(t *testing.T) {
		w := newWorld(t)
		id := w.setState("ann", "10.0.0.1", "busy", 600).reply.Lease.ViewID
		d := w.do(&events.PropPatch{Req: w.req("p2", "ann", "ann", "10.0.0.9"), State: &events.StateUpdate{Value: "away", Default: "offline", Timeout: 600, ViewID: id}})
		if got := d.reply.Lease.ViewID; got != id {
			t.Errorf("view %d, want %d", got, id)
		}
	})
	t.Run("the default value ends the view", func(t *testing.T) {
		w := newWorld(t)
		w.setState("ann", "10.0.0.1", "busy", 600)
		d := w.setState("ann", "10.0.0.1", "offline", 600)
		wantStrings(t, "facts", types(d), []string{events.TypeViewEnded})
		if p := w.presence("ann"); p.Self != "offline" {
			t.Errorf("presence %+v", p)
		}
	})
	t.Run("only the owner sets its state", func(t *testing.T) {
		w := newWorld(t)
		d := w.do(&events.PropPatch{Req: w.req("p", "ben", "ann", "10.0.0.3"), State: &events.StateUpdate{Value: "busy"}})
		wantStatus(t, d, 403)
		if len(d.facts) != 0 {
			t.Errorf("facts %v", types(d))
		}
	})
	t.Run("mobile properties are the owner's, the others the directory's", func(t *testing.T) {
		w := newWorld(t)
		d := w.do(&events.PropPatch{Req: w.req("p", "ann", "ann", "10.0.0.1"), Set: []events.PropValue{
			{Prop: events.PropMobileState, Value: "1"}, {Prop: events.PropDisplayName, Value: "Evil"}}})
		wantStatus(t, d, 207)
		wantStrings(t, "facts", types(d), []string{events.TypePropertySet})
		if len(d.reply.Forbidden) != 1 || d.reply.Forbidden[0] != events.PropDisplayName {
			t.Errorf("forbidden %v", d.reply.Forbidden)
		}
		if v, _ := w.st.Property(user("ann"), events.PropMobileState); v != "1" {
			t.Errorf("mobile-state %q", v)
		}
	})
	t.Run("a property named many times is set once, to its last value", func(t *testing.T) {
		// A PROPPATCH of 1,300 mobile-states (44 KB) kept 1,300 facts
		// (750 KB): the writer's bytes a day charge the body.
		w := newWorld(t)
		var set []events.PropValue
		for i := range 2000 {
			set = append(set, events.PropValue{Prop: events.PropMobileState, Value: strconv.Itoa(i % 2)},
				events.PropValue{Prop: events.PropMobileDescription, Value: "d" + strconv.Itoa(i)})
		}
		d := w.do(&events.PropPatch{Req: w.req("p", "ann", "ann", "10.0.0.1"), Set: set})
		wantStatus(t, d, 207)
		if n := len(d.facts); n != 2 {
			t.Errorf("%d facts, want one for each property", n)
		}
		if n := len(d.reply.Found); n != 2 {
			t.Errorf("%d properties found, want each once", n)
		}
		if v, _ := w.st.Property(user("ann"), events.PropMobileState); v != "1" {
			t.Errorf("mobile-state %q, want the last given, 1", v)
		}
		if v, _ := w.st.Property(user("ann"), events.PropMobileDescription); v != "d1999" {
			t.Errorf("mobile-description %q, want the last given, d1999", v)
		}
	})
}

func TestLeasesExpire(t *testing.T) {
	w := newWorld(t)
	id := w.setState("ann", "10.0.0.1", "busy", 60).reply.Lease.ViewID
	due := expiry{At: w.now.Add(time.Minute), User: user("ann"), Kind: "v", ID: id}
	if d := w.decide(due); len(d.facts) != 0 {
		t.Errorf("before its time: %v", types(d))
	}
	// Renewed meanwhile: the old expiry is stale.
	w.now = w.now.Add(59 * time.Second)
	w.setState("ann", "10.0.0.1", "busy", 60)
	w.now = w.now.Add(2 * time.Second)
	if d := w.decide(due); len(d.facts) != 0 {
		t.Errorf("renewed lease expired: %v", types(d))
	}
	w.now = w.now.Add(time.Minute)
	d := w.do(due)
	wantStrings(t, "facts", types(d), []string{events.TypeViewEnded})
	if r := d.facts[0].(*events.ViewEnded).Reason; r != events.EndExpired {
		t.Errorf("reason %q", r)
	}
}

func TestInvisible(t *testing.T) {
	w := newWorld(t)
	w.login("ann", "10.0.0.1", annCB)
	w.login("ben", "10.0.0.3", benCB)
	w.watch("ben", "ann")
	self := w.watch("ann", "ann") // librvp watches itself
	_ = self
	d := w.setState("ann", "10.0.0.1", "invisible", 600)
	// Ben was told nothing (offline → offline); ann's own clients see invisible.
	wantStrings(t, "notified", sent(d), []string{annCB + " invisible"})
	t.Run("others read offline", func(t *testing.T) {
		d := w.decide(&events.PropFind{Req: w.req("pf", "ben", "ann", "10.0.0.3"), Props: []events.Prop{events.PropState}})
		if d.reply.Found[0].Value != "offline" {
			t.Errorf("ben reads %q", d.reply.Found[0].Value)
		}
		d = w.decide(&events.PropFind{Req: w.req("pf", "ann", "ann", "10.0.0.1"), Props: []events.Prop{events.PropState}})
		if d.reply.Found[0].Value != "invisible" {
			t.Errorf("ann reads %q", d.reply.Found[0].Value)
		}
	})
	t.Run("a message to an invisible user is refused as to an offline one", func(t *testing.T) {
		d := w.decide(&events.Notify{Req: w.req("m", "ben", "ann", "10.0.0.3"), AckType: "DeepOr", HopCount: 1, Body: []byte("<x/>")})
		wantStatus(t, d, 412)
		wantStrings(t, "facts", types(d), []string{events.TypeMessageAccepted, events.TypeMessageDelivered})
		if d.deliver != nil {
			t.Error("delivered")
		}
	})
	t.Run("going visible tells the watchers", func(t *testing.T) {
		d := w.setState("ann", "10.0.0.1", "online", 600)
		wantStrings(t, "notified", sent(d), []string{annCB + " online", benCB + " online"})
	})
}

func TestACLEvaluation(t *testing.T) {
	ann := principal{url: nodeURL("ann"), user: user("ann"), cred: events.CredNTLM}
	ben := principal{url: nodeURL("ben"), user: user("ben"), cred: events.CredNTLM}
	stranger := principal{url: "http://im.acme.test/instmsg/aliases/eve", cred: events.CredAssertion}
	deny := func(who events.User, rights ...string) events.ACE {
		return events.ACE{Principal: nodeURL(who.Alias), User: who, Credentials: []string{events.CredAny}, Deny: rights}
	}
	grantAll := func(creds []string, rights ...string) events.ACE {
		return events.ACE{Credentials: creds, Grant: rights}
	}
	any := []string{events.CredAny}
	for _, tc := range []struct {
		name  string
		acl   []events.ACE
		p     principal
		right string
		want  bool
	}{
		{"default: everyone sees presence", events.DefaultACL(user("cat"), nodeURL("cat")), ben, events.RightPresence, true},
		{"default: others may not write the ACL", events.DefaultACL(user("cat"), nodeURL("cat")), ben, events.RightWriteACL, false},
		{"default: assertion credentials may send", events.DefaultACL(user("cat"), nodeURL("cat")), stranger, events.RightSendTo, true},
		{"the owner may anything", []events.ACE{deny(user("ann"), events.RightAll)}, principal{url: ann.url, user: ann.user, owner: true}, events.RightWriteACL, true},
		{"a named deny beats all-principals' grant", []events.ACE{grantAll(any, events.RightPresence), deny(user("ben"), events.RightPresence)}, ben, events.RightPresence, false},
		{"the deny names ben only", []events.ACE{grantAll(any, events.RightPresence), deny(user("ben"), events.RightPresence)}, ann, events.RightPresence, true},
		{"a named grant beats all-principals' deny", []events.ACE{{Credentials: any, Deny: []string{events.RightSendTo}},
			{Principal: nodeURL("ben"), User: user("ben"), Credentials: any, Grant: []string{events.RightSendTo}}}, ben, events.RightSendTo, true},
		{"deny beats grant at the same level", []events.ACE{grantAll(any, events.RightRead), {Credentials: any, Deny: []string{events.RightRead}}}, ben, events.RightRead, false},
		{"the credential must match", []events.ACE{grantAll([]string{events.CredDigest}, events.RightPresence)}, ben, events.RightPresence, false},
		{"no match denies", nil, ben, events.RightPresence, false},
		{"all grants every right", []events.ACE{grantAll(any, events.RightAll)}, stranger, events.RightSubscribeOthers, true},
		{"a user matches whatever host its URL names", []events.ACE{{Principal: "http://10.1.1.1/instmsg/aliases/ben", User: user("ben"), Credentials: any, Deny: []string{events.RightRead}},
			grantAll(any, events.RightRead)}, ben, events.RightRead, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := permitted(tc.acl, tc.p, tc.right); got != tc.want {
				t.Errorf("permitted(%s) = %v, want %v", tc.right, got, tc.want)
			}
		})
	}

	t.Run("a watcher denied presence is answered, sees offline, is pushed nothing", func(t *testing.T) {
		w := newWorld(t)
		w.login("ben", "10.0.0.3", benCB)
		w.setState("ann", "10.0.0.1", "online", 600)
		w.do(&events.ACL{Req: w.req("acl", "ann", "ann", "10.0.0.1"), Write: true, ACEs: []events.ACE{
			grantAll(any, events.RightPresence, events.RightRead), deny(user("ben"), events.RightPresence)}})
		d := w.do(&events.Subscribe{Req: w.req("w", "ben", "ann", "10.0.0.3"), NotificationType: events.NotifyPropChange,
			CallBack: nodeURL("ben"), CallBackUser: user("ben")})
		wantStatus(t, d, 207)
		if d.reply.Found[0].Prop != events.PropState || d.reply.Found[0].Value != "offline" {
			t.Errorf("answered %+v", d.reply.Found)
		}
		if len(d.notes) != 0 {
			t.Errorf("pushed %v", sent(d))
		}
		// Removing ben's entry (no grant, no deny) gives it back: ben is
		// told the state.
		d = w.do(&events.ACL{Req: w.req("acl2", "ann", "ann", "10.0.0.1"), Write: true, ACEs: []events.ACE{
			{Principal: nodeURL("ben"), User: user("ben"), Credentials: any}}})
		wantStrings(t, "notified", sent(d), []string{benCB + " online"})
	})
	t.Run("a write that changes the ACL says how much its fact keeps", func(t *testing.T) {
		// The gateway charged the body; the acl.set fact holds the whole
		// ACL, which it charges to the writer's bytes a day (Reply.Kept).
		w := newWorld(t)
		write := func(id string, aces ...events.ACE) *decision {
			return w.do(&events.ACL{Req: w.req(id, "ann", "ann", "10.0.0.1"), Write: true, ACEs: aces})
		}
		d := write("acl", grantAll(any, events.RightPresence), deny(user("ben"), events.RightPresence))
		wantStrings(t, "facts", types(d), []string{events.TypeACLSet})
		acl, _ := json.Marshal(d.reply.ACL)
		if d.reply.Kept != len(acl) || d.reply.Kept == 0 {
			t.Errorf("kept %d, want the ACL's %d bytes", d.reply.Kept, len(acl))
		}
		// Written again unchanged (librvp at each sign-in): no fact, nothing kept.
		if d := write("acl2", d.reply.ACL[len(d.reply.ACL)-1]); len(d.facts) != 0 || d.reply.Kept != 0 {
			t.Errorf("an unchanged write: facts %v, kept %d", types(d), d.reply.Kept)
		}
		// An answer cut to be recorded keeps it.
		big := &decision{reply: &events.Reply{ID: "r", Status: 200, HasACL: true, Kept: 99, ACL: []events.ACE{{Principal: strings.Repeat("p", maxRecordedAnswer)}}}}
		data, err := big.recordedReply()
		if err != nil {
			t.Fatal(err)
		}
		if e, err := events.Decode(events.TypeReply, data); err != nil || e.(*events.Reply).Kept != 99 || e.(*events.Reply).ACL != nil {
			t.Errorf("recorded answer %s (%v), want it cut, with kept 99", data, err)
		}
	})
	t.Run("writing another's ACL is refused", func(t *testing.T) {
		w := newWorld(t)
		d := w.do(&events.ACL{Req: w.req("acl", "ben", "ann", "10.0.0.3"), Write: true, ACEs: []events.ACE{grantAll(any, events.RightAll)}})
		wantStatus(t, d, 403)
		if len(d.facts) != 0 {
			t.Errorf("facts %v", types(d))
		}
	})
}

func TestSubscriptions(t *testing.T) {
	t.Run("lifetimes are clamped", func(t *testing.T) {
		w := newWorld(t)
		for _, tc := range []struct{ asked, granted int }{{0, 14400}, {10, 60}, {3600, 3600}, {1 << 30, 14400}} {
			d := w.do(&events.Subscribe{Req: w.req("s", "ann", "ann", "10.0.0.1"), NotificationType: events.NotifyPragma, CallBack: annCB, Lifetime: tc.asked})
			if d.reply.Lifetime != tc.granted {
				t.Errorf("asked %d, granted %d, want %d", tc.asked, d.reply.Lifetime, tc.granted)
			}
		}
	})
	t.Run("ids are allocated once, for subscriptions and views alike", func(t *testing.T) {
		w := newWorld(t)
		a := w.login("ann", "10.0.0.1", annCB)
		v := w.setState("ann", "10.0.0.1", "busy", 600).reply.Lease.ViewID
		b := w.login("ben", "10.0.0.3", benCB)
		if a != 1 || v != 2 || b != 3 {
			t.Errorf("ids %d %d %d, want 1 2 3", a, v, b)
		}
	})
	t.Run("logging in to another's node is refused", func(t *testing.T) {
		w := newWorld(t)
		d := w.decide(&events.Subscribe{Req: w.req("s", "ben", "ann", "10.0.0.3"), NotificationType: events.NotifyPragma, CallBack: benCB})
		wantStatus(t, d, 403)
	})
	t.Run("a Call-Back for someone else needs subscribe-others", func(t *testing.T) {
		w := newWorld(t)
		d := w.decide(&events.Subscribe{Req: w.req("s", "ben", "ann", "10.0.0.3"), NotificationType: events.NotifyPropChange,
			CallBack: nodeURL("cat"), CallBackUser: user("cat")})
		wantStatus(t, d, 403)
	})
	t.Run("an unknown notification type is a bad request", func(t *testing.T) {
		w := newWorld(t)
		d := w.decide(&events.Subscribe{Req: w.req("s", "ann", "ann", "10.0.0.1"), NotificationType: "update/newmember", CallBack: annCB})
		wantStatus(t, d, 400)
	})
	t.Run("renewals: by the subscriber, not by others, not of what is gone", func(t *testing.T) {
		w := newWorld(t)
		id := w.watch("ben", "ann")
		w.now = w.now.Add(time.Hour)
		d := w.do(&events.Renew{Req: w.req("r", "ben", "ann", "10.0.0.3"), ID: id, Lifetime: 600})
		wantStatus(t, d, 200)
		if s, _ := w.st.Subscription(user("ann"), id); !s.Expires.Equal(w.now.Add(10 * time.Minute)) {
			t.Errorf("expires %v", s.Expires)
		}
		wantStatus(t, w.decide(&events.Renew{Req: w.req("r2", "cat", "ann", "10.0.0.4"), ID: id}), 403)
		wantStatus(t, w.decide(&events.Renew{Req: w.req("r3", "ben", "ann", "10.0.0.3"), ID: 99}), 412)
		// The node's owner may manage every subscription on it.
		wantStatus(t, w.decide(&events.Renew{Req: w.req("r4", "ann", "ann", "10.0.0.1"), ID: id}), 200)
	})
	t.Run("ending an unknown subscription succeeds", func(t *testing.T) {
		w := newWorld(t)
		d := w.decide(&events.Unsubscribe{Req: w.req("u", "ann", "ann", "10.0.0.1"), ID: 42})
		wantStatus(t, d, 200)
		if len(d.facts) != 0 {
			t.Errorf("facts %v", types(d))
		}
	})
	t.Run("a subscription expires at its time", func(t *testing.T) {
		w := newWorld(t)
		id := w.watch("ben", "ann")
		due := expiry{At: w.now.Add(4 * time.Hour), User: user("ann"), Kind: "s", ID: id}
		if d := w.decide(due); len(d.facts) != 0 {
			t.Errorf("before its time: %v", types(d))
		}
		w.now = w.now.Add(4 * time.Hour)
		d := w.do(due)
		wantStrings(t, "facts", types(d), []string{events.TypeSubscriptionEnded})
	})
	t.Run("SUBSCRIPTIONS lists, with seconds left, for those with the right", func(t *testing.T) {
		w := newWorld(t)
		w.login("ann", "10.0.0.1", annCB)
		w.watch("ben", "ann")
		w.now = w.now.Add(time.Hour)
		d := w.decide(&events.ListSubscriptions{Req: w.req("l", "ann", "ann", "10.0.0.1"), NotificationType: events.NotifyPropChange})
		wantStatus(t, d, 200)
		if len(d.reply.Subscriptions) != 1 || d.reply.Subscriptions[0].Timeout != 3*3600 {
			t.Errorf("listed %+v", d.reply.Subscriptions)
		}
		wantStatus(t, w.decide(&events.ListSubscriptions{Req: w.req("l2", "ben", "ann", "10.0.0.3")}), 403)
	})
}

func TestLinkedLogins(t *testing.T) {
	// librvp renews and ends its self-watch, never its login: the login
	// from the same address goes with it.
	w := newWorld(t)
	login := w.login("ann", "10.0.0.1", annCB)
	other := w.login("ann", "10.0.0.2", annCB2)
	self := w.do(&events.Subscribe{Req: w.req("self", "ann", "ann", "10.0.0.1"), NotificationType: events.NotifyPropChange,
		CallBack: nodeURL("ann"), CallBackUser: user("ann"), Lifetime: 600}).reply.SubscriptionID
	w.login("ben", "10.0.0.3", benCB)
	w.watch("ben", "ann")
	w.setState("ann", "10.0.0.1", "busy", 600)

	w.now = w.now.Add(time.Hour)
	d := w.do(&events.Renew{Req: w.req("renew", "ann", "ann", "10.0.0.1"), ID: self, Lifetime: 14400})
	var renewed []int32
	for _, f := range d.facts {
		renewed = append(renewed, f.(*events.SubscriptionRenewed).ID)
	}
	if len(renewed) != 2 || renewed[0] != self || renewed[1] != login {
		t.Errorf("renewed %v, want self-watch %d and its login %d (not %d, another address)", renewed, self, login, other)
	}

	// Ending the self-watch ends the login; the other login keeps the state.
	d = w.do(&events.Unsubscribe{Req: w.req("bye", "ann", "ann", "10.0.0.1"), ID: self})
	wantStrings(t, "facts", types(d), []string{events.TypeSubscriptionEnded, events.TypeSubscriptionEnded})
	if len(sent(d)) != 0 {
		t.Errorf("notified %v", sent(d))
	}
	// The last login ends: the views end with it and watchers see offline.
	d = w.do(&events.Unsubscribe{Req: w.req("bye2", "ann", "ann", "10.0.0.2"), ID: other})
	wantStrings(t, "facts", types(d), []string{events.TypeSubscriptionEnded, events.TypeViewEnded})
	if r := d.facts[1].(*events.ViewEnded).Reason; r != events.EndLoggedOut {
		t.Errorf("reason %q", r)
	}
	wantStrings(t, "notified", sent(d), []string{benCB + " offline"})
}

// TestLinkedSelfWatches: librvp renews its login when the login's answer
// was the last 200 it saw (the self-watch's is a 207), and at logout ends
// its login: the self-watch from the same address goes with it, and the
// one from another address and a buddy's watch do not.
func TestLinkedSelfWatches(t *testing.T) {
	w := newWorld(t)
	login := w.login("ann", "10.0.0.1", annCB)
	selfWatch := func(id, addr string) int32 {
		return w.do(&events.Subscribe{Req: w.req(id, "ann", "ann", addr), NotificationType: events.NotifyPropChange,
			CallBack: nodeURL("ann"), CallBackUser: user("ann"), Lifetime: 600}).reply.SubscriptionID
	}
	self := selfWatch("self", "10.0.0.1")
	other := selfWatch("self2", "10.0.0.2")
	w.login("ben", "10.0.0.1", benCB)
	w.watch("ben", "ann")

	w.now = w.now.Add(time.Hour)
	d := w.do(&events.Renew{Req: w.req("renew", "ann", "ann", "10.0.0.1"), ID: login, Lifetime: 14400})
	var renewed []int32
	for _, f := range d.facts {
		renewed = append(renewed, f.(*events.SubscriptionRenewed).ID)
	}
	if len(renewed) != 2 || renewed[0] != login || renewed[1] != self {
		t.Errorf("renewed %v, want login %d and its self-watch %d (not %d, another address)", renewed, login, self, other)
	}
	if d.reply.SubscriptionID != login || d.reply.Lifetime != 14400 {
		t.Errorf("answered %+v", d.reply)
	}

	d = w.do(&events.Unsubscribe{Req: w.req("bye", "ann", "ann", "10.0.0.1"), ID: login})
	var ended []int32
	for _, f := range d.facts {
		if e, ok := f.(*events.SubscriptionEnded); ok {
			ended = append(ended, e.ID)
		}
	}
	if len(ended) != 2 || ended[0] != login || ended[1] != self {
		t.Errorf("ended %v (%v), want login %d and its self-watch %d", ended, types(d), login, self)
	}
	for _, id := range []int32{other} {
		if s, err := w.st.Subscription(user("ann"), id); err != nil || s == nil {
			t.Errorf("self-watch %d from another address: %v, %v", id, s, err)
		}
	}
}

func TestMessages(t *testing.T) {
	msg := func(w *world, id, from, to, ack string, hop int) *events.Notify {
		return &events.Notify{Req: w.req(id, from, to, "10.0.0.3"), AckType: ack, HopCount: hop,
			Body: []byte(`<r:notification><r:message><r:notification-from><r:contact><d:href>` + nodeURL(from) + `</d:href></r:contact></r:notification-from></r:message></r:notification>`)}
	}
	t.Run("delivered to every login of the recipient", func(t *testing.T) {
		w := newWorld(t)
		w.login("ann", "10.0.0.1", annCB)
		w.login("ann", "10.0.0.2", annCB2)
		d := w.do(msg(w, "m1", "ben", "ann", "DeepOr", 1))
		wantStrings(t, "facts", types(d), []string{events.TypeMessageAccepted})
		if d.reply != nil {
			t.Errorf("answered before delivery: %+v", d.reply)
		}
		if d.deliver == nil || len(d.deliver.targets) != 2 {
			t.Fatalf("delivery %+v", d.deliver)
		}
		out := d.deliver.outbound(d.deliver.targets[0])
		if got := out.Header; len(got) == 0 {
			t.Fatal("no headers")
		}
		for _, f := range out.Header {
			if f.Name == "RVP-Hop-Count" && f.Value != "2" {
				t.Errorf("hop count %s", f.Value)
			}
		}
		if acc := d.facts[0].(*events.MessageAccepted); acc.Endpoints != 2 || string(acc.Body) != string(msg(w, "", "ben", "ann", "", 1).Body) {
			t.Errorf("accepted %+v", acc)
		}
	})
	t.Run("nobody logged in: 412, recorded by its size and digest", func(t *testing.T) {
		w := newWorld(t)
		m := msg(w, "m", "ben", "ann", "DeepOr", 1)
		d := w.do(m)
		wantStatus(t, d, 412)
		wantStrings(t, "facts", types(d), []string{events.TypeMessageAccepted, events.TypeMessageDelivered})
		sum := sha256.Sum256(m.Body)
		if acc := d.facts[0].(*events.MessageAccepted); acc.Body != nil || acc.BodySize != len(m.Body) || acc.BodySHA256 != hex.EncodeToString(sum[:]) {
			t.Errorf("accepted %+v: want no body, its size %d and digest", acc, len(m.Body))
		}
	})
	t.Run("SingleHop is answered on acceptance", func(t *testing.T) {
		w := newWorld(t)
		w.login("ann", "10.0.0.1", annCB)
		d := w.do(msg(w, "m", "ben", "ann", "SingleHop", 1))
		wantStatus(t, d, 200)
		if d.deliver == nil || !d.deliver.answered {
			t.Errorf("delivery %+v", d.deliver)
		}
		o := w.decide(outcome{d: d.deliver, status: 412, failed: 1})
		if o.reply != nil {
			t.Errorf("answered twice: %+v", o.reply)
		}
	})
	t.Run("looping messages are refused", func(t *testing.T) {
		w := newWorld(t)
		d := w.decide(msg(w, "m", "ben", "ann", "DeepOr", 9))
		wantStatus(t, d, 508)
		if len(d.facts) != 0 {
			t.Errorf("facts %v", types(d))
		}
	})
	t.Run("send-to denied: 403", func(t *testing.T) {
		w := newWorld(t)
		w.login("ann", "10.0.0.1", annCB)
		w.do(&events.ACL{Req: w.req("acl", "ann", "ann", "10.0.0.1"), Write: true, ACEs: []events.ACE{{Credentials: []string{events.CredAny}, Grant: []string{events.RightPresence}}}})
		wantStatus(t, w.decide(msg(w, "m", "ben", "ann", "DeepOr", 1)), 403)
	})
	t.Run("a recipient whose clients have too much waiting: 503, nothing recorded", func(t *testing.T) {
		w := newWorld(t)
		w.login("ann", "10.0.0.1", annCB)
		v := w.view()
		v.Busy = func(u events.User) bool { return u == user("ann") }
		d, err := decide(v, w.policy, msg(w, "m", "ben", "ann", "DeepOr", 1), w.now)
		if err != nil {
			t.Fatal(err)
		}
		wantStatus(t, d, 503)
		if len(d.facts) != 0 || d.deliver != nil || d.reply.RetryAfter != 5 {
			t.Errorf("facts %v, delivery %v, Retry-After %d", types(d), d.deliver != nil, d.reply.RetryAfter)
		}
	})
	t.Run("a resumed delivery is not accepted again", func(t *testing.T) {
		w := newWorld(t)
		w.login("ann", "10.0.0.1", annCB)
		m := msg(w, "m", "ben", "ann", "DeepOr", 1)
		w.do(m)
		d := w.decide(resumed{m})
		if len(d.facts) != 0 || d.deliver == nil || d.msgID != "m/resumed" {
			t.Errorf("resumed: facts %v, delivery %v, id %s", types(d), d.deliver != nil, d.msgID)
		}
	})
	t.Run("a resumed delivery to a recipient moved away meanwhile: 504, not 412", func(t *testing.T) {
		// Her clients went with her: she is not "not signed in", and the
		// delivery interrupted here may have reached one.
		w := newWorld(t)
		id := w.login("ann", "10.0.0.1", annCB)
		m := msg(w, "m", "ben", "ann", "DeepOr", 1)
		w.do(m)
		w.do(&events.Unsubscribe{Req: w.req("bye", "ann", "ann", "10.0.0.1"), ID: id}) // as her handoff ends it here
		w.dir.users[user("ann")].Home = "home2"
		d := w.decide(resumed{m})
		wantStatus(t, d, 504)
		if d.deliver != nil || len(d.facts) != 1 || d.msgID != "m/resumed" {
			t.Fatalf("resumed: facts %v, delivery %v, id %s", types(d), d.deliver != nil, d.msgID)
		}
		if md, ok := d.facts[0].(*events.MessageDelivered); !ok || md.Status != 504 || md.Node != user("ann") {
			t.Errorf("resumed: %+v, want ann's message m ended 504", d.facts[0])
		}
		// Not moved, signed out meanwhile: 412 still.
		w.dir.users[user("ann")].Home = testHome
		wantStatus(t, w.decide(resumed{m}), 412)
	})
	t.Run("a lapsed delivery is recorded as not delivered", func(t *testing.T) {
		w := newWorld(t)
		w.login("ann", "10.0.0.1", annCB)
		m := msg(w, "m", "ben", "ann", "DeepOr", 1)
		w.do(m)
		w.now = w.now.Add(time.Minute)
		d := w.decide(lapsed{m})
		if d.deliver != nil || d.reply != nil || d.msgID != "m/lapsed" || len(d.facts) != 1 {
			t.Fatalf("lapsed: facts %v, delivery %v, reply %v, id %s", types(d), d.deliver != nil, d.reply, d.msgID)
		}
		if md, ok := d.facts[0].(*events.MessageDelivered); !ok || md.Status != 504 || md.Node != user("ann") || md.Meta.Request != "m" {
			t.Errorf("lapsed: %+v, want ann's message m ended 504", d.facts[0])
		}
	})
	t.Run("outcomes", func(t *testing.T) {
		fail := errors.New("connection refused")
		type result struct {
			status int
			err    error
		}
		for _, tc := range []struct {
			name    string
			ack     string
			results []result
			want    int // 0: undecided after all results
			after   int // the result that decides it (1-based)
		}{
			{"DeepOr: the first 2xx", "DeepOr", []result{{0, fail}, {200, nil}, {0, fail}}, 200, 2},
			{"DeepOr: all fail, none answered", "DeepOr", []result{{0, fail}, {0, fail}}, 412, 2},
			{"DeepOr: a client's refusal is relayed", "DeepOr", []result{{0, fail}, {500, nil}}, 500, 2},
			{"DeepAnd: all must take it", "DeepAnd", []result{{200, nil}, {200, nil}}, 200, 2},
			{"DeepAnd: one refusal fails it", "DeepAnd", []result{{200, nil}, {0, fail}}, 412, 2},
		} {
			t.Run(tc.name, func(t *testing.T) {
				d := &delivery{req: &events.Notify{AckType: tc.ack}, targets: make([]target, len(tc.results))}
				tl := newTally(d)
				for i, r := range tc.results {
					o, ok := tl.record(r.status, r.err)
					if ok != (i+1 == tc.after) {
						t.Fatalf("result %d decided %v", i+1, ok)
					}
					if ok && o.status != tc.want {
						t.Errorf("status %d, want %d", o.status, tc.want)
					}
				}
			})
		}
		w := newWorld(t)
		w.login("ann", "10.0.0.1", annCB)
		d := w.do(msg(w, "m", "ben", "ann", "DeepOr", 1))
		o := w.decide(outcome{d: d.deliver, status: 200, delivered: 1})
		wantStatus(t, o, 200)
		wantStrings(t, "facts", types(o), []string{events.TypeMessageDelivered})
		if o.msgID != "m/delivered" {
			t.Errorf("msg id %s", o.msgID)
		}
	})
}

func TestPresenceFanOut(t *testing.T) {
	w := newWorld(t)
	w.login("ann", "10.0.0.1", annCB)
	w.login("ben", "10.0.0.3", benCB)
	w.login("ben", "10.0.0.5", "http://10.0.0.5:4000")
	w.login("cat", "10.0.0.4", catCB)
	w.watch("ben", "ann")
	w.watch("ben", "ann") // librvp re-subscribes: one NOTIFY all the same
	w.watch("cat", "ann")
	w.watch("dan", "ann") // homed on home2: its home server relays
	t.Run("a change reaches every watcher's logins once", func(t *testing.T) {
		d := w.setState("ann", "10.0.0.1", "busy", 600)
		wantStrings(t, "notified", sent(d), []string{
			"http://10.0.0.3:4000 busy", "http://10.0.0.4:4000 busy", "http://10.0.0.5:4000 busy", "relay home2 dan@example.test busy"})
		for _, r := range d.relays {
			if r.ev.Auth.Scheme != "internal" || r.ev.From != "im.example.test" {
				t.Errorf("relay %+v", r.ev.Req)
			}
		}
	})
	t.Run("no change, no notification", func(t *testing.T) {
		d := w.setState("ann", "10.0.0.1", "busy", 600)
		if s := sent(d); len(s) != 0 {
			t.Errorf("notified %v", s)
		}
	})
	t.Run("a new watcher gets the state at once", func(t *testing.T) {
		d := w.do(&events.Subscribe{Req: w.req("w0", "cat", "ann", "10.0.0.4"), NotificationType: events.NotifyPropChange,
			CallBack: nodeURL("cat"), CallBackUser: user("cat")})
		wantStrings(t, "notified", sent(d), []string{catCB + " busy"})
	})
	t.Run("a new watcher of a user offline is sent nothing", func(t *testing.T) {
		// Offline is what a client shows until told otherwise, and what
		// the SUBSCRIBE answer says.
		w.login("ann", "10.0.0.1", annCB)
		d := w.do(&events.Subscribe{Req: w.req("w", "ann", "cat", "10.0.0.1"), NotificationType: events.NotifyPropChange,
			CallBack: nodeURL("ann"), CallBackUser: user("ann")})
		wantStatus(t, d, 207)
		if s := sent(d); len(s) != 0 {
			t.Errorf("notified %v", s)
		}
	})
	t.Run("a relayed notification goes to the watcher's logins", func(t *testing.T) {
		d := w.decide(&events.Relay{Req: events.Req{ID: "rl", Node: user("ben"), From: "im.example.test", Auth: events.Identity{Scheme: "internal"},
			Deadline: w.now.Add(time.Second)}, Body: []byte("<r:state><r:away/></r:state>")})
		wantStrings(t, "notified", sent(d), []string{"http://10.0.0.3:4000 away", "http://10.0.0.5:4000 away"})
		bad := w.decide(&events.Relay{Req: w.req("rl2", "cat", "ben", "10.0.0.4"), Body: []byte("x")})
		wantStatus(t, bad, 403)
	})
	t.Run("a takeover re-sends the state to the watchers allowed it", func(t *testing.T) {
		d := w.decide(resend(user("ann")))
		if len(d.facts) != 0 || len(sent(d)) != 4 {
			t.Errorf("facts %v, notified %v", types(d), sent(d))
		}
	})
	t.Run("a site back is re-sent the state of its watchers only", func(t *testing.T) {
		d := w.decide(resendTo{user: user("ann"), homes: map[string]bool{"home2": true}})
		wantStrings(t, "notified", sent(d), []string{"relay home2 dan@example.test busy"})
		if d := w.decide(resendTo{user: user("ann"), homes: map[string]bool{"home9": true}}); len(sent(d)) != 0 {
			t.Errorf("notified %v", sent(d))
		}
	})
	t.Run("a site lost: its nodes go offline for the watcher's logins", func(t *testing.T) {
		d := w.decide(siteLost{watcher: user("ben"), nodes: []remoteNode{{home: "home2", server: "im.example.test",
			from: "http://im.example.test/instmsg/aliases/dan", to: "http://im.example.test/instmsg/aliases/ben"}}})
		wantStrings(t, "notified", sent(d), []string{"http://10.0.0.3:4000 offline", "http://10.0.0.5:4000 offline"})
		if len(d.facts) != 0 || d.reply != nil {
			t.Errorf("facts %v, reply %+v", types(d), d.reply)
		}
		for _, nt := range d.notes {
			n, err := rvp.ParseNotification(nt.out.Body)
			if err != nil || n.From[0] != "http://im.example.test/instmsg/aliases/dan" || n.To[0] != "http://im.example.test/instmsg/aliases/ben" {
				t.Errorf("notification %s: %+v, %v", nt.out.Body, n, err)
			}
			if nt.out.Header[2].Value != "im.example.test" {
				t.Errorf("headers %+v", nt.out.Header)
			}
		}
	})
}

// TestRemoteNodes: a home node remembers what its users were told of
// nodes homed elsewhere, by relays, per node, the last only.
func TestRemoteNodes(t *testing.T) {
	var rs remotes
	relay := func(watcher, node, home, state string) *events.Relay {
		body := rvp.PropNotification(rvp.Contact{Href: "http://im.example.test/instmsg/aliases/" + node},
			rvp.Contact{Href: "http://im.example.test/instmsg/aliases/" + watcher}, state)
		return &events.Relay{Req: events.Req{Node: user(watcher), Gateway: "home:" + home, From: "im.example.test"}, Body: body}
	}
	rs.remember(relay("ann", "dan", "home2", "online"))
	rs.remember(relay("ann", "dan", "home2", "busy"))
	rs.remember(relay("ann", "eve", "home3", "online"))
	rs.remember(relay("ben", "dan", "home2", "online"))
	rs.remember(&events.Relay{Req: events.Req{Node: user("ann"), Gateway: "gw1"}, Body: []byte("x")}) // not from a home server
	got := rs.at(map[string]bool{"home2": true})
	if len(got) != 2 || len(got[user("ann")]) != 1 || len(got[user("ben")]) != 1 || got[user("ann")][0].home != "home2" {
		t.Errorf("at home2: %+v", got)
	}
	if got := rs.at(map[string]bool{"home3": true}); len(got[user("ann")]) != 1 || got[user("ann")][0].from != "http://im.example.test/instmsg/aliases/eve" {
		t.Errorf("at home3: %+v", got)
	}
	if rs.count != 3 {
		t.Errorf("count %d, want 3", rs.count)
	}
}

func TestUnreachableCallbacks(t *testing.T) {
	r := reachability{limit: 3}
	ref := subRef{user("ann"), 1}
	fail := errors.New("refused")
	if r.record(ref, fail) || r.record(ref, fail) || r.record(ref, nil) || r.record(ref, fail) || r.record(ref, fail) {
		t.Fatal("ended before three failures in a row")
	}
	if !r.record(ref, fail) {
		t.Fatal("three failures in a row did not end it")
	}
	if never := (reachability{limit: -1}); never.record(ref, fail) {
		t.Error("a negative limit ended it")
	}

	w := newWorld(t)
	id := w.login("ann", "10.0.0.1", annCB)
	w.login("ben", "10.0.0.3", benCB)
	w.watch("ben", "ann")
	w.setState("ann", "10.0.0.1", "online", 600)
	d := w.do(unreachable{user("ann"), id})
	wantStrings(t, "facts", types(d), []string{events.TypeSubscriptionEnded, events.TypeViewEnded})
	wantStrings(t, "notified", sent(d), []string{benCB + " offline"})
	if d := w.decide(unreachable{user("ann"), id}); len(d.facts) != 0 {
		t.Errorf("ended twice: %v", types(d))
	}
}

func TestRouting(t *testing.T) {
	w := newWorld(t)
	c := &core{View: w.view(), policy: w.policy}
	r := &events.PropFind{Req: w.req("x", "ann", "ann", "10.0.0.1")}
	if got, _, _ := c.route(r, w.now, time.Second, false); got != routeDecide {
		t.Errorf("route %d, want decide", got)
	}
	if got, _, _ := c.route(r, w.now, time.Second, true); got != routeHold {
		t.Errorf("behind a held request: %d, want hold", got)
	}
	if got, _, _ := c.route(r, w.now.Add(time.Minute), time.Second, false); got != routeLate {
		t.Errorf("after its deadline: %d, want late", got)
	}
	dan := &events.PropFind{Req: w.req("y", "ann", "dan", "10.0.0.1")}
	if got, rec, _ := c.route(dan, w.now, time.Second, false); got != routeForward || rec.Home != "home2" {
		t.Errorf("user homed elsewhere: %d %+v, want forward to home2", got, rec)
	}
	// Moved here a moment ago: held until its state arrives, or for
	// HandoffWait.
	w.dir.users[user("ben")].Move, w.dir.users[user("ben")].MovedAt, w.dir.users[user("ben")].MovedFrom = 7, w.now, "home3"
	ben := &events.PropFind{Req: w.req("z", "ben", "ben", "10.0.0.3")}
	if got, _, _ := c.route(ben, w.now, time.Second, false); got != routeHold {
		t.Errorf("moved here: %d, want hold", got)
	}
	if got, _, _ := c.route(ben, w.now.Add(time.Second), time.Second, false); got != routeDecide {
		t.Errorf("after HandoffWait: %d, want decide", got)
	}
	handoff := &events.Handoff{Req: events.Req{ID: "h", Node: user("ben"), Auth: events.Identity{Scheme: "internal"}}, From: "home3", Move: 7}
	if got, _, _ := c.route(handoff, w.now, time.Second, true); got != routeDecide {
		t.Errorf("the handoff itself: %d, want decide", got)
	}
	w.do(handoff)
	if got, _, _ := c.route(ben, w.now, time.Second, false); got != routeDecide {
		t.Errorf("state arrived: %d, want decide", got)
	}
}

func TestMoves(t *testing.T) {
	w := newWorld(t)
	w.login("ann", "10.0.0.1", annCB)
	w.login("ben", "10.0.0.3", benCB)
	w.watch("ben", "ann")
	w.setState("ann", "10.0.0.1", "busy", 600)
	w.do(&events.PropPatch{Req: w.req("p", "ann", "ann", "10.0.0.1"), Set: []events.PropValue{{Prop: events.PropMobileState, Value: "1"}}})

	d := w.do(departure{user: user("ann"), to: "home2", seq: 40})
	if d.handoff == nil || d.handTo != "home2" || len(d.handoff.Subs) != 2 || len(d.handoff.Views) != 1 || len(d.handoff.Props) != 1 {
		t.Fatalf("handoff to %s: %+v", d.handTo, d.handoff)
	}
	wantStrings(t, "facts", types(d), []string{events.TypeSubscriptionEnded, events.TypeSubscriptionEnded, events.TypeViewEnded, events.TypeUserDeparted})
	if len(sent(d)) != 0 {
		t.Errorf("a move told watchers: %v", sent(d))
	}
	if again := w.decide(departure{user: user("ann"), to: "home2", seq: 40}); again.handoff != nil || len(again.facts) != 0 {
		t.Error("handed off twice for one move")
	}

	// The other side: takes what it has not, and what has not expired.
	to := newWorld(t)
	to.dir.users[user("ann")].Home = "home2"
	h := d.handoff
	h.Subs[0].Expires = to.now.Add(-time.Second)
	got := to.do(h)
	wantStrings(t, "facts", types(got), []string{events.TypeSubscriptionCreated, events.TypeViewSet, events.TypePropertySet, events.TypeUserArrived})
	if a := got.facts[len(got.facts)-1].(*events.UserArrived); a.Subs != 1 || a.Views != 1 || a.Move != 40 {
		t.Errorf("arrived %+v", a)
	}
	if len(sent(got)) != 0 {
		t.Errorf("an arrival told watchers: %v", sent(got))
	}
	if again := to.decide(h); len(again.facts) != 0 {
		t.Errorf("took a handoff twice: %v", types(again))
	}
	if bad := to.decide(&events.Handoff{Req: to.req("h", "ann", "ann", "10.0.0.1")}); bad.reply == nil || bad.reply.Status != 403 {
		t.Error("a handoff from a client was taken")
	}
}

// TestHandoffInParts: the state of a user watched by more than a message
// holds goes in parts (handoffParts), each within the bound; the new home
// server records each part's subscriptions as it comes, takes the move
// with the last only (the user's requests wait for it), and records
// nothing twice when a part comes again.
func TestHandoffInParts(t *testing.T) {
	w := newWorld(t)
	w.login("ann", "10.0.0.1", annCB)
	w.setState("ann", "10.0.0.1", "busy", 600)
	addWatchers(w, "ann", 300)
	d := w.do(departure{user: user("ann"), to: "home2", seq: 40})
	if d.handoff == nil || len(d.handoff.Subs) != 301 {
		t.Fatalf("handoff: %+v", d.handoff)
	}
	const limit = 16 << 10
	parts, err := handoffParts(d.handoff, limit)
	if err != nil {
		t.Fatal(err)
	}
	if len(parts) < 6 {
		t.Fatalf("%d parts of at most %d bytes for a handoff of 301 subscriptions, want more", len(parts), limit)
	}
	to := annMovedToHome2(t)
	// awaits reports whether ann's requests wait for her state.
	awaits := func() bool {
		c := &core{View: View{Home: "home2", State: to.st, Dir: to.dir}, policy: to.policy}
		got, _, _ := c.route(&events.PropFind{Req: to.req("q", "ann", "ann", "10.0.0.1")}, to.now, time.Minute, false)
		return got == routeHold
	}
	ids := map[string]bool{}
	created := map[int32]bool{}
	var decided []*events.Handoff
	for i, p := range parts {
		if len(p.data) > limit {
			t.Errorf("part %d: %d bytes, over %d", i+1, len(p.data), limit)
		}
		if ids[p.id] {
			t.Errorf("part %d: id %s taken by another part", i+1, p.id)
		}
		ids[p.id] = true
		h := handoffOf(t, p)
		if h.ID != p.id {
			t.Errorf("part %d: request id %s, sent with message id %s", i+1, h.ID, p.id)
		}
		last := i == len(parts)-1
		if h.More == last || (last && h.ID != d.handoff.ID) {
			t.Errorf("part %d of %d: More %v, id %s", i+1, len(parts), h.More, h.ID)
		}
		if !awaits() {
			t.Errorf("before part %d the user's requests do not wait for the rest", i+1)
		}
		got := to.do(h)
		for _, f := range got.facts {
			switch f := f.(type) {
			case *events.SubscriptionCreated:
				if created[f.ID] {
					t.Errorf("subscription %d recorded twice", f.ID)
				}
				created[f.ID] = true
			case *events.UserArrived:
				if !last && f.Part != i+1 {
					t.Errorf("part %d of %d took the move (part %d)", i+1, len(parts), f.Part)
				}
				if last && f.Part != 0 {
					t.Errorf("the last part recorded as part %d, want the move taken", f.Part)
				}
			}
		}
		if types(got)[len(got.facts)-1] != events.TypeUserArrived {
			t.Errorf("part %d of %d: %v, want it recorded taken", i+1, len(parts), types(got))
		}
		decided = append(decided, h)
	}
	if len(created) != 301 {
		t.Errorf("%d subscriptions recorded, want 301", len(created))
	}
	if awaits() {
		t.Error("after the last part the user's requests still wait")
	}
	if again := to.decide(decided[0]); len(again.facts) != 0 {
		t.Errorf("the first part again: %v", types(again))
	}
	small, err := handoffParts(d.handoff, 1<<20)
	if err != nil || len(small) != 1 || small[0].id != d.handoff.ID {
		t.Errorf("a handoff that fits: %d parts, %v", len(small), err)
	}
}

// TestHandoffPartsLoginsLast: a handoff in parts brings the user's
// logins in its last part, with her views (decideHandoff sees there
// whether one it brings was ended here), and its watchers in the parts
// before; logins that do not fit beside the rest go in the parts before
// too, and every subscription is still taken once.
func TestHandoffPartsLoginsLast(t *testing.T) {
	for _, tc := range []struct {
		name      string
		logins    int
		wantLast  int // logins in the last part
		wantTaken int
	}{
		{"they fit", 3, 3, 303},
		{"they do not fit", 40, 0, 340},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			for i := range tc.logins {
				w.login("ann", fmt.Sprintf("10.0.1.%d", i), fmt.Sprintf("http://10.0.1.%d:4000/%s", i, strings.Repeat("x", 300)))
			}
			w.setState("ann", "10.0.1.0", "busy", 600)
			addWatchers(w, "ann", 300)
			d := w.do(departure{user: user("ann"), to: "home2", seq: 40})
			parts, err := handoffParts(d.handoff, 16<<10)
			if err != nil {
				t.Fatal(err)
			}
			to := annMovedToHome2(t)
			taken := 0
			for i, p := range parts {
				h := handoffOf(t, p)
				logins := 0
				for _, s := range h.Subs {
					if s.Kind == events.NotifyPragma {
						logins++
					}
				}
				if last := i == len(parts)-1; last && logins != tc.wantLast {
					t.Errorf("the last part of %d brings %d logins, want %d", len(parts), logins, tc.wantLast)
				} else if !last && tc.wantLast > 0 && logins > 0 {
					t.Errorf("part %d of %d brings %d logins, want them in the last", i+1, len(parts), logins)
				}
				for _, f := range to.do(h).facts {
					if _, ok := f.(*events.SubscriptionCreated); ok {
						taken++
					}
				}
			}
			if taken != tc.wantTaken {
				t.Errorf("%d subscriptions taken from %d parts, want %d", taken, len(parts), tc.wantTaken)
			}
		})
	}
}

// TestHandoffPartsOutOfOrder: the parts of a handoff in parts held back
// (a directory behind: TestHandoffOutlastsMaxDeliver) and redelivered
// come in any order. The last part, taken first, took the move, and the
// parts after it were dropped as "taken already" with the subscriptions
// they carried. Each numbered part is taken once, before or after the
// last; sent again, none is taken twice.
func TestHandoffPartsOutOfOrder(t *testing.T) {
	w := newWorld(t)
	w.login("ann", "10.0.0.1", annCB)
	addWatchers(w, "ann", 300)
	d := w.do(departure{user: user("ann"), to: "home2", seq: 40})
	parts, err := handoffParts(d.handoff, 16<<10)
	if err != nil {
		t.Fatal(err)
	}
	to := annMovedToHome2(t)
	var hs []*events.Handoff
	for _, p := range parts {
		hs = append(hs, handoffOf(t, p))
	}
	// The last part first, then the others from the end.
	order := []*events.Handoff{hs[len(hs)-1]}
	for i := len(hs) - 2; i >= 0; i-- {
		order = append(order, hs[i])
	}
	created := map[int32]bool{}
	for _, h := range order {
		for _, f := range to.do(h).facts {
			if f, ok := f.(*events.SubscriptionCreated); ok {
				if created[f.ID] {
					t.Errorf("subscription %d recorded twice", f.ID)
				}
				created[f.ID] = true
			}
		}
	}
	if len(created) != 301 {
		t.Errorf("%d subscriptions recorded from %d parts taken last first, want 301", len(created), len(parts))
	}
	for i, h := range hs {
		if again := to.decide(h); len(again.facts) != 0 {
			t.Errorf("part %d again: %v", i+1, types(again))
		}
	}
}

func TestLimits(t *testing.T) {
	t.Run("logins: at most MaxLogins, then 503 until the first lapses", func(t *testing.T) {
		w := newWorld(t)
		w.policy.MaxLogins = 3
		for i := range 3 {
			w.now = w.now.Add(time.Minute)
			w.login("ann", "10.0.0."+strconv.Itoa(i+1), annCB)
		}
		d := w.decide(&events.Subscribe{Req: w.req("l4", "ann", "ann", "10.0.0.9"), NotificationType: events.NotifyPragma, CallBack: annCB2, Lifetime: 600})
		wantStatus(t, d, 503)
		// The first login lapses 4 h after it was made, 2 min before now.
		if want := 4*3600 - 120; d.reply.RetryAfter != min(want, 3600) || len(d.facts) != 0 {
			t.Errorf("Retry-After %d, facts %v", d.reply.RetryAfter, types(d))
		}
		// Watching is another count.
		wantStatus(t, w.decide(&events.Subscribe{Req: w.req("w", "ben", "ann", "10.0.0.3"), NotificationType: events.NotifyPropChange,
			CallBack: nodeURL("ben"), CallBackUser: user("ben")}), 207)
	})
	t.Run("watchers: at most MaxWatchers", func(t *testing.T) {
		w := newWorld(t)
		w.policy.MaxWatchers = 2
		w.watch("ben", "ann")
		w.watch("cat", "ann")
		d := w.decide(&events.Subscribe{Req: w.req("w3", "dan", "ann", "10.0.0.5"), NotificationType: events.NotifyPropChange,
			CallBack: nodeURL("dan"), CallBackUser: user("dan")})
		wantStatus(t, d, 503)
		if d.reply.RetryAfter <= 0 {
			t.Errorf("no Retry-After")
		}
	})
	t.Run("views: a new view beyond MaxViews ends the one lapsing first", func(t *testing.T) {
		w := newWorld(t)
		w.policy.MaxViews = 3
		var ids []int32
		for i := range 5 {
			w.now = w.now.Add(time.Minute)
			// A view id no one has, each time, from one address.
			d := w.do(&events.PropPatch{Req: w.req("p"+strconv.Itoa(i), "ann", "ann", "10.0.0.1"),
				State: &events.StateUpdate{Value: "online", Default: "offline", Timeout: 14400, ViewID: int32(1_000_000 + i)}})
			wantStatus(t, d, 207)
			ids = append(ids, d.reply.Lease.ViewID)
			if ended, _ := replaced(d); i < 3 && len(ended) != 0 || i >= 3 && !slices.Equal(ended, []int32{ids[i-3]}) {
				t.Errorf("PROPPATCH %d ended views %v; want %v", i, ended, ids[max(0, i-3):i-2])
			}
		}
		vs, err := w.st.Views(user("ann"))
		if err != nil || len(vs) != 3 {
			t.Fatalf("ann has %d views (%v), want 3", len(vs), err)
		}
		for _, v := range vs {
			if !slices.Contains(ids[2:], v.ID) {
				t.Errorf("view %d is left; want the three newest %v", v.ID, ids[2:])
			}
		}
	})
	t.Run("watches: one subscriber holds at most MaxWatchesPerSubscriber of a node's", func(t *testing.T) {
		w := newWorld(t)
		w.policy.MaxWatchesPerSubscriber = 3
		sub := func(id, from string, fromUser bool) *decision {
			r := w.req(id, from, "ann", "10.0.0.3")
			in := &events.Subscribe{Req: r, NotificationType: events.NotifyPropChange, CallBack: nodeURL(from), CallBackUser: user(from), Lifetime: 14400}
			if !fromUser { // another organisation's principal, without credentials
				in.Req.From, in.Req.FromUser, in.Req.Auth = "http://im.acme.test/instmsg/aliases/"+from, events.User{}, events.Identity{}
				in.CallBack, in.CallBackUser = in.Req.From, events.User{}
			}
			w.now = w.now.Add(time.Minute)
			return w.do(in)
		}
		ended := func(d *decision) []int32 { _, subs := replaced(d); return subs }
		var bens []int32
		for i := range 5 {
			d := sub("b"+strconv.Itoa(i), "ben", true)
			wantStatus(t, d, 207)
			bens = append(bens, d.reply.SubscriptionID)
			if _, ended := replaced(d); i < 3 && len(ended) != 0 || i >= 3 && !slices.Equal(ended, []int32{bens[i-3]}) {
				t.Errorf("ben's subscription %d ended %v", i, ended)
			}
		}
		// Another subscriber's are its own count.
		if d := sub("c", "cat", true); d.reply.Status != 207 || len(ended(d)) != 0 {
			t.Errorf("cat's subscription: %d, ended %v", d.reply.Status, ended(d))
		}
		for i := range 4 {
			if d := sub("x"+strconv.Itoa(i), "xavier", false); d.reply.Status != 207 || i < 3 && len(ended(d)) != 0 || i == 3 && len(ended(d)) != 1 {
				t.Errorf("acme's xavier's subscription %d: %d %s, ended %v", i, d.reply.Status, d.reply.Error, ended(d))
			}
		}
		if n, err := w.st.CountWatchers(user("ann"), nil); err != nil || n != 3+1+3 {
			t.Errorf("ann has %d watchers (%v), want 7: ben's 3, cat's and xavier's 3", n, err)
		}
	})
	t.Run("watches: other organisations' principals at one network hold at most MaxWatchesPerNetwork of a node's", func(t *testing.T) {
		w := newWorld(t)
		w.policy.MaxWatchesPerSubscriber, w.policy.MaxWatchesPerNetwork = 2, 3
		sub := func(id, from, client string) *decision { return foreignWatch(w, id, from, client) }
		// Users of ours at the same address do not count.
		for _, a := range []string{"cat", "dan"} {
			wantStatus(t, w.do(&events.Subscribe{Req: w.req("c"+a, a, "ann", "192.0.2.1"), NotificationType: events.NotifyPropChange,
				CallBack: nodeURL(a), CallBackUser: user(a), Lifetime: 14400}), 207)
		}
		for i, alias := range []string{"x1", "x1", "x2"} {
			wantStatus(t, sub("a"+strconv.Itoa(i), "http://im.acme.test/instmsg/aliases/"+alias, "192.0.2.1"), 207)
		}
		// A fourth principal from there, under any name, is refused.
		for i, from := range []string{"http://im.acme.test/instmsg/aliases/x4", "http://im.acme.test./instmsg/aliases/x5", "http://evil.test/instmsg/aliases/x6"} {
			d := sub("r"+strconv.Itoa(i), from, "192.0.2.1")
			wantStatus(t, d, 503)
			if len(d.facts) != 0 || d.reply.RetryAfter <= 0 || !strings.Contains(d.reply.Error, "192.0.2.1") {
				t.Errorf("%s: facts %v, Retry-After %d, error %q", from, types(d), d.reply.RetryAfter, d.reply.Error)
			}
		}
		// x1, holding its two, replaces its own: not refused; x2 would add
		// one.
		if d := sub("s", "http://im.acme.test/instmsg/aliases/x1", "192.0.2.1"); d.reply.Status != 207 {
			t.Errorf("x1's third subscription: %d %s", d.reply.Status, d.reply.Error)
		} else if _, ended := replaced(d); len(ended) != 1 {
			t.Errorf("x1's third subscription ended %v, want its first", ended)
		}
		wantStatus(t, sub("s2", "http://im.acme.test/instmsg/aliases/x2", "192.0.2.1"), 503)
		// acme's real server, at another network, has its own count; an
		// IPv6 network is its /64.
		wantStatus(t, sub("o", "http://im.acme.test/instmsg/aliases/y", "198.51.100.7"), 207)
		for i := range 3 {
			wantStatus(t, sub("v"+strconv.Itoa(i), "http://im.acme.test/instmsg/aliases/v"+strconv.Itoa(i), "2001:db8:1:2::"+strconv.Itoa(i+1)), 207)
		}
		wantStatus(t, sub("v3", "http://im.acme.test/instmsg/aliases/v3", "2001:db8:1:2:ffff::9"), 503)
		if n, err := w.st.CountWatchers(user("ann"), nil); err != nil || n != 2+3+1+3 {
			t.Errorf("ann has %d watchers (%v), want 9: cat's, dan's, 3 from 192.0.2.1, 1 from 198.51.100.7, 3 from 2001:db8:1:2::/64", n, err)
		}
	})
	t.Run("watches: a principal replacing its own at another network does not grow a full one", func(t *testing.T) {
		w := newWorld(t)
		w.policy.MaxWatchesPerSubscriber, w.policy.MaxWatchesPerNetwork = 2, 3
		sub := func(id, from, client string) *decision { return foreignWatch(w, id, from, client) }
		p := "http://im.acme.test/instmsg/aliases/p"
		wantStatus(t, sub("a1", p, "192.0.2.1"), 207)
		wantStatus(t, sub("a2", p, "192.0.2.1"), 207)
		for i := range 3 {
			wantStatus(t, sub("b"+strconv.Itoa(i), "http://im.acme.test/instmsg/aliases/q"+strconv.Itoa(i), "198.51.100.7"), 207)
		}
		// p, at its bound at 192.0.2.1, would move one to the full network.
		if d := sub("m", p, "198.51.100.7"); d.reply.Status != 503 || len(d.facts) != 0 {
			t.Errorf("p's subscription from the full network: %d, facts %v; want 503 and none", d.reply.Status, types(d))
		}
	})
	t.Run("watches: other organisations hold at most MaxWatchesForeign of a node's, from any networks", func(t *testing.T) {
		w := newWorld(t)
		w.policy.MaxWatchesPerSubscriber, w.policy.MaxWatchesPerNetwork, w.policy.MaxWatchesForeign = 2, 2, 3
		sub := func(id, from, client string) *decision { return foreignWatch(w, id, from, client) }
		for i, client := range []string{"192.0.2.1", "192.0.2.2", "192.0.2.3"} {
			wantStatus(t, sub("f"+strconv.Itoa(i), "http://im.acme.test/instmsg/aliases/x"+strconv.Itoa(i), client), 207)
		}
		d := sub("f3", "http://im.other.test/instmsg/aliases/y", "192.0.2.4")
		wantStatus(t, d, 503)
		if !strings.Contains(d.reply.Error, "together") {
			t.Errorf("error %q", d.reply.Error)
		}
		// Our users still may.
		wantStatus(t, w.do(&events.Subscribe{Req: w.req("c", "cat", "ann", "192.0.2.4"), NotificationType: events.NotifyPropChange,
			CallBack: nodeURL("cat"), CallBackUser: user("cat"), Lifetime: 14400}), 207)
	})
	t.Run("one decision sends at most MaxFanout NOTIFYs", func(t *testing.T) {
		w := newWorld(t)
		w.policy.MaxFanout = 2
		for i, a := range []string{"ben", "cat"} {
			w.login(a, "10.0.0.3", "http://10.0.0.3:400"+strconv.Itoa(i))
			w.login(a, "10.0.0.4", "http://10.0.0.4:400"+strconv.Itoa(i))
			w.watch(a, "ann")
		}
		d := w.setState("ann", "10.0.0.1", "busy", 600)
		if len(d.notes) != 2 || d.unsent != 2 {
			t.Errorf("%d sent, %d left out; want 2 and 2", len(d.notes), d.unsent)
		}
	})
}

// foreignWatch has another organisation's principal from, without
// credentials, at client, subscribe to ann's presence (a minute after the
// last request).
func foreignWatch(w *world, id, from, client string) *decision {
	in := &events.Subscribe{Req: w.req(id, "ben", "ann", client), NotificationType: events.NotifyPropChange, CallBack: from, Lifetime: 14400}
	// As the gateway gives it: normalised (rvp.ParseURL), as the
	// Call-Back is when it is decided.
	if u, err := rvp.ParseURL(from); err == nil {
		from = u.String()
	}
	in.Req.From, in.Req.FromUser, in.Req.Auth = from, events.User{}, events.Identity{}
	w.now = w.now.Add(time.Minute)
	return w.do(in)
}

// replaced returns the ids of the views and of the subscriptions d ends
// to make room for a new one.
func replaced(d *decision) (views, subs []int32) {
	for _, f := range d.facts {
		switch e := f.(type) {
		case *events.ViewEnded:
			if e.Reason == events.EndReplaced {
				views = append(views, e.ID)
			}
		case *events.SubscriptionEnded:
			if e.Reason == events.EndReplaced {
				subs = append(subs, e.ID)
			}
		}
	}
	return views, subs
}

// TestLeaseRefreshIsNoChange: a client refreshing its lease with the state
// it already has does not change what the principal's watchers see. The
// spec (S§5.5, §5.5.2) calls the notifications a late refresh causes
// "spurious"; digest §3.5.4 makes the effective state the view whose
// state was set last, and only changes of it are told. Miranda refreshes
// every 15 minutes, librvp before its 1200 s lease ends: with two clients
// in different states, each refresh used to flip the state watchers see.
func TestLeaseRefreshIsNoChange(t *testing.T) {
	w := newWorld(t)
	w.login("ann", "10.0.0.1", annCB)
	w.login("ann", "10.0.0.2", annCB2)
	w.login("ben", "10.0.0.3", benCB)
	w.watch("ben", "ann")
	w.setState("ann", "10.0.0.1", "busy", 1200)
	w.now = w.now.Add(time.Minute)
	d := w.setState("ann", "10.0.0.2", "away", 1200)
	wantStrings(t, "notified on the second client's change", sent(d), []string{benCB + " away"})
	// The first client refreshes its lease, its state unchanged.
	w.now = w.now.Add(15 * time.Minute)
	d = w.setState("ann", "10.0.0.1", "busy", 1200)
	wantStatus(t, d, 207)
	if s := sent(d); len(s) != 0 {
		t.Errorf("a lease refresh notified %v", s)
	}
	if p := w.presence("ann"); p.Others != "away" {
		t.Errorf("after the refresh watchers see %q, want away (the state set last)", p.Others)
	}
	// A change of state on the first client is a change, and is told.
	w.now = w.now.Add(time.Minute)
	d = w.setState("ann", "10.0.0.1", "on-phone", 1200)
	wantStrings(t, "notified on the first client's change", sent(d), []string{benCB + " on-phone"})
}

// TestAllPropLeavesOutWhatMayNotBeRead: a PROPFIND d:allprop is answered
// with the properties the requester may read, as the answer to a property
// SUBSCRIBE is; those it may not read are not reported in a 403 propstat.
// librvp's sign-in ACL write grants all principals send-to and presence
// only (librvp-wire §2.5), and Net::RVP, whose get/info sends d:allprop
// (netrvp-wire §8.1), dies on a multistatus with a second propstat
// (netrvp-wire §0.8). RFC 4918 §9.1 lets allprop leave such properties
// out. A property asked for by name is still refused in a 403 propstat.
func TestAllPropLeavesOutWhatMayNotBeRead(t *testing.T) {
	w := newWorld(t)
	creds := []string{events.CredAssertion, events.CredDigest, events.CredNTLM}
	d := w.do(&events.ACL{Req: w.req("acl", "ann", "ann", "10.0.0.1"), Write: true, ACEs: []events.ACE{
		{Credentials: creds, Grant: []string{events.RightSendTo, events.RightPresence}}}})
	wantStatus(t, d, 200)
	w.setState("ann", "10.0.0.1", "busy", 1200)

	d = w.decide(&events.PropFind{Req: w.req("pf", "ben", "ann", "10.0.0.3"), All: true})
	wantStatus(t, d, 207)
	if len(d.reply.Forbidden) != 0 || len(d.reply.Missing) != 0 {
		t.Errorf("allprop: forbidden %v, missing %v; want neither (one propstat)", d.reply.Forbidden, d.reply.Missing)
	}
	if len(d.reply.Found) != 1 || d.reply.Found[0].Prop != events.PropState || d.reply.Found[0].Value != "busy" {
		t.Errorf("allprop found %+v, want r:state busy alone", d.reply.Found)
	}
	// The SUBSCRIBE answer shows the same.
	s := w.decide(&events.Subscribe{Req: w.req("w", "ben", "ann", "10.0.0.3"), NotificationType: events.NotifyPropChange,
		CallBack: nodeURL("ben"), CallBackUser: user("ben")})
	wantStatus(t, s, 207)
	if fmt.Sprint(s.reply.Found) != fmt.Sprint(d.reply.Found) || len(s.reply.Forbidden) != 0 {
		t.Errorf("SUBSCRIBE answer %+v / %v, PROPFIND allprop %+v", s.reply.Found, s.reply.Forbidden, d.reply.Found)
	}
	// Named, a property the requester may not read is refused as such.
	d = w.decide(&events.PropFind{Req: w.req("pf2", "ben", "ann", "10.0.0.3"), Props: []events.Prop{events.PropDisplayName}})
	if len(d.reply.Forbidden) != 1 || d.reply.Forbidden[0] != events.PropDisplayName {
		t.Errorf("named displayname: forbidden %v", d.reply.Forbidden)
	}
}

// TestWatchLimitPerUser: a user of ours holds at most MaxWatchesPerUser
// watches on the home server, across its nodes. Beyond it a watch of a
// further node is refused (503, Retry-After, no fact); a renewal, a
// watch replacing the subscriber's own on the node, and another
// subscriber's are not; ending one makes room. The projection rebuilt
// from the facts counts the same, and decides the same.
func TestWatchLimitPerUser(t *testing.T) {
	w := newWorld(t)
	w.policy.MaxWatchesPerUser = 3
	nodes := []string{"n1", "n2", "n3", "n4", "n5"}
	for _, a := range nodes {
		u := user(a)
		w.dir.users[u] = &projections.UserRecord{User: u, Home: testHome, DisplayName: a, Enabled: true}
	}
	watch := func(w *world, id, watcher, node string) *decision {
		w.now = w.now.Add(time.Minute)
		return w.do(&events.Subscribe{Req: w.req(id, watcher, node, "10.0.0.1"), NotificationType: events.NotifyPropChange,
			CallBack: nodeURL(watcher), CallBackUser: user(watcher), Lifetime: 14400})
	}
	refused := func(t *testing.T, d *decision) {
		t.Helper()
		wantStatus(t, d, 503)
		if len(d.facts) != 0 || d.reply.RetryAfter <= 0 || !strings.Contains(d.reply.Error, "ben@example.test") || d.limited == nil {
			t.Errorf("facts %v, Retry-After %d, error %q, logged %v", types(d), d.reply.RetryAfter, d.reply.Error, d.limited)
		}
	}
	ids := map[string]int32{}
	for _, n := range nodes[:3] {
		d := watch(w, "w-"+n, "ben", n)
		wantStatus(t, d, 207)
		ids[n] = d.reply.SubscriptionID
	}
	count := func(t *testing.T, st projections.HomeReader, want int) {
		t.Helper()
		if n, err := st.CountWatching(projections.SubscriberKey(user("ben"), user("ben"), ""), 0, nil); err != nil || n != want {
			t.Errorf("ben holds %d watches (%v), want %d", n, err, want)
		}
	}
	count(t, w.st, 3)
	// A fourth node: refused.
	refused(t, watch(w, "w-n4", "ben", "n4"))
	count(t, w.st, 3)
	// A renewal is no new watch.
	wantStatus(t, w.do(&events.Renew{Req: w.req("r-n1", "ben", "n1", "10.0.0.1"), ID: ids["n1"], Lifetime: 14400}), 200)
	// A watch of a node ben watches already (librvp's next sign-in)
	// replaces its own there.
	d := watch(w, "w-n2-again", "ben", "n2")
	wantStatus(t, d, 207)
	if _, ended := replaced(d); !slices.Equal(ended, []int32{ids["n2"]}) {
		t.Errorf("ben's second watch of n2 ended %v, want its first %d", ended, ids["n2"])
	}
	ids["n2"] = d.reply.SubscriptionID
	// As one that makeRoom makes room for (a node's subscriber bound).
	w.policy.MaxWatchesPerSubscriber = 1
	d = watch(w, "w-n3-again", "ben", "n3")
	wantStatus(t, d, 207)
	if _, ended := replaced(d); !slices.Equal(ended, []int32{ids["n3"]}) {
		t.Errorf("ben's second watch of n3 ended %v, want its first %d", ended, ids["n3"])
	}
	ids["n3"] = d.reply.SubscriptionID
	w.policy.MaxWatchesPerSubscriber = 32
	count(t, w.st, 3)
	// Another subscriber has its own count.
	wantStatus(t, watch(w, "c-n4", "cat", "n4"), 207)
	// Ending one makes room for one.
	wantStatus(t, w.do(&events.Unsubscribe{Req: w.req("u-n1", "ben", "n1", "10.0.0.1"), ID: ids["n1"]}), 200)
	count(t, w.st, 2)
	wantStatus(t, watch(w, "w-n4", "ben", "n4"), 207)
	refused(t, watch(w, "w-n5", "ben", "n5"))
	count(t, w.st, 3)

	// Rebuilt in Pebble from the facts: the same count, the same decisions.
	db, err := projections.Open("", projections.Options{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	h, err := projections.OpenHome(db, testHome)
	if err != nil {
		t.Fatal(err)
	}
	var sf []projections.SeqFact
	for i, f := range w.facts {
		sf = append(sf, projections.SeqFact{Seq: uint64(i + 1), Fact: f})
	}
	if err := h.ApplyFacts(sf); err != nil {
		t.Fatal(err)
	}
	count(t, h, 3)
	rebuilt := *w
	rebuilt.st = projections.NewOverlay(h)
	refused(t, watch(&rebuilt, "p-n5", "ben", "n5"))
	d = watch(&rebuilt, "p-n4-again", "ben", "n4")
	wantStatus(t, d, 207)
	if _, ended := replaced(d); len(ended) != 1 {
		t.Errorf("ben's second watch of n4 ended %v, want its first", ended)
	}
	count(t, rebuilt.st, 3)
	count(t, w.st, 3)
}

// annMovedToHome2 returns a world at home2 whose directory has ann moved
// there from home1 by move 40: her requests wait for her handoff.
func annMovedToHome2(t *testing.T) *world {
	t.Helper()
	to := newWorld(t)
	rec := to.dir.users[user("ann")]
	rec.Home, rec.Move, rec.MovedAt, rec.MovedFrom = "home2", 40, to.now, "home1"
	return to
}

// handoffOf decodes a handoff message as the new home server reads it.
func handoffOf(t *testing.T, p handoffPart) *events.Handoff {
	t.Helper()
	ev, err := events.Decode(events.TypeHandoff, p.data)
	if err != nil {
		t.Fatal(err)
	}
	return ev.(*events.Handoff)
}
