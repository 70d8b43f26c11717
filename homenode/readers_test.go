package homenode

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/testcluster/jsfault"
	"github.com/rvp-im/rvpd/testcluster/natstest"
)

// factStreamOf creates home1's fact stream with n facts, each of its own
// user and request, and returns the stream's state.
func factStreamOf(t *testing.T, js jetstream.JetStream, n int) jetstream.StreamState {
	t.Helper()
	ctx := context.Background()
	stream := events.FactStream("home1")
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: stream, Subjects: []string{events.FactFilter("home1")}})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		u := events.NewUser("example.test", fmt.Sprintf("u%d", i))
		body, err := events.Encode(&events.ViewSet{Meta: events.Meta{At: time.Now()}, Node: u, ID: 1, Value: "online"})
		if err != nil {
			t.Fatal(err)
		}
		m := nats.NewMsg(events.FactSubject("home1", u))
		m.Header.Set(events.HeaderType, events.TypeViewSet)
		m.Header.Set(events.HeaderRequest, fmt.Sprintf("req%d", i))
		m.Data = body
		if _, err := js.PublishMsgAsync(m); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(30 * time.Second):
		t.Fatal("facts not stored in 30 s")
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != uint64(n) {
		t.Fatalf("%d facts stored, want %d", info.State.Msgs, n)
	}
	return info.State
}

// returnsWithin runs f and fails the test if it has not returned within
// d; it returns f's error and how long f took.
func returnsWithin(t *testing.T, d time.Duration, what string, f func() error) (error, time.Duration) {
	t.Helper()
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err, time.Since(start)
	case <-time.After(d):
		t.Fatalf("%s did not return in %v", what, d)
		return nil, 0
	}
}

// TestReadDecidedStreamDeletedMidway: the home server's fact stream
// deleted while readDecided (a takeover's recent facts, a recovery's
// facts of another writer) reads it fails the read within seconds,
// naming the stream. Before, it never returned: each FetchNoWait of the
// ordered consumer creates it anew, retried without bound and heeding
// no context; the takeover's reader (keepReadingRecent) never got an
// error to try again on, and Run, which waits for it, never returned
// once stopped; a recovery held the deciding loop for good.
func TestReadDecidedStreamDeletedMidway(t *testing.T) {
	_, js := natstest.Connect(t, natstest.Start(t))
	const total = 2000 // several batches (512)
	state := factStreamOf(t, js, total)
	stream := events.FactStream("home1")
	djs := &jsfault.DeletingJetStream{JetStream: js, StreamName: stream, At: 1}
	n := &Node{cfg: Config{JetStream: djs, Home: "home1"}, stream: stream, now: time.Now, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var rf recentFacts
	_, took := returnsWithin(t, 30*time.Second, "readDecided", func() error {
		rf = n.readDecided(ctx, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: 1}, state.LastSeq)
		return rf.err
	})
	if djs.Deleted() != nil {
		t.Fatalf("delete %s: %v", stream, djs.Deleted())
	}
	if rf.err == nil || !strings.Contains(rf.err.Error(), stream) {
		t.Errorf("readDecided: %d facts read, error %v; want an error naming %s", rf.facts, rf.err, stream)
	}
	if rf.facts >= total {
		t.Errorf("%d facts read of %d: the stream was not deleted midway", rf.facts, total)
	}
	t.Logf("returned after %v having read %d facts: %v", took.Round(time.Millisecond), rf.facts, rf.err)
}

// TestUsersChangedLatelyStreamDeletedMidway: the fact stream deleted
// while a new owner reads which users had facts lately (to re-send
// their presence) fails the read within its 30 s, naming the stream;
// resendAfterTakeover then re-sends every user's presence. Before, the
// ordered consumer's iterator, replacing its consumer without bound and
// heeding no context, never returned.
func TestUsersChangedLatelyStreamDeletedMidway(t *testing.T) {
	_, js := natstest.Connect(t, natstest.Start(t))
	const total = 5000 // more than the iterator's first pull (500)
	state := factStreamOf(t, js, total)
	stream := events.FactStream("home1")
	djs := &jsfault.DeletingJetStream{JetStream: js, StreamName: stream, At: 1}
	n := &Node{cfg: Config{JetStream: djs, Home: "home1", PreviousOwnerSeen: time.Now()}, policy: Policy{DeliveryTimeout: time.Hour},
		stream: stream, now: time.Now, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	var users []events.User
	err, took := returnsWithin(t, 60*time.Second, "usersChangedLately", func() error {
		var err error
		users, _, err = n.usersChangedLately(context.Background(), state)
		return err
	})
	if djs.Deleted() != nil {
		t.Fatalf("delete %s: %v", stream, djs.Deleted())
	}
	if err == nil || !strings.Contains(err.Error(), stream) {
		t.Errorf("usersChangedLately: %d users, error %v; want an error naming %s", len(users), err, stream)
	}
	if took > 35*time.Second {
		t.Errorf("usersChangedLately took %v, past its 30 s", took)
	}
	t.Logf("returned after %v: %v", took.Round(time.Millisecond), err)
}

// refusingJetStream is a JetStream client whose ordered consumers on
// stream cannot be made while refuse is set: a read of it fails, as one
// of a stream offline (or deleted) does once its resets are spent.
type refusingJetStream struct {
	jetstream.JetStream
	stream  string
	refuse  atomic.Bool
	refused atomic.Int32
}

func (r *refusingJetStream) OrderedConsumer(ctx context.Context, stream string, cfg jetstream.OrderedConsumerConfig) (jetstream.Consumer, error) {
	if stream == r.stream && r.refuse.Load() {
		r.refused.Add(1)
		return nil, fmt.Errorf("stream %s refused by the test", stream)
	}
	return r.JetStream.OrderedConsumer(ctx, stream, cfg)
}

// TestOtherWritersFactsUnreadable: the node meets another writer's facts
// (TestOtherWritersDecisionRemembered) and cannot read them. Its window
// stays broken, tried again, until it can; then a request the other
// writer decided is answered with the other writer's outcome. Before,
// the recovery went on without them ("the window is decided again
// whole"): the requests of the window the other writer had decided
// were decided a second time, and those it decided that came later too
// (ben signed in twice, by two subscriptions).
func TestOtherWritersFactsUnreadable(t *testing.T) {
	var rjs *refusingJetStream
	h := newHarnessWith(t, func(cfg *Config) {
		rjs = &refusingJetStream{JetStream: cfg.JetStream, stream: events.FactStream(cfg.Home)}
		cfg.JetStream = rjs
	}, "ann", "ben", "cat")
	req, login, d := otherWritersLogin(t, h)
	sink := "http://" + h.sink.Addr().String()
	rjs.refuse.Store(true)
	h.send(&events.Subscribe{Req: req("login-cat", "cat"), NotificationType: events.NotifyPragma, CallBack: sink, Lifetime: 600}, false)
	// The recovery tries again while it cannot read them, answering
	// nothing meanwhile.
	var early []string
	for deadline := time.Now().Add(30 * time.Second); rjs.refused.Load() < 3; {
		if time.Now().After(deadline) {
			t.Fatalf("the other writer's facts read %d times in 30 s, want 3 (conflicts %d)", rjs.refused.Load(), h.node.Stats().Conflicts)
		}
		select {
		case r := <-h.replies:
			early = append(early, r.ID)
			h.replies <- r // for awaitReplies
		case <-time.After(10 * time.Millisecond):
		}
		if len(early) > 0 {
			t.Errorf("%v answered while the other writer's facts could not be read (read %d times)", early, rjs.refused.Load())
			break
		}
	}
	rjs.refuse.Store(false)
	h.awaitReplies(map[string]string{"login-cat": events.TypeSubscribe}, true)
	h.send(login, false)
	h.awaitReplies(map[string]string{"login-ben": events.TypeSubscribe}, true)
	logins, err := h.node.Projection().Logins(events.NewUser("example.test", "ben"))
	if err != nil {
		t.Fatal(err)
	}
	if len(logins) != 1 || logins[0].ID != d.reply.SubscriptionID {
		t.Errorf("ben's logins: %+v; want only subscription %d, the other writer's", logins, d.reply.SubscriptionID)
	}
}

// TestKeepReadingRecentStreamDeletedMidway: a takeover whose fact stream
// is deleted while it reads the recent facts hands Run nothing (the
// requests delivered before stay held), tries the read again, naming
// the stream, and ends when the node is stopped. Before, its read never
// returned: it was never tried again, and Run, which waits for it once
// stopped, never returned.
func TestKeepReadingRecentStreamDeletedMidway(t *testing.T) {
	_, js := natstest.Connect(t, natstest.Start(t))
	since := time.Now().Add(-time.Minute)
	state := factStreamOf(t, js, 2000)
	stream := events.FactStream("home1")
	djs := &jsfault.DeletingJetStream{JetStream: js, StreamName: stream, At: 1}
	logs := &logBuffer{}
	n := &Node{cfg: Config{JetStream: djs, Home: "home1"}, stream: stream, now: time.Now, log: slog.New(slog.NewTextHandler(logs, nil))}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan recentFacts, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		n.keepReadingRecent(ctx, since, state.LastSeq, got)
	}()
	tried := func() bool {
		return strings.Contains(logs.tail(100), "recent facts not read; trying again") && strings.Contains(logs.tail(100), stream)
	}
	for deadline := time.Now().Add(30 * time.Second); !tried(); {
		if time.Now().After(deadline) {
			_, err := js.Stream(context.Background(), stream)
			t.Fatalf("the recent facts' read not tried again in 30 s (%s now: %v); log:\n%s", stream, err, logs.tail(20))
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("keepReadingRecent did not return in 30 s once stopped")
	}
	select {
	case rf := <-got:
		t.Errorf("recent facts handed to Run (%d facts, %d requests) though the stream was deleted midway", rf.facts, len(rf.decided))
	default:
	}
}

// TestUsersChangedLatelyOnReplicaBehind: the read of which users had
// facts lately (whose watchers a new owner tells their presence again)
// is on a replica behind, whose consumer says nothing is pending after
// each fact it has. It reads on up to the last fact the stream's leader
// has: before, it ended at the first such fact, and told the watchers
// of one user of five.
func TestUsersChangedLatelyOnReplicaBehind(t *testing.T) {
	_, js := natstest.Connect(t, natstest.Start(t))
	state := factStreamOf(t, js, 5)
	stream := events.FactStream("home1")
	n := &Node{cfg: Config{JetStream: &nothingPendingJS{JetStream: js}, Home: "home1", PreviousOwnerSeen: time.Now()}, policy: Policy{DeliveryTimeout: time.Hour},
		stream: stream, now: time.Now, log: slog.New(slog.DiscardHandler)}
	users, _, err := n.usersChangedLately(t.Context(), state)
	if err != nil {
		t.Fatal(err)
	}
	if len(users) != 5 {
		t.Errorf("users changed lately: %v; want the 5 whose facts the stream has", users)
	}
}

// nothingPendingJS is a JetStream client whose ordered consumers'
// messages each say nothing is pending after them, as those of a
// consumer on a replica behind do.
type nothingPendingJS struct{ jetstream.JetStream }

func (j *nothingPendingJS) OrderedConsumer(ctx context.Context, stream string, cfg jetstream.OrderedConsumerConfig) (jetstream.Consumer, error) {
	c, err := j.JetStream.OrderedConsumer(ctx, stream, cfg)
	return nothingPendingConsumer{c}, err
}

type nothingPendingConsumer struct{ jetstream.Consumer }

func (c nothingPendingConsumer) Messages(opts ...jetstream.PullMessagesOpt) (jetstream.MessagesContext, error) {
	it, err := c.Consumer.Messages(opts...)
	return nothingPendingIter{it}, err
}

type nothingPendingIter struct{ jetstream.MessagesContext }

func (it nothingPendingIter) Next(opts ...jetstream.NextOpt) (jetstream.Msg, error) {
	m, err := it.MessagesContext.Next(opts...)
	if err != nil {
		return nil, err
	}
	return nothingPendingMsg{m}, nil
}

type nothingPendingMsg struct{ jetstream.Msg }

func (m nothingPendingMsg) Metadata() (*jetstream.MsgMetadata, error) {
	md, err := m.Msg.Metadata()
	if err != nil {
		return nil, err
	}
	behind := *md
	behind.NumPending = 0
	return &behind, nil
}
