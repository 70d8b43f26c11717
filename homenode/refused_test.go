package homenode

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
)

// staleState is a JetStream client whose streams' state (Stream's
// CachedInfo) gives a last sequence of at most upTo while upTo is set: a
// stream leader that has taken facts it could not store yet (its
// followers behind or cut off) counts them in the last sequence it checks
// publishes against, and not in the state it gives.
type staleState struct {
	jetstream.JetStream
	upTo atomic.Uint64 // 0: the state as it is
}

func (s *staleState) Stream(ctx context.Context, name string) (jetstream.Stream, error) {
	st, err := s.JetStream.Stream(ctx, name)
	if up := s.upTo.Load(); err == nil && up != 0 {
		return staleStream{Stream: st, upTo: up}, nil
	}
	return st, err
}

type staleStream struct {
	jetstream.Stream
	upTo uint64
}

func (s staleStream) CachedInfo() *jetstream.StreamInfo {
	info := *s.Stream.CachedInfo()
	info.State.LastSeq = min(info.State.LastSeq, s.upTo)
	return &info
}

// TestRefusedAgainWaits: the fact stream refuses the node's fact for its
// last sequence, a fact past what the stream's state shows (here another
// writer's; in a chaos run, seed 14, the node's own, taken by a leader
// whose only follower left was catching up). The recovery read the state,
// found nothing of the window's missing but what it had published, and
// published it again, refused again at once: some 4,400 times in 9 s,
// two log lines each. It now waits longer each time (100 ms doubling, up
// to a second), and once the state shows the other fact, catches up and
// decides the request again.
func TestRefusedAgainWaits(t *testing.T) {
	stale := &staleState{}
	h := newHarnessWith(t, func(c *Config) { stale.JetStream = c.JetStream; c.JetStream = stale }, "ann", "ben")
	h.annDescribed("ann-1")
	st, err := h.js.Stream(t.Context(), events.FactStream(h.home))
	if err != nil {
		t.Fatal(err)
	}
	last := st.CachedInfo().State.LastSeq
	stale.upTo.Store(last)
	if err := h.node.Projection().WaitFor(t.Context(), last); err != nil {
		t.Fatal(err)
	}
	other := annDescription("ann-elsewhere")
	d, err := decide(View{Home: h.home, State: projections.NewOverlay(h.node.Projection()), Dir: h.dir}, Policy{MinLifetime: time.Second}.withDefaults(), other, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	h.appendAsOtherWriter(d, last)

	before := h.node.Stats().Recovered
	req := annDescription("ann-2")
	h.sendTo("home1", req)
	<-time.After(2 * time.Second) // how long the state stays behind: the fault's length
	again := h.node.Stats().Recovered - before
	stale.upTo.Store(0)
	if r := h.reply(req.ID); r.Status != 207 {
		t.Fatalf("ann's request after the state caught up: %d %s", r.Status, r.Error)
	}
	if again > 10 {
		t.Errorf("the window published again %d times in the 2 s the stream's state was behind, want at most 10", again)
	}
	t.Logf("published again %d times in 2 s", again)
}

// TestFromLeaderReadsNoDirectGet: a stream that allows direct gets is
// read through them (any replica answers, one behind too); through
// projections.FromLeader, by the leader's message get.
func TestFromLeaderReadsNoDirectGet(t *testing.T) {
	h := newHarness(t, "ann")
	ctx := t.Context()
	h.annDescribed("ann-1")
	name := events.FactStream(h.home)
	direct, err := h.nc.SubscribeSync("$JS.API.DIRECT.GET." + name + ".>")
	if err != nil {
		t.Fatal(err)
	}
	directSeq, err := h.nc.SubscribeSync("$JS.API.DIRECT.GET." + name)
	if err != nil {
		t.Fatal(err)
	}
	leader, err := h.nc.SubscribeSync("$JS.API.STREAM.MSG.GET." + name)
	if err != nil {
		t.Fatal(err)
	}
	h.nc.Flush()
	count := func(subs ...*nats.Subscription) int {
		h.nc.Flush()
		n := 0
		for _, s := range subs {
			for {
				if _, err := s.NextMsg(100 * time.Millisecond); err != nil {
					break
				}
				n++
			}
		}
		return n
	}
	for _, viaLeader := range []bool{false, true} {
		st, err := h.js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if !st.CachedInfo().Config.AllowDirect {
			t.Fatalf("stream %s does not allow direct gets: the test tests nothing", name)
		}
		if viaLeader {
			st = projections.FromLeader(st)
		}
		if _, err := st.GetMsg(ctx, 1); err != nil {
			t.Fatal(err)
		}
		if _, err := st.GetLastMsgForSubject(ctx, events.FactFilter(h.home)); err != nil {
			t.Fatal(err)
		}
		d, l := count(direct, directSeq), count(leader)
		if viaLeader && (d != 0 || l != 2) || !viaLeader && (d != 2 || l != 0) {
			t.Errorf("read through fromLeader %v: %d direct gets, %d leader gets", viaLeader, d, l)
		}
	}
}

// laggingFirstRead is a JetStream client whose first ordered consumer on
// stream is on a replica one fact behind: it delivers nothing, and says
// nothing is pending and the last it delivered is the fact before the
// stream's last.
type laggingFirstRead struct {
	jetstream.JetStream
	stream string
	done   atomic.Bool
}

func (l *laggingFirstRead) OrderedConsumer(ctx context.Context, stream string, cfg jetstream.OrderedConsumerConfig) (jetstream.Consumer, error) {
	c, err := l.JetStream.OrderedConsumer(ctx, stream, cfg)
	if err != nil || stream != l.stream || l.done.Swap(true) {
		return c, err
	}
	st, err := l.JetStream.Stream(ctx, stream)
	if err != nil {
		return nil, err
	}
	return behindConsumer{Consumer: c, last: st.CachedInfo().State.LastSeq}, nil
}

type behindConsumer struct {
	jetstream.Consumer
	last uint64
}

func (b behindConsumer) FetchNoWait(int) (jetstream.MessageBatch, error) { return emptyBatch{}, nil }

func (b behindConsumer) Info(ctx context.Context) (*jetstream.ConsumerInfo, error) {
	info, err := b.Consumer.Info(ctx)
	if err != nil {
		return nil, err
	}
	behind := *info
	behind.NumPending = 0
	behind.Delivered.Stream = b.last - 1
	return &behind, nil
}

type emptyBatch struct{}

func (emptyBatch) Messages() <-chan jetstream.Msg {
	ch := make(chan jetstream.Msg)
	close(ch)
	return ch
}

func (emptyBatch) Error() error { return nil }
