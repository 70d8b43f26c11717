package homenode

import (
	"bytes"
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
	"github.com/rvp-im/rvpd/testcluster/natstest"
)

// TestLeaseRenewalFailedAtOnceRetriedSoon: a renewal that fails at once
// (its connection moving to another server, as natsclient.ReachWatch
// moves one off a server cut off from its cluster: "nats: server is
// disconnected") is tried again soon, not a renewal period later. Cut
// off, a home node's lease lapses here while its renewals go unanswered;
// its connection moved, often as the lease lapses (TTL 10 s, the move 6
// to 10 s after the cut), the home server decided nothing until the next
// period's renewal, 3.3 s later (TestClusterHomeNodeServerPartitioned saw
// it so), the bucket keeping the lapsed key meanwhile only until it next
// expired keys.
func TestLeaseRenewalFailedAtOnceRetriedSoon(t *testing.T) {
	ns := natstest.Start(t, natstest.Listen())
	_, js := natstest.Connect(t, ns)
	const ttl = 3 * time.Second // renewed every second
	if err := projections.EnsureStreams(t.Context(), js, projections.StreamOptions{LeaseTTL: ttl}); err != nil {
		t.Fatal(err)
	}
	p := newHoldProxy(t, strings.TrimPrefix(ns.ClientURL(), "nats://"))
	nc, err := nats.Connect("nats://"+p.ln.Addr().String(), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	hjs, _ := jetstream.New(nc)
	hkv, err := hjs.KeyValue(t.Context(), events.BucketOwners)
	if err != nil {
		t.Fatal(err)
	}
	l := &Lease{KV: hkv, Home: "home1", Holder: "a"}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- l.Hold(ctx, func(ctx context.Context, _ bool) error { <-ctx.Done(); return nil })
	}()
	defer func() {
		cancel()
		<-done
	}()
	kv, _ := js.KeyValue(t.Context(), events.BucketOwners)
	rev := func() uint64 {
		e, err := kv.Get(t.Context(), events.OwnerKey("home1"))
		if err != nil {
			return 0
		}
		return e.Revision()
	}
	deadline := time.Now().Add(5 * time.Second)
	for rev() == 0 || !l.Owned() {
		if time.Now().After(deadline) {
			t.Fatal("a does not hold the lease after 5 s")
		}
		time.Sleep(10 * time.Millisecond)
	}

	// The next renewal is dropped on its way, and the connection moves
	// as it waits for its answer: it fails at once.
	p.hold()
	select {
	case <-p.kv:
	case <-time.After(3 * time.Second):
		t.Fatal("no renewal sent in 3 s")
	}
	before := rev()
	p.release()
	if err := nc.ForceReconnect(); err != nil {
		t.Fatal(err)
	}
	moved := time.Now()
	for rev() == before {
		if time.Since(moved) > ttl {
			t.Fatalf("the lease not renewed %v after a renewal failed at once", ttl)
		}
		time.Sleep(5 * time.Millisecond)
	}
	took := time.Since(moved)
	t.Logf("renewed again %v after the renewal that failed at once", took.Round(time.Millisecond))
	if retry := renewRetry(ttl/3, ttl); took > retry+400*time.Millisecond {
		t.Errorf("the lease renewed again %v after a renewal failed at once (its connection moving), want about %v, not the next period (%v)",
			took.Round(time.Millisecond), retry, ttl/3)
	}
}

// TestLeaseLostTakenBackSoon: a node whose renewals went unanswered past
// the TTL (its NATS server cut off) stops, its lease lost; once its
// connection has moved to a server that answers, it takes the lease back
// (no standby took it) as soon as a standby would look (a tenth of the
// TTL), not a renewal period later. Cut off in the worst phase (just
// before a renewal), the owner lost its lease 0.2 s before ReachWatch
// moved it, and home1 decided nothing for 3.4 s more
// (TestClusterHomeNodeServerPartitioned).
func TestLeaseLostTakenBackSoon(t *testing.T) {
	ns := natstest.Start(t, natstest.Listen())
	_, js := natstest.Connect(t, ns)
	const ttl = 3 * time.Second // renewed every second; a standby looks every 300ms
	if err := projections.EnsureStreams(t.Context(), js, projections.StreamOptions{LeaseTTL: ttl}); err != nil {
		t.Fatal(err)
	}
	p := newHoldProxy(t, strings.TrimPrefix(ns.ClientURL(), "nats://"))
	nc, err := nats.Connect("nats://"+p.ln.Addr().String(), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	hjs, _ := jetstream.New(nc)
	hkv, err := hjs.KeyValue(t.Context(), events.BucketOwners)
	if err != nil {
		t.Fatal(err)
	}
	l := &Lease{KV: hkv, Home: "home1", Holder: "a"}
	serving, stopped := make(chan time.Time, 10), make(chan time.Time, 10)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- l.Hold(ctx, func(ctx context.Context, _ bool) error {
			serving <- time.Now()
			<-ctx.Done()
			stopped <- time.Now()
			return nil
		})
	}()
	defer func() {
		cancel()
		<-done
	}()
	select {
	case <-serving:
	case <-time.After(5 * time.Second):
		t.Fatal("a does not serve after 5 s")
	}
	p.hold() // cut off: nothing a sends arrives
	var lost time.Time
	select {
	case lost = <-stopped:
	case <-time.After(3 * ttl):
		t.Fatalf("a still serves %v after it was cut off", 3*ttl)
	}
	// Moved to a server that answers.
	p.release()
	if err := nc.ForceReconnect(); err != nil {
		t.Fatal(err)
	}
	var again time.Time
	select {
	case again = <-serving:
	case <-time.After(3 * ttl):
		t.Fatalf("a does not serve again %v after its lease was lost and its connection moved", 3*ttl)
	}
	took := again.Sub(lost)
	t.Logf("serving again %v after its lease was lost", took.Round(time.Millisecond))
	if look := ttl / 10; took > look+400*time.Millisecond {
		t.Errorf("a served again %v after its lease was lost and its connection moved, want about %v (a standby's look), not a renewal period (%v)",
			took.Round(time.Millisecond), look, ttl/3)
	}
}

// holdProxy forwards TCP connections to a NATS server; while held, what
// clients send is dropped, and a publish to a KV bucket among it is
// signalled on kv.
type holdProxy struct {
	ln     net.Listener
	target string
	kv     chan struct{}

	mu   sync.Mutex
	held bool
	wg   sync.WaitGroup
}

func newHoldProxy(t *testing.T, target string) *holdProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &holdProxy{ln: ln, target: target, kv: make(chan struct{}, 1)}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(func() {
		ln.Close()
		p.wg.Wait()
	})
	return p
}

func (p *holdProxy) hold() {
	p.mu.Lock()
	p.held = true
	p.mu.Unlock()
}

func (p *holdProxy) release() {
	p.mu.Lock()
	p.held = false
	p.mu.Unlock()
}

func (p *holdProxy) serve() {
	defer p.wg.Done()
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		conns = append(conns, c, u)
		p.wg.Add(2)
		go func() {
			defer p.wg.Done()
			buf := make([]byte, 32<<10)
			for {
				n, err := c.Read(buf)
				if n > 0 {
					p.mu.Lock()
					held := p.held
					p.mu.Unlock()
					if held {
						if bytes.Contains(buf[:n], []byte("$KV.")) {
							select {
							case p.kv <- struct{}{}:
							default:
							}
						}
					} else if _, werr := u.Write(buf[:n]); werr != nil {
						break
					}
				}
				if err != nil {
					break
				}
			}
			c.Close()
			u.Close()
		}()
		go func() {
			defer p.wg.Done()
			buf := make([]byte, 32<<10)
			for {
				n, err := u.Read(buf)
				if n > 0 {
					if _, werr := c.Write(buf[:n]); werr != nil {
						break
					}
				}
				if err != nil {
					break
				}
			}
			c.Close()
			u.Close()
		}()
	}
}
