package gateway

import (
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestConnectionsRefusedLoggedSparingly: a client stuck reconnecting to a
// full gateway (or one holding its connections) has every connection
// refused, counted in rvpd_gateway_refused_total, and logged at most
// once per refusedLogEvery with how many were refused since: before, one
// Warn line for each, thousands a second under the very flood an
// operator looks at the log for.
func TestConnectionsRefusedLoggedSparingly(t *testing.T) {
	e := newEdge(t, NoAuth{})
	e.g.cfg.MaxConns, e.g.cfg.MaxConnsPerAddress = 2, 1
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- e.g.Serve(ln) }()
	t.Cleanup(func() { e.g.Shutdown(t.Context()); <-served })
	held, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	waitConns(t, e.g, 1) // the first connection taken
	e.log.take()
	const tries = 200
	for range tries {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		b := make([]byte, 512)
		n, _ := c.Read(b)
		if !strings.Contains(string(b[:n]), "503") {
			t.Fatalf("a connection past the bound answered %q, want 503", b[:n])
		}
		c.Close()
	}
	if got := e.g.Stats().ConnectionsRefused; got != tries {
		t.Errorf("%d connections refused counted, want %d", got, tries)
	}
	var lines int
	for _, rec := range e.log.take() {
		if strings.HasPrefix(rec.Message, "connection refused") {
			lines++
		}
	}
	if lines > 2 {
		t.Errorf("%d connections refused in a moment logged %d lines, want one", tries, lines)
	}
}

// TestCrowdedAddressesEachLogged: the line an operator reads to learn
// which address is crowded ("raise -gateway.max-conns-per-address for a
// large NAT") must not be hidden by another address's flood: a client
// stuck reconnecting from one address, refused a thousand times a
// second, left a second crowded address unlogged, for as long as the
// flood lasted.
func TestCrowdedAddressesEachLogged(t *testing.T) {
	e := newEdge(t, NoAuth{})
	e.g.cfg.MaxConns, e.g.cfg.MaxConnsPerAddress = 10, 1
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- e.g.Serve(ln) }()
	t.Cleanup(func() { e.g.Shutdown(t.Context()); <-served })
	dial := func(from string) net.Conn {
		t.Helper()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
		c, err := d.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Skipf("dial from %s: %v (no loopback address but 127.0.0.1?)", from, err)
		}
		return c
	}
	refused := func(from string) {
		t.Helper()
		c := dial(from)
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		b := make([]byte, 512)
		n, _ := c.Read(b)
		if !strings.Contains(string(b[:n]), "503") {
			t.Fatalf("a connection from %s past its bound answered %q, want 503", from, b[:n])
		}
	}
	for _, from := range []string{"127.0.0.1", "127.0.0.2"} {
		held := dial(from)
		defer held.Close()
	}
	waitConns(t, e.g, 2) // the first connections taken
	e.log.take()
	for range 50 {
		refused("127.0.0.1") // the flood
	}
	refused("127.0.0.2") // the office behind a NAT
	logged := map[string]int{}
	for _, rec := range e.log.take() {
		if !strings.HasPrefix(rec.Message, "connection refused: too many connections from one address") {
			continue
		}
		rec.Attrs(func(a slog.Attr) bool {
			if a.Key == "client" {
				host, _, _ := net.SplitHostPort(a.Value.String())
				logged[host]++
			}
			return true
		})
	}
	if logged["127.0.0.2"] != 1 {
		t.Errorf("lines naming 127.0.0.2: %d, want 1 (lines by client: %v)", logged["127.0.0.2"], logged)
	}
	if logged["127.0.0.1"] > 2 {
		t.Errorf("the flood from 127.0.0.1 logged %d lines, want one", logged["127.0.0.1"])
	}
}

// waitConns polls, with a deadline, until g serves n connections.
func waitConns(t *testing.T, g *Gateway, n int) {
	t.Helper()
	for limit := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		g.mu.Lock()
		got := len(g.conns)
		g.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(limit) {
			t.Fatalf("%d connections taken, want %d", got, n)
		}
	}
}

// TestRefusedBurstEndLogged: the refusals after a burst's first line
// are told once the burst ends. Before, they were carried into the next
// line, which came only with the next refusal: an operator paged in the
// night read one refusal in the log, whether 200 followed or none, and
// not that they stopped; those of a burst the gateway's stop ended were
// never logged. Each kind (by address, in all) gets a closing line with
// how many were not logged, once nothing was refused for
// refusedLogEvery, and at the stop.
func TestRefusedBurstEndLogged(t *testing.T) {
	e := newEdge(t, NoAuth{})
	e.g.cfg.MaxConns, e.g.cfg.MaxConnsPerAddress = 2, 1
	// The gateway's clock, moved on by the test past refusedLogEvery.
	var skew atomic.Int64
	e.g.now = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	e.g.refusedLook = 10 * time.Millisecond
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- e.g.Serve(ln) }()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			e.g.Shutdown(t.Context())
			<-served
		}
	}
	t.Cleanup(stop)
	held, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	waitConns(t, e.g, 1)
	e.log.take()
	refuse := func(n int) {
		t.Helper()
		for range n {
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			b := make([]byte, 512)
			k, _ := c.Read(b)
			c.Close()
			if !strings.Contains(string(b[:k]), "503") {
				t.Fatalf("a connection past the bound answered %q, want 503", b[:k])
			}
		}
	}
	// closing waits up to within for a burst's closing line, and returns
	// its refused_unlogged and client.
	var seen []slog.Record
	closing := func(within time.Duration) (int, string, bool) {
		t.Helper()
		for deadline := time.Now().Add(within); ; time.Sleep(5 * time.Millisecond) {
			seen = append(seen, e.log.take()...)
			for i, rec := range seen {
				if !strings.Contains(rec.Message, "the burst ended") {
					continue
				}
				seen = append(seen[:i:i], seen[i+1:]...)
				n, client := -1, ""
				rec.Attrs(func(a slog.Attr) bool {
					switch a.Key {
					case "refused_unlogged":
						n = int(a.Value.Int64())
					case "client":
						client = a.Value.String()
					}
					return true
				})
				return n, client, true
			}
			if time.Now().After(deadline) {
				return 0, "", false
			}
		}
	}

	refuse(50) // a burst from 127.0.0.1: its first refusal logged, 49 not
	if n, _, ok := closing(50 * time.Millisecond); ok {
		t.Fatalf("a burst not yet over told ended, with %d refusals", n)
	}
	skew.Store(int64(refusedLogEvery)) // nothing refused for refusedLogEvery
	n, client, ok := closing(5 * time.Second)
	if !ok || n != 49 || client != "127.0.0.1" {
		t.Fatalf("the burst's end: line %v, refused_unlogged %d, client %q; want a line telling 49 from 127.0.0.1", ok, n, client)
	}
	if n, _, ok := closing(50 * time.Millisecond); ok {
		t.Errorf("the burst's end told again, with %d", n)
	}

	refuse(5) // a second burst, logged at once, and ended by the stop
	stop()
	n, client, ok = closing(0)
	if !ok || n != 4 || client != "127.0.0.1" {
		t.Errorf("the burst the stop ended: line %v, refused_unlogged %d, client %q; want a line telling 4 from 127.0.0.1", ok, n, client)
	}
}

// TestRefusedFloodNotEnded: a flood that goes on past a line's
// refusedLogEvery is not told ended between its refusals (ended looked
// at the last line's age alone, and told a flood refused every 0.1 s
// ended at each 10 s), only once nothing was refused for
// refusedLogEvery.
func TestRefusedFloodNotEnded(t *testing.T) {
	t0 := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
	var s sparseLog
	if ok, _ := s.allow(t0); !ok {
		t.Fatal("the first refusal not logged")
	}
	at := t0
	for range 99 {
		at = at.Add(100 * time.Millisecond)
		if ok, _ := s.allow(at); ok {
			t.Fatalf("a refusal at %s logged, within %s of the first line", at.Sub(t0), refusedLogEvery)
		}
	}
	// 10.0 s after the line, 0.1 s after the last refusal: still going.
	if n := s.ended(t0.Add(refusedLogEvery)); n != 0 {
		t.Errorf("the flood told ended with %d refused 0.1 s before", n)
	}
	if n := s.ended(at.Add(refusedLogEvery)); n != 99 {
		t.Errorf("after %s without a refusal, %d told ended, want 99", refusedLogEvery, n)
	}
}
