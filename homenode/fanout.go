package homenode

import (
	"bytes"
	"cmp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
	"github.com/rvp-im/rvpd/rvp"
)

// The rules of what the home server sends: who is told of a change of
// presence and what each sees, where a user's clients are, how a message's
// delivery ends, when subscriptions and leases expire, and when a callback
// has stopped answering.

// target is a client callback a NOTIFY goes to, and the subscription that
// named it; or, when home is set, the home server of a watcher on another
// home server, which relays the NOTIFY to its clients.
type target struct {
	url   rvp.URL
	subID int32
	ref   subRef
	home  string
	// foreign marks another organisation's server: its 302s are followed,
	// and its addresses are judged as found by DNS (rvp.Client.Federation).
	foreign bool
	// login marks the callback of a local user's login subscription.
	login bool
}

// key is whose delivery this is, for fairness: the user whose login it
// is, else the callback's host.
func (t target) key() string {
	if t.login {
		return t.ref.node.String()
	}
	return t.url.Host
}

// loginTargets returns the callbacks of u's login subscriptions: where
// what is sent to u goes.
func (c *core) loginTargets(u events.User) ([]target, error) {
	logins, err := c.State.Logins(u)
	if err != nil {
		return nil, err
	}
	var out []target
	for _, l := range logins {
		if cb, err := rvp.ParseURL(l.CallBack); err == nil {
			out = append(out, target{url: cb, subID: l.ID, ref: subRef{u, l.ID}, login: true})
		}
	}
	return out, nil
}

// targetsOf returns the callbacks behind a property subscription: for a
// watcher homed here, the callbacks of its login subscriptions (the last
// hop, which keeps client addresses inside their home server); for one
// homed elsewhere, its home server; otherwise the Call-Back itself.
func (c *core) targetsOf(s *projections.Subscription) ([]target, error) {
	if !s.Watcher.IsZero() {
		rec, err := c.Dir.User(s.Watcher)
		if err != nil || rec == nil || !rec.Enabled {
			return nil, err
		}
		if rec.Home != c.Home {
			// Its own home server has its clients' addresses: hand over.
			return []target{{home: rec.Home, ref: subRef{s.Watcher, 0}}}, nil
		}
		return c.loginTargets(s.Watcher)
	}
	u, err := rvp.ParseURL(s.CallBack)
	if err != nil {
		return nil, nil
	}
	if rvp.IsNodeURL(u) {
		// A principal of another organisation: its own server relays to
		// its clients, if we federate at all.
		if dom, err := c.Dir.DomainByHost(u.Host); err != nil || dom != nil {
			return nil, err
		}
		if st, err := c.Dir.Settings(); err != nil || !st.InternetCapable {
			return nil, err
		}
		return []target{{url: u, subID: s.ID, ref: subRef{s.Node, s.ID}, foreign: true}}, nil
	}
	return []target{{url: u, subID: s.ID, ref: subRef{s.Node, s.ID}}}, nil
}

func (c *core) displayName(u events.User) string {
	rec, err := c.Dir.User(u)
	if err != nil || rec == nil || rec.DisplayName == "" {
		return u.Alias
	}
	return rec.DisplayName
}

// senderName is the display name of a message's sender: from the
// directory for a local user, else the alias in its URL.
func (c *core) senderName(r *events.Req) string {
	if !r.FromUser.IsZero() {
		return c.displayName(r.FromUser)
	}
	if u, err := rvp.ParseURL(r.From); err == nil {
		if ref, err := rvp.ParseNodePath(u.Path); err == nil {
			return ref.Alias
		}
	}
	return r.From
}

// presence returns u's effective presence.
func (c *core) presence(u events.User) (Presence, error) {
	views, err := c.State.Views(u)
	if err != nil {
		return Presence{}, err
	}
	return effective(views), nil
}

// fanout builds the notifications of one decision, against the state
// after its facts. Several subscriptions that end at the same client
// with the same document cost one NOTIFY (sent).
type fanout struct {
	*core
	d   *decision
	now time.Time
	// sent holds the documents sent to each destination so far.
	sent map[noteDest][][]byte
}

// noteDest is where a notification goes: a client's callback (home "") or
// another home server, for node's subscriber.
type noteDest struct {
	home string
	node events.User
	url  rvp.URL
}

// change tells every property subscriber of u about a change of its
// presence, as each audience sees it: only subscribers whose view of the
// state changed are told, each once. before is what each was told last
// (the same for all, but after a late handoff).
func (f *fanout) change(u events.User, before func(*projections.Subscription) Presence, after Presence) error {
	watchers, err := f.State.Watchers(u)
	if err != nil {
		return err
	}
	acl, err := f.aclOf(u, "")
	if err != nil {
		return err
	}
	for i := range watchers {
		s := &watchers[i]
		if !permitted(acl, subscriber(u, s), events.RightPresence) {
			continue
		}
		if prev, state := before(s).For(u, s), after.For(u, s); prev != state {
			if err := f.state(u, s, state); err != nil {
				return err
			}
		}
	}
	return nil
}

// aclChanged tells the watchers of u whose sight of its presence an ACL
// change gave or took away: the state they now see (offline when taken).
func (f *fanout) aclChanged(u events.User, old []events.ACE) error {
	acl, err := f.aclOf(u, "")
	if err != nil {
		return err
	}
	watchers, err := f.State.Watchers(u)
	if err != nil {
		return err
	}
	pr, err := f.presence(u)
	if err != nil {
		return err
	}
	for i := range watchers {
		s := &watchers[i]
		p := subscriber(u, s)
		was, is := permitted(old, p, events.RightPresence), permitted(acl, p, events.RightPresence)
		if was == is {
			continue
		}
		state := events.StateOffline
		if is {
			state = pr.For(u, s)
		}
		if err := f.state(u, s, state); err != nil {
			return err
		}
	}
	return nil
}

// push sends a new watcher the node's current state: librvp ignores the
// state in the SUBSCRIBE answer and waits for a NOTIFY. An offline state
// is not sent: it is what every client shows a buddy as until told
// otherwise (the SUBSCRIBE answer says it too), as a watcher denied
// presence sees it with no NOTIFY at all.
func (f *fanout) push(ref subRef) error {
	s, err := f.State.Subscription(ref.node, ref.id)
	if err != nil || s == nil {
		return err
	}
	pr, err := f.presence(ref.node)
	if err != nil {
		return err
	}
	state := pr.For(ref.node, s)
	if state == events.StateOffline {
		return nil
	}
	return f.state(ref.node, s, state)
}

// state sends a propnotification of u's state for subscription s to the
// clients behind its Call-Back, or to its watcher's home server.
func (f *fanout) state(u events.User, s *projections.Subscription, state string) error {
	from := rvp.Contact{Href: s.NodeURL, Description: f.displayName(u)}
	to := rvp.Contact{Href: s.Subscriber}
	if !s.Watcher.IsZero() {
		to.Description = f.displayName(s.Watcher)
	}
	body := rvp.PropNotification(from, to, state)
	server := u.Domain
	if dom, err := f.Dir.Domain(u.Domain); err == nil && dom != nil {
		server = dom.IMHost
	}
	targets, err := f.targetsOf(s)
	if err != nil {
		return err
	}
	for _, t := range targets {
		to := noteDest{home: t.home, node: t.ref.node, url: t.url}
		if slices.ContainsFunc(f.sent[to], func(b []byte) bool { return bytes.Equal(b, body) }) {
			continue
		}
		f.sent[to] = append(f.sent[to], body)
		if len(f.d.notes)+len(f.d.relays) >= f.policy.MaxFanout {
			f.d.unsent++ // one decision does not fan out without bound
			continue
		}
		if t.home != "" {
			f.relay(t.home, t.ref.node, server, body)
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
			// Its address comes from DNS and its redirects: the client's
			// Federation guard judges each (public addresses only).
			out.Redirects, out.Foreign = 3, true
		}
		f.d.notes = append(f.d.notes, note{key: t.key(), out: out, deadline: f.now.Add(f.policy.DeliveryTimeout), ref: t.ref})
	}
	return nil
}

// relay hands body to home's node for watcher's clients, as a request
// event; nothing waits for an answer.
func (f *fanout) relay(home string, watcher events.User, server string, body []byte) {
	id := f.d.msgID + "/relay/" + strconv.Itoa(len(f.d.relays)) + "/" + events.Token(f.Home)
	f.d.relays = append(f.d.relays, relayOut{home: home, ev: &events.Relay{Req: events.Req{
		ID: id, At: f.now, Deadline: f.now.Add(f.policy.DeliveryTimeout), Gateway: "home:" + f.Home,
		Node: watcher, From: server, Auth: events.Identity{Scheme: "internal"},
	}, Body: body}})
}

// decideRelay sends a notification relayed by another home server to the
// node's clients. It records nothing: the watched node's home server
// judged the watcher's rights already.
func (c *core) decideRelay(d *decision, e *events.Relay) (*decision, error) {
	r := &e.Req
	if r.Auth.Scheme != "internal" {
		return d.fail(r, rvp.StatusForbidden, "relays come from home servers only")
	}
	if err := c.toLogins(d, e.Node, e.From, e.Body, e.Deadline); err != nil {
		return nil, err
	}
	return d, nil
}

// toLogins sends a notification that came from another home server
// (server is its RVP-From-Principal) to u's clients.
func (c *core) toLogins(d *decision, u events.User, server string, body []byte, deadline time.Time) error {
	targets, err := c.loginTargets(u)
	if err != nil {
		return err
	}
	for _, t := range targets {
		out := rvp.Outbound{URL: t.url, Body: body, Header: []rvp.Field{
			{Name: rvp.HdrVersion, Value: rvp.Version},
			{Name: rvp.HdrHopCount, Value: "3"},
			{Name: rvp.HdrFromPrincipal, Value: server},
			{Name: rvp.HdrSubscriptionID, Value: strconv.Itoa(int(t.subID))},
			{Name: rvp.HdrContentType, Value: rvp.ContentTypeXML},
		}}
		d.notes = append(d.notes, note{key: t.key(), out: out, deadline: deadline, ref: t.ref})
	}
	return nil
}

// decideResend sends u's state to every watcher allowed to see it; with
// homes, to the watchers homed on those home servers only.
func (c *core) decideResend(u events.User, homes map[string]bool, now time.Time) (*decision, error) {
	d := &decision{msgID: "resend/" + events.Token(u.String()) + "/" + nanos(now)}
	watchers, err := c.State.Watchers(u)
	if err != nil || len(watchers) == 0 {
		return d, err
	}
	acl, err := c.aclOf(u, "")
	if err != nil {
		return nil, err
	}
	pr, err := c.presence(u)
	if err != nil {
		return nil, err
	}
	f := &fanout{core: c, d: d, now: now, sent: map[noteDest][][]byte{}}
	for i := range watchers {
		s := &watchers[i]
		if homes != nil {
			if s.Watcher.IsZero() {
				continue
			}
			if rec, err := c.Dir.User(s.Watcher); err != nil {
				return nil, err
			} else if rec == nil || !homes[rec.Home] {
				continue
			}
		}
		if permitted(acl, subscriber(u, s), events.RightPresence) {
			if err := f.state(u, s, pr.For(u, s)); err != nil {
				return nil, err
			}
		}
	}
	return d, nil
}

// delivery is a message being delivered to a node's clients.
type delivery struct {
	req      *events.Notify
	body     []byte // what is forwarded: the request's body, byte for byte, but for a missing sender description
	targets  []target
	answered bool // SingleHop: the sender was answered when it was accepted
}

// outbound returns the NOTIFY of d to t.
func (d *delivery) outbound(t target) rvp.Outbound {
	hop := d.req.HopCount
	if hop < 1 {
		hop = 1
	}
	ack := d.req.AckType
	if ack == "" {
		ack = "DeepOr"
	}
	return rvp.Outbound{URL: t.url, Body: d.body, Header: []rvp.Field{
		{Name: rvp.HdrVersion, Value: rvp.Version},
		{Name: rvp.HdrAckType, Value: ack},
		{Name: rvp.HdrHopCount, Value: strconv.Itoa(hop + 1)},
		{Name: rvp.HdrFromPrincipal, Value: d.req.From},
		{Name: rvp.HdrSubscriptionID, Value: strconv.Itoa(int(t.subID))},
		{Name: rvp.HdrContentType, Value: rvp.ContentTypeXML},
	}}
}

// tally counts a delivery's results and decides its outcome once: for
// DeepOr as soon as one client took the message (or all failed), for
// DeepAnd when all have answered.
type tally struct {
	mu                                  sync.Mutex
	pending, delivered, failed, refused int // refused: first non-2xx status
	deepAnd, decided                    bool
}

func newTally(d *delivery) *tally {
	return &tally{pending: len(d.targets), deepAnd: strings.EqualFold(d.req.AckType, "DeepAnd")}
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
		o.status = rvp.StatusOK
	case t.pending == 0:
		// Relay the endpoint's refusal as rvp.SenderStatus has it (a 500
		// means the recipient left the conversation); when none answered,
		// nobody is reachable.
		o.status = t.refused
		if o.status == 0 {
			o.status = rvp.StatusPreconditionFailed
		}
	default:
		return outcome{}, false
	}
	t.decided = true
	return o, true
}

// decideOutcome records a delivery's outcome and answers its sender
// (unless it was answered when the message was accepted).
func (c *core) decideOutcome(o outcome, now time.Time) (*decision, error) {
	r := &o.d.req.Req
	d := &decision{msgID: r.ID + "/delivered", facts: []events.Fact{
		&events.MessageDelivered{Meta: c.meta(r, now), Node: r.Node, Status: o.status, Delivered: o.delivered, Failed: o.failed},
	}}
	if !o.d.answered {
		d.reply = &events.Reply{ID: r.ID, Status: o.status}
		if o.status != rvp.StatusOK {
			d.reply.Error = r.Node.String() + ": no client took the message"
		}
	}
	return d, nil
}

// decideExpiry decides the end of one subscription or view whose time
// has come.
func (c *core) decideExpiry(x projections.Due, now time.Time) (*decision, error) {
	d := &decision{msgID: "expiry/" + x.Kind + "/" + strconv.Itoa(int(x.ID)) + "/" + nanos(x.At)}
	meta := c.systemMeta(now)
	switch x.Kind {
	case "s":
		s, err := c.State.Subscription(x.User, x.ID)
		if err != nil || s == nil || s.Expires.After(now) {
			return d, err
		}
		d.facts = append(d.facts, &events.SubscriptionEnded{Meta: meta, Node: x.User, ID: x.ID, Reason: events.EndExpired})
		return d, c.endViewsWithLastLogin(d, x.User, []projections.Subscription{*s}, meta)
	case "v":
		v, err := c.State.View(x.User, x.ID)
		if err != nil || v == nil || v.Expires.After(now) {
			return d, err
		}
		d.facts = append(d.facts, &events.ViewEnded{Meta: meta, Node: x.User, ID: x.ID, Reason: events.EndExpired})
	}
	return d, nil
}

// decideUnreachable ends a subscription whose callback stopped answering
// (and with a user's last login its presence).
func (c *core) decideUnreachable(ref subRef, now time.Time) (*decision, error) {
	d := &decision{msgID: "unreachable/" + events.Token(ref.node.String()) + "/" + strconv.Itoa(int(ref.id)) + "/" + nanos(now)}
	s, err := c.State.Subscription(ref.node, ref.id)
	if err != nil || s == nil {
		return d, err
	}
	meta := c.systemMeta(now)
	d.facts = append(d.facts, &events.SubscriptionEnded{Meta: meta, Node: ref.node, ID: s.ID, Reason: events.EndUnreachable})
	return d, c.endViewsWithLastLogin(d, ref.node, []projections.Subscription{*s}, meta)
}

// reachability counts consecutive NOTIFYs a subscription's callback left
// unanswered. Only a connection that got no answer at all counts as a
// failure: a client that answers, even 500 (Net::RVP's demo client does
// to every presence NOTIFY), is there.
type reachability struct {
	limit    int // negative: never
	failures map[subRef]int
}

// record counts one result for ref; it reports whether the callback has
// now failed limit times in a row (the count starts again).
func (r *reachability) record(ref subRef, err error) bool {
	if r.limit < 0 {
		return false
	}
	if err == nil {
		delete(r.failures, ref)
		return false
	}
	if r.failures == nil {
		r.failures = map[subRef]int{}
	}
	r.failures[ref]++
	if r.failures[ref] < r.limit {
		return false
	}
	delete(r.failures, ref)
	return true
}

// forget drops what is counted for ref: its subscription ended, and its
// id is never used again.
func (r *reachability) forget(ref subRef) { delete(r.failures, ref) }

// sortedUsers returns m's users in order, in a slice made once at its
// size (collected from an iterator it grew from one: two allocations a
// decision, 2% of the objects rvpd made signing users in with buddy
// lists).
func sortedUsers[T any](m map[events.User]T) []events.User {
	if len(m) == 0 {
		return nil
	}
	us := make([]events.User, 0, len(m))
	for u := range m {
		us = append(us, u)
	}
	slices.SortFunc(us, func(a, b events.User) int {
		return cmp.Or(cmp.Compare(a.Domain, b.Domain), cmp.Compare(a.Alias, b.Alias))
	})
	return us
}
