package main

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rvp-im/rvpd/directory"
	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/gateway"
	"github.com/rvp-im/rvpd/projections"
)

//go:embed console
var consoleFiles embed.FS

// console is the operator console on the operations listener: read-only
// pages of the cluster (IM domains, home servers and their owners,
// streams and their backlogs, routers, nodes, the last audit events) and
// of a user (presence, watchers, subscriptions), server-rendered from
// templates, refreshed by a little JavaScript.
//
// Only the directory's administrators sign in, with the password rvpctl
// uses: it is checked against their verifier (directory.AdminVerifier),
// and a signed cookie, good for sessionLife and bound to that verifier
// (a new password ends it), carries the session. Domain administrators
// see the users of their own IM domains only.
type console struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	dir     *projections.Directory
	keyring *directory.Keyring
	log     *slog.Logger
	now     func() time.Time
	// gatherWait is how long the nodes' metrics reports are waited for.
	gatherWait time.Duration

	// key signs sessions when there is no keyring (tests); with one,
	// sessions are signed under the cluster key, so that any process's
	// console takes them: a load balancer in front of several ops
	// listeners needs no stickiness, and a restart ends no session. The
	// administrator's new password, or removal, ends them.
	key     []byte
	pages   map[string]*template.Template
	checks  chan struct{} // bounds the password checks at once (each costs PBKDF2)
	signIns *prometheus.CounterVec

	// proxies are the reverse proxies in front the operator trusts
	// (-ops.trusted-proxies): a sign-in through one counts under the
	// client address it reports (clientAddr).
	proxies []netip.Prefix
	// accounts counts failed sign-ins per administrator name, from the
	// addresses it has not signed in from (and per name and address), as
	// the gateways count RVP sign-ins: guesses at one administrator's
	// password spread over many addresses slow down too, while the
	// administrator signs in from its own. fails counts per address, for
	// any name.
	accounts *gateway.Lockout

	mu    sync.Mutex
	fails map[string]*signInFailures // by client address
	// note tells the other processes' consoles of a sign-in (share); nil
	// without NATS.
	note func(consoleNote) error
}

const (
	sessionCookie = "rvpd_console"
	sessionLife   = 8 * time.Hour
	// freeFailures are the failed sign-ins from an address before each
	// further one waits, 1 s doubled each time up to maxSignInWait; an
	// administrator's name has four times as many from the addresses it
	// has not signed in from (gateway.Lockout).
	freeFailures  = 5
	maxSignInWait = 5 * time.Minute
	maxFailures   = 10000 // addresses remembered
	// forgetFailures: an address's failures are forgotten once it has
	// had none for this long, as the gateway forgets RVP sign-ins'.
	forgetFailures = 24 * time.Hour
	// maxAdminName bounds the name a failure is remembered for.
	maxAdminName = 256
)

// signInFailures are an address's failed sign-ins. Only a sign-in as the
// administrator they were all for clears them: an administrator signing
// in as itself would otherwise wipe the guesses its address made at
// another's password, and guess on without end.
type signInFailures struct {
	n     int
	until time.Time // no password is checked from the address before then
	last  time.Time
	admin string // the name tried
	mixed bool   // other names were tried too: only forgetFailures clears them
}

// newConsole returns the console; its sign-ins are counted on reg.
func newConsole(nc *nats.Conn, js jetstream.JetStream, dir *projections.Directory, keyring *directory.Keyring, log *slog.Logger, reg prometheus.Registerer) (*console, error) {
	c := &console{nc: nc, js: js, dir: dir, keyring: keyring, log: log, now: time.Now, gatherWait: 300 * time.Millisecond,
		key: make([]byte, 32), checks: make(chan struct{}, 2), fails: map[string]*signInFailures{}, pages: map[string]*template.Template{},
		accounts: gateway.NewLockout(gateway.LockoutConfig{Free: freeFailures, BaseDelay: time.Second, MaxDelay: maxSignInWait, Forget: forgetFailures})}
	rand.Read(c.key)
	c.signIns = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rvpd_console_sign_ins_total",
		Help: "Sign-ins to the operator console, by result: ok, failed (wrong name or password), throttled.",
	}, []string{"result"})
	reg.MustRegister(c.signIns)
	funcs := template.FuncMap{
		"ago": func(t time.Time) string {
			if t.IsZero() {
				return "-"
			}
			return c.now().Sub(t).Round(time.Second).String()
		},
		"ts": func(t time.Time) string {
			if t.IsZero() {
				return "-"
			}
			return t.UTC().Format("2006-01-02 15:04:05")
		},
		"n":     func(v uint64) string { return thousands(v) },
		"bytes": humanBytes,
	}
	for _, page := range []string{"login", "overview", "users", "user"} {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(consoleFiles, "console/layout.html", "console/"+page+".html")
		if err != nil {
			return nil, fmt.Errorf("console template %s: %w", page, err)
		}
		c.pages[page] = t
	}
	if err := c.share(); err != nil {
		return nil, fmt.Errorf("console: share the sign-in throttling: %w", err)
	}
	return c, nil
}

// routes adds the console's pages to mux.
func (c *console) routes(mux *http.ServeMux) {
	static, _ := fs.Sub(consoleFiles, "console/static")
	mux.Handle("GET /console/static/", http.StripPrefix("/console/static/", http.FileServerFS(static)))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/console/", http.StatusSeeOther) })
	mux.HandleFunc("GET /console/login", c.loginPage)
	// A post from a page of another site (a browser says so in
	// Sec-Fetch-Site or Origin) is refused before it is read: it would
	// sign the administrator in to the session of whoever wrote the page,
	// sign it out, or spend its address's failed sign-ins (and lock it
	// out at every console). rvpctl and curl send neither header.
	sameSite := http.NewCrossOriginProtection()
	sameSite.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.log.Warn("console post from another site refused", "path", r.URL.Path, "origin", r.Header.Get("Origin"),
			"fetch_site", r.Header.Get("Sec-Fetch-Site"), "client", c.clientAddr(r))
		http.Error(w, "refused: posted from a page of another site; open the console itself and sign in there", http.StatusForbidden)
	}))
	mux.Handle("POST /console/login", sameSiteOrForwarded(sameSite, http.HandlerFunc(c.login)))
	mux.Handle("POST /console/logout", sameSiteOrForwarded(sameSite, http.HandlerFunc(c.logout)))
	mux.HandleFunc("GET /console/{$}", c.signedIn(c.overview))
	mux.HandleFunc("GET /console/users", c.signedIn(c.users))
	mux.HandleFunc("GET /console/user/{user}", c.signedIn(c.user))
}

// page is what every page's layout shows.
type page struct {
	Title   string
	Admin   *projections.Administrator
	Now     time.Time
	Refresh bool // refreshed live
	Errors  []string
	Data    any
}

func (c *console) render(w http.ResponseWriter, status int, name string, p page) {
	p.Now = c.now()
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	// No inline script or style; base-uri and form-action do not fall
	// back to default-src. X-Frame-Options for browsers before
	// frame-ancestors.
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	w.WriteHeader(status)
	if err := c.pages[name].Execute(w, p); err != nil {
		c.log.Warn("console page not rendered", "page", name, "err", err)
	}
}

// signedIn serves h to a signed-in administrator; anyone else is sent to
// the sign-in page.
func (c *console) signedIn(h func(http.ResponseWriter, *http.Request, *projections.Administrator)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		adm := c.session(r)
		if adm == nil {
			http.Redirect(w, r, "/console/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		h(w, r, adm)
	}
}

// sessionMAC signs a session of administrator adm until expiry, bound to
// its sealed verifier: a new password (or its removal) ends the session.
func (c *console) sessionMAC(adm *projections.Administrator, expiry int64) []byte {
	sum := sha256.Sum256(adm.Verifiers)
	data := fmt.Appendf(nil, "%s\n%d\n%x", adm.Name, expiry, sum)
	if c.keyring != nil {
		return c.keyring.MAC("console-session", data)
	}
	m := hmac.New(sha256.New, c.key)
	m.Write(data)
	return m.Sum(nil)
}

// session returns the administrator r's cookie signs in, or nil.
func (c *console) session(r *http.Request) *projections.Administrator {
	ck, err := r.Cookie(sessionCookie)
	if err != nil {
		return nil
	}
	parts := strings.Split(ck.Value, ".")
	if len(parts) != 3 {
		return nil
	}
	name, err1 := base64.RawURLEncoding.DecodeString(parts[0])
	expiry, err2 := strconv.ParseInt(parts[1], 10, 64)
	mac, err3 := hex.DecodeString(parts[2])
	if err1 != nil || err2 != nil || err3 != nil || c.now().Unix() > expiry {
		return nil
	}
	adm, err := c.dir.Administrator(string(name))
	if err != nil || adm == nil || !hmac.Equal(mac, c.sessionMAC(adm, expiry)) {
		return nil
	}
	return adm
}

// clientAddr is the address a console sign-in is counted under: the
// client's, an IPv6 client's /64 (events.SenderNetwork), as the gateway
// counts RVP sign-ins: one host may sign in from every address of its
// /64. Through a reverse proxy the operator trusts (-ops.trusted-proxies)
// it is the client's the proxy reports in X-Forwarded-For: the last
// address there that is no trusted proxy's, each proxy having appended
// the address it was reached from (what comes before is what the client
// sent, and anyone may send anything). From any other peer the header is
// ignored: each guess could name a new address, and start a new count.
func (c *console) clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	if peer, err := netip.ParseAddr(host); err == nil && c.trustedProxy(peer) {
		if client, ok := c.forwardedFor(r); ok {
			host = client.String()
		}
	}
	return events.SenderNetwork(host)
}

// trustedProxy reports whether a is the address of a trusted proxy.
func (c *console) trustedProxy(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range c.proxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// forwardedFor returns the client a trusted proxy reports in r's
// X-Forwarded-For (every line, in order): the last address that is no
// trusted proxy's, or the first when all are. Not ok when there is none,
// or that one is no address (a proxy that wrote "unknown"): the sign-in
// then counts under the proxy's.
func (c *console) forwardedFor(r *http.Request) (netip.Addr, bool) {
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		hop := strings.TrimSpace(hops[i])
		if hop == "" {
			continue
		}
		a, err := netip.ParseAddr(strings.Trim(hop, "[]"))
		if err != nil {
			ap, perr := netip.ParseAddrPort(hop) // 192.0.2.7:4711, [2001:db8::7]:4711
			if perr != nil {
				return netip.Addr{}, false
			}
			a = ap.Addr()
		}
		a = a.Unmap()
		if !c.trustedProxy(a) || i == 0 {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// nextPage is where a sign-in goes on to: a page of the console, never
// elsewhere.
func nextPage(next string) string {
	if !strings.HasPrefix(next, "/console/") || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n") {
		return "/console/"
	}
	return next
}

type loginData struct {
	Name, Next, Msg string
}

func (c *console) loginPage(w http.ResponseWriter, r *http.Request) {
	c.render(w, http.StatusOK, "login", page{Title: "Sign in", Data: loginData{Next: nextPage(r.URL.Query().Get("next"))}})
}

// login checks an administrator's name and password against its verifier
// in the directory, and starts a session.
func (c *console) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 8<<10)
	if err := r.ParseForm(); err != nil {
		http.Error(w, "malformed sign-in form", http.StatusBadRequest)
		return
	}
	name, password, next := r.PostForm.Get("name"), r.PostForm.Get("password"), nextPage(r.PostForm.Get("next"))
	addr := c.clientAddr(r)
	refuse := func(status int, msg string) {
		c.render(w, status, "login", page{Title: "Sign in", Data: loginData{Name: name, Next: next, Msg: msg}})
	}
	throttled := func() bool {
		why, wait := "from your address", c.waiting(addr)
		if aw := c.accounts.Wait(failureName(name), addr, c.now()); aw > wait {
			why, wait = "as "+name+" from addresses it has not signed in from", aw
		}
		if wait <= 0 {
			return false
		}
		c.signIns.WithLabelValues("throttled").Inc()
		w.Header().Set("Retry-After", strconv.Itoa(int(wait.Seconds()+0.999)))
		refuse(http.StatusTooManyRequests, fmt.Sprintf("Too many failed sign-ins %s; try again in %s.", why, wait.Round(time.Second)))
		return true
	}
	if throttled() {
		return
	}
	select {
	case c.checks <- struct{}{}:
		defer func() { <-c.checks }()
	case <-time.After(5 * time.Second):
		refuse(http.StatusServiceUnavailable, "The console is busy checking other sign-ins; try again in a moment.")
		return
	}
	// Asked again once a check is ours: the guesses an address sent at
	// once all waited here, while those checked before them failed.
	if throttled() {
		return
	}
	adm, ok := c.check(name, password)
	if !ok {
		c.failed(addr, name)
		c.signIns.WithLabelValues("failed").Inc()
		c.log.Info("console sign-in refused", "admin", name, "client", addr)
		refuse(http.StatusUnauthorized, "Wrong name or password. Sign in as an administrator of the directory, with the password rvpctl uses.")
		return
	}
	c.succeeded(addr, adm.Name)
	c.signIns.WithLabelValues("ok").Inc()
	c.log.Info("console sign-in", "admin", adm.Name, "client", addr)
	expiry := c.now().Add(sessionLife).Unix()
	value := base64.RawURLEncoding.EncodeToString([]byte(adm.Name)) + "." + strconv.FormatInt(expiry, 10) + "." + hex.EncodeToString(c.sessionMAC(adm, expiry))
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: value, Path: "/console/", HttpOnly: true, SameSite: http.SameSiteStrictMode,
		Secure: overTLS(r), MaxAge: int(sessionLife.Seconds())})
	http.Redirect(w, r, next, http.StatusSeeOther)
}

// sameSiteOrForwarded is sameSite's handler of h, which also takes a
// post whose Origin names the host a proxy in front says the browser
// asked for (X-Forwarded-Host, or Forwarded: host=), when the browser
// sent no Sec-Fetch-Site. A browser sends that only to a potentially
// trustworthy origin (HTTPS, localhost): over plain HTTP to a console
// reached by a name, through a proxy that gives rvpd its own address as
// Host (nginx's proxy_pass does by default), the Origin alone tells the
// console's own form from another site's, and it names the proxy's host,
// not the Host rvpd sees. A page of another site cannot forge the
// header: a form sets none, and a script's custom header needs a CORS
// preflight the console never grants; its Origin is its own site's.
func sameSiteOrForwarded(sameSite *http.CrossOriginProtection, h http.Handler) http.Handler {
	checked := sameSite.Handler(h)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Sec-Fetch-Site") == "" && originIsForwardedHost(r) {
			h.ServeHTTP(w, r)
			return
		}
		checked.ServeHTTP(w, r)
	})
}

// originIsForwardedHost reports whether r's Origin names the host the
// first proxy in front was asked for: the first X-Forwarded-Host, or the
// first Forwarded host=.
func originIsForwardedHost(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" || origin == "null" {
		return false
	}
	o, err := url.Parse(origin)
	if err != nil || o.Host == "" {
		return false
	}
	host := firstValue(r.Header.Get("X-Forwarded-Host"))
	if host == "" {
		host = forwardedParam(r, "host")
	}
	return host != "" && strings.EqualFold(host, o.Host)
}

// overTLS reports whether the browser reached the console over TLS: the
// ops listener speaks plain HTTP, so through a proxy or load balancer
// that ends TLS and says so (X-Forwarded-Proto: https, or Forwarded:
// proto=https). Behind chained proxies, each of which appends its own,
// the first proxy's says how the browser reached it, as the first
// X-Forwarded-Host names the host it asked for. The session's cookie is
// then Secure; a browser on plain HTTP would drop a Secure one. A forged
// header only makes the forger's own cookie stricter.
func overTLS(r *http.Request) bool {
	return r.TLS != nil || strings.EqualFold(firstValue(r.Header.Get("X-Forwarded-Proto")), "https") ||
		strings.EqualFold(forwardedParam(r, "proto"), "https")
}

// firstValue is the first of a comma-joined list of values (an
// X-Forwarded-* header): the first proxy's.
func firstValue(list string) string {
	v, _, _ := strings.Cut(list, ",")
	return strings.TrimSpace(v)
}

// forwardedParam is parameter param (host, proto) of the first element
// of r's Forwarded header (RFC 7239): the first proxy's; "" when it has
// none.
func forwardedParam(r *http.Request, param string) string {
	first, _, _ := strings.Cut(r.Header.Get("Forwarded"), ",")
	for pair := range strings.SplitSeq(first, ";") {
		if k, v, _ := strings.Cut(strings.TrimSpace(pair), "="); strings.EqualFold(k, param) {
			return strings.Trim(v, `"`)
		}
	}
	return ""
}

// check returns the administrator name and password sign in as.
func (c *console) check(name, password string) (*projections.Administrator, bool) {
	adm, err := c.dir.Administrator(name)
	if err != nil || adm == nil || password == "" {
		// As long as a real check, so that names cannot be probed.
		directory.AdminKey(password, []byte("no such administrator"), directory.AdminIterations)
		return nil, false
	}
	v, err := c.keyring.OpenAdminVerifier(adm.Verifiers, adm.Name)
	if err != nil {
		c.log.Warn("administrator's verifier cannot be opened with this cluster key", "admin", adm.Name, "err", err)
		return nil, false
	}
	return adm, v.Check(password)
}

func (c *console) logout(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/console/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode,
		Secure: overTLS(r)})
	http.Redirect(w, r, "/console/login", http.StatusSeeOther)
}

// waiting returns how long addr must wait before its next sign-in.
func (c *console) waiting(addr string) time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f := c.fails[addr]; f != nil {
		return max(0, f.until.Sub(c.now()))
	}
	return 0
}

// consoleNote is what a console tells the others of a sign-in from an
// address (events.ConsoleSignInSubject): a failure, or a success after
// failures.
type consoleNote struct {
	Addr  string `json:"addr"`
	Admin string `json:"admin,omitempty"` // the name signed in as, or tried
	OK    bool   `json:"ok,omitempty"`
	At    int64  `json:"at"` // Unix milliseconds
}

// share tells the other processes' consoles of this one's sign-ins and
// takes theirs (gateway.ShareNotes; nothing without NATS): a load
// balancer in front of several ops listeners does not multiply the
// guesses an address gets, as it does not need sticky sessions. A note's
// time is taken as the gateways take theirs (gateway.NoteTime). The
// subscription ends with the connection.
func (c *console) share() error {
	if c.nc == nil {
		return nil
	}
	tell, _, err := gateway.ShareNotes(c.nc, events.ConsoleSignInSubject, c.log, c.now,
		func(n consoleNote) bool { return n.Addr != "" },
		func(n consoleNote) {
			at := gateway.NoteTime(n.At, c.now())
			if n.OK {
				c.succeededAt(n.Addr, n.Admin, at)
			} else {
				c.failedAt(n.Addr, n.Admin, at)
			}
		})
	c.note = tell
	return err
}

// tell publishes a note of a sign-in from addr as admin.
func (c *console) tell(addr, admin string, ok bool) {
	if c.note == nil {
		return
	}
	if err := c.note(consoleNote{Addr: addr, Admin: admin, OK: ok, At: c.now().UnixMilli()}); err != nil {
		c.log.Warn("console sign-in not told to the other consoles", "client", addr, "err", err)
	}
}

// failureName is the part of an administrator's name its address's
// failures remember: a sign-in as it compares the same part.
func failureName(admin string) string { return admin[:min(len(admin), maxAdminName)] }

func (c *console) failed(addr, admin string) {
	admin = failureName(admin)
	c.failedAt(addr, admin, c.now())
	c.tell(addr, admin, false)
}

func (c *console) succeeded(addr, admin string) {
	admin = failureName(admin)
	if c.succeededAt(addr, admin, c.now()) {
		c.tell(addr, admin, true)
	}
}

func (c *console) failedAt(addr, admin string, now time.Time) {
	admin = failureName(admin)
	c.accounts.Fail(admin, addr, now)
	c.mu.Lock()
	defer c.mu.Unlock()
	f := c.fails[addr]
	if f != nil && now.Sub(f.last) > forgetFailures {
		f = nil // quiet long enough: start again
	}
	if f == nil {
		if len(c.fails) >= maxFailures {
			for k, x := range c.fails {
				if now.Sub(x.last) > time.Hour {
					delete(c.fails, k)
				}
			}
			if len(c.fails) >= maxFailures {
				clear(c.fails) // under a flood of addresses, forget rather than grow
			}
		}
		f = &signInFailures{admin: admin}
		c.fails[addr] = f
	}
	f.mixed = f.mixed || f.admin != admin
	f.n++
	if now.After(f.last) {
		f.last = now
	}
	if f.n > freeFailures {
		if until := now.Add(min(maxSignInWait, time.Second<<min(f.n-freeFailures-1, 20))); until.After(f.until) {
			f.until = until
		}
	}
}

// succeededAt forgets addr's failures when they were all for admin,
// unless one came after now (a late note), and makes addr known for admin
// (gateway.Lockout.Succeed); it reports whether the other consoles are to
// be told: it forgot failures, or addr was not known for admin lately.
func (c *console) succeededAt(addr, admin string, now time.Time) bool {
	admin = failureName(admin)
	known := c.accounts.Succeed(admin, addr, now)
	c.mu.Lock()
	defer c.mu.Unlock()
	f := c.fails[addr]
	if f == nil || f.last.After(now) || f.mixed || f.admin != admin {
		return known
	}
	delete(c.fails, addr)
	return true
}

// mayView reports whether adm may see the users of IM domain.
func mayView(adm *projections.Administrator, domain string) bool {
	if adm.Role == events.RoleOrganization {
		return true
	}
	for _, d := range adm.Domains {
		if strings.EqualFold(d, domain) {
			return true
		}
	}
	return false
}

// humanBytes writes a size in B, KiB, MiB or GiB.
func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit && exp < 2; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMG"[exp])
}

// thousands formats n with thousands separators.
func thousands(n uint64) string {
	s := strconv.FormatUint(n, 10)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

var errNotYours = errors.New("not an IM domain you administer")
