package testcluster

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rvp-im/rvpd/directory"
	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/gateway"
	"github.com/rvp-im/rvpd/homenode"
	"github.com/rvp-im/rvpd/projections"
	"github.com/rvp-im/rvpd/routernode"
	"github.com/rvp-im/rvpd/rvp"
)

// Options describe an in-process deployment: one organisation on one
// embedded JetStream server, with its roles each on a connection and a
// Pebble store of its own, as they would be in separate processes.
type Options struct {
	// Domain is the IM domain. Default "example.test"; its IM host is
	// "im."+Domain and its Windows domain the upper-cased first label.
	Domain string
	// Hosts are more host names of the domain (a client that found the
	// server as 127.0.0.1 names it so).
	Hosts []string
	// Users maps aliases to their home servers. Default alice, bob and
	// carol on home1.
	Users map[string]string
	// Gateways is the number of gateways. Default 1. Home server i is
	// reached at gateway i modulo the number of gateways (its physical
	// URL's host).
	Gateways int
	// Routers is the number of router nodes (sharing one consumer); 0
	// makes the deployment a combined router and home server. Default 0.
	Routers int
	// RouterMode is the routers' policy: "auto" (redirect clients inside
	// the firewall, proxy the others), "redirect" or "proxy".
	RouterMode string
	// Inside is the firewall topology (CIDR ranges).
	Inside []string
	// Password of every user. Default "cluster-pw-1".
	Password string
	// InternetCapable allows federation; Peers is the federation peer
	// table: IM domain or host → host:port of the other organisation's
	// router.
	InternetCapable bool
	Peers           map[string]string
	// Policy of the home nodes; the zero value gives short leases (1 s
	// minimum) for tests.
	Policy homenode.Policy
	// LookupAckWait is how soon a router's unanswered lookup goes to
	// another router. Default 2s.
	LookupAckWait time.Duration
	// SRV, when set, lets routers find other organisations by DNS SRV.
	SRV routernode.SRVResolver
	// FederationAllow are the address ranges other than public ones that
	// an organisation found by SRV may have (rvpd's -federation.allow).
	FederationAllow []netip.Prefix
	// Proxy, when set, is the outbound HTTP proxy (http://host:port)
	// requests to other organisations go through.
	Proxy string
	// Internal are DNS suffixes of our own network, never another
	// organisation's (rvpd's -federation.internal), the routers' and
	// gateways'.
	Internal []string
	// NATS, when set, runs the deployment on a JetStream cluster of
	// several NATS servers (StartNATSCluster) with streams of as many
	// replicas (three: a site's R3); each role connects to every server
	// over TCP and fails over as in production. Default: one embedded
	// server, reached in-process.
	NATS *NATSClusterOptions
	// Standbys runs each home server on 1+Standbys home nodes that share
	// it through its ownership lease (homenode.Lease), as rvpd node does:
	// one owns it, the others wait. Default 0: one home node per home
	// server, without a lease.
	Standbys int
	// LeaseTTL is the ownership leases' TTL. Default 2s.
	LeaseTTL time.Duration
	// RequestTimeout is how long gateways wait for an answer. Default
	// the gateway's (20s).
	RequestTimeout time.Duration
	// Senders are the gateways' per-sender limits; zero: none.
	Senders gateway.SenderLimits
	// MaxConnsPerAddress is the gateways' bound on one address's
	// connections; zero: theirs.
	MaxConnsPerAddress int
}

// Cluster is a running deployment.
type Cluster struct {
	t    testing.TB
	opts Options
	// NS is the embedded server, nil when the deployment runs on a NATS
	// cluster (NATS).
	NS *server.Server
	// NATS is the NATS cluster, nil on one embedded server.
	NATS     *NATSCluster
	JS       jetstream.JetStream
	Keyring  *directory.Keyring
	Domain   string
	IMHost   string
	NTDomain string
	Password string
	Admin    *directory.Admin

	Gateways []*Role
	// Homes holds each home server's node; with Standbys, HomeNodes holds
	// its nodes instead (Homes is then empty).
	Homes     map[string]*Role
	HomeNodes map[string][]*Role
	Routers   []*Role
	// Dialer resolves the federation peer table; every role's outgoing
	// connections use it.
	Dialer *PeerDialer

	// streams are the streams' settings; each home node creates its fact
	// stream with them.
	streamOpts projections.StreamOptions
	// site, hub and watch are set at a site of a deployment of several
	// (StartSites): its NATS server, the hub's domain, its site watch.
	site  *SiteNATS
	hub   string
	watch *homenode.SiteWatch

	mu   sync.Mutex
	dirs []*projections.Directory // every role's directory projection
	// own are the gateways' listeners, which no NOTIFY may reach.
	own []netip.AddrPort
}

// Role is one running role: its NATS connection, its store, and its stop.
type Role struct {
	Name string
	Addr string // a gateway's host:port
	Node *homenode.Node
	// Gateway is a gateway role's gateway (its Stats).
	Gateway *gateway.Gateway
	// Metrics holds a router role's metrics.
	Metrics *prometheus.Registry
	nc      *nats.Conn
	db      *projections.DB // a home node's store, closed when the test ends
	stop    context.CancelFunc
	done    chan error
	once    sync.Once
}

// Stop stops the role (as a crash of its process would, but cleanly) and
// waits for it.
func (r *Role) Stop() error {
	var err error
	r.once.Do(func() {
		r.stop()
		err = <-r.done
		r.nc.Close()
	})
	return err
}

// ReconnectOff moves the role's NATS connection (named conn, as
// nats.Name gives it: "gateway-g1", "home-home1-a") off server s: it
// reconnects the connection, to the next server of its list, until
// another server has it. Meant for arranging a fault test's placement
// without restarting servers, which would move the raft groups' leaders.
func (c *Cluster) ReconnectOff(r *Role, conn string, s *NATSServer) {
	c.t.Helper()
	for attempt := 1; ; attempt++ {
		if now := c.NATS.ServerOf(conn); now != nil && now != s {
			if attempt > 1 {
				c.t.Logf("%s reconnected off %s, to %s", conn, s.Name, now.Name)
			}
			return
		}
		if attempt == 10 {
			c.t.Fatalf("%s still on %s after %d reconnections", conn, s.Name, attempt-1)
		}
		if err := r.nc.ForceReconnect(); err != nil {
			c.t.Fatalf("reconnect %s: %v", conn, err)
		}
		Eventually(c.t, 10*time.Second, func() error {
			if !r.nc.IsConnected() {
				return fmt.Errorf("%s not reconnected", conn)
			}
			if c.NATS.ServerOf(conn) == nil {
				return fmt.Errorf("%s is connected to no server", conn)
			}
			return nil
		})
	}
}

// PeerDialer dials through a static table of host names (the federation
// peer table of a test: no DNS).
type PeerDialer struct {
	mu    sync.Mutex
	table map[string]string
}

// Set maps a host name to host:port.
func (d *PeerDialer) Set(host, addr string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.table == nil {
		d.table = map[string]string{}
	}
	d.table[host] = addr
}

// Peer implements routernode.PeerTable.
func (d *PeerDialer) Peer(host string) (string, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	a, ok := d.table[host]
	return a, ok
}

// DialContext implements rvp.Client's Dialer.
func (d *PeerDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err == nil {
		d.mu.Lock()
		to, ok := d.table[host]
		d.mu.Unlock()
		if ok {
			addr = to
		}
	}
	return rvp.NetDialer(ctx).DialContext(ctx, network, addr)
}

func quiet() *slog.Logger {
	if os.Getenv("RVP_CLUSTER_LOG") == "1" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// Start starts a deployment; the test's cleanup stops it.
func Start(t testing.TB, o Options) *Cluster {
	t.Helper()
	if o.Users == nil {
		o.Users = map[string]string{"alice": "home1", "bob": "home1", "carol": "home1"}
	}
	o = o.withDefaults()
	ntDomain := upperFirstLabel(o.Domain)
	c := &Cluster{t: t, opts: o, Domain: o.Domain, IMHost: "im." + o.Domain, NTDomain: ntDomain, Password: o.Password,
		Homes: map[string]*Role{}, HomeNodes: map[string][]*Role{}, Dialer: &PeerDialer{}}
	for host, addr := range o.Peers {
		c.Dialer.Set(host, addr)
	}

	so := projections.StreamOptions{LeaseTTL: o.LeaseTTL}
	if o.NATS != nil {
		c.NATS = StartNATSCluster(t, *o.NATS)
		so.Replicas = len(c.NATS.Servers)
	} else {
		ns, err := server.NewServer(&server.Options{ServerName: "tc-" + o.Domain, JetStream: true, StoreDir: t.TempDir(), DontListen: true, NoSigs: true, NoLog: true})
		if err != nil {
			t.Fatal(err)
		}
		go ns.Start()
		if !ns.ReadyForConnections(10 * time.Second) {
			t.Fatal("nats not ready")
		}
		c.NS = ns
		t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	}
	var err error
	key := make([]byte, directory.KeySize)
	rand.Read(key)
	if c.Keyring, err = directory.NewKeyring(key); err != nil {
		t.Fatal(err)
	}
	adminConn := c.connect("admin")
	t.Cleanup(adminConn.Close)
	c.JS, _ = jetstream.New(adminConn)
	ctx := context.Background()
	if err := projections.EnsureStreams(ctx, c.JS, so); err != nil {
		t.Fatal(err)
	}
	c.streamOpts = so

	// Listeners first: their addresses are the home servers' hosts.
	lns := c.listen(o.Gateways)
	var homes []directory.HomeServerSpec
	names := homeNames(o.Users)
	for i, h := range names {
		homes = append(homes, directory.HomeServerSpec{Name: h, Host: lns[i%len(lns)].Addr().String()})
	}
	// The directory, through the same operations administrators use.
	_, adminDir := c.directory("admin")
	c.Admin = &directory.Admin{JetStream: c.JS, Directory: adminDir, Keyring: c.Keyring, Actor: "testcluster"}
	c.writeDirectory(homes, o.Users)

	for _, h := range names {
		if o.Standbys == 0 {
			c.Homes[h] = c.StartHome(h)
			continue
		}
		for i := range 1 + o.Standbys {
			c.HomeNodes[h] = append(c.HomeNodes[h], c.StartHomeNode(h, fmt.Sprintf("%s-%c", h, 'a'+i)))
			if i == 0 {
				c.WaitOwner(h, c.HomeNodes[h][0].Name) // the first one owns it
			}
		}
	}
	for i := range o.Routers {
		c.Routers = append(c.Routers, c.StartRouter(fmt.Sprintf("router%d", i+1)))
	}
	for i, ln := range lns {
		c.Gateways = append(c.Gateways, c.startGateway(fmt.Sprintf("gw%d", i+1), ln))
	}
	return c
}

// withDefaults fills the options' zero fields but Users.
func (o Options) withDefaults() Options {
	if o.Domain == "" {
		o.Domain = "example.test"
	}
	if o.Gateways <= 0 {
		o.Gateways = 1
	}
	if o.Password == "" {
		o.Password = "cluster-pw-1"
	}
	if o.RouterMode == "" {
		o.RouterMode = "auto"
	}
	if o.LookupAckWait <= 0 {
		o.LookupAckWait = 2 * time.Second
	}
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = 2 * time.Second
	}
	if o.Policy == (homenode.Policy{}) {
		o.Policy = homenode.Policy{MinLease: time.Second, MinLifetime: time.Second, DeliveryTimeout: 5 * time.Second}
	}
	return o
}

// listen opens n gateway listeners on loopback: their addresses are the
// home servers' hosts, and no NOTIFY may reach them.
func (c *Cluster) listen(n int) []net.Listener {
	c.t.Helper()
	lns := make([]net.Listener, n)
	for i := range lns {
		var err error
		if lns[i], err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			c.t.Fatal(err)
		}
		c.own = append(c.own, netip.MustParseAddrPort(lns[i].Addr().String()))
	}
	return lns
}

// homeNames returns the home servers users are on, sorted.
func homeNames(users map[string]string) []string {
	homes := map[string]bool{}
	for _, h := range users {
		homes[h] = true
	}
	names := make([]string, 0, len(homes))
	for h := range homes {
		names = append(names, h)
	}
	sort.Strings(names)
	return names
}

// writeDirectory writes the deployment's directory through c.Admin, as
// administrators do: the IM domain, the home servers, the routers, the
// firewall topology and federation, and the users (alias → home server)
// with c.Password.
func (c *Cluster) writeDirectory(homes []directory.HomeServerSpec, users map[string]string) {
	c.t.Helper()
	o, ctx := c.opts, context.Background()
	must := func(err error) {
		c.t.Helper()
		if err != nil {
			c.t.Fatal(err)
		}
	}
	must(c.Admin.CreateDomain(ctx, directory.DomainSpec{Domain: o.Domain, IMHost: c.IMHost, NTDomain: c.NTDomain, Hosts: o.Hosts}))
	for _, h := range homes {
		must(c.Admin.CreateHomeServer(ctx, h.Name, h.Host, h.Site, true))
	}
	for i := range o.Routers {
		must(c.Admin.CreateRouter(ctx, fmt.Sprintf("router%d", i+1), o.Domain, c.IMHost, o.RouterMode))
	}
	if len(o.Inside) > 0 {
		must(c.Admin.SetTopology(ctx, append([]string(nil), o.Inside...)))
	}
	must(c.Admin.SetInternetCapable(ctx, o.InternetCapable))
	c.addUsers(users)
}

// addUsers enables users (alias → home server) with c.Password.
func (c *Cluster) addUsers(users map[string]string) {
	c.t.Helper()
	ctx := context.Background()
	for _, a := range slices.Sorted(maps.Keys(users)) {
		u := events.NewUser(c.Domain, a)
		if err := c.Admin.EnableUser(ctx, directory.UserSpec{User: u, Home: users[a], DisplayName: a}); err != nil {
			c.t.Fatal(err)
		}
		if err := c.Admin.SetPassword(ctx, u, rvp.NewVerifiers(u, c.NTDomain, "", c.Domain, c.Password)); err != nil {
			c.t.Fatal(err)
		}
	}
}

func upperFirstLabel(domain string) string {
	for i := 0; i < len(domain); i++ {
		if domain[i] == '.' {
			domain = domain[:i]
			break
		}
	}
	b := []byte(domain)
	for i, c := range b {
		if 'a' <= c && c <= 'z' {
			b[i] = c - 32
		}
	}
	return string(b)
}

func (c *Cluster) connect(name string) *nats.Conn {
	c.t.Helper()
	if c.NATS != nil {
		return c.NATS.Connect(name)
	}
	if c.site != nil {
		return c.site.Connect(name)
	}
	nc, err := nats.Connect("", nats.InProcessServer(c.NS), nats.Name(name))
	if err != nil {
		c.t.Fatal(err)
	}
	return nc
}

// directory opens a role's own store and a directory projection caught up
// with the stream and followed until the test ends.
func (c *Cluster) directory(role string) (*projections.DB, *projections.Directory) {
	c.t.Helper()
	db, err := projections.Open(filepath.Join(c.t.TempDir(), role), projections.Options{})
	if err != nil {
		c.t.Fatal(err)
	}
	dir, err := projections.OpenDirectory(db)
	if err != nil {
		c.t.Fatal(err)
	}
	nc := c.connect(role + "-directory")
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		projections.Follow(ctx, js, projections.FollowConfig{Stream: events.StreamDirectory, Filter: events.DirectoryFilter, Logger: quiet().With("directory", role)}, dir)
	}()
	c.t.Cleanup(func() { cancel(); <-done; nc.Close(); db.Close() })
	c.mu.Lock()
	c.dirs = append(c.dirs, dir)
	c.mu.Unlock()
	st, err := c.JS.Stream(context.Background(), events.StreamDirectory)
	if err != nil {
		c.t.Fatal(err)
	}
	info, err := st.Info(context.Background())
	if err != nil {
		c.t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	if err := dir.WaitFor(wctx, info.State.LastSeq); err != nil {
		c.t.Fatal(err)
	}
	return db, dir
}

func (c *Cluster) client() *rvp.Client {
	policy := &rvp.CallbackPolicy{Own: c.own}
	policy.Federation = c.opts.FederationAllow
	cl := &rvp.Client{DialTimeout: 2 * time.Second, Timeout: 5 * time.Second, Dialer: c.Dialer, Guard: policy.Dialable, Federation: policy.Discovered}
	if c.opts.Proxy != "" {
		u, err := rvp.ParseURL(c.opts.Proxy)
		if err != nil {
			c.t.Fatalf("Options.Proxy: %v", err)
		}
		cl.Proxy = &u
	}
	return cl
}

// StartHome starts (or restarts) the node of home server h.
func (c *Cluster) StartHome(h string) *Role {
	c.t.Helper()
	db, dir := c.directory("home-" + h)
	nc := c.connect("home-" + h)
	js, _ := jetstream.New(nc)
	n, err := homenode.New(homenode.Config{Home: h, JetStream: js, Conn: nc, DB: db, Directory: dir, Client: c.client(),
		Policy: c.opts.Policy, SweepEvery: 100 * time.Millisecond, HandoffWait: 10 * time.Second, Logger: quiet().With("home", h),
		FactStream: c.streams(), Sites: c.watch})
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Role{Name: h, Node: n, nc: nc, db: db, stop: cancel, done: make(chan error, 1)}
	go func() { r.done <- n.Run(ctx) }()
	c.t.Cleanup(func() {
		if err := r.Stop(); err != nil {
			c.t.Errorf("home %s: %v", h, err)
		}
	})
	return r
}

// StartHomeNode starts a home node named holder for home server h that
// owns it only while it holds its lease (homenode.Lease), as rvpd node
// runs one: the owner serves, another waits as a standby and takes over
// when the owner stops or its lease lapses.
func (c *Cluster) StartHomeNode(h, holder string) *Role {
	c.t.Helper()
	db, dir := c.directory("home-" + holder)
	nc := c.connect("home-" + holder)
	js, _ := jetstream.New(nc)
	kv, err := js.KeyValue(context.Background(), events.BucketOwners)
	if err != nil {
		c.t.Fatal(err)
	}
	log := quiet().With("home", h, "node", holder)
	cfg := homenode.Config{Home: h, JetStream: js, Conn: nc, DB: db, Directory: dir, Client: c.client(),
		Policy: c.opts.Policy, SweepEvery: 100 * time.Millisecond, HandoffWait: 10 * time.Second, FactStream: c.streams(), Sites: c.watch, Logger: log,
		AckWait: min(5*time.Second, c.opts.LeaseTTL)}
	lease := &homenode.Lease{KV: kv, Home: h, Holder: holder, Logger: log, Standby: homenode.WarmStandby(cfg)}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Role{Name: holder, nc: nc, db: db, stop: cancel, done: make(chan error, 1)}
	go func() {
		r.done <- lease.Hold(ctx, func(ctx context.Context, takeover bool) error {
			cfg := cfg
			cfg.ResendPresence = takeover
			cfg.PreviousOwnerSeen = lease.PreviousHolderSeen()
			cfg.Owned = lease.Owned
			if takeover {
				// Fenced against the previous owner's facts still on their way.
				cfg.Holder, cfg.Term = lease.Holder, lease.Term()
			}
			n, err := homenode.New(cfg)
			if err != nil {
				return err
			}
			return n.Run(ctx)
		})
	}()
	c.t.Cleanup(func() {
		if err := r.Stop(); err != nil {
			c.t.Errorf("home node %s: %v", holder, err)
		}
	})
	return r
}

// Owner returns the name of the node that holds home server h's lease,
// "" when none does.
func (c *Cluster) Owner(h string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	kv, err := c.JS.KeyValue(ctx, events.BucketOwners)
	if err != nil {
		return ""
	}
	e, err := kv.Get(ctx, events.OwnerKey(h))
	if err != nil || strings.HasPrefix(string(e.Value()), "released:") {
		return ""
	}
	return string(e.Value())
}

// WaitOwner waits until node holder owns home server h.
func (c *Cluster) WaitOwner(h, holder string) {
	c.t.Helper()
	Eventually(c.t, 30*time.Second, func() error {
		if o := c.Owner(h); o != holder {
			return fmt.Errorf("home server %s owned by %q, not %s", h, o, holder)
		}
		return nil
	})
}

// StartRouter starts a router node.
func (c *Cluster) StartRouter(name string) *Role {
	c.t.Helper()
	_, dir := c.directory("router-" + name)
	nc := c.connect("router-" + name)
	js, _ := jetstream.New(nc)
	reg := prometheus.NewRegistry()
	rt, err := routernode.New(routernode.Config{ID: name, JetStream: js, Conn: nc, Directory: dir, Client: c.client(),
		Peers: c.Dialer, SRV: c.opts.SRV, Internal: c.opts.Internal, Discovered: (&rvp.CallbackPolicy{Own: c.own, Federation: c.opts.FederationAllow}).Discovered, AckWait: c.opts.LookupAckWait, Metrics: routernode.NewMetrics(reg), Logger: quiet().With("router", name)})
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Role{Name: name, nc: nc, stop: cancel, done: make(chan error, 1), Metrics: reg}
	go func() { r.done <- rt.Run(ctx) }()
	c.t.Cleanup(func() {
		if err := r.Stop(); err != nil {
			c.t.Errorf("router %s: %v", name, err)
		}
	})
	return r
}

func (c *Cluster) startGateway(name string, ln net.Listener) *Role {
	c.t.Helper()
	_, dir := c.directory("gateway-" + name)
	nc := c.connect("gateway-" + name)
	js, _ := jetstream.New(nc)
	auth, err := gateway.NewCredentials(gateway.CredentialsConfig{Keyring: c.Keyring, Directory: dir, Logger: quiet()})
	if err != nil {
		c.t.Fatal(err)
	}
	unshare, err := auth.ShareLockout(nc, name)
	if err != nil {
		c.t.Fatal(err)
	}
	own := projections.OwnNames{Internal: c.opts.Internal, Peered: func(host string) bool { return rvp.Peered(c.Dialer, host) }}
	gw, err := gateway.New(gateway.Config{ID: name, JetStream: js, Conn: nc, Directory: dir, Auth: auth, Senders: c.opts.Senders, Own: own,
		MaxConnsPerAddress: c.opts.MaxConnsPerAddress, Site: c.SiteName(), Sites: c.lostSites(), RequestTimeout: c.opts.RequestTimeout, Logger: quiet().With("gateway", name)})
	if err != nil {
		c.t.Fatal(err)
	}
	r := &Role{Name: name, Addr: ln.Addr().String(), Gateway: gw, nc: nc, done: make(chan error, 1)}
	r.stop = func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		gw.Shutdown(ctx)
		unshare()
	}
	go func() { r.done <- gw.Serve(ln) }()
	c.t.Cleanup(func() {
		if err := r.Stop(); err != nil && !errors.Is(err, net.ErrClosed) {
			c.t.Errorf("gateway %s: %v", name, err)
		}
	})
	return r
}

// DirectorySettled waits until every role's directory projection has
// applied the whole directory stream: an administrator's change has
// reached every gateway, router and home node.
func (c *Cluster) DirectorySettled() {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := c.JS.Stream(ctx, events.StreamDirectory)
	if err != nil {
		c.t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		c.t.Fatal(err)
	}
	c.mu.Lock()
	dirs := append([]*projections.Directory(nil), c.dirs...)
	c.mu.Unlock()
	for _, d := range dirs {
		if err := d.WaitFor(ctx, info.State.LastSeq); err != nil {
			c.t.Fatalf("a directory projection at %d, the stream at %d: %v", d.Position(), info.State.LastSeq, err)
		}
	}
}

// Addr returns the address of the first gateway.
func (c *Cluster) Addr() string { return c.Gateways[0].Addr }

// Client returns a simulated client of alias, signing in with NTLMv1 at
// the first gateway and addressing the IM host, as clients that found the
// router by DNS do.
func (c *Cluster) Client(t testing.TB, alias string) *Client {
	cl := NewClient(t, c.Addr(), alias)
	cl.UseHost(c.IMHost)
	cl.Creds = &Credentials{Scheme: SchemeNTLMv1, User: alias, Domain: c.NTDomain, Password: c.Password}
	return cl
}

// Verify asks the node owning each home server to compare its
// projections with a rebuild from the streams (as rvpctl verify does),
// and fails the test on a difference.
func (c *Cluster) Verify() {
	c.t.Helper()
	nc := c.connect("verify")
	defer nc.Close()
	homes := map[string]bool{}
	for _, h := range c.opts.Users {
		homes[h] = true
	}
	for h := range homes {
		var v struct {
			Results []projections.Verification `json:"results"`
			Error   string                     `json:"error"`
		}
		Eventually(c.t, 30*time.Second, func() error {
			m, err := nc.Request(events.HomeAdminSubject(h, "verify"), nil, 20*time.Second)
			if err != nil {
				return fmt.Errorf("verify home %s: %w", h, err)
			}
			return json.Unmarshal(m.Data, &v)
		})
		if v.Error != "" || len(v.Results) == 0 {
			c.t.Errorf("verify home %s: %+v", h, v)
		}
		for _, r := range v.Results {
			if !r.OK() {
				c.t.Errorf("home %s: %s differs from its rebuild:\n%s", h, r.Projection, r.Diff)
			}
		}
	}
}

// FactStream returns the name of the stream that holds home server h's
// facts. The meta leader answers: asked while one is being elected (a
// server just back from a pause), the request goes unanswered, and it is
// asked again (chaos seed 36 failed on one such request at its end).
func (c *Cluster) FactStream(h string) string {
	c.t.Helper()
	var name string
	Eventually(c.t, time.Minute, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var err error
		if name, err = c.JS.StreamNameBySubject(ctx, events.FactSubject(h, events.NewUser(c.Domain, "x"))); err != nil {
			return fmt.Errorf("the fact stream of %s: %w", h, err)
		}
		return nil
	})
	return name
}
