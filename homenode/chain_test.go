package homenode

import (
	"testing"

	"github.com/rvp-im/rvpd/events"
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
