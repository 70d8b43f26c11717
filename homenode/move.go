package homenode

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
)

// Moving a user to another home server (rvpctl user move) while it is
// online: the home server it left sends its state (subscriptions on its
// node, presence views, ACL, properties) to the new one as a handoff
// request event, then ends that state here with reason "moved" and
// records user.departed; the new one records the state as its own facts
// and user.arrived. Neither side tells watchers anything: for them
// nothing changed.
//
// A move is known by the directory sequence of its user.moved event. The
// old home server hands off once per move (user.departed says it did),
// whether it hears of the move from the directory, from a request a
// lagging gateway still sends it (which it then forwards), or at its next
// start (strays). The new home server holds the user's requests back until
// the handoff of the move is there (user.arrived), for at most
// Config.HandoffWait: a renewal or a new subscription decided before the state
// arrives would not find it, or would take an id the state holds.

// move is a user's move away from this home server.
type move struct {
	user events.User
	to   string
	seq  uint64 // the directory sequence of the move
}

// watchMoves feeds the users moved away from this home server to moves,
// until ctx ends.
func (n *Node) watchMoves(ctx context.Context, moves chan<- move) error {
	cons, err := n.cfg.JetStream.OrderedConsumer(ctx, events.StreamDirectory, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.DirectoryRoot + ".user.>"},
		DeliverPolicy:  jetstream.DeliverNewPolicy,
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("home %s: watch moves: %w", n.cfg.Home, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("home %s: watch moves: %w", n.cfg.Home, err)
	}
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	for {
		m, err := it.Next()
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return nil
			}
			return fmt.Errorf("home %s: watch moves: %w", n.cfg.Home, err)
		}
		if m.Headers().Get(events.HeaderType) != events.TypeUserMoved {
			continue
		}
		ev, err := events.Decode(events.TypeUserMoved, m.Data())
		if err != nil {
			n.log.Error("undecodable user move", "err", err)
			continue
		}
		md, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("home %s: watch moves: %w", n.cfg.Home, err)
		}
		if mv := ev.(*events.UserMoved); mv.From == n.cfg.Home {
			select {
			case moves <- move{user: mv.User, to: mv.Home, seq: md.Sequence.Stream}:
			case <-ctx.Done():
				return nil
			}
		}
	}
}

// strays returns the moves of the users this node holds state for whose
// home server is another one now: moved while the node was down.
func (n *Node) strays() ([]move, error) {
	users, err := n.proj.Users()
	if err != nil {
		return nil, err
	}
	var out []move
	for _, u := range users {
		if rec := n.movedAway(u); rec != nil {
			out = append(out, move{user: u, to: rec.Home, seq: rec.Move})
		}
	}
	return out, nil
}

// movedAway returns u's directory record if u is homed on another home
// server, else nil.
func (n *Node) movedAway(u events.User) *projections.UserRecord {
	rec, err := n.cfg.Directory.User(u)
	if err != nil || rec == nil || rec.Home == n.cfg.Home || rec.Home == "" {
		return nil
	}
	return rec
}

// forward passes on a request for a user that has moved to another home
// server (a gateway whose directory had not the move yet routed it here),
// after the user's state, so the new home server decides it as this one
// would have. The gateway's reply subject goes with it.
func (n *Node) forward(ctx context.Context, log *slog.Logger, m jetstream.Msg, r *events.Req, rec *projections.UserRecord) error {
	if err := n.handoff(ctx, move{user: r.Node, to: rec.Home, seq: rec.Move}); err != nil {
		log.Warn("request for a moved user not forwarded; will retry", "home", rec.Home, "err", err)
		return m.NakWithDelay(250 * time.Millisecond)
	}
	msg := nats.NewMsg(events.RequestSubject(rec.Home, r.Node))
	for k, v := range m.Headers() {
		if !strings.HasPrefix(k, "Nats-") {
			msg.Header[k] = v
		}
	}
	msg.Data = m.Data()
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	// A forward is one per request and home server, however often it is
	// redelivered here; one bounced back is dropped as a duplicate.
	if _, err := n.cfg.JetStream.PublishMsg(pctx, msg, jetstream.WithMsgID(r.ID+"@"+events.Token(rec.Home))); err != nil {
		log.Warn("request for a moved user not forwarded; will retry", "home", rec.Home, "err", err)
		return m.NakWithDelay(250 * time.Millisecond)
	}
	log.Info("request for a moved user forwarded to its home server", "home", rec.Home)
	return m.Ack()
}

// handoff sends a moved user's state to its new home server and ends it
// here, once per move.
func (n *Node) handoff(ctx context.Context, mv move) error {
	u := mv.user
	if mv.to == n.cfg.Home || mv.seq == 0 {
		return nil
	}
	if done, err := n.proj.Departed(u); err != nil || done >= mv.seq {
		return err
	}
	now := n.now()
	subs, err := n.proj.Subscriptions(u)
	if err != nil {
		return err
	}
	views, err := n.proj.Views(u)
	if err != nil {
		return err
	}
	id := fmt.Sprintf("handoff-%s-%s-%d", events.Token(n.cfg.Home), events.Token(u.String()), mv.seq)
	h := &events.Handoff{Req: events.Req{ID: id, At: now, Deadline: now.Add(time.Minute), Gateway: "home:" + n.cfg.Home,
		Node: u, Auth: events.Identity{Scheme: "internal"}}, From: n.cfg.Home, Move: mv.seq}
	for _, s := range subs {
		h.Subs = append(h.Subs, events.SubState{ID: s.ID, Kind: s.Kind, CallBack: s.CallBack, Watcher: s.Watcher, Subscriber: s.Subscriber,
			SubscriberUser: s.SubscriberUser, NodeURL: s.NodeURL, Lifetime: s.Lifetime, Expires: s.Expires, Source: s.Source, Credential: s.Credential})
	}
	for _, v := range views {
		h.Views = append(h.Views, events.ViewState{ID: v.ID, Value: v.Value, Default: v.Default, Timeout: v.Timeout, Expires: v.Expires, Source: v.Source})
	}
	if aces, ok, err := n.proj.ACL(u); err != nil {
		return err
	} else if ok {
		h.ACL = aces
	}
	for _, p := range []events.Prop{events.PropMobileState, events.PropMobileDescription} {
		if v, err := n.proj.Property(u, p); err != nil {
			return err
		} else if v != "" {
			h.Props = append(h.Props, events.PropValue{Prop: p, Value: v})
		}
	}
	// The state goes out first, even when there is none (the new home
	// server waits for it): the request stream holds it durably before
	// anything ends here. A stop in between hands it off again; the new
	// home server takes one handoff per move.
	data, err := events.Encode(h)
	if err != nil {
		return err
	}
	msg := nats.NewMsg(events.RequestSubject(mv.to, u))
	msg.Header.Set(events.HeaderType, h.Type())
	msg.Data = data
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	_, err = n.cfg.JetStream.PublishMsg(pctx, msg, jetstream.WithMsgID(id))
	cancel()
	if err != nil {
		return fmt.Errorf("hand %s to home server %s: %w", u, mv.to, err)
	}
	_, err = n.commit(ctx, n.log, func() (*decision, error) {
		// Not the request's id: the new home server's facts carry that.
		d := &decision{msgID: id + "/sent", quiet: true}
		meta := n.systemMeta(now)
		meta.Request = id
		for _, s := range subs {
			d.facts = append(d.facts, &events.SubscriptionEnded{Meta: meta, Node: u, ID: s.ID, Reason: events.EndMoved})
		}
		for _, v := range views {
			d.facts = append(d.facts, &events.ViewEnded{Meta: meta, Node: u, ID: v.ID, Reason: events.EndMoved})
		}
		d.facts = append(d.facts, &events.UserDeparted{Meta: meta, Node: u, To: mv.to, Move: mv.seq, Subs: len(subs), Views: len(views)})
		return d, nil
	})
	if err == nil {
		n.log.Info("user handed off to its new home server", "user", u.String(), "home", mv.to, "subscriptions", len(subs), "views", len(views))
	}
	return err
}

// decideHandoff records a user's state handed over by its former home
// server, but for what this node has already and what has expired.
func (n *Node) decideHandoff(d *decision, e *events.Handoff, now time.Time) (*decision, error) {
	r := &e.Req
	if r.Auth.Scheme != "internal" {
		return d.fail(r, 403, "handoffs come from home servers only")
	}
	d.quiet = true
	if done, err := n.proj.Arrived(r.Node); err != nil {
		return nil, err
	} else if e.Move != 0 && done >= e.Move {
		return d, nil // taken already
	}
	meta := n.systemMeta(now)
	meta.Request = r.ID
	took := events.UserArrived{Meta: meta, Node: r.Node, From: e.From, Move: e.Move}
	for _, s := range e.Subs {
		if have, err := n.proj.Subscription(r.Node, s.ID); err != nil {
			return nil, err
		} else if have != nil || !s.Expires.After(now) {
			continue
		}
		d.facts = append(d.facts, &events.SubscriptionCreated{Meta: meta, Node: r.Node, ID: s.ID, Kind: s.Kind, CallBack: s.CallBack,
			Watcher: s.Watcher, Subscriber: s.Subscriber, SubscriberUser: s.SubscriberUser, NodeURL: s.NodeURL, Lifetime: s.Lifetime,
			Expires: s.Expires, Source: s.Source, Credential: s.Credential})
		took.Subs++
	}
	views, err := n.proj.Views(r.Node)
	if err != nil {
		return nil, err
	}
	have := map[int32]bool{}
	for _, v := range views {
		have[v.ID] = true
	}
	for _, v := range e.Views {
		if have[v.ID] || !v.Expires.After(now) {
			continue
		}
		d.facts = append(d.facts, &events.ViewSet{Meta: meta, Node: r.Node, ID: v.ID, Value: v.Value, Default: v.Default,
			Timeout: v.Timeout, Expires: v.Expires, Source: v.Source})
		took.Views++
	}
	if len(e.ACL) > 0 {
		if _, ok, err := n.proj.ACL(r.Node); err != nil {
			return nil, err
		} else if !ok {
			d.facts = append(d.facts, &events.ACLSet{Meta: meta, Node: r.Node, ACEs: e.ACL})
		}
	}
	for _, p := range e.Props {
		// One set here since the move is newer.
		if v, err := n.proj.Property(r.Node, p.Prop); err != nil {
			return nil, err
		} else if v == "" {
			d.facts = append(d.facts, &events.PropertySet{Meta: meta, Node: r.Node, Value: p})
		}
	}
	d.facts = append(d.facts, &took)
	return d, nil
}

// awaitsHandoff reports whether u moved here and the handoff of its move
// has not come yet, and the move is recent enough to wait for it.
func (n *Node) awaitsHandoff(u events.User, now time.Time) (*projections.UserRecord, bool) {
	rec, err := n.cfg.Directory.User(u)
	if err != nil || rec == nil || rec.Home != n.cfg.Home || rec.Move == 0 || now.Sub(rec.MovedAt) >= n.cfg.HandoffWait {
		return rec, false
	}
	done, err := n.proj.Arrived(u)
	return rec, err == nil && done < rec.Move
}

// park holds back a request for a user whose handoff is awaited; the
// requests after it for the same user wait behind it.
func (n *Node) park(u events.User, m jetstream.Msg) {
	m.InProgress() // held, not lost: it is not redelivered meanwhile
	n.held.Add(1)
	n.parked[u] = append(n.parked[u], m)
}

// unpark decides the requests held back for u, in order.
func (n *Node) unpark(ctx, life context.Context, u events.User) error {
	held := n.parked[u]
	delete(n.parked, u)
	for _, m := range held {
		if err := n.handleRequest(ctx, life, m); err != nil {
			return err
		}
	}
	return nil
}

// unparkLate decides the requests held back for users whose handoff has
// not come within Config.HandoffWait: without it.
func (n *Node) unparkLate(ctx, life context.Context, now time.Time) error {
	for u := range n.parked {
		if rec, waiting := n.awaitsHandoff(u, now); !waiting {
			if rec != nil && rec.Move != 0 {
				if done, _ := n.proj.Arrived(u); done < rec.Move {
					n.log.Warn("handoff from the former home server has not come; deciding without it (it merges when it comes)",
						"user", u.String(), "from", rec.MovedFrom, "waited", n.cfg.HandoffWait)
				}
			}
			if err := n.unpark(ctx, life, u); err != nil {
				return err
			}
		}
	}
	return nil
}
