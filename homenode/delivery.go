package homenode

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
	"github.com/rvp-im/rvpd/rvp"
)

// job is one NOTIFY to send.
type job struct {
	key      string // whose it is: the user whose client it goes to, or the callback's host
	out      rvp.Outbound
	deadline time.Time
	done     func(status int, err error) // nil for fire-and-forget
}

// pool sends NOTIFYs, each on a connection of its own. To each
// destination (a callback URL) one at a time, in the order submitted: a
// client sees the changes of a presence in the order they were decided.
// At most workers at a time in all, and at most perKey at a time for one
// key (the user whose clients they go to, or a callback's host), each
// key's waiting in a queue of at most keyQueue, destinations served in
// turn. A user whose callbacks accept and never answer thus holds perKey
// connections until its NOTIFYs time out, and everyone else's go past.
type pool struct {
	client                   *rvp.Client
	workers, perKey          int
	keyQueue, queued, maxLen int
	log                      *slog.Logger
	dropped                  *atomic.Uint64
	metrics                  *homeMetrics

	mu      sync.Mutex
	ctx     context.Context
	wg      *sync.WaitGroup
	running int
	groups  map[string]*group
	ready   []*dest // destinations with a job waiting, none under way, and room in their group
	roomed  chan struct{}
	// idle takes a job to a worker that finished its last one less than
	// workerIdle ago and waits for another.
	idle chan task
}

// task is a job and its destination, given to a worker.
type task struct {
	j job
	d *dest
}

// workerIdle is how long a worker with nothing to do waits for the next
// job before it ends. A new goroutine's stack grew again through every
// connection (3.4% of rvpd's CPU in a fan-out to 1,000 watchers, 1.4%
// signing in 10,000 users with buddy lists); a worker kept this long is
// there for the next change, and a server at rest keeps none.
const workerIdle = time.Second

// group is one key's destinations, and how many of its jobs run.
type group struct {
	key     string
	dests   map[string]*dest
	waiting []*dest // ready but for the group's limit
	running int
	queued  int
}

// dest is one destination's jobs, in order.
type dest struct {
	url    string
	grp    *group
	jobs   []job
	busy   bool // a job of it runs
	queued bool // in ready or in its group's waiting
}

func newPool(c *rvp.Client, workers, perKey, keyLen, queue int, log *slog.Logger, dropped *atomic.Uint64, metrics *homeMetrics) *pool {
	return &pool{client: c, workers: workers, perKey: perKey, keyQueue: keyLen, maxLen: queue, log: log, dropped: dropped, metrics: metrics,
		groups: map[string]*group{}, roomed: make(chan struct{}, 1), idle: make(chan task)}
}

// start lets jobs run until ctx ends; wg counts them.
func (p *pool) start(ctx context.Context, wg *sync.WaitGroup) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ctx, p.wg = ctx, wg
	p.schedule()
}

// submit queues j without blocking; false means its key's queue, or the
// pool's, is full.
func (p *pool) submit(j job) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	g := p.groups[j.key]
	if (g != nil && g.queued >= p.keyQueue) || p.queued >= p.maxLen {
		p.dropped.Add(1)
		p.metrics.drop(1)
		return false
	}
	if g == nil {
		g = &group{key: j.key, dests: map[string]*dest{}}
		p.groups[j.key] = g
	}
	url := j.out.URL.String()
	d := g.dests[url]
	if d == nil {
		d = &dest{url: url, grp: g}
		g.dests[url] = d
	}
	d.jobs = append(d.jobs, j)
	g.queued++
	p.queued++
	p.markReady(d)
	p.schedule()
	p.metrics.notifies(p.running, p.queued)
	return true
}

// full reports whether key's queue has no room.
func (p *pool) full(key string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	g := p.groups[key]
	return g != nil && g.queued >= p.keyQueue
}

// submitWait queues j, waiting for room until ctx ends.
func (p *pool) submitWait(ctx context.Context) func(job) bool {
	return func(j job) bool {
		for {
			if !p.full(j.key) && p.submit(j) {
				return true
			}
			select {
			case <-p.roomed:
			case <-time.After(50 * time.Millisecond):
			case <-ctx.Done():
				return false
			}
		}
	}
}

// markReady queues d for a worker if it has a job, none under way: among
// the ready, or its group's waiting when the group is at its limit.
// p.mu is held.
func (p *pool) markReady(d *dest) {
	if d.queued || d.busy || len(d.jobs) == 0 {
		return
	}
	d.queued = true
	if d.grp.running < p.perKey {
		p.ready = append(p.ready, d)
	} else {
		d.grp.waiting = append(d.grp.waiting, d)
	}
}

// schedule starts workers for the jobs there is room for, destinations in
// turn. p.mu is held.
func (p *pool) schedule() {
	for p.running < p.workers {
		t, ok := p.next()
		if !ok {
			return
		}
		p.running++
		select {
		case p.idle <- t:
		default:
			p.wg.Add(1)
			go p.work(t)
		}
	}
}

// next takes the next job there is room for, destinations in turn, for a
// worker; false: none. p.mu is held.
func (p *pool) next() (task, bool) {
	for p.ctx != nil && p.ctx.Err() == nil && len(p.ready) > 0 {
		d := p.ready[0]
		p.ready[0] = nil
		p.ready = p.ready[1:]
		g := d.grp
		if g.running >= p.perKey {
			g.waiting = append(g.waiting, d)
			continue
		}
		d.queued, d.busy = false, true
		j := d.jobs[0]
		d.jobs[0] = job{}
		d.jobs = d.jobs[1:]
		g.queued--
		p.queued--
		g.running++
		return task{j, d}, true
	}
	return task{}, false
}

// work runs t, then the jobs next gives it, and waits up to workerIdle
// for more (p.idle) when there is none: a fan-out to a thousand watchers
// is sent by the workers it started, and the next change by the same
// ones, not by a goroutine for each NOTIFY.
func (p *pool) work(t task) {
	defer p.wg.Done()
	// Each NOTIFY's deadline is a context under this worker's own, not
	// under the pool's: a context made under another registers with it
	// under its lock, and 256 workers registering with one context
	// queued on that lock (4% of a fan-out's CPU in its profile).
	ctx, cancel := context.WithCancel(p.ctx)
	defer cancel()
	var idle *time.Timer
	for {
		p.run(ctx, t.j)
		next, ok := p.finished(t.d)
		select {
		case p.roomed <- struct{}{}:
		default:
		}
		if ok {
			t = next
			continue
		}
		if idle == nil {
			idle = time.NewTimer(workerIdle)
		} else {
			idle.Reset(workerIdle)
		}
		select {
		case t = <-p.idle:
		case <-idle.C:
			return
		case <-p.ctx.Done():
			return
		}
	}
}

// finished takes back the worker of d's job, and starts what may go now:
// the worker's next job, if there is one, and it returns it.
func (p *pool) finished(d *dest) (task, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	g := d.grp
	d.busy = false
	g.running--
	if len(g.waiting) > 0 {
		w := g.waiting[0]
		g.waiting[0] = nil
		g.waiting = g.waiting[1:]
		w.queued = false
		p.markReady(w)
	}
	p.markReady(d)
	if !d.busy && !d.queued && len(d.jobs) == 0 {
		delete(g.dests, d.url)
		if len(g.dests) == 0 {
			delete(p.groups, g.key)
		}
	}
	t, ok := p.next()
	if !ok {
		p.running--
	}
	p.schedule()
	p.metrics.notifies(p.running, p.queued)
	return t, ok
}

// run sends one NOTIFY and reports how it went.
func (p *pool) run(ctx context.Context, j job) {
	ctx, cancel := context.WithDeadline(ctx, j.deadline)
	defer cancel()
	start := time.Now()
	status, err := 0, ctx.Err()
	if err != nil {
		// Its time passed while it waited here (its decision's facts
		// waited for a stream leader, say): the callback was not tried.
		err = fmt.Errorf("%w: %w", errNotTried, err)
	}
	if err == nil {
		var ans *rvp.Answer
		if ans, err = p.client.Do(ctx, j.out); err == nil {
			status = ans.Status
		}
	}
	p.metrics.notified(status, err, time.Since(start))
	if err != nil {
		p.log.Debug("notify failed", "url", j.out.URL.String(), "err", err)
	} else if status/100 != 2 {
		p.log.Debug("notify refused", "url", j.out.URL.String(), "status", status)
	}
	if j.done != nil {
		j.done(status, err)
	}
}

// sending is a message being delivered, with the request it came in and
// where its sender waits.
type sending struct {
	d       *delivery
	msg     jetstream.Msg // the request, acknowledged when the outcome is recorded
	replyTo string
}

// startDelivery sends a message to every target in parallel; the outcome
// comes back to the deciding goroutine through n.outcomes.
func (n *Node) startDelivery(ctx context.Context, d *delivery) {
	t := newTally(d)
	deadline := n.now().Add(n.policy.DeliveryTimeout)
	for _, tg := range d.targets {
		reach := n.reachability(tg.ref)
		done := func(status int, err error) {
			reach(status, err)
			if o, ok := t.record(status, err); ok {
				o.d = d
				select {
				case n.outcomes <- o:
				case <-ctx.Done():
				}
			}
		}
		if n.pool.submit(job{key: tg.key(), out: d.outbound(tg), deadline: deadline, done: done}) {
			continue
		}
		n.log.Warn("delivery queue full; message not sent to one client", "req", d.req.ID, "url", tg.url.String())
		// This goroutine is the one that reads n.outcomes: it decides the
		// outcome itself, as it next takes an input.
		if o, ok := t.record(rvp.StatusUnavailable, nil); ok {
			o.d = d
			n.refused = append(n.refused, o)
		}
	}
}

// sendNotes queues a decision's NOTIFYs and hands its relays to the
// watchers' home servers.
func (n *Node) sendNotes(d *decision, submit func(job) bool) {
	if d.unsent > 0 {
		n.dropped.Add(uint64(d.unsent))
		n.metrics.drop(d.unsent)
		n.log.Warn("notifications past the fan-out limit not sent", "sent", len(d.notes)+len(d.relays), "unsent", d.unsent, "limit", n.policy.MaxFanout)
	}
	dropped, url := 0, ""
	for _, nt := range d.notes {
		if !submit(job{key: nt.key, out: nt.out, deadline: nt.deadline, done: n.reachability(nt.ref)}) {
			if dropped == 0 {
				url = nt.out.URL.String()
			}
			dropped++
		}
	}
	if dropped > 0 {
		if ok, since := n.dropLog.add(dropped, n.now()); ok {
			n.log.Warn("delivery queue full; notifications dropped", "dropped", since, "first_url", url, "logged_every", dropLogEvery)
		}
	}
	for _, r := range d.relays {
		n.relay(r)
	}
}

// dropLogEvery is how often at most notifications dropped at a full
// queue are logged: each is counted (rvpd_home_notify_deliveries_total
// {result="dropped"}), and a line for each, a thousand for one change
// told to a thousand watchers, drowned the log.
const dropLogEvery = 10 * time.Second

// dropLog says when notifications dropped may be logged again, and how
// many were dropped since the last line; and, once the drops ended, how
// many the last line did not tell (ended).
type dropLog struct {
	mu      sync.Mutex
	last    time.Time // of the last line
	seen    time.Time // of the last drop, logged or not
	dropped int
}

// add counts n dropped at now, and reports whether to log them, with
// how many were dropped since the last line (these included).
func (l *dropLog) add(n int, now time.Time) (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.dropped += n
	l.seen = now
	if !l.last.IsZero() && now.Sub(l.last) < dropLogEvery {
		return false, 0
	}
	since := l.dropped
	l.last, l.dropped = now, 0
	return true, since
}

// ended returns, when nothing was dropped for dropLogEvery at now and
// notifications were dropped after the last line that it did not tell
// (the drops ended), how many, and counts them told; else 0.
func (l *dropLog) ended(now time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	// Quiet for dropLogEvery since the last drop (so since the last line
	// too): drops that go on have their next line at the next drop, not
	// one saying they ended.
	if l.dropped == 0 || now.Sub(l.seen) < dropLogEvery {
		return 0
	}
	since := l.dropped
	l.dropped = 0
	return since
}

// dropsEnded logs the notifications dropped at a full queue that the
// last line did not tell, once nothing was dropped for dropLogEvery
// after it (the deciding loop looks at every sweep), or, stopping, at
// once: an operator reading the log learns how many there were and that
// they stopped, rather than only the first burst's count.
func (n *Node) dropsEnded(now time.Time, stopping bool) {
	if stopping {
		now = now.Add(dropLogEvery)
	}
	if since := n.dropLog.ended(now); since > 0 {
		n.log.Warn("delivery queue full; notifications dropped after the last line, none since", "dropped", since, "logged_every", dropLogEvery)
	}
	if since := n.relayDropLog.ended(now); since > 0 {
		n.log.Warn("relay queue full; notifications for another home server dropped after the last line, none since", "dropped", since, "logged_every", dropLogEvery)
	}
}

// relay hands a notification for another home server's clients on. One
// for a home server of this site goes to the relaying goroutine
// (runRelays): the deciding loop never waits for JetStream, and a full
// queue drops it, counted and logged. One for a home server of another
// site is published asynchronously, once (a silent leaf connection would
// hold up the relays behind it), and not at all while that site is lost:
// its watchers are told the state again when it is back. In a
// deployment of one domain (no site of its own) every home server is of
// this one, whatever site its directory entry names.
func (n *Node) relay(r relayOut) {
	if site := siteOf(n.cfg.Directory, r.home); n.cfg.FactStream.Site != "" && site != "" && site != n.cfg.FactStream.Site {
		if n.cfg.Sites.Lost(site) {
			n.relayLog.skipped.Add(1)
			return
		}
		msg, err := relayMsg(r)
		if err != nil {
			return
		}
		if _, err := n.relayAsync.PublishMsgAsync(msg, jetstream.WithMsgID(r.ev.ID)); err != nil {
			n.relayLog.failed(n.log, r.home, err)
			n.cfg.Sites.Missed(site)
		}
		return
	}
	select {
	case n.relays <- r:
	default:
		n.dropped.Add(1)
		if ok, since := n.relayDropLog.add(1, n.now()); ok {
			n.log.Warn("relay queue full; notifications for another home server dropped", "to", r.home, "watcher", r.ev.Node.String(), "dropped", since, "logged_every", dropLogEvery)
		}
	}
}

// relayMsg is the request event a relay appends to its home server's
// requests.
func relayMsg(r relayOut) (*nats.Msg, error) {
	data, err := events.Encode(r.ev)
	if err != nil {
		return nil, err
	}
	msg := nats.NewMsg(events.RequestSubject(r.home, r.ev.Node))
	msg.Header.Set(events.HeaderType, r.ev.Type())
	msg.Data = data
	return msg, nil
}

// runRelays appends the relays, in order, to the other home servers'
// requests, each until it is stored or its deadline passes (a stream
// leader's election, a server lost: projections.Append); nothing waits
// for an answer. It returns when ctx ends.
func (n *Node) runRelays(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case r := <-n.relays:
			msg, err := relayMsg(r)
			if err != nil {
				continue
			}
			rctx, cancel := context.WithDeadline(ctx, r.ev.Deadline)
			_, err = projections.Append(rctx, n.cfg.JetStream, msg, r.ev.ID)
			cancel()
			if err != nil && ctx.Err() == nil {
				n.relayLog.failed(n.log, r.home, err)
			}
		}
	}
}

// reach is whether a subscription's callback answered a NOTIFY.
type reach struct {
	ref subRef
	err error
}

// errNotTried is a NOTIFY whose time passed before it was sent: it says
// nothing of its callback.
var errNotTried = errors.New("not sent in time")

// reachability returns the completion that reports whether ref's
// callback answered. A NOTIFY not tried says nothing of it: a node whose
// notifications waited (for a stream leader's election, say) must not
// end the subscriptions of clients that answer.
func (n *Node) reachability(ref subRef) func(int, error) {
	return func(_ int, err error) {
		if errors.Is(err, errNotTried) {
			return
		}
		select {
		case n.reaches <- reach{ref: ref, err: err}:
		default: // a heuristic: dropping a report under load is harmless
		}
	}
}

// resendAfterTakeover tells the watchers of the users whose facts were
// stored lately (usersChangedLately) their state, as a new owner of the
// home server does: notifications the previous owner decided may not
// have gone out before it died. When the stream cannot be read, every
// watcher is told.
func (n *Node) resendAfterTakeover(ctx context.Context, state jetstream.StreamState) {
	if state.Msgs == 0 {
		return // a home server with no fact yet: nobody to be told of anything
	}
	users, since, err := n.usersChangedLately(ctx, state)
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		n.log.Warn("the facts stored lately could not be read; presence is re-sent to every watcher", "err", err)
		if users, err = n.proj.Users(); err != nil {
			n.log.Error("presence not re-sent after taking over", "err", err)
			return
		}
	}
	count := n.resendPresenceOf(ctx, users, nil)
	n.log.Info("presence re-sent to watchers after taking over the home server", "users", len(users), "facts_since", since, "notifications", count)
}

// usersChangedLately returns the users with a fact stored since
// DeliveryTimeout and ClockSkew before the home server's last fact (in
// state, the stream as the node found it before it appended its own; not
// empty: resendAfterTakeover's check), or
// before the previous owner was last seen alive if that is later, and that
// time: every notification decided before it was over by then
// (Config.ResendPresence).
func (n *Node) usersChangedLately(ctx context.Context, state jetstream.StreamState) ([]events.User, time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	alive := state.LastTime
	if n.cfg.PreviousOwnerSeen.After(alive) {
		alive = n.cfg.PreviousOwnerSeen
	}
	since := alive.Add(-n.policy.DeliveryTimeout - n.cfg.ClockSkew)
	if since.After(state.LastTime) {
		return nil, since, nil // the last fact is older: its notifications were over
	}
	cons, err := n.cfg.JetStream.OrderedConsumer(ctx, n.stream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.FactFilter(n.cfg.Home)},
		DeliverPolicy:  jetstream.DeliverByStartTimePolicy,
		OptStartTime:   &since,
		HeadersOnly:    true,
		// Unbounded, a stream deleted or offline midway held the read
		// past its 30 s for good.
		MaxResetAttempts: factReadResetAttempts,
	})
	if err != nil {
		return nil, since, fmt.Errorf("stream %s: read facts since %s: %w", n.stream, since, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return nil, since, fmt.Errorf("stream %s: read facts since %s: %w", n.stream, since, err)
	}
	defer it.Stop()
	seen := map[events.User]bool{}
	var users []events.User
	for next := jetstream.NextContext(ctx); ; {
		m, err := it.Next(next)
		if err != nil {
			return nil, since, fmt.Errorf("stream %s: read facts since %s: %w", n.stream, since, err)
		}
		md, err := m.Metadata()
		if err != nil {
			return nil, since, err
		}
		if _, u, err := events.ParseFactSubject(m.Subject()); err == nil && !u.IsZero() && !seen[u] { // zero: a fence (fence.go)
			seen[u] = true
			users = append(users, u)
		}
		// Up to the last fact as the stream's leader had it (state), which
		// is at or after since: a consumer on a replica behind has none of
		// the last facts pending, and ending there told fewer watchers.
		if md.Sequence.Stream >= state.LastSeq {
			return users, since, nil
		}
	}
}

// resendPresence tells every watcher of every user here the state it is
// allowed to see. With homes, only the watchers homed on those home
// servers are told: those of a site that is back (sites.go).
func (n *Node) resendPresence(ctx context.Context, homes map[string]bool) {
	users, err := n.proj.Users()
	if err != nil {
		n.log.Error("presence not re-sent to a site", "err", err)
		return
	}
	count := n.resendPresenceOf(ctx, users, homes)
	n.log.Info("presence re-sent to the watchers homed at other sites", "home_servers", len(homes), "notifications", count)
}

// resendPresenceOf tells the watchers of users (with homes, those homed
// on those home servers only) the state they are allowed to see, and
// returns how many notifications it sent. Clients take a state they
// already have without harm. It waits for room in the delivery queue
// rather than drop, and stops when ctx ends.
func (n *Node) resendPresenceOf(ctx context.Context, users []events.User, homes map[string]bool) int {
	submit := n.pool.submitWait(ctx)
	count := 0
	for _, u := range users {
		if ctx.Err() != nil {
			return count
		}
		var in any = resend(u)
		if homes != nil {
			in = resendTo{user: u, homes: homes}
		}
		// Against the projection, not the overlay of the facts in flight:
		// the overlay is the deciding goroutine's, and what it holds is
		// not durable yet (a decision in flight tells its own watchers).
		d, err := decide(View{Home: n.cfg.Home, State: n.proj, Dir: n.cfg.Directory, Busy: n.busy}, n.policy, in, n.now())
		if err != nil {
			n.log.Error("presence not re-sent", "user", u.String(), "err", err)
			continue
		}
		count += len(d.notes) + len(d.relays)
		n.sendNotes(d, submit)
	}
	return count
}
