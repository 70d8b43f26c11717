package gateway

import (
	"net"
	"strings"
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
	for limit := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		e.g.mu.Lock()
		n := len(e.g.conns)
		e.g.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(limit) {
			t.Fatal("the first connection not taken")
		}
	}
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
