package main

import (
	"bufio"
	"encoding/base64"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rvp-im/rvpd/testcluster"
)

func loginRaw(c *testcluster.Client) []byte {
	return []byte("SUBSCRIBE /instmsg/aliases/" + c.Alias + " HTTP/1.1\r\nContent-Length: 0\r\nRVP-Notifications-Version: 0.2\r\nHost: 127.0.0.1\r\n" +
		"Notification-Type: pragma/notify\r\nRVP-From-Principal: " + c.URL + "\r\nSubscription-Lifetime: 14000\r\nCall-Back: " + c.CallBack + "\r\n\r\n")
}

// TestAuthSchemes signs in with every client style the digest names, with
// the right and a wrong password (conformance cases 69-74).
func TestAuthSchemes(t *testing.T) {
	p := startDev(t, t.TempDir())

	// 69: an unauthenticated login gets one NTLM challenge, with
	// Content-Length (testcluster checks that on every answer).
	anon := testcluster.NewClient(t, p.addr, "alice")
	r := anon.Raw(loginRaw(anon))
	mustStatus(t, "unauthenticated login", r, 401)
	if got := r.Header["www-authenticate"]; len(got) != 1 || got[0] != "NTLM" {
		t.Errorf("WWW-Authenticate %q, want exactly one NTLM", got)
	}

	for _, tc := range []struct {
		scheme, user, domain string
	}{
		{testcluster.SchemeNTLMv1, "alice", "EXAMPLE"},
		{testcluster.SchemeNTLMv1ESS, "alice", "EXAMPLE"},
		{testcluster.SchemeNTLMv2, "alice", "EXAMPLE"},
		{testcluster.SchemeNTLMv2, "ALICE", ""},
		{testcluster.SchemeNTLMv1, "alice@example.test", "EXAMPLE"},
	} {
		t.Run(tc.scheme+"/"+tc.user, func(t *testing.T) {
			c := testcluster.NewClient(t, p.addr, "alice")
			// 70: the right password signs in, a wrong one gets 401 again.
			c.Creds = &testcluster.Credentials{Scheme: tc.scheme, User: tc.user, Domain: tc.domain, Password: "wrong password"}
			mustStatus(t, "wrong password", c.Raw(loginRaw(c)), 401)
			c.Creds.Password = testPassword
			mustStatus(t, "right password", c.Raw(loginRaw(c)), 200)
			// 71: a preemptive negotiate on the first request is answered.
			c.Creds.Preemptive = true
			mustStatus(t, "preemptive negotiate", c.Raw(loginRaw(c)), 200)
		})
	}

	// 9: after the type-2 challenge the connection stays open and the
	// type-3 on it succeeds; later requests on it need no Authorization.
	t.Run("NTLM connection", func(t *testing.T) {
		nc, err := net.Dial("tcp", p.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		nc.SetDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(nc)
		c := testcluster.NewClient(t, p.addr, "alice")
		creds := &testcluster.Credentials{Scheme: testcluster.SchemeNTLMv2, User: "alice", Domain: "EXAMPLE", Password: testPassword}
		raw := loginRaw(c)
		type1 := "NTLM " + base64.StdEncoding.EncodeToString(testcluster.NTLMNegotiate(creds))
		io.WriteString(nc, strings.Replace(string(raw), "\r\n", "\r\nAuthorization: "+type1+"\r\n", 1))
		r, err := testcluster.ReadResponse(br)
		if err != nil || r.Status != 401 || !strings.HasPrefix(r.Header.Get("WWW-Authenticate"), "NTLM ") {
			t.Fatalf("type 1 answered %v %v", r, err)
		}
		type2, _ := base64.StdEncoding.DecodeString(r.Header.Get("WWW-Authenticate")[5:])
		type3, err := testcluster.NTLMAuthenticate(creds, type2)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(nc, strings.Replace(string(raw), "\r\n", "\r\nAuthorization: NTLM "+base64.StdEncoding.EncodeToString(type3)+"\r\n", 1))
		if r, err = testcluster.ReadResponse(br); err != nil || r.Status != 200 {
			t.Fatalf("type 3 answered %v %v", r, err)
		}
		io.WriteString(nc, "SUBSCRIPTIONS /instmsg/aliases/alice HTTP/1.1\r\nHost: 127.0.0.1\r\nRVP-From-Principal: "+c.URL+"\r\nContent-Length: 0\r\n\r\n")
		if r, err = testcluster.ReadResponse(br); err != nil || r.Status != 200 {
			t.Fatalf("a later request on the authenticated connection: %v %v", r, err)
		}
		// 74: an authenticated alice speaking for bob is refused.
		body := testcluster.StateBody("busy", 60, 0)
		io.WriteString(nc, "PROPPATCH /instmsg/aliases/bob HTTP/1.1\r\nHost: 127.0.0.1\r\nRVP-From-Principal: "+c.URLOf("bob")+"\r\nContent-Type: text/xml\r\nContent-Length: "+strconv.Itoa(len(body))+"\r\n\r\n"+string(body))
		if r, err = testcluster.ReadResponse(br); err != nil || r.Status != 403 {
			t.Fatalf("alice as bob: %v %v, want 403", r, err)
		}
	})
}

// TestAuthDigest runs the digest profile: librvp's and Miranda's Digest,
// nonce reuse, a wrong password (cases 72, 73).
func TestAuthDigest(t *testing.T) {
	p := startDev(t, t.TempDir(), "-auth", "digest")
	anon := testcluster.NewClient(t, p.addr, "bob")
	r := anon.Raw(loginRaw(anon))
	mustStatus(t, "unauthenticated", r, 401)
	ch := r.Header["www-authenticate"]
	if len(ch) != 1 || !strings.HasPrefix(ch[0], `Digest qop="auth", realm="example.test", nonce="`) {
		t.Fatalf("Digest challenge %q", ch)
	}
	for _, scheme := range []string{testcluster.SchemeDigestLibrvp, testcluster.SchemeDigestMiranda, testcluster.SchemeDigestRFC7616} {
		c := testcluster.NewClient(t, p.addr, "bob")
		c.Creds = &testcluster.Credentials{Scheme: scheme, User: "bob", Domain: "EXAMPLE", Password: "nope"}
		mustStatus(t, scheme+" wrong password", c.Raw(loginRaw(c)), 401)
		c.Creds.Password = testPassword
		mustStatus(t, scheme+" right password", c.Raw(loginRaw(c)), 200)
	}
	// 73: the same nonce with nc=00000001 again, on a new connection,
	// with a fresh cnonce each time (librvp's form). The very same
	// credentials again are a replay: 401 with stale=true.
	c := testcluster.NewClient(t, p.addr, "bob")
	creds := &testcluster.Credentials{Scheme: testcluster.SchemeDigestLibrvp, User: "bob", Domain: "EXAMPLE", Password: testPassword}
	var auth string
	for i := range 2 {
		auth = testcluster.DigestAuthorization(creds, ch[0], "SUBSCRIBE", "/instmsg/aliases/bob")
		raw := strings.Replace(string(loginRaw(c)), "\r\n", "\r\nAuthorization: "+auth+"\r\n", 1)
		mustStatus(t, "nonce reuse "+strconv.Itoa(i), c.Raw([]byte(raw)), 200)
	}
	raw := strings.Replace(string(loginRaw(c)), "\r\n", "\r\nAuthorization: "+auth+"\r\n", 1)
	r = c.Raw([]byte(raw))
	mustStatus(t, "the same credentials again", r, 401)
	if ch := r.Header["www-authenticate"]; len(ch) != 1 || !strings.HasSuffix(ch[0], "stale=true") {
		t.Errorf("a replay answered with %q, want a fresh challenge with stale=true", ch)
	}
}

// TestAuthExchangeProfile checks Exchange's three challenges, in order,
// and that NTLM works under them (librvp reads the merged value as NTLM).
func TestAuthExchangeProfile(t *testing.T) {
	p := startDev(t, t.TempDir(), "-auth", "exchange")
	anon := testcluster.NewClient(t, p.addr, "carol")
	r := anon.Raw(loginRaw(anon))
	ch := r.Header["www-authenticate"]
	if r.Status != 401 || len(ch) != 3 || ch[0] != "Negotiate" || ch[1] != "NTLM" || !strings.HasPrefix(ch[2], "Digest ") {
		t.Fatalf("exchange profile: %d %q", r.Status, ch)
	}
	c := newClient(t, p.addr, "carol")
	mustStatus(t, "NTLM under the exchange profile", c.Raw(loginRaw(c)), 200)
	// The gateway keeps only the NT hash of a user signed in with NTLM,
	// and opens the Digest verifiers when Digest first needs them: each
	// scheme after the other, and a wrong password with each.
	c.Creds.Scheme = testcluster.SchemeDigestMiranda
	mustStatus(t, "Digest under the exchange profile", c.Raw(loginRaw(c)), 200)
	c.Creds.Scheme = testcluster.SchemeNTLMv1
	mustStatus(t, "NTLM again", c.Raw(loginRaw(c)), 200)
	for _, scheme := range []string{testcluster.SchemeNTLMv1, testcluster.SchemeDigestMiranda} {
		w := newClient(t, p.addr, "carol")
		w.Creds.Scheme, w.Creds.Password = scheme, "wrong"
		mustStatus(t, scheme+" with a wrong password", w.Raw(loginRaw(w)), 401)
	}
}

// TestAuthThrottle makes failed sign-ins until the account is refused
// with 403, which even the right password then gets; other accounts go on.
func TestAuthThrottle(t *testing.T) {
	p := startDev(t, t.TempDir(), "-lockout.delay", "1m") // the right password comes well within the wait
	c := testcluster.NewClient(t, p.addr, "alice")
	c.Creds = &testcluster.Credentials{Scheme: testcluster.SchemeNTLMv1, User: "alice", Domain: "EXAMPLE", Password: "guess"}
	got403 := false
	for range 12 {
		if r := c.Raw(loginRaw(c)); r.Status == 403 {
			got403 = true
			if !strings.Contains(string(r.Body), "too many failed sign-ins") {
				t.Errorf("403 body %q does not say why", r.Body)
			}
			break
		}
	}
	if !got403 {
		t.Fatal("12 wrong passwords were never throttled")
	}
	c.Creds.Password = testPassword
	mustStatus(t, "right password while throttled", c.Raw(loginRaw(c)), 403)
	bob := newClient(t, p.addr, "bob")
	mustStatus(t, "another account", bob.Login(600), 200)
}

// TestNoSecretsInStreamsOrLogs greps the NATS store, the Pebble store and
// the log for the demo password after sign-ins with every scheme.
func TestNoSecretsInStreamsOrLogs(t *testing.T) {
	const secret = "Zq7-unique-Secret-9x"
	data := t.TempDir()
	p := startDev(t, data, "-demo-password", secret, "-auth", "exchange", "-auth.basic")
	for _, scheme := range []string{testcluster.SchemeNTLMv1, testcluster.SchemeNTLMv2, testcluster.SchemeDigestLibrvp, testcluster.SchemeBasic} {
		c := testcluster.NewClient(t, p.addr, "alice")
		c.Creds = &testcluster.Credentials{Scheme: scheme, User: "alice", Domain: "EXAMPLE", Password: secret}
		if scheme == testcluster.SchemeBasic {
			c.Raw([]byte(strings.Replace(string(loginRaw(c)), "\r\n", "\r\nAuthorization: "+testcluster.BasicAuthorization(c.Creds)+"\r\n", 1)))
		} else {
			mustStatus(t, scheme, c.Raw(loginRaw(c)), 200)
		}
		c.Creds.Password = "wrong-" + secret
		c.Raw(loginRaw(c))
	}
	p.stop(t)
	needles := []string{secret, strings.ToUpper(secret), base64.StdEncoding.EncodeToString([]byte(secret))}
	check := func(where string, b []byte) {
		for _, n := range needles {
			if strings.Contains(string(b), n) {
				t.Errorf("%s contains the password (%q)", where, n)
			}
		}
		if utf16 := string(le16(secret)); strings.Contains(string(b), utf16) {
			t.Errorf("%s contains the password in UTF-16", where)
		}
	}
	check("the log", []byte(p.stderr.String()))
	files := 0
	filepath.Walk(data, func(path string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return nil
		}
		b, err := os.ReadFile(path)
		if err == nil {
			files++
			check(path, b)
		}
		return nil
	})
	if files < 5 {
		t.Fatalf("only %d files in the data directory: nothing was checked", files)
	}
}

func le16(s string) []byte {
	var b []byte
	for _, r := range s {
		b = append(b, byte(r), byte(r>>8))
	}
	return b
}
