package homenode

import (
	"bytes"
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
	"github.com/rvp-im/rvpd/testcluster/natstest"
)

// gate is a TCP proxy to a NATS server whose two directions a test can
// hold: held, what is read is not forwarded until let go (a client's
// requests reach the server, their answers do not; or nothing passes).
// cut closes the connections it carries, as the server's death does: what
// a held direction read is lost, and the client reconnects through it;
// cutAt does so as soon as the client sends what holds a given text,
// which is lost.
type gate struct {
	ln       net.Listener
	up, down sync.Mutex   // held: client→server, server→client stopped
	upWrites atomic.Int64 // writes forwarded client→server
	trip     atomic.Pointer[[]byte]

	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func newGate(t *testing.T, target string) *gate {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &gate{ln: ln, conns: map[net.Conn]struct{}{}}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			g.mu.Lock()
			g.conns[c], g.conns[s] = struct{}{}, struct{}{}
			g.mu.Unlock()
			go g.pipe(s, c, &g.up, &g.upWrites)
			go g.pipe(c, s, &g.down, nil)
		}
	}()
	return g
}

// cutAt has the gate cut its connections when the client next sends text,
// before it reaches the server.
func (g *gate) cutAt(text string) {
	b := []byte(text)
	g.trip.Store(&b)
}

// cut closes every connection the gate carries.
func (g *gate) cut() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for c := range g.conns {
		c.Close()
		delete(g.conns, c)
	}
}

func (g *gate) pipe(dst, src net.Conn, hold *sync.Mutex, writes *atomic.Int64) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if trip := g.trip.Load(); n > 0 && hold == &g.up && trip != nil && bytes.Contains(buf[:n], *trip) && g.trip.CompareAndSwap(trip, nil) {
			g.cut()
			return
		}
		if n > 0 {
			hold.Lock()
			hold.Unlock()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
			if writes != nil {
				writes.Add(1)
			}
		}
		if err != nil {
			return
		}
	}
}

// TestLeaseRenewalAnswerLostCountsFromTheRenewalStored: a renewal is
// stored but its answer is lost; the next renewal, refused for its stale
// revision, finds the lease still the owner's (stillOurs). The lease in
// the bucket then runs from the renewal stored, not from the one that
// found it: should the owner be cut off from NATS right after, its lease
// lapses in the bucket and a standby takes it at the TTL after the
// renewal stored, and the owner must not count itself owner (Owned)
// past then.
func TestLeaseRenewalAnswerLostCountsFromTheRenewalStored(t *testing.T) {
	ns := natstest.Start(t, natstest.Listen())
	_, js := natstest.Connect(t, ns)
	const ttl = 3 * time.Second
	if err := projections.EnsureStreams(t.Context(), js, projections.StreamOptions{LeaseTTL: ttl}); err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(t.Context(), events.BucketOwners)
	if err != nil {
		t.Fatal(err)
	}
	key := events.OwnerKey("home1")

	g := newGate(t, ns.Addr().String())
	anc, err := nats.Connect("nats://"+g.ln.Addr().String(), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	defer anc.Close()
	ajs, _ := jetstream.New(anc)
	akv, err := ajs.KeyValue(t.Context(), events.BucketOwners)
	if err != nil {
		t.Fatal(err)
	}
	a := &Lease{KV: akv, Home: "home1", Holder: "a"}
	b := &Lease{KV: kv, Home: "home1", Holder: "b"}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	aServes := make(chan struct{}, 1)
	wg.Go(func() {
		a.Hold(ctx, func(ctx context.Context, _ bool) error {
			aServes <- struct{}{}
			<-ctx.Done()
			return nil
		})
	})
	select {
	case <-aServes:
	case <-time.After(10 * time.Second):
		t.Fatal("a does not serve")
	}
	type served struct {
		at     time.Time
		aOwned bool
	}
	bServes := make(chan served, 1)
	wg.Go(func() {
		b.Hold(ctx, func(ctx context.Context, _ bool) error {
			bServes <- served{time.Now(), a.Owned()}
			<-ctx.Done()
			return nil
		})
	})

	rev := func() uint64 {
		e, err := kv.Get(t.Context(), key)
		if err != nil {
			t.Fatal(err)
		}
		return e.Revision()
	}
	// until is the end of a's lease as a counts it.
	until := func() time.Time {
		a.mu.Lock()
		defer a.mu.Unlock()
		return a.until
	}
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(2 * ttl); !ok(); {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within %v", what, 2*ttl)
			}
			time.Sleep(5 * time.Millisecond) // polling, with a deadline
		}
	}
	waitRenewal := func(from uint64) time.Time {
		t.Helper()
		waitFor("a renews", func() bool { return rev() != from })
		return time.Now()
	}
	waitRenewal(rev())
	// a has had the answer of a renewal since (its lease counted anew),
	// so that no answer is on its way as the answers are held.
	answered := until()
	waitFor("a's renewal answered", func() bool { return !until().Equal(answered) })
	// The next renewal is stored; its answer does not come back in time.
	g.down.Lock()
	stored := waitRenewal(rev())
	was, sent := until(), g.upWrites.Load()
	// a's renewal times out, and the next is sent (nothing else goes up
	// while the answers are held: no answer asks for one).
	waitFor("a's next renewal sent", func() bool { return g.upWrites.Load() > sent })
	g.down.Unlock()
	// It is refused for its stale revision and finds the lease still a's:
	// a counts its lease anew.
	waitFor("a's lease counted anew", func() bool { return !until().Equal(was) })
	// a is cut off from NATS: nothing more is renewed.
	g.up.Lock()
	g.down.Lock()
	defer g.up.Unlock()
	defer g.down.Unlock()
	select {
	case s := <-bServes:
		t.Logf("b serves %v after a's last renewal stored", s.at.Sub(stored).Round(time.Millisecond))
		if s.aOwned {
			t.Errorf("b serves %v after a's last renewal was stored (lease %v), and a's lease says a owns the home server still",
				s.at.Sub(stored).Round(time.Millisecond), ttl)
		}
	case <-time.After(3 * ttl):
		t.Fatal("b does not take over the lapsed lease")
	}
}
