package routernode

import (
	"bufio"
	"context"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/directory"
	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/rvp"
)

// routerOf starts a router of example.test (Internet-capable; more adds
// to its directory) with cfg's Client, Peers, SRV and Discovered, and
// returns a function that sends it a gateway's lookup of a NOTIFY to bob
// at host and waits for the reply.
func routerOf(t *testing.T, cfg Config, more ...func(context.Context, *directory.Admin) error) func(host string) *events.Reply {
	nc, js, dir := federatingDirectory(t, more...)
	cfg.ID, cfg.JetStream, cfg.Conn, cfg.Directory = "r1", js, nc, dir
	rt, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rctx, rstop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rt.Run(rctx) }()
	t.Cleanup(func() { rstop(); <-done })
	replies := make(chan *events.Reply, 16)
	sub, err := nc.Subscribe(events.ReplyFilter("gw"), func(m *nats.Msg) {
		if ev, err := events.Decode(m.Header.Get(events.HeaderType), m.Data); err == nil {
			replies <- ev.(*events.Reply)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Unsubscribe() })
	n := 0
	return func(host string) *events.Reply {
		t.Helper()
		n++
		now := time.Now().UTC()
		lk := &events.Lookup{ID: "lk" + string(rune('a'+n)), At: now, Deadline: now.Add(10 * time.Second), Gateway: "gw", Client: "192.0.2.1",
			Method: "NOTIFY", Host: host, Alias: "bob", Path: "/instmsg/aliases/bob", HopCount: 1,
			Header: map[string]string{rvp.HdrAckType: "DeepOr"},
			Body:   []byte(`<r:notification xmlns:r="http://schemas.microsoft.com/rvp/"><r:message/></r:notification>`)}
		data, err := events.Encode(lk)
		if err != nil {
			t.Fatal(err)
		}
		msg := nats.NewMsg(events.LookupSubject(""))
		msg.Header.Set(events.HeaderType, lk.Type())
		msg.Header.Set(events.HeaderReply, events.ReplySubject("gw", lk.ID))
		msg.Data = data
		if _, err := js.PublishMsg(t.Context(), msg, jetstream.WithMsgID(lk.ID)); err != nil {
			t.Fatal(err)
		}
		select {
		case r := <-replies:
			return r
		case <-time.After(15 * time.Second):
			t.Fatalf("lookup of %s not answered", host)
			return nil
		}
	}
}

// TestProxyNotAskedInside: through an outbound HTTP proxy, a lookup of a
// node at an address or at a name of the local network (which a signed-in
// user chooses: the Host of its request) is not sent to the proxy, which
// would connect inside for us and relay the answer. Another organisation
// is known by the fully qualified name of its IM host, as the gateway
// holds its principals to; an address is judged as DNS discovery's are
// (-federation.allow lets a partner's range through).
func TestProxyNotAskedInside(t *testing.T) {
	proxy, asked := recordingProxy(t)
	policy := &rvp.CallbackPolicy{}
	lookup := routerOf(t, Config{Client: &rvp.Client{Proxy: &proxy, Guard: policy.Dialable, Federation: policy.Discovered}, Discovered: policy.Discovered})
	for _, host := range []string{"127.0.0.1:6379", "10.0.0.5:8080", "169.254.169.254", "[::1]:4222", "[::ffff:10.0.0.5]", "localhost:9090", "intranet", "db.localhost"} {
		r := lookup(host)
		if r.Status != rvp.StatusNotFound || r.Raw != nil {
			t.Errorf("a node at %s through the proxy: %d %q, want 404 without asking the proxy", host, r.Status, r.Error)
		}
		select {
		case line := <-asked:
			t.Errorf("the proxy was asked %q", line)
		default:
		}
	}
	// Another organisation's IM host: through the proxy.
	if r := lookup("im.other.test"); r.Status != rvp.StatusOK {
		t.Errorf("im.other.test through the proxy: %d %q, want 200", r.Status, r.Error)
	}
	if line := <-asked; line != "NOTIFY http://im.other.test/instmsg/aliases/bob HTTP/1.1\r\n" {
		t.Errorf("the proxy was asked %q", line)
	}
}

// logBuffer collects log lines written from the router's goroutines.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// recordingProxy is an outbound HTTP proxy that answers every request
// 200 "secret" (what a server inside would have answered) and sends the
// request line it was asked to asked.
func recordingProxy(t *testing.T) (rvp.URL, chan string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	asked := make(chan string, 64)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				line, _ := bufio.NewReader(c).ReadString('\n')
				asked <- line
				c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecret"))
			}()
		}
	}()
	return rvp.URL{Host: ln.Addr().String()}, asked
}

// ourServers adds to the directory what makes hosts ours besides
// im.example.test: the IM domain's e-mail domain staff.example.net, home
// server home1 at imhome1.servers.test and router router1 at
// rvp.servers.test:8080 (neither under an IM domain's name).
func ourServers(ctx context.Context, a *directory.Admin) error {
	if err := a.SetDomainHosts(ctx, "example.test", nil, []string{"staff.example.net"}); err != nil {
		return err
	}
	if err := a.CreateHomeServer(ctx, "home1", "imhome1.servers.test", "", true); err != nil {
		return err
	}
	return a.CreateRouter(ctx, "router1", "example.test", "rvp.servers.test:8080", "")
}

// oursNotOthers are hosts of ours that no IM domain answers to: under an
// IM domain's name, its IM host or e-mail domain, or a home server's or
// router's host (any port, any case, written in full with a trailing dot).
var oursNotOthers = []string{
	"wiki.example.test", "intranet.example.test:8080", "x.im.example.test", "im.example.test.", "WIKI.Example.Test.",
	"intranet.staff.example.net", "imhome1.servers.test", "IMHOME1.servers.test:80", "imhome1.servers.test.:8081",
	"rvp.servers.test", "rvp.servers.test:8080",
}

// TestProxyNotAskedForOurHosts: through an outbound HTTP proxy, a lookup
// of a node at a host of ours that no IM domain answers to (a signed-in
// user chooses it: the Host of its request) is answered 404 without
// asking the proxy. It is no other organisation's: the proxy, inside
// our network, would have connected to our wiki, an intranet server or
// one of our own servers for us, and the answer would have been relayed.
func TestProxyNotAskedForOurHosts(t *testing.T) {
	proxy, asked := recordingProxy(t)
	policy := &rvp.CallbackPolicy{}
	var logged logBuffer
	lookup := routerOf(t, Config{Client: &rvp.Client{Proxy: &proxy, Guard: policy.Dialable, Federation: policy.Discovered}, Discovered: policy.Discovered,
		Logger: slog.New(slog.NewTextHandler(&logged, nil))}, ourServers)
	for _, host := range oursNotOthers {
		r := lookup(host)
		if r.Status != rvp.StatusNotFound || r.Raw != nil {
			t.Errorf("a node at %s through the proxy: %d %q (relayed %v), want 404 without asking the proxy", host, r.Status, r.Error, r.Raw)
		}
		select {
		case line := <-asked:
			t.Errorf("for a node at %s the proxy was asked %q", host, line)
		default:
		}
		// Logged once, naming the host and what to do.
		var lines []string
		for _, l := range strings.Split(logged.String(), "\n") {
			if strings.Contains(l, " host="+host+" ") {
				lines = append(lines, l)
			}
		}
		if len(lines) != 1 || !strings.Contains(lines[0], "level=WARN") || !strings.Contains(lines[0], "rvpctl domain hosts") {
			t.Errorf("a node at %s refused: logged %q, want one warning saying what to do", host, lines)
		}
	}
	// Another organisation's, even one whose name ends as ours does.
	for _, host := range []string{"im.other.test", "im.notexample.test"} {
		if r := lookup(host); r.Status != rvp.StatusOK {
			t.Errorf("%s through the proxy: %d %q, want 200", host, r.Status, r.Error)
		}
		if line, want := <-asked, "NOTIFY http://"+host+"/instmsg/aliases/bob HTTP/1.1\r\n"; line != want {
			t.Errorf("the proxy was asked %q, want %q", line, want)
		}
	}
}

// TestNoBodyRelayedWith204: another organisation's 204 (or 304) that
// carries a body anyway is relayed without it. The gateway writes a
// relayed body after its status with a Content-Length; a client reads no
// body after 204 or 304 (RFC 9110 §6.4.1), so the other organisation's
// bytes would be read as the answer to the client's next request on that
// connection, to this server.
func TestNoBodyRelayedWith204(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	forged := "HTTP/1.1 200 Successful\r\nContent-Length: 0\r\nSubscription-Id: 66\r\n\r\n"
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				rvp.ReadRequest(bufio.NewReader(c), rvp.Limits{})
				c.Write([]byte("HTTP/1.1 204 No Content\r\nContent-Length: " + strconv.Itoa(len(forged)) + "\r\n\r\n" + forged))
			}()
		}
	}()
	lookup := routerOf(t, Config{Client: &rvp.Client{}, Peers: StaticPeers{"im.other.test": ln.Addr().String()}})
	r := lookup("im.other.test")
	if r.Status != 204 || r.Raw == nil || len(r.Raw.Body) != 0 {
		t.Errorf("a 204 with a body: %d, relayed body %q, want 204 without one", r.Status, r.Raw.Body)
	}
}

// recordingSRV answers every _rvp._tcp query with target, and records
// the names asked.
type recordingSRV struct {
	target string
	asked  chan string
}

func (s recordingSRV) LookupSRV(_ context.Context, service, proto, name string) (string, []*net.SRV, error) {
	s.asked <- name
	host, port, _ := net.SplitHostPort(s.target)
	p, _ := strconv.Atoi(port)
	return "", []*net.SRV{{Target: host + ".", Port: uint16(p)}}, nil
}

// otherRouter is another organisation's router on loopback: it answers
// every request 200 and sends the request line to received.
func otherRouter(t *testing.T) (addr string, received chan string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	received = make(chan string, 64)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				req, err := rvp.ReadRequest(bufio.NewReader(c), rvp.Limits{})
				if err != nil {
					received <- "unreadable: " + err.Error()
					return
				}
				received <- req.Method + " " + req.Header.Get("Host")
				c.Write([]byte("HTTP/1.1 200 Successful\r\nContent-Length: 0\r\n\r\n"))
			}()
		}
	}()
	return ln.Addr().String(), received
}

// TestNotForwardedToOurHosts: without a proxy, a lookup of a node at a
// host of ours that no IM domain answers to, or under -federation.internal,
// is answered 404 before DNS is asked for a router or anything is
// dialled, though DNS would name one (ours, inside: the range is allowed
// as a partner's over a VPN would be). A name under our IM domain's
// that the peer table names is another organisation's (a subsidiary);
// one under -federation.internal never is.
func TestNotForwardedToOurHosts(t *testing.T) {
	addr, received := otherRouter(t)
	srv := recordingSRV{target: addr, asked: make(chan string, 64)}
	policy := &rvp.CallbackPolicy{Federation: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}
	lookup := routerOf(t, Config{Client: &rvp.Client{Guard: policy.Dialable, Federation: policy.Discovered}, Discovered: policy.Discovered, SRV: srv,
		Peers:    StaticPeers{"partner.example.test": addr, "lab.corp.example": addr},
		Internal: []string{"corp.example"}}, ourServers)
	for _, host := range append(slices.Clone(oursNotOthers), "corp.example", "wiki.corp.example", "lab.corp.example") {
		r := lookup(host)
		if r.Status != rvp.StatusNotFound || r.Raw != nil {
			t.Errorf("a node at %s: %d %q, want 404 without a connection", host, r.Status, r.Error)
		}
		select {
		case name := <-srv.asked:
			t.Errorf("for a node at %s, DNS was asked for the router of %s", host, name)
		default:
		}
		select {
		case line := <-received:
			t.Errorf("for a node at %s, a router was sent %q", host, line)
		default:
		}
	}
	for _, host := range []string{"partner.example.test", "im.other.test"} {
		if r := lookup(host); r.Status != rvp.StatusOK {
			t.Errorf("%s: %d %q, want 200", host, r.Status, r.Error)
		}
		if line := <-received; line != "NOTIFY "+host {
			t.Errorf("the router of %s was sent %q", host, line)
		}
	}
}

// TestProxyNotAskedForInternalNames: through an outbound HTTP proxy, a
// lookup of a node under -federation.internal is answered 404 without
// asking the proxy, a peer table entry notwithstanding; a name under our
// IM domain's that the peer table names goes through the proxy.
func TestProxyNotAskedForInternalNames(t *testing.T) {
	proxy, asked := recordingProxy(t)
	policy := &rvp.CallbackPolicy{}
	lookup := routerOf(t, Config{Client: &rvp.Client{Proxy: &proxy, Guard: policy.Dialable, Federation: policy.Discovered}, Discovered: policy.Discovered,
		Peers:    StaticPeers{"partner.example.test": "192.0.2.1:80", "lab.corp.example": "192.0.2.1:80"},
		Internal: []string{".Corp.Example.", "intranet.test"}}, ourServers)
	for _, host := range []string{"corp.example", "wiki.corp.example:8080", "LAB.corp.example.", "jira.intranet.test"} {
		r := lookup(host)
		if r.Status != rvp.StatusNotFound || r.Raw != nil || !strings.Contains(r.Error, "-federation.internal") {
			t.Errorf("a node at %s through the proxy: %d %q, want 404 naming -federation.internal without asking the proxy", host, r.Status, r.Error)
		}
		select {
		case line := <-asked:
			t.Errorf("for a node at %s the proxy was asked %q", host, line)
		default:
		}
	}
	for _, host := range []string{"partner.example.test", "notcorp.example"} {
		if r := lookup(host); r.Status != rvp.StatusOK {
			t.Errorf("%s through the proxy: %d %q, want 200", host, r.Status, r.Error)
		}
		if line, want := <-asked, "NOTIFY http://"+host+"/instmsg/aliases/bob HTTP/1.1\r\n"; line != want {
			t.Errorf("the proxy was asked %q, want %q", line, want)
		}
	}
}
