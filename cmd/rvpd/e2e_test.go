package main

import (
	"bytes"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rvp-im/rvpd/rvp"
	"github.com/rvp-im/rvpd/testcluster"
)

const wait = 10 * time.Second

func mustStatus(t *testing.T, what string, r *testcluster.Response, want int) {
	t.Helper()
	if r.Status != want {
		t.Fatalf("%s: status %d, want %d; body %q", what, r.Status, want, r.Body)
	}
}

func subID(t *testing.T, r *testcluster.Response) int {
	t.Helper()
	id, err := strconv.Atoi(r.Header.Get(rvp.HdrSubscriptionID))
	if err != nil || id <= 0 {
		t.Fatalf("Subscription-Id %q is not a positive integer", r.Header.Get(rvp.HdrSubscriptionID))
	}
	return id
}

// stateFrom matches a propnotification of who's state.
func stateFrom(who *testcluster.Client, state string) func(testcluster.Notify) bool {
	return func(n testcluster.Notify) bool { return n.From() == who.URL && n.State() == state }
}

// count returns how many NOTIFYs c received that match.
func count(c *testcluster.Client, match func(testcluster.Notify) bool) int {
	k := 0
	for _, n := range c.Notifies() {
		if match(n) {
			k++
		}
	}
	return k
}

// TestDevEndToEnd drives the whole data path of `rvpd dev` (gateway,
// request events, home node, facts, Pebble, replies, NOTIFY callbacks)
// with three simulated clients, each with its own callback listener.
func TestDevEndToEnd(t *testing.T) {
	p := startDev(t, t.TempDir())
	alice := newClient(t, p.addr, "alice")
	bob := newClient(t, p.addr, "bob")
	carol := newClient(t, p.addr, "carol")

	// Log in: 200 with an integer id and the granted lifetime.
	for _, c := range []*testcluster.Client{alice, bob} {
		r := c.Login(14400)
		mustStatus(t, c.Alias+" login", r, 200)
		subID(t, r)
		if got := r.Header.Get(rvp.HdrLifetime); got != "14400" {
			t.Errorf("%s login: Subscription-Lifetime %q, want 14400", c.Alias, got)
		}
		if len(r.Body) != 0 {
			t.Errorf("%s login: body %q, want none", c.Alias, r.Body)
		}
	}
	// Presence: a leased state, 207 with the view id and timeout.
	for _, c := range []*testcluster.Client{alice, bob} {
		r := c.SetState("online", 1200, 0)
		mustStatus(t, c.Alias+" online", r, 207)
		body := string(r.Body)
		for _, want := range []string{
			"<d:href>" + c.URL + "</d:href>",
			"<r:state><r:leased-value><r:value><r:online/></r:value><r:default-value><r:offline/></r:default-value><d:timeout>1200</d:timeout></r:leased-value><r:view-id>",
			"<d:status>HTTP/1.1 200 Successful</d:status>",
		} {
			if !strings.Contains(body, want) {
				t.Errorf("%s PROPPATCH answer lacks %q:\n%s", c.Alias, want, body)
			}
		}
		if r.Header.Get(rvp.HdrContentType) != "text/xml" {
			t.Errorf("PROPPATCH answer Content-Type %q", r.Header.Get(rvp.HdrContentType))
		}
	}

	// Buddies: each watches the other; 207 with the current properties,
	// then the current state pushed by NOTIFY.
	for _, pair := range [][2]*testcluster.Client{{alice, bob}, {bob, alice}} {
		w, u := pair[0], pair[1]
		r := w.Watch(u.Alias, 14400)
		mustStatus(t, w.Alias+" watches "+u.Alias, r, 207)
		subID(t, r)
		want := "<d:response><d:href>" + u.URL + "</d:href><d:propstat><d:prop><r:state><r:online/></r:state><d:displayname>"
		if !strings.Contains(string(r.Body), want) {
			t.Errorf("watch answer lacks %q:\n%s", want, r.Body)
		}
		w.WaitNotify(0, wait, stateFrom(u, "online"))
	}

	// State changes: exactly one NOTIFY per change per subscription.
	mustStatus(t, "bob busy", bob.SetState("busy", 1200, 0), 207)
	alice.WaitNotify(0, wait, stateFrom(bob, "busy"))
	mustStatus(t, "alice away", alice.SetState("away", 1200, 0), 207)
	bob.WaitNotify(0, wait, stateFrom(alice, "away"))
	mustStatus(t, "bob back online", bob.SetState("online", 1200, 0), 207)
	_, i := alice.WaitNotify(0, wait, stateFrom(bob, "busy"))
	alice.WaitNotify(i+1, wait, stateFrom(bob, "online"))
	n, _ := alice.WaitNotify(0, wait, stateFrom(bob, "busy"))
	if !strings.Contains(string(n.Body), "<r:propnotification><r:notification-from><r:contact><d:href>"+bob.URL+"</d:href>") ||
		!strings.Contains(string(n.Body), "<d:propertyupdate><d:set><d:prop><r:state><r:busy/></r:state></d:prop></d:set></d:propertyupdate>") {
		t.Errorf("propnotification shape:\n%s", n.Body)
	}
	if n.Header.Get("Content-Type") != "text/xml" || n.Header.Get("Content-Length") == "" {
		t.Errorf("propnotification headers: %v", n.Header)
	}

	// Messages both ways, byte for byte, with non-ASCII text and CDATA.
	for _, pair := range [][2]*testcluster.Client{{alice, bob}, {bob, alice}} {
		from, to := pair[0], pair[1]
		text := "Grüße, " + to.Alias + "! <b>bold</b> & ✓ " + from.Alias
		body := from.MessageBody(to.Alias, text)
		mustStatus(t, from.Alias+" → "+to.Alias, from.Send(to.Alias, body), 200)
		got, _ := to.WaitNotify(0, wait, func(n testcluster.Notify) bool {
			return bytes.Contains(n.Body, []byte("r:message")) && n.From() == from.URL
		})
		if !bytes.Equal(got.Body, body) {
			t.Errorf("message body changed in transit:\nsent %q\n got %q", body, got.Body)
		}
		if got.Header.Get("RVP-Hop-Count") != "2" || got.Header.Get("Content-Type") != "text/xml" || got.Header.Get(rvp.HdrFromPrincipal) != from.URL {
			t.Errorf("forwarded message headers: %v", got.Header)
		}
	}

	// carol has no client: 412. An unknown user: 404.
	r := alice.Send("carol", alice.MessageBody("carol", "are you there?"))
	mustStatus(t, "message to offline carol", r, 412)
	mustStatus(t, "message to nobody", alice.Send("nobody", alice.MessageBody("nobody", "hello?")), 404)
	if len(carol.Notifies()) != 0 {
		t.Errorf("carol received %d NOTIFYs without logging in", len(carol.Notifies()))
	}

	// A lease that lapses turns into r:offline for the watchers.
	mustStatus(t, "bob short lease", bob.SetState("on-phone", 2, 0), 207)
	alice.WaitNotify(0, wait, stateFrom(bob, "on-phone"))
	alice.WaitNotify(0, wait, stateFrom(bob, "offline"))

	// Exactly one NOTIFY per change: every change so far was notified once.
	for _, c := range []struct {
		to    *testcluster.Client
		from  *testcluster.Client
		state string
		want  int
	}{
		{alice, bob, "busy", 1}, {alice, bob, "on-phone", 1}, {alice, bob, "offline", 1},
		{bob, alice, "away", 1}, {alice, bob, "online", 2}, // the push after the watch, and the return from busy
	} {
		if got := count(c.to, stateFrom(c.from, c.state)); got != c.want {
			t.Errorf("%s got %d NOTIFYs of %s %s, want %d", c.to.Alias, got, c.from.Alias, c.state, c.want)
		}
	}
}
