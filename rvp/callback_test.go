package rvp

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func mustURL(t *testing.T, s string) URL {
	t.Helper()
	u, err := ParseURL(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// TestCallbackPolicy: what a client may name as its listener, by where it
// connects from.
func TestCallbackPolicy(t *testing.T) {
	ranges, endpoints, err := ParseCallbackAllow(" 10.9.0.0/16, 192.0.2.7 ,127.0.0.1:4222")
	if err != nil {
		t.Fatal(err)
	}
	p := &CallbackPolicy{
		Allow: ranges, AllowEndpoints: endpoints,
		Own:   []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:4222"), netip.MustParseAddrPort("0.0.0.0:8080"), netip.MustParseAddrPort("[::1]:9090")},
		Local: []netip.Addr{netip.MustParseAddr("172.16.1.5")},
	}
	loop, lan := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("172.16.1.20")
	for _, tc := range []struct {
		cb     string
		client netip.Addr
		want   string // "" accepted; "400" malformed; else a word of the refusal
	}{
		{"http://127.0.0.1:36217", loop, ""},                          // librvp on the same machine
		{"http://127.0.0.2:5000", loop, ""},                           // another loopback address: same machine
		{"http://[::1]:5000", loop, ""},                               // loopback, IPv6
		{"http://172.16.1.20:4011", lan, ""},                          // Miranda: its own address
		{"http://[::ffff:172.16.1.20]:4011", lan, ""},                 // the same, IPv4-mapped
		{"http://172.16.1.20", lan, ""},                               // port 80
		{"http://172.16.1.20:4011/cb", lan, ""},                       // a path
		{"http://10.9.3.4:4011", lan, ""},                             // an allowed range (NAT inside)
		{"http://192.0.2.7:1", lan, ""},                               // an allowed address, port 1
		{"http://127.0.0.1:4222", loop, ""},                           // own, but explicitly allowed
		{"http://127.0.0.1:8080", loop, "own listeners"},              // the RVP listener, on every address
		{"http://172.16.1.5:8080", lan, "own listeners"},              // the same, by the machine's address
		{"http://[::1]:9090", loop, "own listeners"},                  // own, IPv6
		{"http://127.0.0.1:5000", lan, "loopback"},                    // loopback named from elsewhere
		{"http://172.16.1.21:4011", lan, "not the address"},           // someone else's machine
		{"http://10.10.0.1:4011", lan, "not the address"},             // outside the allowed range
		{"http://0.0.0.0:4011", loop, "unspecified"},                  // no one
		{"http://[::]:4011", loop, "unspecified"},                     // no one, IPv6
		{"http://0.1.2.3:4011", loop, "unspecified"},                  // "this network"
		{"http://224.0.0.1:4011", loop, "multicast"},                  // multicast
		{"http://[ff02::1]:4011", loop, "multicast"},                  // multicast, IPv6
		{"http://255.255.255.255:4011", loop, "broadcast"},            // broadcast
		{"http://localhost:4011", loop, "host name"},                  // a name
		{"http://client.example.test:4011", lan, "host name"},         // a name
		{"http://127.0.0.1:0", loop, "400"},                           // port 0
		{"http://127.0.0.1:99999", loop, "400"},                       // no such port
		{"http://172.16.1.20:65535", lan, ""},                         // the last port
		{"http://172.16.1.20:65536", lan, "400"},                      // past it
		{"http://[fe80::1]:4011", netip.MustParseAddr("fe80::1"), ""}, // link-local, its own
		// Loopback and the metadata service in the forms URL parsers
		// disagree on: each is a name (refused) or the address it is.
		{"http://2130706433:4011", loop, "host name"},               // 127.0.0.1 in decimal
		{"http://0177.0.0.1:4011", loop, "host name"},               // in octal
		{"http://0x7f.0.0.1:4011", loop, "host name"},               // in hex
		{"http://127.1:4011", loop, "host name"},                    // shortened
		{"http://[::ffff:127.0.0.1]:5000", lan, "loopback"},         // IPv4-mapped loopback from elsewhere
		{"http://[::ffff:127.0.0.1]:8080", loop, "own listeners"},   // the RVP listener, IPv4-mapped
		{"http://169.254.169.254", lan, "not the address"},          // the cloud metadata service
		{"http://[::ffff:169.254.169.254]", lan, "not the address"}, // the same, IPv4-mapped
		{"http://[fe80::a9fe:a9fe]:80", lan, "not the address"},     // a link-local IPv6 neighbour
	} {
		u, err := ParseURL(tc.cb)
		if err != nil {
			// Refused as it is read (the gateway answers 400 with it).
			if tc.want != "400" {
				t.Errorf("%s not read: %v", tc.cb, err)
			}
			continue
		}
		err = p.Check(u, tc.client)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s from %s refused: %v", tc.cb, tc.client, err)
		case tc.want == "400" && !errors.Is(err, ErrCallBackMalformed):
			t.Errorf("%s from %s: %v, want malformed", tc.cb, tc.client, err)
		case tc.want != "" && tc.want != "400" && (err == nil || errors.Is(err, ErrCallBackMalformed) || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s from %s: %v, want a refusal saying %q", tc.cb, tc.client, err, tc.want)
		}
	}
	if _, _, err := ParseCallbackAllow("10.0.0.0/33"); err == nil {
		t.Error("a bad range accepted")
	}
	if _, _, err := ParseCallbackAllow("somewhere"); err == nil {
		t.Error("a name accepted as a range")
	}
}

// answerEach answers every connection ln accepts with answer, once it
// has read (at most 512 bytes of) the request, whose size it reports to
// read first; it returns when ln is closed.
func answerEach(ln net.Listener, answer string, read func(n int)) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.SetDeadline(time.Now().Add(2 * time.Second))
		b := make([]byte, 512)
		n, _ := c.Read(b)
		read(n)
		c.Write([]byte(answer))
		c.Close()
	}
}

// TestClientGuard: the NOTIFY client asks its Guard about the address it
// is about to connect to and does not connect where the guard refuses.
func TestClientGuard(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan int, 4)
	go answerEach(ln, "HTTP/1.1 200 OK\r\n\r\n", func(n int) { got <- n })
	own := netip.MustParseAddrPort(ln.Addr().String())
	p := &CallbackPolicy{Own: []netip.AddrPort{own}}
	c := &Client{Guard: p.Dialable}
	u := URL{Host: ln.Addr().String()}
	if _, err := c.Do(context.Background(), Outbound{URL: u}); !errors.Is(err, ErrRefusedAddress) || !strings.Contains(err.Error(), "own listeners") {
		t.Errorf("a NOTIFY to the server's own port: %v", err)
	}
	p.AllowEndpoints = []netip.AddrPort{own}
	if ans, err := c.Do(context.Background(), Outbound{URL: u}); err != nil || ans.Status != 200 {
		t.Errorf("an allowed endpoint: %v %v", ans, err)
	}
	// The listener accepts one connection at a time: had the refused
	// NOTIFY connected, its empty read would come first.
	if n := <-got; n == 0 {
		t.Error("the refused NOTIFY connected to the endpoint before it was refused")
	}
}

// TestDiscovered: another organisation found by DNS is reached at public
// addresses only, unless a Federation range holds the address.
func TestDiscovered(t *testing.T) {
	p := &CallbackPolicy{Federation: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")},
		Own: []netip.AddrPort{netip.MustParseAddrPort("198.51.100.7:80")}}
	for addr, want := range map[string]string{
		"203.0.113.9:80":     "",
		"[2001:db8::1]:80":   "",
		"10.1.2.3:80":        "", // the partner's range
		"127.0.0.1:80":       "loopback",
		"[::1]:4222":         "loopback",
		"10.2.0.1:80":        "private",
		"192.168.1.1:80":     "private",
		"172.16.0.1:80":      "private",
		"[fd00::1]:80":       "private",
		"169.254.169.254:80": "link-local",
		"[fe80::1]:80":       "link-local",
		"100.64.0.1:80":      "carrier-grade NAT",
		"0.0.0.0:80":         "unspecified",
		"224.0.0.1:80":       "multicast",
		"198.51.100.7:80":    "own listeners",
	} {
		err := p.Discovered(netip.MustParseAddrPort(addr))
		if want == "" && err != nil || want != "" && (err == nil || !strings.Contains(err.Error(), want)) {
			t.Errorf("%s: %v, want %q", addr, err, want)
		}
	}
}

// TestClientFederation: a request to another organisation's URL
// (Outbound.Foreign) is judged by the Client's Federation guard at every
// hop, a redirect's included, unless the peer table names its host (the
// administrator's peers are trusted as given, with their redirects); every
// other request by Guard.
func TestClientFederation(t *testing.T) {
	// internal is a service inside (127.0.0.2); peer (127.0.0.1) answers
	// 302 to it.
	internal, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("no 127.0.0.2 here: %v", err)
	}
	defer internal.Close()
	peer, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	reached := make(chan string, 16)
	go answerEach(internal, "HTTP/1.1 200 OK\r\n\r\n", func(int) { reached <- internal.Addr().String() })
	go answerEach(peer, "HTTP/1.1 302 Moved\r\nLocation: http://"+internal.Addr().String()+"/instmsg/aliases/dave\r\n\r\n",
		func(int) { reached <- peer.Addr().String() })
	// The peer's address is in a Federation range (a partner over a VPN);
	// the internal service's is not.
	p := &CallbackPolicy{Federation: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}
	// The peer table names the organisation by its domain: its IM host
	// im.peer.test is its peer too, as the router looks it up.
	c := &Client{Guard: p.Dialable, Federation: p.Discovered, Dialer: HostMap{"peer.test": peer.Addr().String()}}
	foreign := func(host string) (*Answer, error) {
		return c.Do(context.Background(), Outbound{URL: URL{Host: host, Path: "/instmsg/aliases/dave"}, Redirects: 3, Foreign: true})
	}
	expect := func(what string, want ...net.Listener) {
		t.Helper()
		for _, ln := range want {
			select {
			case got := <-reached:
				if got != ln.Addr().String() {
					t.Errorf("%s: reached %s, want %s", what, got, ln.Addr())
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("%s: %s not reached", what, ln.Addr())
			}
		}
		select {
		case got := <-reached:
			t.Errorf("%s: also reached %s", what, got)
		default:
		}
	}
	// Found by DNS at a loopback address: refused before connecting.
	if _, err := foreign(internal.Addr().String()); !errors.Is(err, ErrRefusedAddress) || !strings.Contains(err.Error(), "loopback") {
		t.Errorf("another organisation at a loopback address: %v, want refused", err)
	}
	expect("a loopback address")
	// Found by DNS in the partner's range: reached; its redirect inside
	// is refused.
	if _, err := foreign(peer.Addr().String()); !errors.Is(err, ErrRefusedAddress) || !strings.Contains(err.Error(), "loopback") {
		t.Errorf("a redirect to a loopback address: %v, want refused", err)
	}
	expect("a redirect inside", peer)
	// The peer table's entry is trusted as given, with its redirect.
	if ans, err := foreign("im.peer.test"); err != nil || ans.Status != 200 {
		t.Errorf("a peer of the table: %v %v, want 200 after its redirect", ans, err)
	}
	expect("a peer of the table", peer, internal)
	// A client's own listener (not foreign) is Guard's.
	if ans, err := c.Do(context.Background(), Outbound{URL: URL{Host: internal.Addr().String()}}); err != nil || ans.Status != 200 {
		t.Errorf("a client's listener: %v %v, want 200", ans, err)
	}
	expect("a client's listener", internal)
}

// TestSenderStatus: a sender learns 500 ("left the conversation") and
// nothing else of a client's answer.
func TestSenderStatus(t *testing.T) {
	for status, want := range map[int]int{500: 500, 401: 412, 403: 412, 404: 412, 302: 412, 503: 412, 400: 412, 412: 412} {
		if got := SenderStatus(status); got != want {
			t.Errorf("SenderStatus(%d) = %d, want %d", status, got, want)
		}
	}
}

// FuzzCallbackPolicy: whatever a client names, an accepted Call-Back is
// an address and port the server may dial, and the -callback.allow
// parser never panics.
func FuzzCallbackPolicy(f *testing.F) {
	for _, s := range []string{"http://127.0.0.1:36217", "http://10.0.0.21:3044", "http://[::1]:80/x", "http://0.0.0.0:1", "http://localhost:9", "http://[::ffff:10.1.1.1]:5"} {
		f.Add(s, "127.0.0.1", "10.0.0.0/8,192.0.2.7,127.0.0.1:8080")
	}
	f.Fuzz(func(t *testing.T, cb, client, allow string) {
		ranges, endpoints, err := ParseCallbackAllow(allow)
		if err != nil {
			return
		}
		u, err := ParseURL(cb)
		if err != nil || IsNodeURL(u) {
			return
		}
		c, err := netip.ParseAddr(client)
		if err != nil {
			return
		}
		p := &CallbackPolicy{Allow: ranges, AllowEndpoints: endpoints, Own: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:8080")}}
		if p.Check(u, c) != nil {
			return
		}
		ap, err := callBackEndpoint(u)
		if err != nil {
			t.Fatalf("accepted %q, which names no endpoint: %v", cb, err)
		}
		if ip := ap.Addr(); ip.IsUnspecified() || ip.IsMulticast() || ap.Port() == 0 {
			t.Fatalf("accepted %q from %s: %s", cb, client, ap)
		}
	})
}
