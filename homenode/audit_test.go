package homenode

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/testcluster/jsfault"
	"github.com/rvp-im/rvpd/testcluster/natstest"
)

// TestPresenceAtStreamDeletedMidway: a fact stream deleted while
// PresenceAt reads a user's facts from it (after the first batch) fails
// the report within seconds, naming the user and the stream. Before, it
// never returned: each fetch of the ordered consumer creates it anew,
// retried without bound and heeding no context; rvpctl presence-at and
// the console's user page (its 5 s included) waited for ever.
func TestPresenceAtStreamDeletedMidway(t *testing.T) {
	_, js := natstest.Connect(t, natstest.Start(t))
	ctx := context.Background()
	stream := events.FactStream("home1")
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: stream, Subjects: []string{events.FactFilter("home1")}}); err != nil {
		t.Fatal(err)
	}
	bob := events.NewUser("example.test", "bob")
	const n = 600 // more than one batch
	for i := range n {
		appendViewSet(t, js, "home1", &events.ViewSet{Meta: events.Meta{At: time.Now()}, Node: bob, ID: int32(i + 1), Value: "online"})
	}
	djs := &jsfault.DeletingJetStream{JetStream: js, StreamName: stream, At: 1}
	type result struct {
		rep *PresenceReport
		err error
	}
	done := make(chan result, 1)
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	start := time.Now()
	go func() {
		rep, err := PresenceAt(cctx, djs, bob, time.Now())
		done <- result{rep, err}
	}()
	select {
	case r := <-done:
		if djs.Deleted() != nil {
			t.Fatalf("delete %s: %v", stream, djs.Deleted())
		}
		if r.err == nil || !strings.Contains(r.err.Error(), stream) || !strings.Contains(r.err.Error(), bob.String()) {
			t.Errorf("PresenceAt: %+v, error %v; want an error naming %s and %s", r.rep, r.err, bob, stream)
		}
		t.Logf("returned after %v: %v", time.Since(start).Round(time.Millisecond), r.err)
	case <-time.After(30 * time.Second):
		_, err := js.Stream(ctx, stream)
		t.Fatalf("PresenceAt did not return in 30 s; %s now: %v", stream, err)
	}
}

// TestPresenceAtReplicaBehind: bob went online, then busy; the consumer
// PresenceAt reads his facts through is on a replica one fact behind
// (it has the first only when asked, and counts one pending). PresenceAt
// read as many facts as the consumer counted and reported him online;
// it now reads up to the last fact the stream's leader has: busy.
func TestPresenceAtReplicaBehind(t *testing.T) {
	_, js := natstest.Connect(t, natstest.Start(t))
	ctx := t.Context()
	stream := events.FactStream("home1")
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: stream, Subjects: []string{events.FactFilter("home1")}, AllowDirect: true}); err != nil {
		t.Fatal(err)
	}
	bob := events.NewUser("example.test", "bob")
	now := time.Now()
	for i, state := range []string{events.StateOnline, events.StateBusy} {
		appendViewSet(t, js, "home1", &events.ViewSet{Meta: events.Meta{At: now.Add(time.Duration(i-2) * time.Second)}, Node: bob, ID: 1, Value: state,
			Default: events.StateOffline, Timeout: 600, Expires: now.Add(time.Hour)})
	}
	rep, err := PresenceAt(ctx, &oneBehind{JetStream: js}, bob, now)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Facts != 2 || rep.Others != events.StateBusy {
		t.Errorf("bob's presence from a replica one fact behind: %s from %d facts, want busy from 2", rep.Others, rep.Facts)
	}
}

// oneBehind is a JetStream client whose ordered consumers are on a
// replica one message behind: each counts one pending message fewer,
// and its first fetch brings one message at most.
type oneBehind struct{ jetstream.JetStream }

func (o *oneBehind) OrderedConsumer(ctx context.Context, stream string, cfg jetstream.OrderedConsumerConfig) (jetstream.Consumer, error) {
	c, err := o.JetStream.OrderedConsumer(ctx, stream, cfg)
	if err != nil {
		return nil, err
	}
	return &behindOne{Consumer: c}, nil
}

type behindOne struct {
	jetstream.Consumer
	fetched bool
}

func (b *behindOne) Info(ctx context.Context) (*jetstream.ConsumerInfo, error) {
	info, err := b.Consumer.Info(ctx)
	if err != nil {
		return nil, err
	}
	behind := *info
	behind.NumPending = max(behind.NumPending, 1) - 1
	return &behind, nil
}

func (b *behindOne) FetchNoWait(n int) (jetstream.MessageBatch, error) {
	if !b.fetched {
		b.fetched = true
		return b.Consumer.FetchNoWait(1)
	}
	return b.Consumer.FetchNoWait(n)
}

// appendViewSet appends v to home's fact stream, as a fact of its node.
func appendViewSet(t *testing.T, js jetstream.JetStream, home string, v *events.ViewSet) {
	t.Helper()
	body, err := events.Encode(v)
	if err != nil {
		t.Fatal(err)
	}
	m := nats.NewMsg(events.FactSubject(home, v.Node))
	m.Header.Set(events.HeaderType, events.TypeViewSet)
	m.Data = body
	if _, err := js.PublishMsg(t.Context(), m); err != nil {
		t.Fatal(err)
	}
}
