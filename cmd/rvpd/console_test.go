package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	osexec "os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rvp-im/rvpd/directory"
	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/rvp"
	"github.com/rvp-im/rvpd/testcluster"
)

var opsRE = regexp.MustCompile(`ops:\s+http://(\S+)/`)

// startDevOps runs rvpd dev with an operations listener and returns it
// and the listener's base URL.
func startDevOps(t *testing.T, extra ...string) (*devProc, string) {
	t.Helper()
	args := append([]string{"dev", "-data", t.TempDir(), "-http", "127.0.0.1:0", "-nats", "127.0.0.1:0", "-ops", "127.0.0.1:0",
		"-lease.min", "1s", "-sub.min-lifetime", "1s", "-demo-password", testPassword, "-log.level", "debug"}, extra...)
	p, m := startExec(t, args, opsRE)
	p.addr = listenRE.FindStringSubmatch(p.stdout.String())[1]
	p.natsURL = natsRE.FindStringSubmatch(p.stdout.String())[1]
	p.waitHomeServing(t)
	return p, "http://" + m[1]
}

// noRedirect is an HTTP client that shows redirects instead of following
// them.
var noRedirect = &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

func get(t *testing.T, c *http.Client, u string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(body)
}

// TestConsoleRefusedWithoutCredentials: no page of the console shows
// anything to someone who has not signed in as an administrator, a wrong
// password or a made-up cookie gets nowhere, and repeated failures from
// an address are throttled.
func TestConsoleRefusedWithoutCredentials(t *testing.T) {
	_, ops := startDevOps(t)
	for _, path := range []string{"/console/", "/console/users?q=alice", "/console/user/alice@example.test"} {
		resp, body := get(t, noRedirect, ops+path)
		if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/console/login?next=") {
			t.Errorf("GET %s without a session: %d Location %q, want 303 to the sign-in page", path, resp.StatusCode, resp.Header.Get("Location"))
		}
		if strings.Contains(body, "<table") || strings.Contains(body, "Alice Example") || strings.Contains(body, "home1") {
			t.Errorf("GET %s without a session shows data: %q", path, body)
		}
		req, _ := http.NewRequest("GET", ops+path, nil)
		req.AddCookie(&http.Cookie{Name: sessionCookie, Value: "YWRtaW4.9999999999.00"})
		forged, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		forged.Body.Close()
		if forged.StatusCode != http.StatusSeeOther {
			t.Errorf("GET %s with a forged session cookie: %d, want 303", path, forged.StatusCode)
		}
	}
	login := func(name, password string) *http.Response {
		resp, err := noRedirect.PostForm(ops+"/console/login", url.Values{"name": {name}, "password": {password}, "next": {"/console/"}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if resp := login("admin", "wrong password"); resp.StatusCode != http.StatusUnauthorized || len(resp.Cookies()) != 0 {
		t.Errorf("sign-in with a wrong password: %d, cookies %v; want 401 and none", resp.StatusCode, resp.Cookies())
	}
	if resp := login("alice", testPassword); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("sign-in as a user who is no administrator: %d, want 401", resp.StatusCode)
	}
	resp := login("admin", testPassword)
	if resp.StatusCode != http.StatusSeeOther || len(resp.Cookies()) != 1 {
		t.Fatalf("sign-in as admin: %d, cookies %v; want 303 and a session", resp.StatusCode, resp.Cookies())
	}
	ck := resp.Cookies()[0]
	if !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode {
		t.Errorf("session cookie %+v: want HttpOnly and SameSite=Strict", ck)
	}
	// The session's cookie altered by a byte is no session. (Its last
	// character is a hex digit of the MAC: one time in sixteen it was
	// "0" already, and the cookie went unaltered.)
	altered := "0"
	if strings.HasSuffix(ck.Value, altered) {
		altered = "1"
	}
	req, _ := http.NewRequest("GET", ops+"/console/", nil)
	req.AddCookie(&http.Cookie{Name: sessionCookie, Value: ck.Value[:len(ck.Value)-1] + altered})
	if r, err := noRedirect.Do(req); err != nil || r.StatusCode != http.StatusSeeOther {
		t.Errorf("altered session cookie: %v %v, want 303", r.StatusCode, err)
	}
	// Failures from one address: after a few, the next waits.
	throttled := false
	for range freeFailures + 2 {
		if resp := login("admin", "guess"); resp.StatusCode == http.StatusTooManyRequests {
			throttled = resp.Header.Get("Retry-After") != ""
			break
		}
	}
	if !throttled {
		t.Errorf("%d failed sign-ins from one address were not throttled", freeFailures+2)
	}
}

// browser starts headless Chromium for a test, or skips the test where
// it is not installed (CI installs it: there the test fails instead).
func browser(t *testing.T, extra ...chromedp.ExecAllocatorOption) context.Context {
	t.Helper()
	path, err := osexec.LookPath("chromium")
	if err != nil {
		if path, err = osexec.LookPath("chromium-browser"); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatal("chromium is not installed (.ci/run installs the Debian package chromium)")
			}
			t.Skip("chromium is not installed (apt-get install chromium)")
		}
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 1000),
		chromedp.Flag("disable-gpu", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-sync", true), chromedp.Flag("no-first-run", true))
	opts = append(opts, extra...)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	return ctx
}

// waitText waits until the text of the element sel matches want, reading
// it again as the page refreshes itself.
func waitText(t *testing.T, ctx context.Context, sel string, want func(string) bool, what string) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	last := ""
	for time.Now().Before(deadline) {
		tctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		text, err := chromedp.Run(tctx, chromedp.Text(chromedp.CSS(sel)))
		cancel()
		if err == nil {
			if want(text) {
				return text
			}
			last = text
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: %s shows %q", what, sel, last)
	return ""
}

// TestConsoleBrowser drives the console in headless Chromium: an
// administrator signs in, sees alice come online after a scripted login
// (the page refreshes itself), opens her page and sees bob among her
// watchers. A screenshot of each page is saved as a test artifact
// (RVPD_CONSOLE_SCREENSHOT=docs/console.png also writes the README's).
func TestConsoleBrowser(t *testing.T) {
	ctx := browser(t)
	p, ops := startDevOps(t)
	shot := func(name string) {
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot: %v", err)
		}
		path := filepath.Join(t.ArtifactDir(), name)
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot %s", path)
	}

	if err := chromedp.Do(ctx, chromedp.Navigate(ops+"/console/"), chromedp.WaitVisible(chromedp.ID("name"))); err != nil {
		t.Fatalf("the console did not show its sign-in form: %v", err)
	}
	if err := chromedp.Do(ctx,
		chromedp.SendKeys(chromedp.ID("name"), "admin"),
		chromedp.SendKeys(chromedp.ID("password"), testPassword),
		chromedp.Click(chromedp.ID("signin")),
		chromedp.WaitVisible(chromedp.ID("homes")),
	); err != nil {
		t.Fatalf("sign in: %v", err)
	}
	waitText(t, ctx, "#admin", func(s string) bool { return s == "admin" }, "signed in")
	waitText(t, ctx, "#homes", func(s string) bool { return strings.Contains(s, "home1") && strings.Contains(s, "dev") }, "home server and its owner")
	online := `#homes tr[data-home="home1"] td.online`
	waitText(t, ctx, online, func(s string) bool { return s == "0" }, "home1's online users before any login")

	// alice signs in and goes online: the overview, left open, shows it
	// without being reloaded.
	alice := newClient(t, p.addr, "alice")
	mustStatus(t, "alice login", alice.Login(14400), 200)
	mustStatus(t, "alice online", alice.SetState("online", 1200, 0), 207)
	waitText(t, ctx, online, func(s string) bool { return s == "1" }, "home1's online users after alice's login")
	waitText(t, ctx, "table.audit", func(s string) bool {
		return strings.Contains(s, "alice@example.test") && strings.Contains(s, "view.set")
	}, "the last audit events")

	// bob signs in and watches alice; her page lists him.
	bob := newClient(t, p.addr, "bob")
	mustStatus(t, "bob login", bob.Login(14400), 200)
	mustStatus(t, "bob online", bob.SetState("online", 1200, 0), 207)
	mustStatus(t, "bob watches alice", bob.Watch("alice", 14400), 207)
	waitText(t, ctx, online, func(s string) bool { return s == "2" }, "home1's online users after bob's login")
	// bob was told alice's state: the NOTIFY done, none under way or waiting.
	waitText(t, ctx, `#homes tr[data-home="home1"] td.notifies`, func(s string) bool { return s == "0 / 0" }, "home1's NOTIFYs under way / waiting once quiet")
	shot("console.png")
	if err := chromedp.Do(ctx, chromedp.Navigate(ops+"/console/users?q=alice"), chromedp.WaitVisible(chromedp.ID("users")),
		chromedp.Click(chromedp.CSS(`#users a[href="/console/user/alice@example.test"]`)), chromedp.WaitVisible(chromedp.ID("presence"))); err != nil {
		t.Fatalf("open alice's page: %v", err)
	}
	waitText(t, ctx, "#presence", func(s string) bool { return s == "online" }, "alice's presence")
	waitText(t, ctx, "#watchers", func(s string) bool { return strings.Contains(s, "bob@example.test") }, "alice's watchers")
	waitText(t, ctx, "#logins", func(s string) bool { return strings.Contains(s, alice.CallBack) && strings.Contains(s, "ntlm") }, "alice's sign-ins")
	// Her page follows her: away, without a reload.
	mustStatus(t, "alice away", alice.SetState("away", 1200, 0), 207)
	waitText(t, ctx, "#presence", func(s string) bool { return s == "away" }, "alice's presence after she went away")
	shot("console-user.png")
	if dst := os.Getenv("RVPD_CONSOLE_SCREENSHOT"); dst != "" {
		png, err := os.ReadFile(filepath.Join(t.ArtifactDir(), "console.png"))
		if err == nil {
			err = os.WriteFile(dst, png, 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// orgAdmin is a directory client of rvpd dev p as its organisation
// administrator, on a connection closed when the test ends.
func orgAdmin(t *testing.T, p *devProc) *directory.Client {
	t.Helper()
	nc, err := nats.Connect(p.natsURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return &directory.Client{Conn: nc, Name: demoAdmin, Password: testPassword}
}

// setDomainAdmin makes name an administrator of IM domain with password
// (again: a new password).
func setDomainAdmin(t *testing.T, adm *directory.Client, name, password, domain string) {
	t.Helper()
	v, err := directory.NewAdminVerifier(password)
	if err != nil {
		t.Fatal(err)
	}
	if err := adm.SetAdmin(context.Background(), directory.AdminSpec{Name: name, Role: events.RoleDomain, Domains: []string{domain}, Verifier: &v}); err != nil {
		t.Fatal(err)
	}
}

// TestConsoleDomainAdmin: a domain administrator sees its own IM
// domains' users only, and its session ends when its password changes.
func TestConsoleDomainAdmin(t *testing.T) {
	p, ops := startDevOps(t)
	ctx := context.Background()
	adm := orgAdmin(t, p)
	if err := adm.CreateDomain(ctx, directory.DomainSpec{Domain: "acme.test", IMHost: "im.acme.test"}); err != nil {
		t.Fatal(err)
	}
	if err := adm.EnableUser(ctx, directory.UserSpec{User: events.NewUser("acme.test", "dave"), Home: demoHome, DisplayName: "Dave Acme"}); err != nil {
		t.Fatal(err)
	}
	// Its host names besides the IM host (rvpctl domain hosts): the
	// overview lists them, read-only as the rest of the console.
	if _, err := adm.ChangeDomainHosts(ctx, directory.DomainHostsSpec{Domain: "acme.test", AddHosts: []string{"chat.acme.test", "rvp.acme.test"},
		AddEmailDomains: []string{"mail.acme.test"}}); err != nil {
		t.Fatal(err)
	}
	setDomainAdmin(t, adm, "ops", "ops-password-1", "acme.test")
	jar, _ := cookiejar.New(nil)
	client := &http.Client{Jar: jar, Timeout: 10 * time.Second}
	resp, err := client.PostForm(ops+"/console/login", url.Values{"name": {"ops"}, "password": {"ops-password-1"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Request.URL.Path != "/console/" {
		t.Fatalf("ops signs in: %d at %s", resp.StatusCode, resp.Request.URL)
	}
	if r, body := get(t, client, ops+"/console/user/alice@example.test"); r.StatusCode != http.StatusForbidden || strings.Contains(body, "Alice Example") {
		t.Errorf("a domain administrator of acme.test opens alice@example.test: %d", r.StatusCode)
	}
	if r, body := get(t, client, ops+"/console/user/dave@acme.test"); r.StatusCode != 200 || !strings.Contains(body, "Dave Acme") || strings.Contains(body, "owned by node") {
		t.Errorf("a domain administrator of acme.test opens dave@acme.test (its page names no node of the cluster): %d\n%s", r.StatusCode, body)
	}
	if _, body := get(t, client, ops+"/console/users"); strings.Contains(body, "alice@example.test") || !strings.Contains(body, "dave@acme.test") {
		t.Errorf("a domain administrator's user list:\n%s", body)
	}
	_, body := get(t, client, ops+"/console/")
	if strings.Contains(body, "<td>example.test</td>") || !strings.Contains(body, "<td>acme.test</td>") || strings.Contains(body, "Last audit events") {
		t.Errorf("a domain administrator's overview shows other domains or the audit:\n%s", body)
	}
	if m := regexp.MustCompile(`(?s)<td>acme.test</td>.*?</tr>`).FindString(body); !strings.Contains(m, "<td>im.acme.test</td><td>chat.acme.test, rvp.acme.test</td><td>acme.test, mail.acme.test</td>") {
		t.Errorf("acme.test's row of the IM domains does not list its IM host, host names and e-mail domain: %q", m)
	}
	// Nor the cluster's: the streams and their traffic, the nodes, which
	// node owns a home server, nor the users of other domains on a home
	// server, counted or online. It sees the home servers as `rvpctl home
	// list` shows them to it, with its own users on them: home1 has dave
	// of acme.test and the demo users of example.test.
	for _, cluster := range []string{`id="streams"`, `id="nodes"`, "RVP_FACTS_", "owned by node", "online users", "subscriptions"} {
		if strings.Contains(body, cluster) {
			t.Errorf("a domain administrator's overview shows the cluster's data (%s):\n%s", cluster, body)
		}
	}
	if m := regexp.MustCompile(`(?s)<tr data-home="` + demoHome + `">.*?<td class="num">(\d+)</td>`).FindStringSubmatch(body); m == nil || m[1] != "1" {
		t.Errorf("a domain administrator of acme.test sees %v users on %s, want 1 (dave)", m, demoHome)
	}
	// A new password ends the session.
	setDomainAdmin(t, adm, "ops", "ops-password-2", "acme.test")
	jarClient := &http.Client{Jar: jar, Timeout: 10 * time.Second, CheckRedirect: noRedirect.CheckRedirect}
	if r, _ := get(t, jarClient, ops+"/console/"); r.StatusCode != http.StatusSeeOther {
		t.Errorf("the session after a new password: %d, want 303 to sign in again", r.StatusCode)
	}
}

// twoConsoles starts rvpd dev and a second process on its cluster (rvpd
// node with a gateway), each with an ops listener, and returns their
// addresses.
func twoConsoles(t *testing.T) (ops1, ops2 string) {
	t.Helper()
	data := t.TempDir()
	dev, ops1 := startDevOps(t, "-data", data)
	_, node := startNode(t, "-name", "ops2", "-nats", dev.natsURL, "-data", t.TempDir(),
		"-cluster-key-file", filepath.Join(data, "cluster.key"), "-gateway", "127.0.0.1:0", "-ops", "127.0.0.1:0")
	m, err := node.stdout.waitMatch(opsRE, 10*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	return ops1, "http://" + m[1]
}

// consoleLogin posts a sign-in to the console at ops.
func consoleLogin(t *testing.T, ops, name, password string) *http.Response {
	t.Helper()
	resp, err := noRedirect.PostForm(ops+"/console/login", url.Values{"name": {name}, "password": {password}, "next": {"/console/"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

// TestConsoleSessionAnyProcess: a console session signed in at one
// process is taken by another process of the cluster (signed under the
// cluster key), so a load balancer in front of several ops listeners
// needs no stickiness (TestConsoleRefusedWithoutCredentials: an altered
// one is taken by none).
func TestConsoleSessionAnyProcess(t *testing.T) {
	ops, ops2 := twoConsoles(t)
	resp := consoleLogin(t, ops, "admin", testPassword)
	if resp.StatusCode != http.StatusSeeOther || len(resp.Cookies()) != 1 {
		t.Fatalf("sign-in at rvpd dev's console: %d, cookies %v", resp.StatusCode, resp.Cookies())
	}
	req, _ := http.NewRequest("GET", ops2+"/console/", nil)
	req.AddCookie(resp.Cookies()[0])
	r, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusOK {
		t.Errorf("the session of rvpd dev's console at the second process's: %d, want 200", r.StatusCode)
	}
}

// TestConsoleThrottleAnyProcess: failed console sign-ins from an address
// count at every process's console: after the first has throttled the
// address, the second throttles it at once or nearly (alone it would
// check as many passwords as the first did), the right one included.
func TestConsoleThrottleAnyProcess(t *testing.T) {
	ops, ops2 := twoConsoles(t)
	failures := 0
	for consoleLogin(t, ops, "admin", "guess").StatusCode != http.StatusTooManyRequests {
		if failures++; failures > freeFailures+2 {
			t.Fatalf("the first console did not throttle after %d failures", failures)
		}
	}
	tries := 0
	for r := consoleLogin(t, ops2, "admin", "guess"); r.StatusCode != http.StatusTooManyRequests; r = consoleLogin(t, ops2, "admin", "guess") {
		if r.StatusCode != http.StatusUnauthorized {
			t.Fatalf("a guess at the second console: %d, want 401 or 429", r.StatusCode)
		}
		if tries++; tries >= failures {
			t.Fatalf("the second console checked %d guesses, as many as the first did before it throttled: it does not hear of them", tries)
		}
	}
	r := consoleLogin(t, ops2, "admin", testPassword)
	if r.StatusCode != http.StatusTooManyRequests || r.Header.Get("Retry-After") == "" {
		t.Errorf("the right password at the second console from the throttled address: %d, Retry-After %q; want 429 with it", r.StatusCode, r.Header.Get("Retry-After"))
	}
}

// TestConsoleThrottleConcurrentGuesses: guesses sent at once from one
// address are throttled as those sent one after the other are: no more
// passwords are checked than the free failures and those already being
// checked when the address began to wait (two at a time), however many
// sign-ins were waiting for a check.
func TestConsoleThrottleConcurrentGuesses(t *testing.T) {
	_, ops := startDevOps(t)
	const guesses = 24
	statuses := make(chan int, guesses)
	start := make(chan struct{})
	for range guesses {
		go func() {
			<-start
			resp, err := noRedirect.PostForm(ops+"/console/login", url.Values{"name": {"admin"}, "password": {"guess"}, "next": {"/console/"}})
			if err != nil {
				statuses <- 0
				return
			}
			resp.Body.Close()
			statuses <- resp.StatusCode
		}()
	}
	close(start)
	counts := map[int]int{}
	for range guesses {
		counts[<-statuses]++
	}
	if checked := counts[http.StatusUnauthorized]; checked > freeFailures+2 {
		t.Errorf("%d guesses sent at once from one address: %d passwords checked (401), want at most %d; statuses %v",
			guesses, checked, freeFailures+2, counts)
	}
}

// TestConsoleThrottleByNetwork: console sign-ins of an IPv6 client count
// under its /64, as the gateway's RVP sign-ins do: a new address of the
// same /64 for each guess does not start a new count. (Before, each
// address had its own.)
func TestConsoleThrottleByNetwork(t *testing.T) {
	c, err := newConsole(nil, nil, nil, nil, discardLogger(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	key := func(remote string) string { return c.clientAddr(&http.Request{RemoteAddr: remote}) }
	if a, b := key("[2001:db8:1:2::1]:4000"), key("[2001:db8:1:2:ffff::9]:4001"); a != b {
		t.Errorf("two addresses of one /64 counted apart: %q and %q", a, b)
	}
	if a, b := key("[2001:db8:1:2::1]:4000"), key("[2001:db8:1:3::1]:4000"); a == b {
		t.Errorf("two /64s counted together: %q", a)
	}
	if a, b := key("192.0.2.1:4000"), key("192.0.2.2:4000"); a == b {
		t.Errorf("two IPv4 addresses counted together: %q", a)
	}
}

// TestConsoleDomainAdminForeignWatchers: a domain administrator's page of
// a user of its IM domain shows a watcher of another IM domain as such,
// with its domain, when it watches and what it is shown, but not who it
// is nor where its NOTIFYs go (its Call-Back), in the watchers' table or
// in the node's last facts (its SUBSCRIBE's actor, client address and
// Call-Back): those are another domain's user's, as its users' list and
// its users' pages are. A watcher of its own domain is shown in full, and
// the organisation's administrator sees every one.
func TestConsoleDomainAdminForeignWatchers(t *testing.T) {
	p, ops := startDevOps(t)
	ctx := context.Background()
	adm := orgAdmin(t, p)
	if err := adm.CreateDomain(ctx, directory.DomainSpec{Domain: "acme.test", IMHost: "im.acme.test", NTDomain: "ACME"}); err != nil {
		t.Fatal(err)
	}
	for _, alias := range []string{"dave", "carol"} {
		u := events.NewUser("acme.test", alias)
		if err := adm.EnableUser(ctx, directory.UserSpec{User: u, Home: demoHome}); err != nil {
			t.Fatal(err)
		}
		if err := adm.SetPassword(ctx, u, rvp.NewVerifiers(u, "ACME", "", "acme.test", testPassword)); err != nil {
			t.Fatal(err)
		}
	}
	setDomainAdmin(t, adm, "ops", "ops-password", "acme.test")

	// bob of example.test and carol of acme.test watch dave.
	bob := newClient(t, p.addr, "bob")
	mustStatus(t, "bob login", bob.Login(14400), 200)
	mustStatus(t, "bob watches dave@acme.test", bob.DoHost("im.acme.test", "SUBSCRIBE", "/instmsg/aliases/dave", nil,
		"Notification-Type: update/propchange", bob.From(), "Subscription-Lifetime: 14400", "Call-Back: "+bob.URL), 207)
	carol := testcluster.NewClient(t, p.addr, "carol")
	carol.UseHost("im.acme.test")
	carol.Creds = &testcluster.Credentials{Scheme: testcluster.SchemeNTLMv1, User: "carol", Domain: "ACME", Password: testPassword}
	mustStatus(t, "carol login", carol.Login(14400), 200)
	mustStatus(t, "carol watches dave", carol.Watch("dave", 14400), 207)

	page := func(name, password string) string {
		t.Helper()
		jar, _ := cookiejar.New(nil)
		client := &http.Client{Jar: jar, Timeout: 10 * time.Second}
		resp, err := client.PostForm(ops+"/console/login", url.Values{"name": {name}, "password": {password}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Request.URL.Path != "/console/" {
			t.Fatalf("%s signs in: %d at %s", name, resp.StatusCode, resp.Request.URL)
		}
		r, body := get(t, client, ops+"/console/user/dave@acme.test")
		if r.StatusCode != 200 {
			t.Fatalf("%s opens dave@acme.test: %d\n%s", name, r.StatusCode, body)
		}
		return body
	}
	watchers := regexp.MustCompile(`(?s)<table id="watchers">.*?</table>`)

	// The organisation's administrator: both, in full.
	body := page(demoAdmin, testPassword)
	if w := watchers.FindString(body); !strings.Contains(w, "bob@example.test") || !strings.Contains(w, bob.URL) || !strings.Contains(w, carol.URL) {
		t.Fatalf("the organisation's administrator does not see bob's and carol's watches of dave in full:\n%s", w)
	}

	body = page("ops", "ops-password")
	w := watchers.FindString(body)
	if !strings.Contains(w, "carol@acme.test") || !strings.Contains(w, carol.URL) {
		t.Errorf("a domain administrator of acme.test does not see carol@acme.test's watch of dave in full:\n%s", w)
	}
	if !strings.Contains(w, "a user of example.test") || strings.Count(w, "<tr>") != 3 {
		t.Errorf("a domain administrator of acme.test does not see that a user of example.test watches dave:\n%s", w)
	}
	// Nowhere on the page: bob's address, his Call-Back (his principal
	// URL), nor the address his client connected from.
	for _, secret := range []string{"bob", bob.URL} {
		if strings.Contains(body, secret) {
			t.Errorf("a domain administrator of acme.test sees %q of a watcher of example.test on dave's page:\n%s", secret, body)
		}
	}
	// bob's SUBSCRIBE is among dave's facts: who made it, from where, and
	// to which Call-Back, withheld.
	bobs := 0
	for _, row := range regexp.MustCompile(`(?s)<tr>.*?</tr>`).FindAllString(regexp.MustCompile(`(?s)<table class="audit">.*?</table>`).FindString(body), -1) {
		if !strings.Contains(row, "a user of example.test") {
			continue
		}
		bobs++
		if strings.Contains(row, "127.0.0.1") || !strings.Contains(row, "subscription.created") {
			t.Errorf("a domain administrator of acme.test sees the client address or Call-Back of a user of example.test in dave's facts: %s", row)
		}
	}
	if bobs != 1 {
		t.Errorf("dave's facts show %d by a user of example.test, want 1 (bob's SUBSCRIBE)", bobs)
	}
}

// TestConsoleClientBehindTrustedProxy: through a proxy the operator
// trusts (-ops.trusted-proxies), a sign-in counts under the client address
// the proxies appended to X-Forwarded-For: the last one that is no trusted
// proxy's, whatever the client itself put before it; with the trusted
// proxies' own addresses (a chain of them) skipped; an IPv6 client's by
// its /64; under the proxy's own when the header names no client. From a
// peer that is no trusted proxy, the header is never read.
func TestConsoleClientBehindTrustedProxy(t *testing.T) {
	c, err := newConsole(nil, nil, nil, nil, discardLogger(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	if c.proxies, err = rvp.ParseRanges("10.0.0.5,10.1.0.0/24,2001:db8:ffff::1"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		peer string
		xff  []string // header lines
		want string
	}{
		{"10.0.0.5:4000", []string{"192.0.2.7"}, "192.0.2.7"},
		{"10.0.0.5:4000", []string{"198.51.100.1, 192.0.2.7"}, "192.0.2.7"},           // the client wrote the first
		{"10.0.0.5:4000", []string{"198.51.100.1", "192.0.2.7"}, "192.0.2.7"},         // on two lines
		{"10.0.0.5:4000", []string{"198.51.100.1, 192.0.2.7, 10.1.0.9"}, "192.0.2.7"}, // a chain of trusted proxies
		{"10.0.0.5:4000", []string{"192.0.2.7:51234"}, "192.0.2.7"},
		{"10.0.0.5:4000", []string{"[2001:db8:1:2::7]:443"}, "2001:db8:1:2::/64"},
		{"10.0.0.5:4000", []string{"2001:db8:1:2::9"}, "2001:db8:1:2::/64"},
		{"[2001:db8:ffff::1]:4000", []string{"192.0.2.7"}, "192.0.2.7"},
		{"10.0.0.5:4000", []string{"10.1.0.7, 10.1.0.9"}, "10.1.0.7"}, // all trusted: the first
		{"10.0.0.5:4000", nil, "10.0.0.5"},
		{"10.0.0.5:4000", []string{"192.0.2.7, unknown"}, "10.0.0.5"},
		// No trusted proxy: the header is what the client says.
		{"192.0.2.99:4000", []string{"192.0.2.7"}, "192.0.2.99"},
		{"10.0.0.6:4000", []string{"192.0.2.7"}, "10.0.0.6"},
	} {
		r := &http.Request{RemoteAddr: tc.peer, Header: http.Header{}}
		for _, l := range tc.xff {
			r.Header.Add("X-Forwarded-For", l)
		}
		if got := c.clientAddr(r); got != tc.want {
			t.Errorf("from %s, X-Forwarded-For %q: counted under %q, want %q", tc.peer, tc.xff, got, tc.want)
		}
	}
}

// TestConsoleThrottleBehindTrustedProxy: behind a reverse proxy the
// operator names in -ops.trusted-proxies, one client's failed sign-ins
// throttle that client, not every administrator signing in through the
// proxy; what the client writes in X-Forwarded-For itself counts for
// nothing (the proxy appends the address it was reached from), nor does
// the header from a peer that is no trusted proxy. And guesses at one
// administrator's password from many addresses are throttled too (per
// name), while that administrator signs in from an address it signed in
// from before. (Before, every sign-in through the proxy counted under its
// address: one client's guesses locked out every administrator.)
func TestConsoleThrottleBehindTrustedProxy(t *testing.T) {
	_, ops := startDevOps(t, "-ops.trusted-proxies", "127.0.0.1")
	target, err := url.Parse(ops)
	if err != nil {
		t.Fatal(err)
	}
	// The proxy connects to rvpd from 127.0.0.1 and appends its client's
	// address to X-Forwarded-For, as nginx's $proxy_add_x_forwarded_for.
	proxy := httptest.NewServer(&httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(target)
		r.SetXForwarded()
	}})
	defer proxy.Close()
	// Each client connects from an address of its own: 127.0.0.n.
	from := func(n int) *http.Client {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(n))}}
		return &http.Client{Timeout: 10 * time.Second, CheckRedirect: noRedirect.CheckRedirect, Transport: &http.Transport{DialContext: d.DialContext}}
	}
	signIn := func(client *http.Client, base, name, password, xff string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("POST", base+"/console/login", strings.NewReader(url.Values{"name": {name}, "password": {password}, "next": {"/console/"}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if xff != "" {
			req.Header.Set("X-Forwarded-For", xff)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	// admin signs in through the proxy from 127.0.0.3: its address.
	if r := signIn(from(3), proxy.URL, demoAdmin, testPassword, ""); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("admin's sign-in through the proxy: %d, want 303", r.StatusCode)
	}

	// A client at 127.0.0.2 guesses through the proxy, naming another
	// address in X-Forwarded-For at each guess: throttled all the same.
	attacker := from(2)
	for i := 0; ; i++ {
		if i > freeFailures+1 {
			t.Fatalf("%d guesses through the proxy from one client, each naming another address in X-Forwarded-For, were not throttled", i)
		}
		if signIn(attacker, proxy.URL, "ops", "guess", fmt.Sprintf("198.51.100.%d", i+1)).StatusCode == http.StatusTooManyRequests {
			break
		}
	}
	// Another administrator signs in through the same proxy.
	if r := signIn(from(4), proxy.URL, demoAdmin, testPassword, ""); r.StatusCode != http.StatusSeeOther {
		t.Errorf("admin's sign-in through the proxy from another client after one client's guesses: %d (Retry-After %q), want 303",
			r.StatusCode, r.Header.Get("Retry-After"))
	}
	// A peer that is no trusted proxy names another address each time:
	// the header is ignored.
	direct := from(5)
	for i := 0; ; i++ {
		if i > freeFailures+1 {
			t.Fatalf("%d guesses straight from 127.0.0.5, each naming another address in X-Forwarded-For, were not throttled", i)
		}
		if signIn(direct, ops, "ops", "guess", fmt.Sprintf("203.0.113.%d", i+1)).StatusCode == http.StatusTooManyRequests {
			break
		}
	}

	// admin's password guessed once from each of many addresses: the
	// name is throttled from addresses it never signed in from.
	for n := 10; ; n++ {
		if n > 10+4*freeFailures+1 {
			t.Fatalf("%d guesses of %s's password, one from each address, were not throttled", n-10, demoAdmin)
		}
		if signIn(from(n), proxy.URL, demoAdmin, "guess", "").StatusCode == http.StatusTooManyRequests {
			break
		}
	}
	if r := signIn(from(100), proxy.URL, demoAdmin, testPassword, ""); r.StatusCode != http.StatusTooManyRequests || r.Header.Get("Retry-After") == "" {
		t.Errorf("%s's right password from a new address while its name is throttled: %d, want 429 with Retry-After", demoAdmin, r.StatusCode)
	}
	if r := signIn(from(3), proxy.URL, demoAdmin, testPassword, ""); r.StatusCode != http.StatusSeeOther {
		t.Errorf("%s's sign-in from its own address while its name is throttled elsewhere: %d (Retry-After %q), want 303",
			demoAdmin, r.StatusCode, r.Header.Get("Retry-After"))
	}
}
