package gateway

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/rvp"
)

// digestEdge is an edge (nothing answers what is appended: an accepted
// request is appended and then answered 504) serving on 127.0.0.1 with
// the digest profile, alice's password "correct horse".
type digestEdge struct {
	*edge
	addr string
}

func newDigestEdge(t *testing.T) *digestEdge {
	t.Helper()
	e := newEdge(t, NoAuth{})
	applyDirectory(t, e.g.cfg.Directory, &events.PasswordSet{User: events.NewUser("example.test", "alice"), Verifiers: []byte("sealed")})
	creds, err := NewCredentials(CredentialsConfig{Profile: ProfileDigest, Keyring: aliceKeyring{"k"}, Directory: e.g.cfg.Directory, Logger: slog.New(e.log)})
	if err != nil {
		t.Fatal(err)
	}
	e.g.auth = creds
	e.g.cfg.RequestTimeout = 50 * time.Millisecond
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- e.g.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		e.g.Shutdown(ctx)
		<-served
	})
	return &digestEdge{edge: e, addr: ln.Addr().String()}
}

// digestConn is a client's connection to the gateway, from a local
// address of its choice (127.0.0.2 is another host on the loopback).
type digestConn struct {
	t  *testing.T
	nc net.Conn
	br *bufio.Reader
}

func (e *digestEdge) dial(from string) *digestConn {
	e.t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	nc, err := d.Dial("tcp", e.addr)
	if err != nil {
		e.t.Fatalf("connect from %s: %v", from, err)
	}
	e.t.Cleanup(func() { nc.Close() })
	return &digestConn{t: e.t, nc: nc, br: bufio.NewReader(nc)}
}

// subscribe is librvp's login SUBSCRIBE, with an Authorization when
// authorization is not "": the request a captured header is replayed
// with, Call-Back and all.
func subscribe(authorization string) string {
	raw := "SUBSCRIBE /instmsg/aliases/alice HTTP/1.1\r\nHost: im.example.test\r\n" +
		"RVP-From-Principal: http://im.example.test/instmsg/aliases/alice\r\nRVP-Notifications-Version: 0.2\r\n" +
		"Notification-Type: pragma/notify\r\nCall-Back: http://127.0.0.1:9/\r\nSubscription-Lifetime: 14000\r\n"
	if authorization != "" {
		raw += "Authorization: " + authorization + "\r\n"
	}
	return raw + "Content-Length: 0\r\n\r\n"
}

func (c *digestConn) do(raw string) *http.Response {
	c.t.Helper()
	c.nc.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c.nc, raw); err != nil {
		c.t.Fatal(err)
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		c.t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// challenge asks for a Digest challenge on c and returns it.
func (c *digestConn) challenge() string {
	c.t.Helper()
	resp := c.do(subscribe(""))
	ch := resp.Header.Get("WWW-Authenticate")
	if resp.StatusCode != 401 || !strings.HasPrefix(ch, "Digest ") {
		c.t.Fatalf("unauthenticated: %d %q, want 401 with a Digest challenge", resp.StatusCode, ch)
	}
	return ch
}

func nonceOf(t *testing.T, challenge string) string {
	t.Helper()
	p, err := digestParams(strings.TrimPrefix(challenge, "Digest "))
	if err != nil || p["nonce"] == "" {
		t.Fatalf("challenge %q: %v", challenge, err)
	}
	return p["nonce"]
}

func newCnonce() string {
	b := make([]byte, 13)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// digestAnswer answers challenge as alice for librvp's SUBSCRIBE: with
// qop=auth when nc is not "" (librvp's form), else as RFC 2069.
func digestAnswer(t *testing.T, challenge, cnonce, nc string) string {
	t.Helper()
	p, err := digestParams(strings.TrimPrefix(challenge, "Digest "))
	if err != nil {
		t.Fatal(err)
	}
	const user, uri = `EXAMPLE\alice`, "/instmsg/aliases/alice"
	ha1 := md5hex(user + ":" + p["realm"] + ":correct horse")
	ha2 := md5hex("SUBSCRIBE:" + uri)
	if nc == "" {
		return fmt.Sprintf(`Digest username="%s", realm="%s", uri="%s", nonce="%s", response="%s"`,
			user, p["realm"], uri, p["nonce"], md5hex(ha1+":"+p["nonce"]+":"+ha2))
	}
	return fmt.Sprintf(`Digest username="%s", realm="%s", qop="auth", algorithm="MD5", uri="%s", nonce="%s", nc=%s, cnonce="%s", response="%s"`,
		user, p["realm"], uri, p["nonce"], nc, cnonce, md5hex(ha1+":"+p["nonce"]+":"+nc+":"+cnonce+":auth:"+ha2))
}

// accepted checks that raw, sent on c, was let through: appended (and,
// with nothing to answer it at the edge, 504), not refused.
func (e *digestEdge) accepted(what string, c *digestConn, raw string) {
	e.t.Helper()
	before := e.appended()
	resp := c.do(raw)
	if resp.StatusCode == 401 || e.appended() != before+1 {
		e.t.Fatalf("%s: %d, %d appended; want it let through (appended, 504 here)", what, resp.StatusCode, e.appended()-before)
	}
}

// refused checks that raw, sent on c, was answered 401 with a fresh
// Digest challenge (stale=true when stale) and changed nothing: nothing
// appended (so no fact, no NOTIFY), no failed sign-in counted. It returns
// the challenge.
func (e *digestEdge) refused(what string, c *digestConn, raw string, stale bool) string {
	e.t.Helper()
	before, failed, replayed := e.appended(), e.g.Stats().SignInsFailed, e.g.Stats().Replayed
	resp := c.do(raw)
	ch := resp.Header.Get("WWW-Authenticate")
	if resp.StatusCode != 401 || !strings.HasPrefix(ch, "Digest ") {
		e.t.Fatalf("%s: %d %q, want 401 with a fresh Digest challenge", what, resp.StatusCode, ch)
	}
	if got := strings.HasSuffix(ch, "stale=true"); got != stale {
		e.t.Errorf("%s: challenge %q, stale=true %v, want %v", what, ch, got, stale)
	}
	if n := e.appended() - before; n != 0 {
		e.t.Errorf("%s: %d requests appended, want none", what, n)
	}
	if n := e.g.Stats().SignInsFailed - failed; n != 0 {
		e.t.Errorf("%s: %d failed sign-ins counted, want none (no password was guessed)", what, n)
	}
	if n := e.g.Stats().Replayed - replayed; n != 1 {
		e.t.Errorf("%s: %d replays counted, want 1 (rvpd_gateway_refused_total{reason=replayed})", what, n)
	}
	return ch
}

// logged returns the records logged at Info or above whose message
// holds s, and forgets them all.
func (e *digestEdge) logged(s string) []slog.Record {
	var out []slog.Record
	for _, r := range e.log.take() {
		if strings.Contains(r.Message, s) {
			out = append(out, r)
		}
	}
	return out
}

// TestDigestReplayRefused: one Digest Authorization header, captured off
// the wire (HTTP in clear), let anyone resend the request it came with,
// here alice's login SUBSCRIBE with its Call-Back, for the nonce's 5
// minutes, from any address: the nonce was a signed timestamp, usable
// again until it went stale. Now a replay from the address the nonce was
// issued to is refused (the gateway remembers what it accepted), and one
// from another address too (the nonce is signed for its address), each
// with a 401 and a fresh challenge, logged once, appending nothing.
func TestDigestReplayRefused(t *testing.T) {
	e := newDigestEdge(t)
	victim := e.dial("127.0.0.1")
	vch := victim.challenge()
	captured := subscribe(digestAnswer(t, vch, newCnonce(), "00000001"))
	e.accepted("alice's own request", victim, captured)
	e.log.take()

	e.refused("the same request replayed from the same address", e.dial("127.0.0.1"), captured, true)
	if recs := e.logged("Digest credentials refused"); len(recs) != 1 || !strings.Contains(recs[0].Message, "already used") {
		t.Errorf("the replay from the same address logged %d times (%v), want once as already used", len(recs), recs)
	}

	e.refused("the same request replayed from another address", e.dial("127.0.0.2"), captured, false)
	if recs := e.logged("Digest credentials refused"); len(recs) != 1 || !strings.Contains(recs[0].Message, "another address") {
		t.Errorf("the replay from another address logged %d times (%v), want once as issued to another address", len(recs), recs)
	}

	// A nonce of the attacker's own, answered with a captured response,
	// proves nothing either (the response covers the nonce): refused as
	// a wrong password, as before.
	other := e.dial("127.0.0.2")
	forged := strings.Replace(captured, `nonce="`+nonceOf(t, vch)+`"`, `nonce="`+nonceOf(t, other.challenge())+`"`, 1)
	if resp := other.do(forged); resp.StatusCode != 401 {
		t.Errorf("a captured response on the attacker's own nonce: %d, want 401", resp.StatusCode)
	}

	// Alice herself goes on signing in as before.
	again := e.dial("127.0.0.1")
	e.accepted("alice's next request", again, subscribe(digestAnswer(t, again.challenge(), newCnonce(), "00000001")))
}

// TestDigestLibrvpSequence: librvp asks for a challenge for every request
// and answers it with nc=00000001 and a fresh cnonce, on the connection
// of the 401; requests after a login run in parallel. None of that is a
// replay. Reusing a nonce with nc=00000001 and a fresh cnonce (which
// librvp's ChangeLog allows, conformance case 73) is not one either.
func TestDigestLibrvpSequence(t *testing.T) {
	e := newDigestEdge(t)
	var last string
	for i := range 12 {
		c := e.dial("127.0.0.1")
		last = c.challenge()
		e.accepted(fmt.Sprintf("librvp request %d", i), c, subscribe(digestAnswer(t, last, newCnonce(), "00000001")))
	}
	e.accepted("a nonce used again, nc=00000001 with a fresh cnonce", e.dial("127.0.0.1"), subscribe(digestAnswer(t, last, newCnonce(), "00000001")))
	if recs := e.logged("Digest credentials refused"); len(recs) != 0 {
		t.Errorf("librvp's sign-ins logged as refused: %v", recs)
	}
}

// TestDigestNonceCount: an RFC 2617 client may use one nonce for several
// requests, counting nc up (with one cnonce): each count is accepted once,
// in any order; a count seen already is a replay (§3.2.2).
func TestDigestNonceCount(t *testing.T) {
	e := newDigestEdge(t)
	c := e.dial("127.0.0.1")
	ch, cnonce := c.challenge(), newCnonce()
	for _, nc := range []string{"00000001", "00000002", "00000003"} {
		e.accepted("nc="+nc, c, subscribe(digestAnswer(t, ch, cnonce, nc)))
	}
	e.refused("nc=00000002 again", e.dial("127.0.0.1"), subscribe(digestAnswer(t, ch, cnonce, "00000002")), true)
	e.accepted("nc=00000005 after the replay", c, subscribe(digestAnswer(t, ch, cnonce, "00000005")))
	e.accepted("nc=00000004, late", c, subscribe(digestAnswer(t, ch, cnonce, "00000004")))
}

// TestDigestRFC2069NonceOnce: without qop, nothing but the nonce tells
// one request from another, so a nonce is accepted once; the next use
// gets 401 with stale=true and a fresh nonce, which the client answers
// without asking its user (RFC 2617 §3.2.1).
func TestDigestRFC2069NonceOnce(t *testing.T) {
	e := newDigestEdge(t)
	c := e.dial("127.0.0.1")
	ch := c.challenge()
	e.accepted("the first use of a nonce without qop", c, subscribe(digestAnswer(t, ch, "", "")))
	fresh := e.refused("its second use", e.dial("127.0.0.1"), subscribe(digestAnswer(t, ch, "", "")), true)
	// A cnonce, which no response without qop covers, changes nothing.
	e.refused("its second use with a cnonce added", e.dial("127.0.0.1"),
		subscribe(digestAnswer(t, ch, "", "")+`, cnonce="`+newCnonce()+`"`), true)
	e.accepted("the fresh nonce", c, subscribe(digestAnswer(t, fresh, "", "")))
}

// TestDigestReplaysBounded: the gateway remembers accepted Digest
// credentials for their nonce's life and no more than its bound; at the
// bound it refuses new credentials (503 with Retry-After) rather than
// forget used ones, and makes room as nonces die, with no goroutine of
// its own.
func TestDigestReplaysBounded(t *testing.T) {
	dir, dom := aliceDirectory(t)
	now := time.Unix(1_800_000_000, 0)
	c, err := NewCredentials(CredentialsConfig{Profile: ProfileDigest, Keyring: aliceKeyring{"k"}, Directory: dir, DigestReplays: 3,
		Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	ask := func() Outcome {
		return c.Authenticate(&ConnState{}, AuthRequest{Req: &rvp.Request{Method: "SUBSCRIBE", Target: "/instmsg/aliases/alice", Header: rvp.Header{}},
			Client: "192.0.2.1", Domain: dom, Required: true})
	}
	sign := func() (string, Outcome) {
		ch := ask().Challenge[0]
		a := digestAnswer(t, ch, newCnonce(), "00000001")
		h := rvp.Header{}
		h.Add(rvp.HdrAuthorization, a)
		return a, c.Authenticate(&ConnState{}, AuthRequest{Req: &rvp.Request{Method: "SUBSCRIBE", Target: "/instmsg/aliases/alice", Header: h},
			Client: "192.0.2.1", Domain: dom, Required: true})
	}
	replay := func(a string) Outcome {
		h := rvp.Header{}
		h.Add(rvp.HdrAuthorization, a)
		return c.Authenticate(&ConnState{}, AuthRequest{Req: &rvp.Request{Method: "SUBSCRIBE", Target: "/instmsg/aliases/alice", Header: h},
			Client: "192.0.2.1", Domain: dom, Required: true})
	}
	var first string
	for i := range 3 {
		a, out := sign()
		if out.Verdict != Authenticated {
			t.Fatalf("sign-in %d: %+v", i, out)
		}
		if i == 0 {
			first = a
		}
		now = now.Add(time.Minute)
	}
	if _, out := sign(); out.Verdict != Busy || out.RetryAfter <= 0 || out.RetryAfter > 5*time.Minute+time.Minute {
		t.Fatalf("a sign-in past the bound: %+v, want Busy with a Retry-After within the nonce life", out)
	}
	if r := respond(nil, nil, outcomeRefusal(Outcome{Verdict: Busy, RetryAfter: time.Minute, Msg: "m"})); r.Status != rvp.StatusUnavailable || r.Get("Retry-After") != "60" {
		t.Errorf("Busy rendered %d, Retry-After %q; want 503, 60", r.Status, r.Get("Retry-After"))
	}
	if out := replay(first); out.Verdict != Replayed || !strings.HasSuffix(out.Challenge[0], "stale=true") {
		t.Errorf("a replay at the bound: %+v, want Replayed with a stale challenge (still remembered)", out)
	}
	// Once the first nonce has died, there is room again; the nonce
	// itself is now stale, whatever the set holds.
	now = now.Add(3 * time.Minute)
	if _, out := sign(); out.Verdict != Authenticated {
		t.Fatalf("a sign-in once the first nonce died: %+v", out)
	}
	if out := replay(first); out.Verdict != Challenged || !strings.HasSuffix(out.Challenge[0], "stale=true") {
		t.Errorf("the first credentials, their nonce dead: %+v, want a stale challenge", out)
	}
	c.replays.mu.Lock()
	n, buckets := c.replays.n, len(c.replays.minutes)
	c.replays.mu.Unlock()
	if n != 3 || buckets != 3 {
		t.Errorf("the set holds %d credentials in %d buckets, want 3 in 3", n, buckets)
	}
}
