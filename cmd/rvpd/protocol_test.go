package main

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rvp-im/rvpd/rvp"
)

// TestDevHeadKeepAlive: the answer to HEAD has no body (RFC 9110
// §9.3.2), so a client reading answers on a kept-alive connection finds
// the next answer where it belongs.
func TestDevHeadKeepAlive(t *testing.T) {
	p := startDev(t, t.TempDir())
	c, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(wait))
	io.WriteString(c, "HEAD /instmsg/aliases/alice HTTP/1.1\r\nHost: im.example.test\r\n\r\n"+
		"GET /instmsg/aliases/alice HTTP/1.1\r\nHost: im.example.test\r\n\r\n")
	br := bufio.NewReader(c)
	for _, method := range []string{"HEAD", "GET"} {
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			t.Fatalf("answer to %s: %v", method, err)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 501 || resp.Header.Get(rvp.HdrVersion) == "" {
			t.Errorf("%s: %d, version %q", method, resp.StatusCode, resp.Header.Get(rvp.HdrVersion))
		}
		if method == "GET" && !strings.Contains(string(body), "GET") {
			t.Errorf("GET's body %q does not name the method", body)
		}
	}
}

// TestDevLifetimeOverflow: lifetimes and lease timeouts past any the
// server grants are granted the maximum, not wrapped around to the
// minimum (9223372037 s overflowed a time.Duration).
func TestDevLifetimeOverflow(t *testing.T) {
	p := startDev(t, t.TempDir())
	alice := newClient(t, p.addr, "alice")
	for _, v := range []int{9223372037, 99999999999} {
		r := alice.Login(v)
		mustStatus(t, "login", r, 200)
		if got := r.Header.Get(rvp.HdrLifetime); got != "14400" {
			t.Errorf("Subscription-Lifetime %d granted %s, want the maximum 14400", v, got)
		}
		r = alice.SetState("online", v, 0)
		mustStatus(t, "state", r, 207)
		if !strings.Contains(string(r.Body), "<d:timeout>14400</d:timeout>") {
			t.Errorf("d:timeout %d: lease %s, want the maximum 14400", v, r.Body)
		}
	}
}
