package projections

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/testcluster/natstest"
)

// seqRecorder is an Applier that records the sequences it applies.
type seqRecorder struct {
	mu      sync.Mutex
	applied []uint64
	pos     *position
}

func newSeqRecorder() *seqRecorder { return &seqRecorder{pos: newPosition(0)} }

func (r *seqRecorder) Position() uint64 { return r.pos.get() }

func (r *seqRecorder) ApplyBatch(msgs []Msg) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range msgs {
		if m.Seq <= r.pos.get() {
			continue
		}
		r.applied = append(r.applied, m.Seq)
		r.pos.set(m.Seq)
	}
	return nil
}

func (r *seqRecorder) WaitFor(ctx context.Context, seq uint64) error { return r.pos.waitFor(ctx, seq) }

func (r *seqRecorder) sequences() []uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.applied)
}

// followFixture is a stream on an embedded server (listening, so that
// its clients can reconnect), a projection following it, and a second
// connection the test acts through.
type followFixture struct {
	t     *testing.T
	nc    *nats.Conn // the follower's
	js    jetstream.JetStream
	other jetstream.JetStream
	st    jetstream.Stream
	rec   *seqRecorder
	last  uint64
}

func newFollowFixture(t *testing.T, maxBatch int) *followFixture {
	t.Helper()
	ns := natstest.Start(t, natstest.Listen())
	f := &followFixture{t: t, rec: newSeqRecorder()}
	f.nc, f.js = natstest.Connect(t, ns, nats.Name("follower"))
	_, f.other = natstest.Connect(t, ns, nats.Name("other"))
	var err error
	f.st, err = f.other.CreateStream(t.Context(), jetstream.StreamConfig{Name: "FOLLOW", Subjects: []string{"follow.>"}, Storage: jetstream.MemoryStorage})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Follow(ctx, f.js, FollowConfig{Stream: "FOLLOW", Filter: "follow.>", MaxBatch: maxBatch}, f.rec)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Follow: %v", err)
		}
	})
	return f
}

// publish appends a message and returns its sequence.
func (f *followFixture) publish() uint64 {
	f.t.Helper()
	ack, err := f.other.Publish(f.t.Context(), "follow.x", []byte("x"))
	if err != nil {
		f.t.Fatal(err)
	}
	f.last = ack.Sequence
	return ack.Sequence
}

// applied waits until the projection has applied every message published,
// each once and in order.
func (f *followFixture) applied(within time.Duration) {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(f.t.Context(), within)
	defer cancel()
	if err := f.rec.WaitFor(ctx, f.last); err != nil {
		f.t.Fatalf("the projection did not apply sequence %d within %v (applied %v): %v", f.last, within, f.rec.sequences(), err)
	}
	var want []uint64
	for s := uint64(1); s <= f.last; s++ {
		want = append(want, s)
	}
	if got := f.rec.sequences(); !slices.Equal(got, want) {
		f.t.Fatalf("applied %v, want %v", got, want)
	}
}

// consumer waits until the stream has exactly one consumer whose name is
// not old, and returns its name.
func (f *followFixture) consumer(old string) string {
	f.t.Helper()
	var name string
	deadline := time.Now().Add(10 * time.Second)
	for {
		var names []string
		for n := range f.st.ListConsumers(f.t.Context()).Info() {
			if n.Name != old {
				names = append(names, n.Name)
			}
		}
		if len(names) == 1 {
			name = names[0]
			return name
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("the follower's consumer: the stream has consumers %v besides %q", names, old)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestFollowMessageLostOnTheWay: a message of the follower's consumer
// delivered elsewhere (here to another client's pull request; on a
// cluster, to a connection moving) leaves a gap in the consumer's
// delivery sequence. The follower notices it at the next message and
// follows again from its position: every message is applied, once, in
// order. A follower that took each message as it came would skip the
// lost one for good.
func TestFollowMessageLostOnTheWay(t *testing.T) {
	// One message a pull request: the follower's next request comes
	// after the thief's.
	f := newFollowFixture(t, 1)
	f.publish()
	f.applied(5 * time.Second)
	name := f.consumer("")
	cons, err := f.other.Consumer(t.Context(), "FOLLOW", name)
	if err != nil {
		t.Fatal(err)
	}
	stolen := make(chan error, 1)
	go func() {
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(10*time.Second))
		if err != nil {
			stolen <- err
			return
		}
		var got []uint64
		for m := range batch.Messages() {
			md, _ := m.Metadata()
			got = append(got, md.Sequence.Stream)
		}
		if len(got) != 1 {
			stolen <- fmt.Errorf("the thief got %v, want one message (%v)", got, batch.Error())
			return
		}
		stolen <- nil
	}()
	// The thief's request waits at the consumer behind the follower's
	// (which takes message 2) before message 2 is published.
	waitPending(t, cons, 2)
	f.publish() // the follower's
	f.publish() // the thief's
	if err := <-stolen; err != nil {
		t.Fatalf("the thief: %v", err)
	}
	f.publish()
	f.applied(10 * time.Second)
}

// waitPending waits until n pull requests wait at cons.
func waitPending(t *testing.T, cons jetstream.Consumer, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		info, err := cons.Info(t.Context())
		if err == nil && info.NumWaiting >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d pull requests waiting at the consumer, want %d (%v)", info.NumWaiting, n, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestFollowConsumerDeleted: the follower's consumer deleted under it
// (an administrator, or its server gone), it makes another from its
// position and applies what comes next.
func TestFollowConsumerDeleted(t *testing.T) {
	f := newFollowFixture(t, 0)
	f.publish()
	f.applied(5 * time.Second)
	name := f.consumer("")
	if err := f.other.DeleteConsumer(t.Context(), "FOLLOW", name); err != nil {
		t.Fatal(err)
	}
	f.consumer(name)
	f.publish()
	f.applied(5 * time.Second)
}

// TestFollowConnectionMoved: the follower's connection reconnecting (to
// another server of a cluster, where a message sent meanwhile is lost
// and only the next one would show it), the follower makes a new
// consumer from its position.
func TestFollowConnectionMoved(t *testing.T) {
	f := newFollowFixture(t, 0)
	f.publish()
	f.applied(5 * time.Second)
	name := f.consumer("")
	if err := f.nc.ForceReconnect(); err != nil {
		t.Fatal(err)
	}
	f.consumer(name)
	f.publish()
	f.applied(5 * time.Second)
}
