package homenode

import (
	"fmt"
	"testing"
	"time"

	"github.com/rvp-im/rvpd/directory"
	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
)

// TestLateHandoffEndsRebuildEqualsLive: ann moves to home1 from home0,
// which is down (its handoff late). While her state is awaited, ben,
// dan and ann UNSUBSCRIBE ids not here (recorded: SubscriptionEnded.Move,
// the ended keys and their count), some twice; then home0's handoff
// comes with ben's watch and ann's login, both ended here, and cat's
// watch. The live Pebble projection equals its rebuild from the fact
// stream, key for key, and the handoff took cat's watch only.
func TestLateHandoffEndsRebuildEqualsLive(t *testing.T) {
	h := newHarness(t, "ben", "cat", "dan")
	ctx := t.Context()
	admin := &directory.Admin{JetStream: h.js, Directory: h.dir, Actor: "test"}
	if err := admin.CreateHomeServer(ctx, "home0", "home0.example.test", "", true); err != nil {
		t.Fatal(err)
	}
	ann := events.NewUser("example.test", "ann")
	if err := admin.EnableUser(ctx, directory.UserSpec{User: ann, Home: "home0"}); err != nil {
		t.Fatal(err)
	}
	move := moveAnn(t, h, admin, ann, "home1")
	const benWatch, annLogin, catWatch = 7, 8, 9
	for i, u := range []struct {
		by string
		id int32
	}{{"ben", benWatch}, {"ben", benWatch}, {"dan", benWatch}, {"dan", 40}, {"ann", annLogin}} {
		id := fmt.Sprintf("unsub-%d", i)
		h.send(&events.Unsubscribe{Req: movedUserReq(id, u.by, "ann"), ID: u.id}, false)
		if r := h.reply(id); r.Status != 200 {
			t.Fatalf("%s's UNSUBSCRIBE of %d: %d %s", u.by, u.id, r.Status, r.Error)
		}
	}
	now := time.Now().UTC()
	url := func(a string) string { return "http://im.example.test/instmsg/aliases/" + a }
	watch := func(id int32, w string) events.SubState {
		return events.SubState{ID: id, Kind: events.NotifyPropChange, CallBack: url(w), Watcher: events.NewUser("example.test", w),
			Subscriber: url(w), SubscriberUser: events.NewUser("example.test", w), NodeURL: url("ann"), Lifetime: 14400,
			Expires: now.Add(4 * time.Hour), Source: "127.0.0.1", Credential: "ntlm"}
	}
	login := events.SubState{ID: annLogin, Kind: events.NotifyPragma, CallBack: "http://" + h.sink.Addr().String(), Watcher: ann,
		Subscriber: url("ann"), SubscriberUser: ann, NodeURL: url("ann"), Lifetime: 14400, Expires: now.Add(4 * time.Hour),
		Source: "127.0.0.1", Credential: "ntlm"}
	hid := handoffID("home0", ann, move)
	h.send(&events.Handoff{Req: events.Req{ID: hid, At: now, Deadline: now.Add(time.Minute), Gateway: "home:home0", Node: ann,
		Auth: events.Identity{Scheme: "internal"}, DirPos: move}, From: "home0", Move: move,
		Subs:  []events.SubState{watch(benWatch, "ben"), login, watch(catWatch, "cat")},
		Views: []events.ViewState{{ID: 3, Value: events.StateBusy, Default: events.StateOffline, Timeout: 1200, Expires: now.Add(20 * time.Minute), Source: "127.0.0.1", Set: now}},
	}, false)
	proj, err := projections.OpenHome(h.db, h.home)
	if err != nil {
		t.Fatal(err)
	}
	until(t, 30*time.Second, "ann's handoff not taken", func() bool {
		done, err := proj.Arrived(ann)
		return err == nil && done >= move
	})
	subs, err := proj.Subscriptions(ann)
	if err != nil {
		t.Fatal(err)
	}
	if len(subs) != 1 || subs[0].Watcher != events.NewUser("example.test", "cat") {
		t.Errorf("ann's subscriptions after the handoff: %+v, want cat's watch only", subs)
	}
	if views, err := proj.Views(ann); err != nil || len(views) != 0 {
		t.Errorf("ann's views after the handoff: %+v (%v), want none (she signed out)", views, err)
	}
	if n, err := proj.EndedCount(ann, move); err != nil || n != 4 {
		t.Errorf("ends recorded for ann: %d (%v), want 4 (ben's again not counted)", n, err)
	}
	h.verify()
}
