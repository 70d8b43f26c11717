package main

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/rvp-im/rvpd/rvp"
	"github.com/rvp-im/rvpd/testcluster"
)

// TestDevSubscriptionLifecycle covers renewal, the renewal librvp sends
// (of its second subscription), expiry, UNSUBSCRIBE, every state value,
// typing, and logout.
func TestDevSubscriptionLifecycle(t *testing.T) {
	p := startDev(t, t.TempDir())
	alice := newClient(t, p.addr, "alice")
	bob := newClient(t, p.addr, "bob")
	mustStatus(t, "alice login", alice.Login(14400), 200)
	mustStatus(t, "bob login", bob.Login(14400), 200)
	mustStatus(t, "bob online", bob.SetState("online", 1200, 0), 207)

	// Renewal: 200 with the same id and the granted lifetime.
	w := alice.Watch("bob", 14400)
	mustStatus(t, "alice watches bob", w, 207)
	id := subID(t, w)
	r := alice.Do("SUBSCRIBE", "/instmsg/aliases/bob", nil, alice.From(), "Subscription-Id: "+strconv.Itoa(id), "Subscription-Lifetime: 999999")
	mustStatus(t, "renewal", r, 200)
	if got := r.Header.Get(rvp.HdrSubscriptionID); got != strconv.Itoa(id) {
		t.Errorf("renewal answered Subscription-Id %q, want %d", got, id)
	}
	if got := r.Header.Get(rvp.HdrLifetime); got != "14400" {
		t.Errorf("renewal asking for 999999 s granted %q, want the maximum 14400", got)
	}
	// Someone else may not renew alice's subscription.
	mustStatus(t, "carol renews alice's subscription", bob.Do("SUBSCRIBE", "/instmsg/aliases/bob", nil, "RVP-From-Principal: "+bob.URLOf("carol"), "Subscription-Id: "+strconv.Itoa(id)), 403)

	// librvp renews its self-subscription, never its login: the login is
	// kept alive with it. Login for 2 s, self-watch, renew the self-watch.
	carol := newClient(t, p.addr, "carol")
	mustStatus(t, "carol short login", carol.Login(2), 200)
	self := carol.Watch("carol", 2)
	mustStatus(t, "carol self-watch", self, 207)
	mustStatus(t, "carol renews the self-watch", carol.Do("SUBSCRIBE", "/instmsg/aliases/carol", nil, carol.From(),
		"Subscription-Id: "+strconv.Itoa(subID(t, self)), "Subscription-Lifetime: 600"), 200)
	list := func(c *testcluster.Client, kind string) string {
		r := c.Do("SUBSCRIPTIONS", "/instmsg/aliases/"+c.Alias, nil, c.From(), "Notification-Type: "+kind)
		mustStatus(t, "SUBSCRIPTIONS", r, 200)
		return string(r.Body)
	}
	if !strings.Contains(list(carol, "pragma/notify"), "<d:href>"+carol.CallBack+"</d:href>") {
		t.Fatal("carol's login is not listed")
	}

	// Expiry: alice's second watch of bob lives 1 s, then disappears from
	// SUBSCRIPTIONS without a NOTIFY.
	short := alice.Watch("bob", 1)
	mustStatus(t, "short watch", short, 207)
	shortID := "<r:subscription-id>" + strconv.Itoa(subID(t, short)) + "</r:subscription-id>"
	if !strings.Contains(list(bob, "update/propchange"), shortID) {
		t.Fatal("short watch not listed")
	}
	testcluster.Eventually(t, wait, func() error {
		if strings.Contains(list(bob, "update/propchange"), shortID) {
			return fmt.Errorf("subscription %s still listed", shortID)
		}
		return nil
	})
	r = alice.Do("SUBSCRIBE", "/instmsg/aliases/bob", nil, alice.From(), "Subscription-Id: "+strconv.Itoa(subID(t, short)))
	mustStatus(t, "renewal of an expired subscription", r, 412)
	// carol's login, renewed with her self-watch, outlived its 2 s.
	if !strings.Contains(list(carol, "pragma/notify"), "<d:href>"+carol.CallBack+"</d:href>") {
		t.Error("carol's login expired although librvp-style renewals kept it alive")
	}

	// Every state value is accepted and reaches the watcher.
	seen := len(alice.Notifies())
	for _, st := range []string{"busy", "away", "back-soon", "on-phone", "at-lunch", "idle", "online"} {
		mustStatus(t, "bob "+st, bob.SetState(st, 1200, 0), 207)
		alice.WaitNotify(seen, wait, stateFrom(bob, st))
	}
	// Invisible: watchers see offline.
	mustStatus(t, "bob invisible", bob.SetState("invisible", 1200, 0), 207)
	alice.WaitNotify(seen, wait, stateFrom(bob, "offline"))
	mustStatus(t, "bob online again", bob.SetState("online", 1200, 0), 207)
	_, seen = alice.WaitNotify(seen, wait, func(n testcluster.Notify) bool {
		return n.From() == bob.URL && n.State() == "online" && n.Header.Get("Subscription-Id") != ""
	})

	// Typing travels like a message.
	typing := []byte(strings.Replace(string(alice.MessageBody("bob", "")), "Content-Type: text/plain; charset=UTF-8", "Content-Type: text/x-msmsgscontrol; charset=UTF-8\r\nTypingUser: alice@example.test", 1))
	mustStatus(t, "typing", alice.Send("bob", typing), 200)
	bob.WaitNotify(0, wait, func(n testcluster.Notify) bool { return bytes.Equal(n.Body, typing) })

	// UNSUBSCRIBE: 200, and no NOTIFY afterwards. Unknown ids are 200 too.
	mustStatus(t, "unsubscribe", alice.Do("UNSUBSCRIBE", "/instmsg/aliases/bob", nil, alice.From(), "Subscription-Id: "+strconv.Itoa(id)), 200)
	mustStatus(t, "unsubscribe again", alice.Do("UNSUBSCRIBE", "/instmsg/aliases/bob", nil, alice.From(), "Subscription-Id: "+strconv.Itoa(id)), 200)
	before := count(alice, func(n testcluster.Notify) bool { return n.From() == bob.URL })
	mustStatus(t, "bob busy after the unsubscribe", bob.SetState("busy", 1200, 0), 207)
	// A message after the change is delivered after the change's fan-out
	// was queued; once it arrives, a NOTIFY for the change would have too.
	marker := bob.MessageBody("alice", "marker")
	mustStatus(t, "marker", bob.Send("alice", marker), 200)
	alice.WaitNotify(0, wait, func(n testcluster.Notify) bool { return bytes.Equal(n.Body, marker) })
	if after := count(alice, func(n testcluster.Notify) bool { return n.From() == bob.URL && n.State() != "" }); after != before {
		t.Errorf("alice received %d presence NOTIFYs after unsubscribing", after-before)
	}

	// Logout as librvp does it: unsubscribe the self-watch, PROPPATCH
	// offline. The watcher sees offline, and messages get 412.
	mustStatus(t, "alice watches bob again", alice.Watch("bob", 14400), 207)
	bself := bob.Watch("bob", 14400)
	mustStatus(t, "bob self-watch", bself, 207)
	mustStatus(t, "bob logs out: unsubscribe", bob.Do("UNSUBSCRIBE", "/instmsg/aliases/bob", nil, bob.From(), "Subscription-Id: "+strconv.Itoa(subID(t, bself))), 200)
	off := []byte(`<?xml version="1.0"?>` + "\n" + `<d:propertyupdate xmlns:d="DAV:" xmlns:r="http://schemas.microsoft.com/rvp/" xmlns:a="http://schemas.microsoft.com/rvp/acl/"><d:set><d:prop><r:state><r:offline/></r:state></d:prop></d:set></d:propertyupdate>`)
	mustStatus(t, "bob logs out: offline", bob.Do("PROPPATCH", "/instmsg/aliases/bob", off, bob.From(), "Content-Type: text/xml"), 207)
	alice.WaitNotify(seen, wait, stateFrom(bob, "offline"))
	mustStatus(t, "message to logged-out bob", alice.Send("bob", alice.MessageBody("bob", "gone?")), 412)
}
