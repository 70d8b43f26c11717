package homenode

import "testing"

// TestDepartureAfterMoveBack: ann is moved from this home server to home2
// (directory sequence 40), then back here (41), before this node has
// handed her off (its loop busy, the move waiting in its channel). Deciding
// the first move's departure on a directory that has the second handed her
// state to home2 and ended it here, though she lives here. home2, which
// routes a handoff for a user homed elsewhere as any request, would send
// its own handoff of the second move here first and forward this one
// after it, which decideHandoff takes for a move already taken (41 >= 40),
// and drops: her watchers' subscriptions lost. It now hands off nothing:
// her state stays where she is.
func TestDepartureAfterMoveBack(t *testing.T) {
	w := newWorld(t)
	w.login("ann", "10.0.0.1", annCB)
	w.login("ben", "10.0.0.3", benCB)
	w.watch("ben", "ann")
	w.setState("ann", "10.0.0.1", "busy", 600)
	rec := w.dir.users[user("ann")]
	rec.Home, rec.MovedFrom, rec.Move, rec.MovedAt = testHome, "home2", 41, w.now

	d := w.decide(departure{user: user("ann"), to: "home2", seq: 40})
	if d.handoff != nil || len(d.facts) != 0 {
		t.Errorf("moved back before her departure: handed off to %s (%v), facts %v", d.handTo, d.handoff != nil, types(d))
	}

	// Her directory record not yet at the move (the node hears of moves
	// from the stream, ahead of its projection): she is handed off.
	rec.Home, rec.MovedFrom, rec.Move = testHome, "", 0
	if d := w.decide(departure{user: user("ann"), to: "home2", seq: 40}); d.handoff == nil {
		t.Errorf("a move the directory projection has not applied yet was not handed off")
	}
}
