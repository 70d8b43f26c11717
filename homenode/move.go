package homenode

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
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

// watchMoves feeds the users moved away from this home server to moves,
// and the users disabled (of any home server: the event does not say) to
// disables, until ctx ends. It follows the directory from after from, the
// directory projection's position before the node's start looked for
// users moved away (strays) and disabled (disabledHere) on it: what the
// projection had not applied then is heard here. (Following only the
// events appended once it had subscribed, a move or disable appended
// while the node started, or that its projection was a moment behind
// on, was heard by neither, and waited for the next start.) What both
// see is decided twice, harmlessly: a move is handed off once
// (user.departed), and a disabled user's logins end once.
func (n *Node) watchMoves(ctx context.Context, from uint64, moves chan<- move, disables chan<- disable) error {
	cons, err := n.cfg.JetStream.OrderedConsumer(ctx, events.StreamDirectory, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.DirectoryRoot + ".user.>"},
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    from + 1,
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
	// Next is given ctx too: an ordered consumer that is replacing its
	// consumer (after a NATS server's loss) when Stop comes goes on with
	// the new one, and Next would wait on it for ever (nats.go v1.55).
	untilDone := jetstream.NextContext(ctx)
	for {
		m, err := it.Next(untilDone)
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) || ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("home %s: watch moves: %w", n.cfg.Home, err)
		}
		typ := m.Headers().Get(events.HeaderType)
		if typ != events.TypeUserMoved && typ != events.TypeUserDisabled {
			continue
		}
		ev, err := events.Decode(typ, m.Data())
		if err != nil {
			n.log.Error("undecodable directory event", "type", typ, "err", err)
			continue
		}
		md, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("home %s: watch moves: %w", n.cfg.Home, err)
		}
		if dis, ok := ev.(*events.UserDisabled); ok {
			select {
			case disables <- disable{user: dis.User, seq: md.Sequence.Stream}:
			case <-ctx.Done():
				return nil
			}
			continue
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
func (n *Node) strays(ctx context.Context) ([]move, error) {
	users, err := n.proj.Users()
	if err != nil {
		return nil, err
	}
	var out []move
	c := &core{View: n.view(), policy: n.policy}
	// One wait for the directory for all of them: waited for in turn, a
	// directory stuck behind held the start 5 s for each.
	until := time.Now().Add(strayDirectoryWait)
	for _, u := range users {
		rec, err := c.movedAway(u)
		if err != nil {
			return nil, err
		}
		if rec != nil {
			rec, seq, err := n.moveOf(ctx, rec, until)
			if err != nil {
				n.log.Warn("user homed elsewhere not handed off yet; it will be when a request for it comes, or at the next start",
					"user", u.String(), "err", err)
				continue
			}
			if rec != nil {
				out = append(out, move{user: u, to: rec.Home, seq: seq})
			}
		}
	}
	return out, nil
}

// moveOf returns the record and the sequence that name the move of a
// user homed on another home server than this one (rec, as the directory
// projection has it): its move's, or for a record with none (a user
// enabled again on that home server after a move this node had not
// handed off yet, which writes the record afresh; or enabled again
// elsewhere by a version that did not move it) the directory sequence of
// its last event, so that the state this node holds is handed over all
// the same. With no state here not handed over, and no move from here,
// 0: there is nothing to hand over. A stream whose last event of the user is past the
// projection (a move back here, say) is read on the projection there
// first: the sequence named a later event than the record was read at,
// and the state went to the home server the user had left, under the
// move that brought it back here. A nil record: the user is homed here
// again. The projection is waited for until until: not at all in the
// deciding loop (forward, a zero until), whose every request would wait
// as long, again at each redelivery, and whose stop too (its context
// does not end).
func (n *Node) moveOf(ctx context.Context, rec *projections.UserRecord, until time.Time) (*projections.UserRecord, uint64, error) {
	if rec.Move != 0 {
		if rec.MovedFrom != n.cfg.Home {
			// A move between two other home servers: handed off from here
			// only when this node holds state of the user that it has not
			// handed over (it missed the move away from here, down or
			// slow). Else what is left here is what a handoff of its own
			// carried already (the ACL and properties it leaves), and sent
			// again, as if the user left here, it overrode what she had
			// changed since (a property she cleared came back).
			if held, err := n.holds(rec.User); err != nil || !held {
				return rec, 0, err
			}
		}
		return rec, rec.Move, nil
	}
	if held, err := n.holds(rec.User); err != nil || !held {
		return rec, 0, err
	}
	st, err := n.cfg.JetStream.Stream(ctx, events.StreamDirectory)
	if err != nil {
		return nil, 0, fmt.Errorf("home %s: the directory sequence of %s, homed on %s: %w", n.cfg.Home, rec.User, rec.Home, err)
	}
	m, err := projections.FromLeader(st).GetLastMsgForSubject(ctx, events.UserSubject(rec.User))
	if err != nil {
		return nil, 0, fmt.Errorf("home %s: the directory sequence of %s, homed on %s: %w", n.cfg.Home, rec.User, rec.Home, err)
	}
	if m.Sequence > n.cfg.Directory.Position() {
		if !time.Now().Before(until) {
			return nil, 0, fmt.Errorf("home %s: the directory is behind the last event of %s (sequence %d, at %d); taken again once it is there", n.cfg.Home, rec.User, m.Sequence, n.cfg.Directory.Position())
		}
		wctx, cancel := context.WithDeadline(ctx, until)
		err := n.cfg.Directory.WaitFor(wctx, m.Sequence)
		cancel()
		if err != nil {
			return nil, 0, fmt.Errorf("home %s: the directory is behind the last event of %s (sequence %d): %w", n.cfg.Home, rec.User, m.Sequence, err)
		}
		c := &core{View: n.view(), policy: n.policy}
		now, err := c.movedAway(rec.User)
		if err != nil || now == nil {
			return nil, 0, err
		}
		if now.Move != 0 {
			return now, now.Move, nil
		}
		rec = now
	}
	return rec, m.Sequence, nil
}

// strayDirectoryWait bounds the wait of a node's start (strays) for its
// directory projection to reach the strays' last events, all of them.
const strayDirectoryWait = 5 * time.Second

// holds reports whether this node holds state of u that a handoff
// carries and has not handed over: subscriptions, views, and an ACL or
// properties of a user it has not handed off since it last arrived. A
// handoff of an older version ended the subscriptions and views here but
// left the ACL and properties (one now ends them too: user.departed's
// Clears): taken for state still held, they named a new handoff by the
// sequence of the user's last directory event at every start or forward
// after any change of its record, a user.departed more each time, and
// the stale ACL and properties went to the new home server again.
func (n *Node) holds(u events.User) (bool, error) {
	v := n.view().State
	if subs, err := v.Subscriptions(u); err != nil || len(subs) > 0 {
		return len(subs) > 0, err
	}
	if views, err := v.Views(u); err != nil || len(views) > 0 {
		return len(views) > 0, err
	}
	// Handed off since it last arrived here (if it did): what is left is
	// what that handoff carried already.
	if done, err := v.Departed(u); err != nil || done != 0 {
		if err != nil {
			return false, err
		}
		came, err := v.Arrived(u)
		if err != nil || done >= came {
			return false, err
		}
	}
	if _, ok, err := v.ACL(u); err != nil || ok {
		return ok, err
	}
	for _, p := range []events.Prop{events.PropMobileState, events.PropMobileDescription} {
		if val, err := v.Property(u, p); err != nil || val != "" {
			return val != "", err
		}
	}
	return false, nil
}

// forward passes on a request for a user that has moved to another home
// server (a gateway whose directory had not the move yet routed it here),
// after the user's state, so the new home server decides it as this one
// would have. The gateway's reply subject goes with it.
//
// The forward is recorded here first (events.RequestForwarded), and the
// request passed on once that is durable (sendForward): delivered here
// again — its acknowledgement lost in a partition, or late past AckWait
// behind a slow append — after the user had come back, it was decided
// here as well as there (chaos seed 14). Delivered again, it is passed on
// again as it was, never decided here (Node.handleRequest). A handoff is
// passed on as before, unrecorded: it is taken once per home server and
// move wherever it is delivered (decideHandoff).
//
// The request goes with the position of the move it is forwarded under,
// when later than its own: the new home server reads its directory there
// (a handoff waits for it), not at the one the request was routed with.
// A handoff forwarded with its former home server's position (a user
// moved on, A→B→C, before A's state came to B) was routed back here by a
// home server whose directory had not the move on yet, and forwarded
// again under the same message id, which JetStream dropped as a
// duplicate: the user's state was lost. The message id names the move
// too: a request forwarded to the same home server under a later move
// (moved back and forth) is not one already forwarded.
func (n *Node) forward(ctx context.Context, log *slog.Logger, m jetstream.Msg, req events.Request, rec *projections.UserRecord) error {
	r := req.Request()
	rec, seq, err := n.moveOf(ctx, rec, time.Time{})
	if err == nil && rec == nil {
		// Homed here again: routed again, it is decided here.
		return m.NakWithDelay(250 * time.Millisecond)
	}
	if err == nil {
		err = n.handoff(ctx, move{user: r.Node, to: rec.Home, seq: seq})
	}
	if err != nil {
		return n.retryLater(ctx, log, m, "request for a moved user not forwarded; will retry", "err", err)
	}
	// Nothing handed off (seq 0), the request goes under the record's move
	// all the same: the new home server reads its directory there.
	fw := forwarded{req: req, to: rec.Home, move: max(seq, rec.Move)}
	if _, ok := req.(*events.Handoff); ok {
		return n.sendForward(ctx, log, m, fw)
	}
	if err := n.commit(ctx, &pending{in: fw, msg: m}); err != nil {
		if errors.Is(err, ErrLeaseLapsed) {
			m.Nak()
			return err
		}
		return n.retryLater(ctx, log, m, "request for a moved user not forwarded (its forward not recorded); will retry", "to", rec.Home, "err", err)
	}
	n.forwards.add(r.ID, fw.to, fw.move)
	return nil
}

// sendForward passes request m on to the home server fw names, under its
// move, and acknowledges it here. A forward is one per request, home
// server and move, however often it is sent: sent again (redelivered
// here) or bounced back (a request the new home server decided with a
// directory behind the move), it is dropped as a duplicate. One not sent
// is taken again later, and sent then.
func (n *Node) sendForward(ctx context.Context, log *slog.Logger, m jetstream.Msg, fw forwarded) error {
	r := fw.req.Request()
	msg := requestCopy(events.RequestSubject(fw.to, r.Node), m)
	// The new home server reads its directory at the move (a handoff waits
	// for it), not at the position the request was routed with.
	if fw.move > r.DirPos {
		r.DirPos = fw.move
		if data, err := events.Encode(fw.req); err != nil {
			log.Error("request for a moved user forwarded with the directory position it came with: not encoded with its move's (a home server behind the move sends it back, and it is lost)", "to", fw.to, "move", fw.move, "err", err)
		} else {
			msg.Data = data
		}
	}
	id := r.ID + "@" + events.Token(fw.to) + "/" + strconv.FormatUint(fw.move, 10)
	if err := n.publishKept(ctx, msg, id); err != nil {
		return n.retryLater(ctx, log, m, "request for a moved user not forwarded; will retry", "to", fw.to, "err", err)
	}
	log.Info("request for a moved user forwarded to its home server", "to", fw.to, "move", fw.move)
	return n.doneWith(m)
}

// retryLater hands m back to be delivered again in 250 ms, logging why
// (msg and args) at its first delivery and at Debug after. A handoff is
// state no gateway waits for and no other message holds: delivered for
// the MaxDeliver/2-th time, it is appended to the stream anew, under an
// id of its own, and m acknowledged, so that no number of deliveries
// drops it (at MaxDeliver the consumer would). A directory some 25 s
// behind, or a new home server's stream out of reach as long, lost the
// state it carried. The copy is taken once like the first (its source
// home server and move, not its message id, name it: decideHandoff).
func (n *Node) retryLater(ctx context.Context, log *slog.Logger, m jetstream.Msg, msg string, args ...any) error {
	const delay = 250 * time.Millisecond
	md, err := m.Metadata()
	if err != nil {
		log.Warn(msg, args...)
		return m.NakWithDelay(delay)
	}
	if m.Headers().Get(events.HeaderType) != events.TypeHandoff || md.NumDelivered < uint64(max(1, n.cfg.MaxDeliver/2)) {
		level := slog.LevelWarn
		if md.NumDelivered > 1 {
			level = slog.LevelDebug
		}
		log.Log(ctx, level, msg, append(args, "delivered", md.NumDelivered)...)
		return m.NakWithDelay(delay)
	}
	id := m.Headers().Get(jetstream.MsgIDHeader) + "/again-" + strconv.FormatUint(md.Sequence.Stream, 10)
	if err := n.publishKept(ctx, requestCopy(m.Subject(), m), id); err != nil {
		log.Error(msg+"; the handoff, delivered many times, is not appended anew: it is lost at its last delivery unless a delivery before succeeds",
			append(args, "delivered", md.NumDelivered, "limit", n.cfg.MaxDeliver, "again_err", err)...)
		return m.NakWithDelay(delay)
	}
	log.Warn(msg+"; the handoff, delivered many times, is appended anew and taken from there",
		append(args, "delivered", md.NumDelivered, "again", id)...)
	return n.doneWith(m)
}

// handoff sends a moved user's state to its new home server and ends it
// here, once per move (decideDeparture).
func (n *Node) handoff(ctx context.Context, mv move) error {
	return n.commit(ctx, &pending{in: departure(mv)})
}

// sendHandoff appends a decision's handoff to its new home server's
// requests, in parts when it is larger than a message may be.
func (n *Node) sendHandoff(ctx context.Context, d *decision) error {
	parts, err := handoffParts(d.handoff, maxHandoffBytes)
	if err != nil {
		return fmt.Errorf("hand %s to home server %s: %w", d.handoff.Node, d.handTo, err)
	}
	for _, p := range parts {
		msg := nats.NewMsg(events.RequestSubject(d.handTo, d.handoff.Node))
		msg.Header.Set(events.HeaderType, d.handoff.Type())
		msg.Data = p.data
		if err := n.publishKept(ctx, msg, p.id); err != nil {
			return fmt.Errorf("hand %s to home server %s (%d parts): %w", d.handoff.Node, d.handTo, len(parts), err)
		}
	}
	return nil
}

// maxHandoffBytes bounds a handoff message: NATS takes messages of up to
// 1 MB (its max_payload), and the state of a user watched by thousands
// is larger (4,096 watchers, the most a node may have, are some 1.8 MB).
const maxHandoffBytes = 512 << 10

// handoffPart is one message of a handoff: its request id and its
// encoding.
type handoffPart struct {
	id   string
	data []byte
}

// handoffParts encodes h in messages of at most limit bytes: h itself when
// it fits, else its watchers' subscriptions over as many parts as they
// need, in order, each marked More and with an id of its own, then a last
// part with h's id, the user's logins and the rest of the state. The new
// home server takes the move with the last (decideHandoff), and each
// numbered part once, before or after it, so parts sent again after a stop
// are harmless, and parts held back and redelivered out of order are all
// taken.
//
// The logins go with the views (at most Policy.MaxLogins of them): a
// handoff that brings a login its client ended here while the handoff was
// late, and leaves the user none, takes none of her views, and
// decideHandoff sees that only in the part that brings both. Logins that
// do not fit beside the rest go in the parts before it, as every
// subscription went before.
func handoffParts(h *events.Handoff, limit int) ([]handoffPart, error) {
	data, err := events.Encode(h)
	if err != nil || len(data) <= limit {
		return []handoffPart{{id: h.ID, data: data}}, err
	}
	last := *h
	last.Subs = nil
	for _, s := range h.Subs {
		if s.Kind == events.NotifyPragma {
			last.Subs = append(last.Subs, s)
		}
	}
	lastData, err := events.Encode(&last)
	if err != nil {
		return nil, err
	}
	loginsLast := len(last.Subs) > 0
	if len(lastData) > limit && loginsLast {
		last.Subs, loginsLast = nil, false
		if lastData, err = events.Encode(&last); err != nil {
			return nil, err
		}
	}
	if len(lastData) > limit {
		return nil, fmt.Errorf("the state besides the subscriptions (views, ACL, properties) takes %d bytes, more than a handoff message may (%d)", len(lastData), limit)
	}
	// The parts before the last are cut from every subscription, in
	// order, as before the logins went in the last part, and numbered so:
	// with the logins taken out, part k brings what part k of an older
	// version brought, but for them. A handoff an older version began and
	// stopped (the new home server took its parts 1 to k), sent again
	// once upgraded, is then taken whole: had the watchers been cut on
	// their own, part k+1 would start further on, and the watchers between
	// would be in a part the new home server had taken already.
	var parts []handoffPart
	num := 0
	// subs adds parts for a run of subscriptions, halved until each fits
	// (with its logins, as an older version halved it).
	var subs func(run []events.SubState) error
	subs = func(run []events.SubState) error {
		p := &events.Handoff{Req: h.Req, From: h.From, Move: h.Move, Subs: run, More: true, Part: num + 1}
		p.ID = h.ID + "/part" + strconv.Itoa(p.Part)
		data, err := events.Encode(p)
		switch {
		case err != nil:
			return err
		case len(data) <= limit:
			num++
			if loginsLast {
				p.Subs = slices.DeleteFunc(slices.Clone(run), func(s events.SubState) bool { return s.Kind == events.NotifyPragma })
				if len(p.Subs) == 0 {
					return nil // its number is left unused
				}
				if data, err = events.Encode(p); err != nil {
					return err
				}
			}
			parts = append(parts, handoffPart{id: p.ID, data: data})
			return nil
		case len(run) == 1:
			return fmt.Errorf("subscription %d alone takes %d bytes, more than a handoff message may (%d)", run[0].ID, len(data), limit)
		}
		if err := subs(run[:len(run)/2]); err != nil {
			return err
		}
		return subs(run[len(run)/2:])
	}
	// Runs of about half a message each to begin with.
	per := max(1, len(h.Subs)*limit/(2*len(data)))
	for run := range slices.Chunk(h.Subs, per) {
		if err := subs(run); err != nil {
			return nil, err
		}
	}
	return append(parts, handoffPart{id: h.ID, data: lastData}), nil
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
	c := &core{View: n.view(), policy: n.policy}
	for u := range n.parked {
		if rec, waiting, _ := c.awaitsHandoff(u, now, n.cfg.HandoffWait); !waiting {
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
