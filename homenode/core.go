package homenode

import (
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
	"github.com/rvp-im/rvpd/rvp"
)

// The decision core: decide(view, policy, input, now) → decision. It
// reads a home server's state and the directory through a View and
// changes nothing; it does no I/O and reads no clock. Every decision a
// node makes is made here: requests, the expiry of subscriptions and
// leases, delivery outcomes, callbacks that stopped answering, users
// moving away, and what a node that takes a home server over re-sends.
// The node executes decisions: it appends their facts, and once those
// are durable sends their reply and their notifications.

// Directory is what decisions read of the directory.
type Directory interface {
	User(u events.User) (*projections.UserRecord, error)
	Domain(name string) (*projections.Domain, error)
	DomainByHost(host string) (*projections.Domain, error)
	Settings() (projections.Settings, error)
}

// View is what a decision reads: the state of home server Home (its
// projection, with the facts still in flight over it) and the directory.
type View struct {
	Home  string
	State projections.HomeReader
	Dir   Directory
	// Busy reports whether the NOTIFYs waiting for u's clients fill their
	// queue (nil: never): a message to u is then refused at once, and
	// nothing is recorded of it.
	Busy func(u events.User) bool
}

// Inputs of decide besides requests (events.Request).
type (
	// resumed is a message accepted before the node stopped, whose
	// delivery never finished: it is delivered again, not accepted again.
	resumed struct{ e *events.Notify }
	// lapsed is a message accepted before the node stopped, whose
	// delivery never finished and whose sender stopped waiting before a
	// node took it up again: its end is recorded, undelivered.
	lapsed struct{ e *events.Notify }
	// expiry is a subscription or view whose time has come.
	expiry projections.Due
	// outcome is what delivering a message came to.
	outcome struct {
		d                         *delivery
		status, delivered, failed int
	}
	// unreachable is a subscription whose callback stopped answering.
	unreachable subRef
	// departure is a user moved away from this home server, whose state
	// is to be handed over.
	departure move
	// forwarded is a request for a user who has moved to home server to,
	// passed on there under the move of directory sequence move
	// (Node.forward): recorded, so that it is decided there and never
	// here, however often it is delivered here again.
	forwarded struct {
		req  events.Request
		to   string
		move uint64
	}
	// disabled is a user of this home server that was disabled, whose
	// logins and presence end.
	disabled events.User
	// resend asks for the state of a user to be sent to every watcher
	// allowed to see it, as a node that takes a home server over does.
	resend events.User
	// resendTo is resend for the watchers homed on the home servers named
	// only: those of a site that is back (sites.go).
	resendTo struct {
		user  events.User
		homes map[string]bool
	}
)

// decision is what deciding an input produced: the facts to append, the
// reply to send once they are durable, and the work that follows.
type decision struct {
	msgID string // base of the facts' message ids, unique per decision
	facts []events.Fact
	reply *events.Reply // nil: nobody waits, or answered after delivery
	// replyData is reply encoded (encodedReply), once for the fact that
	// records it, the gateway's answer and the ring of recent requests.
	replyData []byte

	// notes are the NOTIFYs to send once the facts are durable: presence
	// changes, the state pushed to a new watcher, relayed notifications.
	notes []note
	// relays hand notifications to the home servers of watchers homed
	// elsewhere, which send them to their clients.
	relays []relayOut
	// unsent counts the NOTIFYs left out past Policy.MaxFanout.
	unsent int
	// deliver is a message to deliver to the node's clients.
	deliver *delivery
	// handoff is a user's state for its new home server: appended to that
	// server's requests before this decision's facts.
	handoff *events.Handoff
	handTo  string

	// Consequences the decider works out from the facts (not for callers).
	views     map[events.User]bool         // users whose views change
	aclBefore map[events.User][]events.ACE // ACL before a decision changed it
	push      []subRef                     // new watchers that get the state at once
	quiet     bool                         // tells no watcher (a move)
	// shown is the presence watchers were last told of a user by another
	// home server, where it differs from what this decision leaves here:
	// told even in a quiet decision (a disabled user's handoff, its views
	// left out).
	shown map[events.User]Presence
	// shownHere, for a handoff, is the presence the watchers already
	// here, but for those it brought (handedIn), were told: those that
	// subscribed here since the move, its requests decided without it
	// (late). shown is then for the watchers it hands over only (the
	// subscriptions it creates, and those its earlier parts created).
	shownHere map[events.User]Presence
	handedIn  string // the handoff whose watchers were shown shown (events.HandoffOf)
	// limited is a watch refused for its subscriber's bound on the home
	// server (Policy.MaxWatchesPerUser), logged once it is answered.
	limited *limited
}

// limited names a watch refused for its subscriber's bound.
type limited struct {
	subscriber string
	node       events.User
	held       int
}

type subRef struct {
	node events.User
	id   int32
}

// relayOut is a notification for a watcher's clients, handed to the
// watcher's home server.
type relayOut struct {
	home string
	ev   *events.Relay
}

// note is one NOTIFY to send.
type note struct {
	key      string // whose it is (target.key), for fair delivery
	out      rvp.Outbound
	deadline time.Time
	ref      subRef // the subscription whose callback it goes to
}

func (d *decision) fail(r *events.Req, status int, format string, args ...any) (*decision, error) {
	d.facts = nil
	d.reply = &events.Reply{ID: r.ID, Status: status, Error: fmt.Sprintf(format, args...)}
	return d, nil
}

// core holds what every rule reads.
type core struct {
	View
	policy Policy
}

// decide decides in against v. An error is a failure to read the state,
// never a refusal (those are replies).
func decide(v View, p Policy, in any, now time.Time) (*decision, error) {
	v.Dir = &memoDir{Directory: v.Dir}
	v.State = &memoState{HomeReader: v.State}
	c := &core{View: v, policy: p}
	var d *decision
	var err error
	switch e := in.(type) {
	case events.Request:
		d, err = c.decideRequest(e, now)
	case resumed:
		if d, err = c.decideRequest(e.e, now); err == nil && len(d.facts) > 0 {
			if _, ok := d.facts[0].(*events.MessageAccepted); ok {
				d.facts = d.facts[1:]
				d.msgID += "/resumed"
			}
			err = c.endedByMove(d, &e.e.Req)
		} else if err == nil && d.reply != nil && d.reply.Status >= 400 {
			// Refused now (its recipient disabled meanwhile): the message
			// it accepted before ends so, or it stays accepted for ever.
			r := &e.e.Req
			d.msgID += "/resumed"
			d.facts = []events.Fact{&events.MessageDelivered{Meta: c.meta(r, now), Node: r.Node, Status: d.reply.Status}}
		}
	case lapsed:
		// The sender was answered 504 at its deadline; the record would
		// otherwise show the message accepted and never ended.
		r := &e.e.Req
		d = &decision{msgID: r.ID + "/lapsed", facts: []events.Fact{
			&events.MessageDelivered{Meta: c.meta(r, now), Node: r.Node, Status: rvp.StatusGatewayTimeout}}}
	case expiry:
		d, err = c.decideExpiry(projections.Due(e), now)
	case outcome:
		d, err = c.decideOutcome(e, now)
	case unreachable:
		d, err = c.decideUnreachable(subRef(e), now)
	case departure:
		d, err = c.decideDeparture(move(e), now)
	case forwarded:
		r := e.req.Request()
		d = &decision{msgID: r.ID + "/forwarded/" + strconv.FormatUint(e.move, 10), quiet: true, facts: []events.Fact{
			&events.RequestForwarded{Meta: c.meta(r, now), Node: r.Node, To: e.to, Move: e.move}}}
	case disabled:
		d, err = c.decideDisabled(events.User(e), now)
	case resend:
		d, err = c.decideResend(events.User(e), nil, now)
	case resendTo:
		d, err = c.decideResend(e.user, e.homes, now)
	case siteLost:
		d, err = c.decideSiteLost(e, now)
	default:
		return nil, fmt.Errorf("homenode: no rule decides %T", in)
	}
	if err != nil || d == nil {
		return d, err
	}
	return d, c.consequences(d, now)
}

// endedByMove makes the end of a resumed delivery d that found no
// client of its recipient here (412, "no client logged in") a 504 when
// the recipient has moved to another home server meanwhile: her clients
// went with her, and the delivery interrupted here may have reached one.
// The sender is told that the outcome is not known, not that she is not
// signed in.
func (c *core) endedByMove(d *decision, r *events.Req) error {
	if d.deliver != nil || d.reply == nil || d.reply.Status != rvp.StatusPreconditionFailed || len(d.facts) != 1 {
		return nil
	}
	md, ok := d.facts[0].(*events.MessageDelivered)
	if !ok {
		return nil
	}
	rec, err := c.movedAway(r.Node)
	if err != nil || rec == nil {
		return err
	}
	md.Status = rvp.StatusGatewayTimeout
	d.reply = &events.Reply{ID: r.ID, Status: rvp.StatusGatewayTimeout,
		Error: fmt.Sprintf("%s moved to home server %s while this message was being delivered; whether a client of it had the message is not known", r.Node, rec.Home)}
	return nil
}

func (c *core) decideRequest(req events.Request, now time.Time) (*decision, error) {
	r := req.Request()
	d := &decision{msgID: r.ID}
	switch req.(type) {
	case *events.Handoff, *events.Relay:
		// State from a home server, and notifications for a watcher's
		// clients (fanout drops those of a disabled watcher).
	default:
		// A request a gateway took before its directory had the user
		// disabled: decided after decideDisabled, it would sign the user
		// in again, or set its presence, until its lease ran out. The
		// gateway refuses it likewise once it knows.
		if rec, err := c.Dir.User(r.Node); err != nil {
			return nil, err
		} else if rec != nil && !rec.Enabled && rec.Home == c.Home {
			return d.fail(r, rvp.StatusNotFound, "%s is disabled: enable it (rvpctl user enable) for its node to be served", r.Node)
		}
	}
	switch e := req.(type) {
	case *events.Subscribe:
		return c.decideSubscribe(d, e, now)
	case *events.Renew:
		return c.decideRenew(d, e, now)
	case *events.Unsubscribe:
		return c.decideUnsubscribe(d, e, now)
	case *events.ListSubscriptions:
		return c.decideList(d, e, now)
	case *events.PropFind:
		return c.decidePropFind(d, e)
	case *events.PropPatch:
		return c.decidePropPatch(d, e, now)
	case *events.Notify:
		return c.decideNotify(d, e, now)
	case *events.ACL:
		return c.decideACL(d, e, now)
	case *events.Handoff:
		return c.decideHandoff(d, e, now)
	case *events.Relay:
		return c.decideRelay(d, e)
	}
	return d.fail(r, rvp.StatusNotImplemented, "%s is not decided by home nodes", req.Type())
}

// consequences works out what a decision's facts change for others: the
// watchers of every user whose presence changes as each sees it, those
// whose sight of it an ACL change gave or took, and new watchers who get
// the current state at once. They are read from the state after the
// facts: the view with the decision applied over it.
func (c *core) consequences(d *decision, now time.Time) error {
	if len(d.facts) == 0 && len(d.push) == 0 {
		return nil
	}
	var before map[events.User]Presence
	if !d.quiet {
		for _, f := range d.facts {
			switch f.(type) {
			case *events.ViewSet, *events.ViewEnded:
			default:
				continue
			}
			u := f.Subject()
			if _, ok := before[u]; ok {
				continue
			}
			p, err := c.presence(u)
			if err != nil {
				return err
			}
			if before == nil {
				before = map[events.User]Presence{}
			}
			before[u] = p
		}
	}
	for u, p := range d.shown {
		if before == nil {
			before = map[events.User]Presence{}
		}
		before[u] = p
	}
	after := &core{View: View{Home: c.Home, State: projections.NewOverlay(c.State), Dir: c.Dir, Busy: c.Busy}, policy: c.policy}
	for _, f := range d.facts {
		if err := after.State.(*projections.Overlay).Apply(0, f); err != nil {
			return err
		}
	}
	out := &fanout{core: after, d: d, now: now, sent: map[noteDest][][]byte{}}
	for _, u := range sortedUsers(before) {
		if _, ok := d.shownHere[u]; ok {
			continue
		}
		p, err := after.presence(u)
		if err != nil {
			return err
		}
		if p != before[u] {
			if err := out.change(u, func(*projections.Subscription) Presence { return before[u] }, p); err != nil {
				return err
			}
		}
	}
	for _, u := range sortedUsers(d.shownHere) {
		p, err := after.presence(u)
		if err != nil {
			return err
		}
		was := func(s *projections.Subscription) Presence {
			if d.handedIn == "" || s.Handoff != d.handedIn {
				return d.shownHere[u]
			}
			if b, ok := before[u]; ok {
				return b
			}
			return p
		}
		if err := out.change(u, was, p); err != nil {
			return err
		}
	}
	for _, u := range sortedUsers(d.aclBefore) {
		if err := out.aclChanged(u, d.aclBefore[u]); err != nil {
			return err
		}
	}
	for _, ref := range d.push {
		if err := out.push(ref); err != nil {
			return err
		}
	}
	return nil
}

// owner reports whether the requester is the node's own principal. The
// gateway has already checked that RVP-From-Principal names the
// authenticated user whenever there is one.
func owner(r *events.Req) bool { return !r.FromUser.IsZero() && r.FromUser == r.Node }

func (c *core) meta(r *events.Req, now time.Time) events.Meta { return r.Meta(now, c.Home) }

func (c *core) systemMeta(now time.Time) events.Meta {
	return events.Meta{At: now, Actor: "system", Home: c.Home}
}

func clampSeconds(req int, min, max, def time.Duration) int {
	d := def
	if req > 0 {
		d = time.Duration(req) * time.Second
	}
	d = min2(max2(d, min), max)
	return int(d / time.Second)
}

func min2(a, b time.Duration) time.Duration {
	if a < b {
		return a
	}
	return b
}

func max2(a, b time.Duration) time.Duration {
	if a > b {
		return a
	}
	return b
}

func seconds(s int) time.Duration { return time.Duration(s) * time.Second }

func nanos(t time.Time) string { return strconv.FormatInt(t.UnixNano(), 10) }

// memoDir remembers what one decision read of the directory: a change of
// presence told to a thousand watchers reads each watcher's record (and
// the watched user's) several times.
type memoDir struct {
	Directory
	users    map[events.User]*projections.UserRecord
	domains  map[string]*projections.Domain
	byHost   map[string]*projections.Domain
	settings *projections.Settings
}

func (m *memoDir) User(u events.User) (*projections.UserRecord, error) {
	if r, ok := m.users[u]; ok {
		return r, nil
	}
	r, err := m.Directory.User(u)
	if err != nil {
		return nil, err
	}
	if m.users == nil {
		m.users = map[events.User]*projections.UserRecord{}
	}
	m.users[u] = r
	return r, nil
}

func (m *memoDir) Domain(name string) (*projections.Domain, error) {
	return memo(&m.domains, name, m.Directory.Domain)
}

func (m *memoDir) DomainByHost(host string) (*projections.Domain, error) {
	return memo(&m.byHost, host, m.Directory.DomainByHost)
}

func (m *memoDir) Settings() (projections.Settings, error) {
	if m.settings == nil {
		s, err := m.Directory.Settings()
		if err != nil {
			return s, err
		}
		m.settings = &s
	}
	return *m.settings, nil
}

func memo[T any](m *map[string]*T, k string, read func(string) (*T, error)) (*T, error) {
	if v, ok := (*m)[k]; ok {
		return v, nil
	}
	v, err := read(k)
	if err != nil {
		return nil, err
	}
	if *m == nil {
		*m = map[string]*T{}
	}
	(*m)[k] = v
	return v, nil
}

// memoState remembers what one decision read of the home server's state:
// the rules and the consequences read a user's views, ACL and properties
// more than once.
type memoState struct {
	projections.HomeReader
	views  map[events.User][]projections.View
	acls   map[events.User]memoACL
	props  map[propOf]string
	logins map[events.User][]projections.Subscription
}

type memoACL struct {
	aces []events.ACE
	ok   bool
}

type propOf struct {
	u events.User
	p events.Prop
}

func (m *memoState) Views(u events.User) ([]projections.View, error) {
	return memoList(&m.views, u, m.HomeReader.Views)
}

func (m *memoState) Logins(u events.User) ([]projections.Subscription, error) {
	return memoList(&m.logins, u, m.HomeReader.Logins)
}

// memoList reads u's list once through read and keeps it in *memo; each
// caller gets a copy of its own.
func memoList[T any](memo *map[events.User][]T, u events.User, read func(events.User) ([]T, error)) ([]T, error) {
	if l, ok := (*memo)[u]; ok {
		return slices.Clone(l), nil
	}
	l, err := read(u)
	if err != nil {
		return nil, err
	}
	if *memo == nil {
		*memo = map[events.User][]T{}
	}
	(*memo)[u] = l
	return slices.Clone(l), nil
}

func (m *memoState) ACL(u events.User) ([]events.ACE, bool, error) {
	if a, ok := m.acls[u]; ok {
		return slices.Clone(a.aces), a.ok, nil
	}
	aces, ok, err := m.HomeReader.ACL(u)
	if err != nil {
		return nil, false, err
	}
	if m.acls == nil {
		m.acls = map[events.User]memoACL{}
	}
	m.acls[u] = memoACL{aces: aces, ok: ok}
	return slices.Clone(aces), ok, nil
}

func (m *memoState) Property(u events.User, p events.Prop) (string, error) {
	if v, ok := m.props[propOf{u, p}]; ok {
		return v, nil
	}
	v, err := m.HomeReader.Property(u, p)
	if err != nil {
		return "", err
	}
	if m.props == nil {
		m.props = map[propOf]string{}
	}
	m.props[propOf{u, p}] = v
	return v, nil
}

// encodedReply returns d's reply encoded as events.Encode does (nil for
// none), encoding it on the first call only.
func (d *decision) encodedReply() ([]byte, error) {
	if d.reply == nil || d.replyData != nil {
		return d.replyData, nil
	}
	data, err := events.Encode(d.reply)
	if err != nil {
		return nil, err
	}
	d.replyData = data
	return data, nil
}

// maxRecordedAnswer bounds the answer recorded on a decision's last fact
// (header Rvp-Answer, given again to a request delivered again): the
// headers of a message JetStream stores are held to 64 KB, and a fact it
// refuses would be published again for ever, the node deciding nothing
// else (an ACL write answers with the whole ACL: 1,000 entries are some
// 130 KB).
const maxRecordedAnswer = 16 << 10

// recordedReply returns d's reply encoded as it is recorded with its
// facts: whole when it is small (nearly always), else without its lists
// (the ACL, the properties, the subscriptions), else its status alone. A
// request delivered again after its answer was lost gets that.
func (d *decision) recordedReply() ([]byte, error) {
	data, err := d.encodedReply()
	if err != nil || len(data) <= maxRecordedAnswer {
		return data, err
	}
	r := d.reply
	short := &events.Reply{ID: r.ID, Status: r.Status, Error: r.Error, RetryAfter: r.RetryAfter, SubscriptionID: r.SubscriptionID,
		Lifetime: r.Lifetime, Location: r.Location, Href: r.Href, Lease: r.Lease, Kept: r.Kept}
	if data, err = events.Encode(short); err != nil || len(data) <= maxRecordedAnswer {
		return data, err
	}
	return events.Encode(&events.Reply{ID: r.ID, Status: r.Status, Kept: r.Kept})
}
