package homenode

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
	"github.com/rvp-im/rvpd/rvp"
)

// The rules of the requests clients send, decided against a View.

func (c *core) decideSubscribe(d *decision, e *events.Subscribe, now time.Time) (*decision, error) {
	r := &e.Req
	kind := strings.ToLower(e.NotificationType)
	cb, err := rvp.ParseURL(e.CallBack)
	if err != nil {
		return d.fail(r, rvp.StatusBadRequest, "Call-Back %q: %v", e.CallBack, err)
	}
	acl, err := c.aclOf(r.Node, r.NodeURL)
	if err != nil {
		return nil, err
	}
	who := requester(r)
	// A Call-Back other than the requester's own URL needs the
	// subscribe-others right.
	own := false
	switch {
	case !e.CallBackUser.IsZero():
		own = e.CallBackUser == r.FromUser
	case rvp.IsNodeURL(cb):
		own = cb.String() == r.From // a principal of another organisation
	default:
		own = owner(r) // a client's own listener, on its own node
	}
	switch kind {
	case events.NotifyPragma:
		if !owner(r) && !permitted(acl, who, events.RightSubscribeOthers) && !permitted(acl, who, events.RightReceiveFrom) {
			return d.fail(r, rvp.StatusForbidden, "only %s may log in to its own node (RVP-From-Principal %q)", r.Node, r.From)
		}
	case events.NotifyPropChange:
		if !own && !permitted(acl, who, events.RightSubscribeOthers) {
			return d.fail(r, rvp.StatusForbidden, "Call-Back %s is not the requester's own URL; subscribing for someone else needs the subscribe-others right", e.CallBack)
		}
	default:
		return d.fail(r, rvp.StatusBadRequest, "Notification-Type %q is neither %s nor %s", e.NotificationType, events.NotifyPragma, events.NotifyPropChange)
	}
	watchers, full, err := c.full(d, r, kind, now)
	if err != nil || full {
		return d, err
	}
	subscriber := r.From
	if subscriber == "" {
		subscriber = cb.String()
	}
	var ended *projections.Subscription
	if kind == events.NotifyPropChange && watchers >= min(c.policy.MaxWatchesPerSubscriber, c.policy.MaxWatchesPerNetwork, c.policy.MaxWatchesForeign) {
		if ended, err = c.makeRoom(d, r, subscriber, e.CallBackUser, now); err != nil {
			return nil, err
		}
		if r.FromUser.IsZero() {
			if full, err := c.foreignFull(d, r, watchers, ended); err != nil || full {
				return d, err
			}
		}
	}
	if kind == events.NotifyPropChange && !r.FromUser.IsZero() && ended == nil {
		// A watch that replaces one of the subscriber's own takes no more.
		if full, err := c.userFull(d, r, e.CallBackUser, now); err != nil || full {
			return d, err
		}
	}
	id, err := c.State.NextID()
	if err != nil {
		return nil, err
	}
	if id <= 0 || id == math.MaxInt32 {
		return d.fail(r, rvp.StatusUnavailable, "subscription ids of home server %s are exhausted", c.Home)
	}
	secs := clampSeconds(e.Lifetime, c.policy.MinLifetime, c.policy.MaxLifetime, c.policy.DefaultLifetime)
	d.facts = append(d.facts, &events.SubscriptionCreated{
		Meta: c.meta(r, now), Node: r.Node, ID: id, Kind: kind, CallBack: cb.String(), Watcher: e.CallBackUser,
		Subscriber: subscriber, SubscriberUser: r.FromUser, NodeURL: r.NodeURL, Lifetime: secs, Expires: now.Add(seconds(secs)),
		Source: r.Client, Credential: r.Credential(),
	})
	d.reply = &events.Reply{ID: r.ID, Status: rvp.StatusOK, SubscriptionID: id, Lifetime: secs}
	if kind == events.NotifyPropChange {
		// A watcher denied presence is answered all the same (a 403 would
		// disconnect librvp and reveal the block), sees offline, and is
		// sent nothing.
		// Properties the watcher may not read are left out of the answer.
		found, _, _, err := c.props(r.Node, r.NodeURL, who, e.CallBackUser == r.Node, events.PrincipalProps())
		if err != nil {
			return nil, err
		}
		d.reply.Status, d.reply.Href, d.reply.Found = rvp.StatusMultiStatus, r.NodeURL, found
		if permitted(acl, who, events.RightPresence) {
			d.push = append(d.push, subRef{r.Node, id})
		}
	}
	return d, nil
}

// full refuses a subscription the node has no room for: more logins
// (callback endpoints) than MaxLogins, more watchers than MaxWatchers.
// The answer is 503 with a Retry-After: for a login, when the first of
// the node's logins lapses. For a property subscription it returns the
// node's watchers too.
func (c *core) full(d *decision, r *events.Req, kind string, now time.Time) (watchers int, full bool, err error) {
	if kind == events.NotifyPragma {
		logins, err := c.State.Logins(r.Node)
		if err != nil || len(logins) < c.policy.MaxLogins {
			return 0, false, err
		}
		first := logins[0].Expires
		for _, l := range logins {
			if l.Expires.Before(first) {
				first = l.Expires
			}
		}
		d.fail(r, rvp.StatusUnavailable, "%s has %d logins, the most a node may have; end one (UNSUBSCRIBE) or wait for one to lapse", r.Node, len(logins))
		d.reply.RetryAfter = retryAfter(first.Sub(now))
		return 0, true, nil
	}
	n, err := c.State.CountWatchers(r.Node, nil)
	if err != nil || n < c.policy.MaxWatchers {
		return n, false, err
	}
	d.fail(r, rvp.StatusUnavailable, "%s has %d watchers, the most a node may have", r.Node, n)
	d.reply.RetryAfter = retryAfter(5 * time.Minute)
	return n, true, nil
}

// makeRoom ends the property subscription of r's subscriber on r's node
// that lapses first when the subscriber holds MaxWatchesPerSubscriber of
// them already, so that no one subscriber takes a node's watcher slots
// (a user of ours is known by its user and the watcher it subscribes for,
// one with subscribe-others subscribing for others too; another
// organisation's principal by its URL: projections.SubscriberKey). It
// returns the one it ended, if any. It reads the subscriber's
// subscriptions alone (the projection's index), and its caller only for a
// node with that many watchers in all.
func (c *core) makeRoom(d *decision, r *events.Req, subscriber string, watcher events.User, now time.Time) (*projections.Subscription, error) {
	key := projections.SubscriberKey(r.FromUser, watcher, subscriber)
	// Counted first, from the index's keys alone: most subscribers hold
	// far fewer than the most, and their subscriptions need not be read
	// (librvp subscribes afresh at each sign-in, so a day's sign-ins
	// leave several to each buddy). The count may include another
	// subscriber's under the same hash, never fewer than the subscriber's.
	if n, err := c.State.CountWatchersBy(r.Node, key, nil); err != nil || n < c.policy.MaxWatchesPerSubscriber {
		return nil, err
	}
	mine, err := c.State.WatchersBy(r.Node, key)
	if err != nil || len(mine) < c.policy.MaxWatchesPerSubscriber {
		return nil, err
	}
	return c.endLapsingFirst(d, r, mine, now), nil
}

// endLapsingFirst ends, replaced, the subscription of mine (not empty)
// on r's node that lapses first, and returns it.
func (c *core) endLapsingFirst(d *decision, r *events.Req, mine []projections.Subscription, now time.Time) *projections.Subscription {
	first := &mine[0]
	for i := range mine {
		if mine[i].Expires.Before(first.Expires) {
			first = &mine[i]
		}
	}
	d.facts = append(d.facts, &events.SubscriptionEnded{Meta: c.meta(r, now), Node: r.Node, ID: first.ID, Reason: events.EndReplaced})
	return first
}

// userFull bounds the property subscriptions a user of ours holds on
// the home server, across its nodes (for one watcher, as makeRoom keys
// them): at MaxWatchesPerUser, a new one on r's node ends the
// subscriber's own there that lapses first, if it has one (librvp
// subscribes afresh at each sign-in, and leaves the old ones to lapse);
// else it is refused, 503 with a Retry-After, and no fact. Another
// organisation's principal is bounded by network (foreignFull). The count
// is the projection's, kept in its cache (Home.CountWatching) with those
// in flight; at the bound it reads the subscriber's own on r's node.
func (c *core) userFull(d *decision, r *events.Req, watcher events.User, now time.Time) (bool, error) {
	key := projections.SubscriberKey(r.FromUser, watcher, "")
	n, err := c.State.CountWatching(key, c.policy.MaxWatchesPerUser, nil)
	if err != nil || n < c.policy.MaxWatchesPerUser {
		return false, err
	}
	mine, err := c.State.WatchersBy(r.Node, key)
	if err != nil {
		return false, err
	}
	if len(mine) > 0 {
		c.endLapsingFirst(d, r, mine, now)
		return false, nil
	}
	who := r.FromUser.String()
	if watcher != r.FromUser {
		who += " for " + watcher.String()
	}
	d.fail(r, rvp.StatusUnavailable, "%s holds %d presence subscriptions on this server, the most one subscriber may; end some (UNSUBSCRIBE) or wait for them to lapse", who, n)
	d.reply.RetryAfter = retryAfter(5 * time.Minute)
	d.limited = &limited{subscriber: who, node: r.Node, held: n}
	return true, nil
}

// foreignFull refuses a subscription of another organisation's principal
// (r's node having watchers) when, the subscription ended to make room
// for it (if any) left out,
//   - the principals subscribing from r's client network hold
//     MaxWatchesPerNetwork of the node's: each principal is held to
//     MaxWatchesPerSubscriber, but a server may speak for as many as it
//     likes, under any name; its network it cannot choose;
//   - or other organisations' principals hold MaxWatchesForeign of them,
//     from however many networks: the rest are our users'.
//
// It reads the counts only for a node with that many watchers in all.
func (c *core) foreignFull(d *decision, r *events.Req, watchers int, ended *projections.Subscription) (bool, error) {
	var except func(int32) bool
	if ended != nil {
		except = func(id int32) bool { return id == ended.ID }
	}
	network := ""
	if r.Client != "" {
		network = events.SenderNetwork(r.Client)
	}
	for _, b := range []struct {
		on        bool
		key       string
		max       int
		who, most string // for the refusal
	}{
		{network != "" && watchers >= c.policy.MaxWatchesPerNetwork, projections.NetworkKey(network), c.policy.MaxWatchesPerNetwork,
			"other organisations' principals at " + network, "the most one network may"},
		{watchers >= c.policy.MaxWatchesForeign, projections.ForeignKey, c.policy.MaxWatchesForeign,
			"other organisations' principals", "the most they may together"},
	} {
		if !b.on {
			continue
		}
		n, err := c.State.CountWatchersBy(r.Node, b.key, except)
		if err != nil {
			return false, err
		}
		if n >= b.max {
			d.fail(r, rvp.StatusUnavailable, "%s hold %d subscriptions to %s, %s; end some (UNSUBSCRIBE) or wait for them to lapse", b.who, n, r.Node, b.most)
			d.reply.RetryAfter = retryAfter(5 * time.Minute)
			return true, nil
		}
	}
	return false, nil
}

// retryAfter is a Retry-After in seconds: at least 1, at most an hour.
func retryAfter(d time.Duration) int {
	return int(min2(max2(d, time.Second), time.Hour) / time.Second)
}

// mayManage reports whether the requester may renew or end s: its
// subscriber, or the node's owner.
func mayManage(r *events.Req, s *projections.Subscription) bool {
	return owner(r) || (r.From != "" && r.From == s.Subscriber) || (!r.FromUser.IsZero() && s.Watcher == r.FromUser)
}

// linked returns the owner's subscriptions that go with s, from the client
// address s came from, when the owner renews or ends s: for a self-watch
// (update/propchange on its own node) its logins, for a login its
// self-watches. Clients renew and cancel one of the two and never the
// other: librvp renews its login when that login's answer was the last
// 200 it saw (a self-watch is answered 207), and its self-watch when the
// self-watch's was (as in an older capture); Net::RVP cancels its
// self-watch and never its login.
func (c *core) linked(r *events.Req, s *projections.Subscription) ([]projections.Subscription, error) {
	if !owner(r) {
		return nil, nil
	}
	var subs []projections.Subscription
	var err error
	switch {
	case s.Kind == events.NotifyPropChange && s.Watcher == r.Node:
		subs, err = c.State.Logins(r.Node)
	case s.Kind == events.NotifyPragma:
		subs, err = c.State.WatchersBy(r.Node, projections.SubscriberKey(r.Node, r.Node, ""))
	default:
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []projections.Subscription
	for _, l := range subs {
		if l.Source == r.Client && l.ID != s.ID {
			out = append(out, l)
		}
	}
	return out, nil
}

// ownedBy reports whether the requester is s's subscriber (not merely
// the node's owner).
func ownedBy(r *events.Req, s *projections.Subscription) bool {
	return (r.From != "" && r.From == s.Subscriber) || (!r.FromUser.IsZero() && s.Watcher == r.FromUser)
}

// named returns the subscription on r's node that a client naming id
// (renewing or ending it) means, or nil. A subscription handed over late
// from the home server its user left, whose id had been given here to
// another meanwhile, was given a new one (decideHandoff) and keeps the
// one its client knows (Known): it is the one meant when the
// subscription of that id is not the requester's own (another's, or
// gone). Else the one of that id (the node's owner may manage it whoever
// made it, and lists subscriptions by their ids here).
//
// The requester may have more than one subscription known by id: its own
// of that id, given here, and one handed over late and renumbered (an
// owner logged in from a second client while its handoff was late), or
// two handed over from different former home servers. The one made from
// the address the request comes from (Source) is meant, else the one of
// that id: taking the one of that id, one client's renewals renewed the
// other's subscription (its own lapsed, silently) and its UNSUBSCRIBE
// ended the other's. The requester's subscriptions (the subscriber index,
// and the owner's logins: a handful of records) are read only when the
// subscription of that id is not the requester's own from that address.
func (c *core) named(r *events.Req, id int32) (*projections.Subscription, error) {
	s, err := c.State.Subscription(r.Node, id)
	if err != nil || (s != nil && s.Known == 0 && ownedBy(r, s) && s.Source == r.Client) {
		// The requester's own, from the address it was made from: the
		// one meant, and a renewal's usual case (one read).
		return s, err
	}
	var mine []projections.Subscription
	if !r.FromUser.IsZero() || r.From != "" {
		if mine, err = c.State.WatchersBy(r.Node, projections.SubscriberKey(r.FromUser, r.FromUser, r.From)); err != nil {
			return nil, err
		}
	}
	if owner(r) {
		logins, err := c.State.Logins(r.Node)
		if err != nil {
			return nil, err
		}
		mine = append(mine, logins...)
	}
	var known *projections.Subscription // the requester's known by id
	if s != nil && s.Known == 0 && ownedBy(r, s) {
		known = s
	}
	for i := range mine {
		if mine[i].Known != id || !ownedBy(r, &mine[i]) {
			continue
		}
		if mine[i].Source == r.Client {
			return &mine[i], nil
		}
		if known == nil {
			known = &mine[i]
		}
	}
	if known != nil {
		return known, nil
	}
	return s, nil
}

func (c *core) decideRenew(d *decision, e *events.Renew, now time.Time) (*decision, error) {
	r := &e.Req
	s, err := c.named(r, e.ID)
	if err != nil {
		return nil, err
	}
	if s == nil {
		return d.fail(r, rvp.StatusPreconditionFailed, "subscription %d does not exist on %s (expired or never made); subscribe again", e.ID, r.NodeURL)
	}
	if !mayManage(r, s) {
		return d.fail(r, rvp.StatusForbidden, "subscription %d on %s belongs to %s", e.ID, r.NodeURL, s.Subscriber)
	}
	secs := clampSeconds(e.Lifetime, c.policy.MinLifetime, c.policy.MaxLifetime, c.policy.DefaultLifetime)
	exp := now.Add(seconds(secs))
	meta := c.meta(r, now)
	d.facts = append(d.facts, &events.SubscriptionRenewed{Meta: meta, Node: r.Node, ID: s.ID, Lifetime: secs, Expires: exp})
	linked, err := c.linked(r, s)
	if err != nil {
		return nil, err
	}
	for _, l := range linked {
		if l.Expires.Before(exp) {
			d.facts = append(d.facts, &events.SubscriptionRenewed{Meta: meta, Node: r.Node, ID: l.ID, Lifetime: secs, Expires: exp})
		}
	}
	// The id the client named: the one it knows the subscription by.
	d.reply = &events.Reply{ID: r.ID, Status: rvp.StatusOK, SubscriptionID: e.ID, Lifetime: secs}
	return d, nil
}

func (c *core) decideUnsubscribe(d *decision, e *events.Unsubscribe, now time.Time) (*decision, error) {
	r := &e.Req
	d.reply = &events.Reply{ID: r.ID, Status: rvp.StatusOK}
	s, err := c.named(r, e.ID)
	if err != nil {
		return nil, err
	}
	if s == nil || !mayManage(r, s) {
		// An unknown id is already gone: 200, for clean logouts. Its
		// node's state awaited from its former home server (a late
		// handoff), it may be on its way: the end is recorded, and the
		// handoff does not bring it back (decideHandoff). So may one
		// whose id was given here meanwhile to another's subscription
		// (the home servers allocate ids each on its own): refused, its
		// requester's came back with the handoff.
		move, err := c.awaitedUnder(r.Node)
		if err != nil {
			return nil, err
		}
		if move == 0 {
			if s != nil {
				return d.fail(r, rvp.StatusForbidden, "subscription %d on %s belongs to %s", e.ID, r.NodeURL, s.Subscriber)
			}
			return d, nil
		}
		if keep, err := c.keepEnd(r, move, e.ID); err != nil || !keep {
			return d, err
		}
		d.facts = append(d.facts, &events.SubscriptionEnded{Meta: c.meta(r, now), Node: r.Node, ID: e.ID, Reason: events.EndUnsubscribed,
			Move: move, By: r.From, ByUser: r.FromUser})
		return d, nil
	}
	ending := []projections.Subscription{*s}
	linked, err := c.linked(r, s)
	if err != nil {
		return nil, err
	}
	ending = append(ending, linked...)
	meta := c.meta(r, now)
	for _, x := range ending {
		d.facts = append(d.facts, &events.SubscriptionEnded{Meta: meta, Node: r.Node, ID: x.ID, Reason: events.EndUnsubscribed})
	}
	return d, c.endViewsWithLastLogin(d, r.Node, ending, meta)
}

// endViewsWithLastLogin ends a principal's presence views when the
// subscriptions ending take its last login with them: nobody is left to
// receive anything, so watchers should see it offline now rather than when
// its lease runs out.
func (c *core) endViewsWithLastLogin(d *decision, u events.User, ending []projections.Subscription, meta events.Meta) error {
	gone := map[int32]bool{}
	endsLogin := false
	for _, s := range ending {
		gone[s.ID] = true
		endsLogin = endsLogin || s.Kind == events.NotifyPragma
	}
	if !endsLogin {
		return nil
	}
	logins, err := c.State.Logins(u)
	if err != nil {
		return err
	}
	for _, s := range logins {
		if !gone[s.ID] {
			return nil
		}
	}
	views, err := c.State.Views(u)
	if err != nil {
		return err
	}
	for _, v := range views {
		d.facts = append(d.facts, &events.ViewEnded{Meta: meta, Node: u, ID: v.ID, Reason: events.EndLoggedOut})
	}
	return nil
}

func (c *core) decideList(d *decision, e *events.ListSubscriptions, now time.Time) (*decision, error) {
	r := &e.Req
	acl, err := c.aclOf(r.Node, r.NodeURL)
	if err != nil {
		return nil, err
	}
	if !permitted(acl, requester(r), events.RightSubscriptions) {
		return d.fail(r, rvp.StatusForbidden, "listing the subscriptions on %s needs the subscriptions right", r.Node)
	}
	subs, err := c.State.Subscriptions(r.Node)
	if err != nil {
		return nil, err
	}
	kind := strings.ToLower(e.NotificationType)
	reply := &events.Reply{ID: r.ID, Status: rvp.StatusOK, Listed: true}
	for _, s := range subs {
		if kind != "" && s.Kind != kind {
			continue
		}
		left := int(math.Ceil(s.Expires.Sub(now).Seconds()))
		if left < 0 {
			left = 0
		}
		reply.Subscriptions = append(reply.Subscriptions, events.SubscriptionInfo{ID: s.ID, Href: s.CallBack, Principal: s.Subscriber, Timeout: left})
	}
	d.reply = reply
	return d, nil
}

// props returns the named properties of u's node as requester p sees
// them (self: u's own clients, who see invisible), the names the node does
// not have, and those p may not read. r:state needs the presence right (a
// watcher without it sees offline); the others need read or list.
func (c *core) props(u events.User, nodeURL string, p principal, self bool, names []events.Prop) (found []events.PropValue, missing, forbidden []events.Prop, err error) {
	rec, err := c.Dir.User(u)
	if err != nil {
		return nil, nil, nil, err
	}
	acl, err := c.aclOf(u, nodeURL)
	if err != nil {
		return nil, nil, nil, err
	}
	readable := permitted(acl, p, events.RightRead) || permitted(acl, p, events.RightList)
	display, email := u.Alias, u.Alias+"@"+u.Domain
	if rec != nil {
		if rec.DisplayName != "" {
			display = rec.DisplayName
		}
		if rec.Email != "" {
			email = rec.Email
		}
	}
	for _, name := range names {
		var v string
		switch name {
		case events.PropState:
			v = events.StateOffline
			if permitted(acl, p, events.RightPresence) {
				views, err := c.State.Views(u)
				if err != nil {
					return nil, nil, nil, err
				}
				pr := effective(views)
				v = pr.Others
				if self {
					v = pr.Self
				}
			}
			found = append(found, events.PropValue{Prop: name, Value: v})
			continue
		case events.PropDisplayName:
			v = display
		case events.PropEmail:
			v = email
		case events.PropMobileState, events.PropMobileDescription:
			if v, err = c.State.Property(u, name); err != nil {
				return nil, nil, nil, err
			}
			if v == "" && name == events.PropMobileState {
				v = "0"
			}
		default:
			missing = append(missing, name)
			continue
		}
		if !readable {
			forbidden = append(forbidden, name)
			continue
		}
		found = append(found, events.PropValue{Prop: name, Value: v})
	}
	return found, missing, forbidden, nil
}

func (c *core) decidePropFind(d *decision, e *events.PropFind) (*decision, error) {
	r := &e.Req
	names := e.Props
	if e.All || e.Names {
		names = events.PrincipalProps()
	}
	found, missing, forbidden, err := c.props(r.Node, r.NodeURL, requester(r), owner(r), names)
	if err != nil {
		return nil, err
	}
	if e.Names && !e.All {
		for i := range found {
			found[i].Value = ""
		}
	}
	if e.All || e.Names {
		// Asked for everything, the requester is told what it may read,
		// as in the answer to a property SUBSCRIBE; RFC 4918 §9.1 lets
		// allprop and propname leave the rest out. A 403 propstat beside
		// the 200 one kills Net::RVP (one propstat only), whose get and
		// info send d:allprop, for every librvp user: librvp's ACL grants
		// all principals send-to and presence only.
		forbidden = nil
	}
	d.reply = &events.Reply{ID: r.ID, Status: rvp.StatusMultiStatus, Href: r.NodeURL, Found: found, Missing: missing, Forbidden: forbidden}
	return d, nil
}

func (c *core) decidePropPatch(d *decision, e *events.PropPatch, now time.Time) (*decision, error) {
	r := &e.Req
	if !owner(r) {
		return d.fail(r, rvp.StatusForbidden, "only %s may change the properties of its node", r.Node)
	}
	meta := c.meta(r, now)
	// The mobile properties are the owner's to set; display name, e-mail
	// and anything else come from the directory and are refused (403
	// propstat), as in Exchange. A property named more than once is set
	// once, to the last value given (instructions apply in document
	// order): a body of thousands of one property made a fact of each,
	// some 575 bytes kept for each 35 of the body.
	var set []events.PropValue
	var forbidden []events.Prop
	for _, pv := range e.Set {
		switch {
		case pv.Prop == events.PropMobileState && (pv.Value == "0" || pv.Value == "1" || pv.Value == ""),
			pv.Prop == events.PropMobileDescription && len(pv.Value) <= 256:
			if pv.Prop == events.PropMobileState && pv.Value == "" {
				pv.Value = "0"
			}
			if i := slices.IndexFunc(set, func(s events.PropValue) bool { return s.Prop == pv.Prop }); i >= 0 {
				set[i] = pv
			} else {
				set = append(set, pv)
			}
		default:
			forbidden = append(forbidden, pv.Prop)
		}
	}
	for _, pv := range set {
		d.facts = append(d.facts, &events.PropertySet{Meta: meta, Node: r.Node, Value: pv})
	}
	if e.State == nil {
		d.reply = &events.Reply{ID: r.ID, Status: rvp.StatusMultiStatus, Href: r.NodeURL, Found: set, Forbidden: forbidden}
		return d, nil
	}
	u := *e.State
	if u.Default == "" {
		u.Default = events.StateOffline
	}
	views, err := c.State.Views(r.Node)
	if err != nil {
		return nil, err
	}
	view := namedView(views, u.ViewID, r.Client)
	secs := clampSeconds(u.Timeout, c.policy.MinLease, c.policy.MaxLease, c.policy.DefaultLease)
	lease := &events.Lease{Value: u.Value, Default: u.Default, Timeout: secs, ViewID: u.ViewID}
	switch {
	case u.Value == u.Default || u.Value == events.StateOffline:
		if view != nil {
			lease.ViewID = knownID(view.ID, view.Known)
			d.facts = append(d.facts, &events.ViewEnded{Meta: meta, Node: r.Node, ID: view.ID, Reason: events.EndOffline})
		}
	default:
		id, known := int32(0), int32(0)
		if view != nil {
			id, known = view.ID, view.Known
		} else {
			if len(views) >= c.policy.MaxViews {
				// A client naming view ids no one has would make a view
				// each time: the one lapsing first makes room.
				first := &views[0]
				for i := range views {
					if views[i].Expires.Before(first.Expires) {
						first = &views[i]
					}
				}
				d.facts = append(d.facts, &events.ViewEnded{Meta: meta, Node: r.Node, ID: first.ID, Reason: events.EndReplaced})
			}
			if id, err = c.State.NextID(); err != nil {
				return nil, err
			}
		}
		// The id the client knows the view by: the one it names.
		lease.ViewID = knownID(id, known)
		d.facts = append(d.facts, &events.ViewSet{Meta: meta, Node: r.Node, ID: id, Value: u.Value, Default: u.Default,
			Timeout: secs, Expires: now.Add(seconds(secs)), Source: r.Client, Known: known})
	}
	d.reply = &events.Reply{ID: r.ID, Status: rvp.StatusMultiStatus, Href: r.NodeURL, Lease: lease, Found: set, Forbidden: forbidden}
	return d, nil
}

// namedView returns the view of views that a PROPPATCH from client naming
// view id (0: none) updates, or nil for a new one. A client that names
// its view updates it; one that never sends view ids (Miranda, Net::RVP)
// reuses the view of its address, so its refreshes do not pile up stale
// views.
//
// A view handed over late from the home server its user left, whose id
// had been given here to another of the user's views meanwhile, was given
// a new one (decideHandoff) and keeps the one its client knows (Known):
// it is the one meant when the view of that id was made from another
// address. Else the one of that id, whoever made it (a client whose
// address changed).
func namedView(views []projections.View, id int32, client string) *projections.View {
	var byID, known *projections.View
	for i := range views {
		v := &views[i]
		switch {
		case id == 0:
			if v.Source == client {
				return v
			}
		case v.ID == id && v.Known == 0 && v.Source == client:
			return v
		case v.Known == id && v.Source == client:
			known = v
		case v.ID == id:
			byID = v
		}
	}
	if known != nil {
		return known
	}
	return byID
}

func (c *core) decideNotify(d *decision, e *events.Notify, now time.Time) (*decision, error) {
	r := &e.Req
	if e.HopCount > c.policy.MaxHops {
		return d.fail(r, rvp.StatusLoopDetected, "RVP-Hop-Count %d exceeds the limit of %d: the NOTIFY is looping between servers", e.HopCount, c.policy.MaxHops)
	}
	acl, err := c.aclOf(r.Node, r.NodeURL)
	if err != nil {
		return nil, err
	}
	if !permitted(acl, requester(r), events.RightSendTo) {
		return d.fail(r, rvp.StatusForbidden, "%s does not accept notifications from %s (send-to right)", r.Node, r.From)
	}
	if c.Busy != nil && c.Busy(r.Node) {
		d.fail(r, rvp.StatusUnavailable, "%s has too many messages waiting for its clients; try again shortly", r.Node)
		d.reply.RetryAfter = retryAfter(c.policy.DeliveryTimeout / 2)
		return d, nil
	}
	views, err := c.State.Views(r.Node)
	if err != nil {
		return nil, err
	}
	targets, err := c.loginTargets(r.Node)
	if err != nil {
		return nil, err
	}
	// An invisible principal is as unreachable as an offline one, so that
	// messaging it does not reveal it.
	if effective(views).Self == events.StateInvisible && r.FromUser != r.Node {
		targets = nil
	}
	meta := c.meta(r, now)
	acc := &events.MessageAccepted{Meta: meta, Node: r.Node, AckType: e.AckType, HopCount: e.HopCount, Endpoints: len(targets), Body: e.Body}
	// A message no one can be given is recorded by its size and digest:
	// it was never said to anyone, and its body would make messages to
	// users who are away a way to fill the store (the sender's share
	// bounds only the rate).
	if c.policy.OmitBodies || len(targets) == 0 {
		sum := sha256.Sum256(e.Body)
		acc.Body, acc.BodySize, acc.BodySHA256 = nil, len(e.Body), hex.EncodeToString(sum[:])
	}
	d.facts = append(d.facts, acc)
	if len(targets) == 0 {
		d.facts = append(d.facts, &events.MessageDelivered{Meta: meta, Node: r.Node, Status: rvp.StatusPreconditionFailed})
		d.reply = &events.Reply{ID: r.ID, Status: rvp.StatusPreconditionFailed, Error: fmt.Sprintf("%s has no client logged in", r.Node)}
		return d, nil
	}
	d.deliver = &delivery{req: e, targets: targets, body: rvp.WithSenderDescription(e.Body, c.senderName(r))}
	if strings.EqualFold(e.AckType, "SingleHop") {
		d.reply = &events.Reply{ID: r.ID, Status: rvp.StatusOK}
		d.deliver.answered = true
	}
	return d, nil
}

func (c *core) decideACL(d *decision, e *events.ACL, now time.Time) (*decision, error) {
	r := &e.Req
	acl, err := c.aclOf(r.Node, r.NodeURL)
	if err != nil {
		return nil, err
	}
	who := requester(r)
	if !e.Write {
		if !permitted(acl, who, events.RightReadACL) {
			return d.fail(r, rvp.StatusForbidden, "reading the ACL of %s needs the readacl right", r.Node)
		}
		d.reply = &events.Reply{ID: r.ID, Status: rvp.StatusOK, ACL: acl, HasACL: true}
		return d, nil
	}
	if !permitted(acl, who, events.RightWriteACL) {
		return d.fail(r, rvp.StatusForbidden, "writing the ACL of %s needs the writeacl right", r.Node)
	}
	merged := mergeACL(acl, e.ACEs, r.Node)
	if len(merged) > maxACLEntries {
		return d.fail(r, rvp.StatusInsufficientStorage, "the ACL of %s would hold %d entries, more than the %d allowed; remove entries (an ACE with no grant and no deny) first", r.Node, len(merged), maxACLEntries)
	}
	size, err := json.Marshal(merged)
	if err != nil {
		return nil, err
	} else if len(size) > maxACLBytes {
		return d.fail(r, rvp.StatusInsufficientStorage, "the ACL of %s would take %d bytes, more than the %d allowed; remove entries (an ACE with no grant and no deny), or name principals more briefly, first", r.Node, len(size), maxACLBytes)
	}
	d.reply = &events.Reply{ID: r.ID, Status: rvp.StatusOK, ACL: merged, HasACL: true}
	// The fact records the whole resulting ACL, as acl.set always has:
	// folding it needs nothing but the fact. librvp writes the same
	// entries at every sign-in; an ACL that does not change is no fact.
	// One that does keeps the whole ACL, which the gateway charges to the
	// writer's bytes a day (Reply.Kept): it charged the body, and a write
	// of one entry to a full ACL kept 220 KB for some 900 bytes charged.
	if !sameACL(merged, acl) {
		d.facts = append(d.facts, &events.ACLSet{Meta: c.meta(r, now), Node: r.Node, ACEs: merged})
		d.aclBefore = map[events.User][]events.ACE{r.Node: acl}
		d.reply.Kept = len(size)
	}
	return d, nil
}
