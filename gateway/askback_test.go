package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rvp-im/rvpd/events"
)

// TestAskWaitingBounded: after a reconnection the gateway asks the home
// nodes for the answers of thousands of requests waiting, a bounded
// number at a time: the answers a node has are handed to their requests;
// a node that does not answer (home2: silent; home3: none serves it) is
// asked once per ask in flight, not once per request, and costs the sweep
// one ask's timeout, not one per request; one line is logged.
func TestAskWaitingBounded(t *testing.T) {
	e := newEdge(t, NoAuth{})
	g := e.g
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		g.Shutdown(ctx)
	})
	nc := g.cfg.Conn
	var askedHome1, askedHome2 atomic.Int64
	sub1, err := nc.Subscribe(events.AnswerSubject("home1"), func(m *nats.Msg) {
		askedHome1.Add(1)
		data, _ := events.Encode(&events.Reply{ID: string(m.Data), Status: 200})
		resp := nats.NewMsg(m.Reply)
		resp.Header.Set(events.HeaderType, events.TypeReply)
		resp.Data = data
		m.RespondMsg(resp)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub1.Unsubscribe()
	sub2, err := nc.Subscribe(events.AnswerSubject("home2"), func(*nats.Msg) { askedHome2.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	defer sub2.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	const n = 3000
	chs := map[string]chan *events.Reply{}
	g.waitMu.Lock()
	for i := range n {
		for _, home := range []string{"home1", "home2", "home3"} {
			id := fmt.Sprintf("%s-%d", home, i)
			ch := make(chan *events.Reply, 1)
			g.waiting[id] = waiter{ch: ch, home: home}
			if home == "home1" {
				chs[id] = ch
			}
		}
		g.waiting[fmt.Sprintf("lookup-%d", i)] = waiter{ch: make(chan *events.Reply, 1)} // not asked
	}
	g.waitMu.Unlock()
	e.log.take()

	start := time.Now()
	g.askWaiting(t.Context())
	took := time.Since(start)
	for id, ch := range chs {
		select {
		case r := <-ch:
			if r.ID != id {
				t.Fatalf("request %s handed the answer of %s", id, r.ID)
			}
		default:
			t.Fatalf("request %s (home1) not handed its answer", id)
		}
	}
	t.Logf("%d requests waiting on each of 3 home servers: swept in %v; home1 asked %d times, home2 (silent) %d",
		n, took.Round(time.Millisecond), askedHome1.Load(), askedHome2.Load())
	if got := askedHome1.Load(); got != n {
		t.Errorf("home1 asked %d times, want %d", got, n)
	}
	if askBackWorkers > 64 {
		t.Errorf("askBackWorkers %d: a reconnection's asks in flight at once should be a few, not one per request", askBackWorkers)
	}
	if got := askedHome2.Load(); got > askBackWorkers {
		t.Errorf("home2, silent, asked %d times; want at most %d (the asks in flight when its first went unanswered)", got, askBackWorkers)
	}
	// A silent node costing each request its timeout would take
	// n/askBackWorkers timeouts (187 s); one timeout and the asks of
	// home1 take about 1.2 s alone, and up to 3.8 s under -race on a
	// machine busy with other tests (CI failed once at +2 s so).
	if limit := askTimeout + 8*time.Second; took > limit {
		t.Errorf("the sweep took %v, want at most %v; a silent node should cost one ask's timeout (%v), not one per request (%v)",
			took, limit, askTimeout, time.Duration(n/askBackWorkers)*askTimeout)
	}
	if g.answersAgain.reconnected.Load() != n {
		t.Errorf("answers given again on reconnection counted %d, want %d", g.answersAgain.reconnected.Load(), n)
	}
	recs := e.log.take()
	if len(recs) != 1 {
		t.Fatalf("%d lines logged, want 1", len(recs))
	}
	attrs := map[string]string{}
	recs[0].Attrs(func(a slog.Attr) bool { attrs[a.Key] = a.Value.String(); return true })
	t.Logf("%s %v", recs[0].Message, attrs)
	if attrs["given_again"] != fmt.Sprint(n) || attrs["waiting"] != fmt.Sprint(3*n) || !strings.HasPrefix(attrs["homes_not_answering"], "home2 (") || !strings.Contains(attrs["homes_not_answering"], ", home3 (") {
		t.Errorf("logged %v; want %d waiting, %d given again, home2 and home3 not answering", attrs, 3*n, n)
	}
	g.waitMu.Lock()
	left := len(g.waiting)
	g.waitMu.Unlock()
	if left != 3*n {
		t.Errorf("%d requests still waiting, want %d (home2's, home3's, the lookups)", left, 3*n)
	}
}

// TestAskBackShutdownMidSweep: the NATS connection coming back (a real
// reconnection) starts a sweep; a Shutdown while its asks wait on a
// silent home node ends them at once, and the gateway's goroutine with
// them, rather than after each ask's timeout.
func TestAskBackShutdownMidSweep(t *testing.T) {
	e := newEdge(t, NoAuth{})
	g := e.g
	nc := g.cfg.Conn
	var asked atomic.Int64
	sub, err := nc.Subscribe(events.AnswerSubject("home2"), func(*nats.Msg) { asked.Add(1) }) // silent
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	g.waitMu.Lock()
	for i := range 100 {
		g.waiting[fmt.Sprintf("home2-%d", i)] = waiter{ch: make(chan *events.Reply, 1), home: "home2"}
	}
	g.waitMu.Unlock()
	if err := nc.ForceReconnect(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for asked.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no sweep after the connection came back")
		}
		time.Sleep(10 * time.Millisecond) // polling, with a deadline
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	g.Shutdown(ctx)
	if took := time.Since(start); took > askTimeout/2 {
		t.Errorf("Shutdown during a sweep took %v; its asks should end with it, not after their timeout (%v)", took, askTimeout)
	}
	select {
	case <-g.backDone:
	default:
		t.Error("the sweep's goroutine still runs after Shutdown")
	}
}
