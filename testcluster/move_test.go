package testcluster

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
	"github.com/rvp-im/rvpd/rvp"
)

// heldBy reports what home server h holds of u: its subscriptions and
// presence views.
func heldBy(c *Cluster, h string, u events.User) (subs, views int, err error) {
	p := c.Homes[h].Node.Projection()
	s, err := p.Subscriptions(u)
	if err != nil {
		return 0, 0, err
	}
	v, err := p.Views(u)
	return len(s), len(v), err
}

// stateOf asks for alias's state through the router, as watcher.
func stateOf(watcher *Client, alias string) string {
	r := watcher.Do("PROPFIND", "/instmsg/aliases/"+alias,
		[]byte(`<?xml version="1.0"?><d:propfind xmlns:d="DAV:" xmlns:r="http://schemas.microsoft.com/rvp/"><d:prop><r:state/></d:prop></d:propfind>`),
		watcher.From(), "Content-Type: text/xml", "Depth: 0")
	if r.Status != 207 {
		return "status " + strconv.Itoa(r.Status)
	}
	b := string(r.Body)
	if i := strings.Index(b, "<r:state><r:"); i >= 0 {
		rest := b[i+len("<r:state><r:"):]
		if j := strings.Index(rest, "/>"); j >= 0 {
			return rest[:j]
		}
	}
	return b
}

// handedOver waits until home server to holds subs subscriptions and
// views views of u, and from none.
func handedOver(t *testing.T, c *Cluster, u events.User, from, to string, subs, views int) {
	t.Helper()
	Eventually(t, wait, func() error {
		if s, v, err := heldBy(c, to, u); err != nil || s != subs || v != views {
			return fmt.Errorf("%s holds %d subscriptions and %d views of %s (%v); want %d and %d", to, s, v, u, err, subs, views)
		}
		if s, v, err := heldBy(c, from, u); err != nil || s+v != 0 {
			return fmt.Errorf("%s still holds %d subscriptions and %d views of %s (%v)", from, s, v, u, err)
		}
		return nil
	})
}

// staleRequest publishes a PROPFIND of u's state to home's request
// subject, as a gateway whose directory does not have u's move yet would,
// and returns the reply.
func staleRequest(t *testing.T, c *Cluster, home string, u events.User) *events.Reply {
	t.Helper()
	nc := c.connect("stale-gateway")
	defer nc.Close()
	now := time.Now()
	ev := &events.PropFind{Req: events.Req{ID: "stale-1", At: now, Deadline: now.Add(wait), Gateway: "stale", Client: "127.0.0.1",
		Node: u, NodeURL: rvp.LogicalURL(c.IMHost, u.Alias), Auth: events.Identity{Scheme: "ntlm", User: u}},
		Props: []events.Prop{events.PropState}}
	sub, err := nc.SubscribeSync(events.ReplySubject("stale", ev.ID))
	if err != nil {
		t.Fatal(err)
	}
	// The server has the subscription before the request goes out on
	// another connection (a busy machine delayed it past the reply).
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	data, err := events.Encode(ev)
	if err != nil {
		t.Fatal(err)
	}
	msg := nats.NewMsg(events.RequestSubject(home, u))
	msg.Header.Set(events.HeaderType, ev.Type())
	msg.Header.Set(events.HeaderReply, sub.Subject)
	msg.Data = data
	if _, err := c.JS.PublishMsg(t.Context(), msg, jetstream.WithMsgID(ev.ID)); err != nil {
		t.Fatal(err)
	}
	m, err := sub.NextMsg(wait)
	if err != nil {
		t.Fatalf("no reply to a request routed to %s: %v", home, err)
	}
	rep, err := events.Decode(m.Header.Get(events.HeaderType), m.Data)
	if err != nil {
		t.Fatal(err)
	}
	return rep.(*events.Reply)
}

// TestClusterMoveUser moves alice, online and watched from both home
// servers, from home1 to home2 (rvpctl user move): her presence and
// subscriptions follow, her watchers notice nothing but her next change,
// messages reach her both ways, her login renews at home2, and her old
// physical URL redirects. Then it moves her back while home2 is down:
// home2 hands her over when it starts again.
func TestClusterMoveUser(t *testing.T) {
	c := Start(t, Options{Users: map[string]string{"alice": "home1", "bob": "home1", "carol": "home2"},
		Gateways: 2, Routers: 2, Inside: []string{"127.0.0.0/8"}})
	ctx := context.Background()
	alice, bob, carol := c.Client(t, "alice"), c.Client(t, "bob"), c.Client(t, "carol")
	for _, u := range []*Client{alice, bob, carol} {
		u.FollowRedirects = true
		must(t, u.Alias+" login", u.Login(3600), 200)
		must(t, u.Alias+" online", u.SetState("online", 1200, 0), 207)
	}
	for _, w := range []*Client{bob, carol} {
		must(t, w.Alias+" watches alice", w.Watch("alice", 3600), 207)
		w.WaitNotify(0, wait, fromState(alice, "online"))
		must(t, "alice watches "+w.Alias, alice.Watch(w.Alias, 3600), 207)
		alice.WaitNotify(0, wait, fromState(w, "online"))
	}
	au := events.NewUser(c.Domain, "alice")
	// The projection applies acknowledged facts in batches, a moment
	// after their answers.
	var s1, v1 int
	Eventually(t, wait, func() error {
		var err error
		if s1, v1, err = heldBy(c, "home1", au); err != nil || s1 != 3 || v1 != 1 {
			return fmt.Errorf("before the move home1 holds of alice %d subscriptions, %d views (%v); want 3 (login, bob's, carol's) and 1", s1, v1, err)
		}
		return nil
	})
	seenBob, seenCarol := len(bob.Notifies()), len(carol.Notifies())

	if err := c.Admin.MoveUser(ctx, au, "home2"); err != nil {
		t.Fatal(err)
	}
	handedOver(t, c, au, "home1", "home2", s1, v1)
	if got := stateOf(carol, "alice"); got != "online" {
		t.Errorf("alice's state after the move: %s, want online", got)
	}

	// Her watchers on both home servers see her next change, and nothing
	// in between: for them she never went offline.
	must(t, "alice busy at home2", alice.SetState("busy", 1200, 0), 207)
	_, ib := bob.WaitNotify(seenBob, wait, fromState(alice, "busy"))
	_, ic := carol.WaitNotify(seenCarol, wait, fromState(alice, "busy"))
	for _, w := range []struct {
		c    *Client
		from int
		to   int
	}{{bob, seenBob, ib}, {carol, seenCarol, ic}} {
		for _, n := range w.c.Notifies()[w.from:w.to] {
			if n.From() == alice.URL {
				t.Errorf("%s was told of alice during her move: state %q", w.c.Alias, n.State())
			}
		}
	}
	// Her own subscriptions, on bob's and carol's nodes, reach her at home2.
	seenAlice := len(alice.Notifies())
	must(t, "bob away", bob.SetState("away", 1200, 0), 207)
	alice.WaitNotify(seenAlice, wait, fromState(bob, "away"))
	must(t, "carol busy", carol.SetState("busy", 1200, 0), 207)
	alice.WaitNotify(seenAlice, wait, fromState(carol, "busy"))
	for _, p := range [][2]*Client{{bob, alice}, {alice, bob}, {carol, alice}} {
		body := p[0].MessageBody(p[1].Alias, "after the move, from "+p[0].Alias)
		must(t, p[0].Alias+" → "+p[1].Alias, p[0].Send(p[1].Alias, body), 200)
		p[1].WaitNotify(0, wait, func(n Notify) bool { return bytes.Equal(n.Body, body) })
	}
	renew := alice.Do("SUBSCRIBE", "/instmsg/aliases/alice", nil, alice.From(),
		"Subscription-Id: "+strconv.Itoa(alice.LoginID), "Subscription-Lifetime: 3600")
	must(t, "alice renews her login at home2", renew, 200)
	if renew.Header.Get(rvp.HdrSubscriptionID) != strconv.Itoa(alice.LoginID) {
		t.Errorf("renewal answered Subscription-Id %q, want %d", renew.Header.Get(rvp.HdrSubscriptionID), alice.LoginID)
	}

	// A request a gateway whose directory lags routes to home1 is
	// answered by home2.
	if rep := staleRequest(t, c, "home1", au); rep.Status != 207 || len(rep.Found) == 0 || rep.Found[0].Value != "busy" {
		t.Errorf("request routed to the old home server: %+v, want 207 with state busy", rep)
	}

	// The old physical URL (home1's host) redirects to home2's; the
	// client that follows it, as librvp does (the path only, on the same
	// connection), is served there.
	path := "/instmsg/local/" + c.IMHost + "/instmsg/aliases/alice"
	old := NewClient(t, c.Gateways[0].Addr, "alice")
	old.Creds, old.URL = alice.Creds, alice.URL
	r := old.DoHost(c.Gateways[0].Addr, "PROPFIND", path, nil, old.From(), "Depth: 0")
	must(t, "the old physical URL", r, 302)
	if loc, want := r.Header.Get(rvp.HdrLocation), "http://"+c.Gateways[1].Addr+path; loc != want {
		t.Errorf("Location %q, want %q", loc, want)
	}
	old.FollowRedirects = true
	r = old.DoHost(c.Gateways[0].Addr, "PROPFIND", path, nil, old.From(), "Depth: 0")
	must(t, "the old physical URL, followed", r, 207)
	if !strings.Contains(string(r.Body), "<r:busy/>") {
		t.Errorf("alice's node at home2:\n%s", r.Body)
	}

	// Moved back while home2 is down: alice is served by home1 (offline
	// there until home2 is back), and home2 hands her over at its start.
	if err := c.Homes["home2"].Stop(); err != nil {
		t.Fatal(err)
	}
	if err := c.Admin.MoveUser(ctx, au, "home1"); err != nil {
		t.Fatal(err)
	}
	c.Homes["home2"] = c.StartHome("home2")
	handedOver(t, c, au, "home2", "home1", s1, v1)
	if got := stateOf(bob, "alice"); got != "busy" {
		t.Errorf("alice's state after moving back: %s, want busy", got)
	}
	seenAlice = len(alice.Notifies())
	must(t, "bob online", bob.SetState("online", 1200, 0), 207)
	alice.WaitNotify(seenAlice, wait, fromState(bob, "online"))

	// Both home servers' projections are still what their facts say.
	for _, h := range []string{"home1", "home2"} {
		v, err := projections.VerifyHome(ctx, c.JS, c.Homes[h].db, h)
		if err != nil || !v.OK() {
			t.Errorf("verify %s: %v %s", h, err, v.Diff)
		}
	}
}

// factTypes lists the types of the facts of u's aggregate on home.
func factTypes(t *testing.T, c *Cluster, home string, u events.User) string {
	t.Helper()
	cons, err := c.JS.OrderedConsumer(t.Context(), events.FactStream(home), jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.FactSubject(home, u)}})
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for range info.NumPending {
		m, err := cons.Next(jetstream.FetchMaxWait(wait))
		if err != nil {
			t.Fatal(err)
		}
		types = append(types, m.Headers().Get(events.HeaderType))
	}
	return strings.Join(types, " ")
}

// TestClusterMoveUserOldHomeDown moves alice while the node of her home
// server is down: her login renewal at the new home server is held until
// her state arrives (when the old node starts and hands it over), and is
// then answered as before the move, not refused as unknown. The audit
// trail has her departure and arrival.
func TestClusterMoveUserOldHomeDown(t *testing.T) {
	c := Start(t, Options{Users: map[string]string{"alice": "home1", "carol": "home2"}, Gateways: 2, Routers: 2, Inside: []string{"127.0.0.0/8"}})
	ctx := context.Background()
	alice, carol := c.Client(t, "alice"), c.Client(t, "carol")
	for _, u := range []*Client{alice, carol} {
		u.FollowRedirects = true
		must(t, u.Alias+" login", u.Login(3600), 200)
		must(t, u.Alias+" online", u.SetState("online", 1200, 0), 207)
	}
	must(t, "carol watches alice", carol.Watch("alice", 3600), 207)
	carol.WaitNotify(0, wait, fromState(alice, "online"))
	au := events.NewUser(c.Domain, "alice")

	if err := c.Homes["home1"].Stop(); err != nil {
		t.Fatal(err)
	}
	if err := c.Admin.MoveUser(ctx, au, "home2"); err != nil {
		t.Fatal(err)
	}
	c.DirectorySettled() // the gateways route to home2 now
	renewed := make(chan *Response, 1)
	go func() {
		renewed <- alice.Do("SUBSCRIBE", "/instmsg/aliases/alice", nil, alice.From(),
			"Subscription-Id: "+strconv.Itoa(alice.LoginID), "Subscription-Lifetime: 3600")
	}()
	// The renewal waits at home2 (the gateway has routed it there) ...
	Eventually(t, wait, func() error {
		if st := c.Homes["home2"].Node.Stats(); st.Held == 0 {
			return fmt.Errorf("no request held at home2: %+v", st)
		}
		return nil
	})
	// ... until home1 is back and hands alice over.
	c.Homes["home1"] = c.StartHome("home1")
	r := <-renewed
	must(t, "alice's renewal, held for her state", r, 200)
	if r.Header.Get(rvp.HdrSubscriptionID) != strconv.Itoa(alice.LoginID) {
		t.Errorf("renewal answered Subscription-Id %q, want %d", r.Header.Get(rvp.HdrSubscriptionID), alice.LoginID)
	}
	handedOver(t, c, au, "home1", "home2", 2, 1)
	if got := stateOf(carol, "alice"); got != "online" {
		t.Errorf("alice's state after the move: %s, want online", got)
	}

	// The audit trail: on home1 her state ended, then user.departed; on
	// home2 it arrived (her login, carol's watch, her view; user.arrived)
	// before her renewal was decided.
	// (A decision's facts are appended one by one: user.departed may come
	// a moment after her state is gone.)
	Eventually(t, wait, func() error {
		if got, want := factTypes(t, c, "home1", au), "subscription.ended.v1 view.ended.v1 user.departed.v1"; !strings.HasSuffix(got, want) {
			return fmt.Errorf("home1's facts of alice:\n%s\nwant them to end with %s", got, want)
		}
		return nil
	})
	if got, want := factTypes(t, c, "home2", au), "subscription.created.v1 subscription.created.v1 view.set.v1 user.arrived.v1 subscription.renewed.v1"; got != want {
		t.Errorf("home2's facts of alice:\n%s\nwant %s", got, want)
	}
}

// TestClusterMoveUserUnderLoad moves a user of a Load (whose every state
// change sets her mobile description to its mark) to another home server
// and back, her requests going on: her property set last before each move
// is carried to the new home server by the handoff (a fact of the system,
// of the handoff's request), which is not a second decision of the
// request that set it. Every request answered with success has its fact, none decided
// twice (CheckFacts), and each home server's projections equal a rebuild.
// Before CheckFacts told the handoff's copy from a decision, the
// chaos test (TestClusterChaos, seed 1) reported each move's last mark
// of the user moved as "decided twice".
func TestClusterMoveUserUnderLoad(t *testing.T) {
	c := Start(t, Options{Users: map[string]string{"alice": "home1", "bob": "home1", "carol": "home2", "dave": "home2"}, Gateways: 2})
	load := StartLoad(t, c.LoadTarget(), LoadOptions{})
	defer load.Stop()
	load.WaitSucceeded(50, time.Time{}, time.Minute, nil)
	au := events.NewUser(c.Domain, "alice")
	alice := func(r Result) bool { return r.User == "alice" && r.Kind == "presence" }
	for _, to := range []string{"home2", "home1"} {
		if err := c.Admin.MoveUser(t.Context(), au, to); err != nil {
			t.Fatal(err)
		}
		load.WaitSucceeded(5, time.Now(), time.Minute, alice)
	}
	load.Stop()
	fc := load.CheckFacts(c.JS)
	t.Logf("%s", fc)
	for _, f := range load.Failures() {
		t.Errorf("neither a success, a 503 nor a 504: %s", f)
	}
	c.Verify()
}
