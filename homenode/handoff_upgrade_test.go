package homenode

import (
	"testing"

	"github.com/rvp-im/rvpd/events"
)

// TestHandoffPartsAcrossUpgrade: a node of the version before the logins
// went in the last part (b35b89a) sent the first part of a handoff in
// parts, numbered 1, with the subscriptions in their order (her logins
// first), and stopped; upgraded, it hands the user off again, its part 1
// bringing other subscriptions (watchers only). The new home server
// takes part 1 once, the older one: every subscription should still be
// taken, from one part or another.
func TestHandoffPartsAcrossUpgrade(t *testing.T) {
	const limit = 16 << 10
	w := newWorld(t)
	for _, ip := range []string{"10.0.0.1", "10.0.0.2", "10.0.0.3"} {
		w.login("ann", ip, "http://"+ip+":4000/ann")
	}
	addWatchers(w, "ann", 300)
	d := w.do(departure{user: user("ann"), to: "home2", seq: 40})
	h := d.handoff
	data, err := events.Encode(h)
	if err != nil {
		t.Fatal(err)
	}
	// The older version's part 1: the first run of h.Subs, in order.
	per := max(1, len(h.Subs)*limit/(2*len(data)))
	old := &events.Handoff{Req: h.Req, From: h.From, Move: h.Move, Subs: h.Subs[:per], More: true, Part: 1}
	old.ID = h.ID + "/part1"
	logins := 0
	for _, s := range old.Subs {
		if s.Kind == events.NotifyPragma {
			logins++
		}
	}
	if logins == 0 {
		t.Fatalf("the older part 1 brings no login (%d subscriptions): the test needs her logins among the first", len(old.Subs))
	}
	parts, err := handoffParts(h, limit)
	if err != nil {
		t.Fatal(err)
	}

	to := annMovedToHome2(t)
	created := map[int32]bool{}
	take := func(h *events.Handoff) {
		for _, f := range to.do(h).facts {
			if f, ok := f.(*events.SubscriptionCreated); ok {
				created[f.ID] = true
			}
		}
	}
	take(old)
	for _, p := range parts {
		take(handoffOf(t, p))
	}
	if len(created) != len(h.Subs) {
		var lost []int32
		for _, s := range h.Subs {
			if !created[s.ID] {
				lost = append(lost, s.ID)
			}
		}
		t.Errorf("%d of %d subscriptions taken (the older part 1 and the upgraded node's %d parts); lost: %v", len(created), len(h.Subs), len(parts), lost)
	}
}
