package gateway

import (
	"context"
	"net"
	"syscall"
	"testing"
	"time"
)

// TestWorkersEnd: the workers a burst of connections started end once
// they have waited their time, though connections keep coming one at a
// time (the worker that went idle last takes each); Shutdown ends the
// rest.
func TestWorkersEnd(t *testing.T) {
	g := &Gateway{cfg: Config{IdleTimeout: time.Minute}, now: time.Now, conns: map[*conn]struct{}{},
		quit: make(chan struct{}), workerIdle: 300 * time.Millisecond}
	g.stopping, g.stop = context.WithCancel(context.Background())
	// give connects a client and hands the server's end to a worker; the
	// client is returned open.
	give := func() net.Conn {
		server, client := net.Pipe()
		c := &conn{nc: server, g: g, state: &ConnState{}}
		g.mu.Lock()
		g.conns[c] = struct{}{}
		g.give(c)
		g.mu.Unlock()
		return client
	}
	waitIdle := func(what string, ok func(int) bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !ok(g.idleWorkers()); time.Sleep(2 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d workers idle", what, g.idleWorkers())
			}
		}
	}

	// A burst: 20 connections open at once, then closed.
	var burst []net.Conn
	for range 20 {
		burst = append(burst, give())
	}
	for _, c := range burst {
		c.Close()
	}
	waitIdle("after the burst", func(n int) bool { return n == 20 })

	// Then one connection every 5 ms for 1.5 s: one worker serves them
	// all, and the other 19 end 300 ms after the burst.
	for range 300 {
		give().Close()
		time.Sleep(5 * time.Millisecond)
	}
	if n := g.idleWorkers(); n > 2 {
		t.Errorf("%d workers still wait after 1.5 s of one connection at a time, want at most 2", n)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() { g.Shutdown(ctx); close(done) }()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		t.Fatal("Shutdown did not end the waiting workers")
	}
	if n := g.idleWorkers(); n != 0 {
		t.Errorf("%d workers wait after Shutdown", n)
	}
}

// idleWorkers returns how many workers wait for a connection.
func (g *Gateway) idleWorkers() int {
	g.idleMu.Lock()
	defer g.idleMu.Unlock()
	return len(g.idle)
}

// TestListenNoKeepAlive checks that Listen's connections are accepted
// without TCP keep-alive (its socket options cost four system calls a
// connection; IdleTimeout bounds a connection whose client went away).
func TestListenNoKeepAlive(t *testing.T) {
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	raw, err := sc.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var on int
	var serr error
	if err := raw.Control(func(fd uintptr) { on, serr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_KEEPALIVE) }); err != nil || serr != nil {
		t.Fatal(err, serr)
	}
	if on != 0 {
		t.Errorf("SO_KEEPALIVE = %d on an accepted connection, want 0", on)
	}
}
