package homenode

import (
	"testing"
	"time"

	"github.com/rvp-im/rvpd/events"
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
