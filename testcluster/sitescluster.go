package testcluster

import (
	"context"
	"crypto/rand"
	"fmt"
	"maps"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/directory"
	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/homenode"
	"github.com/rvp-im/rvpd/projections"
)

// SitesOptions describe a deployment of several sites (docs/sites.md):
// a hub and sites on a Topology, one organisation, each site with its
// home servers, routers and gateways, the directory written at the hub.
type SitesOptions struct {
	// Options are every site's (Domain, Password, RouterMode, Inside,
	// Policy, RequestTimeout, ...); their Users and Gateways are
	// ignored, Routers is per site (default 1).
	Options
	// Sites maps each site to its users: alias → home server. Default: a
	// with alice on home1, b with carol on home2.
	Sites map[string]map[string]string
	// Gateways per site. Default 1. A home server's host (its physical
	// URLs') is a gateway of its site.
	Gateways int
	// Hub is the hub's domain. Default projections.DefaultHub.
	Hub string
	// WatchEvery is how often the sites' watches probe the others.
	// Default 250ms.
	WatchEvery time.Duration
	// ThreeServers are the sites with three NATS servers (R3 streams)
	// instead of one.
	ThreeServers []string
}

// Sites is a running deployment of several sites.
type Sites struct {
	t   testing.TB
	Top *Topology
	// Sites holds each site's deployment: its roles, its NATS server.
	Sites map[string]*Cluster
	// Admin writes the directory at the hub; HubJS reaches the hub.
	Admin *directory.Admin
	HubJS jetstream.JetStream
}

// StartSites starts a deployment of several sites; the test's cleanup
// stops it.
func StartSites(t testing.TB, o SitesOptions) *Sites {
	t.Helper()
	if o.Sites == nil {
		o.Sites = map[string]map[string]string{"a": {"alice": "home1"}, "b": {"carol": "home2"}}
	}
	if o.Hub == "" {
		o.Hub = projections.DefaultHub
	}
	if o.Gateways <= 0 {
		o.Gateways = 1
	}
	if o.Routers <= 0 {
		o.Routers = 1
	}
	if o.WatchEvery <= 0 {
		o.WatchEvery = 250 * time.Millisecond
	}
	opts := o.Options.withDefaults()
	opts.Gateways, opts.Users = o.Gateways, nil
	names := slices.Sorted(maps.Keys(o.Sites))
	top := StartTopology(t, TopologyOptions{Hub: o.Hub, Sites: names, ThreeServers: o.ThreeServers})
	ctx := context.Background()
	ss := &Sites{t: t, Top: top, Sites: map[string]*Cluster{}, HubJS: top.Hub.JetStream("hub")}
	if err := projections.EnsureStreams(ctx, ss.HubJS, projections.StreamOptions{Site: o.Hub, Hub: o.Hub}); err != nil {
		t.Fatal(err)
	}
	key := make([]byte, directory.KeySize)
	rand.Read(key)
	keyring, err := directory.NewKeyring(key)
	if err != nil {
		t.Fatal(err)
	}

	// Each site: its streams, its copy of the directory, its listeners.
	var homes []directory.HomeServerSpec
	users := map[string]string{}
	lns := map[string][]net.Listener{}
	for _, name := range names {
		c := &Cluster{t: t, opts: opts, Domain: opts.Domain, IMHost: "im." + opts.Domain, NTDomain: upperFirstLabel(opts.Domain),
			Password: opts.Password, Keyring: keyring, Homes: map[string]*Role{}, Dialer: &PeerDialer{},
			site: top.Sites[name], hub: o.Hub}
		c.opts.Users = o.Sites[name] // its own: LoadTarget and Verify are the site's
		c.JS = c.site.JetStream("site-" + name)
		if err := projections.EnsureStreams(ctx, c.JS, c.streams()); err != nil {
			t.Fatal(err)
		}
		c.copyDirectory()
		lns[name] = c.listen(o.Gateways)
		for i, h := range homeNames(o.Sites[name]) {
			homes = append(homes, directory.HomeServerSpec{Name: h, Host: lns[name][i%o.Gateways].Addr().String(), Site: name})
		}
		maps.Copy(users, o.Sites[name])
		ss.Sites[name] = c
	}
	for _, c := range ss.Sites {
		for _, other := range ss.Sites {
			c.own = append(c.own, other.own...) // no NOTIFY reaches any gateway
		}
	}

	// The directory, written at the hub.
	hubDir := FollowDirectory(t, ss.HubJS, "hub")
	ss.Admin = &directory.Admin{JetStream: ss.HubJS, Directory: hubDir, Keyring: keyring, Actor: "testcluster"}
	first := ss.Sites[names[0]]
	first.Admin = ss.Admin
	first.writeDirectory(homes, users)
	for _, c := range ss.Sites {
		c.Admin = ss.Admin
		Eventually(t, 10*time.Second, func() error {
			if n, want := LastSeq(t, c.JS, events.StreamDirectory), LastSeq(t, ss.HubJS, events.StreamDirectory); n != want {
				return fmt.Errorf("site %s's directory at %d, the hub's at %d", c.SiteName(), n, want)
			}
			return nil
		})
	}

	for _, name := range names {
		c := ss.Sites[name]
		c.watch = c.startWatch(o.WatchEvery)
		for _, h := range homeNames(o.Sites[name]) {
			c.Homes[h] = c.StartHome(h)
		}
		for i := range o.Routers {
			c.Routers = append(c.Routers, c.StartRouter(fmt.Sprintf("router-%s%d", name, i+1)))
		}
		for i, ln := range lns[name] {
			c.Gateways = append(c.Gateways, c.startGateway(fmt.Sprintf("gw-%s%d", name, i+1), ln))
		}
	}
	return ss
}

// SiteName is the site the deployment is at; "" for a deployment of one
// domain.
func (c *Cluster) SiteName() string {
	if c.site == nil {
		return ""
	}
	return c.site.Name
}

// Site returns the NATS server of the site the deployment is at; nil for
// a deployment of one domain.
func (c *Cluster) Site() *SiteNATS { return c.site }

// streams are the stream options of the deployment's site.
func (c *Cluster) streams() projections.StreamOptions {
	if c.site == nil {
		return c.streamOpts
	}
	return projections.StreamOptions{Site: c.site.Name, Hub: c.hub, Replicas: c.site.Replicas()}
}

// copyDirectory keeps the site's copy of the hub's directory, as its
// nodes do, until the test ends.
func (c *Cluster) copyDirectory() {
	nc := c.connect("copy-" + c.site.Name)
	local, _ := jetstream.New(nc)
	hub, err := jetstream.NewWithDomain(nc, c.hub)
	if err != nil {
		c.t.Fatal(err)
	}
	background(c.t, func(ctx context.Context) {
		projections.CopyDirectory(ctx, projections.CopyConfig{Site: c.site.Name, Local: local, Hub: hub, Poll: 250 * time.Millisecond, Logger: quiet()})
	})
}

// startWatch starts the site's watch of the other sites, shared by its
// home nodes.
func (c *Cluster) startWatch(every time.Duration) *homenode.SiteWatch {
	_, dir := c.directory("watch-" + c.site.Name)
	w := &homenode.SiteWatch{Conn: c.connect("watch-" + c.site.Name), Site: c.site.Name, Directory: dir,
		Every: every, Timeout: every, Logger: quiet().With("watch", c.site.Name)}
	background(c.t, func(ctx context.Context) { w.Run(ctx) })
	return w
}

// Site returns the deployment of site name.
func (ss *Sites) Site(name string) *Cluster {
	c := ss.Sites[name]
	if c == nil {
		ss.t.Fatalf("no site %s", name)
	}
	return c
}

// lostSites is the site's watch as its gateways ask it; nil for a
// deployment of one domain.
func (c *Cluster) lostSites() interface{ Lost(string) bool } {
	if c.watch == nil {
		return nil
	}
	return c.watch
}
