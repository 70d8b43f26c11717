package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/testcluster"
)

// streamStates returns the state of every stream of the server at natsURL.
func streamStates(t *testing.T, natsURL string) map[string]jetstream.StreamState {
	t.Helper()
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	return testcluster.StreamStates(t, js)
}

// streamSeqs returns the last sequence of every stream.
func streamSeqs(t *testing.T, natsURL string) map[string]uint64 {
	t.Helper()
	out := map[string]uint64{}
	for name, st := range streamStates(t, natsURL) {
		out[name] = st.LastSeq
	}
	return out
}

// TestDevMalformed sends malformed and unsupported requests: each gets the
// status the RVP digest names, with RVP-Notifications-Version and
// Content-Length (testcluster checks both on every answer), no stream
// changes, and the server keeps serving.
func TestDevMalformed(t *testing.T) {
	p := startDev(t, t.TempDir())
	alice := newClient(t, p.addr, "alice")
	mustStatus(t, "login", alice.Login(14400), 200)
	mustStatus(t, "online", alice.SetState("online", 1200, 0), 207)
	before := streamSeqs(t, p.natsURL)

	self := "/instmsg/aliases/alice"
	proppatch := func(body string) []byte { return []byte(body) }
	for _, tc := range []struct {
		name   string
		method string
		path   string
		body   []byte
		header []string
		want   int
	}{
		{"bad XML", "PROPPATCH", self, proppatch(`<?xml version="1.0"?><d:propertyupdate xmlns:d="DAV:"><d:set>`), []string{alice.From()}, 400},
		{"wrong root", "PROPPATCH", self, proppatch(`<?xml version="1.0"?><d:propfind xmlns:d="DAV:"/>`), []string{alice.From()}, 400},
		{"state without value", "PROPPATCH", self, proppatch(`<?xml version="1.0"?><d:propertyupdate xmlns:d="DAV:" xmlns:r="http://schemas.microsoft.com/rvp/"><d:set><d:prop><r:state></r:state></d:prop></d:set></d:propertyupdate>`), []string{alice.From()}, 400},
		{"entity bomb", "PROPPATCH", self, proppatch(`<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><d:propertyupdate xmlns:d="DAV:"/>`), []string{alice.From()}, 400},
		{"NOTIFY not XML", "NOTIFY", "/instmsg/aliases/bob", []byte("hello bob"), []string{alice.From()}, 400},
		{"NOTIFY wrong root", "NOTIFY", "/instmsg/aliases/bob", []byte(`<?xml version="1.0"?><r:message xmlns:r="http://schemas.microsoft.com/rvp/"/>`), []string{alice.From()}, 400},
		{"SUBSCRIBE without Notification-Type", "SUBSCRIBE", self, nil, []string{alice.From(), "Call-Back: " + alice.CallBack}, 400},
		{"SUBSCRIBE without Call-Back", "SUBSCRIBE", self, nil, []string{alice.From(), "Notification-Type: pragma/notify"}, 400},
		{"SUBSCRIBE bad Call-Back", "SUBSCRIBE", self, nil, []string{alice.From(), "Notification-Type: pragma/notify", "Call-Back: gopher://x"}, 400},
		{"SUBSCRIBE bad lifetime", "SUBSCRIBE", self, nil, []string{alice.From(), "Notification-Type: pragma/notify", "Call-Back: " + alice.CallBack, "Subscription-Lifetime: forever"}, 400},
		{"UNSUBSCRIBE without id", "UNSUBSCRIBE", self, nil, []string{alice.From()}, 400},
		{"renewal of unknown id", "SUBSCRIBE", self, nil, []string{alice.From(), "Subscription-Id: 999999", "Subscription-Lifetime: 60"}, 412},
		{"PROPFIND without Depth", "PROPFIND", self, []byte(`<?xml version="1.0"?><d:propfind xmlns:d="DAV:"><d:allprop/></d:propfind>`), []string{alice.From()}, 412},
		{"PROPFIND Depth 1", "PROPFIND", self, []byte(`<?xml version="1.0"?><d:propfind xmlns:d="DAV:"><d:allprop/></d:propfind>`), []string{alice.From(), "Depth: 1"}, 412},
		{"unknown user", "SUBSCRIBE", "/instmsg/aliases/nobody", nil, []string{alice.From(), "Notification-Type: update/propchange", "Call-Back: " + alice.URL}, 404},
		{"no principal path", "SUBSCRIBE", "/somewhere/else", nil, []string{alice.From()}, 404},
		{"GET", "GET", self, nil, nil, 501},
		{"OPTIONS", "OPTIONS", "/", nil, nil, 501},
		{"POLL", "POLL", self, nil, nil, 501},
		{"BPROPFIND", "BPROPFIND", self, nil, nil, 501},
		{"COPY", "COPY", self, nil, nil, 405},
		{"PROPPATCH of another's node", "PROPPATCH", "/instmsg/aliases/bob", testcluster.StateBody("busy", 60, 0), []string{alice.From()}, 403},
		{"login on another's node", "SUBSCRIBE", "/instmsg/aliases/bob", nil, []string{alice.From(), "Notification-Type: pragma/notify", "Call-Back: " + alice.CallBack}, 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := alice.Do(tc.method, tc.path, tc.body, tc.header...)
			if r.Status != tc.want {
				t.Errorf("status %d, want %d; body %q", r.Status, tc.want, r.Body)
			}
		})
	}

	// Framing errors: the answer, then the connection is closed.
	for _, tc := range []struct {
		name string
		raw  string
		want int
	}{
		{"garbage request line", "HELLO\r\n\r\n", 400},
		{"bad header line", "SUBSCRIBE /instmsg/aliases/alice HTTP/1.1\r\nno colon here\r\n\r\n", 400},
		{"bad Content-Length", "NOTIFY /instmsg/aliases/bob HTTP/1.1\r\nContent-Length: lots\r\n\r\n", 400},
		{"oversized body", "NOTIFY /instmsg/aliases/bob HTTP/1.1\r\nHost: a\r\nContent-Length: 10000000\r\n\r\n", 413},
		{"chunked body", "NOTIFY /instmsg/aliases/bob HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501},
		{"no Host", "SUBSCRIBE /instmsg/aliases/alice HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 400},
		{"two Hosts", "SUBSCRIBE /instmsg/aliases/alice HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
		{"RVP-From-Principal twice", "SUBSCRIBE /instmsg/aliases/alice HTTP/1.1\r\nHost: a\r\nRVP-From-Principal: http://a/instmsg/aliases/alice\r\nRVP-From-Principal: http://a/instmsg/aliases/bob\r\n\r\n", 400},
		{"NUL in RVP-Ack-Type", "NOTIFY /instmsg/aliases/bob HTTP/1.1\r\nHost: a\r\nRVP-Ack-Type: Deep\x00Or\r\n\r\n", 400},
		{"HTTP/2.0", "SUBSCRIBE /instmsg/aliases/alice HTTP/2.0\r\n\r\n", 505},
		{"too many headers", "SUBSCRIBE /instmsg/aliases/alice HTTP/1.1\r\n" + manyHeaders(100) + "\r\n", 431},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nc, err := net.Dial("tcp", p.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			nc.SetDeadline(time.Now().Add(10 * time.Second))
			io.WriteString(nc, tc.raw)
			br := bufio.NewReader(nc)
			r, err := testcluster.ReadResponse(br)
			if err != nil {
				t.Fatal(err)
			}
			if r.Status != tc.want {
				t.Errorf("status %d, want %d; body %q", r.Status, tc.want, r.Body)
			}
			if r.Header.Get("Connection") != "close" {
				t.Errorf("Connection %q, want close", r.Header.Get("Connection"))
			}
			if _, err := br.ReadByte(); err != io.EOF {
				t.Errorf("connection left open after a framing error (read: %v)", err)
			}
		})
	}

	// Refusals change no state: no fact, no directory event. (Refusals the
	// home node decides, such as 403 and 412, pass through the request
	// stream, which is work, not state; framing and XML errors never get
	// that far.)
	after := streamSeqs(t, p.natsURL)
	for _, name := range []string{events.FactStream(demoHome), events.StreamDirectory, events.StreamLookups} {
		if after[name] != before[name] {
			t.Errorf("refused requests changed stream %s: last sequence %d, was %d", name, after[name], before[name])
		}
	}
	if got, want := after[events.StreamRequests]-before[events.StreamRequests], uint64(3); got != want {
		t.Errorf("%d refused requests reached a home node, want %d (the 412 and the two 403s)", got, want)
	}

	// A connection that ends inside a request leaves nothing behind for
	// the next one: the gateway's workers serve connection after
	// connection with the same buffers.
	for i := range 20 {
		nc, err := net.Dial("tcp", p.addr)
		if err != nil {
			t.Fatal(err)
		}
		nc.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(nc, "SUBSCRIPTIONS /instmsg/aliases/alice HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Cut-Sh")
		nc.(*net.TCPConn).CloseWrite()
		r, err := testcluster.ReadResponse(bufio.NewReader(nc))
		nc.Close()
		if err != nil || r.Status != 400 {
			t.Fatalf("connection %d, ended inside its header: %v %+v, want 400", i, err, r)
		}
		r = alice.Raw([]byte("SUBSCRIPTIONS /instmsg/aliases/alice HTTP/1.1\r\nHost: 127.0.0.1\r\nRVP-From-Principal: " + alice.URL + "\r\n\r\n"))
		mustStatus(t, fmt.Sprintf("request after connection %d ended inside its header", i), r, 200)
	}

	// The server keeps serving, and tolerates what real clients send:
	// bare LF line ends (Miranda), header names in any case, no
	// Content-Length on a bodiless request (Net::RVP), version 1.0 or none.
	raw := "SUBSCRIBE /instmsg/aliases/alice HTTP/1.1\nhost: 127.0.0.1\nnotification-type: pragma/notify\nRVP-FROM-PRINCIPAL: " + alice.URL +
		"\nSUBSCRIPTION-LIFETIME: 600\ncall-back: " + alice.CallBack + "\nRVP-Notifications-Version: 1.0\n\n"
	mustStatus(t, "bare-LF login, any header case", alice.Raw([]byte(raw)), 200)
	r := alice.Raw([]byte("SUBSCRIPTIONS /instmsg/aliases/alice HTTP/1.1\r\nHost: 127.0.0.1\r\nRVP-From-Principal: " + alice.URL + "\r\n\r\n"))
	mustStatus(t, "bodiless request without Content-Length", r, 200)
	r = alice.Raw([]byte("SUBSCRIBE http://IM.EXAMPLE.TEST:80/instmsg/aliases/ALICE/ HTTP/1.1\r\nHost: im.example.test\r\nRVP-From-Principal: " + alice.URL +
		"\r\nNotification-Type: update/propchange\r\nCall-Back: " + alice.URL + "\r\nContent-Length: 0\r\n\r\n"))
	mustStatus(t, "absolute-form target, any case, :80 and trailing slash", r, 207)
	if !strings.Contains(string(r.Body), "<d:href>http://im.example.test/instmsg/aliases/ALICE</d:href>") {
		t.Errorf("d:href is not the node as addressed (normalised):\n%s", r.Body)
	}
}

func manyHeaders(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "X-Junk-%d: 1\r\n", i)
	}
	return b.String()
}
