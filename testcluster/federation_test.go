package testcluster

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rvp-im/rvpd/rvp"
)

// twoOrgs starts example.test and acme.test, each with a router, peered.
// acme's clients are inside its firewall topology, so requests from
// example.test's servers are redirected there, and followed.
func twoOrgs(t *testing.T) (a, b *Cluster) {
	a = Start(t, Options{Domain: "example.test", Users: map[string]string{"alice": "home1", "bob": "home1"}, Routers: 1, InternetCapable: true})
	b = Start(t, Options{Domain: "acme.test", Users: map[string]string{"dave": "home1", "erin": "home1"}, Routers: 1, InternetCapable: true,
		Inside: []string{"127.0.0.0/8"}, Password: "acme-pw-1"})
	a.Dialer.Set("im.acme.test", b.Addr())
	b.Dialer.Set("im.example.test", a.Addr())
	return a, b
}

func watchAcross(c *Client, host, alias string) *Response {
	return c.DoHost(host, "SUBSCRIBE", "/instmsg/aliases/"+alias, nil, c.From(),
		"Notification-Type: update/propchange", "Call-Back: "+c.URL, "Subscription-Lifetime: 3600")
}

func sendAcross(c *Client, host, alias string, body []byte) *Response {
	return c.DoHost(host, "NOTIFY", "/instmsg/aliases/"+alias, body, c.From(), "Content-Type: text/xml", "RVP-Hop-Count: 1", "RVP-Ack-Type: DeepOr")
}

// TestFederation: presence and messages flow both ways between two
// organisations, each client talking to its own server only; requests for
// the other organisation's users are forwarded by the routers, and
// presence changes go server to server to the watchers' logical URLs
// (following acme's redirects).
func TestFederation(t *testing.T) {
	a, b := twoOrgs(t)
	alice, dave := a.Client(t, "alice"), b.Client(t, "dave")
	dave.FollowRedirects = true // inside acme's firewall: its router redirects it
	for _, u := range []*Client{alice, dave} {
		must(t, u.Alias+" login", u.Login(3600), 200)
		must(t, u.Alias+" online", u.SetState("online", 1200, 0), 207)
	}
	// Conformance 64: the forwarded SUBSCRIBE arrives without credentials,
	// Call-Back = RVP-From-Principal, and the default ACL grants assertion.
	r := watchAcross(alice, "im.acme.test", "dave")
	must(t, "alice watches dave@acme.test", r, 207)
	if !bytes.Contains(r.Body, []byte("<d:href>http://im.acme.test/instmsg/aliases/dave</d:href>")) || r.Header.Get(rvp.HdrSubscriptionID) == "" {
		t.Errorf("relayed 207: %v\n%s", r.Header, r.Body)
	}
	must(t, "dave watches alice@example.test", watchAcross(dave, "im.example.test", "alice"), 207)
	alice.WaitNotify(0, wait, func(n Notify) bool {
		return n.From() == "http://im.acme.test/instmsg/aliases/dave" && n.State() == "online"
	})
	dave.WaitNotify(0, wait, func(n Notify) bool {
		return n.From() == "http://im.example.test/instmsg/aliases/alice" && n.State() == "online"
	})

	must(t, "dave busy", dave.SetState("busy", 1200, 0), 207)
	alice.WaitNotify(0, wait, func(n Notify) bool {
		return n.From() == "http://im.acme.test/instmsg/aliases/dave" && n.State() == "busy"
	})
	must(t, "alice away", alice.SetState("away", 1200, 0), 207)
	dave.WaitNotify(0, wait, func(n Notify) bool {
		return n.From() == "http://im.example.test/instmsg/aliases/alice" && n.State() == "away"
	})

	for _, m := range []struct {
		from *Client
		host string
		to   *Client
	}{{alice, "im.acme.test", dave}, {dave, "im.example.test", alice}} {
		body := m.from.MessageBodyTo(rvp.LogicalURL(m.host, m.to.Alias), "between organisations, from "+m.from.Alias+" ✓")
		must(t, m.from.Alias+" → "+m.to.Alias, sendAcross(m.from, m.host, m.to.Alias, body), 200)
		m.to.WaitNotify(0, wait, func(n Notify) bool { return bytes.Equal(n.Body, body) })
	}
	// erin has no client: the other organisation's 412 comes back.
	must(t, "alice → erin (offline)", sendAcross(alice, "im.acme.test", "erin", alice.MessageBodyTo(rvp.LogicalURL("im.acme.test", "erin"), "hi")), 412)
	must(t, "alice → nobody@acme.test", sendAcross(alice, "im.acme.test", "nobody", alice.MessageBodyTo(rvp.LogicalURL("im.acme.test", "nobody"), "hi")), 404)

	// example.test's router counted what it forwarded to acme, by the
	// status acme answered.
	fams, err := a.Routers[0].Metrics.Gather()
	if err != nil {
		t.Fatal(err)
	}
	forwarded := map[string]float64{}
	for _, f := range fams {
		if f.GetName() != "rvpd_router_federation_requests_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["peer"] != "im.acme.test" {
				t.Errorf("federation request counted for peer %q", labels["peer"])
			}
			forwarded[labels["status"]] += m.GetCounter().GetValue()
		}
	}
	if forwarded["207"] < 1 || forwarded["200"] < 1 || forwarded["412"] != 1 || forwarded["404"] != 1 || forwarded["unanswered"] != 0 {
		t.Errorf("federation requests to im.acme.test by status: %v; want the watch's 207, the message's 200, one 412, one 404", forwarded)
	}

	// Assertion rules: other organisations' principals come without
	// credentials. An ACL that grants only authenticated principals shuts
	// dave out; an ACE for dave with assertion lets him in again.
	setACL := func(aces string) {
		t.Helper()
		acl := `<a:rvpacl xmlns:a="http://schemas.microsoft.com/rvp/acl/"><a:acl><a:inheritance>none</a:inheritance>` + aces + `</a:acl></a:rvpacl>`
		must(t, "alice's ACL write", alice.Do("ACL", "/instmsg/aliases/alice", []byte(acl), alice.From(), "Content-Type: text/xml"), 200)
	}
	colleagues := `<a:ace><a:principal><a:allprincipals/><a:credentials><a:digest/><a:ntlm/></a:credentials></a:principal><a:grant><a:list/><a:read/><a:send-to/><a:presence/></a:grant><a:deny/></a:ace>`
	setACL(colleagues)
	must(t, "dave → alice, no assertion rule", sendAcross(dave, "im.example.test", "alice", dave.MessageBodyTo(rvp.LogicalURL("im.example.test", "alice"), "shut out")), 403)
	setACL(colleagues + `<a:ace><a:principal><a:rvp-principal>http://im.acme.test/instmsg/aliases/dave</a:rvp-principal><a:credentials><a:assertion/></a:credentials></a:principal><a:grant><a:send-to/></a:grant><a:deny/></a:ace>`)
	body := dave.MessageBodyTo(rvp.LogicalURL("im.example.test", "alice"), "let in by an assertion rule")
	must(t, "dave → alice, assertion rule for dave", sendAcross(dave, "im.example.test", "alice", body), 200)
	alice.WaitNotify(0, wait, func(n Notify) bool { return bytes.Equal(n.Body, body) })

	// Intranet-only refuses both directions.
	if err := a.Admin.SetInternetCapable(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	testWait := func(f func() int, want int, what string) {
		t.Helper()
		Eventually(t, wait, func() error {
			if got := f(); got != want {
				return errStatus{what, got, want}
			}
			return nil
		})
	}
	testWait(func() int {
		return sendAcross(alice, "im.acme.test", "dave", alice.MessageBodyTo(rvp.LogicalURL("im.acme.test", "dave"), "x")).Status
	}, 403, "outbound")
	testWait(func() int {
		return sendAcross(dave, "im.example.test", "alice", dave.MessageBodyTo(rvp.LogicalURL("im.example.test", "alice"), "x")).Status
	}, 403, "inbound")
}

type errStatus struct {
	what      string
	got, want int
}

func (e errStatus) Error() string {
	return fmt.Sprintf("%s: %d, want %d", e.what, e.got, e.want)
}

// TestFederationLoop: two routers whose peer tables send a domain to each
// other. A gateway forwards only its own users' requests to other
// organisations, so neither relays the other's (no open relay): a third
// organisation's principal is refused at once, and a user's request
// bouncing back is refused by the other side. RVP-Hop-Count still cuts
// what comes in with too many hops (508).
func TestFederationLoop(t *testing.T) {
	a, b := twoOrgs(t)
	a.Dialer.Set("im.loop.test", b.Addr())
	b.Dialer.Set("im.loop.test", a.Addr())
	x := NewClient(t, a.Addr(), "x")
	x.UseHost("im.loop.test")
	r := x.Do("SUBSCRIBE", "/instmsg/aliases/y", nil, "RVP-From-Principal: http://im.third.test/instmsg/aliases/x",
		"Notification-Type: update/propchange", "Call-Back: http://im.third.test/instmsg/aliases/x")
	must(t, "a third organisation's request for a fourth's node", r, 403)
	alice := a.Client(t, "alice")
	must(t, "alice's request, refused by the other side's gateway", watchAcross(alice, "im.loop.test", "y"), 403)
	r = alice.DoHost("im.loop.test", "SUBSCRIBE", "/instmsg/aliases/y", nil, alice.From(), "RVP-Hop-Count: 9",
		"Notification-Type: update/propchange", "Call-Back: "+alice.URL)
	must(t, "a request that has made too many hops", r, 508)
}

// fakePeer is another organisation's server that answers NOTIFYs with a
// fixed answer and records what it got.
type fakePeer struct {
	ln     net.Listener
	answer string
	mu     sync.Mutex
	got    []*rvp.Request
	wake   chan struct{}
}

func newFakePeer(t *testing.T, answer string) *fakePeer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &fakePeer{ln: ln, answer: answer, wake: make(chan struct{})}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			req, err := rvp.ReadRequest(bufio.NewReader(c), rvp.Limits{})
			if err == nil {
				p.mu.Lock()
				p.got = append(p.got, req)
				close(p.wake)
				p.wake = make(chan struct{})
				p.mu.Unlock()
				io.WriteString(c, p.answer)
			}
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return p
}

func (p *fakePeer) requests() []*rvp.Request {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*rvp.Request(nil), p.got...)
}

// TestFederationServerToServer (conformance 63): a watcher whose Call-Back
// is another organisation's logical URL gets the NOTIFY at that URL's
// host; a 302 from there is followed with the same method and body; a 401
// is given up on.
func TestFederationServerToServer(t *testing.T) {
	a := Start(t, Options{Domain: "example.test", Users: map[string]string{"alice": "home1"}, Routers: 1, InternetCapable: true})
	final := newFakePeer(t, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
	redirecting := newFakePeer(t, "HTTP/1.1 302 Object moved\r\nLocation: http://imhome.evil.test/instmsg/local/im.evil.test/instmsg/aliases/mallory\r\nContent-Length: 0\r\n\r\n")
	refusing := newFakePeer(t, "HTTP/1.1 401 Access Denied\r\nWWW-Authenticate: NTLM\r\nContent-Length: 0\r\n\r\n")
	a.Dialer.Set("im.evil.test", redirecting.ln.Addr().String())
	a.Dialer.Set("imhome.evil.test", final.ln.Addr().String())
	a.Dialer.Set("im.bad.test", refusing.ln.Addr().String())

	alice := a.Client(t, "alice")
	must(t, "alice login", alice.Login(3600), 200)
	must(t, "alice online", alice.SetState("online", 1200, 0), 207) // so that each watch pushes her state
	for _, who := range []string{"http://im.evil.test/instmsg/aliases/mallory", "http://im.bad.test/instmsg/aliases/trudy"} {
		// An unauthenticated SUBSCRIBE from another organisation, its
		// Call-Back its own URL (conformance 64).
		x := NewClient(t, a.Addr(), "x")
		x.UseHost("im.example.test")
		r := x.Do("SUBSCRIBE", "/instmsg/aliases/alice", nil, "RVP-From-Principal: "+who, "Notification-Type: update/propchange", "Call-Back: "+who, "Subscription-Lifetime: 600")
		must(t, who+" watches alice", r, 207)
	}
	// The push after subscribing, then the change.
	must(t, "alice busy", alice.SetState("busy", 1200, 0), 207)
	busy := func(p *fakePeer) *rvp.Request {
		for _, r := range p.requests() {
			if bytes.Contains(r.Body, []byte("<r:state><r:busy/></r:state>")) {
				return r
			}
		}
		return nil
	}
	Eventually(t, wait, func() error {
		if busy(final) == nil || busy(refusing) == nil {
			return fmt.Errorf("the change has not reached both peers")
		}
		return nil
	})
	got, first := busy(final), busy(redirecting)
	if got.Method != "NOTIFY" || !bytes.Equal(got.Body, first.Body) || got.Target != "/instmsg/local/im.evil.test/instmsg/aliases/mallory" ||
		!bytes.Contains(got.Body, []byte("<r:state><r:busy/></r:state>")) {
		t.Errorf("after the 302: %s %s\n%s", got.Method, got.Target, got.Body)
	}
	if first.Header.Get("Host") != "im.evil.test" || first.Target != "/instmsg/aliases/mallory" || first.Header.Get(rvp.HdrHopCount) != "2" {
		t.Errorf("first NOTIFY: Host %q, target %q, hop %q", first.Header.Get("Host"), first.Target, first.Header.Get(rvp.HdrHopCount))
	}
	if n := len(refusing.requests()); n != 2 {
		t.Errorf("the 401 peer got %d NOTIFYs for the push and one change, want 2 (each given up at once)", n)
	}
}

// srvTable answers DNS SRV lookups from a table, as a test's resolver.
type srvTable map[string]string // domain → host:port

func (s srvTable) LookupSRV(_ context.Context, service, proto, name string) (string, []*net.SRV, error) {
	addr, ok := s[name]
	if !ok || service != "rvp" || proto != "tcp" {
		return "", nil, &net.DNSError{Err: "no such host", Name: "_" + service + "._" + proto + "." + name, IsNotFound: true}
	}
	host, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	return "", []*net.SRV{{Target: host + ".", Port: uint16(p)}}, nil
}

// TestFederationSRV finds the other organisation by its _rvp._tcp SRV
// record (a resolver the test answers) instead of the peer table.
func TestFederationSRV(t *testing.T) {
	b := Start(t, Options{Domain: "acme.test", Users: map[string]string{"dave": "home1"}, Routers: 1, InternetCapable: true})
	a := Start(t, Options{Domain: "example.test", Users: map[string]string{"alice": "home1"}, Routers: 1, InternetCapable: true,
		SRV: srvTable{"acme.test": b.Addr()}, FederationAllow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	dave := b.Client(t, "dave")
	must(t, "dave login", dave.Login(3600), 200)
	alice := a.Client(t, "alice")
	body := alice.MessageBodyTo(rvp.LogicalURL("im.acme.test", "dave"), "found you by SRV")
	must(t, "alice → dave@acme.test", sendAcross(alice, "im.acme.test", "dave", body), 200)
	dave.WaitNotify(0, wait, func(n Notify) bool { return bytes.Equal(n.Body, body) })
	must(t, "an organisation without SRV record", sendAcross(alice, "im.nowhere.test", "x", alice.MessageBodyTo(rvp.LogicalURL("im.nowhere.test", "x"), "hi")), 404)
}

// TestFederationSRVPrivate: an organisation whose SRV record names a
// loopback address (its DNS is its own: it could name any address inside
// ours) gets no connection from our router, unless the range is allowed;
// the request is answered 404, no route.
func TestFederationSRVPrivate(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan struct{}, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- struct{}{}
			c.Close()
		}
	}()
	a := Start(t, Options{Domain: "example.test", Users: map[string]string{"alice": "home1"}, Routers: 1, InternetCapable: true,
		SRV: srvTable{"evil.test": ln.Addr().String()}})
	alice := a.Client(t, "alice")
	r := sendAcross(alice, "im.evil.test", "x", alice.MessageBodyTo(rvp.LogicalURL("im.evil.test", "x"), "hi"))
	must(t, "an organisation whose SRV names a loopback address", r, 404)
	if !strings.Contains(string(r.Body), "loopback") {
		t.Errorf("404 body does not say why: %s", r.Body)
	}
	select {
	case <-accepted:
		t.Error("the router connected to the loopback address the SRV record named")
	default:
	}
}

// webProxy is an outbound HTTP proxy: it reads a request in absolute
// form, connects to the host it names (through its own table, as its DNS),
// passes the request on and the answer back, and records request lines.
type webProxy struct {
	ln    net.Listener
	hosts *PeerDialer
	mu    sync.Mutex
	lines []string
	wg    sync.WaitGroup
}

func newWebProxy(t *testing.T, hosts *PeerDialer) *webProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &webProxy{ln: ln, hosts: hosts}
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
	t.Cleanup(func() { ln.Close(); p.wg.Wait() })
	return p
}

func (p *webProxy) serve(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	req, err := rvp.ReadRequest(bufio.NewReader(c), rvp.Limits{})
	if err != nil {
		io.WriteString(c, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
		return
	}
	p.mu.Lock()
	p.lines = append(p.lines, req.Method+" "+req.Target)
	p.mu.Unlock()
	u, err := rvp.ParseURL(req.Target)
	if err != nil || !strings.Contains(req.Target, "://") {
		io.WriteString(c, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
		return
	}
	addr := u.Host
	if _, _, err := net.SplitHostPort(addr); err != nil {
		addr += ":80"
	}
	up, err := p.hosts.DialContext(context.Background(), "tcp", addr)
	if err != nil {
		io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
		return
	}
	defer up.Close()
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\n", req.Method, req.Target)
	for name, vs := range req.Header {
		if name == "content-length" || name == "connection" {
			continue
		}
		for _, v := range vs {
			fmt.Fprintf(&b, "%s: %s\r\n", name, v)
		}
	}
	fmt.Fprintf(&b, "Content-Length: %d\r\nConnection: close\r\n\r\n", len(req.Body))
	b.Write(req.Body)
	up.Write(b.Bytes())
	io.Copy(c, up)
}

func (p *webProxy) requests() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.lines...)
}

// TestFederationThroughProxy: example.test reaches acme.test only through
// its outbound HTTP proxy (it has no peer table entry and no DNS
// discovery); subscriptions, presence and messages cross it.
func TestFederationThroughProxy(t *testing.T) {
	web := &PeerDialer{}
	proxy := newWebProxy(t, web)
	a := Start(t, Options{Domain: "example.test", Users: map[string]string{"alice": "home1"}, Routers: 1, InternetCapable: true,
		Proxy: "http://" + proxy.ln.Addr().String()})
	b := Start(t, Options{Domain: "acme.test", Users: map[string]string{"dave": "home1"}, Routers: 1, InternetCapable: true,
		Inside: []string{"127.0.0.0/8"}, Password: "acme-pw-1"})
	web.Set("im.acme.test", b.Addr())
	b.Dialer.Set("im.example.test", a.Addr())

	alice, dave := a.Client(t, "alice"), b.Client(t, "dave")
	dave.FollowRedirects = true
	for _, u := range []*Client{alice, dave} {
		must(t, u.Alias+" login", u.Login(3600), 200)
		must(t, u.Alias+" online", u.SetState("online", 1200, 0), 207)
	}
	must(t, "alice watches dave@acme.test", watchAcross(alice, "im.acme.test", "dave"), 207)
	must(t, "dave watches alice@example.test", watchAcross(dave, "im.example.test", "alice"), 207)
	alice.WaitNotify(0, wait, func(n Notify) bool {
		return n.From() == "http://im.acme.test/instmsg/aliases/dave" && n.State() == "online"
	})
	must(t, "alice away", alice.SetState("away", 1200, 0), 207)
	dave.WaitNotify(0, wait, func(n Notify) bool {
		return n.From() == "http://im.example.test/instmsg/aliases/alice" && n.State() == "away"
	})
	body := alice.MessageBodyTo(rvp.LogicalURL("im.acme.test", "dave"), "through the proxy")
	must(t, "alice → dave", sendAcross(alice, "im.acme.test", "dave", body), 200)
	dave.WaitNotify(0, wait, func(n Notify) bool { return bytes.Equal(n.Body, body) })

	got := strings.Join(proxy.requests(), "\n")
	for _, want := range []string{"SUBSCRIBE http://im.acme.test/instmsg/aliases/dave", "NOTIFY http://im.acme.test/instmsg/aliases/dave"} {
		if !strings.Contains(got, want) {
			t.Errorf("the proxy did not carry %q; it carried:\n%s", want, got)
		}
	}
}

// TestProxyOnlyForOtherOrganisations: the outbound HTTP proxy
// (-federation.proxy) carries requests to other organisations, and
// nothing else: a NOTIFY to one of our own clients' listeners (a
// Call-Back inside, which an Internet proxy does not reach, or reaches as
// its own loopback) goes to the client directly, guarded by the Call-Back
// policy as without a proxy.
func TestProxyOnlyForOtherOrganisations(t *testing.T) {
	proxy := newWebProxy(t, &PeerDialer{})
	a := Start(t, Options{Domain: "example.test", Users: map[string]string{"alice": "home1", "bob": "home1"}, Routers: 1, InternetCapable: true,
		Proxy: "http://" + proxy.ln.Addr().String()})
	alice, bob := a.Client(t, "alice"), a.Client(t, "bob")
	for _, u := range []*Client{alice, bob} {
		must(t, u.Alias+" login", u.Login(3600), 200)
	}
	must(t, "bob watches alice", bob.Watch("alice", 3600), 207)
	must(t, "alice online", alice.SetState("online", 1200, 0), 207)
	bob.WaitNotify(0, wait, func(n Notify) bool { return n.State() == "online" })
	body := alice.MessageBody("bob", "inside")
	must(t, "alice → bob", alice.Send("bob", body), 200)
	bob.WaitNotify(0, wait, func(n Notify) bool { return bytes.Equal(n.Body, body) })
	if got := proxy.requests(); len(got) != 0 {
		t.Errorf("the proxy for other organisations carried our own clients' NOTIFYs:\n%s", strings.Join(got, "\n"))
	}
}

// TestFederationProxyNotForOurHosts: with an outbound HTTP proxy, a
// signed-in user's request for a node at a host of ours that no IM domain
// answers to (a name under our IM domain, a home server's host) is
// answered 404 and the proxy is not asked: the proxy stands in our
// network and resolves names as we do, so it would have fetched our
// intranet's answer for the user (here the wiki's "secret"), relayed
// back as another organisation's.
func TestFederationProxyNotForOurHosts(t *testing.T) {
	wiki := answeringServer(t, "HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: 6\r\n\r\nsecret")
	web := &PeerDialer{}
	proxy := newWebProxy(t, web)
	a := Start(t, Options{Domain: "example.test", Users: map[string]string{"alice": "home1"}, Routers: 1, InternetCapable: true,
		Proxy: "http://" + proxy.ln.Addr().String()})
	if err := a.Admin.CreateHomeServer(t.Context(), "home9", "imhome9.servers.test", "", true); err != nil {
		t.Fatal(err)
	}
	a.DirectorySettled()
	for _, h := range []string{"wiki.example.test", "imhome9.servers.test"} {
		web.Set(h, wiki)
	}
	alice := a.Client(t, "alice")
	must(t, "alice login", alice.Login(3600), 200)
	for _, host := range []string{"wiki.example.test", "imhome9.servers.test"} {
		r := alice.DoHost(host, "PROPFIND", "/instmsg/aliases/x", nil, alice.From())
		if r.Status != 404 || strings.Contains(string(r.Body), "secret") {
			t.Errorf("a node at %s: %d %q, want 404 without the proxy's answer", host, r.Status, r.Body)
		}
	}
	if got := proxy.requests(); len(got) != 0 {
		t.Errorf("the proxy was asked for hosts of ours:\n%s", strings.Join(got, "\n"))
	}
}
