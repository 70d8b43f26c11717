package homenode

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
)

// PresenceReport answers an auditor's question "what was X's presence at
// time T, and who could see it": X's facts up to T, on every home server
// X lived on, folded as a home node folds them, with the same rules for
// the effective state and for the ACL.
type PresenceReport struct {
	Node     events.User        `json:"node"`
	At       time.Time          `json:"at"`
	Facts    int                `json:"facts"`    // how many facts were folded
	Position uint64             `json:"position"` // the sequence of the last in its home server's stream
	Self     string             `json:"self"`     // what the node's own clients saw
	Others   string             `json:"others"`   // what everyone else allowed to see it saw
	Views    []projections.View `json:"views"`
	Watchers []Watch            `json:"watchers"`
}

// Watch is a property subscription on the node, live at the report's
// moment, and what it was shown.
type Watch struct {
	ID         int32       `json:"sub_id"`
	Subscriber string      `json:"subscriber"`
	Watcher    events.User `json:"watcher,omitzero"`
	// SubscriberUser is the local user who subscribed, if any: the
	// watcher itself, or one subscribing for it.
	SubscriberUser events.User `json:"subscriber_user,omitzero"`
	CallBack       string      `json:"call_back"`
	Since          time.Time   `json:"since"`
	Until          time.Time   `json:"until"`
	// Sees is the state the watcher was shown: the node's, or offline
	// when its ACL denied the watcher the presence right.
	Sees string `json:"sees"`
}

// presenceResetAttempts is how many times PresenceAt's ordered consumer
// is created for a read (each fetch creates it anew) before the read
// fails, 1 s then 2 s apart: within the console page's 5 s when the
// stream is gone, long enough for a stream's new leader. Unbounded (the
// client's default), a read of a stream deleted or offline since the
// report began never returned, nor heeded ctx.
const presenceResetAttempts = 3

// presenceFetchWait is how long PresenceAt asks again for facts it knows
// are there while none come: a consumer just made in a cluster is not
// known yet on every server (its interest crosses the routes after it is
// made), and a pull request sent at once finds no responder.
const presenceFetchWait = 5 * time.Second

// fetchAll calls fn with the messages of cons up to stream sequence last
// (projections.LastOf), fetched in batches (an ordered consumer is made
// afresh for each fetch: one message a fetch made a consumer a message).
// A fetch that finds no responder, or no message, is made again for up
// to presenceFetchWait; past it, the read fails rather than end short.
func fetchAll(ctx context.Context, cons jetstream.Consumer, last uint64, fn func(jetstream.Msg) error) error {
	var read, seq uint64
	for deadline := time.Now().Add(presenceFetchWait); seq < last; {
		msgs, err := projections.Fetch(ctx, time.Until(deadline), func() (jetstream.MessageBatch, error) { return cons.FetchNoWait(512) })
		for _, m := range msgs {
			if md, err := m.Metadata(); err == nil {
				seq = md.Sequence.Stream
			}
			if err := fn(m); err != nil {
				return err
			}
		}
		read += uint64(len(msgs))
		if err != nil && !errors.Is(err, nats.ErrNoResponders) {
			return fmt.Errorf("%d read, up to sequence %d of %d: %w", read, seq, last, err)
		}
		if len(msgs) > 0 {
			deadline = time.Now().Add(presenceFetchWait)
			continue
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d read, up to sequence %d of %d, then none came for %s (the replica read may be behind: run it again)", read, seq, last, presenceFetchWait)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// PresenceAt folds u's facts decided up to at (by the time each carries)
// into a fresh projection and reports u's presence then. A user's facts
// are in the stream of each home server it lived on; they are folded in
// the order of their times.
func PresenceAt(ctx context.Context, js jetstream.JetStream, u events.User, at time.Time) (*PresenceReport, error) {
	streams, err := projections.FactStreams(ctx, js)
	if err != nil {
		return nil, err
	}
	type fact struct {
		home string
		msg  projections.Msg
		at   time.Time
	}
	var lists [][]fact // each home server's, in its stream's order
	for _, name := range streams {
		home, err := events.Untoken(strings.TrimPrefix(name, events.FactStreamPrefix))
		if err != nil {
			continue
		}
		cons, err := js.OrderedConsumer(ctx, name, jetstream.OrderedConsumerConfig{
			FilterSubjects:   []string{events.FactSubject(home, u)},
			MaxResetAttempts: presenceResetAttempts,
		})
		if err != nil {
			return nil, fmt.Errorf("read the facts of %s in %s: %w", u, name, err)
		}
		// Up to the last as the stream's leader has it: the consumer may be
		// on a replica behind, whose count of pending facts leaves the
		// last out (and the presence reported was then an older one).
		last, err := projections.LastOf(ctx, js, name, time.Time{}, events.FactSubject(home, u))
		if err != nil {
			return nil, fmt.Errorf("read the facts of %s in %s: %w", u, name, err)
		}
		var facts []fact
		err = fetchAll(ctx, cons, last, func(m jetstream.Msg) error {
			md, err := m.Metadata()
			if err != nil {
				return err
			}
			typ := m.Headers().Get(events.HeaderType)
			ev, err := events.Decode(typ, m.Data())
			if err != nil {
				return fmt.Errorf("%s seq %d: %w", name, md.Sequence.Stream, err)
			}
			if f, ok := ev.(events.Fact); ok && !f.Metadata().At.After(at) {
				facts = append(facts, fact{home: home, at: f.Metadata().At,
					msg: projections.Msg{Seq: md.Sequence.Stream, Subject: m.Subject(), Type: typ, Data: m.Data(), Time: md.Timestamp}})
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("read the facts of %s in %s: %w", u, name, err)
		}
		if len(facts) > 0 {
			lists = append(lists, facts)
		}
	}
	// Merged by time, each home server's in its own order.
	var facts []fact
	for len(lists) > 0 {
		first := 0
		for i := range lists {
			if lists[i][0].at.Before(lists[first][0].at) {
				first = i
			}
		}
		facts = append(facts, lists[first][0])
		if lists[first] = lists[first][1:]; len(lists[first]) == 0 {
			lists = slices.Delete(lists, first, first+1)
		}
	}
	mem, err := projections.Open("", projections.Options{InMemory: true})
	if err != nil {
		return nil, err
	}
	defer mem.Close()
	homes := map[string]*projections.Home{}
	rep := &PresenceReport{Node: u, At: at}
	aclHome := ""
	for _, f := range facts {
		h := homes[f.home]
		if h == nil {
			if h, err = projections.OpenHome(mem, f.home); err != nil {
				return nil, err
			}
			homes[f.home] = h
		}
		if err := h.ApplyBatch([]projections.Msg{f.msg}); err != nil {
			return nil, err
		}
		if f.msg.Type == events.TypeACLSet {
			aclHome = f.home
		}
		rep.Facts++
		rep.Position = f.msg.Seq
	}

	// What was live at the moment, wherever it lived (a user moved
	// between home servers has ended state on the one it left).
	var subs []projections.Subscription
	nodeURL := ""
	for _, h := range homes {
		vs, err := h.Views(u)
		if err != nil {
			return nil, err
		}
		for _, v := range vs {
			if v.Expires.After(at) {
				rep.Views = append(rep.Views, v)
			}
		}
		ss, err := h.Subscriptions(u)
		if err != nil {
			return nil, err
		}
		for _, s := range ss {
			nodeURL = s.NodeURL
			if s.Expires.After(at) && s.Kind == events.NotifyPropChange {
				subs = append(subs, s)
			}
		}
	}
	p := effective(rep.Views)
	rep.Self, rep.Others = p.Self, p.Others
	aces := events.DefaultACL(u, nodeURL)
	if h := homes[aclHome]; h != nil {
		if a, ok, err := h.ACL(u); err != nil {
			return nil, err
		} else if ok {
			aces = a
		}
	}
	for _, s := range subs {
		sees := events.StateOffline
		if permitted(aces, subscriber(u, &s), events.RightPresence) {
			sees = p.For(u, &s)
		}
		rep.Watchers = append(rep.Watchers, Watch{ID: s.ID, Subscriber: s.Subscriber, Watcher: s.Watcher, SubscriberUser: s.SubscriberUser, CallBack: s.CallBack,
			Since: s.Created, Until: s.Expires, Sees: sees})
	}
	sort.Slice(rep.Views, func(i, j int) bool { return rep.Views[i].ID < rep.Views[j].ID })
	sort.Slice(rep.Watchers, func(i, j int) bool { return rep.Watchers[i].ID < rep.Watchers[j].ID })
	return rep, nil
}
