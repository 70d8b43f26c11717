package gateway

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
	"github.com/rvp-im/rvpd/rvp"
)

// The gateway's trust boundaries: who may speak and as whom, where a
// Call-Back may point, and each sender's share. Everything here refuses a
// request before anything is appended.
//
//   - A request speaks for a user of ours only with that user's
//     credentials; a request without RVP-From-Principal speaks for whoever
//     authenticated. Without credentials, only another organisation's
//     principal may speak (RVP-From-Principal naming a principal or
//     server of an IM host that is not ours, by name, not address, nor
//     a name of ours: OurHost), only when this organisation federates,
//     and only as the ACL's assertion rules allow (the home node judges
//     those).
//   - A message's body says who it is from and to: its sender must be who
//     speaks, and one of its recipients the node it is sent to.
//   - A Call-Back is a user of ours (its home server delivers), the
//     requesting principal of another organisation itself, or a client's
//     listener the CallbackPolicy allows.

// requestHost returns the host a request was addressed by: its
// absolute-form target's, else its Host header's; "" when it has none
// that parses (resolveTarget says why).
func requestHost(req *rvp.Request) string {
	host := req.Header.Get("Host")
	if strings.Contains(req.Target, "://") {
		if u, err := rvp.ParseURL(req.Target); err == nil {
			return u.Host
		}
		return ""
	}
	h, err := rvp.NormalizeHost(host)
	if err != nil {
		return ""
	}
	return h
}

// principalDomain returns the IM domain of a principal's host: one the
// directory knows. In development, where any host the request is
// addressed by reaches the demo domain, so do principals of that host and
// of a bare address or localhost (clients build their URL from the host
// or address they reach the server by); other names are other
// organisations', known by their IM hosts' names.
func (g *Gateway) principalDomain(host, reqHost string) (*projections.Domain, error) {
	dom, err := g.cfg.Directory.DomainByHost(host)
	if err != nil || dom != nil || g.cfg.DevDomain == "" {
		return dom, err
	}
	name := strings.ToLower(events.Hostname(host))
	_, ipErr := netip.ParseAddr(strings.Trim(name, "[]"))
	if ipErr == nil || name == "localhost" || (reqHost != "" && name == strings.ToLower(events.Hostname(reqHost))) {
		return g.cfg.Directory.Domain(g.cfg.DevDomain)
	}
	return nil, nil
}

// sameOrganisation reports whether two hosts (with or without port) name
// the same organisation: the same name, one perhaps with the "im." of an
// IM host.
func sameOrganisation(a, b string) bool {
	return events.Organisation(a) != "" && events.Organisation(a) == events.Organisation(b)
}

// samePrincipal reports whether a principal URL and a RVP-From-Principal
// value name the same principal.
func samePrincipal(u rvp.URL, from string) bool {
	f, err := rvp.ParseURL(from)
	if err != nil || !strings.EqualFold(u.Host, f.Host) {
		return false
	}
	a, errA := rvp.ParseNodePath(u.Path)
	b, errB := rvp.ParseNodePath(f.Path)
	return errA == nil && errB == nil && a == b
}

// foreignAllowed refuses a request of another organisation's principal or
// server (from) when this organisation does not federate, when from is
// an address or a local name rather than another organisation's, or when
// its host is ours (projections.Directory.OurHost).
func (g *Gateway) foreignAllowed(from, client string) error {
	s, err := g.cfg.Directory.Settings()
	if err != nil {
		return err
	}
	host := from
	if u, err := rvp.ParseURL(from); err == nil {
		host = u.Host
	}
	if !s.InternetCapable {
		// Perhaps one of ours whose client names the server otherwise.
		g.log.Info("request from another organisation refused: intranet-only", "from", from, "client", client)
		return logged(refuse(rvp.StatusForbidden, "this organisation does not exchange instant messages with other organisations (%s): %s is a host of none of its IM domains (rvpctl domain list shows their hosts; a client that reaches this server by another name needs that name among them: rvpctl domain hosts DOMAIN -add %s)", from, host, events.Hostname(host)))
	}
	name := strings.ToLower(strings.TrimSuffix(events.Hostname(host), "."))
	if _, err := netip.ParseAddr(strings.Trim(name, "[]")); err == nil {
		g.counters.forged.Add(1)
		return refuse(rvp.StatusForbidden, "RVP-From-Principal %s names an address: other organisations are known by the names of their IM hosts (if it is a host of ours, give it to its IM domain: rvpctl domain hosts DOMAIN -add %s)", from, name)
	}
	if !strings.Contains(name, ".") || name == "localhost" || strings.HasSuffix(name, ".localhost") {
		// A name of this network, not of another organisation on the
		// Internet: its server would be reached inside.
		g.counters.forged.Add(1)
		return refuse(rvp.StatusForbidden, "RVP-From-Principal %s names a host of a local network: other organisations are known by the fully qualified names of their IM hosts", from)
	}
	// A host of ours that is no IM domain's (a home server's, a
	// router's, a name under one of our IM domains' or e-mail domains'
	// names, or under -federation.internal): its principals are ours,
	// who speak with credentials, never another organisation's, who
	// speak without. Taken for another organisation's, one could speak
	// for a principal of ours, and have our home nodes send presence to
	// our own network (its Call-Back), through the outbound proxy as to
	// another organisation.
	ours, err := g.cfg.Directory.OurHost(host, g.cfg.Own)
	if err != nil {
		return err
	}
	if ours.What != "" {
		g.counters.forged.Add(1)
		g.log.Info("principal at a host of ours refused without credentials: "+ours.Fix, "from", from, "host", name, "ours", ours.What, "client", client)
		return logged(refuse(rvp.StatusForbidden, "RVP-From-Principal %s names a host of ours, not another organisation's: %s is %s. Principals of ours are named by their IM domain's hosts and sign in; %s", from, name, ours.What, ours.Fix))
	}
	return nil
}

// checkNotification holds a NOTIFY's body to its request: its one sender
// (r:notification-from) is who speaks (the authenticated user; for another
// organisation, the principal RVP-From-Principal names, or a principal of
// the server it names), and one of its recipients (r:notification-to) is
// the node it is sent to (tgt, or another organisation's node, lk).
func (g *Gateway) checkNotification(n *rvp.Notification, user events.User, foreignFrom string, tgt *target, lk *events.Lookup, reqHost string) error {
	if len(n.From) != 1 {
		return refuse(rvp.StatusForbidden, "the notification names %d senders (r:notification-from); it must name one, its sender", len(n.From))
	}
	sender, err := rvp.ParseURL(n.From[0])
	if err != nil {
		return refuse(rvp.StatusForbidden, "the notification's sender (r:notification-from) %q is not a principal's URL", n.From[0])
	}
	if foreignFrom == "" {
		u, _, err := g.localUser(sender, reqHost)
		if err != nil {
			return err
		}
		if u != user {
			return refuse(rvp.StatusForbidden, "the notification says it is from %s (r:notification-from), and you authenticated as %s", sender, user)
		}
	} else {
		// A physical URL names a user of ours only at a host of ours,
		// whoever sends it: at another organisation's host it would show
		// the message as from one of ours (localUser refuses it).
		if _, _, err := g.localUser(sender, reqHost); err != nil {
			return err
		}
		if !g.foreignSender(sender, foreignFrom, reqHost) {
			return refuse(rvp.StatusForbidden, "the notification says it is from %s (r:notification-from), which is not %s (RVP-From-Principal)", sender, foreignFrom)
		}
	}
	node := ""
	switch {
	case tgt != nil:
		node = tgt.user.String()
	case lk != nil:
		node = rvp.LogicalURL(lk.Host, lk.Alias)
	}
	for _, h := range n.To {
		u, err := rvp.ParseURL(h)
		if err != nil {
			continue
		}
		if tgt != nil {
			lu, _, err := g.localUser(u, reqHost)
			if err != nil {
				return err
			}
			if lu == tgt.user {
				return nil
			}
		} else if lk != nil {
			if ref, err := rvp.ParseNodePath(u.Path); err == nil && ref.Alias == lk.Alias && sameOrganisation(u.Host, lk.Host) {
				return nil
			}
		}
	}
	if len(n.To) == 0 {
		return refuse(rvp.StatusForbidden, "the notification names no recipient (r:notification-to); it is sent to %s", node)
	}
	return refuse(rvp.StatusForbidden, "the notification is addressed to %s (r:notification-to), not to %s, the node it was sent to", strings.Join(n.To, ", "), node)
}

// foreignSender reports whether sender may be the sender of a
// notification another organisation's from sends: from itself, or a
// principal of the server from names; never a principal of ours.
func (g *Gateway) foreignSender(sender rvp.URL, from, reqHost string) bool {
	if dom, err := g.principalDomain(sender.Host, reqHost); err != nil || dom != nil {
		return false
	}
	ref, err := rvp.ParseNodePath(sender.Path)
	if err != nil {
		return false
	}
	if !strings.Contains(from, "://") {
		return sameOrganisation(from, sender.Host) // a server speaks for its principals
	}
	f, err := rvp.ParseURL(from)
	if err != nil {
		return false
	}
	fref, err := rvp.ParseNodePath(f.Path)
	return err == nil && fref.Alias == ref.Alias && sameOrganisation(f.Host, sender.Host)
}

// checkCallBack judges a new subscription's Call-Back (cb): a user of
// ours (cbUser) is delivered to by its home server, which judges who may
// name it; another organisation's principal only by that principal
// itself; a client's listener only where the CallbackPolicy allows. A
// login subscription's (pragma/notify) Call-Back is always a client's
// listener, which the home server connects to as written, whatever path
// it has: the CallbackPolicy judges it.
func (g *Gateway) checkCallBack(cb rvp.URL, cbUser events.User, base *events.Req, foreign bool, kind string) error {
	login := strings.EqualFold(kind, events.NotifyPragma)
	switch {
	case login && foreign:
		// Only a node's owner, or a user of ours with its rights, logs in
		// to it: a client's address is nothing another organisation's
		// principal, unauthenticated, may name.
		g.counters.callBacksRefused.Add(1)
		return refuse(rvp.StatusForbidden, "another organisation's principal (RVP-From-Principal %s) does not log in to a node here (pragma/notify): it subscribes to its properties (update/propchange) with its own URL as Call-Back", base.From)
	case login:
	case !cbUser.IsZero():
		return nil
	case rvp.IsNodeURL(cb):
		if foreign && samePrincipal(cb, base.From) {
			return nil
		}
		g.counters.callBacksRefused.Add(1)
		return refuse(rvp.StatusForbidden, "Call-Back %s is another organisation's principal: only that principal subscribes with it (its own server then delivers to its clients)", cb)
	case foreign:
		g.counters.callBacksRefused.Add(1)
		return refuse(rvp.StatusForbidden, "Call-Back %s: another organisation's principal subscribes with its own URL as Call-Back (RVP-From-Principal %s), not with an address", cb, base.From)
	}
	client, _ := netip.ParseAddr(base.Client)
	g.cbMu.RLock()
	err := g.callBacks.Check(cb, client)
	g.cbMu.RUnlock()
	if err == nil {
		return nil
	}
	g.counters.callBacksRefused.Add(1)
	g.log.Info("Call-Back refused", "callback", cb.String(), "client", base.Client, "from", base.From, "err", err)
	status := rvp.StatusForbidden
	if errors.Is(err, rvp.ErrCallBackMalformed) {
		status = rvp.StatusBadRequest
	}
	return logged(refuse(status, "%v", err))
}

// checkForeignCallBack judges the Call-Back of a subscription to another
// organisation's node, which that organisation will connect to: a user of
// ours subscribes with its own URL, whose home server (here) delivers to
// its clients.
func (g *Gateway) checkForeignCallBack(req *rvp.Request, user events.User, reqHost string) error {
	cb := req.Header.Get(rvp.HdrCallBack)
	if req.Method != "SUBSCRIBE" || cb == "" || req.Header.Has(rvp.HdrSubscriptionID) {
		return nil
	}
	u, err := rvp.ParseURL(cb)
	if err != nil {
		return refuse(rvp.StatusBadRequest, "Call-Back: %v", err)
	}
	cbUser, _, err := g.localUser(u, reqHost)
	if err != nil {
		return err
	}
	if cbUser.IsZero() || cbUser != user {
		g.counters.callBacksRefused.Add(1)
		return refuse(rvp.StatusForbidden, "Call-Back %s: a subscription to another organisation's node names your own URL (%s) as Call-Back; your home server delivers to your clients", cb, user)
	}
	return nil
}

// checkHandedOut judges the URLs of ours a request to another
// organisation's node hands it (RVP-From-Principal, a Call-Back, the
// sender of notification n, if any), which it will connect to: each must
// name our host at a port of ours (ourPort), not at one a client chose.
func (g *Gateway) checkHandedOut(req *rvp.Request, n *rvp.Notification, c *conn, from, reqHost string) error {
	urls := []string{from, req.Header.Get(rvp.HdrCallBack)}
	if n != nil {
		urls = append(urls, n.From...)
	}
	for _, v := range urls {
		if !strings.Contains(v, "://") {
			continue // a server's name, or nothing
		}
		u, err := rvp.ParseURL(v)
		if err != nil {
			continue // refused elsewhere
		}
		dom, err := g.principalDomain(u.Host, reqHost)
		if err != nil {
			return err
		}
		if dom == nil {
			continue // another organisation's
		}
		_, port, err := net.SplitHostPort(u.Host)
		if err != nil {
			continue // no port (ParseURL drops port 80)
		}
		ours, err := g.ourPort(u.Host, port, c)
		if err != nil {
			return err
		}
		if !ours {
			g.counters.forged.Add(1)
			return refuse(rvp.StatusForbidden, "%s, sent to another organisation, names our host at port %s, which is not a port of ours (none, 80, this gateway's, or a home server's host and port in the directory); name it without a port", u, port)
		}
	}
	return nil
}

// ourPort reports whether host, of ours and naming port, names a port of
// ours: 80, the port of the listener c came in on, or a home server's
// host and port exactly. Not the port of the request's Host, which the
// client writes.
func (g *Gateway) ourPort(host, port string, c *conn) (bool, error) {
	if port == "80" {
		return true, nil
	}
	p := port
	if c != nil {
		if a, ok := c.nc.LocalAddr().(*net.TCPAddr); ok && strconv.Itoa(a.Port) == p {
			return true, nil
		}
	}
	hs, err := g.cfg.Directory.HomeServerByHost(strings.ToLower(host))
	return hs != nil, err
}

// limit charges a request to its sender's share (SenderLimits): the
// authenticated user, else the client's network (events.SenderNetwork).
// kept is what it draws on the bytes a day (kept).
func (g *Gateway) limit(req *rvp.Request, identity events.Identity, client string, bytes, kept int) error {
	key, anonymous := senderKey(identity, client)
	wait, what, ok := g.limiter.allow(key, anonymous, req.Method == "NOTIFY", bytes, kept, g.now())
	if ok {
		return nil
	}
	g.counters.rateLimited.Add(1)
	who := client
	if !anonymous {
		who = identity.User.String()
	}
	return &refusal{status: rvp.StatusTooManyRequests, retryAfter: wait,
		msg: fmt.Sprintf("%s has sent more %s than its share at this server; retry in %s", who, what, wait.Round(time.Millisecond))}
}

// senderKey is whose share a request is charged to: the authenticated
// user, else the client's network (anonymous).
func senderKey(identity events.Identity, client string) (key string, anonymous bool) {
	if identity.User.IsZero() {
		return "addr " + events.SenderNetwork(client), true
	}
	return "user " + identity.User.String(), false
}

// keepMore charges a request's sender's bytes a day with what its
// decision kept beyond its body (reply.Kept), which limit charged.
func (g *Gateway) keepMore(identity events.Identity, client string, body int, reply *events.Reply) {
	if reply != nil && reply.Kept > body {
		key, anonymous := senderKey(identity, client)
		g.limiter.keep(key, anonymous, reply.Kept-body, g.now())
	}
}

// kept is what request event ev, of a body of bytes, draws on its
// sender's bytes a day: the body and requestOverhead when a home node's
// decision of it may leave facts, which are kept for the audit (a
// renewal's, bodiless, some 650 bytes); nothing for a read, which keeps
// nothing.
func kept(ev events.Request, bytes int) int {
	switch e := ev.(type) {
	case *events.PropFind, *events.ListSubscriptions:
		return 0
	case *events.ACL:
		if !e.Write {
			return 0
		}
	}
	return bytes + requestOverhead
}

// retryAfter renders a wait as Retry-After's whole seconds, at least 1.
func retryAfter(d time.Duration) string {
	return fmt.Sprint(max(1, int(math.Ceil(d.Seconds()))))
}
