package main

import (
	"context"
	"html"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/prometheus/client_golang/prometheus"
)

// TestConsoleClientTextInert: what an RVP client sets is shown by the
// console as text, never run as markup, on the page as first served and
// as the live refresh puts it in (console.js): alice sets a mobile
// description (any text up to 256 bytes, r:mobile-description) of markup
// and script through a real PROPPATCH while the administrator has her
// page open; the page then shows the text literally, with no element it
// names, and no script of it ran. (The page's CSP would stop an inline
// handler as well; the count of elements shows the escaping alone.)
func TestConsoleClientTextInert(t *testing.T) {
	ctx := browser(t)
	p, ops := startDevOps(t)
	alice := newClient(t, p.addr, "alice")
	mustStatus(t, "alice login", alice.Login(14400), 200)
	mustStatus(t, "alice online", alice.SetState("online", 1200, 0), 207)

	if err := chromedp.Do(ctx, chromedp.Navigate(ops+"/console/user/alice@example.test"), chromedp.WaitVisible(chromedp.ID("name")),
		chromedp.SendKeys(chromedp.ID("name"), "admin"), chromedp.SendKeys(chromedp.ID("password"), testPassword),
		chromedp.Click(chromedp.ID("signin")), chromedp.WaitVisible(chromedp.ID("presence"))); err != nil {
		t.Fatalf("sign in and open alice's page: %v", err)
	}
	const payload = `<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>"><svg onload="window.pwned=3"><a href="javascript:window.pwned=4">x</a>`
	body := `<?xml version="1.0"?><d:propertyupdate xmlns:d="DAV:" xmlns:r="http://schemas.microsoft.com/rvp/"><d:set><d:prop>` +
		`<r:mobile-description>` + html.EscapeString(payload) + `</r:mobile-description></d:prop></d:set></d:propertyupdate>`
	mustStatus(t, "alice's mobile description", alice.Do("PROPPATCH", "/instmsg/aliases/alice", []byte(body), alice.From(), "Content-Type: text/xml"), 207)

	inert := func(where string) {
		t.Helper()
		waitText(t, ctx, "table.audit", func(s string) bool { return strings.Contains(s, payload) }, where+": alice's description as text")
		n, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("main img, main script, main svg, main a[href^='javascript']").length`))
		if err != nil {
			t.Fatal(err)
		}
		pwned, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.pwned !== undefined`))
		if err != nil {
			t.Fatal(err)
		}
		if n != 0 || pwned {
			t.Errorf("%s: alice's description made %d elements of the page; its script ran: %v", where, n, pwned)
		}
	}
	inert("alice's page, refreshed live")
	if err := chromedp.Do(ctx, chromedp.Navigate(ops+"/console/"), chromedp.WaitVisible(chromedp.ID("homes"))); err != nil {
		t.Fatal(err)
	}
	inert("the overview's audit")
	// The console's own posts pass its check of posts from other sites
	// (TestConsoleCrossSitePosts): the administrator signs out, and is
	// asked to sign in again.
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`form.who button`)), chromedp.WaitVisible(chromedp.ID("signin")),
		chromedp.Navigate(ops+"/console/"), chromedp.WaitVisible(chromedp.ID("signin"))); err != nil {
		t.Fatalf("sign out through the console's button: %v", err)
	}
}

// TestConsoleCrossSitePosts: a page of another site cannot make the
// administrator's browser post to the console: not sign it in (to the
// attacker's session: login CSRF), not sign it out, and not spend the
// failed sign-ins of its address, which would lock the administrator out
// at every console of the cluster for up to 5 minutes. A browser tells
// such a post by Sec-Fetch-Site (or, before 2023, by Origin alone); the
// console's own form, and clients that send neither (rvpctl, curl), go
// on signing in.
func TestConsoleCrossSitePosts(t *testing.T) {
	_, ops := startDevOps(t)
	post := func(path string, form url.Values, header ...string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("POST", ops+path, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	crossSite := []string{"Sec-Fetch-Site", "cross-site", "Origin", "http://attacker.example"}
	oldBrowser := []string{"Origin", "http://attacker.example"}
	sameOrigin := []string{"Sec-Fetch-Site", "same-origin", "Origin", ops}
	signIn := func(password string) url.Values {
		return url.Values{"name": {"admin"}, "password": {password}, "next": {"/console/"}}
	}

	for _, h := range [][]string{crossSite, oldBrowser} {
		if r := post("/console/login", signIn(testPassword), h...); r.StatusCode != http.StatusForbidden || len(r.Cookies()) != 0 {
			t.Errorf("a sign-in posted from another site (%v): %d, cookies %v; want 403 and none", h, r.StatusCode, r.Cookies())
		}
		if r := post("/console/logout", nil, h...); r.StatusCode != http.StatusForbidden || len(r.Cookies()) != 0 {
			t.Errorf("a sign-out posted from another site (%v): %d, cookies %v; want 403 and none", h, r.StatusCode, r.Cookies())
		}
	}
	statuses := map[int]int{}
	for range freeFailures + 2 {
		statuses[post("/console/login", signIn("guess"), crossSite...).StatusCode]++
	}
	if statuses[http.StatusForbidden] != freeFailures+2 {
		t.Errorf("%d wrong passwords posted from another site: statuses %v, want 403 to each", freeFailures+2, statuses)
	}
	// None of those counted: the administrator signs in from the same
	// address, through the console's form, and out again.
	r := post("/console/login", signIn(testPassword), sameOrigin...)
	if r.StatusCode != http.StatusSeeOther || len(r.Cookies()) != 1 {
		t.Fatalf("the administrator's own sign-in after another site's posts: %d (Retry-After %q), cookies %v; want 303 and a session",
			r.StatusCode, r.Header.Get("Retry-After"), r.Cookies())
	}
	if r := post("/console/logout", nil, sameOrigin...); r.StatusCode != http.StatusSeeOther || len(r.Cookies()) != 1 || r.Cookies()[0].MaxAge >= 0 {
		t.Errorf("the administrator's own sign-out: %d, cookies %v; want 303 and the cookie dropped", r.StatusCode, r.Cookies())
	}
	if r := post("/console/login", signIn(testPassword)); r.StatusCode != http.StatusSeeOther {
		t.Errorf("a sign-in with neither Sec-Fetch-Site nor Origin (not a browser): %d, want 303", r.StatusCode)
	}
}

// TestConsoleHeaders: every page of the console is served with a strict
// Content-Security-Policy (scripts and styles from the console's own
// files only, no inline ones; no <base> that would move them elsewhere;
// never framed), no caching and no sniffing; and the templates hold no
// inline script, handler or style that such a policy would stop.
func TestConsoleHeaders(t *testing.T) {
	c, err := newConsole(nil, nil, nil, nil, discardLogger(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	c.routes(mux)
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", "/console/login", nil))
	h := rec.Header()
	csp := map[string]string{}
	for d := range strings.SplitSeq(h.Get("Content-Security-Policy"), ";") {
		name, value, _ := strings.Cut(strings.TrimSpace(d), " ")
		csp[name] = value
	}
	// object-src and the rest fall back to default-src; base-uri and
	// form-action do not.
	for name, want := range map[string]string{"default-src": "'none'", "script-src": "'self'", "style-src": "'self'",
		"base-uri": "'none'", "form-action": "'self'", "frame-ancestors": "'none'"} {
		if got := csp[name]; got != want {
			t.Errorf("Content-Security-Policy %s: %q, want %q (the policy: %q)", name, got, want, h.Get("Content-Security-Policy"))
		}
	}
	for name, want := range map[string]string{"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
		"Referrer-Policy": "same-origin", "X-Frame-Options": "DENY"} {
		if got := h.Get(name); got != want {
			t.Errorf("%s: %q, want %q", name, got, want)
		}
	}
	// A script element names its file and holds nothing; no handler
	// attribute, style attribute or element, or javascript: URL.
	inline := regexp.MustCompile(`(?i)<script\b(?:[^>]*\ssrc=)?[^>]*>[^<]|<script\b(?:[^s>]|s[^r>]|sr[^c>])*>|\son[a-z]+\s*=|\sstyle\s*=|<style\b|javascript:`)
	err = fs.WalkDir(consoleFiles, "console", func(path string, d fs.DirEntry, err error) error {
		if err != nil || !strings.HasSuffix(path, ".html") {
			return err
		}
		b, err := consoleFiles.ReadFile(path)
		if m := inline.Find(b); m != nil {
			t.Errorf("%s holds %q: inline script, handler or style, which the policy stops", path, m)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestConsoleNextStaysHome: where a sign-in goes on to (next=) is a page
// of the console, whatever the parameter says: the redirect's Location,
// resolved as a browser does (tabs and newlines dropped, backslashes
// read as slashes), names the console's own host.
func TestConsoleNextStaysHome(t *testing.T) {
	base, _ := url.Parse("http://console.test:9090/console/login")
	for _, next := range []string{"https://attacker.example/", "//attacker.example/", "/\\attacker.example", "\\\\attacker.example",
		"/console/../..//attacker.example", "/console/..\\..\\attacker.example", "/console/\t/attacker.example", "/console/../\t/attacker.example",
		"/console/..%2f..%2f/attacker.example", "/console/\r\nLocation: http://attacker.example", "javascript:alert(1)", "/console/%0d%0aX: y",
		"http:/\\/attacker.example", "/console/..//attacker.example", "/ console/../attacker.example"} {
		rec := httptest.NewRecorder()
		http.Redirect(rec, httptest.NewRequest("POST", "/console/login", nil), nextPage(next), http.StatusSeeOther)
		loc := rec.Header().Get("Location")
		browser := strings.NewReplacer("\t", "", "\n", "", "\r", "", "\\", "/").Replace(loc)
		to, err := base.Parse(browser)
		if err != nil || to.Scheme != "http" || to.Host != base.Host || !strings.HasPrefix(to.Path, "/") || len(rec.Header()) > 2 {
			t.Errorf("next=%q: Location %q, which a browser takes to %v (%v); want a page of the console; headers %v", next, loc, to, err, rec.Header())
		}
	}
}

// TestConsoleCookieSecureBehindTLS: the session's cookie is Secure
// whenever the browser reached the console over TLS, which on the plain
// HTTP ops listener means through a proxy or load balancer that ends TLS
// and says so (X-Forwarded-Proto, or Forwarded: proto=): a browser then
// never sends it over plain HTTP. Over plain HTTP it cannot be Secure,
// or the browser would drop it.
func TestConsoleCookieSecureBehindTLS(t *testing.T) {
	_, ops := startDevOps(t)
	signIn := func(path string, header ...string) *http.Cookie {
		t.Helper()
		req, _ := http.NewRequest("POST", ops+path, strings.NewReader(url.Values{"name": {"admin"}, "password": {testPassword}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusSeeOther || len(resp.Cookies()) != 1 {
			t.Fatalf("POST %s %v: %d, cookies %v; want 303 and one", path, header, resp.StatusCode, resp.Cookies())
		}
		return resp.Cookies()[0]
	}
	if ck := signIn("/console/login"); ck.Secure {
		t.Errorf("session cookie over plain HTTP: %+v, want it not Secure", ck)
	}
	// Behind chained proxies each appends its own: the first value is
	// what the browser reached the first proxy by, as the first
	// X-Forwarded-Host is the host it asked for (originIsForwardedHost).
	for _, h := range [][]string{{"X-Forwarded-Proto", "https"}, {"Forwarded", `for=192.0.2.7;proto=https;host=console.example`},
		{"X-Forwarded-Proto", "https, http"}, {"X-Forwarded-Proto", "HTTPS,http"},
		{"Forwarded", `for=192.0.2.7;proto=https;host=console.example, for=10.0.0.2;proto=http`}} {
		if ck := signIn("/console/login", h...); !ck.Secure || !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode {
			t.Errorf("session cookie through a TLS proxy (%v): %+v, want Secure, HttpOnly, SameSite=Strict", h, ck)
		}
		if ck := signIn("/console/logout", h...); !ck.Secure || ck.MaxAge >= 0 {
			t.Errorf("sign-out through a TLS proxy (%v): %+v, want the Secure cookie dropped", h, ck)
		}
	}
	// The browser reached the first proxy over plain HTTP: a Secure
	// cookie would be dropped, whatever a later hop spoke.
	for _, h := range [][]string{{"X-Forwarded-Proto", "http, https"},
		{"Forwarded", `for=192.0.2.7;proto=http, for=10.0.0.2;proto=https`}} {
		if ck := signIn("/console/login", h...); ck.Secure {
			t.Errorf("session cookie through a proxy reached over plain HTTP (%v): %+v, want it not Secure", h, ck)
		}
	}
}

// TestConsoleThrottleNotClearedByAnotherAdmin: an administrator's own
// sign-in does not wipe the failures its address made guessing another
// administrator's password: a domain administrator could otherwise guess
// the organisation administrator's password without end, signing in as
// itself after every few guesses. (The right password of the name that
// failed still clears them: TestConsoleFailuresForgotten.)
func TestConsoleThrottleNotClearedByAnotherAdmin(t *testing.T) {
	p, ops := startDevOps(t)
	setDomainAdmin(t, orgAdmin(t, p), "ops", "ops-password", "example.test")
	// ops guesses admin's password, signing in as itself between guesses.
	checked := 0
	for range 3 {
		for range freeFailures {
			if consoleLogin(t, ops, demoAdmin, "guess").StatusCode == http.StatusUnauthorized {
				checked++
			}
		}
		consoleLogin(t, ops, "ops", "ops-password")
	}
	// The free ones and one more, which makes the address wait 1 s; a
	// slow machine may let another through when that has passed.
	if checked > freeFailures+3 {
		t.Errorf("%d guesses of %s's password checked from one address signing in as ops between them, want at most %d", checked, demoAdmin, freeFailures+3)
	}
}

// TestConsoleFailuresForgotten: an address's failures for several names
// are kept through a sign-in, and forgotten after a day without one, as
// the gateway forgets RVP sign-ins' (before, only a sign-in forgot them).
func TestConsoleFailuresForgotten(t *testing.T) {
	c, err := newConsole(nil, nil, nil, nil, discardLogger(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c.now = func() time.Time { return now }
	for range freeFailures + 1 {
		c.failed("192.0.2.1", "admin")
	}
	c.failed("192.0.2.1", "ops")
	if c.succeeded("192.0.2.1", "ops"); c.waiting("192.0.2.1") <= 0 {
		t.Fatal("the failures of an address that guessed admin's password were forgotten when it signed in as ops")
	}
	now = now.Add(forgetFailures + time.Minute)
	c.failed("192.0.2.1", "admin")
	if w := c.waiting("192.0.2.1"); w != 0 {
		t.Errorf("a failure a day after the last: the address waits %v, want 0 (the old ones forgotten)", w)
	}
	for range freeFailures - 1 {
		c.failed("192.0.2.1", "admin")
	}
	if c.succeeded("192.0.2.1", "admin"); c.waiting("192.0.2.1") != 0 || c.fails["192.0.2.1"] != nil {
		t.Errorf("admin's right password after its own failures: %+v kept, want them forgotten", c.fails["192.0.2.1"])
	}
}

// TestConsoleBrowserBehindProxyRewritingHost: an administrator signs in
// with Chromium to a console reached by a name of its own
// (http://console.example) through a reverse proxy that gives rvpd the
// upstream's address as Host (nginx's default, proxy_pass; httputil's
// SetURL) and the browser's in X-Forwarded-Host. Over plain HTTP to a
// name that is not localhost, a browser sends no Sec-Fetch-Site (only to
// a potentially trustworthy origin), so the post is told from a
// cross-site one by its Origin alone, which names the proxy's host, not
// rvpd's. A cross-site post through the same proxy is still refused.
func TestConsoleBrowserBehindProxyRewritingHost(t *testing.T) {
	_, ops := startDevOps(t)
	target, err := url.Parse(ops)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httptest.NewServer(&httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(target) // Host: rvpd's own address
		r.SetXForwarded()
	}})
	defer proxy.Close()
	_, port, err := net.SplitHostPort(proxy.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	site := "http://console.example:" + port
	ctx := browser(t, chromedp.Flag("host-resolver-rules", "MAP console.example 127.0.0.1"))
	if err := chromedp.Do(ctx, chromedp.Navigate(site+"/console/"), chromedp.WaitVisible(chromedp.ID("name"))); err != nil {
		t.Fatalf("the console did not show its sign-in form through the proxy: %v", err)
	}
	var body string
	tctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(tctx,
		chromedp.SendKeys(chromedp.ID("name"), "admin"),
		chromedp.SendKeys(chromedp.ID("password"), testPassword),
		chromedp.Click(chromedp.ID("signin")),
		chromedp.WaitReady("body"),
	); err != nil {
		t.Fatalf("sign in: %v", err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		rctx, rcancel := context.WithTimeout(tctx, 2*time.Second)
		text, err := chromedp.Run(rctx, chromedp.Text(chromedp.CSS("body")))
		rcancel()
		if err == nil {
			body = text
			if strings.Contains(body, "home1") || strings.Contains(body, "refused") {
				break
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.Contains(body, "home1") {
		t.Errorf("the administrator's sign-in through the proxy did not reach the overview; the page says:\n%s", body)
	}

	// A page of another site posting through the same proxy is refused.
	form := url.Values{"name": {"admin"}, "password": {testPassword}, "next": {"/console/"}}
	req, _ := http.NewRequest("POST", proxy.URL+"/console/login", strings.NewReader(form.Encode()))
	req.Host = "console.example:" + port
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "http://attacker.example")
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || len(resp.Cookies()) != 0 {
		t.Errorf("a sign-in posted from another site through the proxy: %d, cookies %v; want 403 and none", resp.StatusCode, resp.Cookies())
	}
}

// TestConsoleFailuresForgottenLongName: an administrator whose name is
// longer than the failures remember (maxAdminName: the directory bounds
// no name) signs in after its own failures: they are forgotten, as any
// administrator's are, not kept as another's.
func TestConsoleFailuresForgottenLongName(t *testing.T) {
	c, err := newConsole(nil, nil, nil, nil, discardLogger(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c.now = func() time.Time { return now }
	long := strings.Repeat("o", maxAdminName+44)
	for range freeFailures + 1 {
		c.failed("192.0.2.1", long)
	}
	if c.waiting("192.0.2.1") <= 0 {
		t.Fatal("the address does not wait after its failures")
	}
	if c.succeeded("192.0.2.1", long); c.fails["192.0.2.1"] != nil {
		t.Errorf("the right password of an administrator of a %d-byte name after its own failures: %+v kept, want them forgotten", len(long), c.fails["192.0.2.1"])
	}
}
