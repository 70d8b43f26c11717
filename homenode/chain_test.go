package homenode

import (
	"testing"
	"time"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
)

// TestLateHandoffAfterChainedMove: ann, watched by ben, is moved from
// home1 to homeB (directory sequence 10) and on to homeC (20) while
// home1's node is slow. homeB, which has nothing of hers yet, hands its
// (empty) state to homeC under move 20, and homeC takes the move. home1's
// handoff comes later: under move 10, forwarded by homeB, or under move
// 20, at home1's start (strays name the record's move). homeC took a
// handoff as "taken already" when any handoff of a move as recent had
// come, from any home server: home1's was dropped, and ben's subscription
// with it (ben never hears of ann again). A handoff is taken once per
// home server and move it comes from.
func TestLateHandoffAfterChainedMove(t *testing.T) {
	for _, tc := range []struct {
		name string
		move uint64 // the move home1 hands ann off under
	}{
		{"forwarded by homeB", 10},
		{"at home1's start", 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			from := newWorld(t)
			from.login("ben", "10.0.0.3", benCB)
			from.watch("ben", "ann")
			late := from.do(departure{user: user("ann"), to: "homeC", seq: tc.move}).handoff
			if late == nil || len(late.Subs) != 1 {
				t.Fatalf("home1's handoff: %+v, want ben's subscription in it", late)
			}

			to := newWorld(t)
			rec := to.dir.users[user("ann")]
			rec.Home, rec.MovedFrom, rec.Move, rec.MovedAt = testHome, "homeB", 20, to.now
			empty := &events.Handoff{Req: late.Req, From: "homeB", Move: 20}
			empty.ID = handoffID("homeB", user("ann"), 20)
			to.do(empty)
			if done, _ := to.st.Arrived(user("ann")); done != 20 {
				t.Fatalf("homeB's handoff not taken: arrived %d", done)
			}
			got := to.do(late)
			watchers, _ := to.st.Watchers(user("ann"))
			if len(watchers) != 1 {
				t.Errorf("home1's handoff of move %d after homeB's of move 20: %d watchers of ann taken (facts %v), want ben's", tc.move, len(watchers), types(got))
			}
			if done, _ := to.st.Arrived(user("ann")); done != 20 {
				t.Errorf("after home1's handoff of move %d, ann's last arrival is %d, want 20 (the move that brought her here)", tc.move, done)
			}
			// The same handoff again (sent again after a stop) is taken once.
			if again := to.do(late); len(again.facts) != 0 {
				t.Errorf("home1's handoff taken twice: facts %v", types(again))
			}
		})
	}
}

// TestLateHandoffSubscriptionIDClash: ann, watched by ben (subscription
// 2 on her former home server, whose ids are its own), is moved here; her
// handoff comes late, after cat's watch of her was made here, and given
// id 2 by this home server's counter. decideHandoff took the handed-over
// subscription for one it had already (same id) and skipped it: ben's
// subscription lost, silently. It is kept under an id of this home
// server's, and ben's client, which knows it as 2, renews and ends it by
// that id; cat's own subscription 2 is cat's still.
func TestLateHandoffSubscriptionIDClash(t *testing.T) {
	from := newWorld(t)
	from.login("ben", "10.0.0.3", benCB)
	benWatch := from.watch("ben", "ann")
	late := from.do(departure{user: user("ann"), to: "homeC", seq: 10}).handoff
	if late == nil || len(late.Subs) != 1 {
		t.Fatalf("the former home server's handoff: %+v, want ben's subscription in it", late)
	}

	to := newWorld(t)
	rec := to.dir.users[user("ann")]
	rec.Home, rec.MovedFrom, rec.Move, rec.MovedAt = testHome, "homeA", 10, to.now
	late.From = "homeA"
	to.login("cat", "10.0.0.4", "http://10.0.0.4:4000")
	if catWatch := to.watch("cat", "ann"); catWatch != benWatch {
		t.Fatalf("cat's watch of ann is %d, ben's was %d: no clash to test", catWatch, benWatch)
	}
	// A part of the handoff (sent again after a stop), then the whole.
	part := *late
	part.ID, part.More = late.ID+"/part1", true
	to.do(&part)
	to.do(&part)
	to.do(late)
	watchers, _ := to.st.Watchers(user("ann"))
	var ben, cat *projections.Subscription
	for i := range watchers {
		switch watchers[i].Watcher {
		case user("ben"):
			if ben != nil {
				t.Errorf("ben's subscription taken twice: %d and %d", ben.ID, watchers[i].ID)
			}
			ben = &watchers[i]
		case user("cat"):
			cat = &watchers[i]
		}
	}
	if ben == nil || cat == nil {
		t.Fatalf("ann's watchers after the late handoff: %+v, want ben's and cat's", watchers)
	}
	if cat.ID != benWatch || ben.ID == benWatch {
		t.Fatalf("cat's subscription is %d, ben's %d: want cat's %d, ben's another", cat.ID, ben.ID, benWatch)
	}
	benExpires, catExpires := ben.Expires, cat.Expires

	// ben's client renews and ends its subscription by the id it knows.
	to.now = to.now.Add(time.Minute)
	d := to.do(&events.Renew{Req: to.req("ben-renews", "ben", "ann", "10.0.0.3"), ID: benWatch, Lifetime: 14400})
	wantStatus(t, d, 200)
	if d.reply.SubscriptionID != benWatch {
		t.Errorf("ben's renewal answered with subscription %d, want the id it named (%d)", d.reply.SubscriptionID, benWatch)
	}
	if s, _ := to.st.Subscription(user("ann"), ben.ID); s == nil || !s.Expires.After(benExpires) {
		t.Errorf("ben's renewal of %d did not renew his subscription (now %d): %+v", benWatch, ben.ID, s)
	}
	if s, _ := to.st.Subscription(user("ann"), cat.ID); s == nil || !s.Expires.Equal(catExpires) {
		t.Errorf("ben's renewal of %d changed cat's subscription: %+v", benWatch, s)
	}
	d = to.do(&events.Unsubscribe{Req: to.req("ben-ends", "ben", "ann", "10.0.0.3"), ID: benWatch})
	wantStatus(t, d, 200)
	if s, _ := to.st.Subscription(user("ann"), ben.ID); s != nil {
		t.Errorf("ben's unsubscribe of %d left his subscription: %+v", benWatch, s)
	}
	if s, _ := to.st.Subscription(user("ann"), cat.ID); s == nil {
		t.Errorf("ben's unsubscribe of %d ended cat's subscription", benWatch)
	}
}

// TestLateHandoffKnownIDIsRequestersOwn: ann is logged in from two
// clients: from 10.0.0.1 on her former home server (login 1 there), and,
// her handoff late, from 10.0.0.2 here, given 1 by this home server's
// counter. The late handoff's login is kept under a new id, known by 1:
// both of her logins are known to their clients by 1. core.named took an
// id whose subscription is the requester's own for the one meant, and
// never looked further: the first client's renewals of 1 renewed the
// second's login (its own lapsed, silently), and its UNSUBSCRIBE of 1 at
// logout ended the second client's login, leaving its own. The client
// naming 1 is told apart by the address it comes from (Source).
func TestLateHandoffKnownIDIsRequestersOwn(t *testing.T) {
	from := newWorld(t)
	first := from.login("ann", "10.0.0.1", annCB)
	late := from.do(departure{user: user("ann"), to: "homeC", seq: 10}).handoff
	if late == nil || len(late.Subs) != 1 {
		t.Fatalf("the former home server's handoff: %+v, want ann's login in it", late)
	}

	to := newWorld(t)
	rec := to.dir.users[user("ann")]
	rec.Home, rec.MovedFrom, rec.Move, rec.MovedAt = testHome, "homeA", 10, to.now
	late.From = "homeA"
	if second := to.login("ann", "10.0.0.2", annCB2); second != first {
		t.Fatalf("ann's second login is %d, her first was %d: no clash to test", second, first)
	}
	to.do(late)
	logins, _ := to.st.Logins(user("ann"))
	var x, y *projections.Subscription // the first client's, the second's
	for i := range logins {
		switch logins[i].CallBack {
		case annCB:
			x = &logins[i]
		case annCB2:
			y = &logins[i]
		}
	}
	if x == nil || y == nil || y.ID != first || x.ID == first || x.Known != first {
		t.Fatalf("ann's logins after the late handoff: %+v, want both clients', the first's renumbered and known by %d", logins, first)
	}
	xExpires, yExpires := x.Expires, y.Expires

	to.now = to.now.Add(time.Minute)
	wantStatus(t, to.do(&events.Renew{Req: to.req("ann-renews-x", "ann", "ann", "10.0.0.1"), ID: first, Lifetime: 14400}), 200)
	if s, _ := to.st.Subscription(user("ann"), x.ID); s == nil || !s.Expires.After(xExpires) {
		t.Errorf("the first client's renewal of %d did not renew its login (now %d): %+v", first, x.ID, s)
	}
	if s, _ := to.st.Subscription(user("ann"), y.ID); s == nil || !s.Expires.Equal(yExpires) {
		t.Errorf("the first client's renewal of %d renewed the second client's login: %+v", first, s)
	}
	wantStatus(t, to.do(&events.Unsubscribe{Req: to.req("ann-ends-x", "ann", "ann", "10.0.0.1"), ID: first}), 200)
	if s, _ := to.st.Subscription(user("ann"), y.ID); s == nil {
		t.Errorf("the first client's unsubscribe of %d ended the second client's login", first)
	}
	if s, _ := to.st.Subscription(user("ann"), x.ID); s != nil {
		t.Errorf("the first client's unsubscribe of %d left its own login: %+v", first, s)
	}
	// The second client's login is its own still.
	wantStatus(t, to.do(&events.Renew{Req: to.req("ann-renews-y", "ann", "ann", "10.0.0.2"), ID: first, Lifetime: 14400}), 200)
	if s, _ := to.st.Subscription(user("ann"), y.ID); s == nil || !s.Expires.After(yExpires) {
		t.Errorf("the second client's renewal of %d did not renew its login: %+v", first, s)
	}
}
