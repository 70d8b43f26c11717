package homenode

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
)

// deletingJetStream is a JetStream client whose ordered consumers on
// stream delete it just before their read number at+1: the stream goes
// away while a reader is midway through it.
type deletingJetStream struct {
	jetstream.JetStream
	stream  string
	at      int
	once    sync.Once
	deleted error
}

func (d *deletingJetStream) OrderedConsumer(ctx context.Context, stream string, cfg jetstream.OrderedConsumerConfig) (jetstream.Consumer, error) {
	c, err := d.JetStream.OrderedConsumer(ctx, stream, cfg)
	if err != nil || stream != d.stream {
		return c, err
	}
	return &deletingConsumer{Consumer: c, js: d}, nil
}

type deletingConsumer struct {
	jetstream.Consumer
	js    *deletingJetStream
	reads int
}

func (c *deletingConsumer) Next(opts ...jetstream.FetchOpt) (jetstream.Msg, error) {
	if c.reads++; c.reads > c.js.at {
		c.js.once.Do(func() { c.js.deleted = c.js.JetStream.DeleteStream(context.Background(), c.js.stream) })
	}
	return c.Consumer.Next(opts...)
}

// TestPresenceAtStreamDeletedMidway: a fact stream deleted while
// PresenceAt reads a user's facts from it (after the first batch) fails
// the report within seconds, naming the user and the stream. Before, it
// never returned: each fetch of the ordered consumer creates it anew,
// retried without bound and heeding no context; rvpctl presence-at and
// the console's user page (its 5 s included) waited for ever.
func TestPresenceAtStreamDeletedMidway(t *testing.T) {
	_, js := connectJetStream(t)
	ctx := context.Background()
	stream := events.FactStream("home1")
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: stream, Subjects: []string{events.FactFilter("home1")}}); err != nil {
		t.Fatal(err)
	}
	bob := events.NewUser("example.test", "bob")
	const n = 600 // more than one batch
	for i := range n {
		body, err := events.Encode(&events.ViewSet{Meta: events.Meta{At: time.Now()}, Node: bob, ID: int32(i + 1), Value: "online"})
		if err != nil {
			t.Fatal(err)
		}
		m := nats.NewMsg(events.FactSubject("home1", bob))
		m.Header.Set(events.HeaderType, events.TypeViewSet)
		m.Data = body
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	djs := &deletingJetStream{JetStream: js, stream: stream, at: 1}
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
		if djs.deleted != nil {
			t.Fatalf("delete %s: %v", stream, djs.deleted)
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
