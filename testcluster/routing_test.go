package testcluster

import (
	"bytes"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rvp-im/rvpd/rvp"
)

const wait = 10 * time.Second

func must(t *testing.T, what string, r *Response, want int) {
	t.Helper()
	if r.Status != want {
		t.Fatalf("%s: status %d, want %d; body %q", what, r.Status, want, r.Body)
	}
}

func fromState(who *Client, state string) func(Notify) bool {
	return func(n Notify) bool { return n.From() == who.URL && n.State() == state }
}

// signIn signs each client in and sets it online.
func signIn(t *testing.T, cs ...*Client) {
	t.Helper()
	for _, u := range cs {
		must(t, u.Alias+" login", u.Login(3600), 200)
		must(t, u.Alias+" online", u.SetState("online", 1200, 0), 207)
	}
}

// watchEachOther signs x and y in, online; each watches the other and
// sees it online.
func watchEachOther(t *testing.T, x, y *Client) {
	t.Helper()
	signIn(t, x, y)
	must(t, x.Alias+" watches "+y.Alias, x.Watch(y.Alias, 3600), 207)
	must(t, y.Alias+" watches "+x.Alias, y.Watch(x.Alias, 3600), 207)
	x.WaitNotify(0, wait, fromState(y, "online"))
	y.WaitNotify(0, wait, fromState(x, "online"))
}

// twoHomes runs alice on home1 and carol on home2, each reaching the
// routers' host (im.example.test) at the first gateway; they log in, set
// their state, watch each other, see each other's changes and exchange
// messages both ways.
func twoHomes(t *testing.T, c *Cluster, follow bool) (alice, carol *Client) {
	alice, carol = c.Client(t, "alice"), c.Client(t, "carol")
	crossTalk(t, alice, carol, follow)
	return alice, carol
}

// crossTalk: alice and carol log in, set their state, watch each other,
// see each other's changes and exchange messages both ways.
func crossTalk(t *testing.T, alice, carol *Client, follow bool) {
	t.Helper()
	alice.FollowRedirects, carol.FollowRedirects = follow, follow
	watchEachOther(t, alice, carol)
	must(t, "carol busy", carol.SetState("busy", 1200, 0), 207)
	alice.WaitNotify(0, wait, fromState(carol, "busy"))
	must(t, "alice away", alice.SetState("away", 1200, 0), 207)
	carol.WaitNotify(0, wait, fromState(alice, "away"))
	for _, p := range [][2]*Client{{alice, carol}, {carol, alice}} {
		body := p[0].MessageBody(p[1].Alias, "across home servers, from "+p[0].Alias+" ✓")
		must(t, p[0].Alias+" → "+p[1].Alias, p[0].Send(p[1].Alias, body), 200)
		p[1].WaitNotify(0, wait, func(n Notify) bool { return bytes.Equal(n.Body, body) })
	}
}

// TestClusterTwoHomesRedirect: clients inside the firewall topology are
// redirected (302) to their home server and follow, as librvp does.
func TestClusterTwoHomesRedirect(t *testing.T) {
	c := Start(t, Options{Users: map[string]string{"alice": "home1", "carol": "home2"}, Gateways: 2, Routers: 2, Inside: []string{"127.0.0.0/8"}})
	alice, carol := twoHomes(t, c, true)
	if alice.Redirected == 0 || carol.Redirected == 0 {
		t.Errorf("redirects followed: alice %d, carol %d; want some", alice.Redirected, carol.Redirected)
	}

	// Conformance 14: the 302 names the physical URL on home2; the same
	// request there succeeds.
	a := c.Client(t, "alice")
	r := a.Watch("carol", 600)
	must(t, "watch at the router", r, 302)
	home2 := c.Gateways[1].Addr
	if loc := r.Header.Get("Location"); loc != "http://"+home2+"/instmsg/local/im.example.test/instmsg/aliases/carol" {
		t.Fatalf("Location %q", loc)
	}
	direct := NewClient(t, home2, "alice")
	direct.Creds, direct.URL = a.Creds, a.URL
	r = direct.Do("SUBSCRIBE", "/instmsg/local/im.example.test/instmsg/aliases/carol", nil, direct.From(),
		"Notification-Type: update/propchange", "Call-Back: "+a.URL, "Subscription-Lifetime: 600")
	must(t, "the same request at the Location", r, 207)
	if !strings.Contains(string(r.Body), "<d:href>http://im.example.test/instmsg/aliases/carol</d:href>") {
		t.Errorf("207 at the physical URL:\n%s", r.Body)
	}
}

// TestClusterTwoHomesProxy: clients outside the firewall topology are
// proxied: the router host serves them, answers unchanged (conformance 15).
func TestClusterTwoHomesProxy(t *testing.T) {
	c := Start(t, Options{Users: map[string]string{"alice": "home1", "carol": "home2"}, Gateways: 2, Routers: 2, Inside: []string{"10.0.0.0/8"}})
	alice, carol := twoHomes(t, c, false)
	if alice.Redirected+carol.Redirected != 0 {
		t.Errorf("clients outside the firewall were redirected")
	}
	// Conformance 15: the proxied answer is the home server's.
	a := c.Client(t, "alice")
	via := a.Watch("carol", 600)
	must(t, "through the router", via, 207)
	direct := a.Do("SUBSCRIBE", "/instmsg/local/im.example.test/instmsg/aliases/carol", nil, a.From(),
		"Notification-Type: update/propchange", "Call-Back: "+a.URL, "Subscription-Lifetime: 600")
	must(t, "at the physical URL", direct, 207)
	id1, _ := strconv.Atoi(via.Header.Get(rvp.HdrSubscriptionID))
	id2, _ := strconv.Atoi(direct.Header.Get(rvp.HdrSubscriptionID))
	if id1 <= 0 || id2 != id1+1 || !bytes.Equal(via.Body, direct.Body) || via.Header.Get(rvp.HdrLifetime) != direct.Header.Get(rvp.HdrLifetime) {
		t.Errorf("proxied answer differs from the home server's: ids %d/%d\n%s\n%s", id1, id2, via.Body, direct.Body)
	}
}

// TestClusterRouterLoss kills one of two routers during a stream of
// lookups: every one is answered.
func TestClusterRouterLoss(t *testing.T) {
	c := Start(t, Options{Users: map[string]string{"alice": "home1", "carol": "home2"}, Gateways: 2, Routers: 2, Inside: []string{"127.0.0.0/8"}})
	const n = 60
	var wg sync.WaitGroup
	statuses := make([]int, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := c.Client(t, "alice")
			statuses[i] = a.Watch("carol", 600).Status
		}()
		if i == n/3 {
			if err := c.Routers[0].Stop(); err != nil {
				t.Errorf("stop router1: %v", err)
			}
		}
	}
	wg.Wait()
	for i, s := range statuses {
		if s != 302 {
			t.Errorf("lookup %d answered %d, want 302", i, s)
		}
	}
}
