package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/rvp"
	"github.com/rvp-im/rvpd/testcluster"
)

// The hostile-input suite (issue 10): what an outsider, or a signed-in
// user, might send to take the trust boundaries apart. Each case asserts
// the answer and, unless it is a positive control (stores), that nothing
// was stored or changed: the last sequence of every stream (requests,
// facts, directory, lookups) is what it was before.

// hostileCase is one hostile input and the answer it must get.
type hostileCase struct {
	name string
	do   func(t *testing.T) *testcluster.Response
	want int
	// stores marks a positive control, which may change state.
	stores bool
	// check, when set, asserts more of the answer.
	check func(t *testing.T, r *testcluster.Response)
}

// runHostile runs the cases against the server whose NATS is natsURL and
// returns how many ran.
func runHostile(t *testing.T, natsURL string, cases []hostileCase) int {
	t.Helper()
	ran := 0
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := streamSeqs(t, natsURL)
			r := tc.do(t)
			if r.Status != tc.want {
				t.Errorf("status %d, want %d; body %q", r.Status, tc.want, r.Body)
			}
			if tc.check != nil {
				tc.check(t, r)
			}
			if tc.stores {
				return
			}
			after := streamSeqs(t, natsURL)
			for name, seq := range before {
				if after[name] != seq {
					t.Errorf("a refused request changed stream %s: last sequence %d, was %d", name, after[name], seq)
				}
			}
		})
		ran++
	}
	return ran
}

// hostileTotal counts the cases of the suite's tests, for its last test
// to hold the suite to its size.
var hostileTotal struct {
	sync.Mutex
	n     int
	tests map[string]bool
}

func countHostile(t *testing.T, n int) {
	hostileTotal.Lock()
	defer hostileTotal.Unlock()
	if hostileTotal.tests == nil {
		hostileTotal.tests = map[string]bool{}
	}
	if !hostileTotal.tests[t.Name()] {
		hostileTotal.tests[t.Name()] = true
		hostileTotal.n += n
	}
}

// notification builds a NOTIFY body of kind ("message" or
// "propnotification") with the given senders and recipients.
func notification(kind string, from, to []string) []byte {
	var b strings.Builder
	b.WriteString(`<?xml version="1.0"?><r:notification xmlns:d="DAV:" xmlns:r="http://schemas.microsoft.com/rvp/"><r:` + kind + `>`)
	for _, f := range from {
		b.WriteString(`<r:notification-from><r:contact><d:href>` + f + `</d:href><r:description>x</r:description></r:contact></r:notification-from>`)
	}
	for _, f := range to {
		b.WriteString(`<r:notification-to><r:contact><d:href>` + f + `</d:href></r:contact></r:notification-to>`)
	}
	if kind == "message" {
		b.WriteString("<r:msgbody><r:mime-data><![CDATA[MIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\nSession-Id: {40C9FE8E-6E81-76FC-1FB8-49F2BE865729}\r\n\r\nforged?]]></r:mime-data></r:msgbody>")
	} else {
		b.WriteString(`<d:propertyupdate><d:set><d:prop><r:state><r:online/></r:state></d:prop></d:set></d:propertyupdate>`)
	}
	b.WriteString(`</r:` + kind + `></r:notification>`)
	return []byte(b.String())
}

func notifyHeaders(c *testcluster.Client) []string {
	return []string{c.From(), "Content-Type: text/xml", "RVP-Hop-Count: 1", "RVP-Ack-Type: DeepOr"}
}

func loginWith(c *testcluster.Client, callBack string, extra ...string) *testcluster.Response {
	h := append([]string{"Notification-Type: pragma/notify", c.From(), "Subscription-Lifetime: 600", "Call-Back: " + callBack}, extra...)
	return c.Do("SUBSCRIBE", "/instmsg/aliases/"+c.Alias, nil, h...)
}

// rawExchange sends raw bytes on a new connection and reads the answer.
func rawExchange(t *testing.T, addr, raw string) *testcluster.Response {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(nc, raw)
	r, err := testcluster.ReadResponse(bufio.NewReader(nc))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func hostPort(u string) string {
	u = strings.TrimPrefix(u, "nats://")
	return strings.TrimPrefix(u, "http://")
}

func bodyLacks(what string) func(t *testing.T, r *testcluster.Response) {
	return func(t *testing.T, r *testcluster.Response) {
		if bytes.Contains(r.Body, []byte(what)) {
			t.Errorf("the answer reveals %q: %q", what, r.Body)
		}
	}
}

func retryAfterGiven(t *testing.T, r *testcluster.Response) {
	if n, err := strconv.Atoi(r.Header.Get("Retry-After")); err != nil || n < 1 {
		t.Errorf("Retry-After %q, want whole seconds", r.Header.Get("Retry-After"))
	}
}

// TestHostileIdentity: who may speak, and as whom; what a message's body
// may claim; Call-Backs; and the protocol defects found from outside.
func TestHostileIdentity(t *testing.T) {
	p := startDev(t, t.TempDir())
	alice, bob := newClient(t, p.addr, "alice"), newClient(t, p.addr, "bob")
	for _, c := range []*testcluster.Client{alice, bob} {
		mustStatus(t, c.Alias+" login", c.Login(14400), 200)
		mustStatus(t, c.Alias+" online", c.SetState("online", 1200, 0), 207)
	}
	anon := testcluster.NewClient(t, p.addr, "mallory")
	anonCarol := testcluster.NewClient(t, p.addr, "carol") // claims carol, without credentials
	url := func(alias string) string { return alice.URLOf(alias) }
	acme := "http://im.acme.test/instmsg/aliases/"
	natsAddr, httpAddr := hostPort(p.natsURL), p.addr
	_, httpPort, _ := net.SplitHostPort(httpAddr)
	bobNotifies := len(bob.Notifies())

	propfindBody := []byte(`<?xml version="1.0"?><d:propfind xmlns:d="DAV:"><d:allprop/></d:propfind>`)
	cases := []hostileCase{
		// --- Who may speak ---
		{"anonymous message naming carol in its body", func(t *testing.T) *testcluster.Response {
			return anon.Do("NOTIFY", "/instmsg/aliases/bob", notification("message", []string{url("carol")}, []string{url("bob")}), "Content-Type: text/xml")
		}, 401, false, nil},
		{"anonymous message with RVP-From-Principal of carol", func(t *testing.T) *testcluster.Response {
			return anonCarol.Do("NOTIFY", "/instmsg/aliases/bob", notification("message", []string{url("carol")}, []string{url("bob")}), notifyHeaders(anonCarol)...)
		}, 401, false, nil},
		{"anonymous PROPFIND, federation off", func(t *testing.T) *testcluster.Response {
			return anon.Do("PROPFIND", "/instmsg/aliases/bob", propfindBody, "Depth: 0", "Content-Type: text/xml")
		}, 401, false, bodyLacks("Example")},
		{"anonymous PROPFIND as bob", func(t *testing.T) *testcluster.Response {
			return anon.Do("PROPFIND", "/instmsg/aliases/bob", propfindBody, "Depth: 0", "RVP-From-Principal: "+url("bob"))
		}, 401, false, nil},
		{"anonymous buddy SUBSCRIBE", func(t *testing.T) *testcluster.Response {
			return anon.Do("SUBSCRIBE", "/instmsg/aliases/bob", nil, "Notification-Type: update/propchange", "Call-Back: "+anon.CallBack)
		}, 401, false, nil},
		{"anonymous login on bob's node", func(t *testing.T) *testcluster.Response {
			return anon.Do("SUBSCRIBE", "/instmsg/aliases/bob", nil, "Notification-Type: pragma/notify", "Call-Back: "+anon.CallBack)
		}, 401, false, nil},
		{"anonymous SUBSCRIPTIONS", func(t *testing.T) *testcluster.Response {
			return anon.Do("SUBSCRIPTIONS", "/instmsg/aliases/bob", nil, "Notification-Type: update/propchange")
		}, 401, false, nil},
		{"anonymous ACL read", func(t *testing.T) *testcluster.Response {
			return anon.Do("ACL", "/instmsg/aliases/bob", nil)
		}, 401, false, nil},
		{"anonymous ACL write", func(t *testing.T) *testcluster.Response {
			acl := `<a:rvpacl xmlns:a="http://schemas.microsoft.com/rvp/acl/"><a:acl><a:ace><a:principal><a:allprincipals/><a:credentials><a:assertion/></a:credentials></a:principal><a:grant><a:all/></a:grant><a:deny/></a:ace></a:acl></a:rvpacl>`
			return anon.Do("ACL", "/instmsg/aliases/bob", []byte(acl), "Content-Type: text/xml")
		}, 401, false, nil},
		{"anonymous UNSUBSCRIBE", func(t *testing.T) *testcluster.Response {
			return anon.Do("UNSUBSCRIBE", "/instmsg/aliases/bob", nil, "Subscription-Id: "+strconv.Itoa(bob.LoginID))
		}, 401, false, nil},
		{"anonymous PROPPATCH", func(t *testing.T) *testcluster.Response {
			return anon.Do("PROPPATCH", "/instmsg/aliases/bob", testcluster.StateBody("busy", 600, 0), "Content-Type: text/xml")
		}, 401, false, nil},
		{"signed in as alice, RVP-From-Principal bob", func(t *testing.T) *testcluster.Response {
			return alice.Do("PROPPATCH", "/instmsg/aliases/bob", testcluster.StateBody("busy", 600, 0), "RVP-From-Principal: "+url("bob"))
		}, 403, false, nil},
		{"another organisation, federation off (dev's any-Host rule is the request's only)", func(t *testing.T) *testcluster.Response {
			return anon.Do("NOTIFY", "/instmsg/aliases/bob", notification("message", []string{acme + "dave"}, []string{url("bob")}), "RVP-From-Principal: "+acme+"dave", "Content-Type: text/xml")
		}, 403, false, func(t *testing.T, r *testcluster.Response) {
			if !bytes.Contains(r.Body, []byte("other organisations")) {
				t.Errorf("not judged as another organisation: %q", r.Body)
			}
		}},
		{"another organisation's server name, federation off", func(t *testing.T) *testcluster.Response {
			return anon.Do("PROPFIND", "/instmsg/aliases/bob", propfindBody, "Depth: 0", "RVP-From-Principal: im.acme.test")
		}, 403, false, nil},
		{"signed in as alice, RVP-From-Principal of another organisation", func(t *testing.T) *testcluster.Response {
			return alice.Do("NOTIFY", "/instmsg/aliases/bob", notification("message", []string{acme + "alice"}, []string{url("bob")}), "RVP-From-Principal: "+acme+"alice", "Content-Type: text/xml")
		}, 403, false, nil},
		{"wrong password", func(t *testing.T) *testcluster.Response {
			c := testcluster.NewClient(t, p.addr, "bob")
			c.Creds = &testcluster.Credentials{Scheme: testcluster.SchemeNTLMv1, User: "bob", Domain: demoNTDomain, Password: "guess"}
			return c.Do("NOTIFY", "/instmsg/aliases/alice", c.MessageBody("alice", "hi"), notifyHeaders(c)...)
		}, 401, false, nil},
		{"a scheme not offered (Basic)", func(t *testing.T) *testcluster.Response {
			return anon.Do("PROPFIND", "/instmsg/aliases/bob", propfindBody, "Depth: 0", "Authorization: "+testcluster.BasicAuthorization(&testcluster.Credentials{User: "bob", Password: testPassword}))
		}, 401, false, nil},
		{"an NTLM answer on a connection that was never challenged", func(t *testing.T) *testcluster.Response {
			creds := &testcluster.Credentials{Scheme: testcluster.SchemeNTLMv1, User: "bob", Domain: demoNTDomain, Password: testPassword}
			req := "PROPFIND /instmsg/aliases/bob HTTP/1.1\r\nHost: 127.0.0.1\r\nDepth: 0\r\nAuthorization: NTLM %s\r\n\r\n"
			r := rawExchange(t, p.addr, fmt.Sprintf(req, base64.StdEncoding.EncodeToString(testcluster.NTLMNegotiate(creds))))
			type2, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(r.Header.Get("WWW-Authenticate"), "NTLM "))
			if err != nil {
				t.Fatalf("no NTLM challenge: %v %v", r.Header, err)
			}
			type3, err := testcluster.NTLMAuthenticate(creds, type2)
			if err != nil {
				t.Fatal(err)
			}
			return rawExchange(t, p.addr, fmt.Sprintf(req, base64.StdEncoding.EncodeToString(type3))) // another connection
		}, 401, false, nil},

		// --- What a message may claim ---
		{"message from alice saying it is from carol", func(t *testing.T) *testcluster.Response {
			return alice.Do("NOTIFY", "/instmsg/aliases/bob", notification("message", []string{url("carol")}, []string{url("bob")}), notifyHeaders(alice)...)
		}, 403, false, nil},
		{"message without RVP-From-Principal saying it is from carol", func(t *testing.T) *testcluster.Response {
			return alice.Do("NOTIFY", "/instmsg/aliases/bob", notification("message", []string{url("carol")}, []string{url("bob")}), "Content-Type: text/xml")
		}, 403, false, nil},
		{"message from carol by her physical URL", func(t *testing.T) *testcluster.Response {
			phys := rvp.PhysicalURL(alice.Server, demoIMHost, "carol")
			return alice.Do("NOTIFY", "/instmsg/aliases/bob", notification("message", []string{phys}, []string{url("bob")}), notifyHeaders(alice)...)
		}, 403, false, nil},
		{"message from carol by the IM host", func(t *testing.T) *testcluster.Response {
			return alice.Do("NOTIFY", "/instmsg/aliases/bob", notification("message", []string{"http://IM.EXAMPLE.TEST/instmsg/aliases/Carol/"}, []string{url("bob")}), notifyHeaders(alice)...)
		}, 403, false, nil},
		{"message without a sender", func(t *testing.T) *testcluster.Response {
			return alice.Do("NOTIFY", "/instmsg/aliases/bob", notification("message", nil, []string{url("bob")}), notifyHeaders(alice)...)
		}, 403, false, nil},
		{"message with two senders", func(t *testing.T) *testcluster.Response {
			return alice.Do("NOTIFY", "/instmsg/aliases/bob", notification("message", []string{url("alice"), url("carol")}, []string{url("bob")}), notifyHeaders(alice)...)
		}, 403, false, nil},
		{"message from alice of another organisation", func(t *testing.T) *testcluster.Response {
			return alice.Do("NOTIFY", "/instmsg/aliases/bob", notification("message", []string{acme + "alice"}, []string{url("bob")}), notifyHeaders(alice)...)
		}, 403, false, nil},
		{"message whose sender is no URL", func(t *testing.T) *testcluster.Response {
			return alice.Do("NOTIFY", "/instmsg/aliases/bob", notification("message", []string{"alice"}, []string{url("bob")}), notifyHeaders(alice)...)
		}, 403, false, nil},
		{"message to carol sent to bob", func(t *testing.T) *testcluster.Response {
			return alice.Do("NOTIFY", "/instmsg/aliases/bob", notification("message", []string{url("alice")}, []string{url("carol")}), notifyHeaders(alice)...)
		}, 403, false, nil},
		{"message without a recipient", func(t *testing.T) *testcluster.Response {
			return alice.Do("NOTIFY", "/instmsg/aliases/bob", notification("message", []string{url("alice")}, nil), notifyHeaders(alice)...)
		}, 403, false, nil},
		{"message to bob of another organisation sent to bob", func(t *testing.T) *testcluster.Response {
			return alice.Do("NOTIFY", "/instmsg/aliases/bob", notification("message", []string{url("alice")}, []string{acme + "bob"}), notifyHeaders(alice)...)
		}, 403, false, nil},
		{"presence notification saying it is carol's", func(t *testing.T) *testcluster.Response {
			return alice.Do("NOTIFY", "/instmsg/aliases/bob", notification("propnotification", []string{url("carol")}, []string{url("bob")}), notifyHeaders(alice)...)
		}, 403, false, nil},
		{"message that is not XML", func(t *testing.T) *testcluster.Response {
			return alice.Do("NOTIFY", "/instmsg/aliases/bob", []byte("hello bob, from carol"), notifyHeaders(alice)...)
		}, 400, false, nil},
		{"message with an entity bomb", func(t *testing.T) *testcluster.Response {
			return alice.Do("NOTIFY", "/instmsg/aliases/bob", []byte(`<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]><r:notification xmlns:r="http://schemas.microsoft.com/rvp/"><r:message>&b;</r:message></r:notification>`), notifyHeaders(alice)...)
		}, 400, false, nil},
		{"message nested too deep", func(t *testing.T) *testcluster.Response {
			deep := `<r:notification xmlns:r="http://schemas.microsoft.com/rvp/"><r:message>` + strings.Repeat("<x>", 40) + strings.Repeat("</x>", 40) + `</r:message></r:notification>`
			return alice.Do("NOTIFY", "/instmsg/aliases/bob", []byte(deep), notifyHeaders(alice)...)
		}, 400, false, nil},
		{"a message of alice's own, multi-party (bob among the recipients)", func(t *testing.T) *testcluster.Response {
			body := bytes.Replace(notification("message", []string{url("alice")}, []string{url("carol"), url("bob")}), []byte("forged?"), []byte("genuine"), 1)
			return alice.Do("NOTIFY", "/instmsg/aliases/bob", body, notifyHeaders(alice)...)
		}, 200, true, nil},

		// --- Call-Back is an address the server connects to ---
		{"Call-Back: the NATS port", func(t *testing.T) *testcluster.Response { return loginWith(alice, "http://"+natsAddr) }, 403, false, bodyLacks("INFO")},
		{"Call-Back: the RVP listener", func(t *testing.T) *testcluster.Response { return loginWith(alice, "http://"+httpAddr) }, 403, false, nil},
		{"Call-Back: the RVP listener, with a path", func(t *testing.T) *testcluster.Response {
			return loginWith(alice, "http://127.0.0.1:"+httpPort+"/instmsg")
		}, 403, false, nil},
		{"Call-Back: 0.0.0.0", func(t *testing.T) *testcluster.Response { return loginWith(alice, "http://0.0.0.0:"+httpPort) }, 403, false, nil},
		{"Call-Back: [::]", func(t *testing.T) *testcluster.Response { return loginWith(alice, "http://[::]:4011") }, 403, false, nil},
		{"Call-Back: localhost", func(t *testing.T) *testcluster.Response { return loginWith(alice, "http://localhost:4011") }, 403, false, nil},
		{"Call-Back: a host name", func(t *testing.T) *testcluster.Response { return loginWith(alice, "http://intranet.example.test:8080") }, 403, false, nil},
		{"Call-Back: port 0", func(t *testing.T) *testcluster.Response { return loginWith(alice, "http://127.0.0.1:0") }, 400, false, nil},
		{"Call-Back: port 99999", func(t *testing.T) *testcluster.Response { return loginWith(alice, "http://127.0.0.1:99999") }, 400, false, nil},
		{"Call-Back: multicast", func(t *testing.T) *testcluster.Response { return loginWith(alice, "http://224.0.0.251:5353") }, 403, false, nil},
		{"Call-Back: broadcast", func(t *testing.T) *testcluster.Response { return loginWith(alice, "http://255.255.255.255:9") }, 403, false, nil},
		{"Call-Back: an address that is not the client's", func(t *testing.T) *testcluster.Response { return loginWith(alice, "http://10.9.9.9:4011") }, 403, false, nil},
		{"Call-Back: https", func(t *testing.T) *testcluster.Response { return loginWith(alice, "https://127.0.0.1:4011") }, 400, false, nil},
		{"Call-Back: with user information", func(t *testing.T) *testcluster.Response { return loginWith(alice, "http://x@127.0.0.1:4011") }, 400, false, nil},
		{"Call-Back: given twice", func(t *testing.T) *testcluster.Response {
			return loginWith(alice, alice.CallBack, "Call-Back: http://10.9.9.9:4011")
		}, 400, false, nil},
		{"Call-Back: another organisation's principal", func(t *testing.T) *testcluster.Response {
			return alice.Do("SUBSCRIBE", "/instmsg/aliases/bob", nil, "Notification-Type: update/propchange", alice.From(), "Call-Back: "+acme+"mallory")
		}, 403, false, nil},
		{"Call-Back: the NATS port, for a buddy subscription", func(t *testing.T) *testcluster.Response {
			return alice.Do("SUBSCRIBE", "/instmsg/aliases/bob", nil, "Notification-Type: update/propchange", alice.From(), "Call-Back: http://"+natsAddr)
		}, 403, false, nil},
		{"Call-Back: another loopback address of the same machine", func(t *testing.T) *testcluster.Response {
			return loginWith(alice, "http://127.0.0.9:4011")
		}, 200, true, nil},

		// --- Protocol defects found from outside ---
		{"no Host", func(t *testing.T) *testcluster.Response {
			return rawExchange(t, p.addr, "PROPFIND /instmsg/aliases/bob HTTP/1.1\r\nDepth: 0\r\n\r\n")
		}, 400, false, nil},
		{"two Hosts", func(t *testing.T) *testcluster.Response {
			return rawExchange(t, p.addr, "PROPFIND /instmsg/aliases/bob HTTP/1.1\r\nHost: a\r\nHost: b\r\nDepth: 0\r\n\r\n")
		}, 400, false, nil},
		{"RVP-From-Principal twice", func(t *testing.T) *testcluster.Response {
			return alice.Do("NOTIFY", "/instmsg/aliases/bob", alice.MessageBody("bob", "x"), append(notifyHeaders(alice), "RVP-From-Principal: "+url("carol"))...)
		}, 400, false, nil},
		{"Subscription-Id twice", func(t *testing.T) *testcluster.Response {
			return alice.Do("UNSUBSCRIBE", "/instmsg/aliases/alice", nil, alice.From(), "Subscription-Id: 1", "Subscription-Id: 2")
		}, 400, false, nil},
		{"RVP-Hop-Count twice", func(t *testing.T) *testcluster.Response {
			return alice.Do("NOTIFY", "/instmsg/aliases/bob", alice.MessageBody("bob", "x"), append(notifyHeaders(alice), "RVP-Hop-Count: 1")...)
		}, 400, false, nil},
		{"NUL in RVP-Ack-Type", func(t *testing.T) *testcluster.Response {
			return alice.Do("NOTIFY", "/instmsg/aliases/bob", alice.MessageBody("bob", "x"), alice.From(), "Content-Type: text/xml", "RVP-Ack-Type: Deep\x00Or")
		}, 400, false, nil},
		{"ESC in RVP-From-Principal", func(t *testing.T) *testcluster.Response {
			return alice.Do("PROPFIND", "/instmsg/aliases/bob", propfindBody, "Depth: 0", "RVP-From-Principal: "+url("alice")+"\x1b[2J")
		}, 400, false, nil},
		{"RVP-Hop-Count past the limit", func(t *testing.T) *testcluster.Response {
			return alice.Do("NOTIFY", "/instmsg/aliases/bob", alice.MessageBody("bob", "x"), alice.From(), "Content-Type: text/xml", "RVP-Hop-Count: 9")
		}, 508, false, nil},
		{"RVP-Hop-Count past 2^63", func(t *testing.T) *testcluster.Response {
			return alice.Do("NOTIFY", "/instmsg/aliases/bob", alice.MessageBody("bob", "x"), alice.From(), "Content-Type: text/xml", "RVP-Hop-Count: 99999999999999999999")
		}, 508, false, nil},
		{"chunked body", func(t *testing.T) *testcluster.Response {
			return rawExchange(t, p.addr, "NOTIFY /instmsg/aliases/bob HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
		}, 501, false, nil},
		{"oversized body", func(t *testing.T) *testcluster.Response {
			return rawExchange(t, p.addr, "NOTIFY /instmsg/aliases/bob HTTP/1.1\r\nHost: a\r\nContent-Length: 100000000\r\n\r\n")
		}, 413, false, nil},
		{"negative Content-Length", func(t *testing.T) *testcluster.Response {
			return rawExchange(t, p.addr, "NOTIFY /instmsg/aliases/bob HTTP/1.1\r\nHost: a\r\nContent-Length: -5\r\n\r\n")
		}, 400, false, nil},
		{"HTTP/2.0", func(t *testing.T) *testcluster.Response {
			return rawExchange(t, p.addr, "PROPFIND /instmsg/aliases/bob HTTP/2.0\r\nHost: a\r\n\r\n")
		}, 505, false, nil},
		{"too many headers", func(t *testing.T) *testcluster.Response {
			return rawExchange(t, p.addr, "PROPFIND /instmsg/aliases/bob HTTP/1.1\r\nHost: a\r\n"+manyHeaders(100)+"\r\n")
		}, 431, false, nil},
		{"HEAD: no body, and the connection goes on", func(t *testing.T) *testcluster.Response {
			return headThenGet(t, p.addr)
		}, 501, false, nil},
		{"Subscription-Lifetime twice", func(t *testing.T) *testcluster.Response {
			return loginWith(alice, alice.CallBack, "Subscription-Lifetime: 9223372037")
		}, 400, false, nil},
		{"Subscription-Lifetime past 2^63 s: the maximum, not the minimum", func(t *testing.T) *testcluster.Response {
			return alice.Do("SUBSCRIBE", "/instmsg/aliases/alice", nil, "Notification-Type: pragma/notify", alice.From(), "Subscription-Lifetime: 9223372037", "Call-Back: "+alice.CallBack)
		}, 200, true, func(t *testing.T, r *testcluster.Response) {
			if got := r.Header.Get(rvp.HdrLifetime); got != "14400" {
				t.Errorf("granted %q, want the maximum 14400", got)
			}
		}},
	}
	n := runHostile(t, p.natsURL, cases)

	// Anonymous bulk: a hundred 60 KB messages add nothing to the streams.
	big := notification("message", []string{url("carol")}, []string{url("bob")})
	big = bytes.Replace(big, []byte("forged?"), bytes.Repeat([]byte("x"), 60<<10), 1)
	before, bytesBefore := streamSeqs(t, p.natsURL), streamBytes(t, p.natsURL, events.StreamRequests)
	for i := range 100 {
		if r := anon.Do("NOTIFY", "/instmsg/aliases/bob", big, "Content-Type: text/xml"); r.Status != 401 {
			t.Fatalf("anonymous 60 KB message %d: %d", i, r.Status)
		}
	}
	if after := streamSeqs(t, p.natsURL); after[events.StreamRequests] != before[events.StreamRequests] {
		t.Errorf("100 anonymous messages appended %d requests", after[events.StreamRequests]-before[events.StreamRequests])
	}
	if b := streamBytes(t, p.natsURL, events.StreamRequests); b != bytesBefore {
		t.Errorf("100 anonymous 60 KB messages grew the requests stream from %d to %d bytes", bytesBefore, b)
	}
	n++

	// Nothing forged reached bob.
	for _, nt := range bob.Notifies()[bobNotifies:] {
		if bytes.Contains(nt.Body, []byte("forged?")) {
			t.Errorf("a forged notification reached bob:\n%s", nt.Body)
		}
	}
	countHostile(t, n)
}

// headThenGet sends HEAD and then GET on one connection: the HEAD answer
// has no body, so the GET's answer is read where it belongs.
func headThenGet(t *testing.T, addr string) *testcluster.Response {
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(nc, "HEAD /instmsg/aliases/bob HTTP/1.1\r\nHost: a\r\n\r\nGET /instmsg/aliases/bob HTTP/1.1\r\nHost: a\r\n\r\n")
	br := bufio.NewReader(nc)
	for { // the HEAD answer's header
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("HEAD answer: %v", err)
		}
		if line == "\r\n" {
			break
		}
	}
	r, err := testcluster.ReadResponse(br)
	if err != nil {
		t.Fatalf("the answer after HEAD's: %v", err)
	}
	return r
}

// streamBytes returns the bytes a stream holds.
func streamBytes(t *testing.T, natsURL, name string) uint64 {
	t.Helper()
	return streamStates(t, natsURL)[name].Bytes
}

// TestHostileCallBackStatus: a message's sender learns whether it was
// delivered, never what a recipient's Call-Back answered: 500 ("left the
// conversation") passes, anything else is 412.
func TestHostileCallBackStatus(t *testing.T) {
	p := startDev(t, t.TempDir())
	alice, bob := newClient(t, p.addr, "alice"), newClient(t, p.addr, "bob")
	mustStatus(t, "bob login", bob.Login(14400), 200)
	var cases []hostileCase
	for _, tc := range []struct {
		name, answer string
		want         int
	}{
		{"401", "HTTP/1.1 401 Access Denied\r\nWWW-Authenticate: Basic realm=\"intranet\"\r\n\r\n", 412},
		{"403", "HTTP/1.1 403 Forbidden\r\n\r\n", 412},
		{"404", "HTTP/1.1 404 Not Found\r\n\r\n", 412},
		{"302", "HTTP/1.1 302 Found\r\nLocation: http://10.0.0.1/\r\n\r\n", 412},
		{"503", "HTTP/1.1 503 Service Unavailable\r\n\r\n", 412},
		{"an SSH banner", "SSH-2.0-OpenSSH_9.6\r\n", 412},
		{"500 (left the conversation)", "HTTP/1.1 500 Left the conversation\r\n\r\n", 500},
	} {
		cases = append(cases, hostileCase{"Call-Back answering " + tc.name, func(t *testing.T) *testcluster.Response {
			bob.AnswerWith(func(testcluster.Notify) testcluster.Answer { return testcluster.Answer{Raw: tc.answer} })
			return alice.Send("bob", alice.MessageBody("bob", "are you there?"))
		}, tc.want, true, bodyLacks("intranet")})
	}
	countHostile(t, runHostile(t, p.natsURL, cases))
}

// lanAddr returns a non-loopback IPv4 address of this machine, or skips.
func lanAddr(t *testing.T) netip.Addr {
	for _, a := range rvp.LocalAddrs() {
		if a.Is4() && !a.IsLoopback() && !a.IsLinkLocalUnicast() {
			return a
		}
	}
	t.Skip("SKIPPED: this machine has no non-loopback IPv4 address to be a client from")
	return netip.Addr{}
}

// TestHostileCallBackFromNetwork: a client that is not on the server's
// machine may name its own address, or one in -callback.allow, and
// nothing else: not loopback, not the server's own listener.
func TestHostileCallBackFromNetwork(t *testing.T) {
	ip := lanAddr(t)
	p := startDev(t, t.TempDir(), "-http", ip.String()+":0", "-callback.allow", "10.77.0.0/16")
	alice := newClient(t, p.addr, "alice") // connects from ip
	own, err := net.Listen("tcp", ip.String()+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer own.Close()
	cases := []hostileCase{
		{"loopback from the network", func(t *testing.T) *testcluster.Response { return loginWith(alice, alice.CallBack) }, 403, false, nil},
		{"the server's own RVP listener", func(t *testing.T) *testcluster.Response { return loginWith(alice, "http://"+p.addr) }, 403, false, nil},
		{"the server's NATS port", func(t *testing.T) *testcluster.Response { return loginWith(alice, "http://"+hostPort(p.natsURL)) }, 403, false, nil},
		{"another address", func(t *testing.T) *testcluster.Response { return loginWith(alice, "http://10.78.0.1:4011") }, 403, false, nil},
		{"the client's own address", func(t *testing.T) *testcluster.Response { return loginWith(alice, "http://"+own.Addr().String()) }, 200, true, nil},
		{"an allowed range (inside a NAT)", func(t *testing.T) *testcluster.Response { return loginWith(alice, "http://10.77.1.2:4011") }, 200, true, nil},
	}
	countHostile(t, runHostile(t, p.natsURL, cases))
}

// TestHostileLimits: each sender's share of messages and bytes (429 with
// Retry-After, nothing stored), the requests stream's bounds, sign-in
// throttling that cannot be turned against the user, and NTLMv1 off.
func TestHostileLimits(t *testing.T) {
	p := startDev(t, t.TempDir(), "-limit.messages", "1", "-limit.messages.burst", "3", "-limit.bytes", "1000", "-limit.bytes.burst", "40000",
		"-limit.bytes.day", "25000", "-auth.ntlmv1=false", "-lockout.free", "3", "-lockout.delay", "30s")
	cf := &conformance{t: t, p: p}
	cf.enable("dave", "erin", "frank", "gina", "hank")
	client := func(alias, source string) *testcluster.Client {
		c := testcluster.NewClient(t, p.addr, alias)
		c.Creds = &testcluster.Credentials{Scheme: testcluster.SchemeNTLMv2, User: alias, Domain: demoNTDomain, Password: testPassword}
		c.Source = source
		return c
	}
	wrong := func(c *testcluster.Client) *testcluster.Client {
		w := *c.Creds
		w.Password = "guess"
		x := testcluster.NewClient(t, p.addr, c.Alias)
		x.Creds, x.Source = &w, c.Source
		return x
	}
	alice, bob, carol := client("alice", ""), client("bob", ""), client("carol", "")
	for _, c := range []*testcluster.Client{alice, bob, carol} {
		mustStatus(t, c.Alias+" login", c.Login(14400), 200)
	}
	big := func(c *testcluster.Client) []byte {
		return bytes.Replace(c.MessageBody("bob", "x"), []byte("]]>"), append(bytes.Repeat([]byte("y"), 30_000), "]]>"...), 1)
	}
	dave := client("dave", "127.0.0.2")
	mustStatus(t, "dave signs in at his office", dave.Login(600), 200)
	frank := client("frank", "127.0.0.5")
	mustStatus(t, "frank signs in behind the NAT", frank.Login(600), 200)

	cases := []hostileCase{
		{"messages past the sender's share: 429, nothing stored", func(t *testing.T) *testcluster.Response {
			return untilRefused(t, p.natsURL, 3, 1, func(i int) *testcluster.Response {
				return alice.Send("bob", alice.MessageBody("bob", fmt.Sprint("message ", i)))
			})
		}, 429, true, retryAfterGiven},
		{"another sender meanwhile", func(t *testing.T) *testcluster.Response { return bob.Send("alice", bob.MessageBody("alice", "hi")) }, 200, true, nil},
		{"bytes past the sender's share: 429, nothing stored", func(t *testing.T) *testcluster.Response {
			return untilRefused(t, p.natsURL, 1, 1, func(int) *testcluster.Response { return carol.Send("bob", big(carol)) })
		}, 429, true, retryAfterGiven},
		{"bytes past the sender's day: 429, nothing stored", func(t *testing.T) *testcluster.Response {
			// 10 kB bodies: two fit the day's 25,000 bytes; the third would
			// still fit the bytes a second (its burst of 40,000).
			hank := client("hank", "")
			mustStatus(t, "hank login", hank.Login(600), 200)
			return untilRefused(t, p.natsURL, 2, 0, func(i int) *testcluster.Response {
				return hank.Send("bob", hank.MessageBody("bob", strings.Repeat("z", 10_000)))
			})
		}, 429, true, func(t *testing.T, r *testcluster.Response) {
			retryAfterGiven(t, r)
			if !strings.Contains(string(r.Body), "bytes per day") {
				t.Errorf("body %q does not name the day's bytes", r.Body)
			}
		}},
		{"NTLMv1 when it is off, right password", func(t *testing.T) *testcluster.Response {
			c := testcluster.NewClient(t, p.addr, "bob")
			c.Creds = &testcluster.Credentials{Scheme: testcluster.SchemeNTLMv1, User: "bob", Domain: demoNTDomain, Password: testPassword}
			return c.Do("PROPFIND", "/instmsg/aliases/bob", []byte(`<d:propfind xmlns:d="DAV:"><d:allprop/></d:propfind>`), "Depth: 0", c.From())
		}, 401, false, nil},
		{"brute force: throttled after the free failures", func(t *testing.T) *testcluster.Response {
			x := wrong(client("erin", "127.0.0.3"))
			var r *testcluster.Response
			for range 5 {
				if r = x.Login(600); r.Status == 403 {
					break
				}
			}
			return r
		}, 403, false, retryAfterGiven},
		{"brute force: the right password while throttled", func(t *testing.T) *testcluster.Response {
			return client("erin", "127.0.0.3").Login(600)
		}, 403, false, nil},
		{"guessing dave from twenty addresses", func(t *testing.T) *testcluster.Response {
			var r *testcluster.Response
			for i := range 20 {
				if r = wrong(client("dave", fmt.Sprintf("127.0.1.%d", i+1))).Login(600); r.Status != 401 && r.Status != 403 {
					return r
				}
			}
			return r
		}, 403, false, nil},
		{"dave at his known address meanwhile", func(t *testing.T) *testcluster.Response { return dave.Login(600) }, 200, true, nil},
		{"dave at a new address meanwhile: slowed", func(t *testing.T) *testcluster.Response { return client("dave", "127.0.2.1").Login(600) }, 403, false, retryAfterGiven},
		{"guessing twelve accounts from frank's NAT", func(t *testing.T) *testcluster.Response {
			var r *testcluster.Response
			for i := range 12 {
				x := testcluster.NewClient(t, p.addr, "bob") // signing in as ghost<i>, to read bob's node
				x.Creds = &testcluster.Credentials{Scheme: testcluster.SchemeNTLMv2, User: fmt.Sprint("ghost", i), Domain: demoNTDomain, Password: "guess"}
				x.Source = "127.0.0.5"
				if r = x.Do("PROPFIND", "/instmsg/aliases/bob", []byte(`<d:propfind xmlns:d="DAV:"><d:allprop/></d:propfind>`), "Depth: 0"); r.Status != 401 && r.Status != 403 {
					return r
				}
			}
			return r
		}, 403, false, nil},
		{"frank behind the NAT meanwhile", func(t *testing.T) *testcluster.Response { return frank.Login(600) }, 200, true, nil},
		{"gina, new behind the NAT: slowed", func(t *testing.T) *testcluster.Response { return client("gina", "127.0.0.5").Login(600) }, 403, false, retryAfterGiven},
		{"gina elsewhere", func(t *testing.T) *testcluster.Response { return client("gina", "127.0.0.6").Login(600) }, 200, true, nil},
	}
	n := runHostile(t, p.natsURL, cases)

	// After Retry-After, alice's next message goes.
	testcluster.Eventually(t, 10*time.Second, func() error {
		if r := alice.Send("bob", alice.MessageBody("bob", "later")); r.Status != 200 {
			return fmt.Errorf("after waiting: %d", r.Status)
		}
		return nil
	})
	n++

	// The requests stream is bounded in age and size.
	nc, err := nats.Connect(p.natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	st, err := js.Stream(context.Background(), events.StreamRequests)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	if cfg.MaxAge != time.Hour || cfg.MaxBytes != 1<<30 || cfg.Discard != jetstream.DiscardOld {
		t.Errorf("requests stream: max age %s, max bytes %d, discard %v; want 1h, 1 GiB, old first", cfg.MaxAge, cfg.MaxBytes, cfg.Discard)
	}
	n++
	countHostile(t, n)
}

// untilRefused sends requests (send(i)) until one is refused and returns
// that answer. Each refused one must have appended nothing; at most burst
// and what rate (a second) gives back meanwhile may go through.
func untilRefused(t *testing.T, natsURL string, burst, rate int, send func(i int) *testcluster.Response) *testcluster.Response {
	t.Helper()
	start := time.Now()
	for i := range 50 {
		before := streamSeqs(t, natsURL)[events.StreamRequests]
		r := send(i)
		after := streamSeqs(t, natsURL)[events.StreamRequests]
		if r.Status != 200 {
			if after != before {
				t.Errorf("a refused request (%d) appended %d requests", r.Status, after-before)
			}
			if allowed := burst + rate*int(time.Since(start).Seconds()+1); i > allowed {
				t.Errorf("%d went through before the first refusal; the share allows %d", i, allowed)
			}
			return r
		}
	}
	t.Fatal("50 requests went through")
	return nil
}

// TestHostileSuiteSize runs last of the suite's tests in this file (go
// test runs them in order) and holds it to at least 60 cases.
func TestHostileSuiteSize(t *testing.T) {
	hostileTotal.Lock()
	defer hostileTotal.Unlock()
	if len(hostileTotal.tests) < 4 {
		t.Skipf("run with the suite's tests (%d of them ran)", len(hostileTotal.tests))
	}
	if hostileTotal.n < 60 {
		t.Errorf("the hostile suite has %d cases, want at least 60", hostileTotal.n)
	}
	t.Logf("hostile cases: %d", hostileTotal.n)
}

// TestInteropLibrvpHostile: the trust boundaries with the real client.
// librvp advertising a Call-Back the server will not connect to is
// refused at login and says so, with nothing stored; a signed-in user's
// message claiming to be someone else's never reaches librvp, and an
// anonymous one neither, while a genuine one does.
func TestInteropLibrvpHostile(t *testing.T) {
	testcluster.Driver(t) // skips before anything starts when the client is missing
	pw := librvpPassword()
	p := startDev(t, t.TempDir(), "-demo-password", pw)
	start := func(alias, myhost string) *testcluster.Pidgin {
		return testcluster.StartPidgin(t, testcluster.PidginOptions{
			User: alias + "@" + demoDomain, Password: pw, Server: p.addr, Domain: demoNTDomain, MyHost: myhost, Debug: os.Getenv("RVP_PIDGIN_DEBUG") == "1",
		})
	}
	var n int
	before := streamSeqs(t, p.natsURL)
	refused := start("carol", "10.9.9.9")
	refused.Wait(pidginWait, `^CONNECTION_ERROR`)
	if after := streamSeqs(t, p.natsURL); after[events.StreamRequests] != before[events.StreamRequests] || after[events.FactStream(demoHome)] != before[events.FactStream(demoHome)] {
		t.Errorf("a refused Call-Back stored something: %v, was %v", after, before)
	}
	if refused.Count(`^SIGNED_ON$`) != 0 {
		t.Error("librvp signed on with a Call-Back the server refused")
	}
	n++

	alice := start("alice", "")
	alice.Wait(pidginWait, `^SIGNED_ON$`)
	bob := testcluster.NewClient(t, p.addr, "bob")
	bob.Creds = &testcluster.Credentials{Scheme: testcluster.SchemeNTLMv1, User: "bob", Domain: demoNTDomain, Password: pw}
	anon := testcluster.NewClient(t, p.addr, "carol")
	carolURL := bob.URLOf("carol")
	forged := bytes.Replace(bob.MessageBody("alice", "forged by bob"), []byte("<d:href>"+bob.URL+"</d:href>"), []byte("<d:href>"+carolURL+"</d:href>"), 1)
	mustStatus(t, "bob's message claiming carol's name", bob.Send("alice", forged), 403)
	mustStatus(t, "an anonymous message claiming carol's name", anon.Do("NOTIFY", "/instmsg/aliases/alice", anon.MessageBody("alice", "forged anonymously"), "Content-Type: text/xml"), 401)
	mustStatus(t, "bob's genuine message", bob.Send("alice", bob.MessageBody("alice", "genuine from bob")), 200)
	alice.Wait(pidginWait, `^IM bob@\S+ genuine from bob$`) // not a buddy: bob@<host:port>
	if alice.Count(`forged`) != 0 {
		t.Errorf("librvp showed a forged message: %v", alice.Lines())
	}
	n += 3
	countHostile(t, n)
}
