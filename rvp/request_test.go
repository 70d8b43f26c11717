package rvp

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
)

// Requests as real clients send them (from the digest and the wire notes).
var requestSeeds = []string{
	// librvp login (CRLF, Content-Length first, Host without port).
	"SUBSCRIBE /instmsg/aliases/alice HTTP/1.1\r\nContent-Length: 0\r\nRVP-Notifications-Version: 0.2\r\nHost: 127.0.0.1\r\nNotification-Type: pragma/notify\r\nRVP-From-Principal: http://127.0.0.1:18180/instmsg/aliases/alice\r\nSubscription-Lifetime: 14000\r\nCall-Back: http://127.0.0.1:36217\r\n\r\n",
	// Miranda: bare LF.
	"SUBSCRIBE /instmsg/aliases/alice HTTP/1.1\nSubscription-Lifetime: 14400\nNotification-Type: pragma/notify\nUser-Agent: msmsgs/5.1.0.639\nCall-Back: http://10.0.0.21:3044\nRVP-Notifications-Version: 0.2\nRVP-From-Principal: http://im.example.com/instmsg/aliases/alice\nHost: im.example.com\nContent-Length: 0\n\n",
	// Net::RVP: no Content-Length on a bodiless request.
	"UNSUBSCRIBE /instmsg/aliases/bob HTTP/1.1\r\nTE: deflate,gzip;q=0.3\r\nConnection: TE\r\nHost: 127.0.0.1\r\nRVP-From-Principal: http://127.0.0.1/instmsg/aliases/alice\r\nSubscription-Id: 6\r\n\r\n",
	// Absolute form.
	"SUBSCRIBE http://im.example.com/instmsg/aliases/stevem HTTP/1.1\r\nHost: im.example.com\r\nContent-Length: 0\r\n\r\n",
	"PROPPATCH /instmsg/aliases/alice HTTP/1.1\r\nHost: im.example.com\r\nContent-Length: 5\r\n\r\nhello",
	"NOTIFY / HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi",
	"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n  folded\r\n\r\n",
}

func TestReadRequestClients(t *testing.T) {
	for _, raw := range requestSeeds[:4] {
		req, err := ReadRequest(bufio.NewReader(strings.NewReader(raw)), Limits{})
		if err != nil {
			t.Fatalf("%q: %v", firstLineOf(raw), err)
		}
		if req.Header.Get("rvp-from-principal") == "" && !strings.Contains(raw, "stevem") {
			t.Errorf("%q: header not found case-insensitively", firstLineOf(raw))
		}
		if len(req.Body) != 0 {
			t.Errorf("%q: body %q", firstLineOf(raw), req.Body)
		}
	}
	req, err := ReadRequest(bufio.NewReader(strings.NewReader(requestSeeds[1])), Limits{})
	if err != nil || req.Header.Get("Call-Back") != "http://10.0.0.21:3044" || req.Method != "SUBSCRIBE" || req.Close {
		t.Errorf("bare-LF request: %+v, %v", req, err)
	}
	req, err = ReadRequest(bufio.NewReader(strings.NewReader(requestSeeds[6])), Limits{})
	if err != nil || req.Header.Get("X") != "a folded" {
		t.Errorf("folded header: %q, %v", req.Header.Get("X"), err)
	}
}

func TestReadRequestPipelined(t *testing.T) {
	br := bufio.NewReader(strings.NewReader(requestSeeds[4] + requestSeeds[5]))
	a, err := ReadRequest(br, Limits{})
	if err != nil || string(a.Body) != "hello" {
		t.Fatalf("first: %v %q", err, a.Body)
	}
	b, err := ReadRequest(br, Limits{})
	if err != nil || string(b.Body) != "hi" || !b.Close {
		t.Fatalf("second: %v %+v", err, b)
	}
	if _, err := ReadRequest(br, Limits{}); !errors.Is(err, ErrIdle) {
		t.Fatalf("after the last request: %v, want ErrIdle", err)
	}
}

func TestReadRequestRefuses(t *testing.T) {
	for _, tc := range []struct {
		raw    string
		status int
	}{
		{"HELLO\r\n\r\n", 400},
		{"SUBSCRIBE /x HTTP/1.1\r\nHost: a\r\nbad header\r\n\r\n", 400},
		{"SUBSCRIBE /x HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400},
		{"SUBSCRIBE /x HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400},
		{"SUBSCRIBE /x HTTP/1.1\r\nHost: a\r\nContent-Length: 999999999\r\n\r\n", 413},
		{"SUBSCRIBE /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", 501},
		{"SUBSCRIBE /x HTTP/3\r\n\r\n", 505},
		{"SUBSCRIBE /x HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nshort", 400},
		{"SUBSCRIBE /x HTTP/1.1\r\nHost: a\r\n" + strings.Repeat("A: b\r\n", 1) + strings.Repeat("x", 9000) + ": y\r\n\r\n", 431},
		{"SUBSCRIBE /x HTTP/1.1\r\nHost: a", 400},
		{"SUB\x00SCRIBE /x HTTP/1.1\r\n\r\n", 400},
		// RFC 9112 §3.2: an HTTP/1.1 request has exactly one Host.
		{"SUBSCRIBE /x HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 400},
		{"SUBSCRIBE /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
		{"SUBSCRIBE /x HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n", 400},
		// Single-valued fields given twice.
		{"SUBSCRIBE /x HTTP/1.1\r\nHost: a\r\nRVP-From-Principal: http://a/instmsg/aliases/x\r\nRVP-From-Principal: http://a/instmsg/aliases/y\r\n\r\n", 400},
		{"SUBSCRIBE /x HTTP/1.1\r\nHost: a\r\nCall-Back: http://a:1\r\ncall-back: http://b:2\r\n\r\n", 400},
		{"SUBSCRIBE /x HTTP/1.1\r\nHost: a\r\nSubscription-Id: 1\r\nSubscription-Id: 2\r\n\r\n", 400},
		{"NOTIFY /x HTTP/1.1\r\nHost: a\r\nRVP-Hop-Count: 1\r\nRVP-Hop-Count: 9\r\n\r\n", 400},
		{"NOTIFY /x HTTP/1.1\r\nHost: a\r\nAuthorization: NTLM a\r\nAuthorization: NTLM b\r\n\r\n", 400},
		// Control characters inside values, tab aside.
		{"NOTIFY /x HTTP/1.1\r\nHost: a\r\nRVP-Ack-Type: Deep\x00Or\r\n\r\n", 400},
		{"NOTIFY /x HTTP/1.1\r\nHost: a\r\nRVP-Ack-Type: Deep\x01Or\r\n\r\n", 400},
		{"NOTIFY /x HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n", 400},
		{"NOTIFY /x HTTP/1.1\r\nHost: a\r\nX: a\r\n \x1bfolded\r\n\r\n", 400},
	} {
		_, err := ReadRequest(bufio.NewReader(strings.NewReader(tc.raw)), Limits{})
		var pe *ProtocolError
		if !errors.As(err, &pe) || pe.Status != tc.status {
			t.Errorf("%q: %v, want status %d", firstLineOf(tc.raw), err, tc.status)
		}
	}
}

// TestReadRequestAccepts: what the refusals above must not catch.
func TestReadRequestAccepts(t *testing.T) {
	for _, raw := range []string{
		"SUBSCRIBE /x HTTP/1.0\r\n\r\n",                                      // HTTP/1.0 needs no Host
		"NOTIFY /x HTTP/1.1\r\nHost: a\r\nX-Two: 1\r\nX-Two: 2\r\n\r\n",      // others may repeat
		"NOTIFY /x HTTP/1.1\r\nHost: a\r\nUser-Agent: a\tb \x80\xff\r\n\r\n", // tab and obs-text
	} {
		if _, err := ReadRequest(bufio.NewReader(strings.NewReader(raw)), Limits{}); err != nil {
			t.Errorf("%q: %v", raw, err)
		}
	}
}

// TestReadRequestFoldingLinear: folded header lines cost what they
// weigh. Each continuation line used to copy the whole value folded so
// far, so a request of 56 KB (an 8,000-byte field and 24,000 lines of one
// space) within every limit made ReadRequest allocate 187 MB and spend
// 135 ms.
func TestReadRequestFoldingLinear(t *testing.T) {
	raw := "SUBSCRIBE /x HTTP/1.1\r\nHost: a\r\nX: " + strings.Repeat("v", 8000) + "\r\n" + strings.Repeat(" \n", 24000) + "\r\n"
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	req, err := ReadRequest(bufio.NewReader(strings.NewReader(raw)), Limits{})
	runtime.ReadMemStats(&after)
	if err != nil || req.Header.Get("X") != strings.Repeat("v", 8000) {
		t.Fatalf("folded request: %v", err)
	}
	if got := after.TotalAlloc - before.TotalAlloc; got > 4<<20 {
		t.Errorf("reading a %d-byte request allocated %d MB", len(raw), got>>20)
	}
	// Folding still joins the pieces with one space, as before.
	for raw, want := range map[string]string{
		"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n  b \r\n\t\r\n c\r\n\r\n": "a b c",
		"GET / HTTP/1.1\r\nHost: a\r\nX:\r\n  b\r\nY: 1\r\n\r\n":        "b",
	} {
		req, err := ReadRequest(bufio.NewReader(strings.NewReader(raw)), Limits{})
		if err != nil || req.Header.Get("X") != want {
			t.Errorf("%q: X %q, %v; want %q", raw, req.Header.Get("X"), err, want)
		}
	}
}

func TestParseCount(t *testing.T) {
	for in, want := range map[string]int{"0": 0, " 14400 ": 14400, "2147483647": MaxSeconds, "2147483648": MaxSeconds,
		"9223372037": MaxSeconds, "99999999999999999999999999": MaxSeconds} {
		if got, err := ParseCount(in); err != nil || got != want {
			t.Errorf("ParseCount(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-1", "+1", "1e3", "0x10", "1 2"} {
		if _, err := ParseCount(in); err == nil {
			t.Errorf("ParseCount(%q) accepted", in)
		}
	}
}

func firstLineOf(s string) string {
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		return s[:i]
	}
	return s
}

func FuzzReadRequest(f *testing.F) {
	for _, s := range requestSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		lim := Limits{MaxLine: 512, MaxHeaders: 16, MaxHeaderBytes: 2048, MaxBody: 4096}
		br := bufio.NewReader(bytes.NewReader(raw))
		for range 4 {
			req, err := ReadRequest(br, lim)
			if err != nil {
				var pe *ProtocolError
				if errors.As(err, &pe) && (pe.Status < 400 || pe.Status > 505) {
					t.Fatalf("status %d outside 4xx/5xx", pe.Status)
				}
				return
			}
			if len(req.Body) > lim.MaxBody || len(req.Header) > lim.MaxHeaders {
				t.Fatalf("limits not enforced: %d body bytes, %d fields", len(req.Body), len(req.Header))
			}
			if req.Method == "" || req.Target == "" {
				t.Fatalf("accepted an empty method or target: %+v", req)
			}
		}
	})
}

func TestResponseFraming(t *testing.T) {
	var b bytes.Buffer
	w := bufio.NewWriter(&b)
	r := &Response{Status: 200}
	r.Set(HdrSubscriptionID, "7")
	r.Set("Content-Length", "999") // ignored: the writer counts
	if err := r.WriteTo(w); err != nil {
		t.Fatal(err)
	}
	want := "HTTP/1.1 200 Successful\r\nSubscription-Id: 7\r\nRVP-Notifications-Version: 0.2\r\nContent-Length: 0\r\n\r\n"
	if b.String() != want {
		t.Errorf("got %q\nwant %q", b.String(), want)
	}
	b.Reset()
	r = &Response{Status: 207, Body: bytes.Repeat([]byte("x"), 10000), Close: true}
	r.WriteTo(w)
	if !strings.Contains(b.String(), "Content-Length: 10000\r\n") || strings.Contains(b.String(), "chunked") || !strings.Contains(b.String(), "Connection: close") {
		t.Errorf("large body framing: %q", b.String()[:120])
	}
	b.Reset()
	r = &Response{Status: 302}
	r.Set(HdrLocation, "http://a.test/x\r\nSet-Cookie: evil\n\xff")
	r.WriteTo(w)
	if want := "Location: http://a.test/x  Set-Cookie: evil \xff\r\n"; !strings.Contains(b.String(), want) {
		t.Errorf("a value with line breaks: %q, want %q in it", b.String(), want)
	}
	// The answer to HEAD has a header and no body (RFC 9110 §9.3.2).
	b.Reset()
	r = &Response{Status: 501, Body: []byte("HEAD is not implemented\n"), Head: true}
	r.WriteTo(w)
	if want := "HTTP/1.1 501 Not Implemented\r\nRVP-Notifications-Version: 0.2\r\nContent-Length: 24\r\n\r\n"; b.String() != want {
		t.Errorf("HEAD answer %q, want %q", b.String(), want)
	}
	for code, want := range map[int]string{200: "Successful", 207: "Multi-Status", 302: "Object moved", 401: "Access Denied", 412: "Precondition Failed", 508: "Loop Detected"} {
		if got := ReasonPhrase(code); got != want {
			t.Errorf("ReasonPhrase(%d) = %q, want %q", code, got, want)
		}
	}
}

// answerOnce listens on loopback, answers the first request it is sent
// with answer, and hands the request over; its listener's address is
// returned.
func answerOnce(t *testing.T, answer string) (string, <-chan *Request) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	got := make(chan *Request, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		req, _ := ReadRequest(bufio.NewReader(c), Limits{})
		io.WriteString(c, answer)
		got <- req
	}()
	return ln.Addr().String(), got
}

// The NOTIFY client through an outbound HTTP proxy sends a request to
// another organisation (Foreign) with the absolute URL as request target
// to the proxy, Host naming the destination; a request to a client's
// listener goes to it directly.
func TestClientProxy(t *testing.T) {
	addr, got := answerOnce(t, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	proxy, _ := ParseURL("http://" + addr)
	c := &Client{Proxy: &proxy}
	dest, _ := ParseURL("http://im.acme.test/instmsg/aliases/dave")
	ans, err := c.Do(context.Background(), Outbound{URL: dest, Body: []byte("<x/>"), ReadBody: true, Foreign: true})
	if err != nil || ans.Status != 200 || string(ans.Body) != "ok" {
		t.Fatalf("answer %+v, %v", ans, err)
	}
	req := <-got
	if req.Method != "NOTIFY" || req.Target != "http://im.acme.test/instmsg/aliases/dave" || req.Header.Get("Host") != "im.acme.test" || string(req.Body) != "<x/>" {
		t.Errorf("the proxy got %s %s (Host %q) %q", req.Method, req.Target, req.Header.Get("Host"), req.Body)
	}

	// A client's listener: reached directly (the proxy, which answered
	// once and takes no more, is not asked).
	addr, direct := answerOnce(t, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
	cb, _ := ParseURL("http://" + addr)
	if ans, err := c.Do(context.Background(), Outbound{URL: cb, Body: []byte("<y/>")}); err != nil || ans.Status != 200 {
		t.Fatalf("a client's listener, with a proxy set: answer %+v, %v", ans, err)
	}
	if req := <-direct; req.Target != "/" || string(req.Body) != "<y/>" {
		t.Errorf("the client's listener got %s %s %q", req.Method, req.Target, req.Body)
	}
}

func TestHeaderLookup(t *testing.T) {
	h := Header{}
	h.Add("Call-Back", "http://10.0.0.7:5757")
	long := "X-A-Field-Name-Longer-Than-Thirty-Two-Bytes"
	h.Add(long, "v")
	for name, want := range map[string]string{"CALL-BACK": "http://10.0.0.7:5757", "call-back": "http://10.0.0.7:5757",
		strings.ToUpper(long): "v", "Call-Bac": "", "": ""} {
		if got := h.Get(name); got != want {
			t.Errorf("Get(%q) = %q, want %q", name, got, want)
		}
		if h.Has(name) != (want != "") {
			t.Errorf("Has(%q) = %v", name, h.Has(name))
		}
	}
}

// TestClientBuffers: exchanges on lent buffers carry each its own request
// and answer, though an answer left bytes unread in the reader and a body
// overflowed the writer before.
func TestClientBuffers(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	bodies := []string{strings.Repeat("long body ", 1000), "<short/>", strings.Repeat("x", 4095), "", "<last/>"}
	got := make(chan string, len(bodies))
	go func() {
		for i := range bodies {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			req, err := ReadRequest(bufio.NewReader(c), Limits{})
			if err != nil {
				got <- "error: " + err.Error()
				c.Close()
				continue
			}
			got <- string(req.Body)
			// The answer's body, then bytes past it the client must not
			// read as the next answer's.
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\na%dHTTP/1.1 500 Stale\r\n\r\n", i)
			c.Close()
		}
	}()
	c := &Client{Buffers: new(Buffers)}
	dest, _ := ParseURL("http://" + ln.Addr().String() + "/instmsg/aliases/dave")
	for i, body := range bodies {
		ans, err := c.Do(context.Background(), Outbound{URL: dest, Body: []byte(body), ReadBody: true})
		if err != nil || ans.Status != 200 || string(ans.Body) != fmt.Sprintf("a%d", i) {
			t.Fatalf("exchange %d: answer %+v, %v", i, ans, err)
		}
		if g := <-got; g != body {
			t.Fatalf("exchange %d: the server got a body of %d bytes, want %d", i, len(g), len(body))
		}
	}
}
