package homenode

import (
	"testing"
	"time"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
)

// TestReEnabledKeepsFreshLogins: ann was disabled while her home node
// was down and enabled again; she has signed in again since. What her
// node ends of hers (at its start, or the disable heard late) is what
// was there before the disable: her login and presence of after her
// enabling stay, and her watchers see her as she is now.
func TestReEnabledKeepsFreshLogins(t *testing.T) {
	w := newWorld(t)
	w.login("ben", "10.0.0.3", benCB)
	w.watch("ben", "ann")
	old := w.login("ann", "10.0.0.1", annCB)
	w.setState("ann", "10.0.0.1", "online", 600)
	w.now = w.now.Add(time.Minute)
	w.dir.users[user("ann")].Disabled = w.now
	w.now = w.now.Add(time.Minute)
	fresh := w.login("ann", "10.0.0.2", annCB2)
	w.setState("ann", "10.0.0.2", "busy", 600)

	d := w.do(disabled(user("ann")))
	logins, _ := w.st.Logins(user("ann"))
	if len(logins) != 1 || logins[0].ID != fresh {
		t.Errorf("after the stale ones ended, ann's logins are %v (facts %v), want %d (not %d)", logins, types(d), fresh, old)
	}
	if p := w.presence("ann"); p.Others != events.StateBusy {
		t.Errorf("ann is %s to her watchers, want busy (as she set it after her enabling)", p.Others)
	}
	if s := sent(d); len(s) != 0 {
		t.Errorf("watchers told %v, though ann's presence did not change", s)
	}
}

// TestReplayedMoveOfUserEnabledHere: ann, watched by ben, is moved from
// home1 to home2 and back while home1's node is down, then disabled and
// enabled again on home1 (her record written afresh, with no move). The
// node hears the first move late (its directory was behind at its start,
// and follows the stream from there) and decides it on a directory that
// has caught up: her record, on home1 with no move, was taken for one
// older than the move (a directory behind), and her state handed to
// home2, where she does not live; her requests here were decided
// without it meanwhile. A record enabled after the move is the user
// living here: nothing is handed off.
func TestReplayedMoveOfUserEnabledHere(t *testing.T) {
	w := newWorld(t)
	w.login("ben", "10.0.0.3", benCB)
	w.watch("ben", "ann")
	db, err := projections.Open("", projections.Options{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	dir, err := projections.OpenDirectory(db)
	if err != nil {
		t.Fatal(err)
	}
	ann := user("ann")
	var seq uint64
	apply := func(evs ...events.Event) {
		t.Helper()
		var msgs []projections.Msg
		for _, ev := range evs {
			data, err := events.Encode(ev)
			if err != nil {
				t.Fatal(err)
			}
			seq++
			msgs = append(msgs, projections.Msg{Seq: seq, Type: ev.Type(), Data: data})
		}
		if err := dir.ApplyBatch(msgs); err != nil {
			t.Fatal(err)
		}
	}
	meta := events.Meta{At: w.now, Actor: "test"}
	apply(&events.UserEnabled{Meta: meta, User: ann, Home: testHome})
	apply(&events.UserMoved{Meta: meta, User: ann, From: testHome, Home: "home2"})
	move := seq
	decideOn := func() *decision {
		t.Helper()
		d, err := decide(View{Home: testHome, State: w.st, Dir: dir}, w.policy, departure{user: ann, to: "home2", seq: move}, w.now)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	apply(&events.UserMoved{Meta: meta, User: ann, From: "home2", Home: testHome},
		&events.UserDisabled{Meta: meta, User: ann},
		&events.UserEnabled{Meta: meta, User: ann, Home: testHome})
	if d := decideOn(); d.handoff != nil || len(d.facts) != 0 {
		t.Errorf("ann, enabled again on home1 after her move away, handed off to %s (facts %v)", d.handTo, types(d))
	}
}
