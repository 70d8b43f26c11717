package testcluster

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rvp-im/rvpd/rvp"
)

// Client is a simulated RVP client. It sends each request on a new
// connection, as librvp does, checks that every answer is framed as RVP
// clients need (Content-Length, never chunked, RVP-Notifications-Version),
// and records every NOTIFY its callback listener receives.
type Client struct {
	t      testing.TB
	Server string // host:port of the gateway
	// Host is sent in the Host header; by default the server's host
	// without port, as librvp sends it.
	Host  string
	Alias string
	// URL is the client's principal URL, as librvp builds it: the server's
	// host and port, /instmsg/aliases/<alias>.
	URL string
	// CallBack is the URL of the callback listener.
	CallBack string
	// LoginID is the login subscription's id, once logged in.
	LoginID int
	// Creds, when set, answer the server's 401 challenges as a real
	// client would, on the same connection.
	Creds *Credentials
	// FollowRedirects re-sends a request answered 302 as librvp does: on
	// the same connection, with only the path of Location. Redirected
	// counts the redirects followed.
	FollowRedirects bool
	Redirected      int

	// Source, when set, is the local address requests are sent from
	// (another loopback address stands for another machine).
	Source string
	// CutOK takes a NOTIFY cut short (its sender killed while it wrote)
	// as a real client does, by dropping it; otherwise it fails the test,
	// as any unreadable NOTIFY does. Cut counts them.
	CutOK bool
	Cut   atomic.Int64

	ln       net.Listener
	mu       sync.Mutex
	notifies []Notify
	wake     chan struct{}
	answer   func(Notify) Answer
	closed   int // connections the server closed after the answer (KeepOpen)
	wg       sync.WaitGroup
}

// Answer is how the callback listener answers a NOTIFY.
type Answer struct {
	// Raw is written as is.
	Raw string
	// Delay comes before the answer.
	Delay time.Duration
	// KeepOpen leaves the connection open after the answer, as Net::RVP
	// does, until the server closes it.
	KeepOpen bool
}

// Notify is a NOTIFY the callback listener received.
type Notify struct {
	Target string
	Header rvp.Header
	Body   []byte
}

// State returns the state a propnotification carries, or "".
func (n Notify) State() string {
	b := string(n.Body)
	i := strings.Index(b, "<r:state><r:")
	if i < 0 || !strings.Contains(b, "r:propnotification") {
		return ""
	}
	rest := b[i+len("<r:state><r:"):]
	if j := strings.Index(rest, "/>"); j >= 0 {
		return rest[:j]
	}
	return ""
}

// From returns the d:href of notification-from.
func (n Notify) From() string {
	b := string(n.Body)
	i := strings.Index(b, "<r:notification-from><r:contact><d:href>")
	if i < 0 {
		return ""
	}
	rest := b[i+len("<r:notification-from><r:contact><d:href>"):]
	if j := strings.Index(rest, "</d:href>"); j >= 0 {
		return rest[:j]
	}
	return ""
}

// Response is a server's answer.
type Response struct {
	Status int
	Header rvp.Header
	Body   []byte
}

// NewClient starts a client of alias on server (host:port) with its
// callback listener on loopback; the test's cleanup stops it.
func NewClient(t testing.TB, server, alias string) *Client {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &Client{
		t: t, Server: server, Alias: alias, URL: rvp.LogicalURL(server, alias),
		CallBack: "http://" + ln.Addr().String(), ln: ln, wake: make(chan struct{}),
	}
	c.wg.Add(1)
	go c.listen()
	t.Cleanup(c.Close)
	return c
}

// UseHost makes the client address its server by host name (as when DNS
// names it): its Host header and principal URL use host.
func (c *Client) UseHost(host string) {
	c.Host = host
	c.URL = rvp.LogicalURL(host, c.Alias)
}

// Close stops the callback listener: later NOTIFYs are refused.
func (c *Client) Close() {
	c.ln.Close()
	c.wg.Wait()
}

// AnswerWith makes the callback listener answer NOTIFYs as f says.
func (c *Client) AnswerWith(f func(Notify) Answer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.answer = f
}

// ClosedByServer returns how many kept-open callback connections the
// server closed after reading the answer.
func (c *Client) ClosedByServer() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// Answers real clients give.
var (
	// NetRVPAnswer: no headers at all, custom reason; Net::RVP keeps the
	// connection open.
	NetRVPAnswer = Answer{Raw: "HTTP/1.1 200 Change Notification Accepted\r\n\r\n", KeepOpen: true}
	// MirandaAnswer: LF-only lines and an HTML body.
	MirandaAnswer = Answer{Raw: "HTTP/1.1 200 OK\nContent-Type: text/html\nContent-Length: 44\n\n<html>NOTIFY on node alice succeeded</html>\n"}
)

// LibrvpAnswer is how librvp answers a NOTIFY: no Content-Length.
const LibrvpAnswer = "HTTP/1.1 200 Successful\r\nRVP-Notifications-Version: 0.2\r\n\r\n"

// cutShort reports whether err is a request cut off before its end: the
// connection closed or reset by a sender that died.
func cutShort(err error) bool {
	var ne net.Error
	return errors.Is(err, rvp.ErrIdle) || errors.Is(err, syscall.ECONNRESET) || errors.As(err, &ne) ||
		strings.Contains(err.Error(), "connection closed inside the header") || strings.Contains(err.Error(), "body shorter than Content-Length")
}

func (c *Client) listen() {
	defer c.wg.Done()
	for {
		nc, err := c.ln.Accept()
		if err != nil {
			return
		}
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			defer nc.Close()
			nc.SetDeadline(time.Now().Add(10 * time.Second))
			req, err := rvp.ReadRequest(bufio.NewReader(nc), rvp.Limits{})
			if err != nil {
				if c.CutOK && cutShort(err) {
					c.Cut.Add(1)
					return
				}
				if strings.Contains(err.Error(), `malformed request line "CONNECT {`) {
					// A NATS client's first line: one reconnecting to a NATS
					// server stopped (a fault test's, or another test process's:
					// go test runs packages side by side) whose port this
					// callback was given since. Not the server under test,
					// which speaks HTTP here.
					c.t.Logf("%s's callback: a NATS client connected, reconnecting to a stopped server whose port this callback has now: %v", c.Alias, err)
					return
				}
				c.t.Errorf("%s's callback: unreadable NOTIFY: %v", c.Alias, err)
				return
			}
			n := Notify{Target: req.Target, Header: req.Header, Body: req.Body}
			c.mu.Lock()
			answer := c.answer
			c.mu.Unlock()
			a := Answer{Raw: LibrvpAnswer}
			if answer != nil {
				a = answer(n)
			}
			if req.Method == "NOTIFY" {
				c.mu.Lock()
				c.notifies = append(c.notifies, n)
				close(c.wake)
				c.wake = make(chan struct{})
				c.mu.Unlock()
			}
			if a.Delay > 0 {
				time.Sleep(a.Delay) // the simulated client is slow to answer
			}
			io.WriteString(nc, a.Raw)
			if a.KeepOpen {
				if _, err := io.Copy(io.Discard, nc); err == nil {
					c.mu.Lock()
					c.closed++
					c.mu.Unlock()
				}
			}
		}()
	}
}

// Notifies returns the NOTIFYs received so far.
func (c *Client) Notifies() []Notify {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Notify(nil), c.notifies...)
}

// WaitNotify waits until a NOTIFY after the first skip ones satisfies
// match, and returns it with its index.
func (c *Client) WaitNotify(skip int, d time.Duration, match func(Notify) bool) (Notify, int) {
	c.t.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		for i := skip; i < len(c.notifies); i++ {
			if match(c.notifies[i]) {
				n := c.notifies[i]
				c.mu.Unlock()
				return n, i
			}
		}
		wake := c.wake
		c.mu.Unlock()
		select {
		case <-wake:
		case <-deadline.C:
			c.t.Fatalf("%s: no matching NOTIFY within %v; received %d: %s", c.Alias, d, len(c.Notifies()), c.summary())
		}
	}
}

func (c *Client) summary() string {
	var b strings.Builder
	for i, n := range c.Notifies() {
		fmt.Fprintf(&b, "\n  #%d from %s state %q", i, n.From(), n.State())
	}
	return b.String()
}

// Do sends one request on a new connection and returns the answer.
// Header lines are given as "Name: value".
func (c *Client) Do(method, path string, body []byte, header ...string) *Response {
	c.t.Helper()
	return c.DoHost("", method, path, body, header...)
}

// DoHost is Do with another Host header: a request for a node of another
// IM domain, sent to this client's server.
func (c *Client) DoHost(host, method, path string, body []byte, header ...string) *Response {
	c.t.Helper()
	return c.Raw(c.request(host, method, path, body, header...))
}

// TryDo is Do that returns the failure to reach the server (connect, send,
// read) instead of failing the test: for load that outlives its server.
func (c *Client) TryDo(method, path string, body []byte, header ...string) (*Response, error) {
	return c.TryRaw(c.request("", method, path, body, header...))
}

func (c *Client) request(host, method, path string, body []byte, header ...string) []byte {
	var b bytes.Buffer
	if host == "" {
		host = c.Host
	}
	if host == "" {
		host = strings.Split(c.Server, ":")[0]
	}
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nContent-Length: %d\r\nRVP-Notifications-Version: 0.2\r\nHost: %s\r\n", method, path, len(body), host)
	for _, h := range header {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("\r\n")
	b.Write(body)
	return b.Bytes()
}

// Raw sends raw bytes on a new connection and reads the answer; with
// Creds it answers 401 challenges on the same connection, re-sending the
// request with an Authorization header, as librvp does.
func (c *Client) Raw(raw []byte) *Response {
	c.t.Helper()
	resp, err := c.TryRaw(raw)
	if err != nil {
		c.t.Fatal(err)
	}
	return resp
}

// TryRaw is Raw that returns the failure to reach the server.
func (c *Client) TryRaw(raw []byte) (*Response, error) {
	var d net.Dialer
	if c.Source != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(c.Source)}
	}
	nc, err := d.Dial("tcp", c.Server)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", c.Server, err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(nc)
	send := func(b []byte) (*Response, error) {
		if _, err := nc.Write(b); err != nil {
			return nil, fmt.Errorf("send %q: %w", firstLine(b), err)
		}
		resp, err := ReadResponse(br)
		if err != nil {
			return nil, fmt.Errorf("answer to %q: %w", firstLine(b), err)
		}
		return resp, nil
	}
	cr := c.Creds
	ntlm := cr != nil && strings.HasPrefix(cr.Scheme, "ntlm")
	var resp *Response
	if ntlm && cr.Preemptive {
		resp, err = send(withHeader(raw, "Authorization: NTLM "+base64.StdEncoding.EncodeToString(ntlmNegotiate(cr.Scheme, cr.Domain))))
	} else {
		resp, err = send(raw)
	}
	if err != nil {
		return nil, err
	}
	for range 6 {
		if resp.Status == rvp.StatusMoved && c.FollowRedirects {
			loc, err := rvp.ParseURL(resp.Header.Get(rvp.HdrLocation))
			if err != nil {
				c.t.Fatalf("302 with Location %q: %v", resp.Header.Get(rvp.HdrLocation), err)
			}
			method, target := requestLine(raw)
			raw = bytes.Replace(raw, []byte(method+" "+target), []byte(method+" "+loc.Path), 1)
			c.mu.Lock()
			c.Redirected++
			c.mu.Unlock()
			if resp, err = send(raw); err != nil {
				return nil, err
			}
			continue
		}
		if resp.Status != 401 || cr == nil {
			break
		}
		method, target := requestLine(raw)
		var auth string
		for _, ch := range resp.Header["www-authenticate"] {
			switch {
			case ntlm && strings.HasPrefix(ch, "NTLM "):
				type2, err := base64.StdEncoding.DecodeString(strings.TrimSpace(ch[5:]))
				if err != nil {
					c.t.Fatalf("NTLM challenge %q: %v", ch, err)
				}
				type3, err := ntlmAuthenticate(cr, type2)
				if err != nil {
					c.t.Fatal(err)
				}
				auth = "NTLM " + base64.StdEncoding.EncodeToString(type3)
			case ntlm && ch == "NTLM" && auth == "":
				auth = "NTLM " + base64.StdEncoding.EncodeToString(ntlmNegotiate(cr.Scheme, cr.Domain))
			case strings.HasPrefix(cr.Scheme, "digest") && strings.HasPrefix(ch, "Digest "):
				auth = digestAuthorization(cr, ch, method, target)
			case cr.Scheme == SchemeBasic && strings.HasPrefix(ch, "Basic"):
				auth = basicAuthorization(cr)
			}
		}
		if auth == "" {
			break // nothing this client can answer
		}
		if resp, err = send(withHeader(raw, "Authorization: "+auth)); err != nil {
			return nil, err
		}
	}
	return resp, nil
}

func firstLine(b []byte) string {
	if i := bytes.IndexAny(b, "\r\n"); i >= 0 {
		return string(b[:i])
	}
	return string(b)
}

// ReadResponse reads an answer the way Miranda and librvp do: the body
// only by Content-Length. It fails on a missing Content-Length, on chunked
// encoding and on a missing RVP-Notifications-Version.
func ReadResponse(br *bufio.Reader) (*Response, error) {
	line, err := br.ReadString('\n')
	if err != nil {
		return nil, fmt.Errorf("status line: %w", err)
	}
	line = strings.TrimRight(line, "\r\n")
	if len(line) < 12 || !strings.HasPrefix(line, "HTTP/1.1 ") {
		return nil, fmt.Errorf("malformed status line %q", line)
	}
	code, err := strconv.Atoi(line[9:12])
	if err != nil {
		return nil, fmt.Errorf("malformed status line %q", line)
	}
	resp := &Response{Status: code, Header: make(rvp.Header)}
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			return nil, fmt.Errorf("header: %w", err)
		}
		if !strings.HasSuffix(l, "\r\n") {
			return nil, fmt.Errorf("header line %q not ended by CRLF", l)
		}
		l = strings.TrimRight(l, "\r\n")
		if l == "" {
			break
		}
		name, value, ok := strings.Cut(l, ":")
		if !ok {
			return nil, fmt.Errorf("malformed header line %q", l)
		}
		resp.Header.Add(name, strings.TrimSpace(value))
	}
	if resp.Header.Has("Transfer-Encoding") {
		return nil, fmt.Errorf("%d answer uses Transfer-Encoding %q", code, resp.Header.Get("Transfer-Encoding"))
	}
	if resp.Header.Get(rvp.HdrVersion) != rvp.Version {
		return nil, fmt.Errorf("%d answer lacks RVP-Notifications-Version: 0.2", code)
	}
	cl := resp.Header.Get(rvp.HdrContentLength)
	n, err := strconv.Atoi(cl)
	if err != nil || n < 0 {
		return nil, fmt.Errorf("%d answer has no valid Content-Length (%q)", code, cl)
	}
	resp.Body = make([]byte, n)
	if _, err := io.ReadFull(br, resp.Body); err != nil {
		return nil, fmt.Errorf("body: %w", err)
	}
	return resp, nil
}

// From returns the RVP-From-Principal header line of the client.
func (c *Client) From() string { return rvp.HdrFromPrincipal + ": " + c.URL }

// URLOf returns the principal URL of alias on the client's server.
func (c *Client) URLOf(alias string) string {
	if c.Host != "" {
		return rvp.LogicalURL(c.Host, alias)
	}
	return rvp.LogicalURL(c.Server, alias)
}

// Login sends the login SUBSCRIBE (pragma/notify, Call-Back = listener).
func (c *Client) Login(lifetime int) *Response {
	c.t.Helper()
	r := c.Do("SUBSCRIBE", "/instmsg/aliases/"+c.Alias, nil,
		"Notification-Type: pragma/notify", c.From(),
		"Subscription-Lifetime: "+strconv.Itoa(lifetime), "Call-Back: "+c.CallBack)
	if r.Status == 200 {
		c.LoginID, _ = strconv.Atoi(r.Header.Get(rvp.HdrSubscriptionID))
	}
	return r
}

// SetState PROPPATCHes the client's leased state; viewID 0 sends none.
func (c *Client) SetState(state string, timeout int, viewID int) *Response {
	c.t.Helper()
	return c.Do("PROPPATCH", "/instmsg/aliases/"+c.Alias, StateBody(state, timeout, viewID), "Content-Type: text/xml", c.From())
}

// StateBody is a PROPPATCH body setting a leased state, as librvp sends it.
func StateBody(state string, timeout int, viewID int) []byte {
	view := ""
	if viewID > 0 {
		view = "<r:view-id>" + strconv.Itoa(viewID) + "</r:view-id>"
	}
	return []byte(`<?xml version="1.0"?><d:propertyupdate xmlns:d="DAV:" xmlns:r="http://schemas.microsoft.com/rvp/" xmlns:a="http://schemas.microsoft.com/rvp/acl/"><d:set><d:prop><r:state><r:leased-value><r:value><r:` +
		state + `/></r:value><r:default-value><r:offline/></r:default-value><d:timeout>` + strconv.Itoa(timeout) +
		`</d:timeout></r:leased-value>` + view + `</r:state></d:prop></d:set></d:propertyupdate>`)
}

// Watch subscribes to alias's presence with the client's own URL as
// Call-Back, as buddy subscriptions are made.
func (c *Client) Watch(alias string, lifetime int) *Response {
	c.t.Helper()
	return c.Do("SUBSCRIBE", "/instmsg/aliases/"+alias, nil,
		"Notification-Type: update/propchange", c.From(),
		"Subscription-Lifetime: "+strconv.Itoa(lifetime), "Call-Back: "+c.URL)
}

// MessageBody builds an instant message NOTIFY body from the client to
// alias, as librvp does.
func (c *Client) MessageBody(alias, text string) []byte {
	return c.MessageBodyTo(c.URLOf(alias), text)
}

// MessageBodyTo builds an instant message NOTIFY body from the client to
// the principal URL to (of another organisation, say).
func (c *Client) MessageBodyTo(to, text string) []byte {
	return []byte(`<?xml version="1.0" encoding="UTF-8"?>` + "\n" +
		`<r:notification xmlns:d="DAV:" xmlns:r="http://schemas.microsoft.com/rvp/" xmlns:a="http://schemas.microsoft.com/rvp/acl/"><r:message><r:notification-from><r:contact><d:href>` +
		c.URL + `</d:href><r:description>` + c.Alias + `</r:description></r:contact></r:notification-from><r:notification-to><r:contact><d:href>` +
		to + `</d:href><r:description/></r:contact></r:notification-to><r:msgbody><r:mime-data><![CDATA[MIME-Version: 1.0` + "\r\n" +
		"Content-Type: text/plain; charset=UTF-8\r\nX-MMS-IM-Format: FN=MS%20Shell%20Dlg; EF=; CO=0; CS=0; PF=0\r\nSession-Id: {40C9FE8E-6E81-76FC-1FB8-49F2BE865729}\r\n\r\n" +
		text + `]]></r:mime-data></r:msgbody></r:message></r:notification>`)
}

// Send sends body as a NOTIFY to alias's node.
func (c *Client) Send(alias string, body []byte) *Response {
	c.t.Helper()
	return c.Do("NOTIFY", "/instmsg/aliases/"+alias, body, c.From(), "Content-Type: text/xml", "RVP-Hop-Count: 1", "RVP-Ack-Type: DeepOr")
}
