package main

import (
	"html"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
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
}
