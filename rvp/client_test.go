package rvp

import (
	"context"
	"net"
	"net/netip"
	"strings"
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

// TestDiscoveredNAT64: an address of a NAT64 prefix (RFC 6052's
// 64:ff9b::/96, RFC 8215's 64:ff9b:1::/48) is the IPv4 address it embeds,
// reached through the network's translator: on an IPv6-only network with
// NAT64 (a cloud's IPv6-only subnet, whose NAT gateway translates to the
// private addresses of its network too), an SRV record's AAAA of
// 64:ff9b::a00:5 reaches 10.0.0.5. It is judged as that address.
func TestDiscoveredNAT64(t *testing.T) {
	p := &CallbackPolicy{Federation: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}}
	for addr, want := range map[string]string{
		"[64:ff9b::cb00:7109]:80":  "",         // 203.0.113.9
		"[64:ff9b::a01:203]:80":    "",         // 10.1.2.3, the partner's range
		"[64:ff9b::a00:5]:80":      "private",  // 10.0.0.5
		"[64:ff9b::7f00:1]:4222":   "loopback", // 127.0.0.1
		"[64:ff9b::a9fe:a9fe]:80":  "link-local",
		"[64:ff9b:1::c0a8:101]:80": "NAT64", // a local-use prefix: this network's translator
		"[64:ff9b::6440:1]:80":     "carrier-grade NAT",
		"[2001:db8::a00:5]:80":     "", // not a translator's prefix
	} {
		err := p.Discovered(netip.MustParseAddrPort(addr))
		if want == "" && err != nil || want != "" && (err == nil || !strings.Contains(err.Error(), want)) {
			t.Errorf("%s: %v, want %q", addr, err, want)
		}
	}
}
