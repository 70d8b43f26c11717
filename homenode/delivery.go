package homenode

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
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
	out      rvp.Outbound
	deadline time.Time
	done     func(status int, err error) // nil for fire-and-forget
}

// pool sends NOTIFYs with a fixed number of workers reading a bounded
// queue.
type pool struct {
	client  *rvp.Client
	workers int
	jobs    chan job
	log     *slog.Logger
	dropped *atomic.Uint64
}

func newPool(c *rvp.Client, workers, queue int, log *slog.Logger, dropped *atomic.Uint64) *pool {
	return &pool{client: c, workers: workers, jobs: make(chan job, queue), log: log, dropped: dropped}
}

func (p *pool) start(ctx context.Context, wg *sync.WaitGroup) {
	for range p.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case j := <-p.jobs:
					p.run(ctx, j)
				}
			}
		}()
	}
}

func (p *pool) run(ctx context.Context, j job) {
	ctx, cancel := context.WithDeadline(ctx, j.deadline)
	defer cancel()
	status, err := 0, ctx.Err()
	if err == nil {
		var ans *rvp.Answer
		if ans, err = p.client.Do(ctx, j.out); err == nil {
			status = ans.Status
		}
	}
	if err != nil {
		p.log.Debug("notify failed", "url", j.out.URL.String(), "err", err)
	} else if status/100 != 2 {
		p.log.Debug("notify refused", "url", j.out.URL.String(), "status", status)
	}
	if j.done != nil {
		j.done(status, err)
	}
}

// submit queues j without blocking; false means the queue is full.
// submitWait queues j, waiting for room until ctx ends.
func (p *pool) submitWait(ctx context.Context) func(job) bool {
	return func(j job) bool {
		select {
		case p.jobs <- j:
			return true
		case <-ctx.Done():
			return false
		}
	}
}

func (p *pool) submit(j job) bool {
	select {
	case p.jobs <- j:
		return true
	default:
		p.dropped.Add(1)
		return false
	}
}

// target is a client callback a NOTIFY goes to, and the subscription that
// named it; or, when home is set, the home server of a watcher on another
// home server, which relays the NOTIFY to its clients.
type target struct {
	url   rvp.URL
	subID int32
	ref   subRef
	home  string
	// foreign marks another organisation's server: its 302s are followed.
	foreign bool
}

// delivery is a message being delivered to a node's clients.
type delivery struct {
	msg      jetstream.Msg // the request, acknowledged when the outcome is recorded
	req      *events.Notify
	body     []byte // what is forwarded: the request's body, byte for byte, but for a missing sender description
	replyTo  string
	targets  []target
	answered bool // SingleHop: the sender was answered when it was accepted
}

// outcome is what delivering a message came to.
type outcome struct {
	d         *delivery
	status    int
	delivered int
	failed    int
}

// tally counts a delivery's results and decides its outcome once: for
// DeepOr as soon as one client took the message (or all failed), for
// DeepAnd when all have answered.
type tally struct {
	mu                                  sync.Mutex
	pending, delivered, failed, refused int // refused: first non-2xx status
	deepAnd, decided                    bool
}

// record counts one result; it returns the outcome when this result
// decides it.
func (t *tally) record(status int, err error) (outcome, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.pending--
	ok := err == nil && status/100 == 2
	if ok {
		t.delivered++
	} else {
		t.failed++
		if err == nil && t.refused == 0 {
			// Only what the sender may know of a client's answer
			// (rvp.SenderStatus: 500, "left the conversation"; else 412).
			t.refused = rvp.SenderStatus(status)
		}
	}
	if t.decided {
		return outcome{}, false
	}
	o := outcome{delivered: t.delivered, failed: t.failed}
	switch {
	case ok && !t.deepAnd, t.pending == 0 && t.failed == 0:
		o.status = 200
	case t.pending == 0:
		// Relay the endpoint's refusal as rvp.SenderStatus has it (a 500
		// means the recipient left the conversation); when none answered,
		// nobody is reachable.
		o.status = t.refused
		if o.status == 0 {
			o.status = 412
		}
	default:
		return outcome{}, false
	}
	t.decided = true
	return o, true
}

// startDelivery sends a message to every target in parallel; the outcome
// comes back to the deciding goroutine through n.outcomes.
func (n *Node) startDelivery(ctx context.Context, d *delivery) error {
	r := &d.req.Req
	hop := d.req.HopCount
	if hop < 1 {
		hop = 1
	}
	t := &tally{pending: len(d.targets), deepAnd: strings.EqualFold(d.req.AckType, "DeepAnd")}
	done := func(tg target) func(int, error) {
		reach := n.reachability(tg.ref)
		return func(status int, err error) {
			reach(status, err)
			if o, ok := t.record(status, err); ok {
				o.d = d
				select {
				case n.outcomes <- o:
				case <-ctx.Done():
				}
			}
		}
	}
	deadline := n.now().Add(n.policy.DeliveryTimeout)
	for _, tg := range d.targets {
		out := rvp.Outbound{URL: tg.url, Body: d.body, Header: []rvp.Field{
			{Name: rvp.HdrVersion, Value: rvp.Version},
			{Name: rvp.HdrAckType, Value: ackType(d.req.AckType)},
			{Name: rvp.HdrHopCount, Value: strconv.Itoa(hop + 1)},
			{Name: rvp.HdrFromPrincipal, Value: r.From},
			{Name: rvp.HdrSubscriptionID, Value: strconv.Itoa(int(tg.subID))},
			{Name: rvp.HdrContentType, Value: rvp.ContentTypeXML},
		}}
		if n.pool.submit(job{out: out, deadline: deadline, done: done(tg)}) {
			continue
		}
		n.log.Warn("delivery queue full; message not sent to one client", "req", r.ID, "url", tg.url.String())
		// This goroutine is the one that reads n.outcomes: decide inline.
		if o, ok := t.record(503, nil); ok {
			o.d = d
			if err := n.handleOutcome(ctx, o); err != nil {
				return err
			}
		}
	}
	return nil
}

func ackType(s string) string {
	if s == "" {
		return "DeepOr"
	}
	return s
}

// handleOutcome records a delivery's outcome and answers its sender.
func (n *Node) handleOutcome(ctx context.Context, o outcome) error {
	r := &o.d.req.Req
	now := n.now()
	f := &events.MessageDelivered{Meta: n.meta(r, now), Node: r.Node, Status: o.status, Delivered: o.delivered, Failed: o.failed}
	d := &decision{msgID: r.ID + "/delivered", facts: []events.Fact{f}}
	if err := n.appendFacts(ctx, d); err != nil {
		// The message went out; only its record is missing. The sender is
		// answered all the same, and the failure is loud.
		n.log.Error("record delivery outcome", "req", r.ID, "status", o.status, "err", err)
	}
	if !o.d.answered {
		reply := &events.Reply{ID: r.ID, Status: o.status}
		if o.status != 200 {
			reply.Error = r.Node.String() + ": no client took the message"
		}
		n.reply(o.d.replyTo, reply)
	}
	n.seen.add(r.ID, false)
	delete(n.delivering, r.ID)
	if o.d.msg != nil {
		o.d.msg.Ack()
	}
	return nil
}

// presenceOf returns the presence of every user a view fact touches.
func (n *Node) presenceOf(facts []events.Fact) map[events.User]Presence {
	var m map[events.User]Presence
	for _, f := range facts {
		switch f.(type) {
		case *events.ViewSet, *events.ViewEnded:
		default:
			continue
		}
		u := f.Subject()
		if _, ok := m[u]; ok {
			continue
		}
		views, err := n.proj.Views(u)
		if err != nil {
			n.log.Error("read views", "user", u.String(), "err", err)
			continue
		}
		if m == nil {
			m = map[events.User]Presence{}
		}
		m[u] = effective(views)
	}
	return m
}

// afterCommit fans out presence changes and pushes current states to new
// watchers, once a decision's facts are applied.
func (n *Node) afterCommit(d *decision) {
	for u, before := range d.before {
		views, err := n.proj.Views(u)
		if err != nil {
			n.log.Error("read views", "user", u.String(), "err", err)
			continue
		}
		if after := effective(views); after != before {
			n.fanOut(u, before, after)
		}
	}
	if d.relay != nil {
		n.deliverRelay(d.relay)
	}
	for u, old := range d.aclBefore {
		n.aclChanged(u, old)
	}
	for _, p := range d.push {
		s, err := n.proj.Subscription(p.node, p.id)
		if err != nil || s == nil {
			continue
		}
		views, err := n.proj.Views(p.node)
		if err != nil {
			continue
		}
		n.notifyState(p.node, s, effective(views).For(p.node, s), map[string]bool{})
	}
}

// fanOut tells every property subscriber of u about a change of its
// presence, as each audience sees it: only subscribers whose view of the
// state changed are told, each once.
func (n *Node) fanOut(u events.User, before, after Presence) {
	subs, err := n.proj.Subscriptions(u)
	if err != nil {
		n.log.Error("read subscriptions", "user", u.String(), "err", err)
		return
	}
	acl, err := n.aclOf(u, "")
	if err != nil {
		n.log.Error("read ACL", "user", u.String(), "err", err)
		return
	}
	sent := map[string]bool{}
	for i := range subs {
		s := &subs[i]
		if s.Kind != events.NotifyPropChange || !permitted(acl, subscriber(u, s), events.RightPresence) {
			continue
		}
		if prev, state := before.For(u, s), after.For(u, s); prev != state {
			n.notifyState(u, s, state, sent)
		}
	}
}

// aclChanged tells the watchers of u whose sight of its presence an ACL
// change gave or took away: the state they now see (offline when taken).
func (n *Node) aclChanged(u events.User, old []events.ACE) {
	acl, err := n.aclOf(u, "")
	if err != nil {
		n.log.Error("read ACL", "user", u.String(), "err", err)
		return
	}
	subs, err := n.proj.Subscriptions(u)
	if err != nil {
		return
	}
	views, err := n.proj.Views(u)
	if err != nil {
		return
	}
	pr := effective(views)
	sent := map[string]bool{}
	for i := range subs {
		s := &subs[i]
		if s.Kind != events.NotifyPropChange {
			continue
		}
		p := subscriber(u, s)
		was, is := permitted(old, p, events.RightPresence), permitted(acl, p, events.RightPresence)
		if was == is {
			continue
		}
		state := events.StateOffline
		if is {
			state = pr.For(u, s)
		}
		n.notifyState(u, s, state, sent)
	}
}

// notifyState sends a propnotification of u's state for subscription s to
// the clients behind its Call-Back. Several subscriptions that end at the
// same client with the same document cost one NOTIFY (sent records them).
func (n *Node) notifyState(u events.User, s *projections.Subscription, state string, sent map[string]bool) {
	n.notifyStateVia(u, s, state, sent, n.pool.submit)
}

// notifyStateVia is notifyState with the NOTIFYs queued by submit.
func (n *Node) notifyStateVia(u events.User, s *projections.Subscription, state string, sent map[string]bool, submit func(job) bool) {
	from := rvp.Contact{Href: s.NodeURL, Description: n.displayName(u)}
	to := rvp.Contact{Href: s.Subscriber}
	if !s.Watcher.IsZero() {
		to.Description = n.displayName(s.Watcher)
	}
	body := rvp.PropNotification(from, to, state)
	server := u.Domain
	if dom, err := n.cfg.Directory.Domain(u.Domain); err == nil && dom != nil {
		server = dom.IMHost
	}
	for _, t := range n.targetsOf(s) {
		key := t.home + "\x00" + t.ref.node.String() + "\x00" + t.url.String() + "\x00" + string(body)
		if sent[key] {
			continue
		}
		sent[key] = true
		if t.home != "" {
			n.relayTo(t.home, t.ref.node, server, body)
			continue
		}
		out := rvp.Outbound{URL: t.url, Body: body, Header: []rvp.Field{
			{Name: rvp.HdrVersion, Value: rvp.Version},
			{Name: rvp.HdrHopCount, Value: "2"},
			{Name: rvp.HdrFromPrincipal, Value: server},
			{Name: rvp.HdrSubscriptionID, Value: strconv.Itoa(int(t.subID))},
			{Name: rvp.HdrContentType, Value: rvp.ContentTypeXML},
		}}
		if t.foreign {
			out.Redirects = 3
		}
		if !submit(job{out: out, deadline: n.now().Add(n.policy.DeliveryTimeout), done: n.reachability(t.ref)}) {
			n.log.Warn("delivery queue full; presence notification dropped", "node", u.String(), "url", t.url.String())
		}
	}
}

// targetsOf returns the callbacks behind a property subscription: for a
// watcher homed here, the callbacks of its login subscriptions (the last
// hop, which keeps client addresses inside their home server); otherwise
// the Call-Back itself.
func (n *Node) targetsOf(s *projections.Subscription) []target {
	if !s.Watcher.IsZero() {
		rec, err := n.cfg.Directory.User(s.Watcher)
		if err != nil || rec == nil || !rec.Enabled {
			return nil
		}
		if rec.Home != n.cfg.Home {
			// Its own home server has its clients' addresses: hand over.
			return []target{{home: rec.Home, ref: subRef{s.Watcher, 0}}}
		}
		subs, err := n.proj.Subscriptions(s.Watcher)
		if err != nil {
			return nil
		}
		var out []target
		for _, l := range subs {
			if l.Kind != events.NotifyPragma {
				continue
			}
			if u, err := rvp.ParseURL(l.CallBack); err == nil {
				out = append(out, target{url: u, subID: l.ID, ref: subRef{s.Watcher, l.ID}})
			}
		}
		return out
	}
	u, err := rvp.ParseURL(s.CallBack)
	if err != nil {
		return nil
	}
	if rvp.IsNodeURL(u) {
		// A principal of another organisation: its own server relays to
		// its clients, if we federate at all.
		if dom, err := n.cfg.Directory.DomainByHost(u.Host); err != nil || dom != nil {
			return nil
		}
		if st, err := n.cfg.Directory.Settings(); err != nil || !st.InternetCapable {
			n.log.Debug("watcher of another organisation not notified: intranet-only", "callback", s.CallBack)
			return nil
		}
		return []target{{url: u, subID: s.ID, ref: subRef{s.Node, s.ID}, foreign: true}}
	}
	return []target{{url: u, subID: s.ID, ref: subRef{s.Node, s.ID}}}
}

func (n *Node) displayName(u events.User) string {
	rec, err := n.cfg.Directory.User(u)
	if err != nil || rec == nil || rec.DisplayName == "" {
		return u.Alias
	}
	return rec.DisplayName
}

// sweep ends the subscriptions and presence leases whose time has come.
func (n *Node) sweep(ctx context.Context) error {
	now := n.now()
	due, err := n.proj.DueBy(now, 256)
	if err != nil {
		return err
	}
	for _, x := range due {
		d, err := n.commit(ctx, n.log, func() (*decision, error) { return n.decideExpiry(x, now) })
		if err != nil {
			n.log.Warn("expiry not recorded; will retry", "user", x.User.String(), "kind", x.Kind, "id", x.ID, "err", err)
			return nil
		}
		if len(d.facts) > 0 {
			n.expired.Add(1)
		}
		n.afterCommit(d)
	}
	return nil
}

// decideExpiry decides the end of one subscription or view.
func (n *Node) decideExpiry(x projections.Due, now time.Time) (*decision, error) {
	d := &decision{msgID: "expiry/" + x.Kind + "/" + strconv.Itoa(int(x.ID)) + "/" + strconv.FormatInt(x.At.UnixNano(), 10)}
	meta := n.systemMeta(now)
	switch x.Kind {
	case "s":
		s, err := n.proj.Subscription(x.User, x.ID)
		if err != nil || s == nil || s.Expires.After(now) {
			return d, err
		}
		d.facts = append(d.facts, &events.SubscriptionEnded{Meta: meta, Node: x.User, ID: x.ID, Reason: events.EndExpired})
		return d, n.endViewsWithLastLogin(d, x.User, []projections.Subscription{*s}, meta)
	case "v":
		d.facts = append(d.facts, &events.ViewEnded{Meta: meta, Node: x.User, ID: x.ID, Reason: events.EndExpired})
	}
	return d, nil
}

// relayTo hands body to home's node for watcher's clients, as a request
// event; nothing waits for an answer.
func (n *Node) relayTo(home string, watcher events.User, server string, body []byte) {
	now := n.now()
	ev := &events.Relay{Req: events.Req{
		ID: "relay-" + strconv.FormatUint(n.relays.Add(1), 10) + "-" + strconv.FormatInt(now.UnixNano(), 36) + "-" + events.Token(n.cfg.Home),
		At: now, Deadline: now.Add(n.policy.DeliveryTimeout), Gateway: "home:" + n.cfg.Home,
		Node: watcher, From: server, Auth: events.Identity{Scheme: "internal"},
	}, Body: body}
	data, err := events.Encode(ev)
	if err != nil {
		return
	}
	msg := nats.NewMsg(events.RequestSubject(home, watcher))
	msg.Header.Set(events.HeaderType, ev.Type())
	msg.Data = data
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := n.cfg.JetStream.PublishMsg(ctx, msg, jetstream.WithMsgID(ev.ID)); err != nil {
		n.log.Warn("relay to another home server failed", "home", home, "watcher", watcher.String(), "err", err)
	}
}

// deliverRelay sends a relayed notification to the node's clients.
func (n *Node) deliverRelay(e *events.Relay) {
	subs, err := n.proj.Subscriptions(e.Node)
	if err != nil {
		n.log.Error("read subscriptions", "user", e.Node.String(), "err", err)
		return
	}
	for _, l := range subs {
		if l.Kind != events.NotifyPragma {
			continue
		}
		u, err := rvp.ParseURL(l.CallBack)
		if err != nil {
			continue
		}
		out := rvp.Outbound{URL: u, Body: e.Body, Header: []rvp.Field{
			{Name: rvp.HdrVersion, Value: rvp.Version},
			{Name: rvp.HdrHopCount, Value: "3"},
			{Name: rvp.HdrFromPrincipal, Value: e.From},
			{Name: rvp.HdrSubscriptionID, Value: strconv.Itoa(int(l.ID))},
			{Name: rvp.HdrContentType, Value: rvp.ContentTypeXML},
		}}
		if !n.pool.submit(job{out: out, deadline: e.Deadline, done: n.reachability(subRef{e.Node, l.ID})}) {
			n.log.Warn("delivery queue full; relayed notification dropped", "node", e.Node.String())
		}
	}
}

// reach is whether a subscription's callback answered a NOTIFY.
type reach struct {
	ref subRef
	err error
}

// reachability returns the completion that reports whether ref's
// callback answered. Only a connection that got no answer at all counts as
// a failure: a client that answers, even 500 (Net::RVP's demo client does
// to every presence NOTIFY), is there.
func (n *Node) reachability(ref subRef) func(int, error) {
	return func(_ int, err error) {
		select {
		case n.reaches <- reach{ref: ref, err: err}:
		default: // a heuristic: dropping a report under load is harmless
		}
	}
}

// handleReach counts consecutive failures of a callback; at the limit the
// subscription ends (and with the last login, the user's presence).
func (n *Node) handleReach(ctx context.Context, rc reach) error {
	if n.policy.MaxCallbackFailures < 0 {
		return nil
	}
	if rc.err == nil {
		delete(n.failures, rc.ref)
		return nil
	}
	n.failures[rc.ref]++
	if n.failures[rc.ref] < n.policy.MaxCallbackFailures {
		return nil
	}
	delete(n.failures, rc.ref)
	now := n.now()
	d, err := n.commit(ctx, n.log, func() (*decision, error) {
		d := &decision{msgID: "unreachable/" + rc.ref.node.String() + "/" + strconv.Itoa(int(rc.ref.id)) + "/" + strconv.FormatInt(now.UnixNano(), 10)}
		s, err := n.proj.Subscription(rc.ref.node, rc.ref.id)
		if err != nil || s == nil {
			return d, err
		}
		meta := n.systemMeta(now)
		d.facts = append(d.facts, &events.SubscriptionEnded{Meta: meta, Node: rc.ref.node, ID: s.ID, Reason: events.EndUnreachable})
		return d, n.endViewsWithLastLogin(d, rc.ref.node, []projections.Subscription{*s}, meta)
	})
	if err != nil {
		n.log.Warn("unreachable callback's subscription not ended; will retry", "node", rc.ref.node.String(), "sub", rc.ref.id, "err", err)
		return nil
	}
	if len(d.facts) > 0 {
		n.log.Info("subscription ended: its callback stopped answering", "node", rc.ref.node.String(), "sub", rc.ref.id, "failures", n.policy.MaxCallbackFailures)
	}
	n.afterCommit(d)
	return nil
}

// resendPresence tells every watcher of every user here the state it is
// allowed to see, as a new owner of the home server does: notifications
// the previous owner decided may not have gone out before it died.
// Clients take a state they already have without harm. It waits for room
// in the delivery queue rather than drop, and stops when ctx ends.
func (n *Node) resendPresence(ctx context.Context) {
	users, err := n.proj.Users()
	if err != nil {
		n.log.Error("presence not re-sent after taking over", "err", err)
		return
	}
	submit := n.pool.submitWait(ctx)
	count := 0
	for _, u := range users {
		if ctx.Err() != nil {
			return
		}
		subs, err := n.proj.Subscriptions(u)
		if err != nil || len(subs) == 0 {
			continue
		}
		views, err := n.proj.Views(u)
		if err != nil {
			continue
		}
		acl, err := n.aclOf(u, "")
		if err != nil {
			continue
		}
		pr := effective(views)
		sent := map[string]bool{}
		for i := range subs {
			s := &subs[i]
			if s.Kind != events.NotifyPropChange || !permitted(acl, subscriber(u, s), events.RightPresence) {
				continue
			}
			n.notifyStateVia(u, s, pr.For(u, s), sent, submit)
			count++
		}
	}
	n.log.Info("presence re-sent to watchers after taking over the home server", "subscriptions", count)
}
