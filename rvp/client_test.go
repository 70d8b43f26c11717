package rvp

import (
	"context"
	"net"
	"testing"
	"time"
)

// serveOnce answers the first connection ln accepts with answer, once it
// has read the request, and keeps it open for hold.
func serveOnce(t *testing.T, answer string, hold time.Duration) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		b := make([]byte, 4096)
		c.Read(b)
		c.Write([]byte(answer))
		time.Sleep(hold)
	}()
	return ln.Addr().String()
}

// TestClientSkipsInterimAnswers: an interim answer (100 Continue, which
// IIS sends unasked to a request with a body) is not the peer's answer:
// the client reads on to the final one, as HTTP/1.1 clients must
// (RFC 9110 §15.2). Taken for the answer, a NOTIFY a client or another
// organisation took counted as refused, and a router relayed "100" with
// the final answer as its body.
func TestClientSkipsInterimAnswers(t *testing.T) {
	addr := serveOnce(t, "HTTP/1.1 100 Continue\r\n\r\n"+
		"HTTP/1.1 200 Successful\r\nContent-Length: 2\r\nSubscription-Id: 7\r\n\r\nok", 0)
	c := &Client{Timeout: 3 * time.Second}
	ans, err := c.Do(context.Background(), Outbound{URL: URL{Host: addr, Path: "/instmsg/aliases/bob"}, Body: []byte("<x/>"), ReadBody: true})
	if err != nil {
		t.Fatal(err)
	}
	if ans.Status != 200 || string(ans.Body) != "ok" || ans.Header.Get(HdrSubscriptionID) != "7" {
		t.Errorf("answer %d %q (Subscription-ID %q), want the final 200 with body \"ok\"", ans.Status, ans.Body, ans.Header.Get(HdrSubscriptionID))
	}
}
