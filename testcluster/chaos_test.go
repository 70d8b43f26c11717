package testcluster

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
)

// TestClusterChaos runs the site of TestClusterNATSServerLoss (three NATS
// servers as processes, R3 streams, three home servers of an owner and a
// standby each, two gateways, a router, the production lease of 10 s)
// under the same load, and injects faults at random moments for as long
// as RVP_CHAOS says (a duration: RVP_CHAOS=3m), drawn from a seeded
// schedule (RVP_CHAOS_SEED replays one; the seed is logged first): a NATS
// server killed (SIGKILL), paused (SIGSTOP) or cut off from the others
// (a network partition: its routes silent, its clients' connections up)
// for a few seconds, at most one at a time; a raft group's leader
// stepped down; the meta leader moved; a home server's owner stopped
// cleanly or crashed (its NATS connection cut, its lease left to lapse)
// so that its standby takes over; a user moved to another home server; a
// gateway restarted. Faults overlap: a recovery is not waited for before
// the next fault, only checked, each by a deadline (the cluster ready
// again, a new owner, the moved user served, the restarted gateway
// serving).
//
// At the end, every server back: every request got a success, a 503 or a
// 504 (a request cut or refused by a gateway being restarted excepted),
// within the gateway's request timeout and a margin; every request
// answered with success has its fact once (CheckFacts); every user is
// served again; the projections equal a rebuild (Verify). Messages
// delivered more than once are counted and logged, as the fault tests do
// (at least once across a home node's crash).
//
// Not in make test or .ci/run: skipped unless RVP_CHAOS is set.
func TestClusterChaos(t *testing.T) {
	spec := os.Getenv("RVP_CHAOS")
	if spec == "" {
		t.Skip("chaos test: run with RVP_CHAOS=3m (how long to inject faults); RVP_CHAOS_SEED=n replays a seed")
	}
	length, err := time.ParseDuration(spec)
	if err != nil || length <= 0 {
		t.Fatalf("RVP_CHAOS=%q: give how long to run as a duration, e.g. 3m", spec)
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("RVP_CHAOS_SEED"); s != "" {
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("RVP_CHAOS_SEED=%q: give the seed a run logged (a number)", s)
		}
	}
	t.Logf("chaos seed %d (replay: RVP_CHAOS_SEED=%d RVP_CHAOS=%s)", seed, seed, spec)

	users := map[string]string{"alice": "home1", "bob": "home1", "carol": "home1",
		"dave": "home2", "erin": "home2", "frank": "home2", "grace": "home3", "heidi": "home3"}
	c := Start(t, Options{Users: users, Gateways: 2, Routers: 1, NATS: &NATSClusterOptions{Processes: true, Partitionable: true}, Standbys: 1,
		LeaseTTL: 10 * time.Second})
	load := StartLoad(t, c.LoadTarget(), LoadOptions{})
	defer load.Stop()
	load.WaitSucceeded(200, time.Time{}, time.Minute, nil)

	ch := newChaos(t, c, load, rand.New(rand.NewPCG(seed, 82)))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("seed %d; the faults injected:\n%s", seed, strings.Join(ch.timeline, "\n"))
		}
	})
	ch.run(length)
	ch.settle()
	load.Stop()

	fc := load.CheckFacts(c.JS)
	if fc.Lost > 0 || fc.Duplicated > 0 {
		// Replicas that disagree hold different facts.
		t.Logf("the fact streams' replicas:\n%s", strings.Join(c.NATS.ReplicaStates(events.FactStreamPrefix), "\n"))
	}
	once, twice := load.Delivered()
	t.Logf("%s; slowest request %v; messages delivered once %d, more than once %d", fc, load.Slowest().Round(time.Millisecond), once, twice)
	cut := 0
	refused := map[string]bool{}
	for _, r := range load.Results() {
		if r.Kind == "message" && r.Status == 412 {
			refused[r.Mark] = true
		}
	}
	late := lateHandoffs(t, c, load, refused)
	for _, r := range load.Results() {
		if r.OK() || r.Status == 503 || r.Status == 504 {
			continue
		}
		if ch.cutByGateway(r) {
			cut++
			continue
		}
		if why, ok := late[r.Mark]; ok {
			t.Logf("a message answered 412 by a home server its recipient had moved to, before the recipient's state came (a late handoff, decided without it after HandoffWait: docs/decisions.md): %s %s by %s at %s (%v into the run): %s",
				r.Kind, r.Mark, r.User, r.Start.Format("15:04:05.000"), r.Start.Sub(ch.start).Round(time.Millisecond), why)
			continue
		}
		t.Errorf("neither a success, a 503 nor a 504: %s %s by %s at %s (%v into the run) after %v: %d %s", r.Kind, r.Mark, r.User,
			r.Start.Format("15:04:05.000"), r.Start.Sub(ch.start).Round(time.Millisecond), r.Took.Round(time.Millisecond), r.Status, strings.TrimSpace(r.Err))
	}
	if d := load.Slowest(); d > 22*time.Second {
		t.Errorf("a request took %v; the gateway's request timeout is 20s", d)
	}
	c.DirectorySettled()
	c.Verify()
	var kinds []string
	drawn := 0
	for _, k := range slices.Sorted(maps.Keys(ch.counts)) {
		kinds = append(kinds, fmt.Sprintf("%s %d", k, ch.counts[k]))
		drawn += ch.counts[k]
	}
	t.Logf("seed %d: %d faults drawn in %v (%s; those not injected, their target busy, say so in the timeline); %d requests cut by a gateway's restart",
		seed, drawn, length, strings.Join(kinds, ", "), cut)
	t.Logf("the faults injected:\n%s", strings.Join(ch.timeline, "\n"))
}

// chaos injects faults into a Cluster under a Load, from a seeded random
// schedule, and checks each recovery by a deadline. It is used by the
// test's goroutine alone.
type chaos struct {
	t     *testing.T
	c     *Cluster
	load  *Load
	rnd   *rand.Rand
	start time.Time
	homes []string
	users []string       // the load's, sorted: user i signs in at gateway i modulo their number
	nodes map[string]int // home nodes started for each home server (named h-a, h-b, ...)

	// down is the NATS server killed, paused or isolated (at most one),
	// back at up.
	down     *NATSServer
	paused   bool
	isolated bool
	up       time.Time
	// replace are home servers that lost a node, to get a new standby
	// once the NATS cluster is whole.
	replace  []string
	pending  []*recovery
	cuts     []cut // gateways' restarts
	timeline []string
	counts   map[string]int
}

// recovery is what the cluster must reach after a fault, by a deadline.
type recovery struct {
	key, what       string
	since, deadline time.Time
	check           func() error
}

// cut is when gateway gw did not serve: requests of its users in flight
// then, or sent then, may have been cut or refused.
type cut struct {
	gw       int
	from, to time.Time
}

func newChaos(t *testing.T, c *Cluster, load *Load, rnd *rand.Rand) *chaos {
	ch := &chaos{t: t, c: c, load: load, rnd: rnd, start: time.Now(), homes: homeNames(c.opts.Users), nodes: map[string]int{}, counts: map[string]int{}}
	for a := range c.opts.Users {
		ch.users = append(ch.users, a)
	}
	slices.Sort(ch.users)
	t.Logf("the faults' times count from %s", ch.start.Format("15:04:05.000"))
	for h, ns := range c.HomeNodes {
		ch.nodes[h] = len(ns)
	}
	return ch
}

// note records an event of the schedule in the timeline and the log.
func (ch *chaos) note(format string, args ...any) {
	line := fmt.Sprintf("%8.3fs  ", time.Since(ch.start).Seconds()) + fmt.Sprintf(format, args...)
	ch.timeline = append(ch.timeline, line)
	ch.t.Log(line)
}

func (ch *chaos) expect(key, what string, d time.Duration, check func() error) {
	now := time.Now()
	ch.pending = append(ch.pending, &recovery{key: key, what: what, since: now, deadline: now.Add(d), check: check})
}

func (ch *chaos) awaiting(prefix string) bool {
	return slices.ContainsFunc(ch.pending, func(r *recovery) bool { return strings.HasPrefix(r.key, prefix) })
}

// natsWhole reports whether every NATS server runs and the cluster was
// last seen ready.
func (ch *chaos) natsWhole() bool { return ch.down == nil && !ch.awaiting("nats") }

// run injects faults for d, a random pause (the schedule, not a
// synchronisation) after each.
func (ch *chaos) run(d time.Duration) {
	type action struct {
		name   string
		weight int
		can    func() bool
		do     func()
	}
	always := func() bool { return true }
	actions := []action{
		{"nats-kill", 2, ch.natsWhole, ch.killNATS},
		{"nats-pause", 2, ch.natsWhole, ch.pauseNATS},
		{"nats-pause-owner", 2, ch.natsWhole, ch.pauseOwnersNATS},
		{"nats-isolate", 2, ch.natsWhole, ch.isolateNATS},
		{"stepdown", 3, always, ch.stepDown},
		{"meta-move", 1, ch.natsWhole, ch.moveMeta},
		{"owner-stop", 1, always, func() { ch.stopOwner(false) }},
		{"owner-crash", 1, always, func() { ch.stopOwner(true) }},
		{"user-move", 2, always, ch.moveUser},
		{"gateway-restart", 1, func() bool { return ch.natsWhole() && !ch.awaiting("gw") }, ch.restartGateway},
	}
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		var can []action
		total := 0
		for _, a := range actions {
			if a.can() {
				can = append(can, a)
				total += a.weight
			}
		}
		n := ch.rnd.IntN(total)
		for _, a := range can {
			if n -= a.weight; n < 0 {
				ch.counts[a.name]++
				a.do()
				break
			}
		}
		ch.idle(time.Duration(300+ch.rnd.IntN(3700)) * time.Millisecond)
	}
}

// idle lets d pass, bringing the NATS server down back when its time
// comes and checking the recoveries awaited.
func (ch *chaos) idle(d time.Duration) {
	until := time.Now().Add(d)
	for {
		ch.poll()
		left := time.Until(until)
		if left <= 0 {
			return
		}
		time.Sleep(min(250*time.Millisecond, left))
	}
}

func (ch *chaos) poll() {
	if ch.down != nil && !time.Now().Before(ch.up) {
		ch.bringBack()
	}
	kept := ch.pending[:0]
	for _, r := range ch.pending {
		err := r.check()
		if err == nil {
			ch.note("  recovered: %s, %v after", r.what, time.Since(r.since).Round(10*time.Millisecond))
			continue
		}
		if time.Now().After(r.deadline) {
			ch.note("  NOT recovered: %s: %v", r.what, err)
			ch.t.Fatalf("%v after the fault, not recovered: %s: %v", r.deadline.Sub(r.since), r.what, err)
		}
		kept = append(kept, r)
	}
	ch.pending = kept
	if len(ch.replace) > 0 && ch.natsWhole() {
		for _, h := range ch.replace {
			name := ch.nodeName(h)
			ch.c.HomeNodes[h] = append(ch.c.HomeNodes[h], ch.c.StartHomeNode(h, name))
			ch.note("  new standby %s started for %s", name, h)
		}
		ch.replace = nil
	}
}

// settle ends the chaos: the server down comes back, and every recovery
// awaited is waited for (by its deadline); then the cluster is ready and
// every user of the load is served again.
func (ch *chaos) settle() {
	ch.note("end of the faults")
	ch.up = time.Now()
	for ch.down != nil || len(ch.pending) > 0 || len(ch.replace) > 0 {
		ch.idle(250 * time.Millisecond)
	}
	var streams []string
	for _, h := range ch.homes {
		streams = append(streams, ch.c.FactStream(h))
	}
	ch.c.NATS.WaitReady(ch.c.JS, append(streams, events.StreamRequests, events.StreamDirectory, "KV_"+events.BucketOwners)...)
	settled := time.Now()
	for _, a := range ch.users {
		ch.load.WaitSucceeded(1, settled, 2*time.Minute, func(r Result) bool { return r.User == a })
	}
	ch.note("settled: every user served again %v after", time.Since(settled).Round(10*time.Millisecond))
}

// served awaits a success for a request sent since now, by user (any
// when "") or by a user of gateway gw (when gw >= 0).
func (ch *chaos) served(user string, gw int) func() error {
	since := time.Now()
	return func() error {
		for _, r := range ch.load.Results() {
			if r.OK() && !r.Start.Before(since) && (user == "" || r.User == user) && (gw < 0 || ch.gatewayOf(r.User) == gw) {
				return nil
			}
		}
		return fmt.Errorf("no request sent since %s answered with success", since.Format("15:04:05.000"))
	}
}

func (ch *chaos) gatewayOf(user string) int {
	return slices.Index(ch.users, user) % len(ch.c.Gateways)
}

// cutByGateway reports whether r got no answer (cut, or refused a
// connection) from a gateway while it was being restarted.
func (ch *chaos) cutByGateway(r Result) bool {
	if r.Status != 0 {
		return false
	}
	end := r.Start.Add(r.Took)
	for _, k := range ch.cuts {
		if k.gw == ch.gatewayOf(r.User) && !end.Before(k.from) && !r.Start.After(k.to) {
			return true
		}
	}
	return false
}

// running returns the NATS servers that run and are not paused.
func (ch *chaos) running() []*NATSServer {
	var out []*NATSServer
	for _, s := range ch.c.NATS.Servers {
		if s.Running() && s != ch.down {
			out = append(out, s)
		}
	}
	return out
}

func (ch *chaos) pick(ss []*NATSServer) *NATSServer { return ss[ch.rnd.IntN(len(ss))] }

// killNATS kills a NATS server with SIGKILL (half the time the leader of
// a fact stream or of the requests stream), to be started again in 2 to
// 20 s.
func (ch *chaos) killNATS() {
	s, why := ch.pick(ch.c.NATS.Servers), ""
	if ch.rnd.IntN(2) == 0 {
		stream := events.StreamRequests
		if i := ch.rnd.IntN(len(ch.homes) + 1); i < len(ch.homes) {
			stream = ch.c.FactStream(ch.homes[i])
		}
		if l := ch.c.NATS.StreamLeader(ch.c.JS, stream); l != nil {
			s, why = l, " (the leader of "+stream+")"
		}
	}
	d := time.Duration(2000+ch.rnd.IntN(18000)) * time.Millisecond
	s.Kill()
	ch.down, ch.paused, ch.isolated, ch.up = s, false, false, time.Now().Add(d)
	ch.note("NATS server %s%s killed (SIGKILL), back in %v", s.Name, why, d)
}

// pauseNATS pauses a NATS server (SIGSTOP) for 1 to 20 s: more than the
// lease's TTL sometimes.
func (ch *chaos) pauseNATS() {
	s := ch.pick(ch.c.NATS.Servers)
	d := time.Duration(1000+ch.rnd.IntN(19000)) * time.Millisecond
	s.Pause()
	ch.down, ch.paused, ch.isolated, ch.up = s, true, false, time.Now().Add(d)
	ch.note("NATS server %s paused (SIGSTOP) for %v", s.Name, d)
}

// pauseOwnersNATS pauses (SIGSTOP) the NATS server a home server's
// owner is connected to, for 11 to 25 s: longer than the lease's TTL
// (10 s), so that a standby connected to another server takes over
// while the owner, its connection silent but open, has not noticed;
// then lets it go on, its writes held meanwhile arriving late.
func (ch *chaos) pauseOwnersNATS() {
	h := ch.homes[ch.rnd.IntN(len(ch.homes))]
	owner := ch.c.Owner(h)
	s := ch.c.NATS.ServerOf("home-" + owner)
	if owner == "" || s == nil {
		ch.note("the NATS server of %s's owner not paused: owner %q connected to none", h, owner)
		return
	}
	d := time.Duration(11000+ch.rnd.IntN(14000)) * time.Millisecond
	s.Pause()
	ch.down, ch.paused, ch.isolated, ch.up = s, true, false, time.Now().Add(d)
	ch.note("NATS server %s, %s's owner %s's, paused (SIGSTOP) for %v", s.Name, h, owner, d)
}

// isolateNATS cuts a NATS server off from the other two for 3 to 20 s
// (half the time the server a home server's owner is connected to): a
// network partition, its routes silent and its clients' connections up,
// their pings answered. Its clients move to another server
// (natsclient.ReachWatch); an owner that does not in time loses its
// lease (10 s) to its standby.
func (ch *chaos) isolateNATS() {
	s, why := ch.pick(ch.c.NATS.Servers), ""
	if ch.rnd.IntN(2) == 0 {
		h := ch.homes[ch.rnd.IntN(len(ch.homes))]
		if owner := ch.c.Owner(h); owner != "" {
			if on := ch.c.NATS.ServerOf("home-" + owner); on != nil {
				s, why = on, fmt.Sprintf(", %s's owner %s's,", h, owner)
			}
		}
	}
	d := time.Duration(3000+ch.rnd.IntN(17000)) * time.Millisecond
	ch.c.NATS.Isolate(s)
	ch.down, ch.paused, ch.isolated, ch.up = s, false, true, time.Now().Add(d)
	ch.note("NATS server %s%s cut off from the others (its routes silent) for %v", s.Name, why, d)
}

func (ch *chaos) bringBack() {
	s := ch.down
	switch {
	case ch.isolated:
		ch.c.NATS.Heal()
		ch.note("NATS server %s's routes healed", s.Name)
	case ch.paused:
		s.Resume()
		ch.note("NATS server %s resumed (SIGCONT)", s.Name)
	default:
		s.Start()
		ch.note("NATS server %s started again", s.Name)
	}
	ch.down = nil
	ch.expect("nats", "the NATS cluster ready with "+s.Name+" back", 2*time.Minute, ch.c.NATS.ready)
	ch.expect("nats-served", "a request answered with success since "+s.Name+" came back", 2*time.Minute, ch.served("", -1))
}

// stepDown steps down the leader of a stream, or of a home server's
// consumer of requests, in favour of another running server.
func (ch *chaos) stepDown() {
	run := ch.running()
	led, err := ch.c.NATS.GroupLeaders(ch.pick(run))
	if err != nil {
		ch.note("stepdown skipped: the groups' leaders: %v", err)
		return
	}
	var groups []string
	for g := range led {
		if st, _, isCons := strings.Cut(g, " > "); g != "meta" && (!isCons || st == events.StreamRequests) {
			groups = append(groups, g)
		}
	}
	slices.Sort(groups)
	g := groups[ch.rnd.IntN(len(groups))]
	var to []*NATSServer
	for _, s := range run {
		if s.Name != led[g] {
			to = append(to, s)
		}
	}
	if len(to) == 0 {
		ch.note("stepdown of %s skipped: no running server but its leader %s", g, led[g])
		return
	}
	prefer := ch.pick(to)
	if err := stepDown(ch.c.JS, g, prefer.Name); err != nil {
		ch.note("stepdown of %s (led by %s) to %s refused: %v", g, led[g], prefer.Name, err)
		return
	}
	ch.note("%s stepped down from %s to %s", g, led[g], prefer.Name)
}

// moveMeta makes another server the meta leader (its leaders stopped
// cleanly and started again until it is).
func (ch *chaos) moveMeta() {
	to := ch.pick(ch.c.NATS.Servers)
	start := time.Now()
	ch.c.NATS.MoveMetaLeader(to)
	ch.note("meta leader moved to %s (%v)", to.Name, time.Since(start).Round(10*time.Millisecond))
	ch.expect("nats-served", "a request answered with success since the meta leader moved", 2*time.Minute, ch.served("", -1))
}

// stopOwner stops the node owning a home server: cleanly (its lease let
// go), or as a crash would (its NATS connection cut first, its lease left
// to lapse); its standby takes over, and a new standby is started once
// the NATS cluster is whole.
func (ch *chaos) stopOwner(crash bool) {
	h := ch.homes[ch.rnd.IntN(len(ch.homes))]
	how := "stopped"
	if crash {
		how = "crashed"
	}
	if ch.awaiting("home:"+h) || len(ch.c.HomeNodes[h]) < 2 {
		ch.note("owner of %s not %s: its last takeover under way, or no standby", h, how)
		return
	}
	owner := ch.c.Owner(h)
	i := slices.IndexFunc(ch.c.HomeNodes[h], func(r *Role) bool { return r.Name == owner })
	if i < 0 {
		ch.note("owner of %s not %s: owned by %q, none of its nodes", h, how, owner)
		return
	}
	r := ch.c.HomeNodes[h][i]
	if crash {
		r.nc.Close()
	}
	err := r.Stop()
	if err != nil && !crash {
		ch.t.Errorf("home node %s, stopped: %v", r.Name, err)
	}
	ch.c.HomeNodes[h] = slices.Delete(ch.c.HomeNodes[h], i, i+1)
	ch.replace = append(ch.replace, h)
	ch.note("owner %s of %s %s", owner, h, how)
	ch.expect("home:"+h, fmt.Sprintf("%s owned by another node than %s", h, owner), 2*time.Minute, func() error {
		if o := ch.c.Owner(h); o == "" || o == owner {
			return fmt.Errorf("owned by %q", o)
		}
		return nil
	})
}

func (ch *chaos) nodeName(h string) string {
	n := ch.nodes[h]
	ch.nodes[h]++
	return fmt.Sprintf("%s-%c", h, 'a'+n)
}

// moveUser moves a user of the load to another home server (rvpctl user
// move).
func (ch *chaos) moveUser() {
	a := ch.users[ch.rnd.IntN(len(ch.users))]
	to := ch.homes[ch.rnd.IntN(len(ch.homes))]
	if ch.awaiting("user:" + a) {
		ch.note("%s not moved: its last move not served yet", a)
		return
	}
	u := events.NewUser(ch.c.Domain, a)
	rec, _ := ch.c.Admin.Directory.User(u)
	if rec == nil || rec.Home == to {
		ch.note("%s not moved: already on %s", a, to)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	start := time.Now()
	if err := ch.c.Admin.MoveUser(ctx, u, to); err != nil {
		ch.note("%s not moved from %s to %s: %v (after %v)", a, rec.Home, to, err, time.Since(start).Round(10*time.Millisecond))
		return
	}
	ch.note("%s moved from %s to %s", a, rec.Home, to)
	ch.expect("user:"+a, a+"'s requests answered with success since its move to "+to, 2*time.Minute, ch.served(a, -1))
}

// restartGateway stops a gateway (its requests in flight given 3 s) and
// starts it again on its address.
func (ch *chaos) restartGateway() {
	i := ch.rnd.IntN(len(ch.c.Gateways))
	old := ch.c.Gateways[i]
	from := time.Now()
	if err := old.Stop(); err != nil && !errors.Is(err, net.ErrClosed) {
		ch.t.Errorf("gateway %s, stopped: %v", old.Name, err)
	}
	var ln net.Listener
	Eventually(ch.t, 10*time.Second, func() (err error) {
		ln, err = net.Listen("tcp", old.Addr)
		return err
	})
	ch.c.Gateways[i] = ch.c.startGateway(old.Name, ln)
	ch.cuts = append(ch.cuts, cut{gw: i, from: from, to: time.Now()})
	ch.note("gateway %s restarted (down %v)", old.Name, time.Since(from).Round(10*time.Millisecond))
	ch.expect(fmt.Sprintf("gw:%d", i), "a request at gateway "+old.Name+" answered with success since its restart", 2*time.Minute, ch.served("", i))
}

// lateHandoffs returns, of the messages marked (answered 412), those
// whose acceptance (recorded without endpoints) is followed in the same
// home server's stream by their recipient's arrival there: accepted by a
// home server the recipient had moved to before its state came from its
// former one (a late handoff), and answered as to a user with no client
// signed in. Each is described: where, and how long before the arrival.
func lateHandoffs(t *testing.T, c *Cluster, load *Load, marks map[string]bool) map[string]string {
	t.Helper()
	out := map[string]string{}
	if len(marks) == 0 {
		return out
	}
	// A message no one could be given is kept by its body's digest: the
	// body each mark's message would have had, to each possible recipient.
	digests := map[string]string{}
	for _, r := range load.Results() {
		if !marks[r.Mark] {
			continue
		}
		for _, from := range load.clients {
			if from.Alias != r.User {
				continue
			}
			for _, to := range load.clients {
				sum := sha256.Sum256(from.MessageBody(to.Alias, r.Mark))
				digests[hex.EncodeToString(sum[:])] = r.Mark
			}
		}
	}
	since := load.started
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	streams, err := projections.FactStreams(ctx, c.JS)
	if err != nil {
		t.Fatal(err)
	}
	from := since.Add(-time.Second)
	for _, name := range streams {
		type accepted struct {
			mark string
			node events.User
			at   time.Time
		}
		var waiting []accepted
		Eventually(t, time.Minute, func() error {
			waiting = waiting[:0]
			return ReadStream(ctx, c.JS, name, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &from},
				func(m jetstream.Msg) error {
					ev, err := events.Decode(m.Headers().Get(events.HeaderType), m.Data())
					if err != nil {
						return err
					}
					switch f := ev.(type) {
					case *events.MessageAccepted:
						mk := markRE.FindString(string(f.Body))
						if f.Body == nil {
							mk = digests[f.BodySHA256]
						}
						if marks[mk] {
							waiting = append(waiting, accepted{mark: mk, node: f.Node, at: f.At})
						}
					case *events.UserArrived:
						for _, a := range waiting {
							if a.node == f.Node {
								out[a.mark] = fmt.Sprintf("accepted on %s for %s %v before its arrival there (from %s)",
									name, a.node, f.At.Sub(a.at).Round(time.Millisecond), f.From)
							}
						}
						waiting = slices.DeleteFunc(waiting, func(a accepted) bool { return a.node == f.Node })
					}
					return nil
				})
		})
	}
	return out
}

// TestClusterLateHandoffRefusesMessages shows what TestClusterChaos
// tolerates as a late handoff, and that lateHandoffs tells it: alice is
// moved to home2 while home1, which holds her state, is down; home2
// holds her requests for HandoffWait, then decides them without her
// state (docs/decisions.md: "A move is fenced at both ends"), and the
// messages the load's other users send her are answered 412, "no client
// logged in", though her client is signed in: her login comes with the
// handoff, when home1 is back. Each such 412 is found accepted on home2
// before her arrival there.
func TestClusterLateHandoffRefusesMessages(t *testing.T) {
	LongTest(t)
	users := map[string]string{"alice": "home1", "bob": "home2", "carol": "home2"}
	c := Start(t, Options{Users: users, RequestTimeout: 3 * time.Second})
	load := StartLoad(t, c.LoadTarget(), LoadOptions{})
	defer load.Stop()
	load.WaitSucceeded(50, time.Time{}, time.Minute, nil)
	if err := c.Homes["home1"].Stop(); err != nil {
		t.Fatal(err)
	}
	if err := c.Admin.MoveUser(t.Context(), events.NewUser(c.Domain, "alice"), "home2"); err != nil {
		t.Fatal(err)
	}
	moved := time.Now()
	refusedToAlice := func(r Result) bool { return r.Kind == "message" && r.Status == 412 }
	Eventually(t, time.Minute, func() error {
		for _, r := range load.Results() {
			if refusedToAlice(r) && r.Start.After(moved) {
				return nil
			}
		}
		return errors.New("no message answered 412 since alice's move")
	})
	c.Homes["home1"] = c.StartHome("home1")
	load.WaitSucceeded(20, time.Now(), time.Minute, func(r Result) bool { return r.User == "alice" })
	load.Stop()
	refused := map[string]bool{}
	for _, r := range load.Results() {
		if refusedToAlice(r) {
			refused[r.Mark] = true
		}
	}
	late := lateHandoffs(t, c, load, refused)
	for mk := range refused {
		if late[mk] == "" {
			t.Errorf("%s, answered 412, not found accepted before a late handoff", mk)
		}
	}
	t.Logf("%d messages answered 412 as alice's state was awaited; e.g. %v", len(refused), late)
	fc := load.CheckFacts(c.JS)
	if fc.Lost > 0 || fc.Duplicated > 0 {
		// Replicas that disagree hold different facts.
		t.Logf("the fact streams' replicas:\n%s", strings.Join(c.NATS.ReplicaStates(events.FactStreamPrefix), "\n"))
	}
	t.Logf("%s", fc)
}

// TestGatewayNATSServerPaused pauses (SIGSTOP) the NATS server a gateway
// is connected to for 30 s, as a frozen virtual machine would: its TCP
// connection stays open and silent. The gateway should notice the
// silence and reconnect to another server, serving again well within the
// pause. With nats.go's default pings (every 2 min, 2 outstanding), as
// rvpd node had, it noticed nothing: every request it took waited for the
// request timeout, answered 504, until the server went on. Roles ping
// now as rvpd node does (natsclient.PingInterval).
func TestGatewayNATSServerPaused(t *testing.T) {
	LongTest(t)
	const timeout = 5 * time.Second
	c := Start(t, Options{Users: map[string]string{"alice": "home1"}, NATS: &NATSClusterOptions{Processes: true}, RequestTimeout: timeout})
	alice := c.Client(t, "alice")
	must(t, "alice signs in", alice.Login(3600), 200)
	gw := c.Gateways[0]
	// The gateway's server, not home1's node's: else the gateway
	// reconnects, to the next server of its list.
	var s, home *NATSServer
	Eventually(t, 30*time.Second, func() error {
		if s, home = c.NATS.ServerOf("gateway-"+gw.Name), c.NATS.ServerOf("home-home1"); s == nil || home == nil {
			return fmt.Errorf("gateway %s is on %v, home1's node on %v", gw.Name, s, home)
		}
		return nil
	})
	if s == home {
		c.ReconnectOff(gw, "gateway-"+gw.Name, home)
		s = c.NATS.ServerOf("gateway-" + gw.Name)
	}
	must(t, "alice changes her state before the pause", alice.SetState("online", 600, 0), 207)
	s.Pause()
	paused := time.Now()
	defer s.Resume()
	var served time.Time
	for time.Since(paused) < 30*time.Second && served.IsZero() {
		r, err := alice.TryRaw(alice.request("", "PROPPATCH", "/instmsg/aliases/alice", StateBody("busy", 600, 0), "Content-Type: text/xml", alice.From()))
		if err == nil && r.Status == 207 {
			served = time.Now()
		}
	}
	s.Resume()
	if served.IsZero() {
		t.Fatalf("gateway %s, its NATS server %s paused: no request served in 30 s", gw.Name, s.Name)
	}
	if d := served.Sub(paused); d > 10*time.Second {
		t.Errorf("gateway %s served again %v after its NATS server %s was paused, want at most 10 s", gw.Name, d.Round(time.Millisecond), s.Name)
	}
	t.Logf("served again %v after the pause", served.Sub(paused).Round(time.Millisecond))
}
