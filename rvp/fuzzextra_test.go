package rvp

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/rvp-im/rvpd/events"
)

// FuzzReadFinalAnswer reads what a peer answers the NOTIFY client (a
// client's listener, another organisation's server: both on the other
// side of the trust boundary) as Client.Do does: past interim answers to
// the final one, then its body. It must not panic; what it accepts is a
// final answer (200 to 999, never 101) whose body is within
// MaxAnswerBody and, when Content-Length is given, exactly that long.
func FuzzReadFinalAnswer(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 Successful\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 207 Multi-Status\nContent-Type: text/xml\n\n<x/>",
		"HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 101 Switching Protocols\r\n\r\n",
		"HTTP/1.0 302 Object moved\r\nLocation: http://h/x\r\nContent-Length: +3\r\n\r\nabc",
		"HTTP/1.1 200 OK\r\nContent-Length: 999999999\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 5\r\n\r\nabcde",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		br := bufio.NewReader(bytes.NewReader(raw))
		ans, err := readFinalAnswer(br)
		if err != nil {
			return
		}
		if ans.Status < 200 || ans.Status > 999 {
			t.Fatalf("final answer with status %d", ans.Status)
		}
		body, err := readBody(br, ans.Header)
		if err != nil {
			return
		}
		if len(body) > MaxAnswerBody {
			t.Fatalf("body of %d bytes, over MaxAnswerBody", len(body))
		}
		if cl := ans.Header.Get(HdrContentLength); cl != "" {
			if n, _ := strconv.Atoi(cl); n != len(body) {
				t.Fatalf("Content-Length %q, body of %d bytes", cl, len(body))
			}
		}
	})
}

// FuzzNormalizeHost checks the normaliser of Host headers and URL hosts:
// what it returns is lower-case, carries no port 80 and any other port
// written as a number is (no leading zeros, at most 65535), is a fixed point,
// is what ParseURL makes of the same host, and is something a dialler
// takes apart (DialAddr, net.SplitHostPort).
func FuzzNormalizeHost(f *testing.F) {
	for _, s := range []string{"IM.Example.COM", "im.example.com:80", "10.0.0.1:3044", "[::1]", "[::1]:80", "[::1]:8080", "[fe80::1%25eth0]", "a_b", "h:", "[::1", ":80", " x ",
		"im.example.com:080", "[::1]:0080", "h:08080", "h:000", "h:65536", "h:0000000080"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		h, err := NormalizeHost(in)
		if err != nil {
			return
		}
		if h == "" || h != strings.ToLower(h) || strings.ContainsAny(h, " \t\r\n/?#@") {
			t.Fatalf("NormalizeHost(%q) = %q", in, h)
		}
		if again, err := NormalizeHost(h); err != nil || again != h {
			t.Fatalf("NormalizeHost(%q) = %q, which normalises to %q, %v", in, h, again, err)
		}
		if strings.HasSuffix(h, ":80") {
			t.Fatalf("NormalizeHost(%q) = %q keeps port 80", in, h)
		}
		// One spelling a port: the number, as a dialer reads it.
		if _, port, err := net.SplitHostPort(h); err == nil {
			if n, err := strconv.Atoi(port); err != nil || n > 65535 || strconv.Itoa(n) != port {
				t.Fatalf("NormalizeHost(%q) = %q: port %q is not one of 0 to 65535 written as a number is", in, h, port)
			}
		}
		// (A URL is bounded, 2048 bytes, as a host alone is not.)
		if !strings.ContainsAny(in, "/?#") && len("http://"+in) <= 2048 {
			if u, err := ParseURL("http://" + in); err != nil || u.Host != h {
				t.Fatalf("NormalizeHost(%q) = %q, but ParseURL of it gives %+v, %v", in, h, u, err)
			}
		}
		name, port, err := net.SplitHostPort(DialAddr(h))
		if err != nil || name == "" || port == "" {
			t.Fatalf("DialAddr(%q) = %q: %q %q %v", h, DialAddr(h), name, port, err)
		}
	})
}

// FuzzBodyEvents: what the body parsers accept from a client reaches the
// home node through the event log: a PROPPATCH, PROPFIND or ACL body the
// gateway takes must come out of events.Encode and events.Decode as it
// went in (encoding/json, say, would silently replace invalid UTF-8).
func FuzzBodyEvents(f *testing.F) {
	for _, seeds := range [][]string{proppatchSeeds, propfindSeeds, aclSeeds} {
		for _, s := range seeds {
			f.Add([]byte(s))
		}
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		roundTrip := func(e events.Event) events.Event {
			data, err := events.Encode(e)
			if err != nil {
				t.Fatalf("encode %s: %v", e.Type(), err)
			}
			back, err := events.Decode(e.Type(), data)
			if err != nil {
				t.Fatalf("decode %s %s: %v", e.Type(), data, err)
			}
			return back
		}
		if st, other, err := ParsePropertyUpdate(body); err == nil {
			back := roundTrip(&events.PropPatch{State: st, Set: other}).(*events.PropPatch)
			if !reflect.DeepEqual(back.State, st) || !equalSlices(back.Set, other) {
				t.Fatalf("PROPPATCH %q: parsed %+v %q, through the log %+v %q", body, st, other, back.State, back.Set)
			}
		}
		if all, names, props, err := ParsePropFind(body); err == nil {
			back := roundTrip(&events.PropFind{All: all, Names: names, Props: props}).(*events.PropFind)
			if back.All != all || back.Names != names || !equalSlices(back.Props, props) {
				t.Fatalf("PROPFIND %q: parsed %v %v %q, through the log %+v", body, all, names, props, back)
			}
		}
		if aces, err := ParseACL(body); err == nil {
			back := roundTrip(&events.ACL{Write: true, ACEs: aces}).(*events.ACL)
			if len(back.ACEs) != len(aces) {
				t.Fatalf("ACL %q: %d ACEs parsed, %d through the log", body, len(aces), len(back.ACEs))
			}
			for i, a := range aces {
				b := back.ACEs[i]
				if a.Principal != b.Principal || a.User != b.User || !equalSlices(a.Credentials, b.Credentials) ||
					!equalSlices(a.Grant, b.Grant) || !equalSlices(a.Deny, b.Deny) {
					t.Fatalf("ACL %q: ACE %d parsed %+v, through the log %+v", body, i, a, b)
				}
			}
		}
	})
}

// equalSlices compares slices by their elements, nil and empty alike (the
// event encoding omits empty ones).
func equalSlices[T comparable](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// FuzzReadRequestHTTP compares the request reader with net/http's on the
// same bytes, up to three requests on one connection. Where both take a
// request they must agree on its method, target and body, and so on
// where the next request starts: a proxy in front of the gateway frames
// requests as net/http does, and a disagreement is a smuggled request.
func FuzzReadRequestHTTP(f *testing.F) {
	for _, s := range requestSeeds {
		f.Add([]byte(s))
	}
	f.Add([]byte(requestSeeds[4] + requestSeeds[5]))
	f.Add([]byte("PROPPATCH / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabcPROPFIND / HTTP/1.1\r\nHost: a\r\n\r\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		ours := bufio.NewReader(bytes.NewReader(raw))
		theirs := bufio.NewReader(bytes.NewReader(raw))
		for range 3 {
			req, err := ReadRequest(ours, Limits{MaxBody: 4096})
			if err != nil {
				return
			}
			hreq, err := http.ReadRequest(theirs)
			if err != nil {
				return
			}
			body, err := io.ReadAll(hreq.Body)
			if err != nil {
				return
			}
			if req.Method != hreq.Method || req.Target != hreq.RequestURI || !bytes.Equal(req.Body, body) {
				t.Fatalf("%q:\nours     %s %s body %q\nnet/http %s %s body %q", raw, req.Method, req.Target, req.Body, hreq.Method, hreq.RequestURI, body)
			}
		}
	})
}
