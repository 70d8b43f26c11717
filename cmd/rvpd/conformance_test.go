package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rvp-im/rvpd/directory"
	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/rvp"
	"github.com/rvp-im/rvpd/testcluster"
)

// The conformance cases of ../shared/docs/rvp-protocol.md §12 that concern
// a single home server (1-13, 16-62, 65-68), each a named subtest driving a
// running rvpd dev over real HTTP with callback listeners. Cases 14, 15,
// 63 and 64 need routers and other organisations (issue 6); 69-74 are in
// auth_test.go. Deviations from the digest are noted at the case.

type conformance struct {
	t *testing.T
	p *devProc
}

// user returns a fresh client of alias, signed in with NTLMv1. Users other
// than the demo ones are enabled through the directory service first.
func (cf *conformance) user(t *testing.T, alias string) *testcluster.Client {
	t.Helper()
	return newClient(t, cf.p.addr, alias)
}

func (cf *conformance) enable(aliases ...string) {
	cf.t.Helper()
	nc, err := nats.Connect(cf.p.natsURL)
	if err != nil {
		cf.t.Fatal(err)
	}
	defer nc.Close()
	admin := &directory.Client{Conn: nc, Name: demoAdmin, Password: testPassword}
	ctx := context.Background()
	for _, a := range aliases {
		u := events.NewUser(demoDomain, a)
		if err := admin.EnableUser(ctx, directory.UserSpec{User: u, Home: demoHome, DisplayName: strings.ToUpper(a[:1]) + a[1:]}); err != nil {
			cf.t.Fatalf("enable %s: %v", u, err)
		}
		v := rvp.NewVerifiers(u, demoNTDomain, "", demoDomain, testPassword)
		if err := admin.SetPassword(ctx, u, v); err != nil {
			cf.t.Fatalf("password of %s: %v", u, err)
		}
	}
}

func hasAll(t *testing.T, what, body string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(body, w) {
			t.Errorf("%s lacks %q:\n%s", what, w, body)
		}
	}
}

func propfind(c *testcluster.Client, alias, props string, depth ...string) *testcluster.Response {
	body := []byte(`<?xml version="1.0"?><d:propfind xmlns:d="DAV:" xmlns:r="http://schemas.microsoft.com/rvp/">` + props + `</d:propfind>`)
	h := []string{c.From(), "Content-Type: text/xml"}
	h = append(h, depth...)
	return c.Do("PROPFIND", "/instmsg/aliases/"+alias, body, h...)
}

func subscriptions(c *testcluster.Client, alias, kind string) *testcluster.Response {
	return c.Do("SUBSCRIPTIONS", "/instmsg/aliases/"+alias, nil, c.From(), "Notification-Type: "+kind)
}

// marker sends a message from one client to another and waits for it:
// NOTIFYs queued before it have been sent by the time it arrives, so its
// arrival bounds "no NOTIFY came" checks without sleeping.
func marker(t *testing.T, from, to *testcluster.Client) {
	t.Helper()
	body := from.MessageBody(to.Alias, "marker "+strconv.FormatInt(time.Now().UnixNano(), 10))
	mustStatus(t, "marker", from.Send(to.Alias, body), 200)
	to.WaitNotify(0, wait, func(n testcluster.Notify) bool { return bytes.Equal(n.Body, body) })
}

func TestConformance(t *testing.T) {
	p := startDev(t, t.TempDir(), "-notify.timeout", "5s")
	cf := &conformance{t: t, p: p}
	cf.enable("dave", "erin", "frank", "mallory", "gina", "hank", "ivy", "judy", "kim", "leo", "max", "nina", "olga")

	// --- HTTP framing ---
	t.Run("C01_every_answer_has_version_and_length", func(t *testing.T) {
		a := cf.user(t, "alice")
		anon := testcluster.NewClient(t, p.addr, "alice")
		for want, r := range map[int]*testcluster.Response{
			200: a.Login(600),
			207: a.Watch("bob", 600),
			401: anon.Raw(loginRaw(anon)),
			404: a.Watch("nobody", 600),
			412: a.Do("PROPFIND", "/instmsg/aliases/bob", nil, a.From()),
			501: a.Do("GET", "/instmsg/aliases/bob", nil),
			405: a.Do("MOVE", "/instmsg/aliases/bob", nil),
		} {
			// ReadResponse refused any answer without both headers.
			if r.Status != want || r.Header.Get(rvp.HdrVersion) != "0.2" || r.Header.Get("Content-Length") == "" {
				t.Errorf("answer %d (want %d): version %q, length %q", r.Status, want, r.Header.Get(rvp.HdrVersion), r.Header.Get("Content-Length"))
			}
		}
	})
	t.Run("C02_any_version_accepted", func(t *testing.T) {
		a := cf.user(t, "alice")
		raw := strings.Replace(string(loginRaw(a)), "RVP-Notifications-Version: 0.2", "RVP-Notifications-Version: 1.0", 1)
		mustStatus(t, "version 1.0", a.Raw([]byte(raw)), 200)
		raw = strings.Replace(string(loginRaw(a)), "RVP-Notifications-Version: 0.2\r\n", "", 1)
		mustStatus(t, "no version", a.Raw([]byte(raw)), 200)
	})
	t.Run("C03_bare_LF", func(t *testing.T) {
		a := cf.user(t, "alice")
		mustStatus(t, "bare LF", a.Raw([]byte(strings.ReplaceAll(string(loginRaw(a)), "\r\n", "\n"))), 200)
	})
	t.Run("C04_large_answer_has_length", func(t *testing.T) {
		// 45 subscriptions, from two watchers (one subscriber keeps at
		// most 32 of a node's).
		g, n := cf.user(t, "gina"), cf.user(t, "nina")
		for i := range 45 {
			w := g
			if i >= 30 {
				w = n
			}
			mustStatus(t, "watch", w.Watch("hank", 600), 207)
		}
		r := subscriptions(cf.user(t, "hank"), "hank", "update/propchange")
		mustStatus(t, "SUBSCRIPTIONS", r, 200)
		if len(r.Body) < 10000 {
			t.Fatalf("answer only %d bytes", len(r.Body))
		}
		// ReadResponse read it by Content-Length and refused chunking.
		if r.Header.Get("Content-Length") != strconv.Itoa(len(r.Body)) {
			t.Errorf("Content-Length %s for %d bytes", r.Header.Get("Content-Length"), len(r.Body))
		}
	})
	t.Run("C05_bodiless_without_length", func(t *testing.T) {
		a := cf.user(t, "alice")
		r := a.Raw([]byte("UNSUBSCRIBE /instmsg/aliases/bob HTTP/1.1\r\nHost: 127.0.0.1\r\n" + a.From() + "\r\nSubscription-Id: 999999\r\n\r\n"))
		mustStatus(t, "UNSUBSCRIBE without Content-Length", r, 200)
	})
	t.Run("C06_absolute_form", func(t *testing.T) {
		a := cf.user(t, "alice")
		r := a.Raw([]byte("SUBSCRIBE http://im.example.test/instmsg/aliases/bob HTTP/1.1\r\nHost: im.example.test\r\n" + a.From() +
			"\r\nNotification-Type: update/propchange\r\nCall-Back: " + a.URL + "\r\nContent-Length: 0\r\n\r\n"))
		mustStatus(t, "absolute form", r, 207)
		hasAll(t, "answer", string(r.Body), "<d:href>http://im.example.test/instmsg/aliases/bob</d:href>")
	})
	t.Run("C07_header_names_any_case", func(t *testing.T) {
		a := cf.user(t, "alice")
		r := a.Raw([]byte("SUBSCRIBE /instmsg/aliases/alice HTTP/1.1\r\nhOsT: 127.0.0.1\r\nrvp-from-principal: " + a.URL +
			"\r\nNOTIFICATION-TYPE: pragma/notify\r\nSUBSCRIPTION-LIFETIME: 777\r\ncall-back: " + a.CallBack + "\r\ncontent-length: 0\r\n\r\n"))
		mustStatus(t, "mixed case", r, 200)
		if r.Header.Get(rvp.HdrLifetime) != "777" {
			t.Errorf("lifetime %q", r.Header.Get(rvp.HdrLifetime))
		}
	})
	t.Run("C08_other_methods", func(t *testing.T) {
		a := cf.user(t, "alice")
		mustStatus(t, "GET", a.Do("GET", "/instmsg/aliases/bob", nil), 501)
		mustStatus(t, "COPY", a.Do("COPY", "/instmsg/aliases/bob", nil), 405)
		mustStatus(t, "OPTIONS", a.Do("OPTIONS", "/", nil), 501)
		mustStatus(t, "POLL", a.Do("POLL", "/instmsg/aliases/bob", nil), 501)
	})
	t.Run("C09_NTLM_keeps_the_connection", func(t *testing.T) {
		a := cf.user(t, "alice")
		nc, err := net.Dial("tcp", p.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		nc.SetDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(nc)
		send := func(auth string) *testcluster.Response {
			raw := string(loginRaw(a))
			if auth != "" {
				raw = strings.Replace(raw, "\r\n", "\r\nAuthorization: "+auth+"\r\n", 1)
			}
			io.WriteString(nc, raw)
			r, err := testcluster.ReadResponse(br)
			if err != nil {
				t.Fatal(err)
			}
			return r
		}
		mustStatus(t, "plain", send(""), 401)
		r := send("NTLM " + base64.StdEncoding.EncodeToString(testcluster.NTLMNegotiate(a.Creds)))
		mustStatus(t, "type 1", r, 401)
		type2, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(r.Header.Get("WWW-Authenticate"), "NTLM "))
		type3, err := testcluster.NTLMAuthenticate(a.Creds, type2)
		if err != nil {
			t.Fatal(err)
		}
		mustStatus(t, "type 3 on the same connection", send("NTLM "+base64.StdEncoding.EncodeToString(type3)), 200)
	})

	// --- Addressing and routing ---
	t.Run("C10_case_port_and_slash_name_one_node", func(t *testing.T) {
		i, j := cf.user(t, "ivy"), cf.user(t, "judy")
		for _, target := range []string{"/instmsg/aliases/Judy", "/instmsg/aliases/judy", "http://IM.EXAMPLE.TEST:80/instmsg/aliases/judy/"} {
			r := i.Do("SUBSCRIBE", target, nil, i.From(), "Notification-Type: update/propchange", "Call-Back: "+i.URL, "Subscription-Lifetime: 600")
			mustStatus(t, target, r, 207)
		}
		r := subscriptions(j, "judy", "update/propchange")
		if n := strings.Count(string(r.Body), "<r:subscription>"); n != 3 {
			t.Errorf("judy's node has %d subscriptions, want the 3 made to its three spellings", n)
		}
	})
	t.Run("C11_bare_email_domain_host", func(t *testing.T) {
		a := cf.user(t, "alice")
		a.UseHost("example.test")
		mustStatus(t, "Host: example.test", a.Watch("bob", 600), 207)
	})
	t.Run("C12_physical_path", func(t *testing.T) {
		a := cf.user(t, "alice")
		r := a.Do("SUBSCRIBE", "/instmsg/local/im.example.test/instmsg/aliases/bob", nil, a.From(), "Notification-Type: update/propchange", "Call-Back: "+a.URL)
		mustStatus(t, "physical path", r, 207)
		// Named as the client names its own domain (its principal's host).
		hasAll(t, "answer", string(r.Body), "<d:href>"+a.URLOf("bob")+"</d:href>")
	})
	t.Run("C13_unknown_alias", func(t *testing.T) {
		a := cf.user(t, "alice")
		mustStatus(t, "SUBSCRIBE", a.Watch("nobody", 600), 404)
		mustStatus(t, "PROPFIND", propfind(a, "nobody", "<d:allprop/>", "Depth: 0"), 404)
		mustStatus(t, "NOTIFY", a.Send("nobody", a.MessageBody("nobody", "hi")), 404)
	})
	t.Run("C16_no_whitespace_or_trailing_slash_in_URLs", func(t *testing.T) {
		a, b := cf.user(t, "alice"), cf.user(t, "bob")
		mustStatus(t, "b login", b.Login(600), 200)
		r := a.Do("SUBSCRIBE", "http://im.example.test/instmsg/aliases/bob/", nil, a.From(), "Notification-Type: update/propchange", "Call-Back: "+a.URL+"/")
		mustStatus(t, "watch", r, 207)
		acl := b.Do("ACL", "/instmsg/aliases/bob", nil, b.From())
		subs := subscriptions(b, "bob", "update/propchange")
		bad := regexp.MustCompile(`<(d:href|a:rvp-principal)>(\s[^<]*|[^<]*\s|[^<]*/)</`)
		for what, body := range map[string][]byte{"watch": r.Body, "ACL": acl.Body, "SUBSCRIPTIONS": subs.Body} {
			if m := bad.Find(body); m != nil {
				t.Errorf("%s emits %q", what, m)
			}
		}
	})

	// --- SUBSCRIBE / UNSUBSCRIBE / SUBSCRIPTIONS ---
	t.Run("C17_login", func(t *testing.T) {
		a := cf.user(t, "alice")
		r := a.Login(14400)
		mustStatus(t, "login", r, 200)
		subID(t, r)
		if l, _ := strconv.Atoi(r.Header.Get(rvp.HdrLifetime)); l <= 0 || l > 14400 {
			t.Errorf("lifetime %q", r.Header.Get(rvp.HdrLifetime))
		}
		if len(r.Body) != 0 {
			t.Errorf("body %q", r.Body)
		}
	})
	t.Run("C18_lifetime_clamped", func(t *testing.T) {
		r := cf.user(t, "alice").Login(999999)
		mustStatus(t, "login", r, 200)
		if r.Header.Get(rvp.HdrLifetime) != "14400" {
			t.Errorf("granted %q, want the maximum 14400", r.Header.Get(rvp.HdrLifetime))
		}
	})
	t.Run("C19_C20_buddy_subscribe_207", func(t *testing.T) {
		b := cf.user(t, "bob")
		mustStatus(t, "bob busy", b.SetState("busy", 1200, 0), 207)
		r := cf.user(t, "alice").Watch("bob", 14400)
		mustStatus(t, "watch", r, 207)
		subID(t, r)
		if r.Header.Get(rvp.HdrLifetime) == "" || r.Header.Get("Content-Type") != "text/xml" {
			t.Errorf("headers %v", r.Header)
		}
		hasAll(t, "207", string(r.Body), "<d:multistatus xmlns:d='DAV:'", "<d:response><d:href>", "</d:href><d:propstat><d:prop><r:state><r:busy/></r:state>",
			"<d:displayname>Bob Example</d:displayname>", "<r:email>bob@example.test</r:email>", "<r:mobile-state>0</r:mobile-state>",
			"<r:mobile-description></r:mobile-description>", "<d:status>HTTP/1.1 200 Successful</d:status>")
		mustStatus(t, "bob online", b.SetState("online", 1200, 0), 207)
	})
	t.Run("C21_renewal", func(t *testing.T) {
		a := cf.user(t, "alice")
		w := a.Watch("carol", 60)
		id := strconv.Itoa(subID(t, w))
		before := subscriptions(cf.user(t, "carol"), "carol", "update/propchange")
		r := a.Do("SUBSCRIBE", "/instmsg/aliases/carol", nil, a.From(), "Subscription-Id: "+id, "Subscription-Lifetime: 3600")
		mustStatus(t, "renewal", r, 200)
		if r.Header.Get(rvp.HdrSubscriptionID) != id || r.Header.Get(rvp.HdrLifetime) != "3600" {
			t.Errorf("renewal headers %v", r.Header)
		}
		after := subscriptions(cf.user(t, "carol"), "carol", "update/propchange")
		timeout := func(b []byte) int {
			m := regexp.MustCompile(`<r:subscription-id>` + id + `</r:subscription-id>.*?<d:timeout>(\d+)</d:timeout>`).FindSubmatch(b)
			if m == nil {
				t.Fatalf("subscription %s not listed:\n%s", id, b)
			}
			n, _ := strconv.Atoi(string(m[1]))
			return n
		}
		if tb, ta := timeout(before.Body), timeout(after.Body); tb > 60 || ta < 3500 {
			t.Errorf("expiry not pushed back: %d s left before, %d after", tb, ta)
		}
	})
	t.Run("C22_renewal_of_unknown_id", func(t *testing.T) {
		a := cf.user(t, "alice")
		before := subscriptions(cf.user(t, "carol"), "carol", "update/propchange").Body
		mustStatus(t, "unknown id", a.Do("SUBSCRIBE", "/instmsg/aliases/carol", nil, a.From(), "Subscription-Id: 7777777", "Subscription-Lifetime: 60"), 412)
		after := subscriptions(cf.user(t, "carol"), "carol", "update/propchange").Body
		if strings.Count(string(after), "<r:subscription>") != strings.Count(string(before), "<r:subscription>") {
			t.Error("a failed renewal created a subscription")
		}
	})
	t.Run("C23_duplicates_not_merged", func(t *testing.T) {
		d := cf.user(t, "dave")
		id1, id2 := subID(t, d.Watch("erin", 600)), subID(t, d.Watch("erin", 600))
		if id1 == id2 {
			t.Fatalf("both got id %d", id1)
		}
		body := string(subscriptions(cf.user(t, "erin"), "erin", "update/propchange").Body)
		hasAll(t, "SUBSCRIPTIONS", body, "<r:subscription-id>"+strconv.Itoa(id1)+"<", "<r:subscription-id>"+strconv.Itoa(id2)+"<")
	})
	t.Run("C24_callback_of_another_needs_subscribe_others", func(t *testing.T) {
		a := cf.user(t, "alice")
		r := a.Do("SUBSCRIBE", "/instmsg/aliases/bob", nil, a.From(), "Notification-Type: update/propchange", "Call-Back: "+a.URLOf("carol"))
		mustStatus(t, "Call-Back of carol", r, 403)
	})
	t.Run("C25_login_on_another_node", func(t *testing.T) {
		a := cf.user(t, "alice")
		r := a.Do("SUBSCRIBE", "/instmsg/aliases/bob", nil, a.From(), "Notification-Type: pragma/notify", "Call-Back: "+a.CallBack)
		mustStatus(t, "alice logs in on bob", r, 403)
		anon := testcluster.NewClient(t, p.addr, "alice")
		mustStatus(t, "unauthenticated", anon.Do("SUBSCRIBE", "/instmsg/aliases/bob", nil, anon.From(), "Notification-Type: pragma/notify", "Call-Back: "+anon.CallBack), 401)
	})
	t.Run("C26_self_subscription_reaches_every_login", func(t *testing.T) {
		f1, f2 := cf.user(t, "frank"), cf.user(t, "frank")
		mustStatus(t, "login 1", f1.Login(600), 200)
		mustStatus(t, "login 2", f2.Login(600), 200)
		mustStatus(t, "self-watch", f1.Watch("frank", 600), 207)
		mustStatus(t, "frank at lunch", f1.SetState("at-lunch", 1200, 0), 207)
		for _, c := range []*testcluster.Client{f1, f2} {
			c.WaitNotify(0, wait, stateFrom(f1, "at-lunch"))
		}
	})
	t.Run("C27_callback_without_port_is_port_80", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.30:80")
		if err != nil {
			t.Skipf("cannot listen on port 80 here (%v); the rule lives in rvp.Client", err)
		}
		defer ln.Close()
		got := make(chan string, 1)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			line, _ := bufio.NewReader(c).ReadString('\n')
			io.WriteString(c, testcluster.LibrvpAnswer)
			got <- line
		}()
		m := cf.user(t, "mallory")
		raw := strings.Replace(string(loginRaw(m)), "Call-Back: "+m.CallBack, "Call-Back: http://127.0.0.30", 1)
		mustStatus(t, "login with a port-less callback", m.Raw([]byte(raw)), 200)
		a := cf.user(t, "alice")
		mustStatus(t, "message", a.Send("mallory", a.MessageBody("mallory", "hi")), 200)
		select {
		case line := <-got:
			if line != "NOTIFY / HTTP/1.1\r\n" {
				t.Errorf("request line %q", line)
			}
		case <-time.After(wait):
			t.Fatal("nothing reached port 80")
		}
		mustStatus(t, "logout", m.Do("UNSUBSCRIBE", "/instmsg/aliases/mallory", nil, m.From(), "Subscription-Id: 1"), 200)
	})
	t.Run("C28_unsubscribe_stops_notifications", func(t *testing.T) {
		g, h := cf.user(t, "gina"), cf.user(t, "hank")
		mustStatus(t, "login", g.Login(600), 200)
		id := subID(t, g.Watch("hank", 600))
		mustStatus(t, "hank away", h.SetState("away", 1200, 0), 207)
		g.WaitNotify(0, wait, stateFrom(h, "away"))
		mustStatus(t, "unsubscribe", g.Do("UNSUBSCRIBE", "/instmsg/aliases/hank", nil, g.From(), "Subscription-Id: "+strconv.Itoa(id)), 200)
		// gina still has 30 subscriptions to hank from C04 without
		// callbacks of their own: their NOTIFYs reach gina's login too.
		for _, s := range regexp.MustCompile(`<r:subscription-id>(\d+)</r:subscription-id>`).FindAllSubmatch(subscriptions(h, "hank", "update/propchange").Body, -1) {
			g.Do("UNSUBSCRIBE", "/instmsg/aliases/hank", nil, g.From(), "Subscription-Id: "+string(s[1]))
		}
		before := count(g, func(n testcluster.Notify) bool { return n.State() != "" })
		mustStatus(t, "hank busy", h.SetState("busy", 1200, 0), 207)
		marker(t, h, g)
		if after := count(g, func(n testcluster.Notify) bool { return n.State() != "" }); after != before {
			t.Errorf("%d NOTIFYs after UNSUBSCRIBE", after-before)
		}
	})
	t.Run("C29_owner_cancels_any_subscription", func(t *testing.T) {
		d, e := cf.user(t, "dave"), cf.user(t, "erin")
		id := strconv.Itoa(subID(t, d.Watch("erin", 600)))
		mustStatus(t, "owner cancels", e.Do("UNSUBSCRIBE", "/instmsg/aliases/erin", nil, e.From(), "Subscription-Id: "+id), 200)
		if strings.Contains(string(subscriptions(e, "erin", "update/propchange").Body), ">"+id+"<") {
			t.Error("still listed")
		}
	})
	t.Run("C30_unsubscribe_unknown_id", func(t *testing.T) {
		a := cf.user(t, "alice")
		mustStatus(t, "unknown id", a.Do("UNSUBSCRIBE", "/instmsg/aliases/bob", nil, a.From(), "Subscription-Id: 8888888"), 200)
	})
	t.Run("C31_subscriptions_list", func(t *testing.T) {
		i, j := cf.user(t, "ivy"), cf.user(t, "judy")
		id := strconv.Itoa(subID(t, i.Watch("judy", 600)))
		r := subscriptions(j, "judy", "update/propchange")
		mustStatus(t, "SUBSCRIPTIONS", r, 200)
		if r.Header.Get("Content-Type") != "text/xml" {
			t.Errorf("Content-Type %q", r.Header.Get("Content-Type"))
		}
		hasAll(t, "SUBSCRIPTIONS", string(r.Body), "<r:subscriptions xmlns:d='DAV:'", "<r:subscription><r:subscription-id>"+id+"</r:subscription-id><d:href>"+i.URL+
			"</d:href><a:principal><a:rvp-principal>"+i.URL+"</a:rvp-principal></a:principal><d:timeout>")
	})
	t.Run("C32_subscriptions_by_type", func(t *testing.T) {
		i := cf.user(t, "ivy")
		mustStatus(t, "login", i.Login(600), 200)
		body := string(subscriptions(i, "ivy", "pragma/notify").Body)
		if !strings.Contains(body, "<d:href>"+i.CallBack+"</d:href>") || strings.Contains(body, "<d:href>http://"+p.addr) {
			t.Errorf("pragma/notify list:\n%s", body)
		}
		e := cf.user(t, "erin")
		r := subscriptions(e, "erin", "pragma/notify")
		mustStatus(t, "none", r, 200)
		if !strings.HasSuffix(string(r.Body), "'/>") || strings.Contains(string(r.Body), "<r:subscription>") {
			t.Errorf("an empty list is not an empty r:subscriptions:\n%s", r.Body)
		}
	})
	t.Run("C33_subscriptions_of_another", func(t *testing.T) {
		a := cf.user(t, "alice")
		mustStatus(t, "alice lists bob's", a.Do("SUBSCRIPTIONS", "/instmsg/aliases/bob", nil, a.From(), "Notification-Type: update/propchange"), 403)
	})
	t.Run("C34_expiry_is_silent", func(t *testing.T) {
		g := cf.user(t, "gina")
		mustStatus(t, "login", g.Login(600), 200)
		// judy is offline: the watch pushes nothing (a client shows
		// offline until told otherwise), and its expiry must add nothing.
		before := len(g.Notifies())
		id := strconv.Itoa(subID(t, g.Watch("judy", 1)))
		testcluster.Eventually(t, wait, func() error {
			if strings.Contains(string(subscriptions(cf.user(t, "judy"), "judy", "update/propchange").Body), "<r:subscription-id>"+id+"<") {
				return errString("still listed")
			}
			return nil
		})
		marker(t, cf.user(t, "judy"), g)
		for _, n := range g.Notifies()[before:] {
			if n.State() != "" && n.From() == g.URLOf("judy") {
				t.Errorf("a NOTIFY was sent for the expiry: %s", n.Body)
			}
		}
	})

	// --- PROPFIND / PROPPATCH / presence ---
	t.Run("C35_propfind_found_and_missing", func(t *testing.T) {
		r := propfind(cf.user(t, "alice"), "bob", "<d:prop><d:displayname/><r:foo/></d:prop>", "Depth: 0")
		mustStatus(t, "PROPFIND", r, 207)
		hasAll(t, "207", string(r.Body), "<d:href>", "<d:propstat><d:prop><d:displayname>Bob Example</d:displayname></d:prop><d:status>HTTP/1.1 200 Successful</d:status></d:propstat>",
			"<d:propstat><d:prop><r:foo/></d:prop><d:status>HTTP/1.1 404 Not Found</d:status></d:propstat>")
	})
	t.Run("C36_propfind_depth", func(t *testing.T) {
		a := cf.user(t, "alice")
		for _, d := range [][]string{nil, {"Depth: 1"}, {"Depth: infinity"}} {
			mustStatus(t, "depth "+strings.Join(d, ""), propfind(a, "bob", "<d:allprop/>", d...), 412)
		}
	})
	t.Run("C37_allprop", func(t *testing.T) {
		r := propfind(cf.user(t, "alice"), "bob", "<d:allprop/>", "Depth: 0")
		mustStatus(t, "allprop", r, 207)
		hasAll(t, "allprop", string(r.Body), "<r:state>", "<d:displayname>", "<r:email>", "<r:mobile-state>", "<r:mobile-description>")
	})
	viewID := func(t *testing.T, r *testcluster.Response) string {
		t.Helper()
		m := regexp.MustCompile(`<r:view-id>(\d+)</r:view-id>`).FindSubmatch(r.Body)
		if m == nil {
			t.Fatalf("no view id in:\n%s", r.Body)
		}
		return string(m[1])
	}
	t.Run("C38_first_proppatch", func(t *testing.T) {
		r := cf.user(t, "erin").SetState("online", 1200, 0)
		mustStatus(t, "PROPPATCH", r, 207)
		hasAll(t, "207", string(r.Body), "<r:state><r:leased-value><r:value><r:online/></r:value><r:default-value><r:offline/></r:default-value><d:timeout>1200</d:timeout></r:leased-value><r:view-id>")
		viewID(t, r)
	})
	t.Run("C38b_proppatch_other_properties", func(t *testing.T) {
		e := cf.user(t, "erin")
		body := `<?xml version="1.0"?><d:propertyupdate xmlns:d="DAV:" xmlns:r="http://schemas.microsoft.com/rvp/"><d:set><d:prop>` +
			`<r:mobile-state>1</r:mobile-state><r:mobile-description>+1 555 0100</r:mobile-description><d:displayname>Somebody Else</d:displayname>` +
			`</d:prop></d:set></d:propertyupdate>`
		r := e.Do("PROPPATCH", "/instmsg/aliases/erin", []byte(body), e.From(), "Content-Type: text/xml")
		mustStatus(t, "PROPPATCH", r, 207)
		hasAll(t, "207", string(r.Body), "<d:prop><r:mobile-state>1</r:mobile-state><r:mobile-description>+1 555 0100</r:mobile-description></d:prop><d:status>HTTP/1.1 200 Successful</d:status>",
			"<d:prop><d:displayname/></d:prop><d:status>HTTP/1.1 403 Forbidden</d:status>")
		r = propfind(cf.user(t, "alice"), "erin", "<d:allprop/>", "Depth: 0")
		hasAll(t, "PROPFIND", string(r.Body), "<r:mobile-state>1</r:mobile-state>", "<r:mobile-description>+1 555 0100</r:mobile-description>", "<d:displayname>Erin</d:displayname>")
	})
	t.Run("C39_r_timeout", func(t *testing.T) {
		e := cf.user(t, "erin")
		body := strings.ReplaceAll(string(testcluster.StateBody("busy", 900, 0)), "d:timeout", "r:timeout")
		r := e.Do("PROPPATCH", "/instmsg/aliases/erin", []byte(body), e.From(), "Content-Type: text/xml")
		mustStatus(t, "r:timeout", r, 207)
		hasAll(t, "207", string(r.Body), "<d:timeout>900</d:timeout>")
	})
	t.Run("C40_C41_views_are_reused", func(t *testing.T) {
		e := cf.user(t, "erin")
		v1 := viewID(t, e.SetState("online", 1200, 0))
		if v2 := viewID(t, e.SetState("away", 1200, 0)); v2 != v1 {
			t.Errorf("same client, no view id: view %s then %s", v1, v2)
		}
		id, _ := strconv.Atoi(v1)
		if v3 := viewID(t, e.SetState("busy", 1200, id)); v3 != v1 {
			t.Errorf("PROPPATCH naming view %s answered view %s", v1, v3)
		}
	})
	t.Run("C42_proppatch_of_another", func(t *testing.T) {
		a := cf.user(t, "alice")
		mustStatus(t, "alice sets bob", a.Do("PROPPATCH", "/instmsg/aliases/bob", testcluster.StateBody("busy", 60, 0), a.From(), "Content-Type: text/xml"), 403)
	})
	t.Run("C43_lease_expiry", func(t *testing.T) {
		d, h := cf.user(t, "dave"), cf.user(t, "hank")
		mustStatus(t, "dave login", d.Login(600), 200)
		mustStatus(t, "dave watches hank", d.Watch("hank", 600), 207)
		mustStatus(t, "hank short lease", h.SetState("on-phone", 2, 0), 207)
		d.WaitNotify(0, wait, stateFrom(h, "on-phone"))
		d.WaitNotify(0, wait, stateFrom(h, "offline"))
	})
	t.Run("C44_one_notify_per_change", func(t *testing.T) {
		i, j := cf.user(t, "ivy"), cf.user(t, "judy")
		mustStatus(t, "ivy login", i.Login(600), 200)
		mustStatus(t, "judy online", j.SetState("online", 1200, 0), 207)
		// ivy has subscriptions to judy left from C10 and C31.
		skip := len(i.Notifies())
		mustStatus(t, "judy busy", j.SetState("busy", 1200, 0), 207)
		n, _ := i.WaitNotify(skip, wait, stateFrom(j, "busy"))
		marker(t, j, i)
		if got := count(i, stateFrom(j, "busy")); got != 1 {
			t.Errorf("%d NOTIFYs for one change", got)
		}
		if n.Header.Get("Content-Type") != "text/xml" || n.Header.Get("Content-Length") == "" {
			t.Errorf("headers %v", n.Header)
		}
		hasAll(t, "NOTIFY", string(n.Body), "<r:notification xmlns:d='DAV:'", "<r:propnotification>", "<d:propertyupdate><d:set><d:prop><r:state><r:busy/></r:state></d:prop></d:set></d:propertyupdate>")
	})
	t.Run("C45_every_state_value", func(t *testing.T) {
		e := cf.user(t, "erin")
		for _, st := range []string{"online", "busy", "away", "back-soon", "on-phone", "at-lunch", "idle", "offline", "invisible"} {
			mustStatus(t, st, e.SetState(st, 1200, 0), 207)
		}
	})
	t.Run("C46_invisible", func(t *testing.T) {
		h1, h2, d := cf.user(t, "hank"), cf.user(t, "hank"), cf.user(t, "dave")
		mustStatus(t, "dave login", d.Login(600), 200)
		mustStatus(t, "dave watches hank", d.Watch("hank", 600), 207)
		mustStatus(t, "hank login", h2.Login(600), 200)
		mustStatus(t, "self-watch", h2.Watch("hank", 600), 207)
		mustStatus(t, "hank online", h1.SetState("online", 1200, 0), 207)
		d.WaitNotify(0, wait, stateFrom(h1, "online"))
		mustStatus(t, "hank invisible", h1.SetState("invisible", 1200, 0), 207)
		h2.WaitNotify(0, wait, stateFrom(h1, "invisible"))
		_, k := d.WaitNotify(0, wait, stateFrom(h1, "offline"))
		for _, n := range d.Notifies()[k:] {
			if n.State() == "invisible" {
				t.Error("a watcher saw invisible")
			}
		}
	})
	t.Run("C47_idle_second_view_keeps_online", func(t *testing.T) {
		g1, g2, d := cf.user(t, "gina"), cf.user(t, "gina"), cf.user(t, "dave")
		g2.Source = "127.0.0.2"
		mustStatus(t, "dave login", d.Login(600), 200)
		mustStatus(t, "dave watches gina", d.Watch("gina", 600), 207)
		mustStatus(t, "gina online", g1.SetState("online", 1200, 0), 207)
		_, k := d.WaitNotify(0, wait, stateFrom(g1, "online"))
		mustStatus(t, "gina idle elsewhere", g2.SetState("idle", 1200, 0), 207)
		marker(t, g1, d)
		for _, n := range d.Notifies()[k+1:] {
			if n.From() == g1.URL && n.State() != "" {
				t.Errorf("watcher told %q though gina is still online on her first client", n.State())
			}
		}
	})
	t.Run("C48_offline_from_last_view", func(t *testing.T) {
		g, d := cf.user(t, "gina"), cf.user(t, "dave")
		mustStatus(t, "dave login", d.Login(600), 200)
		g2 := cf.user(t, "gina")
		g2.Source = "127.0.0.2"
		mustStatus(t, "second client offline", g2.SetState("offline", 1200, 0), 207)
		mustStatus(t, "first client offline", g.SetState("offline", 1200, 0), 207)
		d.WaitNotify(0, wait, stateFrom(g, "offline"))
	})
	t.Run("C49_presence_denied", func(t *testing.T) {
		j, m := cf.user(t, "judy"), cf.user(t, "mallory")
		mustStatus(t, "mallory login", m.Login(600), 200)
		acl := `<?xml version="1.0"?><a:rvpacl xmlns:a="http://schemas.microsoft.com/rvp/acl/"><a:acl><a:inheritance>none</a:inheritance>` +
			`<a:ace><a:principal><a:rvp-principal>` + m.URL + `</a:rvp-principal><a:credentials><a:assertion/><a:digest/><a:ntlm/></a:credentials></a:principal><a:grant/><a:deny><a:presence/><a:send-to/></a:deny></a:ace>` +
			`<a:ace><a:principal><a:allprincipals/><a:credentials><a:assertion/><a:digest/><a:ntlm/></a:credentials></a:principal><a:grant><a:list/><a:read/><a:send-to/><a:presence/></a:grant><a:deny/></a:ace></a:acl></a:rvpacl>`
		mustStatus(t, "judy denies mallory", j.Do("ACL", "/instmsg/aliases/judy", []byte(acl), j.From(), "Content-Type: text/xml"), 200)
		mustStatus(t, "judy online", j.SetState("online", 1200, 0), 207)
		r := m.Watch("judy", 600)
		mustStatus(t, "mallory watches judy", r, 207)
		hasAll(t, "mallory's 207", string(r.Body), "<r:state><r:offline/></r:state>")
		r = propfind(m, "judy", "<d:prop><r:state/></d:prop>", "Depth: 0")
		hasAll(t, "mallory's PROPFIND", string(r.Body), "<r:state><r:offline/></r:state>")
		mustStatus(t, "judy away", j.SetState("away", 1200, 0), 207)
		// C54: and mallory may not message judy.
		mustStatus(t, "mallory → judy", m.Send("judy", m.MessageBody("judy", "let me in")), 403)
		marker(t, j, m)
		for _, n := range m.Notifies() {
			if n.From() == j.URL && n.State() != "" {
				t.Errorf("mallory was told %q", n.State())
			}
			if bytes.Contains(n.Body, []byte("let me in")) {
				t.Error("the denied message was delivered")
			}
		}
	})

	// --- NOTIFY / messaging ---
	t.Run("C50_message_to_every_login", func(t *testing.T) {
		b1, b2, a := cf.user(t, "bob"), cf.user(t, "bob"), cf.user(t, "alice")
		mustStatus(t, "login 1", b1.Login(600), 200)
		mustStatus(t, "login 2", b2.Login(600), 200)
		body := a.MessageBody("bob", "to both of you ✓")
		mustStatus(t, "message", a.Send("bob", body), 200)
		for _, c := range []*testcluster.Client{b1, b2} {
			n, _ := c.WaitNotify(0, wait, func(n testcluster.Notify) bool { return bytes.Equal(n.Body, body) })
			if n.Header.Get("RVP-Hop-Count") != "2" || n.Header.Get("Content-Type") != "text/xml" || n.Header.Get("Content-Length") != strconv.Itoa(len(body)) {
				t.Errorf("headers %v", n.Header)
			}
		}
	})
	t.Run("C51_no_login_412", func(t *testing.T) {
		a := cf.user(t, "alice")
		mustStatus(t, "to erin, not logged in", a.Send("erin", a.MessageBody("erin", "hi")), 412)
	})
	t.Run("C52_unreachable_412_in_time", func(t *testing.T) {
		e := cf.user(t, "erin")
		mustStatus(t, "login", e.Login(600), 200)
		e.Close() // its callback now refuses connections
		a := cf.user(t, "alice")
		start := time.Now()
		mustStatus(t, "to an unreachable client", a.Send("erin", a.MessageBody("erin", "anyone?")), 412)
		if took := time.Since(start); took > 10*time.Second {
			t.Errorf("took %v", took)
		}
	})
	t.Run("C53_callback_500_relayed", func(t *testing.T) {
		f := cf.user(t, "frank")
		mustStatus(t, "login", f.Login(600), 200)
		// frank has two logins from C26 as well: make every one refuse.
		f.AnswerWith(func(testcluster.Notify) testcluster.Answer {
			return testcluster.Answer{Raw: "HTTP/1.1 500 Left Conversation\r\nContent-Length: 0\r\n\r\n"}
		})
		for _, s := range regexp.MustCompile(`<r:subscription-id>(\d+)</r:subscription-id>`).FindAllSubmatch(subscriptions(f, "frank", "pragma/notify").Body, -1) {
			if string(s[1]) != strconv.Itoa(f.LoginID) {
				f.Do("UNSUBSCRIBE", "/instmsg/aliases/frank", nil, f.From(), "Subscription-Id: "+string(s[1]))
			}
		}
		a := cf.user(t, "alice")
		mustStatus(t, "to frank", a.Send("frank", a.MessageBody("frank", "still there?")), 500)
	})
	t.Run("C55_several_notification_to", func(t *testing.T) {
		i, a := cf.user(t, "ivy"), cf.user(t, "alice")
		mustStatus(t, "ivy login", i.Login(600), 200)
		body := []byte(strings.Replace(string(a.MessageBody("ivy", "group chat")), "</r:notification-to>",
			"</r:notification-to><r:notification-to><r:contact><d:href>"+a.URLOf("judy")+"</d:href></r:contact></r:notification-to>", 1))
		mustStatus(t, "message", a.Send("ivy", body), 200)
		i.WaitNotify(0, wait, func(n testcluster.Notify) bool { return bytes.Equal(n.Body, body) })
	})
	t.Run("C56_hop_count_limit", func(t *testing.T) {
		i, a := cf.user(t, "ivy"), cf.user(t, "alice")
		mustStatus(t, "ivy login", i.Login(600), 200)
		body := a.MessageBody("ivy", "looping")
		r := a.Do("NOTIFY", "/instmsg/aliases/ivy", body, a.From(), "Content-Type: text/xml", "RVP-Hop-Count: 50", "RVP-Ack-Type: DeepOr")
		mustStatus(t, "hop count 50", r, 508)
		marker(t, a, i)
		for _, n := range i.Notifies() {
			if bytes.Contains(n.Body, []byte("looping")) {
				t.Error("forwarded")
			}
		}
	})
	t.Run("C57_typing", func(t *testing.T) {
		i, a := cf.user(t, "ivy"), cf.user(t, "alice")
		mustStatus(t, "ivy login", i.Login(600), 200)
		body := []byte(strings.Replace(string(a.MessageBody("ivy", "")), "Content-Type: text/plain; charset=UTF-8", "Content-Type: text/x-msmsgscontrol; charset=UTF-8\r\nTypingUser: alice@example.test", 1))
		mustStatus(t, "typing", a.Send("ivy", body), 200)
		i.WaitNotify(0, wait, func(n testcluster.Notify) bool { return bytes.Equal(n.Body, body) })
	})
	t.Run("C58_single_hop", func(t *testing.T) {
		h, a := cf.user(t, "hank"), cf.user(t, "alice")
		mustStatus(t, "login", h.Login(600), 200)
		mustStatus(t, "visible again", h.SetState("online", 1200, 0), 207) // invisible since C46
		h.AnswerWith(func(testcluster.Notify) testcluster.Answer {
			return testcluster.Answer{Raw: testcluster.LibrvpAnswer, Delay: 3 * time.Second}
		})
		start := time.Now()
		r := a.Do("NOTIFY", "/instmsg/aliases/hank", a.MessageBody("hank", "fire and forget"), a.From(), "Content-Type: text/xml", "RVP-Hop-Count: 1", "RVP-Ack-Type: SingleHop")
		mustStatus(t, "SingleHop", r, 200)
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("SingleHop waited %v for the slow callback", took)
		}
	})
	t.Run("C59_answer_without_length", func(t *testing.T) {
		j, a := cf.user(t, "judy"), cf.user(t, "alice")
		mustStatus(t, "login", j.Login(600), 200)
		j.AnswerWith(func(testcluster.Notify) testcluster.Answer { return testcluster.NetRVPAnswer })
		start := time.Now()
		mustStatus(t, "message", a.Send("judy", a.MessageBody("judy", "quick")), 200)
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("took %v: the server waited for a body", took)
		}
		testcluster.Eventually(t, wait, func() error {
			if j.ClosedByServer() == 0 {
				return errString("the server left the callback connection open")
			}
			return nil
		})
	})
	t.Run("C60_LF_and_HTML_answer", func(t *testing.T) {
		c, a := cf.user(t, "carol"), cf.user(t, "alice")
		mustStatus(t, "login", c.Login(600), 200)
		c.AnswerWith(func(testcluster.Notify) testcluster.Answer { return testcluster.MirandaAnswer })
		mustStatus(t, "message", a.Send("carol", a.MessageBody("carol", "hello Miranda")), 200)
	})
	t.Run("C61_notify_request_line_and_headers", func(t *testing.T) {
		c, a := cf.user(t, "carol"), cf.user(t, "alice")
		mustStatus(t, "login", c.Login(600), 200)
		body := a.MessageBody("carol", "headers")
		mustStatus(t, "message", a.Send("carol", body), 200)
		n, _ := c.WaitNotify(0, wait, func(n testcluster.Notify) bool { return bytes.Equal(n.Body, body) })
		if n.Target != "/" || n.Header.Get("Host") != strings.TrimPrefix(c.CallBack, "http://") || n.Header.Get("Connection") != "close" {
			t.Errorf("target %q, Host %q, Connection %q", n.Target, n.Header.Get("Host"), n.Header.Get("Connection"))
		}
	})
	t.Run("C62_description_added_for_Miranda", func(t *testing.T) {
		c, d := cf.user(t, "carol"), cf.user(t, "dave")
		mustStatus(t, "login", c.Login(600), 200)
		netrvp := "<?xml version=\"1.0\"?>\n<r:notification xmlns:d='DAV:' xmlns:r='http://schemas.microsoft.com/rvp/'><r:message><r:notification-from><r:contact><d:href>" + d.URL +
			"</d:href></r:contact></r:notification-from><r:notification-to><r:contact><d:href>" + d.URLOf("carol") + "</d:href></r:contact></r:notification-to><r:msgbody><r:mime-data><![CDATA[MIME-Version: 1.0\r\nSession-Id: {D987FBAB-66CC-C3FD-3A73-B22F41BE9679}\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\nhello from Net::RVP]]></r:mime-data></r:msgbody></r:message></r:notification>"
		mustStatus(t, "message", d.Send("carol", []byte(netrvp)), 200)
		want := strings.Replace(netrvp, d.URL+"</d:href></r:contact>", d.URL+"</d:href><r:description>Dave</r:description></r:contact>", 1)
		c.WaitNotify(0, wait, func(n testcluster.Notify) bool { return string(n.Body) == want })
	})

	// --- ACL ---
	aclRead := func(c *testcluster.Client, alias string) *testcluster.Response {
		return c.Do("ACL", "/instmsg/aliases/"+alias, nil, c.From())
	}
	t.Run("C65_default_acl", func(t *testing.T) {
		b := cf.user(t, "bob")
		r := aclRead(b, "bob")
		mustStatus(t, "ACL read", r, 200)
		if r.Header.Get("Content-Type") != "text/xml" {
			t.Errorf("Content-Type %q", r.Header.Get("Content-Type"))
		}
		hasAll(t, "default ACL", string(r.Body), "<a:rvpacl xmlns:d='DAV:'", "<a:acl><a:inheritance>none</a:inheritance>",
			"<a:ace><a:principal><a:allprincipals/><a:credentials><a:assertion/><a:digest/><a:ntlm/></a:credentials></a:principal><a:grant><a:list/><a:read/><a:send-to/><a:presence/></a:grant><a:deny/></a:ace>",
			"<a:rvp-principal>"+b.URL+"</a:rvp-principal>", "<a:readacl/><a:writeacl/>")
	})
	t.Run("C66_acl_write_then_read", func(t *testing.T) {
		c := cf.user(t, "carol")
		acl := `<a:rvpacl xmlns:a="http://schemas.microsoft.com/rvp/acl/"><a:acl><a:inheritance>none</a:inheritance><a:ace><a:principal><a:rvp-principal>allprincipals</a:rvp-principal><a:credentials><a:assertion/><a:digest/><a:ntlm/></a:credentials></a:principal><a:grant><a:send-to/><a:presence/></a:grant><a:deny/></a:ace></a:acl></a:rvpacl>`
		r := c.Do("ACL", "/instmsg/aliases/carol", []byte(acl), c.From(), "Content-Type: text/xml")
		mustStatus(t, "ACL write", r, 200)
		hasAll(t, "write answer", string(r.Body), "<a:grant><a:send-to/><a:presence/></a:grant>")
		r = aclRead(c, "carol")
		mustStatus(t, "read back", r, 200)
		// The write updated the allprincipals entry and left carol's own.
		hasAll(t, "read back", string(r.Body),
			"<a:ace><a:principal><a:allprincipals/><a:credentials><a:assertion/><a:digest/><a:ntlm/></a:credentials></a:principal><a:grant><a:send-to/><a:presence/></a:grant><a:deny/></a:ace>",
			"<a:rvp-principal>"+c.URL+"</a:rvp-principal>")
		if strings.Count(string(r.Body), "<a:ace>") != 2 {
			t.Errorf("read back has %d entries, want 2:\n%s", strings.Count(string(r.Body), "<a:ace>"), r.Body)
		}
	})
	// C66a-c: librvp writes one ACE per request (librvp-wire.md §2.5); a
	// write updates the entries it names and leaves the others, so a
	// principal the writes never named still reaches the node.
	ace := func(principal, grant, deny string) []byte {
		p := "<a:rvp-principal>" + principal + "</a:rvp-principal>"
		return []byte(`<?xml version="1.0"?><a:rvpacl xmlns:d="DAV:" xmlns:r="http://schemas.microsoft.com/rvp/" xmlns:a="http://schemas.microsoft.com/rvp/acl/"><a:acl><a:inheritance>none</a:inheritance><a:ace><a:principal>` +
			p + `<a:credentials><a:assertion/><a:digest/><a:ntlm/></a:credentials></a:principal><a:grant>` + grant + `</a:grant><a:deny>` + deny + `</a:deny></a:ace></a:acl></a:rvpacl>`)
	}
	const buddyRights = "<a:send-to/><a:presence/>"
	const selfRights = "<a:list/><a:read/><a:write/><a:send-to/><a:receive-from/><a:readacl/><a:writeacl/><a:presence/><a:subscriptions/><a:subscribe-others/>"
	// singleACEWrites has owner write each ACE in turn and, after each,
	// checks that stranger (never named) sees owner's changes and may
	// message it.
	singleACEWrites := func(t *testing.T, owner, stranger *testcluster.Client, writes map[string][]byte, order []string) {
		mustStatus(t, "owner login", owner.Login(600), 200)
		mustStatus(t, "stranger login", stranger.Login(600), 200)
		mustStatus(t, "owner online", owner.SetState("online", 1200, 0), 207)
		r := stranger.Watch(owner.Alias, 600)
		mustStatus(t, "stranger watches", r, 207)
		hasAll(t, "stranger's 207", string(r.Body), "<r:state><r:online/></r:state>")
		states := []string{"busy", "away", "on-phone", "back-soon"}
		for i, name := range order {
			mustStatus(t, "ACL write "+name, owner.Do("ACL", "/instmsg/aliases/"+owner.Alias, writes[name], owner.From(), "Content-Type: text/xml"), 200)
			mustStatus(t, "owner "+states[i], owner.SetState(states[i], 1200, 0), 207)
			stranger.WaitNotify(0, wait, stateFrom(owner, states[i]))
			text := "after " + name
			body := stranger.MessageBody(owner.Alias, text)
			mustStatus(t, "stranger's message after "+name, stranger.Send(owner.Alias, body), 200)
			owner.WaitNotify(0, wait, func(n testcluster.Notify) bool { return bytes.Equal(n.Body, body) })
			r := propfind(stranger, owner.Alias, "<d:prop><r:state/></d:prop>", "Depth: 0")
			hasAll(t, "stranger's PROPFIND after "+name, string(r.Body), "<r:state><r:"+states[i]+"/></r:state>")
		}
		r = aclRead(owner, owner.Alias)
		mustStatus(t, "ACL read", r, 200)
		if n := strings.Count(string(r.Body), "<a:ace>"); n != 3 {
			t.Errorf("ACL after the writes has %d entries, want 3 (allprincipals, owner, buddy):\n%s", n, r.Body)
		}
	}
	t.Run("C66a_single_ace_writes_librvp_order", func(t *testing.T) {
		k, l, e := cf.user(t, "kim"), cf.user(t, "leo"), cf.user(t, "erin")
		own := strings.Replace(k.URL, "im.example.test", "127.0.0.1:18180", 1) // librvp's URLs carry its own host
		singleACEWrites(t, k, e, map[string][]byte{
			"allprincipals": ace("allprincipals", buddyRights, ""),
			"self":          ace(own, selfRights, ""),
			"buddy":         ace(l.URL, buddyRights, ""),
		}, []string{"allprincipals", "self", "buddy"})
	})
	t.Run("C66b_single_ace_writes_buddy_before_self", func(t *testing.T) {
		m, l, f := cf.user(t, "max"), cf.user(t, "leo"), cf.user(t, "frank")
		singleACEWrites(t, m, f, map[string][]byte{
			"allprincipals": ace("allprincipals", buddyRights, ""),
			"self":          ace(m.URL, selfRights, ""),
			"buddy":         ace(l.URL, buddyRights, ""),
		}, []string{"buddy", "self", "allprincipals"})
	})
	t.Run("C66c_deny_one_remove_entry", func(t *testing.T) {
		n, o, l := cf.user(t, "nina"), cf.user(t, "olga"), cf.user(t, "leo")
		for _, c := range []*testcluster.Client{n, o, l} {
			mustStatus(t, c.Alias+" login", c.Login(600), 200)
		}
		mustStatus(t, "buddy", n.Do("ACL", "/instmsg/aliases/nina", ace(l.URL, buddyRights, ""), n.From(), "Content-Type: text/xml"), 200)
		mustStatus(t, "deny olga", n.Do("ACL", "/instmsg/aliases/nina", ace(o.URL, "", buddyRights), n.From(), "Content-Type: text/xml"), 200)
		mustStatus(t, "olga refused", o.Send("nina", o.MessageBody("nina", "hi")), 403)
		mustStatus(t, "leo still", l.Send("nina", l.MessageBody("nina", "hi")), 200)
		// An ACE with neither grant nor deny removes olga's entry: the
		// allprincipals entry applies to her again.
		mustStatus(t, "remove olga's entry", n.Do("ACL", "/instmsg/aliases/nina", ace(o.URL, "", ""), n.From(), "Content-Type: text/xml"), 200)
		mustStatus(t, "olga again", o.Send("nina", o.MessageBody("nina", "hi again")), 200)
		r := aclRead(n, "nina")
		if strings.Contains(string(r.Body), o.URL) {
			t.Errorf("olga's entry is still there:\n%s", r.Body)
		}
		// The owner's rights cannot be written away.
		mustStatus(t, "owner denies itself", n.Do("ACL", "/instmsg/aliases/nina", ace(n.URL, "", "<a:all/>"), n.From(), "Content-Type: text/xml"), 200)
		mustStatus(t, "owner still reads its ACL", aclRead(n, "nina"), 200)
	})
	t.Run("C67_ace_without_credentials", func(t *testing.T) {
		c := cf.user(t, "carol")
		acl := `<a:rvpacl xmlns:a="http://schemas.microsoft.com/rvp/acl/"><a:acl><a:ace><a:principal><a:allprincipals/></a:principal><a:grant><a:all/></a:grant></a:ace></a:acl></a:rvpacl>`
		r := c.Do("ACL", "/instmsg/aliases/carol", []byte(acl), c.From(), "Content-Type: text/xml")
		mustStatus(t, "ACE without credentials", r, 400)
		hasAll(t, "400", string(r.Body), "credentials not specified")
	})
	t.Run("C68_acl_of_another", func(t *testing.T) {
		a := cf.user(t, "alice")
		mustStatus(t, "read bob's", aclRead(a, "bob"), 403)
		mustStatus(t, "write bob's", a.Do("ACL", "/instmsg/aliases/bob", []byte(`<a:rvpacl xmlns:a="http://schemas.microsoft.com/rvp/acl/"><a:acl/></a:rvpacl>`), a.From(), "Content-Type: text/xml"), 403)
	})
}

type errString string

func (e errString) Error() string { return string(e) }
