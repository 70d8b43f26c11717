package routernode

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
	"github.com/rvp-im/rvpd/rvp"
)

// SRVResolver looks up DNS SRV records; *net.Resolver is one, and tests
// give a static table.
type SRVResolver interface {
	LookupSRV(ctx context.Context, service, proto, name string) (string, []*net.SRV, error)
}

// PeerTable maps an IM domain or IM host of another organisation to the
// host:port of its router.
type PeerTable interface {
	Peer(host string) (string, bool)
}

// StaticPeers is a peer table written in configuration.
type StaticPeers map[string]string

// Peer implements PeerTable.
func (p StaticPeers) Peer(host string) (string, bool) { a, ok := p[host]; return a, ok }

// Config configures a Router.
type Config struct {
	// ID names the router in logs. Required.
	ID string
	// JetStream and Conn reach the cluster. Required.
	JetStream jetstream.JetStream
	Conn      *nats.Conn
	// Directory is the directory projection. Required.
	Directory *projections.Directory
	// Client sends requests to other organisations. Default: an rvp.Client
	// with its defaults (set its Proxy for an outbound HTTP proxy).
	Client *rvp.Client
	// Peers is the federation peer table: it maps an IM domain or IM host
	// of another organisation to host:port of its router.
	Peers PeerTable
	// SRV, when set, finds other organisations' routers not in Peers by
	// the DNS record _rvp._tcp.<domain>. Nil: peer table only.
	SRV SRVResolver
	// Discovered, when set, guards the connections to a router found by
	// SRV (and to where it redirects) instead of Client's Guard: whoever
	// controls another domain's DNS chooses those addresses
	// (rvp.CallbackPolicy.Discovered: public ones only).
	Discovered func(netip.AddrPort) error
	// Internal are DNS suffixes of our own network (corp.example: that
	// name and every name under it), never another organisation's: a
	// lookup of a node there is answered 404 before the proxy or DNS is
	// asked, a peer table entry notwithstanding.
	Internal []string
	// MaxHops is the highest RVP-Hop-Count forwarded. Default 8.
	MaxHops int
	// AckWait is how long a lookup may go without word from the router
	// that took it before another router gets it: a router answering
	// one tells JetStream every third of it that it still is (a
	// forwarded request may wait longer for another organisation).
	// Default 10s.
	AckWait time.Duration
	// Workers bounds the lookups answered at once (a forwarded request
	// waits for another organisation). Default 64.
	Workers int
	// Metrics, when set, count lookups, redirects and federation
	// (NewMetrics).
	Metrics *Metrics
	Logger  *slog.Logger
	Now     func() time.Time
}

// Router answers lookups: a redirect to the home server of a user of ours
// (for clients the firewall topology says to redirect), or the answer of
// another organisation's router to a request forwarded to it.
type Router struct {
	cfg Config
	log *slog.Logger
	// own is what besides the directory makes a host ours (Internal, and
	// the subsidiaries Peers names): projections.Directory.OurHost.
	own projections.OwnNames
}

// New returns a router; Run starts it.
func New(cfg Config) (*Router, error) {
	if cfg.ID == "" || cfg.JetStream == nil || cfg.Conn == nil || cfg.Directory == nil {
		return nil, errors.New("routernode: ID, JetStream, Conn and Directory are required")
	}
	if cfg.Client == nil {
		cfg.Client = &rvp.Client{}
	}
	if cfg.MaxHops <= 0 {
		cfg.MaxHops = 8
	}
	if cfg.AckWait <= 0 {
		cfg.AckWait = 10 * time.Second
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 64
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	own := projections.OwnNames{Internal: cfg.Internal}
	if cfg.Peers != nil {
		own.Peered = func(host string) bool { return rvp.Peered(cfg.Peers, host) }
	}
	return &Router{cfg: cfg, log: log.With("router", cfg.ID), own: own}, nil
}

// ConsumerName is the durable consumer routers share: each lookup goes to
// one of them, and one a router took but did not answer goes to another
// after AckWait.
const ConsumerName = "routers"

// Run answers lookups until ctx ends; it returns nil then.
func (r *Router) Run(ctx context.Context) (err error) {
	defer func() {
		if ctx.Err() != nil {
			err = nil // stopped, whatever was under way
		}
	}()
	// Lookups are answered concurrently, at most Workers at a time: one
	// forwarded to another organisation may wait for it, and that
	// organisation may send lookups of its own our way meanwhile.
	var wg sync.WaitGroup
	defer wg.Wait()
	slots := make(chan struct{}, r.cfg.Workers)
	r.log.Info("router serving")
	// The consumer is made again whenever it cannot be made or is lost
	// (its stream's leader being elected, no meta leader for a while):
	// lookups wait in their stream meanwhile.
	wait := 50 * time.Millisecond
	for failures := 0; ; failures++ {
		err := r.consume(ctx, &wg, slots)
		if ctx.Err() != nil {
			return nil
		}
		if failures == 0 || failures%20 == 0 {
			r.log.Warn("lookups not consumed; consuming them again", "err", err, "failures", failures+1)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// consume takes lookups through the routers' shared consumer until ctx
// ends or the consumer fails.
func (r *Router) consume(ctx context.Context, wg *sync.WaitGroup, slots chan struct{}) error {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	cons, err := r.cfg.JetStream.CreateOrUpdateConsumer(cctx, events.StreamLookups, jetstream.ConsumerConfig{
		Durable:       ConsumerName,
		Description:   "lookups shared by every router",
		FilterSubject: events.LookupFilter(""),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       r.cfg.AckWait,
		MaxDeliver:    5,
	})
	cancel()
	if err != nil {
		return fmt.Errorf("router %s: lookup consumer: %w", r.cfg.ID, err)
	}
	// A lookup is taken from the stream only for a worker that is free
	// to answer it at once: one that waited here (or in a client-side
	// buffer) for a worker busy with a slow organisation would be handed
	// out again after AckWait and forwarded twice. Each pull asks for as
	// many as there are free workers, and expires soon: on a cluster a
	// pull request can be lost without an error (see projections.Follow).
	for {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		free := 1
		for free < cap(slots) {
			select {
			case slots <- struct{}{}:
				free++
				continue
			default:
			}
			break
		}
		fctx, fcancel := context.WithTimeout(ctx, 5*time.Second)
		batch, err := cons.Fetch(free, jetstream.FetchContext(fctx))
		if err == nil {
			for m := range batch.Messages() {
				free--
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer func() { <-slots }()
					r.handle(ctx, m)
				}()
			}
			err = batch.Error()
		}
		fcancel()
		for range free {
			<-slots
		}
		switch {
		case ctx.Err() != nil:
			return nil
		case err == nil, errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		default:
			return fmt.Errorf("router %s: read lookups: %w", r.cfg.ID, err)
		}
	}
}

func (r *Router) handle(ctx context.Context, m jetstream.Msg) {
	ev, err := events.Decode(m.Headers().Get(events.HeaderType), m.Data())
	lk, ok := ev.(*events.Lookup)
	if err != nil || !ok {
		r.log.Error("undecodable lookup dropped", "subject", m.Subject(), "err", err)
		m.Term()
		return
	}
	if r.cfg.Now().After(lk.Deadline) {
		r.log.Warn("lookup expired before it was answered", "req", lk.ID)
		r.cfg.Metrics.lookup(resultExpired)
		m.Ack()
		return
	}
	dctx, cancel := context.WithDeadline(ctx, lk.Deadline)
	stopProgress := r.inProgress(dctx, m)
	reply := r.decide(dctx, lk)
	cancel()
	stopProgress()
	if ctx.Err() != nil {
		return // stopped: the lookup goes to another router
	}
	data, err := events.Encode(reply)
	if err == nil {
		msg := nats.NewMsg(m.Headers().Get(events.HeaderReply))
		msg.Header.Set(events.HeaderType, reply.Type())
		msg.Data = data
		if msg.Subject != "" {
			err = r.cfg.Conn.PublishMsg(msg)
		}
	}
	if err != nil {
		r.log.Warn("lookup reply not sent", "req", lk.ID, "err", err)
	}
	m.Ack()
}

// inProgress tells JetStream, every third of AckWait until ctx ends or
// the returned stop is called (which waits for it), that m is still being
// answered: a request forwarded to another organisation may wait for it
// up to the lookup's deadline, longer than AckWait, and a lookup handed
// out again meanwhile would be forwarded again (a message sent twice).
func (r *Router) inProgress(ctx context.Context, m jetstream.Msg) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(max(r.cfg.AckWait/3, 10*time.Millisecond))
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				m.InProgress()
			}
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

func fail(lk *events.Lookup, status int, format string, args ...any) *events.Reply {
	return &events.Reply{ID: lk.ID, Status: status, Error: fmt.Sprintf(format, args...)}
}

func (r *Router) decide(ctx context.Context, lk *events.Lookup) *events.Reply {
	if lk.HopCount > r.cfg.MaxHops {
		r.log.Warn("forwarding loop cut", "req", lk.ID, "host", lk.Host, "hops", lk.HopCount)
		r.cfg.Metrics.lookup(resultLoop)
		return fail(lk, rvp.StatusLoopDetected, "RVP-Hop-Count %d exceeds the limit of %d: servers are forwarding this request in a loop; check their peer tables", lk.HopCount, r.cfg.MaxHops)
	}
	dir := r.cfg.Directory
	dom, err := dir.DomainByHost(lk.Host)
	if err != nil {
		r.log.Error("directory", "err", err)
		r.cfg.Metrics.lookup(resultUnavailable)
		return fail(lk, rvp.StatusUnavailable, "the directory is unavailable; retry in a moment")
	}
	if dom != nil {
		return r.redirect(lk, dom)
	}
	// A host of ours that no IM domain answers to is nobody's IM host:
	// sent out, through the proxy or to a router DNS named, it would
	// have our own network (the wiki, a server of ours) answer a user's
	// request, and the answer would be relayed.
	ours, err := dir.OurHost(lk.Host, r.own)
	if err != nil {
		r.log.Error("directory", "err", err)
		r.cfg.Metrics.lookup(resultUnavailable)
		return fail(lk, rvp.StatusUnavailable, "the directory is unavailable; retry in a moment")
	}
	if ours.What != "" {
		r.cfg.Metrics.lookup(resultNotFound)
		r.log.Warn("a node at a host of ours that no IM domain answers to is not sent to another organisation: "+ours.Fix,
			"req", lk.ID, "host", lk.Host, "ours", ours.What, "method", lk.Method)
		return fail(lk, rvp.StatusNotFound, "%s is no IM host: it is %s, and no IM domain of this organisation answers to it", lk.Host, ours.What)
	}
	settings, err := dir.Settings()
	if err != nil {
		r.cfg.Metrics.lookup(resultUnavailable)
		return fail(lk, rvp.StatusUnavailable, "the directory is unavailable; retry in a moment")
	}
	if !settings.InternetCapable {
		r.cfg.Metrics.lookup(resultForbidden)
		return fail(lk, rvp.StatusForbidden, "%s belongs to another organisation, and this one is intranet-only (rvpctl federation set on)", lk.Host)
	}
	return r.forward(ctx, lk)
}

// redirect answers 302 with the physical URL of a user of ours on its
// home server.
func (r *Router) redirect(lk *events.Lookup, dom *projections.Domain) *events.Reply {
	dir := r.cfg.Directory
	u := events.NewUser(dom.Domain, lk.Alias)
	rec, err := dir.User(u)
	if err != nil {
		r.cfg.Metrics.lookup(resultUnavailable)
		return fail(lk, rvp.StatusUnavailable, "the directory is unavailable; retry in a moment")
	}
	if rec == nil || !rec.Enabled {
		r.cfg.Metrics.lookup(resultNotFound)
		return fail(lk, rvp.StatusNotFound, "%s is not a user of IM domain %s", lk.Alias, dom.Domain)
	}
	home, err := dir.HomeServer(rec.Home)
	if err != nil || home == nil {
		r.cfg.Metrics.lookup(resultUnavailable)
		return fail(lk, rvp.StatusUnavailable, "home server %s of %s is not in the directory", rec.Home, u)
	}
	r.cfg.Metrics.lookup(resultRedirected)
	if r.cfg.Metrics != nil {
		r.cfg.Metrics.redirect(r.routerOf(dom.Domain, lk.Host))
	}
	return &events.Reply{ID: lk.ID, Status: rvp.StatusMoved, Location: rvp.PhysicalURL(home.Host, dom.IMHost, u.Alias)}
}

// routerOf names the directory's router of domain that host addresses,
// "" when none does.
func (r *Router) routerOf(domain, host string) string {
	routers, err := r.cfg.Directory.RoutersOf(domain)
	if err != nil {
		return ""
	}
	for _, x := range routers {
		if strings.EqualFold(x.Host, host) || strings.EqualFold(x.Host, events.Hostname(host)) {
			return x.Name
		}
	}
	return ""
}

// peer finds the router of the organisation host belongs to: the peer
// table by host, then by the domain under an "im." host, then DNS SRV.
func (r *Router) peer(ctx context.Context, host string) (addr string, discovered bool, err error) {
	keys := rvp.PeerKeys(host)
	name, domain := keys[1], keys[2]
	for _, k := range keys {
		if r.cfg.Peers == nil {
			break
		}
		if a, ok := r.cfg.Peers.Peer(k); ok {
			return a, false, nil
		}
	}
	if r.cfg.SRV == nil {
		return "", false, fmt.Errorf("%s is in no peer table entry and DNS discovery is off", host)
	}
	for _, d := range []string{domain, name} {
		_, srvs, err := r.cfg.SRV.LookupSRV(ctx, "rvp", "tcp", d)
		if err == nil && len(srvs) > 0 {
			return net.JoinHostPort(strings.TrimSuffix(srvs[0].Target, "."), strconv.Itoa(int(srvs[0].Port))), true, nil
		}
	}
	return "", false, fmt.Errorf("no _rvp._tcp SRV record for %s", domain)
}

// ParseInternal parses -federation.internal: DNS suffixes of our own
// network, comma-separated (corp.example,intranet.example.com), each for
// that name and every name under it, in the lower-case form Internal
// holds them in.
func ParseInternal(s string) ([]string, error) {
	var out []string
	for _, n := range strings.Split(s, ",") {
		n = strings.Trim(strings.ToLower(strings.TrimSpace(n)), ".")
		if n == "" {
			continue
		}
		if _, err := netip.ParseAddr(strings.Trim(n, "[]")); err == nil || strings.Contains(n, "/") {
			return nil, fmt.Errorf("%q: want a DNS suffix (corp.example), not an address; address ranges are -federation.allow's, and an address is never proxied unless it is public or allowed", n)
		}
		for i := 0; i < len(n); i++ {
			if c := n[i]; !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_') {
				return nil, fmt.Errorf("%q: want a DNS suffix of letters, digits, '-' and '.' (corp.example covers every name under it: no '*')", n)
			}
		}
		if strings.Contains(n, "..") {
			return nil, fmt.Errorf("%q: want a DNS suffix (corp.example)", n)
		}
		out = append(out, n)
	}
	return out, nil
}

// proxiable refuses to have the outbound proxy connect to host, which a
// signed-in user chose (its request's Host), when it is no other
// organisation's: an address outside what Discovered allows, or a name of
// the local network (localhost, a .localhost name, a name without a dot).
// The proxy would connect inside for us and the answer would be relayed;
// other organisations are known by the fully qualified names of their IM
// hosts, as the gateway holds their principals to (and without a proxy,
// neither would be found: SRV records are of names).
func (r *Router) proxiable(host string) error {
	name := strings.TrimSuffix(strings.ToLower(events.Hostname(host)), ".")
	if ip, err := netip.ParseAddr(strings.Trim(name, "[]")); err == nil {
		port, _ := strconv.Atoi(rvp.URL{Host: host}.Port())
		ap := netip.AddrPortFrom(ip.Unmap(), uint16(port))
		if r.cfg.Discovered != nil {
			return r.cfg.Discovered(ap)
		}
		return nil
	}
	if !strings.Contains(name, ".") || name == "localhost" || strings.HasSuffix(name, ".localhost") {
		return fmt.Errorf("%s is a name of the local network, not another organisation's IM host", host)
	}
	return nil
}

// dialer connects to addr what is meant for host (an IM host of another
// organisation, at the address its peer entry gives), and everything else
// (the Location of a redirect) where it names.
type dialer struct {
	host, addr string
	next       interface {
		DialContext(ctx context.Context, network, addr string) (net.Conn, error)
	}
}

func (d dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if strings.EqualFold(addr, d.host) {
		addr = d.addr
	}
	if d.next != nil {
		return d.next.DialContext(ctx, network, addr)
	}
	return rvp.NetDialer(ctx).DialContext(ctx, network, addr)
}

// relayed are the answer headers relayed from another organisation.
var relayed = []string{rvp.HdrSubscriptionID, rvp.HdrLifetime, rvp.HdrContentType, rvp.HdrLocation}

// forward sends the request to the other organisation's router, as RVP
// over HTTP, without credentials (they would mean nothing there: it judges
// our users by its ACLs' assertion rules), with RVP-Hop-Count incremented,
// and relays its answer unchanged.
//
// Through an outbound HTTP proxy, the request names the node by its
// absolute URL and the proxy finds the host, as for any web request; the
// peer table and DNS discovery are for direct connections.
func (r *Router) forward(ctx context.Context, lk *events.Lookup) *events.Reply {
	client := *r.cfg.Client
	// The router chooses the guard itself: Discovered for a router found
	// by DNS, the Client's own for a peer table entry (trusted as given).
	client.Federation = nil
	var addr string
	if client.Proxy != nil {
		addr = "proxy " + client.Proxy.Host
		if err := r.proxiable(lk.Host); err != nil {
			r.cfg.Metrics.lookup(resultNotFound)
			r.log.Warn("a node not sent to the proxy", "req", lk.ID, "host", lk.Host, "err", err)
			return fail(lk, rvp.StatusNotFound, "no route to the IM host %s: %v", lk.Host, err)
		}
	} else {
		var (
			err        error
			discovered bool
		)
		if addr, discovered, err = r.peer(ctx, lk.Host); err != nil {
			r.cfg.Metrics.lookup(resultNotFound)
			return fail(lk, rvp.StatusNotFound, "no route to the IM host %s: %v", lk.Host, err)
		}
		if discovered && r.cfg.Discovered != nil {
			client.Guard = r.cfg.Discovered
		}
		client.Dialer = dialer{host: rvp.DialAddr(lk.Host), addr: addr, next: r.cfg.Client.Dialer}
	}
	out := rvp.Outbound{Method: lk.Method, URL: rvp.URL{Host: lk.Host, Path: lk.Path}, Body: lk.Body, ReadBody: true, Redirects: 3, Foreign: true}
	for name, v := range lk.Header {
		out.Header = append(out.Header, rvp.Field{Name: name, Value: v})
	}
	hops := lk.HopCount
	if hops < 1 {
		hops = 1
	}
	out.Header = append(out.Header, rvp.Field{Name: rvp.HdrVersion, Value: rvp.Version}, rvp.Field{Name: rvp.HdrHopCount, Value: strconv.Itoa(hops + 1)})
	r.cfg.Metrics.lookup(resultForwarded)
	peer := strings.ToLower(events.Hostname(lk.Host))
	if client.Proxy != nil {
		peer = "proxy"
	}
	start := r.cfg.Now()
	ans, err := client.Do(ctx, out)
	if errors.Is(err, rvp.ErrRefusedAddress) {
		r.cfg.Metrics.forwarded(peer, 0, 0)
		r.log.Warn("another organisation's server is at an address this server does not connect to", "req", lk.ID, "host", lk.Host, "peer", addr, "err", err)
		return fail(lk, rvp.StatusNotFound, "no route to the IM host %s: %v", lk.Host, err)
	}
	if err != nil {
		r.cfg.Metrics.forwarded(peer, 0, 0)
		r.log.Warn("forwarded request unanswered", "req", lk.ID, "host", lk.Host, "peer", addr, "err", err)
		return fail(lk, rvp.StatusGatewayTimeout, "the server of %s (%s) did not answer: %v", lk.Host, addr, err)
	}
	r.cfg.Metrics.forwarded(peer, ans.Status, r.cfg.Now().Sub(start))
	raw := &events.RawAnswer{Status: ans.Status, Body: ans.Body, Header: map[string]string{}}
	if ans.Status == 204 || ans.Status == 304 {
		// No body follows these (RFC 9110 §6.4.1): one relayed would be
		// read by our client as the answer to its next request.
		raw.Body = nil
	}
	for _, h := range relayed {
		if v := ans.Header.Get(h); v != "" {
			raw.Header[h] = v
		}
	}
	r.log.Debug("forwarded", "req", lk.ID, "method", lk.Method, "host", lk.Host, "peer", addr, "status", ans.Status)
	return &events.Reply{ID: lk.ID, Status: ans.Status, Raw: raw}
}
