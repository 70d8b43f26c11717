package homenode

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/rvp-im/rvpd/rvp"
)

// callbackServer answers NOTIFYs as librvp does, recording their bodies
// in the order they came; with hang, it accepts and never answers.
type callbackServer struct {
	ln       net.Listener
	mu       sync.Mutex
	bodies   []string
	accepted atomic.Int64
	// open counts the connections being answered; peak is the most at
	// once.
	open, peak atomic.Int64
}

func newCallbackServer(t *testing.T, hang bool) *callbackServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &callbackServer{ln: ln}
	var conns sync.WaitGroup
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepted.Add(1)
			if n := s.open.Add(1); n > s.peak.Load() {
				s.peak.Store(n) // one accepting goroutine: no race between load and store
			}
			conns.Add(1)
			go func() {
				defer conns.Done()
				defer c.Close()
				if hang {
					io.Copy(io.Discard, c) // until the client gives up
					s.open.Add(-1)
					return
				}
				req, err := rvp.ReadRequest(bufio.NewReader(c), rvp.Limits{})
				// Counted out before the answer: the client's job ends after it.
				s.open.Add(-1)
				if err != nil {
					return
				}
				s.mu.Lock()
				s.bodies = append(s.bodies, string(req.Body))
				s.mu.Unlock()
				io.WriteString(c, "HTTP/1.1 200 Successful\r\n\r\n")
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); conns.Wait() })
	return s
}

func (s *callbackServer) url(path string) rvp.URL {
	u, _ := rvp.ParseURL("http://" + s.ln.Addr().String() + path)
	return u
}

func startPool(t *testing.T, workers, perKey, keyQueue int) *pool {
	t.Helper()
	var dropped atomic.Uint64
	p := newPool(&rvp.Client{DialTimeout: time.Second, Timeout: 5 * time.Second}, workers, perKey, keyQueue, 1000, slog.New(slog.DiscardHandler), &dropped, nil)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	p.start(ctx, &wg)
	t.Cleanup(func() { cancel(); wg.Wait() })
	return p
}

// submitAll submits n jobs, the i-th to key(i) at url(i) with i as its
// body, and returns what counts them done.
func submitAll(t *testing.T, p *pool, n int, key func(int) string, url func(int) rvp.URL) *sync.WaitGroup {
	t.Helper()
	var done sync.WaitGroup
	for i := range n {
		done.Add(1)
		j := job{key: key(i), out: rvp.Outbound{URL: url(i), Body: []byte(strconv.Itoa(i))},
			deadline: time.Now().Add(5 * time.Second), done: func(int, error) { done.Done() }}
		if !p.submit(j) {
			t.Fatal("queue full")
		}
	}
	return &done
}

// TestPoolOrderPerDestination: NOTIFYs to one callback arrive in the
// order they were submitted, though the pool has many workers.
func TestPoolOrderPerDestination(t *testing.T) {
	srv := newCallbackServer(t, false)
	p := startPool(t, 64, 8, 256)
	submitAll(t, p, 50, func(int) string { return "ann@example.test" }, func(int) rvp.URL { return srv.url("/cb") }).Wait()
	srv.mu.Lock()
	defer srv.mu.Unlock()
	for i, b := range srv.bodies {
		if b != strconv.Itoa(i) {
			t.Fatalf("NOTIFY %d arrived as %s: out of order (%v)", i, b, srv.bodies)
		}
	}
}

// TestPoolIsolatesKeys: a key whose callbacks hang holds perKey
// connections, no more; its queue bounds what waits; another key's
// NOTIFYs go through at once.
func TestPoolIsolatesKeys(t *testing.T) {
	pit, ok := newCallbackServer(t, true), newCallbackServer(t, false)
	p := startPool(t, 16, 3, 20)
	refused := 0
	for i := range 40 {
		j := job{key: "dora@example.test", out: rvp.Outbound{URL: pit.url("/cb" + strconv.Itoa(i%10))}, deadline: time.Now().Add(3 * time.Second)}
		if !p.submit(j) {
			refused++
		}
	}
	if refused != 40-20-3 && refused != 40-20 {
		t.Errorf("%d of 40 refused with a queue of 20", refused)
	}
	if !p.full("dora@example.test") || p.full("bob@example.test") {
		t.Error("full reports the wrong keys")
	}
	start := time.Now()
	got := make(chan error, 1)
	p.submit(job{key: "bob@example.test", out: rvp.Outbound{URL: ok.url("/bob")}, deadline: time.Now().Add(3 * time.Second),
		done: func(_ int, err error) { got <- err }})
	if err := <-got; err != nil || time.Since(start) > time.Second {
		t.Errorf("bob's NOTIFY: %v after %v", err, time.Since(start))
	}
	for deadline := time.Now().Add(2 * time.Second); pit.accepted.Load() < 3 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	if n := pit.accepted.Load(); n != 3 {
		t.Errorf("dora's hanging callbacks hold %d connections, want 3", n)
	}
}

// TestPoolWorkersBounded: a pool runs no more jobs at once than it has
// workers, and its workers end when there is nothing left.
func TestPoolWorkersBounded(t *testing.T) {
	srv := newCallbackServer(t, false)
	p := startPool(t, 4, 2, 256)
	submitAll(t, p, 200, func(i int) string { return "user" + strconv.Itoa(i%7) + "@example.test" },
		func(i int) rvp.URL { return srv.url("/cb" + strconv.Itoa(i%13)) }).Wait()
	if n := srv.accepted.Load(); n != 200 {
		t.Errorf("%d NOTIFYs reached the callback, want 200", n)
	}
	if n := srv.peak.Load(); n > 4 {
		t.Errorf("%d NOTIFYs at once with 4 workers", n)
	}
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		p.mu.Lock()
		running, queued, groups := p.running, p.queued, len(p.groups)
		p.mu.Unlock()
		if running == 0 && queued == 0 && groups == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("with nothing left to send: %d workers running, %d jobs queued, %d keys kept", running, queued, groups)
		}
	}
}

// TestPoolIdleWorkersEnd: workers kept waiting for more after a burst
// (the next burst is sent in full) end by themselves once there has been
// nothing to send for workerIdle, with the pool still running.
func TestPoolIdleWorkersEnd(t *testing.T) {
	srv := newCallbackServer(t, false)
	var dropped atomic.Uint64
	p := newPool(&rvp.Client{DialTimeout: time.Second, Timeout: 5 * time.Second}, 8, 8, 256, 1000, slog.New(slog.DiscardHandler), &dropped, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	p.start(ctx, &wg)
	key := func(i int) string { return "user" + strconv.Itoa(i) + "@example.test" }
	url := func(i int) rvp.URL { return srv.url("/cb" + strconv.Itoa(i)) }
	submitAll(t, p, 40, key, url).Wait()
	submitAll(t, p, 40, key, url).Wait()
	if n := srv.accepted.Load(); n != 80 {
		t.Fatalf("%d NOTIFYs reached the callback, want 80", n)
	}
	ended := make(chan struct{})
	go func() { wg.Wait(); close(ended) }()
	select {
	case <-ended:
	case <-time.After(workerIdle + 5*time.Second):
		t.Fatalf("workers still there %s after the last NOTIFY, with nothing to send", workerIdle+5*time.Second)
	}
}

// TestPoolGauges: the pool's gauges say how many NOTIFYs are under way
// and how many wait for a worker, and go back to zero when all are done.
func TestPoolGauges(t *testing.T) {
	pit := newCallbackServer(t, true)
	h := NewMetrics(prometheus.NewRegistry()).of("home1")
	var dropped atomic.Uint64
	p := newPool(&rvp.Client{DialTimeout: time.Second, Timeout: 5 * time.Second}, 2, 1, 256, 1000, slog.New(slog.DiscardHandler), &dropped, h)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	p.start(ctx, &wg)
	t.Cleanup(func() { cancel(); wg.Wait() })
	value := func(g prometheus.Gauge) float64 {
		var m dto.Metric
		if err := g.Write(&m); err != nil {
			t.Fatal(err)
		}
		return m.GetGauge().GetValue()
	}
	// Five NOTIFYs to callbacks that never answer, two workers: two under
	// way until their deadline, three waiting for them (and past their
	// own deadline by then: not tried).
	var done sync.WaitGroup
	deadline := time.Now().Add(500 * time.Millisecond)
	for i := range 5 {
		done.Add(1)
		j := job{key: "user" + strconv.Itoa(i) + "@example.test", out: rvp.Outbound{URL: pit.url("/cb" + strconv.Itoa(i))},
			deadline: deadline, done: func(int, error) { done.Done() }}
		if !p.submit(j) {
			t.Fatal("queue full")
		}
	}
	if u, w := value(h.underWay), value(h.waiting); u != 2 || w != 3 {
		t.Errorf("5 NOTIFYs, 2 workers: %v under way, %v waiting; want 2 and 3", u, w)
	}
	done.Wait() // each job's done runs before its worker is counted out
	for limit := time.Now().Add(2 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		u, w := value(h.underWay), value(h.waiting)
		if u == 0 && w == 0 {
			break
		}
		if time.Now().After(limit) {
			t.Fatalf("all done: %v under way, %v waiting; want 0 and 0", u, w)
		}
	}
}
