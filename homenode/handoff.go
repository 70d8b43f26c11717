package homenode

import (
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
	"github.com/rvp-im/rvpd/rvp"
)

// The rules of users moving between home servers (see move.go for how
// the node learns of moves), and of where a request is decided.

// move is a user's move away from this home server.
type move struct {
	user events.User
	to   string
	seq  uint64 // the directory sequence of the move
}

// routing is what becomes of a request before it is decided.
type routing int

const (
	routeDecide  routing = iota
	routeLate            // its deadline passed: the gateway has answered 504
	routeForward         // its user lives on another home server now
	routeHold            // its user's state is on its way from its former home server
)

// route says where req is decided. held tells whether requests of the
// same user are held back already (the next waits behind them).
func (c *core) route(req events.Request, now time.Time, handoffWait time.Duration, held bool) (routing, *projections.UserRecord, error) {
	r := req.Request()
	_, handoff := req.(*events.Handoff)
	// A handoff has no gateway waiting: it is state, however late.
	if now.After(r.Deadline) && !handoff {
		return routeLate, nil, nil
	}
	rec, err := c.movedAway(r.Node)
	if err != nil || rec != nil {
		return routeForward, rec, err
	}
	if !handoff {
		if _, waiting, err := c.awaitsHandoff(r.Node, now, handoffWait); err != nil || waiting || held {
			return routeHold, nil, err
		}
	}
	return routeDecide, nil, nil
}

// movedAway returns u's directory record if u is homed on another home
// server, else nil.
func (c *core) movedAway(u events.User) (*projections.UserRecord, error) {
	rec, err := c.Dir.User(u)
	if err != nil || rec == nil || rec.Home == c.Home || rec.Home == "" {
		return nil, err
	}
	return rec, nil
}

// awaitsHandoff reports whether u moved here and the handoff of its move
// has not come yet, and the move is recent enough to wait for it.
func (c *core) awaitsHandoff(u events.User, now time.Time, wait time.Duration) (*projections.UserRecord, bool, error) {
	rec, err := c.Dir.User(u)
	if err != nil || rec == nil || rec.Home != c.Home || rec.Move == 0 || now.Sub(rec.MovedAt) >= wait {
		return rec, false, err
	}
	done, err := c.State.Arrived(u)
	return rec, err == nil && done < rec.Move, err
}

// awaitedUnder returns the directory sequence of the move that brought u
// here when its state has not arrived from its former home server yet
// (requests decided without it: a late handoff), else 0.
func (c *core) awaitedUnder(u events.User) (uint64, error) {
	rec, err := c.Dir.User(u)
	if err != nil || rec == nil || rec.Home != c.Home || rec.Move == 0 {
		return 0, err
	}
	if done, err := c.State.Arrived(u); err != nil || done >= rec.Move {
		return 0, err
	}
	return rec.Move, nil
}

// keepEnd reports whether an UNSUBSCRIBE of id, not here, while r.Node's
// state is awaited under move, is to be recorded: not when it is already
// (the same requester's again), nor beyond MaxWatchers+MaxLogins of them
// for the user and move, as many as a handoff brings: any signed-in user,
// or another organisation's server, may UNSUBSCRIBE ids of its choosing,
// and each recorded stays (answered 200 as before, the handoff then takes
// such a subscription again).
func (c *core) keepEnd(r *events.Req, move uint64, id int32) (bool, error) {
	if r.FromUser.IsZero() && r.From == "" {
		return false, nil // no one who could end a subscription it brings
	}
	for _, by := range []string{projections.EndedBy(r.FromUser, ""), projections.EndedBy(events.User{}, r.From)} {
		if by == projections.EndedBy(events.User{}, "") {
			continue
		}
		if ended, err := c.State.Ended(r.Node, move, id, by); err != nil || ended {
			return false, err
		}
	}
	// (Not logged beyond the bound: whoever fills it would fill the log.)
	n, err := c.State.EndedCount(r.Node, move)
	return err == nil && n < c.policy.MaxWatchers+c.policy.MaxLogins, err
}

// endedHere reports whether handed-over subscription s of u was ended
// here while it was not here yet, u's state awaited under move: by a
// requester that may end it (mayManage: u itself, its subscriber, its
// watcher), naming the id its client knows it by.
func (c *core) endedHere(u events.User, move uint64, s events.SubState) (bool, error) {
	if move == 0 {
		return false, nil
	}
	by := []string{projections.EndedBy(u, "")}
	if s.Subscriber != "" {
		by = append(by, projections.EndedBy(events.User{}, s.Subscriber))
	}
	if !s.Watcher.IsZero() {
		by = append(by, projections.EndedBy(s.Watcher, ""))
	}
	for _, b := range by {
		if ended, err := c.State.Ended(u, move, knownID(s.ID, s.Known), b); err != nil || ended {
			return ended, err
		}
	}
	return false, nil
}

// handoffID is the request id of the handoff of u's move seq from home.
func handoffID(home string, u events.User, seq uint64) string {
	return fmt.Sprintf("handoff-%s-%s-%d", events.Token(home), events.Token(u.String()), seq)
}

// decideDeparture hands a moved user's state to its new home server and
// ends it here, once per move. Neither side tells watchers anything: for
// them nothing changed.
func (c *core) decideDeparture(mv move, now time.Time) (*decision, error) {
	u := mv.user
	id := handoffID(c.Home, u, mv.seq)
	// Not the request's id: the new home server's facts carry that.
	d := &decision{msgID: id + "/sent", quiet: true}
	if mv.to == c.Home || mv.seq == 0 {
		return d, nil
	}
	if done, err := c.State.Departed(u); err != nil || done >= mv.seq {
		return d, err
	}
	// Moved back here by a later move before this one was handed off, or
	// enabled again here since (a replayed move, heard from a directory
	// behind at the node's start): the state is where its user is. (A
	// record older than the move is a projection behind the stream the
	// move was heard from: handed off.)
	if rec, err := c.Dir.User(u); err != nil {
		return nil, err
	} else if rec != nil && rec.Home == c.Home && max(rec.Move, rec.Enabling) > mv.seq {
		return d, nil
	}
	subs, err := c.State.Subscriptions(u)
	if err != nil {
		return nil, err
	}
	views, err := c.State.Views(u)
	if err != nil {
		return nil, err
	}
	h := &events.Handoff{Req: events.Req{ID: id, At: now, Deadline: now.Add(time.Minute), Gateway: "home:" + c.Home,
		// The new home server reads its directory at least up to the
		// move before it routes the handoff: with an older one it would
		// send it back here as a request for a user of ours.
		Node: u, Auth: events.Identity{Scheme: "internal"}, DirPos: mv.seq}, From: c.Home, Move: mv.seq}
	for _, s := range subs {
		h.Subs = append(h.Subs, events.SubState{ID: s.ID, Kind: s.Kind, CallBack: s.CallBack, Watcher: s.Watcher, Subscriber: s.Subscriber,
			SubscriberUser: s.SubscriberUser, NodeURL: s.NodeURL, Lifetime: s.Lifetime, Expires: s.Expires, Source: s.Source, Credential: s.Credential,
			Known: s.Known})
	}
	for _, v := range views {
		h.Views = append(h.Views, events.ViewState{ID: v.ID, Value: v.Value, Default: v.Default, Timeout: v.Timeout, Expires: v.Expires, Source: v.Source,
			Known: v.Known, Set: v.Set})
	}
	if aces, ok, err := c.State.ACL(u); err != nil {
		return nil, err
	} else if ok {
		h.ACL = aces
	}
	for _, p := range []events.Prop{events.PropMobileState, events.PropMobileDescription} {
		if v, err := c.State.Property(u, p); err != nil {
			return nil, err
		} else if v != "" {
			h.Props = append(h.Props, events.PropValue{Prop: p, Value: v})
		}
	}
	// The state goes out first, even when there is none (the new home
	// server waits for it): the request stream holds it durably before
	// anything ends here. A stop in between hands it off again; the new
	// home server takes one handoff per move.
	d.handoff, d.handTo = h, mv.to
	meta := c.systemMeta(now)
	meta.Request = id
	for _, s := range subs {
		d.facts = append(d.facts, &events.SubscriptionEnded{Meta: meta, Node: u, ID: s.ID, Reason: events.EndMoved})
	}
	for _, v := range views {
		d.facts = append(d.facts, &events.ViewEnded{Meta: meta, Node: u, ID: v.ID, Reason: events.EndMoved})
	}
	// The ACL and properties end here too (Clears): left behind, they were
	// kept over those handed back when the user came back here, and what
	// she had changed elsewhere was lost.
	d.facts = append(d.facts, &events.UserDeparted{Meta: meta, Node: u, To: mv.to, Move: mv.seq, Subs: len(subs), Views: len(views), Clears: true})
	return d, nil
}

// decideHandoff records a user's state handed over by its former home
// server, but for what this node has already and what has expired.
func (c *core) decideHandoff(d *decision, e *events.Handoff, now time.Time) (*decision, error) {
	r := &e.Req
	if r.Auth.Scheme != "internal" {
		return d.fail(r, rvp.StatusForbidden, "handoffs come from home servers only")
	}
	d.quiet = true
	// Taken once per home server and move: a user moved on from a home
	// server before the state of the one she left before it came there
	// (A→B→C, A slow) has two handoffs, B's of the move to C (B had
	// nothing yet) and A's, forwarded by B or sent at A's start, either
	// of which may come first.
	//
	// A numbered part is taken once too, whether it comes before the
	// last part or after it: one held back (a directory behind) and
	// redelivered after the last had been taken was dropped with the
	// subscriptions it carried. (An unnumbered part, from an older
	// version, is taken only before the last.)
	from := e.From
	if e.More && e.Part != 0 {
		from = projections.HandoffPart(e.From, e.Part)
	}
	if took, err := c.State.Took(r.Node, from, e.Move); err != nil {
		return nil, err
	} else if e.Move != 0 && took {
		return d, nil // taken already
	}
	meta := c.systemMeta(now)
	meta.Request = r.ID
	took := events.UserArrived{Meta: meta, Node: r.Node, From: e.From, Move: e.Move}
	// A user disabled (before its former home server, down then, handed
	// it over) has its logins and presence ended, as decideDisabled ends
	// them: taken, it was signed in and online here until their leases
	// ran out. So have those of before a disable of a user enabled again
	// since (stale): its former home server, down, never ended them. Its
	// watchers' subscriptions are taken.
	rec, err := c.Dir.User(r.Node)
	if err != nil {
		return nil, err
	}
	off := rec != nil && !rec.Enabled
	leftOut := func(expires time.Time, lease int) bool { return off || stale(rec, expires, lease) }
	ids, err := c.handedIDs(r.Node, e)
	if err != nil {
		return nil, err
	}
	// Its subscriptions name it: their watchers saw her as her former
	// home server showed her, whichever part brought them.
	handed := events.HandoffOf(e.From, r.Node, e.Move)
	// Whether it brings a login of hers, and whether it brings one she
	// ended here (signed out) while it was late.
	tookLogin, endedLogin := false, false
	for _, s := range e.Subs {
		if s.Kind == events.NotifyPragma && leftOut(s.Expires, s.Lifetime) {
			continue
		}
		if !s.Expires.After(now) {
			continue
		}
		// Ended here since the move, its requester's client told it was
		// gone: taken, it was notified again until it lapsed.
		if rec != nil && rec.Home == c.Home {
			if ended, err := c.endedHere(r.Node, rec.Move, s); err != nil {
				return nil, err
			} else if ended {
				endedLogin = endedLogin || s.Kind == events.NotifyPragma
				continue
			}
		}
		id, known, ok := ids.place(s)
		if !ok {
			continue // here already (a part sent again, or made again here), or no id left
		}
		tookLogin = tookLogin || s.Kind == events.NotifyPragma
		d.facts = append(d.facts, &events.SubscriptionCreated{Meta: meta, Node: r.Node, ID: id, Kind: s.Kind, CallBack: s.CallBack,
			Watcher: s.Watcher, Subscriber: s.Subscriber, SubscriberUser: s.SubscriberUser, NodeURL: s.NodeURL, Lifetime: s.Lifetime,
			Expires: s.Expires, Source: s.Source, Credential: s.Credential, Known: known, Handoff: handed})
		took.Subs++
	}
	if e.More {
		// A part of a handoff in parts: its subscriptions. The move is
		// taken with the last part, and the user's requests wait for it.
		if e.Part != 0 && e.Move != 0 {
			took.Part = e.Part
			d.facts = append(d.facts, &took)
		}
		return d, nil
	}
	views, err := c.State.Views(r.Node)
	if err != nil {
		return nil, err
	}
	have := map[int32]bool{}
	for _, v := range views {
		have[v.ID] = true
	}
	// Signed out here while it was late (her client UNSUBSCRIBEd the
	// login it brings), and no login of hers left: her presence ends with
	// her last login (endViewsWithLastLogin). Taken, her views showed her
	// signed in, to the watchers here too, until their leases ran out; so
	// did those her client set here meanwhile, its login not here. (A
	// handoff in parts brings her logins with her views, in its last part
	// (handoffParts). One from an older version, or whose logins did not
	// fit there, brought them in the parts before, and a login of those
	// ended here is not caught.)
	loggedOut := false
	if endedLogin && !tookLogin {
		logins, err := c.State.Logins(r.Node)
		if err != nil {
			return nil, err
		}
		loggedOut = len(logins) == 0
	}
	if loggedOut {
		for _, v := range views {
			d.facts = append(d.facts, &events.ViewEnded{Meta: meta, Node: r.Node, ID: v.ID, Reason: events.EndLoggedOut})
		}
	}
	// The watchers handed over saw her as her former home server showed
	// her (theirs, its views as they went, however many have expired on
	// the way since), and those here as the views here show her; what
	// this handoff leaves (kept) may differ for either: views left out, or
	// expired on the way, or (a late handoff) the views here and those
	// handed over making another state together. A handoff is quiet, and
	// would tell them nothing, nor would anything after it.
	theirs, kept := make([]projections.View, 0, len(e.Views)), slices.Clone(views)
	if loggedOut {
		kept = kept[:0]
	}
	for _, v := range e.Views {
		set := v.Set
		if set.IsZero() {
			set = now // from a home server of an older version
		}
		pv := projections.View{ID: v.ID, Node: r.Node, Value: v.Value, Default: v.Default, Timeout: v.Timeout, Set: set, Expires: v.Expires,
			Source: v.Source, Known: v.Known}
		theirs = append(theirs, pv)
		if loggedOut || !v.Expires.After(now) || leftOut(v.Expires, v.Timeout) || superseded(views, v) {
			continue
		}
		// A late handoff (its former home server slow, down) comes after
		// the user's requests were decided here without it: a view of
		// another of her clients may have been given its id here
		// meanwhile. That one was skipped as had already: her presence
		// from that client lost (a busy she set shown as the other's
		// online), and its refreshes, naming the id, updated the other
		// client's view. It is given an id of this home server's, and
		// keeps the one its client knows it by (namedView).
		if have[v.ID] {
			if pv.ID = ids.fresh(); pv.ID == 0 {
				continue
			}
			pv.Known = knownID(v.ID, v.Known)
		}
		kept = append(kept, pv)
		d.facts = append(d.facts, &events.ViewSet{Meta: meta, Node: r.Node, ID: pv.ID, Value: v.Value, Default: v.Default,
			Timeout: v.Timeout, Expires: v.Expires, Source: v.Source, Known: pv.Known, Set: v.Set})
		took.Views++
	}
	after := effective(kept)
	if p := effective(theirs); p != after {
		d.shown = map[events.User]Presence{r.Node: p}
	}
	// The watchers here that it did not bring (a late handoff: they
	// subscribed here since the move) were shown her as the views here
	// show her: offline when there are none. Told nothing, a watcher who
	// subscribed while she showed no state here saw her offline until
	// her next change, however she showed on her former home server.
	// The watchers of a handoff's earlier parts name it (handed), as
	// those of this part do.
	d.shownHere = map[events.User]Presence{r.Node: effective(views)}
	d.handedIn = handed
	if len(e.ACL) > 0 {
		here, ok, err := c.State.ACL(r.Node)
		if err != nil {
			return nil, err
		}
		if !ok {
			d.facts = append(d.facts, &events.ACLSet{Meta: meta, Node: r.Node, ACEs: e.ACL})
			// Watchers here before it (a late handoff: its user signed in
			// here meanwhile from a client that writes no ACL, as Windows
			// Messenger) were shown her under the default ACL: those the
			// handed one denies (she blocked them) went on seeing the
			// presence they were last told, her online, as nothing tells
			// a denied watcher of a change. They are told as of an ACL
			// write.
			if watchers, err := c.State.Watchers(r.Node); err != nil {
				return nil, err
			} else if len(watchers) > 0 {
				d.aclBefore = map[events.User][]events.ACE{r.Node: events.DefaultACL(r.Node, "")}
			}
		} else if merged := mergeACL(e.ACL, writtenOver(here, r.Node), r.Node); !sameACL(merged, here) {
			// An ACL written here since the move (a late handoff, its
			// user's requests decided here without it: librvp writes its
			// entries for all principals and for the user at every
			// sign-in) was kept whole, and the handed one dropped: the
			// principals she had blocked on her former home server saw
			// her again. The entries written here are the newer; the
			// handed ones they do not name stand.
			d.facts = append(d.facts, &events.ACLSet{Meta: meta, Node: r.Node, ACEs: merged})
			d.aclBefore = map[events.User][]events.ACE{r.Node: here}
		}
	}
	for _, p := range e.Props {
		// One set here since the move is newer.
		if v, err := c.State.Property(r.Node, p.Prop); err != nil {
			return nil, err
		} else if v == "" {
			d.facts = append(d.facts, &events.PropertySet{Meta: meta, Node: r.Node, Value: p})
		}
	}
	d.facts = append(d.facts, &took)
	return d, nil
}

// writtenOver returns the entries of acl, u's ACL here, that writes made
// over the default ACL (aclOf): those the default does not hold as they
// are. u's own entry is left out: its rights are all, whatever it says
// (mergeACL).
func writtenOver(acl []events.ACE, u events.User) []events.ACE {
	def := events.DefaultACL(u, "")
	var out []events.ACE
	for _, a := range acl {
		if a.User == u || slices.ContainsFunc(def, func(d events.ACE) bool {
			return d.SamePrincipal(a) && sameACL([]events.ACE{d}, []events.ACE{a})
		}) {
			continue
		}
		out = append(out, a)
	}
	return out
}

// superseded reports whether handed-over view v is older than a view the
// same client (its address, the key PROPPATCHes without a view id reuse
// views by) set here since: a handoff that came late, after the client's
// requests were decided here. The client's state is the one it set last:
// taken too, its old view (its busy, say) outdid the invisible or idle it
// set here (the effective state takes any other value first) until its
// lease ran out. v's time is zero from a home server of an older
// version: any view here of its client was set after the move.
func superseded(views []projections.View, v events.ViewState) bool {
	if v.Source == "" {
		return false
	}
	for _, h := range views {
		if h.Source == v.Source && !h.Set.Before(v.Set) {
			return true
		}
	}
	return false
}

// handedIDs places the subscriptions of a handoff of u's state among
// those u has here, and gives ids of this home server's to those and the
// views whose ids are taken here.
type handedIDs struct {
	byID map[int32]*projections.Subscription // u's subscriptions here
	same map[sameSub]bool                    // and what they are
	next int32                               // the next id to give one whose id is taken here
}

// sameSub is what makes two subscriptions of a node the same: its kind,
// where its notifications go, who made it, and from where (the client's
// address): a watcher's clients subscribe under the same logical
// Call-Back (librvp's is its user's node URL), each to a subscription of
// its own, which it renews and ends by its id.
type sameSub struct {
	kind, callBack, subscriber, nodeURL, source string
	watcher                                     events.User
}

// handedIDs reads u's subscriptions here for placing e's.
func (c *core) handedIDs(u events.User, e *events.Handoff) (*handedIDs, error) {
	h := &handedIDs{byID: map[int32]*projections.Subscription{}, same: map[sameSub]bool{}}
	if len(e.Subs) > 0 {
		subs, err := c.State.Subscriptions(u)
		if err != nil {
			return nil, err
		}
		for i := range subs {
			s := &subs[i]
			h.byID[s.ID] = s
			h.same[sameSub{s.Kind, s.CallBack, s.Subscriber, s.NodeURL, s.Source, s.Watcher}] = true
		}
	}
	// Past every id allocated here and every one in e: the facts of e
	// are not applied before all of it is placed.
	var err error
	if h.next, err = c.State.NextID(); err != nil {
		return nil, err
	}
	for _, s := range e.Subs {
		h.next = max(h.next, s.ID+1)
	}
	for _, v := range e.Views {
		h.next = max(h.next, v.ID+1)
	}
	return h, nil
}

// knownID is the id a subscription's client knows it by.
func knownID(id, known int32) int32 {
	if known != 0 {
		return known
	}
	return id
}

// place returns the id handed-over subscription s is recorded under here
// and the id its client knows it by when that differs (0: the same); not
// ok when it is here already, or no id is left for it. One of the same
// kind, callback, subscriber, watcher, node URL and client address is the
// same one (another client of its watcher's, under the same logical
// Call-Back, is not: dropped, that client's renewals got 412, and its
// watch ended with the other's UNSUBSCRIBE): a
// handoff's part sent again, taken before; or, in a late handoff, made
// again here since the move (a client whose renewal was answered 412
// here signs in again, with the same callback), which is the newer:
// taken too, a login made again so had a message to its user delivered
// to her client twice until the old one lapsed.
//
// A late handoff (its former home server slow, down) comes after u's
// requests were decided here without it: an id of the former home
// server's may have been given here to another of u's subscriptions
// meanwhile, as the home servers allocate ids each on its own. That one
// was skipped as taken already: a watcher's subscription lost, silently.
// It is given an id of this home server's, and keeps the one its client
// knows it by: the client's renewals and UNSUBSCRIBEs name that one
// (core.named). (NOTIFYs name it by the new one: no client reads a
// NOTIFY's Subscription-Id.)
func (h *handedIDs) place(s events.SubState) (id, known int32, ok bool) {
	known = knownID(s.ID, s.Known)
	if h.same[sameSub{s.Kind, s.CallBack, s.Subscriber, s.NodeURL, s.Source, s.Watcher}] {
		return 0, 0, false
	}
	if h.byID[s.ID] == nil {
		return s.ID, s.Known, true
	}
	if id = h.fresh(); id == 0 {
		return 0, 0, false
	}
	return id, known, true
}

// fresh returns an id of this home server's for a handed-over
// subscription or view whose id is taken here, or 0 when none is left.
func (h *handedIDs) fresh() int32 {
	if h.next <= 0 || h.next == math.MaxInt32 {
		return 0
	}
	h.next++
	return h.next - 1
}
