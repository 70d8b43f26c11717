package testcluster

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
)

// TestClusterHomeNodeServerPartitioned cuts the NATS server home1's
// owner is connected to off from the other two (Isolate: its routes
// silent, its clients' connections up and their pings answered) under
// load, for longer than the lease (see partitionLong), then heals it.
// The load and a probe go through gateways on the other servers, the
// standby is connected to another server, and the server cut off leads
// none of home1's groups nor the meta group (ownerServerApart): nothing
// but the owner's connection is cut off from JetStream.
//
// Either the owner notices (natsclient.ReachWatch) and moves to another
// server in time to renew its lease, or its lease lapses and the standby
// takes over; both are fine. home1 serves again within
// partitionServedBound of the cut, while the partition lasts; every
// request gets a success, a 503 or a 504; every one answered with success
// has its fact once (none decided by two nodes, nor by the old owner
// after the heal with a stale view: the facts' fence); the projections
// equal a rebuild.
func TestClusterHomeNodeServerPartitioned(t *testing.T) {
	LongTest(t)
	homeNodeServerPartitioned(t, partitionLong, partitionServedBound, false)
}

// TestClusterHomeNodeServerPartitionedBriefly is
// TestClusterHomeNodeServerPartitioned with a partition shorter than the
// lease (see partitionBrief): over before the owner's renewals would let
// the lease lapse, and before ReachWatch moves it (three questions
// unanswered, 2 s apart). The owner keeps its lease; home1 serves again
// within AckWait and a margin of the heal (what was handed to the owner
// through the server cut off, lost with the route's connection, is
// handed out again after AckWait).
func TestClusterHomeNodeServerPartitionedBriefly(t *testing.T) {
	LongTest(t)
	homeNodeServerPartitioned(t, partitionBrief, partitionBrief+8*time.Second, false)
}

// TestClusterHomeNodeServerPartitionedLeadingFacts is
// TestClusterHomeNodeServerPartitioned with home1's fact stream led by
// the server cut off (its other groups still led elsewhere): the two
// left elect another leader within seconds, and the owner, moved to one
// of them, reads and appends there. (Tried as a reproducer of what one
// run of TestClusterHomeNodeServerPartitioned showed for home2, whose
// owner was on the server cut off too, its groups placed by no one: moved
// 4.4 s into the partition, its recovery's reads of its fact stream
// (GetMsg, a direct get) timed out every 2 s for 18.7 s after the move,
// and home2's requests were answered 504 after 20 s meanwhile. Not
// reproduced so: 2 runs, home1 served again at 5.0 and 7.0 s.)
func TestClusterHomeNodeServerPartitionedLeadingFacts(t *testing.T) {
	LongTest(t)
	homeNodeServerPartitioned(t, partitionLong, partitionServedBound, true)
}

// TestClusterHomeNodeServerPartitionedBrieflyLeadingFacts is the brief
// partition (shorter than the lease) of the server that leads home1's
// fact stream and holds its owner: a reproducer for the lead, not run by
// .ci/run. The lost acknowledged request of a chaos run (seed 14, a 4.3
// s cut of home1's owner's server) came in such a cut. In 9 runs here
// nothing acknowledged was lost; in 2 of them CheckFacts could not read
// the fact streams for its 2 minutes ("context deadline exceeded"), and
// in another a read of RVP_FACTS_home2 timed out once and then went
// through: a stream, or the test's ordered consumer on it, stuck after
// the heal. Not explained yet.
func TestClusterHomeNodeServerPartitionedBrieflyLeadingFacts(t *testing.T) {
	LongTest(t)
	homeNodeServerPartitioned(t, partitionBrief, partitionBrief+8*time.Second, true)
}

const (
	// partitionLease is the lease's TTL in these tests: the production
	// lease (projections.DefaultLeaseTTL).
	partitionLease = 10 * time.Second
	// partitionServedBound is how soon after the cut home1 must serve
	// again. The slower of the two ways: the owner's last renewal before
	// the cut lapses at most a lease (10 s) after it; the standby looks
	// every tenth of a lease (1 s) and takes it; what was handed to the
	// cut-off owner is handed out again after AckWait (5 s): 16 s, and 4
	// s for a machine shared with other tests. The other way, the owner
	// moving, takes ReachWatch three unanswered questions 2 s apart and a
	// second opinion (up to 2 s per other server): about 8 to 10 s.
	partitionServedBound = 20 * time.Second
	// partitionLong is longer than the lease, so that an owner that has
	// not moved in time loses it to the standby while cut off, and
	// longer than partitionServedBound, so that home1 is seen served
	// again while the partition lasts, not because it ended.
	partitionLong = 25 * time.Second
	// partitionPhase is when the partition begins after a renewal of
	// the lease: just before the next (every 10/3 s), the worst moment
	// for the owner keeping its lease. Its last renewal then lapses 6.8 s
	// into the partition, as ReachWatch moves it (6.2 to 7.6 s in the
	// runs logged): the owner either renews as soon as it is moved, or
	// the home server decides nothing until it does (or until the
	// standby takes the lease).
	partitionPhase = 3200 * time.Millisecond
	// partitionBrief is shorter than ReachWatch's three misses (6 s), and
	// ends partitionPhase+5 s = 8.2 s after the owner's last renewal,
	// before its lease lapses: the owner neither moves nor loses its
	// lease.
	partitionBrief = 5 * time.Second
)

// leaseChange is an update of a home server's lease, as a server that
// stays in the majority saw it.
type leaseChange struct {
	at     time.Time
	holder string
	rev    uint64
}

func homeNodeServerPartitioned(t *testing.T, length, bound time.Duration, leadFacts bool) {
	users := map[string]string{"alice": "home1", "bob": "home1", "carol": "home1", "dave": "home1",
		"erin": "home2", "frank": "home2", "grace": "home2", "heidi": "home2", "ivan": "home1"}
	loadUsers := slices.DeleteFunc(slices.Sorted(maps.Keys(users)), func(a string) bool { return a == "ivan" })
	c := Start(t, Options{Users: users, Gateways: 3, Routers: 1, NATS: &NATSClusterOptions{Processes: true, Partitionable: true}, Standbys: 1,
		LeaseTTL: partitionLease})
	owner, target, gateways := ownerServerApart(t, c, "home1")
	for _, r := range c.HomeNodes["home1"] {
		if r != owner {
			c.ReconnectOff(r, "home-"+r.Name, target)
		}
	}
	if leadFacts {
		c.NATS.PlaceLeaders(c.JS, target, []string{c.FactStream("home1")}, nil)
	}
	if s := c.NATS.ServerOf("home-" + owner.Name); s != target {
		t.Fatalf("%s is connected to %v, no longer to %s", owner.Name, s, target.Name)
	}
	other, lt := apart(c, target, gateways)
	load := StartLoad(t, lt, LoadOptions{Users: loadUsers})
	defer load.Stop()
	load.WaitSucceeded(100, time.Time{}, time.Minute, nil)

	probe := NewClient(t, gateways[0].Addr, "ivan")
	probe.UseHost(c.IMHost)
	probe.Creds = &Credentials{Scheme: SchemeNTLMv1, User: "ivan", Domain: c.NTDomain, Password: c.Password}
	must(t, "ivan signs in", probe.Login(3600), 200)

	// home1's lease, as a server of the majority sees it.
	obs, err := nats.Connect(other.URL(), nats.Name("observer"))
	if err != nil {
		t.Fatal(err)
	}
	defer obs.Close()
	ojs, _ := jetstream.New(obs)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	kv, err := ojs.KeyValue(ctx, events.BucketOwners)
	if err != nil {
		t.Fatal(err)
	}
	w, err := kv.Watch(ctx, events.OwnerKey("home1"), jetstream.UpdatesOnly())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	var (
		mu     sync.Mutex
		leases []leaseChange
	)
	watched := make(chan struct{})
	renewals := make(chan time.Time, 1) // the last renewal seen, when the test has not taken it
	go func() {
		defer close(watched)
		for e := range w.Updates() {
			if e == nil {
				continue
			}
			holder := string(e.Value())
			if e.Operation() != jetstream.KeyValuePut {
				holder = e.Operation().String()
			}
			mu.Lock()
			leases = append(leases, leaseChange{at: time.Now(), holder: holder, rev: e.Revision()})
			mu.Unlock()
			select {
			case <-renewals:
			default:
			}
			renewals <- time.Now()
		}
	}()
	// When the owner's connection moves (ReachWatch's ForceReconnect).
	moved := owner.nc.StatusChanged(nats.CONNECTED)
	defer owner.nc.RemoveStatusListener(moved)
	movedAt := make(chan time.Time, 1)
	go func() {
		if _, ok := <-moved; ok {
			movedAt <- time.Now()
		}
	}()

	// The heal, at the partition's end (the fault's schedule, not a
	// synchronisation), whether the probe is served by then or not.
	type healing struct {
		at    time.Time
		owner string // the URL of the owner's server then
	}
	healedAt := make(chan healing, 1)
	factStream := c.FactStream("home1")
	// The cut, partitionPhase after a renewal of the lease.
	var renewed time.Time
	select {
	case <-renewals:
	default:
	}
	select {
	case renewed = <-renewals:
	case <-time.After(2 * partitionLease):
		t.Fatalf("home1's lease not renewed in %v", 2*partitionLease)
	}
	time.Sleep(time.Until(renewed.Add(partitionPhase))) // the fault's schedule, not a synchronisation
	c.NATS.Isolate(target)
	cut := time.Now()
	defer c.NATS.Heal()
	heal := time.AfterFunc(length, func() {
		h := healing{owner: owner.nc.ConnectedUrl()}
		c.NATS.Heal()
		h.at = time.Now()
		healedAt <- h
	})
	defer heal.Stop()
	at := func(tm time.Time) string {
		if tm.IsZero() {
			return "never"
		}
		return tm.Sub(cut).Round(time.Millisecond).String()
	}
	// The probe: one request after another, until one is answered with
	// success, or the bound.
	var served time.Time
	var probes []string
	for time.Since(cut) < bound && served.IsZero() {
		start := time.Now()
		r, err := probe.TryRaw(probe.request("", "PROPPATCH", "/instmsg/aliases/ivan", presenceBody("busy", fmt.Sprintf("probe-%d", len(probes))),
			"Content-Type: text/xml", probe.From()))
		switch {
		case err != nil:
			probes = append(probes, fmt.Sprintf("%v-%v: %v", at(start), at(time.Now()), err))
		case r.Status == 207:
			served = time.Now()
		default:
			probes = append(probes, fmt.Sprintf("%v-%v: %d", at(start), at(time.Now()), r.Status))
		}
	}
	var healed healing
	select {
	case healed = <-healedAt:
	case <-time.After(length + time.Minute):
		t.Fatalf("not healed %v after the cut", length+time.Minute)
	}
	// (The fact stream named before the cut: just after the heal, asked
	// for it, JetStream answered "503 JetStream system temporarily
	// unavailable" once.)
	c.NATS.WaitReady(c.JS, factStream, events.StreamRequests, "KV_"+events.BucketOwners)
	if served.IsZero() {
		// Not within the bound: when, at all?
		for served.IsZero() && time.Since(healed.at) < time.Minute {
			r, err := probe.TryRaw(probe.request("", "PROPPATCH", "/instmsg/aliases/ivan", presenceBody("busy", "probe-after"),
				"Content-Type: text/xml", probe.From()))
			if err == nil && r.Status == 207 {
				served = time.Now()
			}
		}
		t.Errorf("home1 not served again within %v of %s being cut off (its owner %s on it); served at %v (healed at %v); the probes: %s",
			bound, target.Name, owner.Name, at(served), at(healed.at), strings.Join(probes, ", "))
	}
	// The load's first success for home1 since the cut.
	loadServed := load.WaitSucceeded(1, cut, time.Minute, func(r Result) bool { return r.Home == "home1" })
	servedAgain := loadServed
	if !served.IsZero() && served.Before(servedAgain) {
		servedAgain = served
	}
	load.WaitSucceeded(20, time.Now(), time.Minute, func(r Result) bool { return r.Home == "home1" })
	load.Stop()

	var ownerMoved time.Time
	select {
	case ownerMoved = <-movedAt:
	default:
	}
	mu.Lock()
	var history []string
	tookOver := ""
	for _, l := range leases {
		history = append(history, fmt.Sprintf("%s rev %d at %v", l.holder, l.rev, at(l.at)))
		if l.holder != owner.Name && tookOver == "" && !strings.HasPrefix(l.holder, "released:") {
			tookOver = l.holder
		}
	}
	mu.Unlock()
	// (The watch, an ordered consumer, may miss updates while the server
	// holding it is cut off: the owner now tells a takeover too.)
	if now := c.Owner("home1"); tookOver == "" && now != "" && now != owner.Name {
		tookOver = now
	}
	path := fmt.Sprintf("%s moved to another NATS server at %v and kept its lease", owner.Name, at(ownerMoved))
	switch {
	case tookOver != "":
		path = fmt.Sprintf("the standby %s took the lease over (%s moved at %v)", tookOver, owner.Name, at(ownerMoved))
	case ownerMoved.IsZero():
		path = fmt.Sprintf("%s stayed on %s and kept its lease", owner.Name, target.Name)
	}
	t.Logf("%s (home1's owner %s on it) cut off for %v, %v after a renewal of the lease; home1 served again at %v (the probe at %v, the load at %v); %s; "+
		"healed at %v, %s then on %s; the owner now %q. The lease's updates seen in the majority: %s. Probes not served: %s",
		target.Name, owner.Name, length, cut.Sub(renewed).Round(time.Millisecond), at(servedAgain), at(served), at(loadServed), path,
		at(healed.at), owner.Name, healed.owner, c.Owner("home1"), strings.Join(history, ", "), strings.Join(probes, ", "))
	// An owner that moved and kept its lease serves as soon as it is
	// connected again, as after its server's loss
	// (TestClusterHomeNodeServerLoss): not when its next renewal comes.
	if d := servedAgain.Sub(ownerMoved); tookOver == "" && !ownerMoved.IsZero() && d > strandedBound {
		t.Errorf("%s moved off %s at %v and kept its lease, and home1 served again only %v later (at %v), want at most %v",
			owner.Name, target.Name, at(ownerMoved), d.Round(time.Millisecond), at(servedAgain), strandedBound)
	}

	// A fact the cut-off leader took and could not store made every
	// publish again refused at once: the owner published its window
	// again some 4,000 times in a 5 s cut (LeadingFacts). It waits longer
	// each time now.
	var again uint64
	for _, r := range c.HomeNodes["home1"] {
		if r.Node != nil { // nil: a standby that never served
			again += r.Node.Stats().Recovered
		}
	}
	if again > 100 {
		t.Errorf("home1's nodes published their window again %d times (lost answers), want at most 100", again)
	}

	fc := load.CheckFacts(c.JS)
	t.Logf("%s; slowest request %v; home1's window published again %d times", fc, load.Slowest().Round(time.Millisecond), again)
	for _, f := range load.Failures() {
		t.Errorf("neither a success, a 503 nor a 504: %s", f)
	}
	c.Verify()
	cancel()
	w.Stop()
	<-watched
}
