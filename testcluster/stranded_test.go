package testcluster

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/homenode"
)

// strandedBound is how soon after its connection is back a home node has
// the requests handed to it and lost with its NATS server decided and
// answered: well inside AckWait (5 s), after which JetStream would hand
// them out again by itself.
const strandedBound = 2 * time.Second

// TestClusterHomeNodeServerLoss: the NATS server home1's owner is
// connected to hangs, and then dies (SIGSTOP, then SIGKILL), under load.
// home1's consumer of requests, led elsewhere, hands the owner the
// requests sent meanwhile (probes, one per user, sent once the server
// hangs; and the load's); they are lost with the server, and the
// consumer counts them delivered. Once the owner's connection is back
// (to another server), each probe is answered with success within
// strandedBound of the reconnection, not after AckWait; no request
// answered with success lacks its fact or has two (none is decided twice,
// though the node may be handed requests it decided again), and the
// projections equal a rebuild.
//
// The server killed leads none of the raft groups home1 needs (its
// requests stream and consumer, its fact stream, the lease bucket: each
// stepped down to another server first), nor the meta group, and at least
// one gateway is connected to another server: the load and the probes
// use those, so that nothing but the owner's connection is lost for
// home1's requests.
func TestClusterHomeNodeServerLoss(t *testing.T) {
	LongTest(t)
	homeNodeServerLoss(t, true)
}

// TestClusterHomeNodeServerLossQuiet is TestClusterHomeNodeServerLoss
// without the load: no request comes after the probes, whose loss the
// owner learns from its consumer once its connection is back (the last
// deliveries lost, not a gap before the next).
func TestClusterHomeNodeServerLossQuiet(t *testing.T) {
	LongTest(t)
	homeNodeServerLoss(t, false)
}

func homeNodeServerLoss(t *testing.T, loaded bool) {
	users := map[string]string{"alice": "home1", "bob": "home1", "carol": "home1", "dave": "home1",
		"erin": "home2", "frank": "home2", "grace": "home2", "heidi": "home2"}
	loadUsers := slices.Sorted(maps.Keys(users))
	probes := []string{"ivan", "judy", "mike", "nina"}
	for _, p := range probes {
		users[p] = "home1"
	}
	c := Start(t, Options{Users: users, Gateways: 3, Routers: 1, NATS: &NATSClusterOptions{Processes: true}, Standbys: 1,
		LeaseTTL: 10 * time.Second})

	owner, target, gateways := ownerServerApart(t, c, "home1")
	if s := c.NATS.ServerOf("home-" + owner.Name); s != target {
		t.Fatalf("%s is connected to %v, no longer to %s", owner.Name, s, target.Name)
	}
	other, lt := apart(c, target, gateways)
	var load *Load
	if loaded {
		load = StartLoad(t, lt, LoadOptions{Users: loadUsers})
		defer load.Stop()
		load.WaitSucceeded(100, time.Time{}, time.Minute, nil)
	}

	var clients []*Client
	for i, p := range probes {
		cl := NewClient(t, gateways[i%len(gateways)].Addr, p)
		cl.UseHost(c.IMHost)
		cl.Creds = &Credentials{Scheme: SchemeNTLMv1, User: p, Domain: c.NTDomain, Password: c.Password}
		if r := cl.Login(3600); r.Status != 200 {
			t.Fatalf("%s signs in: %d %s", p, r.Status, r.Body)
		}
		clients = append(clients, cl)
	}
	// The requests stream and home1's consumer, seen from a server that
	// stays up.
	obs, err := nats.Connect(other.URL(), nats.Name("observer"))
	if err != nil {
		t.Fatal(err)
	}
	defer obs.Close()
	js, _ := jetstream.New(obs)
	ctx := t.Context()
	reqs, err := js.Stream(ctx, events.StreamRequests)
	if err != nil {
		t.Fatal(err)
	}
	cons, err := js.Consumer(ctx, events.StreamRequests, homenode.ConsumerName("home1"))
	if err != nil {
		t.Fatal(err)
	}
	lastOf := func(p string) uint64 {
		m, err := reqs.GetLastMsgForSubject(ctx, events.RequestSubject("home1", events.User{Domain: c.Domain, Alias: p}))
		if err != nil {
			return 0
		}
		return m.Sequence
	}
	signedIn := map[string]uint64{}
	for _, p := range probes {
		if signedIn[p] = lastOf(p); signedIn[p] == 0 {
			t.Fatalf("%s's sign-in is not in %s", p, events.StreamRequests)
		}
	}
	back := owner.nc.StatusChanged(nats.CONNECTED)
	defer owner.nc.RemoveStatusListener(back)
	// When the owner's connection is back (KillWatching returns only once
	// the groups the server led are led again, seconds later).
	reconnection := make(chan time.Time, 1)
	go func() {
		if _, ok := <-back; ok {
			reconnection <- time.Now()
		}
	}()

	type probeResult struct {
		who        string
		status     int
		err        error
		start, end time.Time
	}
	answered := make(chan probeResult, len(probes))
	target.Freeze()
	frozen := time.Now()
	for i, cl := range clients {
		go func() {
			r := probeResult{who: cl.Alias, start: time.Now()}
			resp, err := cl.TryRaw(cl.request("", "PROPPATCH", "/instmsg/aliases/"+cl.Alias, presenceBody(states[i%len(states)], "probe-"+cl.Alias),
				"Content-Type: text/xml", cl.From()))
			r.end, r.err = time.Now(), err
			if err == nil {
				r.status = resp.Status
			}
			answered <- r
		}()
	}
	// Every probe is in the stream and handed out by the consumer: on its
	// way to the owner, through the server that hangs.
	var (
		handedOut time.Time
		atHandout *jetstream.ConsumerInfo
	)
	Eventually(t, 10*time.Second, func() error {
		var top uint64
		for _, p := range probes {
			seq := lastOf(p)
			if seq <= signedIn[p] {
				return fmt.Errorf("%s's probe is not in %s yet", p, events.StreamRequests)
			}
			top = max(top, seq)
		}
		info, err := cons.Info(ctx)
		if err != nil {
			return err
		}
		if info.Delivered.Stream < top {
			return fmt.Errorf("home1's consumer has handed out up to %d, the last probe is %d", info.Delivered.Stream, top)
		}
		handedOut, atHandout = time.Now(), info
		return nil
	})
	// What a reset of the consumer to its ack floor would hand out again:
	// home1's requests between its floor and its last delivery, of which
	// those not pending were acknowledged (decided) already.
	above := 0
	for seq := atHandout.AckFloor.Stream + 1; seq <= atHandout.Delivered.Stream && seq <= atHandout.AckFloor.Stream+10000; seq++ {
		if m, err := reqs.GetMsg(ctx, seq); err == nil && strings.HasPrefix(m.Subject, events.RequestRoot+".home1.") {
			above++
		}
	}
	e := c.NATS.KillWatching(target, 60*time.Second)
	at := func(tm time.Time) time.Duration { return tm.Sub(e.Killed).Round(time.Millisecond) }
	var reconnected time.Time
	select {
	case reconnected = <-reconnection:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s not reconnected 30 s after %s was killed", owner.Name, target.Name)
	}
	var got []probeResult
	for range probes {
		select {
		case r := <-answered:
			got = append(got, r)
		case <-time.After(time.Minute):
			t.Fatalf("a probe unanswered a minute after the kill; answered: %v", got)
		}
	}
	sort.Slice(got, func(i, j int) bool { return got[i].end.Before(got[j].end) })
	var lines []string
	for _, r := range got {
		lines = append(lines, fmt.Sprintf("%s %d at %v (%v after the reconnection)", r.who, r.status, at(r.end), r.end.Sub(reconnected).Round(time.Millisecond)))
		if r.err != nil || r.status != 207 {
			t.Errorf("%s's probe, sent while %s hung: %v %d", r.who, target.Name, r.err, r.status)
		} else if d := r.end.Sub(reconnected); d > strandedBound {
			t.Errorf("%s's probe, handed out to %s while %s hung, answered %v after its connection was back (at %v), want at most %v: the requests lost on their way wait for AckWait",
				r.who, owner.Name, target.Name, d.Round(time.Millisecond), at(reconnected), strandedBound)
		}
	}
	// The load's requests for home1 sent before the kill and answered
	// after it: stranded with the server, or slowed by it (their facts'
	// acknowledgements lost with it too).
	var stranded []string
	if loaded {
		load.WaitSucceeded(50, time.Now(), time.Minute, nil)
		for _, r := range load.Results() {
			if r.Home == "home1" && r.Start.Before(e.Killed) && r.Start.Add(r.Took).After(e.Killed) {
				stranded = append(stranded, fmt.Sprintf("%s %d at %v", r.Mark, r.Status, at(r.Start.Add(r.Took))))
			}
		}
	}
	t.Logf("%s (led %v) frozen at %v, the probes handed out by %v, killed at 0; %s reconnected at %v. Probes: %s. The load's requests for home1 in flight at the kill (%d): %s. "+
		"At the hand-out home1's consumer had %d pending of %d of home1's requests above its ack floor (%d, delivered up to %d): a reset to the floor would hand out again %d acknowledged",
		target.Name, e.Led, at(frozen), at(handedOut), owner.Name, at(reconnected), strings.Join(lines, ", "), len(stranded), strings.Join(stranded, ", "),
		atHandout.NumAckPending, above, atHandout.AckFloor.Stream, atHandout.Delivered.Stream, above-atHandout.NumAckPending)

	target.Start()
	c.NATS.WaitReady(c.JS, c.FactStream("home1"))
	if loaded {
		load.Stop()
		fc := load.CheckFacts(c.JS)
		t.Logf("%s; slowest request %v", fc, load.Slowest().Round(time.Millisecond))
		for _, f := range load.Failures() {
			t.Errorf("neither a success, a 503 nor a 504: %s", f)
		}
	}
	c.Verify()
}

// ownerServerApart makes the NATS server home server h's owner is
// connected to fit for a fault that costs h its owner's connection and
// nothing else: not the meta leader, not every gateway's server (the
// owner, or a gateway, reconnected to another server until so: restarting
// servers would move the meta group), and leading none of the raft groups
// h needs (homeNeeds: stepped down to other servers). It returns the
// owner, that server, and the gateways connected to other servers.
func ownerServerApart(t *testing.T, c *Cluster, h string) (owner *Role, target *NATSServer, gateways []*Role) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		c.NATS.WaitReady(c.JS)
		name := c.Owner(h)
		owner = nil
		for _, r := range c.HomeNodes[h] {
			if r.Name == name {
				owner = r
			}
		}
		if owner == nil {
			t.Fatalf("%s is owned by %q, none of its nodes", h, name)
		}
		var onTarget *Role
		Eventually(t, 30*time.Second, func() error {
			if target = c.NATS.ServerOf("home-" + name); target == nil {
				return fmt.Errorf("%s is connected to no server", name)
			}
			gateways, onTarget = nil, nil
			for _, g := range c.Gateways {
				s := c.NATS.ServerOf("gateway-" + g.Name)
				if s == nil {
					return fmt.Errorf("gateway %s is connected to no server", g.Name)
				}
				if s != target {
					gateways = append(gateways, g)
				} else {
					onTarget = g
				}
			}
			return nil
		})
		led, err := c.NATS.GroupLeaders(target)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case len(gateways) > 0 && led["meta"] != target.Name:
		case attempt == 5:
			t.Fatalf("%s, %s's server, leads the meta group or has every gateway's connection, after %d reconnections", target.Name, name, attempt-1)
		case led["meta"] == target.Name:
			c.ReconnectOff(owner, "home-"+name, target)
			continue
		default:
			c.ReconnectOff(onTarget, "gateway-"+onTarget.Name, target)
			continue
		}
		break
	}
	c.NATS.PlaceLeaders(c.JS, target, nil, homeNeeds(c, h))
	return owner, target, gateways
}

// apart returns a running server other than target, to observe from, and
// the load's target through gateways alone (those not on target).
func apart(c *Cluster, target *NATSServer, gateways []*Role) (*NATSServer, LoadTarget) {
	var other *NATSServer
	for _, s := range c.NATS.Servers {
		if s != target {
			other = s
			break
		}
	}
	lt := c.LoadTarget()
	lt.Gateways = nil
	for _, g := range gateways {
		lt.Gateways = append(lt.Gateways, g.Addr)
	}
	return other, lt
}
