package routernode

import (
	"bufio"
	"context"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/rvp"
)

// routerOf starts a router of example.test (Internet-capable) with cfg's
// Client, Peers, SRV and Discovered, and returns a function that sends
// it a gateway's lookup of a NOTIFY to bob at host and waits for the
// reply.
func routerOf(t *testing.T, cfg Config) func(host string) *events.Reply {
	nc, js, dir := federatingDirectory(t)
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
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	asked := make(chan string, 16)
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
	proxy := rvp.URL{Host: ln.Addr().String()}
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
