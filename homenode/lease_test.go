package homenode

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
	"github.com/rvp-im/rvpd/testcluster/natstest"
)

// holders runs Lease.Hold for several nodes of one home server and
// records who serves.
type holders struct {
	t       *testing.T
	ns      *server.Server
	serving sync.Map // holder → true while its serve runs
	took    sync.Map // holder → the takeover flag of its last serve
	seen    sync.Map // holder → its lease's PreviousHolderSeen at its last serve
	now     atomic.Int32
	most    atomic.Int32 // the most serving at once
	serves  atomic.Int32 // serves begun
}

func (h *holders) start(name string) (stop func(), nc *nats.Conn) {
	h.t.Helper()
	nc, err := nats.Connect("", nats.InProcessServer(h.ns))
	if err != nil {
		h.t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	kv, err := js.KeyValue(h.t.Context(), events.BucketOwners)
	if err != nil {
		h.t.Fatal(err)
	}
	l := &Lease{KV: kv, Home: "home1", Holder: name}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- l.Hold(ctx, func(ctx context.Context, takeover bool) error {
			if !l.Owned() {
				h.t.Errorf("%s serves and its lease says it is not owned", name)
			}
			h.took.Store(name, takeover)
			h.seen.Store(name, l.PreviousHolderSeen())
			h.serves.Add(1)
			if n := h.now.Add(1); n > h.most.Load() {
				h.most.Store(n)
			}
			h.serving.Store(name, true)
			<-ctx.Done()
			h.serving.Delete(name)
			h.now.Add(-1)
			return nil
		})
	}()
	stop = func() {
		cancel()
		if err := <-done; err != nil {
			h.t.Errorf("%s: Hold: %v", name, err)
		}
		if l.Owned() {
			h.t.Errorf("%s: its lease says it is owned after Hold returned", name)
		}
		nc.Close()
	}
	return stop, nc
}

func (h *holders) waitServing(name string, d time.Duration) {
	h.t.Helper()
	deadline := time.Now().Add(d)
	for {
		if _, ok := h.serving.Load(name); ok {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("%s does not serve after %v", name, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestLeaseHandover: one owner at a time; a clean stop hands over to the
// standby at once, a dead owner (its connection gone, nothing let go)
// when its lease lapses.
func TestLeaseHandover(t *testing.T) {
	ns := natstest.Start(t)
	_, js := natstest.Connect(t, ns)
	const ttl = time.Second
	if err := projections.EnsureStreams(t.Context(), js, projections.StreamOptions{LeaseTTL: ttl}); err != nil {
		t.Fatal(err)
	}
	h := &holders{t: t, ns: ns}

	stopA, _ := h.start("a")
	h.waitServing("a", 5*time.Second)
	stopB, bconn := h.start("b")
	// b is a standby: a keeps serving over several renewals.
	kv, _ := js.KeyValue(t.Context(), events.BucketOwners)
	for range 3 {
		rev := func() uint64 {
			e, err := kv.Get(t.Context(), events.OwnerKey("home1"))
			if err != nil || string(e.Value()) != "a" {
				t.Fatalf("lease: %v %v, want held by a", e, err)
			}
			return e.Revision()
		}
		r0 := rev()
		deadline := time.Now().Add(5 * time.Second)
		for rev() == r0 {
			if time.Now().After(deadline) {
				t.Fatal("a does not renew its lease")
			}
			time.Sleep(20 * time.Millisecond)
		}
		if _, ok := h.serving.Load("b"); ok {
			t.Fatal("the standby serves while a holds the lease")
		}
	}

	start := time.Now()
	stopA()
	h.waitServing("b", ttl) // well before the lease would have lapsed
	t.Logf("clean handover in %v", time.Since(start).Round(time.Millisecond))
	// b knows when a was last seen: as it let go.
	if seen, _ := h.seen.Load("b"); seen == nil || seen.(time.Time).Before(start.Add(-time.Second)) || seen.(time.Time).After(time.Now()) {
		t.Errorf("b's lease says a was last seen at %v; a let go at %v", seen, start)
	}
	if m := h.most.Load(); m != 1 {
		t.Errorf("%d nodes served at once during a clean handover", m)
	}

	// b dies: its connection goes, it lets nothing go. c takes over when
	// the lease lapses, and b, cut off, has stopped serving by then.
	stopC, _ := h.start("c")
	bconn.Close()
	start = time.Now()
	h.waitServing("c", 5*ttl)
	t.Logf("takeover from a dead owner in %v (lease %v)", time.Since(start).Round(time.Millisecond), ttl)
	if _, ok := h.serving.Load("b"); ok {
		t.Error("b, cut off from NATS, still serves after c took over")
	}
	stopB()
	stopC()
	if tk, _ := h.took.Load("c"); tk != true {
		t.Error("c, after a dead owner, was not told to take over (re-send presence)")
	}
	// c again, after letting go cleanly itself: nothing can be undelivered.
	stopC, _ = h.start("c")
	h.waitServing("c", 5*ttl)
	if tk, _ := h.took.Load("c"); tk != false {
		t.Error("c, back after letting go cleanly, was told to take over")
	}
	stopC()
}

// TestLeaseRenewalAnswerLost: a renewal whose answer was lost (the
// bucket's leader changing under it) has moved the revision on; the next
// renewal, refused for its stale revision, finds the lease still its own
// and goes on serving instead of stopping. Here the revision is moved by
// writing the owner's own value, as the lost renewal did.
func TestLeaseRenewalAnswerLost(t *testing.T) {
	ns := natstest.Start(t)
	_, js := natstest.Connect(t, ns)
	if err := projections.EnsureStreams(t.Context(), js, projections.StreamOptions{LeaseTTL: time.Second}); err != nil {
		t.Fatal(err)
	}
	h := &holders{t: t, ns: ns}
	stop, _ := h.start("a")
	defer stop()
	h.waitServing("a", 5*time.Second)
	kv, _ := js.KeyValue(t.Context(), events.BucketOwners)
	key := events.OwnerKey("home1")
	var stolen uint64
	for range 3 {
		rev, err := kv.Put(t.Context(), key, []byte("a"))
		if err != nil {
			t.Fatal(err)
		}
		stolen = rev
		// a renews past the revision it did not know of.
		deadline := time.Now().Add(5 * time.Second)
		for {
			e, err := kv.Get(t.Context(), key)
			if err == nil && e.Revision() > stolen && string(e.Value()) == "a" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("a did not renew after its revision moved: %v %v", e, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if n := h.serves.Load(); n != 1 {
		t.Errorf("a began serving %d times: it stopped after a renewal answer was lost", n)
	}
}

// TestLeases: the readers' view of the lease bucket (rvpctl status, the
// console): an owned lease names its node, one let go cleanly the node
// that let it go, a lapsed one is absent, and a cluster without the
// bucket has no leases and no error.
func TestLeases(t *testing.T) {
	ns := natstest.Start(t)
	_, js := natstest.Connect(t, ns)
	if ls, err := Leases(t.Context(), js); ls != nil || err != nil {
		t.Fatalf("leases without a bucket: %v %v, want nil and no error", ls, err)
	}
	if err := projections.EnsureStreams(t.Context(), js, projections.StreamOptions{LeaseTTL: time.Minute}); err != nil {
		t.Fatal(err)
	}
	kv, _ := js.KeyValue(t.Context(), events.BucketOwners)
	before := time.Now().Add(-time.Second)
	for home, v := range map[string]string{"home1": "a", "home.two": released + "b", "gone": "c"} {
		if _, err := kv.Put(t.Context(), events.OwnerKey(home), []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	if err := kv.Delete(t.Context(), events.OwnerKey("gone")); err != nil {
		t.Fatal(err)
	}
	ls, err := Leases(t.Context(), js)
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) != 2 || ls["home1"].Node != "a" || ls["home1"].LetGo != "" || ls["home.two"].Node != "" || ls["home.two"].LetGo != "b" {
		t.Errorf("leases: %+v, want home1 owned by a and home.two let go by b, nothing else", ls)
	}
	for home, l := range ls {
		if l.Renewed.Before(before) || l.Renewed.After(time.Now().Add(time.Second)) {
			t.Errorf("%s renewed at %v, want about now", home, l.Renewed)
		}
	}
}

// TestLeaseFencedStopWarns: a node whose serve stops because another node
// fenced the home server (ErrFenced) says so at Warn, as what happens
// after a pause or a cut, not at Error as a failure; any other failure
// stays an Error.
func TestLeaseFencedStopWarns(t *testing.T) {
	_, js := natstest.Connect(t, natstest.Start(t))
	if err := projections.EnsureStreams(t.Context(), js, projections.StreamOptions{LeaseTTL: time.Second}); err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(t.Context(), events.BucketOwners)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		err   error
		level string
	}{
		{fmt.Errorf("home home1: %w (node b, lease revision 9; this node's is 3)", ErrFenced), "level=WARN"},
		{errors.New("home home1: the disk is full"), "level=ERROR"},
	} {
		logs := &logBuffer{}
		l := &Lease{KV: kv, Home: "home1", Holder: "a", Logger: slog.New(slog.NewTextHandler(logs, nil))}
		ctx, cancel := context.WithCancel(context.Background())
		served := make(chan struct{}, 1)
		done := make(chan error, 1)
		go func() {
			done <- l.Hold(ctx, func(context.Context, bool) error {
				served <- struct{}{}
				return c.err
			})
		}()
		<-served
		until(t, 5*time.Second, "the stop not logged", func() bool { return logs.count("home node stopped") == 1 })
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if n := logs.count("home node stopped", c.level); n != 1 {
			t.Errorf("serve stopped with %q: %d lines at %s; log:\n%s", c.err, n, c.level, logs.tail(20))
		}
	}
}
