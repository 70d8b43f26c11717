package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
	"github.com/rvp-im/rvpd/rvp"
)

// siteRetryAfter is the Retry-After of a request for a user of a site
// that cannot be reached: the site watch looks every second, and an
// outage of a site is not over in less.
const siteRetryAfter = 30 * time.Second

// siteOf returns the site of home server home when it is another site
// than the gateway's, in a deployment of several; "" otherwise.
func (g *Gateway) siteOf(home string) string {
	if g.cfg.Site == "" {
		return ""
	}
	hs, err := g.cfg.Directory.HomeServer(home)
	if err != nil || hs == nil || hs.Site == g.cfg.Site {
		return ""
	}
	return hs.Site
}

// refusal is an answer the gateway gives by itself, without a home node
// or a router: a request refused with an RVP status and a message saying
// what to do, a redirect (location), an authentication challenge (the
// WWW-Authenticate values), or a framing error after which the
// connection closes.
type refusal struct {
	status    int
	msg       string
	location  string
	challenge []string
	close     bool
	// retryAfter, when set, is sent as Retry-After.
	retryAfter time.Duration
	// logged says the refusal was logged where it was made, with what
	// the request line does not say: that line then goes at Debug, so
	// that a refusal is logged once.
	logged bool
}

// logged marks err, when it is a refusal, as logged where it was made.
func logged(err error) error {
	var rf *refusal
	if errors.As(err, &rf) {
		rf.logged = true
	}
	return err
}

func (e *refusal) Error() string { return e.msg }

func refuse(status int, format string, args ...any) error {
	return &refusal{status: status, msg: fmt.Sprintf(format, args...)}
}

// outcomeRefusal is the refusal of an authentication that did not let the
// request go on.
func outcomeRefusal(o Outcome) error {
	if o.Verdict == Throttled {
		// The authenticator has said so (Credentials.throttled).
		return &refusal{status: rvp.StatusForbidden, msg: o.Msg, retryAfter: o.RetryAfter, logged: true}
	}
	if o.Verdict == Busy {
		return &refusal{status: rvp.StatusUnavailable, msg: o.Msg, retryAfter: o.RetryAfter, logged: true}
	}
	return &refusal{status: rvp.StatusUnauthorized, msg: o.Msg, challenge: o.Challenge}
}

// refusalOf returns the refusal err stands for: its own, a protocol
// error's, an unanswered request's (504), or 503. errors.AsType, not
// errors.As: As's targets escaped, three allocations for every refusal,
// and each of librvp's connections starts with one (the 401 that carries
// the NTLM challenge).
func refusalOf(req *rvp.Request, err error) *refusal {
	if rf, ok := errors.AsType[*refusal](err); ok {
		return rf
	}
	if pe, ok := errors.AsType[*rvp.ProtocolError](err); ok {
		return &refusal{status: pe.Status, msg: pe.Msg, close: true}
	}
	if un, ok := errors.AsType[*unanswered](err); ok {
		return &refusal{status: rvp.StatusGatewayTimeout, msg: un.explain(req)}
	}
	return &refusal{status: rvp.StatusUnavailable, msg: "the service could not take the request; retry in a moment"}
}

// respond is the gateway's single renderer: every response it sends is
// made here, from err when the gateway answers by itself, else from the
// reply of a home node or router to req. A refusal and a framing error
// (rvp.ProtocolError) give their status and say why; a request not
// answered by its deadline once given to its stream (unanswered) is 504,
// its outcome unknown; any other error is the service failing to take
// the request: 503, never 500, on which librvp disconnects.
func respond(req *rvp.Request, reply *events.Reply, err error) *rvp.Response {
	if err != nil {
		rf := refusalOf(req, err)
		r := &rvp.Response{Status: rf.status, Close: rf.close}
		for _, v := range rf.challenge {
			r.Header = append(r.Header, rvp.Field{Name: rvp.HdrWWWAuthenticate, Value: v})
		}
		if rf.location != "" {
			r.Set(rvp.HdrLocation, rf.location)
		}
		if rf.retryAfter > 0 {
			r.Set("Retry-After", retryAfter(rf.retryAfter))
		}
		textBody(r, rf.msg)
		return r
	}
	return render(req, reply)
}

func textBody(r *rvp.Response, msg string) {
	if msg == "" {
		return
	}
	r.Set(rvp.HdrContentType, "text/plain; charset=utf-8")
	r.Body = []byte(msg + "\n")
}

// MaxHops is the highest RVP-Hop-Count a gateway takes (digest §3.6.3).
const MaxHops = 8

// target is the node a request addresses.
type target struct {
	user    events.User
	rec     *projections.UserRecord
	domain  *projections.Domain
	nodeURL string // the node's URL as the requester addressed it
	// movedTo is the physical URL of a user that moved away from the home
	// server the requester addressed by its host.
	movedTo string
	// router is the directory's router the request was addressed to,
	// when its policy serves this client here (proxies it).
	router string
}

func (t *target) domainOrNil() *projections.Domain {
	if t == nil {
		return nil
	}
	return t.domain
}

// ours reports whether a principal URL or server name belongs to one of
// our IM domains (principalDomain).
func (g *Gateway) ours(principal, reqHost string) bool {
	host := principal
	if u, err := rvp.ParseURL(principal); err == nil {
		host = u.Host
	}
	dom, err := g.principalDomain(host, reqHost)
	return err == nil && dom != nil
}

// forwarded are the request headers a lookup carries, for a router to
// forward the request to another organisation.
var forwarded = []string{rvp.HdrFromPrincipal, rvp.HdrNotificationType, rvp.HdrCallBack, rvp.HdrLifetime, rvp.HdrSubscriptionID,
	rvp.HdrAckType, rvp.HdrDepth, rvp.HdrContentType}

// lookupOf is the lookup of req for the routers; hops is its
// RVP-Hop-Count (hopCount).
func lookupOf(req *rvp.Request, hops int, host, alias, path string) *events.Lookup {
	lk := &events.Lookup{Host: host, Alias: alias, Path: path, Body: req.Body, HopCount: hops, Header: map[string]string{}}
	for _, h := range forwarded {
		if v := req.Header.Get(h); v != "" {
			lk.Header[h] = v
		}
	}
	return lk
}

// hopCount reads RVP-Hop-Count, the one place it is read: 1 when it is
// absent or 0 (the request's first hop). A count past MaxHops is refused
// (508) before anything is appended; routers and home nodes hold the same
// limit for what reaches them otherwise. A count it cannot read is
// refused (400) too: read otherwise elsewhere ("+9" by strconv.Atoi), it
// would pass here and loop on.
func hopCount(h rvp.Header) (int, error) {
	v := strings.TrimSpace(h.Get(rvp.HdrHopCount))
	if v == "" {
		return 1, nil
	}
	n, err := rvp.ParseCount(v)
	if err != nil {
		return 0, refuse(rvp.StatusBadRequest, "RVP-Hop-Count %q is not a non-negative integer", v)
	}
	if n > MaxHops {
		return 0, refuse(rvp.StatusLoopDetected, "RVP-Hop-Count %d exceeds the limit of %d: servers are forwarding this request in a loop", n, MaxHops)
	}
	return max(n, 1), nil
}

// inside reports whether client is inside the firewall topology.
func (g *Gateway) inside(client string) (bool, error) {
	s, err := g.cfg.Directory.Settings()
	if err != nil {
		return false, err
	}
	ip, err := netip.ParseAddr(client)
	if err != nil {
		return false, nil
	}
	for _, r := range s.Inside {
		if p, err := netip.ParsePrefix(r); err == nil && p.Contains(ip.Unmap()) {
			return true, nil
		}
	}
	return false, nil
}

// handle answers one request; it also returns the error it answered by
// itself, if any, for the request line (logRequest) to say.
func (g *Gateway) handle(ctx context.Context, c *conn, req *rvp.Request, client string) (*rvp.Response, error) {
	reply, err := g.answer(ctx, c, req, client)
	return respond(req, reply, err), err
}

// answer finds the answer to one request: a home node's or router's
// reply, or the error the gateway answers by itself.
func (g *Gateway) answer(ctx context.Context, c *conn, req *rvp.Request, client string) (*events.Reply, error) {
	switch req.Method {
	case "SUBSCRIBE", "UNSUBSCRIBE", "SUBSCRIPTIONS", "PROPFIND", "PROPPATCH", "NOTIFY", "ACL":
	case "COPY", "MOVE":
		return nil, refuse(rvp.StatusMethodNotAllowed, "%s is not allowed on RVP nodes", req.Method)
	default:
		// GET, HEAD, POST, PUT, LOCK, UNLOCK, OPTIONS, POLL and anything else.
		return nil, refuse(rvp.StatusNotImplemented, "%s is not implemented by this RVP server", req.Method)
	}
	hops, err := hopCount(req.Header)
	if err != nil {
		return nil, err
	}
	reqHost := requestHost(req)
	from, fromUser, fromDomain, err := g.fromPrincipal(req, reqHost)
	if err != nil {
		return nil, err
	}
	tgt, lookup, err := g.resolveTarget(req, hops, from, client)
	if err != nil {
		return nil, err
	}
	if tgt != nil && tgt.movedTo != "" && c != nil && c.movedAsked != req.Target {
		// Once per connection and target: librvp follows a redirect on
		// the same connection with the path only and the Host it had,
		// and is served the second time (every gateway serves every
		// physical URL).
		c.movedAsked = req.Target
		return nil, &refusal{status: rvp.StatusMoved, location: tgt.movedTo, msg: tgt.user.String() + " has moved to home server " + tgt.rec.Home}
	}
	// Another organisation speaks: only if we federate (trust.go).
	foreign := from != "" && fromUser.IsZero() && !g.ours(from, reqHost)
	if foreign {
		if err := g.foreignAllowed(from, client); err != nil {
			return nil, err
		}
		if tgt == nil {
			// Never an open relay: another organisation's principal
			// reaches its own organisation's nodes without us.
			g.counters.forged.Add(1)
			return nil, refuse(rvp.StatusForbidden, "this server forwards only its own users' requests to other organisations; %s is not ours, nor is %s", rvp.LogicalURL(lookup.Host, lookup.Alias), from)
		}
	}
	now := g.now()
	id := newID()
	deadline := now.Add(g.cfg.RequestTimeout)
	lookupFor := func(auth events.Identity) (*events.Reply, error) {
		lookup.ID, lookup.At, lookup.Deadline, lookup.Gateway, lookup.Client, lookup.Method = id, now, deadline, g.cfg.ID, client, req.Method
		lookup.Auth = auth
		if err := g.limit(req, auth, client, len(lookup.Body), len(lookup.Body)); err != nil {
			return nil, err
		}
		purpose := lookupFederation
		if tgt != nil {
			purpose = lookupRedirect
		}
		g.cfg.Metrics.lookup(purpose)
		reply, err := g.dispatch(ctx, events.LookupSubject(g.cfg.Site), "", id, deadline, lookup, "")
		if err != nil {
			return nil, fmt.Errorf("lookup of %s on %s: %w", lookup.Alias, lookup.Host, err)
		}
		return reply, nil
	}
	if lookup != nil && tgt != nil {
		// Redirected to its home server, the client authenticates there.
		// A redirect needs no body: none is kept.
		lookup.Body = nil
		return lookupFor(events.Identity{})
	}

	// Everyone but another organisation speaks with credentials.
	ar := AuthRequest{Req: req, Client: client, Domain: tgt.domainOrNil(), From: fromUser, Required: !foreign}
	if fromDomain != nil {
		ar.Domain = fromDomain
	}
	out := g.auth.Authenticate(c.state, ar)
	switch out.Verdict {
	case Authenticated:
	case Throttled:
		g.counters.signInsThrottled.Add(1)
		return nil, outcomeRefusal(out)
	case Replayed:
		g.counters.replayed.Add(1)
		return nil, outcomeRefusal(out)
	case Refused:
		if req.Header.Has(rvp.HdrAuthorization) {
			g.counters.signInsFailed.Add(1)
		} else {
			g.counters.unauthenticated.Add(1)
		}
		return nil, outcomeRefusal(out)
	default:
		if !req.Header.Has(rvp.HdrAuthorization) {
			g.counters.unauthenticated.Add(1)
		}
		return nil, outcomeRefusal(out)
	}
	identity := out.Identity
	switch {
	case foreign && identity.Scheme != "" && identity.Scheme != "none":
		g.counters.forged.Add(1)
		g.log.Info("spoofed principal refused", "from", from, "authenticated", identity.User.String(), "client", client)
		return nil, logged(refuse(rvp.StatusForbidden, "RVP-From-Principal %q does not name %s, the user you authenticated as", from, identity.User))
	case foreign:
		g.counters.foreign.Add(1)
	case identity.Scheme == "" || identity.User.IsZero():
		// An authenticator let through a request that needs credentials.
		g.counters.unauthenticated.Add(1)
		return nil, refuse(rvp.StatusUnauthorized, "authentication required: sign in with your user name and password")
	case identity.Scheme != "none":
		switch {
		case from == "":
			// Without RVP-From-Principal the authenticated user speaks.
			fromUser = identity.User
			if tgt != nil && identity.User == tgt.user {
				from = tgt.nodeURL
			} else if dom, err := g.cfg.Directory.Domain(identity.User.Domain); err != nil {
				return nil, err
			} else if dom != nil {
				from = rvp.LogicalURL(dom.IMHost, identity.User.Alias)
			}
		case fromUser != identity.User:
			g.counters.forged.Add(1)
			g.log.Info("spoofed principal refused", "from", from, "authenticated", identity.User.String(), "client", client)
			return nil, logged(refuse(rvp.StatusForbidden, "RVP-From-Principal %q does not name %s, the user you authenticated as", from, identity.User))
		}
	}
	var n *rvp.Notification
	if req.Method == "NOTIFY" {
		n, err = rvp.ParseNotification(req.Body)
		if err != nil {
			return nil, refuse(rvp.StatusBadRequest, "%v", err)
		}
		foreignFrom := ""
		if foreign {
			foreignFrom = from
		}
		if err := g.checkNotification(n, identity.User, foreignFrom, tgt, lookup, reqHost); err != nil {
			g.counters.forged.Add(1)
			g.log.Info("notification refused", "from", from, "authenticated", identity.String(), "client", client, "err", err)
			return nil, logged(err)
		}
	}
	if lookup != nil {
		// Another organisation's node: forwarded by a router, for an
		// authenticated user of ours, never as an open relay for spoofed
		// ones nor to point another organisation at an address.
		if err := g.checkForeignCallBack(req, identity.User, reqHost); err != nil {
			return nil, err
		}
		if err := g.checkHandedOut(req, n, c, from, reqHost); err != nil {
			return nil, err
		}
		return lookupFor(identity)
	}

	base := events.Req{
		ID: id, At: now, Deadline: deadline, Gateway: g.cfg.ID, Client: client,
		Node: tgt.user, NodeURL: tgt.nodeURL, From: from, FromUser: fromUser, Auth: identity,
		DirPos: g.cfg.Directory.Position(),
	}
	ev, err := g.requestEvent(req, base, hops, reqHost, foreign)
	if err != nil {
		return nil, err
	}
	if err := g.limit(req, identity, client, len(req.Body), kept(ev, len(req.Body))); err != nil {
		return nil, err
	}
	if tgt.router != "" {
		g.cfg.Metrics.proxy(tgt.router)
	}
	site := g.siteOf(tgt.rec.Home)
	unreachable := func() error {
		g.log.Warn("request for a home server of a site that cannot be reached", "home", tgt.rec.Home, "site", site, "method", req.Method, "user", tgt.user.String(), "client", client)
		return &refusal{status: rvp.StatusUnavailable, retryAfter: siteRetryAfter, logged: true,
			msg: fmt.Sprintf("%s is homed at site %s, which cannot be reached from site %s now; try again later", tgt.user, site, g.cfg.Site)}
	}
	if site != "" && g.cfg.Sites != nil && g.cfg.Sites.Lost(site) {
		return nil, unreachable()
	}
	reply, err := g.dispatch(ctx, events.RequestSubject(tgt.rec.Home, tgt.user), tgt.rec.Home, id, deadline, ev, site)
	if site != "" && errors.Is(err, jetstream.ErrNoStreamResponse) {
		return nil, unreachable()
	}
	if err != nil {
		return nil, fmt.Errorf("%s for %s on home server %s: %w", req.Method, tgt.user, tgt.rec.Home, err)
	}
	g.keepMore(identity, client, len(req.Body), reply)
	return reply, nil
}

// fromPrincipal parses RVP-From-Principal: a principal's URL, or a bare
// server name. It returns the normalised value, and the local user it
// names with its IM domain, if any.
func (g *Gateway) fromPrincipal(req *rvp.Request, reqHost string) (string, events.User, *projections.Domain, error) {
	v := strings.TrimSpace(req.Header.Get(rvp.HdrFromPrincipal))
	if v == "" {
		return "", events.User{}, nil, nil
	}
	if !strings.Contains(v, "://") {
		h, err := rvp.NormalizeHost(v)
		if err != nil {
			return "", events.User{}, nil, refuse(rvp.StatusBadRequest, "RVP-From-Principal %q is neither a principal URL nor a server name", v)
		}
		return h, events.User{}, nil, nil
	}
	u, err := rvp.ParseURL(v)
	if err != nil {
		return "", events.User{}, nil, refuse(rvp.StatusBadRequest, "RVP-From-Principal: %v", err)
	}
	user, dom, err := g.localUser(u, reqHost)
	if err != nil {
		return "", events.User{}, nil, err
	}
	return u.String(), user, dom, nil
}

// domainOf returns the IM domain a host names, falling back to the
// development domain.
func (g *Gateway) domainOf(host string) (*projections.Domain, error) {
	dom, err := g.cfg.Directory.DomainByHost(host)
	if err != nil || dom != nil {
		return dom, err
	}
	if g.cfg.DevDomain != "" {
		return g.cfg.Directory.Domain(g.cfg.DevDomain)
	}
	return nil, nil
}

// localUser returns the user of one of our IM domains a principal URL
// names (principalDomain: reqHost is the host the request was addressed
// by); zero when it names none (another organisation's principal, or a
// client's own listener).
//
// A physical URL (http://HOST/instmsg/local/<IM host>/...) names a user of
// ours only at a host of ours (a home server's, or one of the domain's):
// else it is refused, for whoever names it would have other servers (or
// other organisations) take any host for that user's.
func (g *Gateway) localUser(u rvp.URL, reqHost string) (events.User, *projections.Domain, error) {
	ref, err := rvp.ParseNodePath(u.Path)
	if err != nil {
		return events.User{}, nil, nil
	}
	host := u.Host
	if ref.IMHost != "" {
		host = ref.IMHost
	}
	dom, err := g.principalDomain(host, reqHost)
	if err != nil || dom == nil {
		return events.User{}, nil, err
	}
	if ref.IMHost != "" {
		ours, err := g.ourHost(u.Host, reqHost)
		if err != nil {
			return events.User{}, nil, err
		}
		if !ours {
			g.counters.forged.Add(1)
			return events.User{}, nil, refuse(rvp.StatusForbidden, "%s names %s of IM domain %s at %s, which is none of its home servers' hosts", u, ref.Alias, dom.Domain, u.Host)
		}
	}
	return events.NewUser(dom.Domain, ref.Alias), dom, nil
}

// ourHost reports whether host is a home server's host, port and all (an
// absent port and port 80 being the same), or one of our IM domains'
// (principalDomain).
func (g *Gateway) ourHost(host, reqHost string) (bool, error) {
	if hs, err := g.homeServerByHost(host); err != nil || hs != nil {
		return hs != nil, err
	}
	dom, err := g.principalDomain(host, reqHost)
	return dom != nil, err
}

// homeServerByHost returns the home server whose host is host, port and
// all (an absent port and port 80 being the same); nil when none's.
func (g *Gateway) homeServerByHost(host string) (*projections.HomeServer, error) {
	host = strings.ToLower(host)
	same := []string{host}
	if name, port, err := net.SplitHostPort(host); err != nil {
		same = append(same, net.JoinHostPort(strings.Trim(host, "[]"), "80"))
	} else if port == "80" {
		same = append(same, name)
		if strings.Contains(name, ":") {
			same = append(same, "["+name+"]")
		}
	}
	for _, h := range same {
		if hs, err := g.cfg.Directory.HomeServerByHost(h); err != nil || hs != nil {
			return hs, err
		}
	}
	return nil, nil
}

// resolveTarget finds the node a request addresses. A host no IM domain
// answers to becomes a lookup for the routers (another organisation's
// node: target nil); so does a logical URL addressed to a router that the
// routing policy says to redirect this client from (target set). Physical
// URLs, home server hosts, proxied clients and domains without routers
// are served here. hops is the request's RVP-Hop-Count (hopCount).
func (g *Gateway) resolveTarget(req *rvp.Request, hops int, from, client string) (*target, *events.Lookup, error) {
	host, path := req.Header.Get("Host"), req.Target
	absolute := false
	if strings.Contains(req.Target, "://") {
		u, err := rvp.ParseURL(req.Target)
		if err != nil {
			return nil, nil, refuse(rvp.StatusBadRequest, "request target: %v", err)
		}
		host, path, absolute = u.Host, u.Path, true
	}
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	ref, err := rvp.ParseNodePath(path)
	if err != nil {
		return nil, nil, refuse(rvp.StatusNotFound, "%v", err)
	}
	if host != "" {
		if host, err = rvp.NormalizeHost(host); err != nil {
			return nil, nil, refuse(rvp.StatusBadRequest, "Host: %v", err)
		}
	}
	lookupHost := host
	dom, err := (*projections.Domain)(nil), error(nil)
	if ref.IMHost != "" {
		// A physical URL names the IM host: ours only if the directory
		// knows it (or, in development, it is the host addressed).
		lookupHost = ref.IMHost
		dom, err = g.principalDomain(lookupHost, host)
	} else {
		dom, err = g.domainOf(lookupHost)
	}
	if err != nil {
		return nil, nil, err
	}
	if dom == nil {
		if lookupHost == "" {
			// Nobody's node: no host to look up, here or anywhere.
			return nil, nil, refuse(rvp.StatusBadRequest, "the request names no host: send Host with the host of the node's URL (%s)", path)
		}
		return nil, lookupOf(req, hops, lookupHost, ref.Alias, path), nil
	}
	user := events.NewUser(dom.Domain, ref.Alias)
	rec, err := g.cfg.Directory.User(user)
	if err != nil {
		return nil, nil, err
	}
	if rec == nil || !rec.Enabled {
		return nil, nil, refuse(rvp.StatusNotFound, "%s is not a user of IM domain %s", ref.Alias, dom.Domain)
	}
	t := &target{user: user, rec: rec, domain: dom}
	switch {
	case ref.IMHost != "":
		// A user moved away: its old physical URL redirects to the new one.
		if hs, err := g.cfg.Directory.HomeServerByHost(host); err != nil {
			return nil, nil, err
		} else if hs != nil && hs.Name != rec.Home {
			if now, err := g.cfg.Directory.HomeServer(rec.Home); err == nil && now != nil {
				t.movedTo = rvp.PhysicalURL(now.Host, ref.IMHost, ref.Alias)
			}
		}
		// A physical URL: the client knows the node by its logical URL,
		// with the host it knows the domain by (its own principal's, as
		// librvp, which follows a redirect with the path only, compares
		// d:href with the URLs it built).
		t.nodeURL = rvp.LogicalURL(ref.IMHost, ref.Alias)
		if fu, err := rvp.ParseURL(from); err == nil && from != "" {
			if fd, err := g.principalDomain(fu.Host, host); err == nil && fd != nil && fd.Domain == dom.Domain {
				t.nodeURL = rvp.URL{Host: fu.Host, Path: aliasPath(path)}.String()
			}
		}
	default:
		if host == "" {
			host = dom.IMHost
		}
		// librvp sends Host without the port its principal URL has: take
		// the port from RVP-From-Principal when it names the same host.
		if !absolute && !strings.Contains(host, ":") && from != "" {
			if fu, err := rvp.ParseURL(from); err == nil && fu.Hostname() == host {
				host = fu.Host
			}
		}
		t.nodeURL = rvp.URL{Host: host, Path: strings.TrimRight(path, "/")}.String()
		redirect, router, err := g.redirects(dom, host, client)
		if err != nil {
			return nil, nil, err
		}
		if redirect {
			return t, lookupOf(req, hops, host, ref.Alias, path), nil
		}
		t.router = router
	}
	return t, nil, nil
}

// aliasPath returns the /instmsg/aliases/<alias> tail of a node path, as
// sent.
func aliasPath(path string) string {
	path = strings.TrimRight(path, "/")
	if i := strings.LastIndex(strings.ToLower(path), "/instmsg/aliases/"); i >= 0 {
		return path[i:]
	}
	return path
}

// redirects reports whether the routing policy sends this client to the
// home server (302) rather than serving it here: when the request names a
// router of a domain that has routers (not a home server's own host), and
// the router redirects every client, or redirects clients inside the
// firewall topology and this one is. It also returns the router's name
// (for a router's host; "" for a home server's).
func (g *Gateway) redirects(dom *projections.Domain, host, client string) (bool, string, error) {
	if hs, err := g.cfg.Directory.HomeServerByHost(host); err != nil || hs != nil {
		return false, "", err
	}
	routers, err := g.cfg.Directory.RoutersOf(dom.Domain)
	if err != nil || len(routers) == 0 {
		return false, "", err // a combined router and home server
	}
	r := routers[0]
	for _, x := range routers {
		if strings.EqualFold(x.Host, host) || strings.EqualFold(x.Host, events.Hostname(host)) {
			r = x
		}
	}
	switch r.Mode {
	case events.RouterRedirect:
		return true, r.Name, nil
	case events.RouterProxy:
		return false, r.Name, nil
	}
	in, err := g.inside(client)
	return in, r.Name, err
}

// requestEvent turns a parsed request into its request event, refusing
// what is malformed, and Call-Backs the server will not connect to
// (checkCallBack), before anything is appended. hops is its RVP-Hop-Count
// (hopCount); reqHost is the host the request was addressed by; foreign
// says another organisation speaks.
func (g *Gateway) requestEvent(req *rvp.Request, base events.Req, hops int, reqHost string, foreign bool) (events.Request, error) {
	h := req.Header
	switch req.Method {
	case "SUBSCRIBE":
		lifetime, err := optionalInt(h, rvp.HdrLifetime)
		if err != nil {
			return nil, err
		}
		if h.Has(rvp.HdrSubscriptionID) {
			id, err := subscriptionID(h)
			if err != nil {
				return nil, err
			}
			return &events.Renew{Req: base, ID: id, Lifetime: lifetime}, nil
		}
		nt, cb := h.Get(rvp.HdrNotificationType), h.Get(rvp.HdrCallBack)
		if nt == "" || cb == "" {
			return nil, refuse(rvp.StatusBadRequest, "a new subscription needs Notification-Type and Call-Back; a renewal needs Subscription-Id")
		}
		cbURL, err := rvp.ParseURL(cb)
		if err != nil {
			return nil, refuse(rvp.StatusBadRequest, "Call-Back: %v", err)
		}
		cbUser, _, err := g.localUser(cbURL, reqHost)
		if err != nil {
			return nil, err
		}
		if err := g.checkCallBack(cbURL, cbUser, &base, foreign, nt); err != nil {
			return nil, err
		}
		return &events.Subscribe{Req: base, NotificationType: nt, CallBack: cbURL.String(), CallBackUser: cbUser, Lifetime: lifetime}, nil
	case "UNSUBSCRIBE":
		id, err := subscriptionID(h)
		if err != nil {
			return nil, err
		}
		return &events.Unsubscribe{Req: base, ID: id}, nil
	case "SUBSCRIPTIONS":
		return &events.ListSubscriptions{Req: base, NotificationType: h.Get(rvp.HdrNotificationType)}, nil
	case "PROPFIND":
		if d := strings.TrimSpace(h.Get(rvp.HdrDepth)); d != "0" {
			return nil, refuse(rvp.StatusPreconditionFailed, "PROPFIND needs Depth: 0 (got %q)", d)
		}
		all, names, props, err := rvp.ParsePropFind(req.Body)
		if err != nil {
			return nil, refuse(rvp.StatusBadRequest, "%v", err)
		}
		return &events.PropFind{Req: base, All: all, Names: names, Props: props}, nil
	case "PROPPATCH":
		state, other, err := rvp.ParsePropertyUpdate(req.Body)
		if err != nil {
			return nil, refuse(rvp.StatusBadRequest, "%v", err)
		}
		return &events.PropPatch{Req: base, State: state, Set: other}, nil
	case "ACL":
		if len(bytes.TrimSpace(req.Body)) == 0 {
			return &events.ACL{Req: base}, nil
		}
		aces, err := rvp.ParseACL(req.Body)
		if err != nil {
			return nil, refuse(rvp.StatusBadRequest, "%v", err)
		}
		for i := range aces {
			if u, err := rvp.ParseURL(aces[i].Principal); err == nil {
				if aces[i].User, _, err = g.localUser(u, reqHost); err != nil {
					return nil, err
				}
			}
		}
		return &events.ACL{Req: base, Write: true, ACEs: aces}, nil
	case "NOTIFY":
		// The body was checked before (checkNotification).
		return &events.Notify{Req: base, AckType: h.Get(rvp.HdrAckType), HopCount: hops, Body: req.Body}, nil
	}
	return nil, refuse(rvp.StatusNotImplemented, "%s is not implemented", req.Method)
}

func subscriptionID(h rvp.Header) (int32, error) {
	v := strings.TrimSpace(h.Get(rvp.HdrSubscriptionID))
	id, err := strconv.ParseInt(v, 10, 32)
	if err != nil || id <= 0 {
		return 0, refuse(rvp.StatusBadRequest, "Subscription-Id %q is not a positive integer", v)
	}
	return int32(id), nil
}

func optionalInt(h rvp.Header, name string) (int, error) {
	v := strings.TrimSpace(h.Get(name))
	if v == "" {
		return 0, nil
	}
	// Saturating: a lifetime above any the server grants is clamped by
	// the home node, never wrapped around (9223372037 s would overflow a
	// time.Duration).
	n, err := rvp.ParseCount(v)
	if err != nil {
		return 0, refuse(rvp.StatusBadRequest, "%s %q is not a non-negative integer", name, v)
	}
	return n, nil
}

// render turns a reply into the RVP response for req (through respond).
func render(req *rvp.Request, r *events.Reply) *rvp.Response {
	if r.Raw != nil {
		// Another organisation's answer, relayed as it came.
		resp := &rvp.Response{Status: r.Raw.Status, Body: r.Raw.Body}
		for _, h := range []string{rvp.HdrSubscriptionID, rvp.HdrLifetime, rvp.HdrContentType, rvp.HdrLocation} {
			if v := r.Raw.Header[h]; v != "" {
				resp.Set(h, v)
			}
		}
		return resp
	}
	resp := &rvp.Response{Status: r.Status}
	if r.SubscriptionID != 0 {
		resp.Set(rvp.HdrSubscriptionID, strconv.Itoa(int(r.SubscriptionID)))
	}
	if r.Lifetime != 0 {
		resp.Set(rvp.HdrLifetime, strconv.Itoa(r.Lifetime))
	}
	if r.Location != "" {
		resp.Set(rvp.HdrLocation, r.Location)
	}
	if r.RetryAfter > 0 {
		resp.Set(rvp.HdrRetryAfter, strconv.Itoa(r.RetryAfter))
	}
	switch {
	case r.Status == rvp.StatusMultiStatus && r.Lease != nil:
		resp.Body = rvp.LeaseMultistatus(r.Href, *r.Lease, r.Found, r.Forbidden)
	case r.Status == rvp.StatusMultiStatus:
		resp.Body = rvp.Multistatus(r.Href, r.Found, r.Missing, r.Forbidden)
	case r.Listed:
		resp.Body = rvp.Subscriptions(r.Subscriptions)
	case r.HasACL:
		resp.Body = rvp.ACL(r.ACL)
	case r.Error != "":
		textBody(resp, r.Error)
		return resp
	}
	if len(resp.Body) > 0 {
		resp.Set(rvp.HdrContentType, rvp.ContentTypeXML)
	}
	return resp
}

// logRequest logs the request line of req, answered with resp; err is
// the error the gateway answered by itself (handle), said with it. Each
// request is logged once at Info or above: a refusal logged where it was
// made (refusal.logged) is logged here at Debug.
func (g *Gateway) logRequest(req *rvp.Request, resp *rvp.Response, client string, took time.Duration, err error) {
	level := slog.LevelDebug
	var rf *refusal
	refused := errors.As(err, &rf)
	switch {
	case refused && rf.logged:
	case err != nil && !refused:
		level = slog.LevelError // the service failed to carry it out
	case resp.Status >= rvp.StatusInternalError:
		level = slog.LevelWarn
	case resp.Status >= rvp.StatusBadRequest && resp.Status != rvp.StatusUnauthorized && resp.Status != rvp.StatusPreconditionFailed && resp.Status != rvp.StatusNotFound:
		level = slog.LevelInfo
	}
	if !g.log.Enabled(context.Background(), level) {
		return
	}
	attrs := []any{"method", req.Method, "target", req.Target, "client", client, "status", resp.Status, "took", took}
	if err != nil {
		attrs = append(attrs, "err", err)
	}
	g.log.Log(context.Background(), level, "request", attrs...)
}
