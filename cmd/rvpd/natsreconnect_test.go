package main

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/cmd/rvpd/natsclient"
	"github.com/rvp-im/rvpd/testcluster"
	"github.com/rvp-im/rvpd/testcluster/natstest"
)

// natsProxy relays TCP connections to a NATS server at backend. While
// reset is set it answers each new connection as a NATS server would,
// with an INFO, reads the client's CONNECT and PING, and resets the
// connection: the client's reading of the PONG fails with "read tcp
// 127.0.0.1:EPHEMERAL->PROXY: read: connection reset by peer", as when
// servers that verify their clients close the connection after a TLS 1.3
// handshake. resets counts the connections reset. freeze makes the
// connections relayed so far go silent, open, both ways (a server
// stopped with SIGSTOP, a frozen machine); new ones are relayed.
type natsProxy struct {
	ln      net.Listener
	backend string
	reset   atomic.Bool
	resets  atomic.Int64
	// frozen counts freezes: a connection opened when it was lower
	// relays nothing more.
	frozen atomic.Int64
	closed chan struct{}
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  []net.Conn
}

// freeze silences every connection relayed so far.
func (p *natsProxy) freeze() { p.frozen.Add(1) }

func startNATSProxy(t *testing.T, backend string) *natsProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &natsProxy{ln: ln, backend: backend, closed: make(chan struct{})}
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
		close(p.closed)
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *natsProxy) track(c net.Conn) {
	p.mu.Lock()
	p.conns = append(p.conns, c)
	p.mu.Unlock()
}

func (p *natsProxy) serve(c net.Conn) {
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
	gen := p.frozen.Load()
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.relay(b, c, gen)
		b.Close()
	}()
	p.relay(c, b, gen)
	c.Close()
	<-done
}

// relay copies from src to dst until either fails, the proxy is closed,
// or a freeze comes after gen: then what is read is held, unwritten,
// until the proxy is closed.
func (p *natsProxy) relay(dst, src net.Conn, gen int64) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if p.frozen.Load() > gen {
			<-p.closed
			return
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// linkThrough is a node's clusterLink to the NATS server behind p, with
// its log; released when the test ends.
func linkThrough(t *testing.T, p *natsProxy) (*nats.Conn, *syncBuffer) {
	logs := newSyncBuffer()
	nc, _, release, err := clusterLink("rvpd-node-test", "nats://"+p.ln.Addr().String(), natsclient.Flags{}, slog.New(slog.NewTextHandler(logs, nil)))()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(release)
	return nc, logs
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
	p := startNATSProxy(t, strings.TrimPrefix(ns.ClientURL(), "nats://"))
	nc, logs := linkThrough(t, p)

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

// TestNATSServerGoneSilent: the NATS server a node is connected to goes
// silent with the connection open (SIGSTOP, a frozen machine). The node
// notices by its pings within seconds and reconnects; with nats.go's
// default pings (every 2 minutes, 2 outstanding) it waited minutes, and
// every request it took waited on the silent server meanwhile.
func TestNATSServerGoneSilent(t *testing.T) {
	ns := natstest.Start(t, natstest.Listen(), natstest.WithoutJetStream())
	echo, _ := natstest.Connect(t, ns)
	if _, err := echo.Subscribe("echo", func(m *nats.Msg) { m.Respond(m.Data) }); err != nil {
		t.Fatal(err)
	}
	echo.Flush()
	p := startNATSProxy(t, strings.TrimPrefix(ns.ClientURL(), "nats://"))
	nc, logs := linkThrough(t, p)
	if _, err := nc.Request("echo", []byte("before"), 2*time.Second); err != nil {
		t.Fatalf("through the proxy before the freeze: %v", err)
	}

	p.freeze()
	frozen := time.Now()
	var back time.Duration
	testcluster.Eventually(t, 30*time.Second, func() error {
		if _, err := nc.Request("echo", []byte("after"), 500*time.Millisecond); err != nil {
			return fmt.Errorf("no answer %v after the server went silent: %v", time.Since(frozen).Round(time.Millisecond), err)
		}
		back = time.Since(frozen)
		return nil
	})
	t.Logf("answered again %v after the server went silent; the log:\n%s", back.Round(time.Millisecond), logs.String())
	// The loss is seen at the third ping after the last answer (4-6 s),
	// and the server tried again after clusterLink's ReconnectWait (1 s).
	if limit := natsclient.PingInterval*(natsclient.MaxPingsOutstanding+1) + time.Second + 2*time.Second; back > limit {
		t.Errorf("answered again %v after the server went silent, want at most %v", back.Round(time.Millisecond), limit)
	}
	// nats.go calls the reconnection's handler on a goroutine of its
	// own, which may come after the first answer (CI failed so once).
	testcluster.Eventually(t, 5*time.Second, func() error {
		if !strings.Contains(logs.String(), "NATS connection lost") || !strings.Contains(logs.String(), "NATS connection back") {
			return fmt.Errorf("the loss and the reconnection are not both logged:\n%s", logs.String())
		}
		return nil
	})
}

// TestNATSServerCutOffFromCluster cuts the NATS server rvpd node's
// connection is on off from the other two (a network partition: its
// routes silent, the connection up and its pings answered). JetStream
// answers nothing through it; it answered again only once the partition
// healed, and every role of the node (a gateway, a home node) failed or
// stood still meanwhile. The connection should move to a server through
// which JetStream answers (natsclient.ReachWatch): within three
// unanswered questions, 2 s apart, and the reconnection.
func TestNATSServerCutOffFromCluster(t *testing.T) {
	c := testcluster.StartNATSCluster(t, testcluster.NATSClusterOptions{Partitionable: true})
	logs := newSyncBuffer()
	nc, _, release, err := clusterLink("rvpd-node-test", c.URLs(), natsclient.Flags{}, slog.New(slog.NewTextHandler(logs, nil)))()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(release)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	// A message stored in an R3 stream: an answer that needs the
	// cluster's quorum (a server cut off may go on answering questions
	// from its own state for a while).
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "PROBE", Subjects: []string{"probe"}, Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	ask := func() error {
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_, err := js.Publish(ctx, "probe", nil)
		return err
	}
	testcluster.Eventually(t, 10*time.Second, ask)
	// The server cut off is the connection's, and does not lead the meta
	// group: one that does goes on answering ReachWatch's question until
	// it finds it has lost its quorum (10 to 20 s), which this test does
	// not measure.
	var on *testcluster.NATSServer
	for attempt := 1; ; attempt++ {
		on = nil
		for _, s := range c.Servers {
			if strings.HasSuffix(nc.ConnectedUrl(), fmt.Sprintf(":%d", s.ClientPort)) {
				on = s
			}
		}
		if on == nil {
			t.Fatalf("connected to %s, none of the cluster's servers", nc.ConnectedUrl())
		}
		led, err := c.GroupLeaders(on)
		if err != nil {
			t.Fatal(err)
		}
		if led["meta"] != on.Name {
			break
		}
		if attempt == 10 {
			t.Fatalf("still on %s, the meta leader, after %d reconnections", on.Name, attempt-1)
		}
		nc.ForceReconnect()
		testcluster.Eventually(t, 10*time.Second, func() error {
			if !nc.IsConnected() || strings.HasSuffix(nc.ConnectedUrl(), fmt.Sprintf(":%d", on.ClientPort)) {
				return fmt.Errorf("not reconnected off %s", on.Name)
			}
			return nil
		})
	}
	// Nor the probe stream: what is measured is the move, not an election.
	c.PlaceLeaders(js, on, nil, []string{"PROBE"})
	c.Isolate(on)
	cut := time.Now()
	defer c.Heal()
	var back time.Duration
	testcluster.Eventually(t, 30*time.Second, func() error {
		if err := ask(); err != nil {
			return fmt.Errorf("nothing stored %v after %s was cut off (connected to %s): %v", time.Since(cut).Round(time.Millisecond), on.Name, nc.ConnectedUrl(), err)
		}
		back = time.Since(cut)
		return nil
	})
	t.Logf("stored again %v after %s was cut off, through %s; the log:\n%s", back.Round(time.Millisecond), on.Name, nc.ConnectedUrl(), logs.String())
	if strings.HasSuffix(nc.ConnectedUrl(), fmt.Sprintf(":%d", on.ClientPort)) {
		t.Errorf("a message was stored through %s, the server cut off: the partition healed?", on.Name)
	}
	// Three questions unanswered (2 s each, 2 s apart), the others asked,
	// the reconnection (1 s), and an election where the server cut off led.
	if limit := 20 * time.Second; back > limit {
		t.Errorf("stored again %v after the server was cut off, want at most %v", back.Round(time.Millisecond), limit)
	}
	if !strings.Contains(logs.String(), "cut off from its cluster's JetStream") {
		t.Errorf("the move is not logged:\n%s", logs.String())
	}
}

// TestNATSClusterWithoutQuorumStays: with every NATS server cut off from
// the others, JetStream answers through none, and moving would mend
// nothing: the connection stays where it is, and says so once. (About
// 20 s: the meta leader goes on answering until it finds it has lost its
// quorum.)
func TestNATSClusterWithoutQuorumStays(t *testing.T) {
	testcluster.LongTest(t)
	c := testcluster.StartNATSCluster(t, testcluster.NATSClusterOptions{Partitionable: true})
	nc, err := nats.Connect(c.URLs(), nats.Name("reach-test"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	for _, s := range c.Servers {
		c.Isolate(s)
	}
	defer c.Heal()
	// Until the meta leader has stepped down (it goes on answering for
	// a while after it lost its quorum), and every server says JetStream
	// is unavailable.
	testcluster.Eventually(t, 60*time.Second, func() error {
		for _, s := range c.Servers {
			p, err := nats.Connect(s.URL(), nats.NoReconnect())
			if err != nil {
				return err
			}
			m, err := p.Request("$JS.API.INFO", nil, time.Second)
			p.Close()
			if err == nil && m != nil && !strings.Contains(string(m.Data), "10008") {
				return fmt.Errorf("JetStream still answers through %s: %s", s.Name, m.Data)
			}
		}
		return nil
	})
	logs := newSyncBuffer()
	const every = 200 * time.Millisecond
	w := natsclient.ReachWatch{Conn: nc, Every: every, Logger: slog.New(slog.NewTextHandler(logs, nil)), Dial: func(url string) (*nats.Conn, error) {
		return nats.Connect(url, nats.NoReconnect(), nats.Timeout(time.Second))
	}}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() { defer close(done); w.Run(stop) }()
	defer func() { close(stop); <-done }()
	on := nc.ConnectedUrl()
	testcluster.Eventually(t, 30*time.Second, func() error {
		if n := strings.Count(logs.String(), "nor through the others; staying"); n == 0 {
			return fmt.Errorf("not said yet:\n%s", logs.String())
		}
		return nil
	})
	// Several rounds more: still there, said once.
	for range 10 {
		time.Sleep(every) // rounds of the watch, not a synchronisation: it is to do nothing
	}
	if nc.ConnectedUrl() != on || nc.Stats().Reconnects != 0 {
		t.Errorf("the connection moved (from %s to %s, %d reconnections) though no server answered", on, nc.ConnectedUrl(), nc.Stats().Reconnects)
	}
	if n := strings.Count(logs.String(), "staying"); n != 1 || strings.Contains(logs.String(), "moving") {
		t.Errorf("want one line saying it stays, none saying it moves:\n%s", logs.String())
	}
}
