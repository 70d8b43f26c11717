package main

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/rvp-im/rvpd/rvp"
	"github.com/rvp-im/rvpd/testcluster"
)

// client speaks RVP to one server the way librvp does: a new connection
// per request, no Connection header, Host without the port, and NTLMv1
// started preemptively on every connection (a negotiate with the request,
// the request again with the answer to the challenge).
type client struct {
	addr     string // host:port of the server
	ntDomain string
	password string
}

// principal returns alias's principal URL on the server.
func (c *client) principal(alias string) string {
	return "http://" + c.addr + "/instmsg/aliases/" + alias
}

// do sends one request as user to the node of alias and returns the
// answer, which must be framed as RVP clients need it.
func (c *client) do(user, method, alias string, body []byte, header ...string) (*testcluster.Response, error) {
	build := func(auth string) []byte {
		var b bytes.Buffer
		b.Grow(256 + len(body))
		fmt.Fprintf(&b, "%s /instmsg/aliases/%s HTTP/1.1\r\nContent-Length: %d\r\nRVP-Notifications-Version: 0.2\r\nHost: 127.0.0.1\r\nAuthorization: NTLM %s\r\nRVP-From-Principal: %s\r\n",
			method, alias, len(body), auth, c.principal(user))
		for _, h := range header {
			b.WriteString(h)
			b.WriteString("\r\n")
		}
		b.WriteString("\r\n")
		b.Write(body)
		return b.Bytes()
	}
	nc, err := net.DialTimeout("tcp", c.addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReaderSize(nc, 4096)
	creds := &testcluster.Credentials{Scheme: testcluster.SchemeNTLMv1, User: user, Domain: c.ntDomain, Password: c.password}
	if _, err := nc.Write(build(base64.StdEncoding.EncodeToString(testcluster.NTLMNegotiate(creds)))); err != nil {
		return nil, err
	}
	resp, err := testcluster.ReadResponse(br)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, alias, err)
	}
	challenge, ok := strings.CutPrefix(resp.Header.Get(rvp.HdrWWWAuthenticate), "NTLM ")
	if resp.Status != 401 || !ok {
		return nil, fmt.Errorf("%s %s: %d to an NTLM negotiate, want 401 with a challenge", method, alias, resp.Status)
	}
	type2, err := base64.StdEncoding.DecodeString(challenge)
	if err != nil {
		return nil, fmt.Errorf("NTLM challenge: %w", err)
	}
	type3, err := testcluster.NTLMAuthenticate(creds, type2)
	if err != nil {
		return nil, err
	}
	if _, err := nc.Write(build(base64.StdEncoding.EncodeToString(type3))); err != nil {
		return nil, err
	}
	resp, err = testcluster.ReadResponse(br)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, alias, err)
	}
	return resp, nil
}

// expect sends a request and fails unless it is answered with status.
func (c *client) expect(status int, user, method, alias string, body []byte, header ...string) (*testcluster.Response, error) {
	resp, err := c.do(user, method, alias, body, header...)
	if err != nil {
		return nil, err
	}
	if resp.Status != status {
		return resp, fmt.Errorf("%s %s as %s: %d %q, want %d", method, alias, user, resp.Status, truncate(string(resp.Body), 200), status)
	}
	return resp, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// login is librvp's login SUBSCRIBE: the Call-Back of the user's
// notifications.
func (c *client) login(user, callback string) error {
	_, err := c.expect(200, user, "SUBSCRIBE", user, nil,
		"Notification-Type: pragma/notify", "Subscription-Lifetime: 14000", "Call-Back: "+callback)
	return err
}

// setState is librvp's PROPPATCH of its leased state.
func (c *client) setState(user, state string) error {
	_, err := c.expect(207, user, "PROPPATCH", user, testcluster.StateBody(state, 14400, 0), "Content-Type: text/xml")
	return err
}

// watch is librvp's buddy SUBSCRIBE: the Call-Back is the watcher's own
// principal URL. The answer is 200, or 207 with the buddy's properties.
func (c *client) watch(user, buddy string) error {
	resp, err := c.do(user, "SUBSCRIBE", buddy, nil,
		"Notification-Type: update/propchange", "Subscription-Lifetime: 14000", "Call-Back: "+c.principal(user))
	if err != nil {
		return err
	}
	if resp.Status != 200 && resp.Status != 207 {
		return fmt.Errorf("SUBSCRIBE %s as %s: %d %q, want 200 or 207", buddy, user, resp.Status, truncate(string(resp.Body), 200))
	}
	return nil
}

// send sends an instant message NOTIFY and returns its status.
func (c *client) send(from, to, text string) (int, error) {
	body := []byte(`<?xml version="1.0" encoding="UTF-8"?>` + "\n" +
		`<r:notification xmlns:d="DAV:" xmlns:r="http://schemas.microsoft.com/rvp/" xmlns:a="http://schemas.microsoft.com/rvp/acl/"><r:message><r:notification-from><r:contact><d:href>` +
		c.principal(from) + `</d:href><r:description>` + from + `</r:description></r:contact></r:notification-from><r:notification-to><r:contact><d:href>` +
		c.principal(to) + `</d:href><r:description/></r:contact></r:notification-to><r:msgbody><r:mime-data><![CDATA[MIME-Version: 1.0` + "\n" +
		"Content-Type: text/plain; charset=UTF-8\nX-MMS-IM-Format: FN=MS%20Shell%20Dlg; EF=; CO=0; CS=0; PF=0\nSession-Id: {40C9FE8E-6E81-76FC-1FB8-49F2BE865729}\n\n" +
		text + `]]></r:mime-data></r:msgbody></r:message></r:notification>`)
	resp, err := c.do(from, "NOTIFY", to, body, "Content-Type: text/xml", "RVP-Hop-Count: 1", "RVP-Ack-Type: DeepOr")
	if err != nil {
		return 0, err
	}
	return resp.Status, nil
}

// messageText returns the text of an instant message NOTIFY body: what
// follows the MIME header in r:mime-data.
func messageText(body []byte) (string, bool) {
	_, rest, ok := bytes.Cut(body, []byte("<![CDATA["))
	if !ok {
		return "", false
	}
	mime, _, ok := bytes.Cut(rest, []byte("]]>"))
	if !ok {
		return "", false
	}
	for _, sep := range []string{"\r\n\r\n", "\n\n"} {
		if _, text, ok := bytes.Cut(mime, []byte(sep)); ok {
			return string(text), true
		}
	}
	return "", false
}

// notifiedState returns the state and the sender a propnotification
// carries.
func notifiedState(body []byte) (state, from string, ok bool) {
	b := string(body)
	if !strings.Contains(b, "r:propnotification") {
		return "", "", false
	}
	_, rest, ok := strings.Cut(b, "<r:notification-from><r:contact><d:href>")
	if !ok {
		return "", "", false
	}
	from, _, _ = strings.Cut(rest, "</d:href>")
	_, rest, ok = strings.Cut(b, "<r:state><r:")
	if !ok {
		return "", "", false
	}
	state, _, ok = strings.Cut(rest, "/>")
	return state, from, ok
}

// notification is a NOTIFY a callback listener received.
type notification struct {
	alias string // the user whose Call-Back it reached
	body  []byte
	at    time.Time
}

// sink is the callback listener of every load user of one server: a
// user's Call-Back is http://<sink>/<alias>. It answers each NOTIFY as
// librvp does (200, no Content-Length, then closes) after handing it to
// the current handler.
type sink struct {
	ln      net.Listener
	handler atomic.Pointer[func(notification)]
	count   atomic.Int64
	last    atomic.Int64 // when the last NOTIFY came, in Unix nanoseconds
}

func newSink() (*sink, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &sink{ln: ln}
	go s.serve()
	return s, nil
}

// callback returns alias's Call-Back URL.
func (s *sink) callback(alias string) string { return "http://" + s.ln.Addr().String() + "/" + alias }

// handle sets the function each NOTIFY is given to (nil: none).
func (s *sink) handle(f func(notification)) {
	if f == nil {
		s.handler.Store(nil)
		return
	}
	s.handler.Store(&f)
}

func (s *sink) serve() {
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		go func() {
			defer nc.Close()
			nc.SetDeadline(time.Now().Add(30 * time.Second))
			req, err := rvp.ReadRequest(bufio.NewReader(nc), rvp.Limits{})
			if err != nil {
				return
			}
			s.count.Add(1)
			s.last.Store(time.Now().UnixNano())
			if h := s.handler.Load(); h != nil {
				(*h)(notification{alias: strings.TrimPrefix(req.Target, "/"), body: req.Body, at: time.Now()})
			}
			nc.Write([]byte("HTTP/1.1 200 Successful\r\nRVP-Notifications-Version: " + rvp.Version + "\r\n\r\n"))
		}()
	}
}

func (s *sink) close() { s.ln.Close() }

func userName(i int) string { return "user" + strconv.Itoa(i) }
