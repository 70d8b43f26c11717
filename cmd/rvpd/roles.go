package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/run"

	"github.com/rvp-im/rvpd/directory"
	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/gateway"
	"github.com/rvp-im/rvpd/homenode"
	"github.com/rvp-im/rvpd/projections"
	"github.com/rvp-im/rvpd/routernode"
	"github.com/rvp-im/rvpd/rvp"
)

// streamFlags are the settings that live in the cluster's streams and
// buckets, given where they are created (rvpd init, rvpd dev, a node
// that finds none).
type streamFlags struct {
	leaseTTL        time.Duration
	auditRetention  time.Duration
	requestMaxAge   time.Duration
	requestMaxBytes int64
}

func (f *streamFlags) register(fs *flag.FlagSet) {
	fs.DurationVar(&f.auditRetention, "audit.retention", 0, "how long facts are kept (0: for ever; set where the cluster's streams are created)")
	fs.DurationVar(&f.leaseTTL, "home.lease-ttl", projections.DefaultLeaseTTL, "how long a home server's owner may be silent before a standby node takes over (set where the cluster's streams are created)")
	fs.DurationVar(&f.requestMaxAge, "requests.max-age", projections.DefaultRequestMaxAge, "how long request events are kept (set where the cluster's streams are created)")
	fs.Int64Var(&f.requestMaxBytes, "requests.max-bytes", projections.DefaultRequestMaxBytes, "size bound of the requests stream, oldest dropped first (set where the cluster's streams are created)")
}

// streamOptions are the streams' settings these flags give.
func (f streamFlags) streamOptions() projections.StreamOptions {
	return projections.StreamOptions{LeaseTTL: f.leaseTTL, FactMaxAge: f.auditRetention,
		RequestMaxAge: f.requestMaxAge, RequestMaxBytes: f.requestMaxBytes}
}

func (f streamFlags) validate() error {
	var errs []error
	if f.leaseTTL < 0 || f.auditRetention < 0 {
		errs = append(errs, fmt.Errorf("-home.lease-ttl %s, -audit.retention %s: durations cannot be negative", f.leaseTTL, f.auditRetention))
	}
	// They are the max age of the lease bucket and of the fact streams,
	// which NATS refuses below this: found only as the bucket, or each
	// home server's stream, is made (the home node failing for ever).
	const natsLeastMaxAge = 100 * time.Millisecond
	if f.leaseTTL > 0 && f.leaseTTL < natsLeastMaxAge {
		errs = append(errs, fmt.Errorf("-home.lease-ttl %s: want at least %s (NATS keeps nothing shorter), 10s or more on a cluster", f.leaseTTL, natsLeastMaxAge))
	}
	if f.auditRetention > 0 && f.auditRetention < natsLeastMaxAge {
		errs = append(errs, fmt.Errorf("-audit.retention %s: want 0 (facts kept for ever) or at least %s (NATS keeps nothing shorter), longer than any home node may stay down", f.auditRetention, natsLeastMaxAge))
	}
	if f.requestMaxAge < projections.DefaultRequestDuplicates || f.requestMaxBytes < 1<<20 {
		errs = append(errs, fmt.Errorf("-requests.max-age %s, -requests.max-bytes %d: want at least %s (their deduplication window) and 1 MiB", f.requestMaxAge, f.requestMaxBytes, projections.DefaultRequestDuplicates))
	}
	return errors.Join(errs...)
}

// roleFlags are the settings of the roles, the same in every mode.
type roleFlags struct {
	streamFlags
	auth                string
	allowBasic          bool
	ntlmv1              bool
	lockout             gateway.LockoutConfig
	callbackAllow       string
	federationAllow     string
	federationInternal  string
	senders             gateway.SenderLimits
	keyFile             string
	peers, dns, proxy   string
	logLevel, logFormat string
	policy              homenode.Policy
	requestTimeout      time.Duration
	maxConns            int
	maxConnsPerAddress  int
	auditBodies         bool
	ops                 string
	opsProxies          string
	pprof               string
	pebbleCache         int64
	pebbleMemTable      int64
}

// storeOptions are the settings of the Pebble store these flags give.
func (f roleFlags) storeOptions() projections.Options {
	return projections.Options{CacheSize: f.pebbleCache, MemTableSize: f.pebbleMemTable}
}

// homePolicy is the home nodes' policy these flags give.
func (f roleFlags) homePolicy() homenode.Policy {
	p := f.policy
	p.OmitBodies = !f.auditBodies
	return p
}

// register declares the role flags on fs. Their defaults are read from
// the packages that own them (homenode.DefaultPolicy,
// gateway.DefaultRequestTimeout, projections.DefaultLeaseTTL): each is
// written once, and the README's table is checked against them.
func (f *roleFlags) register(fs *flag.FlagSet) {
	def := homenode.DefaultPolicy()
	fs.StringVar(&f.auth, "auth", gateway.ProfileNTLM, `authentication: ntlm, digest, exchange (Negotiate+NTLM+Digest), basic, or none (insecure: anyone is anyone)`)
	fs.BoolVar(&f.allowBasic, "auth.basic", false, "also accept Basic credentials (passwords in clear)")
	fs.BoolVar(&f.ntlmv1, "auth.ntlmv1", true, "accept NTLMv1 responses (librvp answers only NTLMv1; false leaves NTLMv2)")
	fs.IntVar(&f.lockout.Free, "lockout.free", gateway.DefaultLockoutFree, "failed sign-ins of an account from an address before each further one makes them wait twice as long")
	fs.DurationVar(&f.lockout.BaseDelay, "lockout.delay", gateway.DefaultLockoutDelay, "the first wait after the free failed sign-ins, doubled at each further failure")
	fs.DurationVar(&f.lockout.MaxDelay, "lockout.max-delay", gateway.DefaultLockoutMaxDelay, "longest wait after failed sign-ins")
	fs.StringVar(&f.callbackAllow, "callback.allow", "", "address ranges a Call-Back may name besides the client's own address (NAT, trusted networks): 10.0.0.0/8,192.0.2.7,... and endpoints of this server's own allowed as Call-Backs (127.0.0.1:8081)")
	fs.IntVar(&f.senders.MessagesPerSecond, "limit.messages", gateway.DefaultMessagesPerSecond, "messages (NOTIFYs) a second per sender and gateway (0: no limit)")
	fs.IntVar(&f.senders.MessageBurst, "limit.messages.burst", gateway.DefaultMessageBurst, "messages a sender may send at once")
	fs.IntVar(&f.senders.BytesPerSecond, "limit.bytes", gateway.DefaultBytesPerSecond, "bytes of requests a second per sender and gateway (0: no limit)")
	fs.IntVar(&f.senders.ByteBurst, "limit.bytes.burst", gateway.DefaultByteBurst, "bytes a sender may send at once")
	fs.IntVar(&f.senders.BytesPerDay, "limit.bytes.day", gateway.DefaultBytesPerDay, "bytes of request bodies (messages, ACLs and properties, kept in the facts), and 512 for each request that may leave facts, a day per sender and gateway, refilled over the day (0: no limit)")
	fs.StringVar(&f.logLevel, "log.level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&f.logFormat, "log.format", "text", "log format: text or json")
	fs.DurationVar(&f.policy.MinLease, "lease.min", def.MinLease, "shortest presence lease granted")
	fs.DurationVar(&f.policy.MaxLease, "lease.max", def.MaxLease, "longest presence lease granted (at least 4h)")
	fs.DurationVar(&f.policy.MinLifetime, "sub.min-lifetime", def.MinLifetime, "shortest subscription lifetime granted")
	fs.DurationVar(&f.policy.MaxLifetime, "sub.max-lifetime", def.MaxLifetime, "longest subscription lifetime granted")
	fs.DurationVar(&f.policy.DeliveryTimeout, "notify.timeout", def.DeliveryTimeout, "time to deliver a message to a recipient's clients (below -request.timeout)")
	fs.DurationVar(&f.requestTimeout, "request.timeout", gateway.DefaultRequestTimeout, "time a gateway waits for a home node's answer (below librvp's 30s)")
	fs.IntVar(&f.maxConns, "gateway.max-conns", 10000, "connections a gateway serves at once; more are answered 503")
	fs.IntVar(&f.maxConnsPerAddress, "gateway.max-conns-per-address", 0, "connections one client address (an IPv6 client's /64) may hold at a gateway; more are answered 503 (0: an eighth of -gateway.max-conns; raise it for clients behind one large NAT)")
	fs.BoolVar(&f.auditBodies, "audit.bodies", !def.OmitBodies, "keep message bodies in the facts (false: their size and SHA-256 only)")
	f.streamFlags.register(fs)
	fs.StringVar(&f.peers, "federation.peers", "", "federation peer table: host=host:port,... (an IM host or domain of another organisation and its router's address); give the gateways the same table as the routers: a name under one of our IM domains it names is another organisation's (a subsidiary), whose principals a gateway without it refuses")
	fs.StringVar(&f.dns, "federation.dns", "", `find other organisations by DNS SRV _rvp._tcp.<domain>: "system", or a DNS server host:port ("" off)`)
	fs.StringVar(&f.ops, "ops", "", `address of the operations listener: /metrics (Prometheus), /healthz, /readyz and the operator console, e.g. 127.0.0.1:9090 ("" for none)`)
	fs.StringVar(&f.opsProxies, "ops.trusted-proxies", "", "addresses (ranges) of the reverse proxies in front of the operations listener: a console sign-in through one counts its failures under the client address it appends to X-Forwarded-For, not its own; from anyone else the header is ignored. 10.0.0.5,192.0.2.0/28,...")
	fs.Int64Var(&f.pebbleCache, "pebble.cache-bytes", projections.DefaultCacheSize, "size of the Pebble store's block cache (memory outside the Go heap)")
	fs.Int64Var(&f.pebbleMemTable, "pebble.memtable-bytes", projections.DefaultMemTableSize, "size of each of the Pebble store's memtables (memory outside the Go heap; up to two are held)")
	fs.StringVar(&f.pprof, "pprof", "", `address to serve Go's profiles on (net/http/pprof, and a heap dump at /debug/heapdump), e.g. 127.0.0.1:6060 ("" for none); what it serves shows the process's memory, credentials and messages included, to anyone who reaches it: loopback or an operators' network only`)
	fs.StringVar(&f.federationAllow, "federation.allow", "", "address ranges other than public ones that another organisation's server found by DNS may have (a partner over a VPN): 10.1.0.0/16,... (peers in -federation.peers are trusted as given)")
	fs.StringVar(&f.federationInternal, "federation.internal", "", "DNS suffixes of this organisation's own network, never another organisation's: corp.example,... (each also every name under it); a request for a node there is answered 404 before the proxy or DNS is asked, and a principal there may not speak without credentials as another organisation's (names under our IM domains and e-mail domains, and our servers' hosts, are so without it)")
	fs.StringVar(&f.proxy, "federation.proxy", "", "outbound HTTP proxy for requests to other organisations, http://host:port (it finds their hosts: the peer table and DNS discovery are then unused)")
}

// validate reports every inconsistency of the role flags at once, before
// anything starts: the home policy's (homenode.Policy.Validate), and those
// between settings of different roles.
func (f roleFlags) validate() error {
	var errs []error
	if err := f.homePolicy().Validate(); err != nil {
		errs = append(errs, err)
	}
	switch f.auth {
	case "none", gateway.ProfileNTLM, gateway.ProfileDigest, gateway.ProfileExchange, gateway.ProfileBasic:
	default:
		errs = append(errs, fmt.Errorf("-auth %q: want ntlm, digest, exchange, basic or none", f.auth))
	}
	if _, err := newLogger(io.Discard, f.logLevel, f.logFormat); err != nil {
		errs = append(errs, err)
	}
	if f.requestTimeout <= 0 || f.requestTimeout >= rvp.ClientPatience {
		errs = append(errs, fmt.Errorf("-request.timeout %s: want more than 0 and less than librvp's %s, after which it gives up", f.requestTimeout, rvp.ClientPatience))
	} else if d := f.homePolicy().DeliveryTimeout; d > 0 && d >= f.requestTimeout {
		errs = append(errs, fmt.Errorf("-notify.timeout %s is not below -request.timeout %s: a message's sender would be told 504 while it is still being delivered", d, f.requestTimeout))
	}
	if err := f.streamFlags.validate(); err != nil {
		errs = append(errs, err)
	}
	if _, _, _, err := federation(f); err != nil {
		errs = append(errs, err)
	}
	if _, _, err := rvp.ParseCallbackAllow(f.callbackAllow); err != nil {
		errs = append(errs, fmt.Errorf("-callback.allow: %w", err))
	}
	if _, err := rvp.ParseRanges(f.federationAllow); err != nil {
		errs = append(errs, fmt.Errorf("-federation.allow: %w", err))
	}
	if _, err := rvp.ParseRanges(f.opsProxies); err != nil {
		errs = append(errs, fmt.Errorf("-ops.trusted-proxies: %w", err))
	}
	if _, err := routernode.ParseInternal(f.federationInternal); err != nil {
		errs = append(errs, fmt.Errorf("-federation.internal: %w", err))
	}
	if s := f.senders; s.MessagesPerSecond < 0 || s.MessageBurst < 0 || s.BytesPerSecond < 0 || s.ByteBurst < 0 || s.BytesPerDay < 0 {
		errs = append(errs, fmt.Errorf("-limit.messages %d, -limit.messages.burst %d, -limit.bytes %d, -limit.bytes.burst %d, -limit.bytes.day %d: limits cannot be negative (0 switches one off)",
			s.MessagesPerSecond, s.MessageBurst, s.BytesPerSecond, s.ByteBurst, s.BytesPerDay))
	}
	if f.lockout.Free < 1 || f.lockout.BaseDelay <= 0 || f.lockout.MaxDelay < f.lockout.BaseDelay {
		errs = append(errs, fmt.Errorf("-lockout.free %d, -lockout.delay %s, -lockout.max-delay %s: want at least 1 free failure, a first wait above 0 and a longest wait at least as long",
			f.lockout.Free, f.lockout.BaseDelay, f.lockout.MaxDelay))
	}
	if f.maxConns < 1 || f.maxConnsPerAddress < 0 {
		errs = append(errs, fmt.Errorf("-gateway.max-conns %d, -gateway.max-conns-per-address %d: want at least 1 connection, and a per-address bound of 0 (an eighth of the first) or more",
			f.maxConns, f.maxConnsPerAddress))
	}
	if f.pebbleCache < 1<<20 || f.pebbleMemTable < 1<<20 || f.pebbleMemTable >= 4<<30 {
		errs = append(errs, fmt.Errorf("-pebble.cache-bytes %d, -pebble.memtable-bytes %d: want at least 1 MiB each, and a memtable under 4 GiB", f.pebbleCache, f.pebbleMemTable))
	}
	return errors.Join(errs...)
}

// roleSet is what one process runs over its NATS connection: a gateway,
// home nodes, a router node and the directory service, each optional.
type roleSet struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	db      *projections.DB
	dir     *projections.Directory
	keyring *directory.Keyring
	log     *slog.Logger
	flags   roleFlags

	// gatewayID names the gateway (its reply subjects); listener is where
	// it serves RVP, nil for no gateway. devDomain, when set, is the IM
	// domain requests with an unknown Host reach.
	gatewayID string
	listener  net.Listener
	devDomain string
	homes     []string
	// streams configures the fact stream each home node creates for its
	// home server if it is missing.
	streams projections.StreamOptions
	// holder is the node's name on the home servers' ownership leases.
	holder string
	router string
	// admin, when set, serves rvpctl's directory service.
	admin *directory.Admin
	// site is what a process at a site of a deployment of several runs
	// besides (sites.go); nil otherwise.
	site *atSite
	// own are this process's listeners besides the gateway's (an
	// embedded NATS server's): no Call-Back may point at them.
	own []netip.AddrPort
	// ops is the operations listener (-ops), nil for none.
	ops net.Listener
}

// callBackPolicy is where the server may connect for Call-Backs: the
// -callback.allow ranges, and never this process's own listeners (the
// gateway's, an embedded NATS server's, and the NATS servers it knows).
func (s roleSet) callBackPolicy() (*rvp.CallbackPolicy, error) {
	ranges, endpoints, err := rvp.ParseCallbackAllow(s.flags.callbackAllow)
	if err != nil {
		return nil, fmt.Errorf("-callback.allow: %w", err)
	}
	federation, err := rvp.ParseRanges(s.flags.federationAllow)
	if err != nil {
		return nil, fmt.Errorf("-federation.allow: %w", err)
	}
	p := &rvp.CallbackPolicy{Allow: ranges, AllowEndpoints: endpoints, Own: slices.Clone(s.own), Local: rvp.LocalAddrs(), Federation: federation}
	for _, ln := range []net.Listener{s.listener, s.ops} {
		if ln != nil {
			p.Own = append(p.Own, rvp.ListenerEndpoints(ln.Addr().String())...)
		}
	}
	for _, u := range s.nc.Servers() {
		if pu, err := url.Parse(u); err == nil && pu.Host != "" {
			p.Own = append(p.Own, rvp.ListenerEndpoints(pu.Host)...)
		}
	}
	return p, nil
}

// add builds the roles and adds them to g: they run until roles ends,
// and stop all stops them (g calls it when any of them ends). The
// directory projection is followed for as long as they run.
func (s roleSet) add(g *run.Group, roles context.Context, stopAll context.CancelFunc) error {
	outbound, peers, srv, err := federation(s.flags)
	if err != nil {
		return err
	}
	pprofAddr, err := addPprof(g, s.flags.pprof, s.log)
	if err != nil {
		return err
	}
	if pprofAddr != "" {
		// The profiles' listener is one of ours: no Call-Back may name it.
		s.own = append(slices.Clone(s.own), rvp.ListenerEndpoints(pprofAddr)...)
	}
	callBacks, err := s.callBackPolicy()
	if err != nil {
		return err
	}
	// Every connection the home nodes and the router make is guarded:
	// never this server's own listeners, nor an address that is no one's.
	outbound.Guard = callBacks.Dialable
	// Another organisation's URL (a foreign watcher's Call-Back) is
	// reached at public addresses only, unless the peer table names it.
	outbound.Federation = callBacks.Discovered
	o := newOps(s.holder, s.nc, s.log.With("component", "ops"))
	o.roles = s.roleNames()
	if w := s.site.siteWatch(); w != nil {
		w.Metrics = o.reg
	}
	// The JetStream account's storage, which every role's appends need,
	// and the streams the roles use, reported at each scrape: each home
	// server's facts and requests, the lookups of the routers and
	// gateways, the directory service's directory.
	o.storage.watch(s.js)
	for _, h := range s.homes {
		o.storage.watch(s.js, events.FactStream(h))
		o.storage.watchRequests(s.js, s.streams.RequestStreamOf(h), h)
	}
	if s.router != "" || s.listener != nil {
		// Lookups wait there for the routers, appended by the gateways:
		// a gateway reports it even when no router runs to.
		o.storage.watch(s.js, events.StreamLookups)
	}
	if s.admin != nil {
		o.storage.watch(s.js, events.StreamDirectory)
	}
	actors := []func(context.Context) error{func(ctx context.Context) error {
		return projections.Follow(ctx, s.js, projections.FollowConfig{Stream: events.StreamDirectory, Filter: events.DirectoryFilter, Logger: s.log}, s.dir)
	}, o.answer}
	if len(s.homes) > 0 {
		kv, err := s.js.KeyValue(context.Background(), events.BucketOwners)
		if err != nil {
			return fmt.Errorf("home-server leases (KV bucket %s): %w", events.BucketOwners, err)
		}
		st, err := kv.Status(context.Background())
		if err != nil {
			return fmt.Errorf("home-server leases (KV bucket %s): %w", events.BucketOwners, err)
		}
		homeMetrics := homenode.NewMetrics(o.reg)
		for _, h := range s.homes {
			cfg := homenode.Config{Home: h, JetStream: s.js, Conn: s.nc, DB: s.db, Directory: s.dir, Policy: s.flags.homePolicy(),
				Client: outbound, FactStream: s.streams, Sites: s.site.siteWatch(), Metrics: homeMetrics, Logger: s.log.With("component", "home"),
				// Requests a dead owner held go to the next one by the time
				// it takes over.
				AckWait: min(5*time.Second, st.TTL())}
			if _, err := homenode.New(cfg); err != nil {
				return err // a configuration error, found before anything runs
			}
			lease := &homenode.Lease{KV: kv, Home: h, Holder: s.holder, Logger: s.log.With("component", "lease"), Standby: homenode.WarmStandby(cfg)}
			owner := o.homeReadiness(h, kv, s.holder)
			homeMetrics.Owned(h, false)
			actors = append(actors, func(ctx context.Context) error {
				// A node per ownership: one that lost the lease is done.
				return lease.Hold(ctx, func(ctx context.Context, takeover bool) error {
					cfg := cfg
					cfg.ResendPresence = takeover
					cfg.PreviousOwnerSeen = lease.PreviousHolderSeen()
					cfg.Owned = lease.Owned
					if takeover {
						// Fenced against the previous owner's facts still on their way.
						cfg.Holder, cfg.Term = lease.Holder, lease.Term()
					}
					home, err := homenode.New(cfg)
					if err != nil {
						owner.failed(err, time.Now())
						return err
					}
					if takeover && hasFacts(ctx, s.js, h) {
						// A home server with no fact yet had nobody to
						// take it over from: a cluster's first start is
						// no takeover an operator is paged for.
						homeMetrics.TakenOver(h)
					}
					homeMetrics.Owned(h, true)
					owner.serving(home)
					defer func() { owner.serving(nil); homeMetrics.Owned(h, false) }()
					err = home.Run(ctx)
					if err != nil && ctx.Err() == nil {
						owner.failed(err, time.Now())
					}
					return err
				})
			})
		}
	}
	// What makes a host ours besides the directory, the same for the
	// router (never sent to another organisation) and the gateway (never
	// another organisation's principal, who speaks without credentials).
	internal, err := routernode.ParseInternal(s.flags.federationInternal)
	if err != nil {
		return fmt.Errorf("-federation.internal: %w", err)
	}
	own := projections.OwnNames{Internal: internal, Peered: func(host string) bool { return rvp.Peered(peers, host) }}
	if s.router != "" {
		router, err := routernode.New(routernode.Config{ID: s.router, JetStream: s.js, Conn: s.nc, Directory: s.dir, Client: outbound, Discovered: callBacks.Discovered,
			Peers: routernode.StaticPeers(peers), SRV: srv, Internal: internal, Metrics: routernode.NewMetrics(o.reg), Logger: s.log.With("component", "router")})
		if err != nil {
			return err
		}
		actors = append(actors, router.Run)
	}
	var gw *gateway.Gateway
	unshare := func() {}
	if s.listener != nil {
		var auth gateway.Authenticator = gateway.NoAuth{}
		if s.flags.auth != "none" {
			creds, err := gateway.NewCredentials(gateway.CredentialsConfig{
				Profile: s.flags.auth, AllowBasic: s.flags.allowBasic, NoNTLMv1: !s.flags.ntlmv1, Lockout: s.flags.lockout,
				Keyring: s.keyring, Directory: s.dir, Logger: s.log.With("component", "auth"),
			})
			if err != nil {
				return err
			}
			// Failed sign-ins are throttled across every gateway.
			if unshare, err = creds.ShareLockout(s.nc, s.gatewayID); err != nil {
				return err
			}
			auth = creds
		}
		// The gateway follows its site's leases: rvpd_home_owned, and the
		// 504 of a request for a home server no node owns says so.
		owners := &gateway.Owners{JetStream: s.js, Logger: s.log.With("component", "gateway")}
		actors = append(actors, owners.Run)
		if gw, err = gateway.New(gateway.Config{
			ID: s.gatewayID, JetStream: s.js, Conn: s.nc, Directory: s.dir, DevDomain: s.devDomain, Auth: auth, Owners: owners,
			Senders: s.flags.senders, CallBacks: callBacks, Own: own, Metrics: gateway.NewMetrics(o.reg), Site: s.streams.Site, Sites: s.site.lostSites(),
			RequestTimeout: s.flags.requestTimeout, MaxConns: s.flags.maxConns, MaxConnsPerAddress: s.flags.maxConnsPerAddress,
			Logger: s.log.With("component", "gateway"),
		}); err != nil {
			return err
		}
	}
	if s.admin != nil {
		svc := &directory.Service{Admin: s.admin, Conn: s.nc, Logger: s.log.With("component", "directory")}
		if err := svc.Start(); err != nil {
			return err
		}
		actors = append(actors, svc.Run)
	}

	if err := s.serveOps(g, o, gw); err != nil {
		return err
	}
	if s.site != nil {
		actors = append(actors, s.site.actors...)
	}
	// The gateway first: a run group interrupts its actors in the order
	// they were added, and the gateway's requests in flight are answered
	// by the home nodes and routers while it drains them, not cut off by
	// their stopping first.
	if gw != nil {
		g.Add(func() error { return gw.Serve(s.listener) }, func(error) {
			sctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			gw.Shutdown(sctx)
			unshare()
		})
	}
	for _, run := range actors {
		g.Add(func() error { return run(roles) }, func(error) { stopAll() })
	}
	return nil
}

// federation builds the outbound client (peer table, proxy) and DNS
// discovery from the -federation flags.
func federation(f roleFlags) (*rvp.Client, rvp.HostMap, routernode.SRVResolver, error) {
	peers, err := rvp.ParseHostMap(f.peers)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("-federation.peers: %w", err)
	}
	c := &rvp.Client{Dialer: peers}
	if f.proxy != "" {
		u, err := rvp.ParseURL(f.proxy)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("-federation.proxy: %w", err)
		}
		c.Proxy = &u
	}
	var srv routernode.SRVResolver
	switch f.dns {
	case "":
	case "system":
		srv = net.DefaultResolver
	default:
		server := f.dns
		srv = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, server)
		}}
	}
	return c, peers, srv, nil
}

// catchUpDirectory applies the directory stream to dir up to its end, so
// that roles start knowing every user and setting already written.
func catchUpDirectory(ctx context.Context, js jetstream.JetStream, dir *projections.Directory, log *slog.Logger) error {
	return withDirectory(ctx, js, dir, log, func() error { return nil })
}

// withDirectory follows the directory stream into dir, waits until dir
// has applied all of it, runs f (whose own directory writes dir applies
// as they are made), and stops following.
func withDirectory(ctx context.Context, js jetstream.JetStream, dir *projections.Directory, log *slog.Logger, f func() error) error {
	return projections.WhileFollowing(ctx, js, projections.FollowConfig{Stream: events.StreamDirectory, Filter: events.DirectoryFilter, Logger: log}, dir, f)
}

// hasFacts reports whether home's fact stream holds any fact (true when
// that cannot be read: a takeover is then counted rather than missed).
func hasFacts(ctx context.Context, js jetstream.JetStream, home string) bool {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, events.FactStream(home))
	if err != nil {
		return !errors.Is(err, jetstream.ErrStreamNotFound)
	}
	return st.CachedInfo().State.LastSeq > 0
}
