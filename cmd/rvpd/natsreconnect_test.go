package main

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rvp-im/rvpd/cmd/rvpd/natsclient"
	"github.com/rvp-im/rvpd/testcluster"
	"github.com/rvp-im/rvpd/testcluster/natstest"
)

// resettingProxy relays TCP connections to a NATS server at backend
// until reset is set; then it answers each new connection as a NATS
// server would, with an INFO, reads the client's CONNECT and PING, and
// resets the connection: the client's reading of the PONG fails with
// "read tcp 127.0.0.1:EPHEMERAL->PROXY: read: connection reset by peer",
// as when servers that verify their clients close the connection after
// a TLS 1.3 handshake. resets counts the connections reset.
type resettingProxy struct {
	ln      net.Listener
	backend string
	reset   atomic.Bool
	resets  atomic.Int64
	wg      sync.WaitGroup
	mu      sync.Mutex
	conns   []net.Conn
}

func startResettingProxy(t *testing.T, backend string) *resettingProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &resettingProxy{ln: ln, backend: backend}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				p.serve(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *resettingProxy) track(c net.Conn) {
	p.mu.Lock()
	p.conns = append(p.conns, c)
	p.mu.Unlock()
}

func (p *resettingProxy) serve(c net.Conn) {
	p.track(c)
	if p.reset.Load() {
		defer c.Close()
		fmt.Fprintf(c, "INFO {\"server_id\":\"proxy\",\"version\":\"2.11.0\",\"proto\":1,\"max_payload\":1048576,\"headers\":true}\r\n")
		r := bufio.NewReader(c)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			if strings.HasPrefix(line, "PING") {
				break
			}
		}
		c.(*net.TCPConn).SetLinger(0) // closed with a reset
		p.resets.Add(1)
		return
	}
	b, err := net.Dial("tcp", p.backend)
	if err != nil {
		c.Close()
		return
	}
	p.track(b)
	done := make(chan struct{})
	go func() {
		defer close(done)
		io.Copy(b, c)
		b.Close()
	}()
	io.Copy(c, b)
	c.Close()
	<-done
}

// TestNATSReconnectFailureLoggedOnce: a failed reconnection is logged
// once for each reason until the connection is back. A connection reset
// after the client's CONNECT (servers that refuse the client's
// certificate after a TLS 1.3 handshake do that, in some of the
// attempts) reaches the ErrorHandler as a *net.OpError naming the
// client's ephemeral port: each attempt was a reason of its own, logged
// again every second, and kept in the reasons logged until the
// connection came back.
func TestNATSReconnectFailureLoggedOnce(t *testing.T) {
	ns := natstest.Start(t, natstest.Listen(), natstest.WithoutJetStream())
	p := startResettingProxy(t, strings.TrimPrefix(ns.ClientURL(), "nats://"))
	logs := newSyncBuffer()
	nc, _, release, err := clusterLink("rvpd-node-test", "nats://"+p.ln.Addr().String(), natsclient.Flags{}, slog.New(slog.NewTextHandler(logs, nil)))()
	if err != nil {
		t.Fatal(err)
	}
	defer release()

	p.reset.Store(true)
	if err := nc.ForceReconnect(); err != nil {
		t.Fatal(err)
	}
	// The handlers run on nats.go's goroutine after a reset: an
	// attempt's is logged once the one after it has begun.
	const attempts = 5
	testcluster.Eventually(t, 20*time.Second, func() error {
		if n := p.resets.Load(); n < attempts {
			return fmt.Errorf("%d reconnections reset, want %d", n, attempts)
		}
		return nil
	})
	failed := strings.Count(logs.String(), "NATS reconnection failed")
	t.Logf("%d reconnections reset; the log:\n%s", p.resets.Load(), logs.String())
	if failed == 0 {
		t.Fatalf("no failed reconnection logged after %d resets", p.resets.Load())
	}
	if failed > 2 { // a reset, and perhaps an EOF
		t.Errorf("%d lines for %d reconnections reset the same way; want one for each reason", failed, p.resets.Load())
	}

	p.reset.Store(false)
	testcluster.Eventually(t, 10*time.Second, func() error {
		if !nc.IsConnected() || !strings.Contains(logs.String(), "NATS connection back") {
			return fmt.Errorf("not back through the proxy relaying again (connected %v)", nc.IsConnected())
		}
		return nil
	})
}
