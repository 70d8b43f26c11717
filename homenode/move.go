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
)

// Moving a user to another home server (rvpctl user move) while it is
// online: the home server it left sends its state (subscriptions on its
// node, presence views, ACL, properties) to the new one as a handoff
// request event, then ends that state here with reason "moved"; the new
// one records it as its own facts. Neither side tells watchers anything:
// for them nothing changed. Requests for the user go to the new home
// server as soon as the gateways' directory has the move. A node that was
// down when a user moved hands it off when it starts (strays).

// watchMoves feeds the users moved away from this home server to moves,
// until ctx ends.
func (n *Node) watchMoves(ctx context.Context, moves chan<- *events.UserMoved) error {
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
		if mv := ev.(*events.UserMoved); mv.From == n.cfg.Home {
			select {
			case moves <- mv:
			case <-ctx.Done():
				return nil
			}
		}
	}
}

// strays returns the users this node holds state for whose home server
// is another one now: moved while the node was down.
func (n *Node) strays() ([]*events.UserMoved, error) {
	users, err := n.proj.Users()
	if err != nil {
		return nil, err
	}
	var out []*events.UserMoved
	for _, u := range users {
		if home, moved := n.movedAway(u); moved {
			out = append(out, &events.UserMoved{User: u, From: n.cfg.Home, Home: home})
		}
	}
	return out, nil
}

// movedAway reports whether u is homed on another home server, and which.
func (n *Node) movedAway(u events.User) (string, bool) {
	rec, err := n.cfg.Directory.User(u)
	if err != nil || rec == nil || rec.Home == n.cfg.Home || rec.Home == "" {
		return "", false
	}
	return rec.Home, true
}

// forward passes on a request for a user that has moved to another home
// server (a gateway whose directory had not the move yet routed it here),
// after the user's state, so the new home server decides it as this one
// would have. The gateway's reply subject goes with it.
func (n *Node) forward(ctx context.Context, log *slog.Logger, m jetstream.Msg, r *events.Req, home string) error {
	if err := n.handoff(ctx, r.Node, home); err != nil {
		log.Warn("request for a moved user not forwarded; will retry", "home", home, "err", err)
		return m.NakWithDelay(250 * time.Millisecond)
	}
	msg := nats.NewMsg(events.RequestSubject(home, r.Node))
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
	if _, err := n.cfg.JetStream.PublishMsg(pctx, msg, jetstream.WithMsgID(r.ID+"@"+events.Token(home))); err != nil {
		log.Warn("request for a moved user not forwarded; will retry", "home", home, "err", err)
		return m.NakWithDelay(250 * time.Millisecond)
	}
	log.Info("request for a moved user forwarded to its home server", "home", home)
	return m.Ack()
}

// handoff sends u's state to its new home server and ends it here. It
// hands nothing when there is nothing left here: it may run more than
// once for one move.
func (n *Node) handoff(ctx context.Context, u events.User, home string) error {
	if home == n.cfg.Home {
		return nil
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
	ver, err := n.proj.Version(u)
	if err != nil {
		return err
	}
	id := fmt.Sprintf("handoff-%s-%s-%d", events.Token(n.cfg.Home), events.Token(u.String()), ver)
	h := &events.Handoff{Req: events.Req{ID: id, At: now, Deadline: now.Add(time.Minute), Gateway: "home:" + n.cfg.Home,
		Node: u, Auth: events.Identity{Scheme: "internal"}}, From: n.cfg.Home}
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
	if len(subs) == 0 && len(views) == 0 && len(h.ACL) == 0 && len(h.Props) == 0 {
		return nil
	}
	// The state goes out first: the request stream holds it durably before
	// anything ends here. A stop in between hands it off again at start;
	// the new home server ignores what it has already.
	data, err := events.Encode(h)
	if err != nil {
		return err
	}
	msg := nats.NewMsg(events.RequestSubject(home, u))
	msg.Header.Set(events.HeaderType, h.Type())
	msg.Data = data
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	_, err = n.cfg.JetStream.PublishMsg(pctx, msg, jetstream.WithMsgID(id))
	cancel()
	if err != nil {
		return fmt.Errorf("hand %s to home server %s: %w", u, home, err)
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
		return d, nil
	})
	if err == nil {
		n.log.Info("user handed off to its new home server", "user", u.String(), "home", home, "subscriptions", len(subs), "views", len(views))
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
	meta := n.systemMeta(now)
	meta.Request = r.ID
	for _, s := range e.Subs {
		if have, err := n.proj.Subscription(r.Node, s.ID); err != nil {
			return nil, err
		} else if have != nil || !s.Expires.After(now) {
			continue
		}
		d.facts = append(d.facts, &events.SubscriptionCreated{Meta: meta, Node: r.Node, ID: s.ID, Kind: s.Kind, CallBack: s.CallBack,
			Watcher: s.Watcher, Subscriber: s.Subscriber, SubscriberUser: s.SubscriberUser, NodeURL: s.NodeURL, Lifetime: s.Lifetime,
			Expires: s.Expires, Source: s.Source, Credential: s.Credential})
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
	return d, nil
}
