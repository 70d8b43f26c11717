package homenode

import (
	"testing"

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
