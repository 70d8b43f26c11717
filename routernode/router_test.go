package routernode

import (
	"bufio"
	"context"
	"io"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/directory"
	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
	"github.com/rvp-im/rvpd/rvp"
	"github.com/rvp-im/rvpd/testcluster/natstest"
)

// TestSlowForwardNotSentTwice: a lookup forwarded to another
// organisation whose router takes longer than the lookup's AckWait to
// answer (well inside the lookup's deadline: a DeepOr message there waits
// for its recipient's clients) is sent there once. A router that leaves
// the lookup unacknowledged meanwhile has JetStream hand it out again,
// and the request — a message — reaches the other organisation twice.
func TestSlowForwardNotSentTwice(t *testing.T) {
	f := newFederation(t, 64)
	f.lookup("lk1")
	f.answered("lk1")
	f.handedOutOnce(1)
	if n := f.received.Load(); n != 1 {
		t.Errorf("the other organisation received the request %d times, want once", n)
	}
}

// TestQueuedLookupNotSentTwice: lookups a router has taken and that wait
// for one of its workers (all busy with forwards to a slow organisation)
// are not handed out again meanwhile: each request reaches the other
// organisation once.
func TestQueuedLookupNotSentTwice(t *testing.T) {
	f := newFederation(t, 1)
	for _, id := range []string{"lk1", "lk2", "lk3"} {
		f.lookup(id)
	}
	for _, id := range []string{"lk1", "lk2", "lk3"} {
		f.answered(id)
	}
	f.handedOutOnce(3)
	if n := f.received.Load(); n != 3 {
		t.Errorf("the other organisation received %d requests for 3 lookups, want 3", n)
	}
}

// federation is a router of example.test with one other organisation,
// im.other.test, whose router answers each request after slow.
type federation struct {
	t        *testing.T
	js       jetstream.JetStream
	received atomic.Int32
	replies  chan *events.Reply
	got      map[string]*events.Reply
}

const slow = 2500 * time.Millisecond

func newFederation(t *testing.T, workers int) *federation {
	f := &federation{t: t, replies: make(chan *events.Reply, 16), got: map[string]*events.Reply{}}
	nc, js, dir := federatingDirectory(t)
	f.js = js

	// The other organisation's router: answers each request after slow.
	peer, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { peer.Close() })
	go func() {
		for {
			c, err := peer.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				if _, err := rvp.ReadRequest(bufio.NewReader(c), rvp.Limits{}); err != nil {
					return
				}
				f.received.Add(1)
				time.Sleep(slow)
				io.WriteString(c, "HTTP/1.1 200 Successful\r\nContent-Length: 0\r\n\r\n")
			}()
		}
	}()

	rt, err := New(Config{ID: "r1", JetStream: js, Conn: nc, Directory: dir, AckWait: time.Second, Workers: workers,
		Client: &rvp.Client{DialTimeout: time.Second, Timeout: 10 * time.Second},
		Peers:  StaticPeers{"im.other.test": peer.Addr().String()}})
	if err != nil {
		t.Fatal(err)
	}
	rctx, rstop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rt.Run(rctx) }()
	t.Cleanup(func() {
		rstop()
		if err := <-done; err != nil {
			t.Errorf("router: %v", err)
		}
	})

	sub, err := nc.Subscribe(events.ReplyFilter("gw"), func(m *nats.Msg) {
		if ev, err := events.Decode(m.Header.Get(events.HeaderType), m.Data); err == nil {
			f.replies <- ev.(*events.Reply)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Unsubscribe() })
	return f
}

// lookup sends a message to bob@im.other.test as a gateway's lookup.
func (f *federation) lookup(id string) {
	f.t.Helper()
	now := time.Now().UTC()
	lk := &events.Lookup{ID: id, At: now, Deadline: now.Add(15 * time.Second), Gateway: "gw", Client: "192.0.2.1",
		Method: "NOTIFY", Host: "im.other.test", Alias: "bob", Path: "/instmsg/aliases/bob", HopCount: 1,
		Header: map[string]string{rvp.HdrAckType: "DeepOr"},
		Body:   []byte(`<r:notification xmlns:r="http://schemas.microsoft.com/rvp/"><r:message/></r:notification>`)}
	data, err := events.Encode(lk)
	if err != nil {
		f.t.Fatal(err)
	}
	msg := nats.NewMsg(events.LookupSubject(""))
	msg.Header.Set(events.HeaderType, lk.Type())
	msg.Header.Set(events.HeaderReply, events.ReplySubject("gw", lk.ID))
	msg.Data = data
	if _, err := f.js.PublishMsg(f.t.Context(), msg, jetstream.WithMsgID(lk.ID)); err != nil {
		f.t.Fatal(err)
	}
}

// answered waits for the answer to lookup id, a 200.
func (f *federation) answered(id string) {
	f.t.Helper()
	timeout := time.After(15 * time.Second)
	for f.got[id] == nil {
		select {
		case r := <-f.replies:
			f.got[r.ID] = r
		case <-timeout:
			f.t.Fatalf("lookup %s not answered", id)
		}
	}
	if r := f.got[id]; r.Status != rvp.StatusOK {
		f.t.Errorf("lookup %s: answer %d (%s), want 200", id, r.Status, r.Error)
	}
}

// handedOutOnce waits until the routers' consumer has every lookup
// acknowledged (none can be handed out again after that), then checks
// that JetStream handed out each of the n lookups once: a lookup handed
// out again would have been forwarded again, and that is what the
// router must prevent. (Waiting a while for a second forward that should
// not come said the same, slower and less surely.)
func (f *federation) handedOutOnce(n uint64) {
	f.t.Helper()
	cons, err := f.js.Consumer(f.t.Context(), events.StreamLookups, ConsumerName)
	if err != nil {
		f.t.Fatal(err)
	}
	var info *jetstream.ConsumerInfo
	for deadline := time.Now().Add(10 * time.Second); ; {
		if info, err = cons.Info(f.t.Context()); err != nil {
			f.t.Fatal(err)
		}
		if info.NumAckPending == 0 && info.NumPending == 0 {
			break
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("lookups still unacknowledged: %d pending acknowledgement, %d not yet handed out", info.NumAckPending, info.NumPending)
		}
		time.Sleep(10 * time.Millisecond) // polling the consumer, with a deadline
	}
	if info.Delivered.Consumer != n || info.NumRedelivered != 0 {
		f.t.Errorf("lookups handed out by JetStream: %d times, want %d (each once); redelivered: %d", info.Delivered.Consumer, n, info.NumRedelivered)
	}
}

// federatingDirectory starts an in-process JetStream with the streams,
// and a directory projection following them that holds IM domain
// example.test (im.example.test) of an organisation that federates, and
// whatever more adds (before the projection is waited for).
func federatingDirectory(t *testing.T, more ...func(context.Context, *directory.Admin) error) (*nats.Conn, jetstream.JetStream, *projections.Directory) {
	t.Helper()
	nc, js := natstest.Connect(t, natstest.Start(t))
	ctx := t.Context()
	if err := projections.EnsureStreams(ctx, js, projections.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	db, err := projections.Open(filepath.Join(t.TempDir(), "pebble"), projections.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	dir, err := projections.OpenDirectory(db)
	if err != nil {
		t.Fatal(err)
	}
	fctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		projections.Follow(fctx, js, projections.FollowConfig{Stream: events.StreamDirectory, Filter: events.DirectoryFilter}, dir)
	})
	t.Cleanup(func() { cancel(); wg.Wait() })
	admin := &directory.Admin{JetStream: js, Directory: dir, Actor: "test"}
	if err := admin.CreateDomain(ctx, directory.DomainSpec{Domain: "example.test", IMHost: "im.example.test"}); err != nil {
		t.Fatal(err)
	}
	if err := admin.SetInternetCapable(ctx, true); err != nil {
		t.Fatal(err)
	}
	for _, add := range more {
		if err := add(ctx, admin); err != nil {
			t.Fatal(err)
		}
	}
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
	defer wcancel()
	if st, err := js.Stream(wctx, events.StreamDirectory); err != nil {
		t.Fatal(err)
	} else if err := dir.WaitFor(wctx, st.CachedInfo().State.LastSeq); err != nil {
		t.Fatal(err)
	}
	return nc, js, dir
}
