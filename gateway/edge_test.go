package gateway

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
	"github.com/rvp-im/rvpd/rvp"
	"github.com/rvp-im/rvpd/testcluster/natstest"
)

// edge is a gateway over an in-process JetStream with a directory of its
// own (no home node, no router: nothing answers what is appended), for
// tests of what the gateway refuses by itself.
type edge struct {
	t   *testing.T
	g   *Gateway
	js  jetstream.JetStream
	log *recordLog
}

// recordLog keeps every record logged at Info or above.
type recordLog struct {
	mu      sync.Mutex
	records []slog.Record
}

func (r *recordLog) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }
func (r *recordLog) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.records = append(r.records, rec)
	return nil
}
func (r *recordLog) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *recordLog) WithGroup(string) slog.Handler      { return r }

func (r *recordLog) take() []slog.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.records
	r.records = nil
	return out
}

// newEdge starts the gateway: IM domain example.test at im.example.test
// (no router: the gateway serves it), home server home1, users alice and
// bob; the organisation federates.
func newEdge(t *testing.T, auth Authenticator) *edge {
	t.Helper()
	ns := natstest.Start(t)
	nc, js := natstest.Connect(t, ns)
	if err := projections.EnsureStreams(t.Context(), js, projections.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	db, err := projections.Open("", projections.Options{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	dir, err := projections.OpenDirectory(db)
	if err != nil {
		t.Fatal(err)
	}
	var msgs []projections.Msg
	for i, ev := range []events.Event{
		&events.DomainCreated{Domain: "example.test", IMHost: "im.example.test"},
		&events.HomeServerCreated{Name: "home1", Host: "home1.example.test", HostsUsers: true},
		&events.UserEnabled{User: events.NewUser("example.test", "alice"), Home: "home1"},
		&events.UserEnabled{User: events.NewUser("example.test", "bob"), Home: "home1"},
		&events.FederationSet{InternetCapable: true},
	} {
		data, err := events.Encode(ev)
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, projections.Msg{Seq: uint64(i + 1), Type: ev.Type(), Data: data})
	}
	if err := dir.ApplyBatch(msgs); err != nil {
		t.Fatal(err)
	}
	rl := &recordLog{}
	g, err := New(Config{ID: "gw", JetStream: js, Conn: nc, Directory: dir, Auth: auth,
		RequestTimeout: 300 * time.Millisecond, Logger: slog.New(rl)})
	if err != nil {
		t.Fatal(err)
	}
	return &edge{t: t, g: g, js: js, log: rl}
}

// do reads raw as the gateway's connections do and answers it.
func (e *edge) do(raw string) *rvp.Response {
	e.t.Helper()
	req, err := rvp.ReadRequest(bufio.NewReader(strings.NewReader(raw)), rvp.Limits{})
	if err != nil {
		e.t.Fatalf("%q: %v", raw, err)
	}
	server, client := net.Pipe()
	defer server.Close()
	defer client.Close()
	c := &conn{nc: server, g: e.g, state: &ConnState{}}
	resp, why := e.g.handle(context.Background(), c, req, "192.0.2.7")
	var b bytes.Buffer
	w := bufio.NewWriter(&b)
	resp.WriteTo(w)
	e.g.logRequest(req, resp, "192.0.2.7", 0, why)
	return resp
}

// appended returns how many messages the requests and lookups streams
// hold.
func (e *edge) appended() uint64 {
	e.t.Helper()
	var n uint64
	for _, name := range []string{events.StreamRequests, events.StreamLookups} {
		s, err := e.js.Stream(e.t.Context(), name)
		if err != nil {
			e.t.Fatal(err)
		}
		info, err := s.Info(e.t.Context())
		if err != nil {
			e.t.Fatal(err)
		}
		n += info.State.Msgs
	}
	return n
}

// TestHopCountRefusedBeforeAppend: a request past MaxHops is refused
// (508) before anything is appended, however its RVP-Hop-Count is
// written. "+9" passed the gateway's check (rvp.ParseCount refuses a
// sign, so the check was skipped) while lookupOf read it with
// strconv.Atoi as 9: the lookup was appended, and only the router
// refused it.
func TestHopCountRefusedBeforeAppend(t *testing.T) {
	e := newEdge(t, NoAuth{})
	// alice subscribes to another organisation's node: a lookup for the
	// routers to forward.
	const head = "SUBSCRIBE /instmsg/aliases/carol HTTP/1.1\r\nHost: im.acme.example\r\nNotification-Type: update/propchange\r\n" +
		"Call-Back: http://im.example.test/instmsg/aliases/alice\r\nRVP-From-Principal: http://im.example.test/instmsg/aliases/alice\r\n"
	for _, hops := range []string{"9", "+9", "+0000000009"} {
		before := e.appended()
		r := e.do(head + "RVP-Hop-Count: " + hops + "\r\n\r\n")
		if r.Status != rvp.StatusLoopDetected && r.Status != rvp.StatusBadRequest {
			t.Errorf("RVP-Hop-Count %q: status %d, want 508 (or 400); body %q", hops, r.Status, r.Body)
		}
		if n := e.appended() - before; n != 0 {
			t.Errorf("RVP-Hop-Count %q: %d events appended before the refusal", hops, n)
		}
	}
	// The same request within the limit is looked up: the harness does
	// append what it should.
	before := e.appended()
	e.do(head + "RVP-Hop-Count: 2\r\n\r\n")
	if e.appended() == before {
		t.Error("a request within the hop limit was not looked up")
	}
}

// TestNoHostRefusedBeforeAppend: a request for a logical URL that names
// no host (an empty Host, or none in HTTP/1.0) is refused (400) before
// anything is appended. It became a lookup of the node at host "" for
// the routers, appended to RVP_LOOKUP and answered 504 or whatever the
// routers made of it.
func TestNoHostRefusedBeforeAppend(t *testing.T) {
	e := newEdge(t, NoAuth{})
	const rest = "RVP-From-Principal: http://im.example.test/instmsg/aliases/alice\r\nNotification-Type: update/propchange\r\n" +
		"Call-Back: http://im.example.test/instmsg/aliases/alice\r\n\r\n"
	for _, raw := range []string{
		"SUBSCRIBE /instmsg/aliases/bob HTTP/1.1\r\nHost: \r\n" + rest,
		"SUBSCRIBE /instmsg/aliases/bob HTTP/1.0\r\n" + rest,
	} {
		before := e.appended()
		r := e.do(raw)
		if r.Status != rvp.StatusBadRequest {
			t.Errorf("%q: status %d, want 400; body %q", raw, r.Status, r.Body)
		}
		if n := e.appended() - before; n != 0 {
			t.Errorf("%q: %d events appended before the refusal", raw, n)
		}
	}
	// A physical URL names its IM host, and needs no Host.
	before := e.appended()
	r := e.do("SUBSCRIBE /instmsg/local/im.example.test/instmsg/aliases/bob HTTP/1.0\r\n" + rest)
	if r.Status == rvp.StatusBadRequest || e.appended() == before {
		t.Errorf("a physical URL without Host: status %d, body %q, not appended", r.Status, r.Body)
	}
}

// TestRefusedLoggedOnce: a request the gateway refuses, or fails to
// carry out, is logged once at Info or above: where it was refused, with
// what the request line does not say, or by the request line with why.
// A refused Call-Back and a forged sender were logged where they were
// refused and again by the request line; a request without an answer
// was logged as failed (Error) and again (Warn).
func TestRefusedLoggedOnce(t *testing.T) {
	e := newEdge(t, NoAuth{})
	const (
		host  = "Host: im.example.test\r\n"
		alice = "RVP-From-Principal: http://im.example.test/instmsg/aliases/alice\r\n"
	)
	notify := func(from string) string {
		body := `<?xml version="1.0"?><r:notification xmlns:d="DAV:" xmlns:r="http://schemas.microsoft.com/rvp/"><r:message><r:notification-from><r:contact><d:href>` + from +
			`</d:href></r:contact></r:notification-from><r:notification-to><r:contact><d:href>http://im.example.test/instmsg/aliases/bob</d:href></r:contact></r:notification-to><r:msgbody><r:mime-data>hi</r:mime-data></r:msgbody></r:message></r:notification>`
		return "NOTIFY /instmsg/aliases/bob HTTP/1.1\r\n" + host + alice + "Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
	}
	for _, tc := range []struct{ name, raw string }{
		{"Call-Back elsewhere", "SUBSCRIBE /instmsg/aliases/alice HTTP/1.1\r\n" + host + alice + "Notification-Type: pragma/notify\r\nCall-Back: http://10.1.1.1:3044\r\n\r\n"},
		{"forged sender", notify("http://im.example.test/instmsg/aliases/carol")},
		{"bad XML", "PROPPATCH /instmsg/aliases/alice HTTP/1.1\r\n" + host + alice + "Content-Length: 5\r\n\r\nhello"},
		{"no answer", "SUBSCRIPTIONS /instmsg/aliases/alice HTTP/1.1\r\n" + host + alice + "\r\n"},
	} {
		e.log.take()
		r := e.do(tc.raw)
		var said []string
		for _, rec := range e.log.take() {
			said = append(said, rec.Level.String()+" "+rec.Message)
		}
		if len(said) != 1 {
			t.Errorf("%s (%d): logged %d times at Info or above: %q", tc.name, r.Status, len(said), said)
		}
	}
}

// TestSlowRequestAnswered408: a client that begins a request and trickles
// the rest (the header, or a body shorter than its Content-Length, held
// back) is answered 408 once ReadTimeout has passed since its first byte,
// logged once, and its connection closed; before, it held the connection
// for the 2-minute idle timeout and got no answer. A connection that
// sends nothing is left to the idle timeout, and one that sends its
// request whole is served.
func TestSlowRequestAnswered408(t *testing.T) {
	e := newEdge(t, NoAuth{})
	e.g.cfg.ReadTimeout = 300 * time.Millisecond
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go e.g.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		e.g.Shutdown(ctx)
	})
	const head = "PROPFIND /instmsg/aliases/alice HTTP/1.1\r\nHost: im.example.test\r\n" +
		"RVP-From-Principal: http://im.example.test/instmsg/aliases/alice\r\nDepth: 0\r\n"
	// Whole, a request is served (here 504, with no home node to decide
	// it), not 408; once it is, the gateway is serving and has said so.
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(nc, head+"\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
	if err != nil || resp.StatusCode == rvp.StatusRequestTimeout {
		t.Fatalf("a request sent whole: %v %v", resp, err)
	}
	resp.Body.Close()
	nc.Close()
	// Its request line is logged once it is answered.
	for deadline := time.Now().Add(5 * time.Second); !slices.ContainsFunc(e.log.take(), func(r slog.Record) bool { return r.Message == "request" }); {
		if time.Now().After(deadline) {
			t.Fatal("the request sent whole was not logged")
		}
		time.Sleep(time.Millisecond) // polling the log, with a deadline
	}
	appended := e.appended()
	for _, tc := range []struct{ name, sent string }{
		{"the request line", "PROPFIND /instmsg/aliases/al"},
		{"the header", head + "Content-Type: te"},
		{"the body", head + "Content-Length: 200\r\n\r\n<?xml version="},
	} {
		nc, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		e.log.take()
		start := time.Now()
		nc.SetDeadline(start.Add(10 * time.Second))
		if _, err := io.WriteString(nc, tc.sent); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
		took := time.Since(start)
		if err != nil {
			t.Fatalf("%s held back: %v after %v, want a 408", tc.name, err, took)
		}
		if resp.StatusCode != rvp.StatusRequestTimeout || took < 300*time.Millisecond {
			t.Errorf("%s held back: %d after %v, want 408 after the read timeout", tc.name, resp.StatusCode, took)
		}
		resp.Body.Close()
		if _, err := nc.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("%s held back: the connection was not closed after the 408 (%v)", tc.name, err)
		}
		nc.Close()
		if recs := e.log.take(); len(recs) != 1 {
			t.Errorf("%s held back: logged %d times at Info or above, want once", tc.name, len(recs))
		}
		if n := e.appended() - appended; n != 0 {
			t.Errorf("%s held back: %d events appended", tc.name, n)
		}
	}
}

// TestShutdownEndsWaitingRequests: a stop whose time runs out ends the
// requests still waiting for an answer (here one no home node will give):
// Shutdown returns soon after its own deadline, not at the request's
// RequestTimeout; before, it closed the connections but went on waiting
// for their workers, held by the wait.
func TestShutdownEndsWaitingRequests(t *testing.T) {
	e := newEdge(t, NoAuth{})
	e.g.cfg.RequestTimeout = 20 * time.Second
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- e.g.Serve(ln) }()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	before := e.appended()
	io.WriteString(nc, "PROPFIND /instmsg/aliases/alice HTTP/1.1\r\nHost: im.example.test\r\n"+
		"RVP-From-Principal: http://im.example.test/instmsg/aliases/alice\r\nDepth: 0\r\n\r\n")
	// Its request is appended: it waits for an answer.
	for deadline := time.Now().Add(5 * time.Second); e.appended() == before; {
		if time.Now().After(deadline) {
			t.Fatal("the request was not appended")
		}
		time.Sleep(time.Millisecond) // polling the stream, with a deadline
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	e.g.Shutdown(ctx)
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("Shutdown with 300ms took %v: held by a request waiting for an answer", took)
	}
	if err := <-served; err != nil {
		t.Errorf("Serve: %v", err)
	}
}

// lostSites counts the sites it names lost.
type lostSites map[string]bool

func (l lostSites) Lost(site string) bool { return l[site] }

// TestSiteUnreachableLoggedOnce: a request for a user homed at a site
// the site watch counts lost is answered 503 at once, and logged once at
// Info or above, as every request is. It was logged where it was refused
// (Warn, with the home server and site) and again by the request line
// (Warn, for its 503): two lines for each of a client's retries through
// the outage.
func TestSiteUnreachableLoggedOnce(t *testing.T) {
	e := newEdge(t, NoAuth{})
	e.g.cfg.Site, e.g.cfg.Sites = "here", lostSites{"far": true}
	var msgs []projections.Msg
	for i, ev := range []events.Event{
		&events.HomeServerCreated{Name: "home2", Host: "home2.example.test", Site: "far", HostsUsers: true},
		&events.UserEnabled{User: events.NewUser("example.test", "carol"), Home: "home2"},
	} {
		data, err := events.Encode(ev)
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, projections.Msg{Seq: e.g.cfg.Directory.Position() + uint64(i) + 1, Type: ev.Type(), Data: data})
	}
	if err := e.g.cfg.Directory.ApplyBatch(msgs); err != nil {
		t.Fatal(err)
	}
	e.log.take()
	before := e.appended()
	r := e.do("PROPFIND /instmsg/aliases/carol HTTP/1.1\r\nHost: im.example.test\r\nDepth: 0\r\n" +
		"RVP-From-Principal: http://im.example.test/instmsg/aliases/alice\r\n\r\n")
	if r.Status != rvp.StatusUnavailable || r.Get("Retry-After") == "" {
		t.Errorf("status %d (Retry-After %q), want 503 with Retry-After; body %q", r.Status, r.Get("Retry-After"), r.Body)
	}
	if n := e.appended() - before; n != 0 {
		t.Errorf("%d events appended for a site counted lost", n)
	}
	var said []string
	for _, rec := range e.log.take() {
		said = append(said, rec.Level.String()+" "+rec.Message)
	}
	if len(said) != 1 {
		t.Errorf("logged %d times at Info or above: %q", len(said), said)
	}
}

// TestHopCount: RVP-Hop-Count is read in one place, for the lookups
// (forwarded by routers) and the NOTIFYs alike: 1 when absent or 0, the
// count itself up to MaxHops, past it 508, and 400 when it is no count.
func TestHopCount(t *testing.T) {
	for _, tt := range []struct {
		v      string // "" for none
		want   int
		status int // of the refusal, 0 for none
	}{
		{"", 1, 0}, {"0", 1, 0}, {"1", 1, 0}, {" 3 ", 3, 0}, {"0008", 8, 0},
		{"9", 0, rvp.StatusLoopDetected}, {"99999999999999999999", 0, rvp.StatusLoopDetected},
		{"+9", 0, rvp.StatusBadRequest}, {"-1", 0, rvp.StatusBadRequest}, {"x", 0, rvp.StatusBadRequest}, {"1.0", 0, rvp.StatusBadRequest},
	} {
		h := rvp.Header{}
		if tt.v != "" {
			h.Add(rvp.HdrHopCount, tt.v)
		}
		n, err := hopCount(h)
		var r *refusal
		switch {
		case tt.status == 0 && (err != nil || n != tt.want):
			t.Errorf("RVP-Hop-Count %q: %d, %v; want %d", tt.v, n, err, tt.want)
		case tt.status != 0 && (!errors.As(err, &r) || r.status != tt.status):
			t.Errorf("RVP-Hop-Count %q: %d, %v; want a refusal %d", tt.v, n, err, tt.status)
		}
	}
}

// TestForeignPrincipalAtOurHost: a request without credentials whose
// RVP-From-Principal (a principal, or a server speaking for its
// principals) is at a host of ours that no IM domain answers to (a name
// under our IM domain's name, IM host or e-mail domain, a home server's
// host, a name under Own.Internal) is refused 403 before anything is
// appended, saying what to do, logged once. It was taken for another
// organisation's principal, which speaks without credentials: it spoke
// for principals of ours, and its Call-Back had our home nodes send
// presence into our own network as to another organisation. A
// subsidiary the peer table names, under our IM domain's name, and
// another organisation are let through (appended).
func TestForeignPrincipalAtOurHost(t *testing.T) {
	e := newEdge(t, NoAuth{})
	dir := e.g.cfg.Directory
	data, err := events.Encode(&events.DomainHostsSet{Domain: "example.test", EmailDomains: []string{"staff.example.net"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := dir.ApplyBatch([]projections.Msg{{Seq: dir.Position() + 1, Type: events.TypeDomainHostsSet, Data: data}}); err != nil {
		t.Fatal(err)
	}
	e.g.cfg.Own = projections.OwnNames{Internal: []string{"corp.example"}, Peered: func(host string) bool {
		return rvp.Peered(rvp.HostMap{"partner.example.test": "192.0.2.1:80"}, host)
	}}
	subscribe := func(from string) string {
		cb := from
		if !strings.Contains(from, "://") {
			cb = "http://" + from + "/instmsg/aliases/x"
		}
		return "SUBSCRIBE /instmsg/aliases/alice HTTP/1.1\r\nHost: im.example.test\r\nRVP-From-Principal: " + from +
			"\r\nNotification-Type: update/propchange\r\nCall-Back: " + cb + "\r\n\r\n"
	}
	for _, from := range []string{
		"http://wiki.example.test/instmsg/aliases/x", "http://WIKI.example.test.:8080/instmsg/aliases/x", "wiki.example.test",
		"http://x.im.example.test/instmsg/aliases/x", "http://intranet.staff.example.net/instmsg/aliases/x",
		"http://home1.example.test:81/instmsg/aliases/x", "http://wiki.corp.example/instmsg/aliases/x",
	} {
		e.log.take()
		forged, before := e.g.Stats().Forged, e.appended()
		r := e.do(subscribe(from))
		if body := string(r.Body); r.Status != rvp.StatusForbidden || !strings.Contains(body, "a host of ours") ||
			!(strings.Contains(body, "rvpctl domain hosts") || strings.Contains(body, "-federation.internal")) {
			t.Errorf("%s: status %d, want 403 saying the host is ours and what to do; body %q", from, r.Status, body)
		}
		if n := e.appended() - before; n != 0 {
			t.Errorf("%s: %d events appended before the refusal", from, n)
		}
		if e.g.Stats().Forged != forged+1 {
			t.Errorf("%s: not counted as forged", from)
		}
		if said := e.log.take(); len(said) != 1 || !strings.Contains(said[0].Message, "host of ours") {
			var lines []string
			for _, rec := range said {
				lines = append(lines, rec.Level.String()+" "+rec.Message)
			}
			t.Errorf("%s: logged %q, want once where refused", from, lines)
		}
	}
	for _, from := range []string{"http://partner.example.test/instmsg/aliases/p", "http://im.other.test/instmsg/aliases/x"} {
		before := e.appended()
		if r := e.do(subscribe(from)); r.Status == rvp.StatusForbidden || e.appended() == before {
			t.Errorf("%s: status %d, body %q, not appended: want it taken as another organisation's", from, r.Status, r.Body)
		}
	}
}

// TestForeignMessageFromOurPhysicalURL: another organisation's principal
// (or server), which speaks without credentials, may not send a message
// whose sender (r:notification-from) is a physical URL naming one of our
// users at its own host (http://im.partner.test/instmsg/local/
// im.example.test/instmsg/aliases/bob): a physical URL names a user of
// ours only at a host of ours, wherever a principal is named. Our own
// users were held to that; another organisation's sender was checked by
// its host alone, as another organisation's principal of the same alias
// or server, and the message was appended for alice's clients: from
// "bob" of our IM host, its replies going to the partner's host. Nothing
// is appended; the message is counted forged and logged once. The
// partner's own principals still speak (appended).
func TestForeignMessageFromOurPhysicalURL(t *testing.T) {
	e := newEdge(t, NoAuth{})
	notify := func(from, sender string) string {
		body := `<?xml version="1.0"?><r:notification xmlns:d="DAV:" xmlns:r="http://schemas.microsoft.com/rvp/"><r:message>` +
			`<r:notification-from><r:contact><d:href>` + sender + `</d:href></r:contact></r:notification-from>` +
			`<r:notification-to><r:contact><d:href>http://im.example.test/instmsg/aliases/alice</d:href></r:contact></r:notification-to>` +
			`<r:msgbody><r:mime-data><![CDATA[MIME-Version: 1.0` + "\r\n\r\n" + `hi]]></r:mime-data></r:msgbody></r:message></r:notification>`
		return fmt.Sprintf("NOTIFY /instmsg/aliases/alice HTTP/1.1\r\nHost: im.example.test\r\nRVP-From-Principal: %s\r\nContent-Type: text/xml\r\nContent-Length: %d\r\n\r\n%s",
			from, len(body), body)
	}
	for _, tc := range []struct{ from, sender string }{
		{"http://im.partner.test/instmsg/aliases/bob", "http://im.partner.test/instmsg/local/im.example.test/instmsg/aliases/bob"},
		{"im.partner.test", "http://im.partner.test/instmsg/local/im.example.test/instmsg/aliases/bob"},
		{"partner.test", "http://partner.test:8080/instmsg/local/IM.EXAMPLE.TEST./instmsg/aliases/Bob/"},
	} {
		e.log.take()
		forged, before := e.g.Stats().Forged, e.appended()
		r := e.do(notify(tc.from, tc.sender))
		if r.Status != rvp.StatusForbidden {
			t.Errorf("RVP-From-Principal %s, sender %s: status %d, want 403; body %q", tc.from, tc.sender, r.Status, r.Body)
		}
		if n := e.appended() - before; n != 0 {
			t.Errorf("RVP-From-Principal %s, sender %s: %d events appended", tc.from, tc.sender, n)
		}
		if e.g.Stats().Forged == forged {
			t.Errorf("RVP-From-Principal %s, sender %s: not counted as forged", tc.from, tc.sender)
		}
		if said := e.log.take(); len(said) != 1 {
			var lines []string
			for _, rec := range said {
				lines = append(lines, rec.Level.String()+" "+rec.Message)
			}
			t.Errorf("RVP-From-Principal %s, sender %s: logged %q, want once", tc.from, tc.sender, lines)
		}
	}
	for _, tc := range []struct{ from, sender string }{
		{"http://im.partner.test/instmsg/aliases/carol", "http://im.partner.test/instmsg/aliases/carol"},
		{"im.partner.test", "http://im.partner.test/instmsg/aliases/carol"},
		{"partner.test", "http://partner.test/instmsg/local/im.partner.test/instmsg/aliases/carol"},
	} {
		before := e.appended()
		if r := e.do(notify(tc.from, tc.sender)); r.Status == rvp.StatusForbidden || e.appended() == before {
			t.Errorf("RVP-From-Principal %s, sender %s: status %d, body %q, not appended: want it taken", tc.from, tc.sender, r.Status, r.Body)
		}
	}
}
