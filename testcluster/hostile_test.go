package testcluster

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rvp-im/rvpd/directory"
	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/gateway"
	"github.com/rvp-im/rvpd/rvp"
)

func notificationBody(kind, from, to string) []byte {
	inner := `<d:propertyupdate><d:set><d:prop><r:state><r:online/></r:state></d:prop></d:set></d:propertyupdate>`
	if kind == "message" {
		inner = "<r:msgbody><r:mime-data><![CDATA[MIME-Version: 1.0\r\nContent-Type: text/plain\r\nSession-Id: {1}\r\n\r\nforged?]]></r:mime-data></r:msgbody>"
	}
	return []byte(`<?xml version="1.0"?><r:notification xmlns:d="DAV:" xmlns:r="http://schemas.microsoft.com/rvp/"><r:` + kind +
		`><r:notification-from><r:contact><d:href>` + from + `</d:href></r:contact></r:notification-from><r:notification-to><r:contact><d:href>` +
		to + `</d:href></r:contact></r:notification-to>` + inner + `</r:` + kind + `></r:notification>`)
}

// TestHostileFederation: what another organisation may do without
// credentials in a deployment that federates, and what our users may ask
// of another organisation through us. Each refusal changes no stream (the
// home node's ACL refusals change no fact).
func TestHostileFederation(t *testing.T) {
	a, b := twoOrgs(t)
	alice, bob := a.Client(t, "alice"), a.Client(t, "bob")
	must(t, "alice login", alice.Login(3600), 200)
	must(t, "bob login", bob.Login(3600), 200)
	dave := b.Client(t, "dave")
	dave.FollowRedirects = true
	must(t, "dave login", dave.Login(3600), 200)
	aliceURL, bobURL := "http://im.example.test/instmsg/aliases/alice", "http://im.example.test/instmsg/aliases/bob"
	daveURL, erinURL := "http://im.acme.test/instmsg/aliases/dave", "http://im.acme.test/instmsg/aliases/erin"
	x := NewClient(t, a.Addr(), "x") // another organisation's server or client, talking to example.test's gateway
	x.UseHost("im.example.test")
	notifyAs := func(from string, body []byte, extra ...string) *Response {
		h := append([]string{"RVP-From-Principal: " + from, "Content-Type: text/xml", "RVP-Hop-Count: 1"}, extra...)
		return x.Do("NOTIFY", "/instmsg/aliases/alice", body, h...)
	}
	subscribeAs := func(from, callBack string) *Response {
		return x.Do("SUBSCRIBE", "/instmsg/aliases/alice", nil, "RVP-From-Principal: "+from, "Notification-Type: update/propchange", "Call-Back: "+callBack)
	}
	for _, tc := range []struct {
		name   string
		do     func() *Response
		want   int
		stores bool // a positive control, or a refusal the home node decides (no fact)
		facts  bool // may append facts
	}{
		{"dave's message saying it is erin's", func() *Response { return notifyAs(daveURL, notificationBody("message", erinURL, aliceURL)) }, 403, false, false},
		{"dave's message saying it is bob's", func() *Response { return notifyAs(daveURL, notificationBody("message", bobURL, aliceURL)) }, 403, false, false},
		{"acme's server speaking for a principal of a third organisation", func() *Response {
			return notifyAs("im.acme.test", notificationBody("propnotification", "http://im.third.test/instmsg/aliases/z", aliceURL))
		}, 403, false, false},
		{"acme's server speaking for one of ours", func() *Response {
			return notifyAs("im.acme.test", notificationBody("propnotification", bobURL, aliceURL))
		}, 403, false, false},
		{"dave's message saying it is bob's, by bob's physical URL at acme's host", func() *Response {
			return notifyAs("http://im.acme.test/instmsg/aliases/bob", notificationBody("message", "http://im.acme.test/instmsg/local/im.example.test/instmsg/aliases/bob", aliceURL))
		}, 403, false, false},
		{"acme's server speaking for one of ours, by a physical URL at its host", func() *Response {
			return notifyAs("im.acme.test", notificationBody("message", "http://im.acme.test/instmsg/local/im.example.test/instmsg/aliases/bob", aliceURL))
		}, 403, false, false},
		{"dave's message addressed to bob, sent to alice", func() *Response { return notifyAs(daveURL, notificationBody("message", daveURL, bobURL)) }, 403, false, false},
		{"a principal of an address", func() *Response {
			return notifyAs("http://10.1.2.3:25/instmsg/aliases/x", notificationBody("message", "http://10.1.2.3:25/instmsg/aliases/x", aliceURL))
		}, 403, false, false},
		{"dave's message with credentials of no one", func() *Response {
			return notifyAs(daveURL, notificationBody("message", daveURL, aliceURL), "Authorization: NTLM "+strings.Repeat("A", 40))
		}, 401, false, false},
		{"dave subscribing with an address as Call-Back", func() *Response { return subscribeAs(daveURL, "http://127.0.0.1:4222") }, 403, false, false},
		{"dave subscribing with erin's URL as Call-Back", func() *Response { return subscribeAs(daveURL, erinURL) }, 403, false, false},
		{"dave subscribing with one of ours as Call-Back", func() *Response { return subscribeAs(daveURL, bobURL) }, 403, true, false},
		{"dave subscribing with his own URL (a positive control)", func() *Response { return subscribeAs(daveURL, daveURL) }, 207, true, true},
		{"dave logging in on alice's node", func() *Response {
			return x.Do("SUBSCRIBE", "/instmsg/aliases/alice", nil, "RVP-From-Principal: "+daveURL, "Notification-Type: pragma/notify", "Call-Back: "+daveURL)
		}, 403, true, false},
		{"dave reading alice's ACL", func() *Response { return x.Do("ACL", "/instmsg/aliases/alice", nil, "RVP-From-Principal: "+daveURL) }, 403, true, false},
		{"dave setting alice's state", func() *Response {
			return x.Do("PROPPATCH", "/instmsg/aliases/alice", StateBody("busy", 600, 0), "RVP-From-Principal: "+daveURL, "Content-Type: text/xml")
		}, 403, true, false},
		{"dave relaying through us to a third organisation", func() *Response {
			return x.DoHost("im.third.test", "NOTIFY", "/instmsg/aliases/z", notificationBody("message", daveURL, "http://im.third.test/instmsg/aliases/z"),
				"RVP-From-Principal: "+daveURL, "Content-Type: text/xml")
		}, 403, false, false},
		{"alice subscribing to dave with an address as Call-Back", func() *Response {
			return alice.DoHost("im.acme.test", "SUBSCRIBE", "/instmsg/aliases/dave", nil, alice.From(), "Notification-Type: update/propchange", "Call-Back: http://10.0.0.5:25")
		}, 403, false, false},
		{"alice subscribing to dave for bob", func() *Response {
			return alice.DoHost("im.acme.test", "SUBSCRIBE", "/instmsg/aliases/dave", nil, alice.From(), "Notification-Type: update/propchange", "Call-Back: "+bobURL)
		}, 403, false, false},
		{"alice's message to dave saying it is bob's", func() *Response {
			return alice.DoHost("im.acme.test", "NOTIFY", "/instmsg/aliases/dave", notificationBody("message", bobURL, daveURL), alice.From(), "Content-Type: text/xml")
		}, 403, false, false},
		{"alice's message to dave addressed to erin", func() *Response {
			return alice.DoHost("im.acme.test", "NOTIFY", "/instmsg/aliases/dave", notificationBody("message", aliceURL, erinURL), alice.From(), "Content-Type: text/xml")
		}, 403, false, false},
		{"a principal of localhost", func() *Response {
			return subscribeAs("http://localhost:4222/instmsg/aliases/x", "http://localhost:4222/instmsg/aliases/x")
		}, 403, false, false},
		{"a principal of a host of a local network", func() *Response {
			return subscribeAs("http://sink:9200/instmsg/aliases/x", "http://sink:9200/instmsg/aliases/x")
		}, 403, false, false},
		{"alice logging in with her physical URL at another host as Call-Back", func() *Response {
			return alice.Do("SUBSCRIBE", "/instmsg/aliases/alice", nil, alice.From(), "Notification-Type: pragma/notify",
				"Call-Back: http://metadata.internal:9200/instmsg/local/im.example.test/instmsg/aliases/alice")
		}, 403, false, false},
		{"alice logging in with her own URL at another port as Call-Back", func() *Response {
			return alice.Do("SUBSCRIBE", "/instmsg/aliases/alice", nil, alice.From(), "Notification-Type: pragma/notify",
				"Call-Back: http://im.example.test:8222/instmsg/aliases/alice")
		}, 403, false, false},
		{"alice subscribing to dave with her own URL at another port as Call-Back", func() *Response {
			return alice.DoHost("im.acme.test", "SUBSCRIBE", "/instmsg/aliases/dave", nil, alice.From(), "Notification-Type: update/propchange",
				"Call-Back: http://im.example.test:8222/instmsg/aliases/alice")
		}, 403, false, false},
		{"alice subscribing to dave as her own URL at another port, through a Host at that port", func() *Response {
			me := "http://im.example.test:8222/instmsg/aliases/alice"
			return alice.DoHost("im.example.test:8222", "SUBSCRIBE", "/instmsg/local/im.acme.test/instmsg/aliases/dave", nil,
				"RVP-From-Principal: "+me, "Notification-Type: update/propchange", "Call-Back: "+me)
		}, 403, false, false},
		{"alice subscribing to dave as her own URL at another port, through his Host at that port", func() *Response {
			me := "http://im.example.test:8222/instmsg/aliases/alice"
			return alice.DoHost("im.acme.test:8222", "SUBSCRIBE", "/instmsg/aliases/dave", nil,
				"RVP-From-Principal: "+me, "Notification-Type: update/propchange", "Call-Back: "+me)
		}, 403, false, false},
		{"alice's message to dave from her own URL at another port", func() *Response {
			return alice.DoHost("im.acme.test", "NOTIFY", "/instmsg/aliases/dave", notificationBody("message", "http://im.example.test:8222/instmsg/aliases/alice", daveURL),
				"RVP-From-Principal: http://im.example.test:8222/instmsg/aliases/alice", "Content-Type: text/xml")
		}, 403, false, false},
		{"alice subscribing to dave as her physical URL at another host", func() *Response {
			me := "http://sink.internal:9200/instmsg/local/im.example.test/instmsg/aliases/alice"
			return alice.DoHost("im.acme.test", "SUBSCRIBE", "/instmsg/aliases/dave", nil, "RVP-From-Principal: "+me,
				"Notification-Type: update/propchange", "Call-Back: "+me)
		}, 403, false, false},
		{"alice's message to bob from her physical URL at another organisation's host", func() *Response {
			return alice.Do("NOTIFY", "/instmsg/aliases/bob",
				notificationBody("message", "http://im.partner.test/instmsg/local/im.example.test/instmsg/aliases/alice", bobURL),
				alice.From(), "Content-Type: text/xml")
		}, 403, false, false},
		{"alice's message to bob from her physical URL at another port of her home server's host", func() *Response {
			host, _, _ := strings.Cut(a.Gateways[0].Addr, ":")
			return alice.Do("NOTIFY", "/instmsg/aliases/bob",
				notificationBody("message", "http://"+host+":1/instmsg/local/im.example.test/instmsg/aliases/alice", bobURL),
				alice.From(), "Content-Type: text/xml")
		}, 403, false, false},
		{"alice's message to bob from her physical URL at her home server (a positive control)", func() *Response {
			return alice.Do("NOTIFY", "/instmsg/aliases/bob",
				notificationBody("message", "http://"+a.Gateways[0].Addr+"/instmsg/local/im.example.test/instmsg/aliases/alice", bobURL),
				alice.From(), "Content-Type: text/xml")
		}, 200, true, true},
		{"dave's genuine message (a positive control)", func() *Response {
			return notifyAs(daveURL, notificationBody("message", daveURL, aliceURL))
		}, 200, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := LastSeqs(t, a.JS)
			r := tc.do()
			if r.Status != tc.want {
				t.Errorf("status %d, want %d; body %q", r.Status, tc.want, r.Body)
			}
			after := LastSeqs(t, a.JS)
			for name, seq := range before {
				changed := after[name] != seq
				switch {
				case !changed:
				case tc.facts:
				case tc.stores && name == events.StreamRequests:
					// decided by the home node: the request, and no fact
				default:
					t.Errorf("stream %s: last sequence %d, was %d", name, after[name], seq)
				}
			}
		})
	}
	for _, n := range alice.Notifies() {
		if strings.Contains(string(n.Body), "forged?") && !strings.Contains(n.From(), "dave") {
			t.Errorf("a forged notification reached alice:\n%s", n.Body)
		}
	}
	// The gateway counted what it refused, for the metrics.
	st := a.Gateways[0].Gateway.Stats()
	if st.Forged < 9 || st.CallBacksRefused < 4 || st.Foreign < 5 {
		t.Errorf("gateway stats %+v: want at least 9 forged, 4 Call-Backs refused, 5 foreign requests taken", st)
	}
}

// TestHostileHomeServerHost: a principal named at one of our home
// servers' hosts (imhome9.example.test, which is no IM domain's host) is
// ours, not another organisation's: without credentials it may not speak
// in a deployment that federates, as bob or as anyone, nor name itself as
// Call-Back (the home node would deliver presence over HTTP to our own
// home server). It was taken for another organisation's, whose
// principals speak without credentials: alice got a message from "bob".
func TestHostileHomeServerHost(t *testing.T) {
	a := Start(t, Options{Domain: "example.test", Users: map[string]string{"alice": "home1", "bob": "home1"}, InternetCapable: true})
	if err := a.Admin.CreateHomeServer(t.Context(), "home9", "imhome9.example.test", "", true); err != nil {
		t.Fatal(err)
	}
	a.DirectorySettled()
	alice := a.Client(t, "alice")
	must(t, "alice login", alice.Login(3600), 200)
	aliceURL := "http://im.example.test/instmsg/aliases/alice"
	bobThere := "http://imhome9.example.test/instmsg/aliases/bob"
	x := NewClient(t, a.Addr(), "x") // no credentials
	x.UseHost("im.example.test")
	for _, tc := range []struct {
		name string
		do   func() *Response
	}{
		{"a message from bob at a home server's host", func() *Response {
			return x.Do("NOTIFY", "/instmsg/aliases/alice", notificationBody("message", bobThere, aliceURL),
				"RVP-From-Principal: "+bobThere, "Content-Type: text/xml", "RVP-Hop-Count: 1")
		}},
		{"the home server's host as a server speaking for bob", func() *Response {
			return x.Do("NOTIFY", "/instmsg/aliases/alice", notificationBody("message", bobThere, aliceURL),
				"RVP-From-Principal: imhome9.example.test:80", "Content-Type: text/xml", "RVP-Hop-Count: 1")
		}},
		{"bob at a home server's host watching alice, with himself as Call-Back", func() *Response {
			return x.Do("SUBSCRIBE", "/instmsg/aliases/alice", nil, "RVP-From-Principal: "+bobThere,
				"Notification-Type: update/propchange", "Call-Back: "+bobThere)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := LastSeqs(t, a.JS)
			r := tc.do()
			if r.Status != 403 || !strings.Contains(string(r.Body), "home server home9") {
				t.Errorf("status %d, want 403 naming home server home9; body %q", r.Status, r.Body)
			}
			if after := LastSeqs(t, a.JS); fmt.Sprint(after) != fmt.Sprint(before) {
				t.Errorf("a refused request changed the streams: %v, was %v", after, before)
			}
		})
	}
	for _, n := range alice.Notifies() {
		if strings.Contains(string(n.Body), "forged?") {
			t.Errorf("a forged notification reached alice:\n%s", n.Body)
		}
	}
}

// TestHostileOurDomainsNames: a principal named at a host under one of
// our IM domains' names, IM hosts or e-mail domains that no IM domain
// answers to (wiki.example.test), or under -federation.internal, is ours,
// not another organisation's: without credentials it may not speak (403
// saying what to do, nothing appended), as itself or as its server, nor
// subscribe with itself as Call-Back. It was taken for another
// organisation's principal, which speaks without credentials: its
// messages reached alice, and its subscription had the home node send
// alice's presence to our own network through the outbound proxy, as to
// another organisation (a blind SSRF). Another organisation's principal,
// and one under our IM domain's name that the peer table names (a
// subsidiary), still subscribe.
func TestHostileOurDomainsNames(t *testing.T) {
	web := &PeerDialer{}
	proxy := newWebProxy(t, web)
	a := Start(t, Options{Domain: "example.test", Users: map[string]string{"alice": "home1"}, InternetCapable: true,
		Proxy: "http://" + proxy.ln.Addr().String(), Internal: []string{"corp.example"}})
	if _, err := a.Admin.ChangeDomainHosts(t.Context(), directory.DomainHostsSpec{Domain: "example.test", AddEmailDomains: []string{"staff.example.net"}}); err != nil {
		t.Fatal(err)
	}
	sink := answeringServer(t, "HTTP/1.1 200 Successful\r\nContent-Length: 0\r\n\r\n")
	a.Dialer.Set("partner.example.test", sink) // a subsidiary, peered
	a.DirectorySettled()
	ours := []string{"wiki.example.test", "WIKI.Example.Test.", "wiki.example.test:8080", "x.im.example.test", "intranet.staff.example.net", "wiki.corp.example"}
	for _, h := range append(slices.Clone(ours), "im.other.test") {
		web.Set(strings.ToLower(strings.TrimSuffix(events.Hostname(h), ".")), sink) // what the proxy would reach
	}
	alice := a.Client(t, "alice")
	must(t, "alice login", alice.Login(3600), 200)
	aliceURL := "http://im.example.test/instmsg/aliases/alice"
	x := NewClient(t, a.Addr(), "x") // no credentials
	x.UseHost("im.example.test")
	subscribe := func(from, callBack string) *Response {
		return x.Do("SUBSCRIBE", "/instmsg/aliases/alice", nil, "RVP-From-Principal: "+from, "Notification-Type: update/propchange",
			"Call-Back: "+callBack, "Subscription-Lifetime: 3600")
	}
	for _, h := range ours {
		p := "http://" + h + "/instmsg/aliases/x"
		for _, tc := range []struct {
			name string
			do   func() *Response
		}{
			{"watching alice with itself as Call-Back", func() *Response { return subscribe(p, p) }},
			{"a message to alice", func() *Response {
				return x.Do("NOTIFY", "/instmsg/aliases/alice", notificationBody("message", p, aliceURL),
					"RVP-From-Principal: "+p, "Content-Type: text/xml", "RVP-Hop-Count: 1")
			}},
			{"its server's message to alice", func() *Response {
				return x.Do("NOTIFY", "/instmsg/aliases/alice", notificationBody("message", p, aliceURL),
					"RVP-From-Principal: "+h, "Content-Type: text/xml", "RVP-Hop-Count: 1")
			}},
		} {
			t.Run(h+": "+tc.name, func(t *testing.T) {
				before := LastSeqs(t, a.JS)
				r := tc.do()
				if body := string(r.Body); r.Status != 403 || !strings.Contains(body, "of ours") ||
					!(strings.Contains(body, "rvpctl domain hosts") || strings.Contains(body, "-federation.internal")) {
					t.Errorf("status %d, want 403 saying the host is ours and what to do; body %q", r.Status, r.Body)
				}
				if after := LastSeqs(t, a.JS); fmt.Sprint(after) != fmt.Sprint(before) {
					t.Errorf("a refused request changed the streams: %v, was %v", after, before)
				}
			})
		}
	}
	// Positive controls: another organisation's principal, and a
	// subsidiary's the peer table names.
	other, partner := "http://im.other.test/instmsg/aliases/x", "http://partner.example.test/instmsg/aliases/p"
	must(t, "another organisation's principal watches alice", subscribe(other, other), 207)
	must(t, "a subsidiary's principal watches alice", subscribe(partner, partner), 207)
	must(t, "alice online", alice.SetState("online", 1200, 0), 207)
	Eventually(t, wait, func() error {
		if got := strings.Join(proxy.requests(), "\n"); !strings.Contains(got, "NOTIFY "+other) {
			return fmt.Errorf("the proxy has not carried alice's presence to %s; it carried:\n%s", other, got)
		}
		return nil
	})
	for _, line := range proxy.requests() {
		for _, h := range ours {
			if strings.Contains(strings.ToLower(line), strings.ToLower(strings.TrimSuffix(events.Hostname(h), "."))) {
				t.Errorf("the proxy was asked for a host of ours: %s", line)
				break
			}
		}
	}
	for _, n := range alice.Notifies() {
		if strings.Contains(string(n.Body), "forged?") {
			t.Errorf("a message from a principal of ours without credentials reached alice:\n%s", n.Body)
		}
	}
}

// answeringServer is a web server on loopback that answers every request
// with response; it returns its address.
func answeringServer(t *testing.T, response string) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				rvp.ReadRequest(bufio.NewReader(c), rvp.Limits{})
				io.WriteString(c, response)
			}()
		}
	}()
	return ln.Addr().String()
}

// TestHostileOtherUsersNode: a signed-in user, speaking as itself, asks
// everything of another user's node and subscriptions: renewing and
// ending bob's login by its id, setting his state, reading and writing
// his ACL, listing his subscriptions, logging in to his node, watching
// him for carol. Each is refused (403) by bob's home node, which appends
// no fact; bob's login is still his afterwards.
func TestHostileOtherUsersNode(t *testing.T) {
	a := Start(t, Options{})
	alice, bob := a.Client(t, "alice"), a.Client(t, "bob")
	must(t, "alice login", alice.Login(3600), 200)
	must(t, "bob login", bob.Login(3600), 200)
	facts := events.FactStream("home1")
	bobs := "/instmsg/aliases/bob"
	acl := `<a:rvpacl xmlns:a="http://schemas.microsoft.com/rvp/acl/"><a:acl><a:ace><a:principal><a:rvp-principal>` + alice.URL +
		`</a:rvp-principal><a:credentials><a:ntlm/></a:credentials></a:principal><a:grant><a:all/></a:grant><a:deny/></a:ace></a:acl></a:rvpacl>`
	id := "Subscription-Id: " + strconv.Itoa(bob.LoginID)
	for _, tc := range []struct {
		name string
		do   func() *Response
	}{
		{"renewing bob's login", func() *Response {
			return alice.Do("SUBSCRIBE", bobs, nil, alice.From(), id, "Subscription-Lifetime: 14400")
		}},
		{"ending bob's login", func() *Response { return alice.Do("UNSUBSCRIBE", bobs, nil, alice.From(), id) }},
		{"setting bob's state", func() *Response {
			return alice.Do("PROPPATCH", bobs, StateBody("away", 600, 0), alice.From(), "Content-Type: text/xml")
		}},
		{"reading bob's ACL", func() *Response { return alice.Do("ACL", bobs, nil, alice.From()) }},
		{"granting herself everything on bob's node", func() *Response {
			return alice.Do("ACL", bobs, []byte(acl), alice.From(), "Content-Type: text/xml")
		}},
		{"listing bob's subscriptions", func() *Response {
			return alice.Do("SUBSCRIPTIONS", bobs, nil, alice.From(), "Notification-Type: pragma/notify")
		}},
		{"logging in to bob's node", func() *Response {
			return alice.Do("SUBSCRIBE", bobs, nil, alice.From(), "Notification-Type: pragma/notify", "Call-Back: "+alice.CallBack)
		}},
		{"watching bob for carol", func() *Response {
			return alice.Do("SUBSCRIBE", bobs, nil, alice.From(), "Notification-Type: update/propchange", "Call-Back: "+alice.URLOf("carol"))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := StreamStates(t, a.JS)[facts].LastSeq
			if r := tc.do(); r.Status != 403 {
				t.Errorf("status %d, want 403; body %q", r.Status, r.Body)
			}
			if after := StreamStates(t, a.JS)[facts].LastSeq; after != before {
				t.Errorf("a refused request appended %d facts", after-before)
			}
		})
	}
	must(t, "bob renews his login", bob.Do("SUBSCRIBE", bobs, nil, bob.From(), id, "Subscription-Lifetime: 3600"), 200)
}

// TestHostileBodilessRequestsKept: requests without a body that leave
// facts (a renewal: subscription.renewed, kept for the audit as long as
// the facts are) draw on the sender's bytes a day, as requests with one
// do; reads, which keep nothing, do not. Before, only bodies counted:
// a signed-in user renewing its login 512 times a second (the bytes a
// second's share of bodiless requests) stored some 330 KB of facts a
// second (650 bytes a renewal), 28 GB a day, its day's share of 64 MiB
// untouched.
func TestHostileBodilessRequestsKept(t *testing.T) {
	const day = 64 << 10 // bytes a day: some 128 bodiless requests
	a := Start(t, Options{Senders: gateway.SenderLimits{BytesPerSecond: 1 << 30, ByteBurst: 1 << 30, BytesPerDay: day}})
	alice := a.Client(t, "alice")
	must(t, "alice login", alice.Login(3600), 200)
	facts := events.FactStream("home1")
	before := StreamStates(t, a.JS)[facts]
	renewed := 0
	var r *Response
	for range 1000 {
		r = alice.Do("SUBSCRIBE", "/instmsg/aliases/alice", nil, alice.From(), "Subscription-Id: "+strconv.Itoa(alice.LoginID), "Subscription-Lifetime: 3600")
		if r.Status != 200 {
			break
		}
		renewed++
	}
	after := StreamStates(t, a.JS)[facts]
	t.Logf("%d renewals stored %d facts, %d bytes", renewed, after.LastSeq-before.LastSeq, after.Bytes-before.Bytes)
	if r.Status != 429 || !strings.Contains(string(r.Body), "bytes per day") || r.Header.Get("Retry-After") == "" {
		t.Fatalf("after %d renewals: %d %q, want 429 for the bytes a day with Retry-After", renewed, r.Status, r.Body)
	}
	if most := day / 512; renewed > most {
		t.Errorf("%d renewals before the day's share was spent; it holds %d", renewed, most)
	}
	// A read keeps nothing: still served.
	must(t, "alice reads bob's properties", alice.Do("PROPFIND", "/instmsg/aliases/bob",
		[]byte(`<d:propfind xmlns:d="DAV:"><d:allprop/></d:propfind>`), alice.From(), "Depth: 0"), 207)
}

// TestHostileACLWritesKept: an ACL write that changes an entry appends
// an acl.set fact holding the whole ACL, and the gateway charges what
// it keeps (the home node's Reply.Kept) to the writer's bytes a day, not
// only the body. Before, a user with a full ACL (some 220 KB here)
// writing one entry back and forth kept 220 KB a write for some 900
// bytes charged: 200 writes kept 44 MB, ten times a day's share of
// 4 MiB, untouched; at the default shares (64 MiB a day, 256 KiB a
// second) some 60 MB a second.
func TestHostileACLWritesKept(t *testing.T) {
	const day = 4 << 20
	a := Start(t, Options{Senders: gateway.SenderLimits{BytesPerSecond: 1 << 30, ByteBurst: 1 << 30, BytesPerDay: day}})
	alice := a.Client(t, "alice")
	ace := func(principal, grant string) string {
		return `<a:ace><a:principal><a:rvp-principal>` + principal + `</a:rvp-principal><a:credentials><a:assertion/></a:credentials></a:principal><a:grant>` +
			grant + `</a:grant><a:deny/></a:ace>`
	}
	write := func(aces string) *Response {
		body := `<a:rvpacl xmlns:a="http://schemas.microsoft.com/rvp/acl/"><a:acl><a:inheritance>none</a:inheritance>` + aces + `</a:acl></a:rvpacl>`
		return alice.Do("ACL", "/instmsg/aliases/alice", []byte(body), alice.From(), "Content-Type: text/xml")
	}
	long := strings.Repeat("x", 200)
	principal := func(i int) string { return fmt.Sprintf("http://far%d.test/instmsg/aliases/%s%d", i, long, i) }
	for w := range 3 {
		var b strings.Builder
		for i := range 240 {
			b.WriteString(ace(principal(w*240+i), "<a:presence/>"))
		}
		must(t, fmt.Sprintf("ACL write %d of 240 entries", w), write(b.String()), 200)
	}
	facts := events.FactStream("home1")
	before := StreamStates(t, a.JS)[facts]
	writes := 0
	var r *Response
	for i := range 200 {
		grant := "<a:presence/>"
		if i%2 == 0 {
			grant = "<a:send-to/>"
		}
		if r = write(ace(principal(0), grant)); r.Status != 200 {
			break
		}
		writes++
	}
	after := StreamStates(t, a.JS)[facts]
	kept := after.Bytes - before.Bytes
	t.Logf("%d one-entry ACL writes kept %d facts, %d bytes; the day's share is %d", writes, after.LastSeq-before.LastSeq, kept, day)
	if r.Status != 429 || !strings.Contains(string(r.Body), "bytes per day") || r.Header.Get("Retry-After") == "" {
		t.Fatalf("after %d writes: %d %.200q, want 429 for the bytes a day with Retry-After", writes, r.Status, r.Body)
	}
	if kept > day {
		t.Errorf("one-entry ACL writes kept %d bytes of facts, more than the writer's bytes a day (%d)", kept, day)
	}
	// A read keeps nothing: still served.
	must(t, "alice reads her ACL", alice.Do("ACL", "/instmsg/aliases/alice", nil, alice.From()), 200)
}

// TestHostilePropPatchKept: a PROPPATCH naming a property over and over
// sets it once. Before, each was a fact: a body of 44 KB (1,300
// mobile-states) kept 1,300 facts, 750 KB, its bytes a day charged 44 KB.
func TestHostilePropPatchKept(t *testing.T) {
	a := Start(t, Options{})
	alice := a.Client(t, "alice")
	var b strings.Builder
	b.WriteString(`<d:propertyupdate xmlns:d="DAV:" xmlns:r="http://schemas.microsoft.com/rvp/"><d:set><d:prop>`)
	for i := range 1300 {
		fmt.Fprintf(&b, `<r:mobile-state>%d</r:mobile-state>`, i%2)
	}
	b.WriteString(`</d:prop></d:set></d:propertyupdate>`)
	facts := events.FactStream("home1")
	before := StreamStates(t, a.JS)[facts]
	r := alice.Do("PROPPATCH", "/instmsg/aliases/alice", []byte(b.String()), alice.From(), "Content-Type: text/xml")
	must(t, "alice's PROPPATCH of 1,300 mobile-states", r, 207)
	after := StreamStates(t, a.JS)[facts]
	if n := after.LastSeq - before.LastSeq; n != 1 {
		t.Errorf("a PROPPATCH of %d bytes setting one property kept %d facts, %d bytes; want one", b.Len(), n, after.Bytes-before.Bytes)
	}
	if n := strings.Count(string(r.Body), "mobile-state"); n > 2 {
		t.Errorf("the answer names mobile-state %d times, want once: %.300s", n, r.Body)
	}
	pf := alice.Do("PROPFIND", "/instmsg/aliases/alice", []byte(`<d:propfind xmlns:d="DAV:" xmlns:r="http://schemas.microsoft.com/rvp/"><d:prop><r:mobile-state/></d:prop></d:propfind>`),
		alice.From(), "Depth: 0")
	if !strings.Contains(string(pf.Body), ">1</") {
		t.Errorf("mobile-state after the PROPPATCH: %q, want the last value given, 1", pf.Body)
	}
}

// TestGatewayStats: the per-sender limits and sign-in throttling are
// counted, with requests refused for want of credentials.
func TestGatewayStats(t *testing.T) {
	c := Start(t, Options{Senders: gateway.SenderLimits{MessagesPerSecond: 1, MessageBurst: 1}})
	alice, bob := c.Client(t, "alice"), c.Client(t, "bob")
	must(t, "bob login", bob.Login(600), 200)
	must(t, "first message", alice.Send("bob", alice.MessageBody("bob", "1")), 200)
	r := alice.Send("bob", alice.MessageBody("bob", "2"))
	must(t, "second message at once", r, 429)
	if r.Header.Get("Retry-After") != "1" {
		t.Errorf("Retry-After %q, want 1", r.Header.Get("Retry-After"))
	}
	anon := NewClient(t, c.Addr(), "carol")
	must(t, "anonymous", anon.Do("PROPFIND", "/instmsg/aliases/bob", nil, "Depth: 0"), 401)
	guess := c.Client(t, "carol")
	guess.Creds.Password = "guess"
	for range 5 {
		if guess.Login(600).Status == 403 {
			break
		}
	}
	st := c.Gateways[0].Gateway.Stats()
	if st.RateLimited != 1 || st.Unauthenticated == 0 || st.SignInsThrottled == 0 {
		t.Errorf("gateway stats %+v: want 1 rate-limited, some unauthenticated and throttled", st)
	}
}

// TestConnectionsPerAddress: one address holds at most MaxConnsPerAddress
// of a gateway's connections; the next is answered 503 and closed, while
// another address is served, and a connection closed makes room.
func TestConnectionsPerAddress(t *testing.T) {
	c := Start(t, Options{MaxConnsPerAddress: 3})
	dial := func(from string) net.Conn {
		t.Helper()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
		nc, err := d.Dial("tcp", c.Addr())
		if err != nil {
			t.Fatalf("connect from %s: %v", from, err)
		}
		t.Cleanup(func() { nc.Close() })
		return nc
	}
	// status sends a request without credentials on nc and returns the
	// answer's status line.
	status := func(nc net.Conn) string {
		t.Helper()
		nc.SetDeadline(time.Now().Add(5 * time.Second))
		nc.Write([]byte("PROPFIND /instmsg/aliases/alice HTTP/1.1\r\nHost: im.example.test\r\nDepth: 0\r\nContent-Length: 0\r\n\r\n"))
		line, _ := bufio.NewReader(nc).ReadString('\n')
		return strings.TrimSpace(line)
	}
	var held []net.Conn
	for range 3 {
		nc := dial("127.0.0.1")
		if got := status(nc); !strings.Contains(got, " 401 ") {
			t.Fatalf("connection %d from 127.0.0.1: %q, want 401", len(held)+1, got)
		}
		held = append(held, nc)
	}
	if got := status(dial("127.0.0.1")); !strings.Contains(got, " 503 ") {
		t.Errorf("a fourth connection from 127.0.0.1: %q, want 503", got)
	}
	if got := status(dial("127.0.0.2")); !strings.Contains(got, " 401 ") {
		t.Errorf("a connection from 127.0.0.2: %q, want 401 (its own share)", got)
	}
	held[0].Close()
	Eventually(t, 5*time.Second, func() error {
		if got := status(dial("127.0.0.1")); !strings.Contains(got, " 401 ") {
			return fmt.Errorf("after one of its connections closed, another from 127.0.0.1: %q, want 401", got)
		}
		return nil
	})
}
