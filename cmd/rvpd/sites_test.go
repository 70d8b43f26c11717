package main

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rvp-im/rvpd/directory"
	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
	"github.com/rvp-im/rvpd/rvp"
	"github.com/rvp-im/rvpd/testcluster"
)

// TestNodeSites runs `rvpd node -site` at two sites of a Topology (a hub
// and sites a and b, each a JetStream domain, joined by leaf
// connections): the hub's directory holds home1 at site a and home2 at
// site b; each site's node copies it, owns its site's home server and
// serves a gateway, a router and the directory service. alice (home1)
// and carol (home2) sign in at their own sites, see each other and
// exchange messages; an administrator at site b creates a user, written
// at the hub and known at both sites; a node refuses a home server of
// another site.
func TestNodeSites(t *testing.T) {
	top := testcluster.StartTopology(t, testcluster.TopologyOptions{})
	ctx := context.Background()
	keyFile := filepath.Join(t.TempDir(), "cluster.key")
	key, err := directory.LoadOrCreateKey(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	keyring, err := directory.NewKeyring(key)
	if err != nil {
		t.Fatal(err)
	}

	// The hub's directory, as rvpd init and rvpctl leave it.
	hubJS := top.Hub.JetStream("init")
	if err := projections.EnsureStreams(ctx, hubJS, projections.StreamOptions{Site: "hub", Hub: "hub"}); err != nil {
		t.Fatal(err)
	}
	hubDir := testcluster.FollowDirectory(t, hubJS, "hub")
	admin := &directory.Admin{JetStream: hubJS, Directory: hubDir, Keyring: keyring, Actor: "test"}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(admin.CreateDomain(ctx, directory.DomainSpec{Domain: demoDomain, IMHost: demoIMHost, NTDomain: demoNTDomain}))
	must(admin.CreateHomeServer(ctx, "home1", "imhome1.example.test", "a", true))
	must(admin.CreateHomeServer(ctx, "home2", "imhome2.example.test", "b", true))
	must(admin.CreateRouter(ctx, "router1", demoDomain, demoIMHost, "proxy"))
	for alias, home := range map[string]string{"alice": "home1", "carol": "home2"} {
		u := events.NewUser(demoDomain, alias)
		must(admin.EnableUser(ctx, directory.UserSpec{User: u, Home: home, DisplayName: alias}))
		must(admin.SetPassword(ctx, u, rvp.NewVerifiers(u, demoNTDomain, "", demoDomain, testPassword)))
	}
	av, err := directory.NewAdminVerifier(testPassword)
	must(err)
	must(admin.SetAdmin(ctx, demoAdmin, events.RoleOrganization, nil, av))

	// A node of site b cannot own home1, of site a.
	noEnv := func(string) (string, bool) { return "", false }
	var stderr bytes.Buffer
	// Bounded: a node that does not refuse would run until stopped.
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	err = exec(wctx, []string{"node", "-name", "wrong", "-site", "b", "-nats", top.Sites["b"].URL(), "-home", "home1",
		"-cluster-key-file", keyFile, "-data", t.TempDir(), "-log.level", "error"}, noEnv, &bytes.Buffer{}, &stderr)
	if err == nil || !strings.Contains(err.Error(), "the directory puts it at site a") {
		t.Errorf("a node of site b for home1: %v", err)
	}

	node := func(site, home string) string {
		t.Helper()
		addr, p := startNode(t, "-name", "node-"+site, "-site", site, "-nats", top.Sites[site].URL(), "-data", t.TempDir(),
			"-cluster-key-file", keyFile, "-gateway", "127.0.0.1:0", "-home", home, "-router", "router-"+site, "-admin",
			"-lease.min", "1s", "-sub.min-lifetime", "1s")
		if addr == "" {
			t.Fatalf("the node at site %s printed no gateway address:\n%s", site, p.stderr.String())
		}
		return addr
	}
	gwA, gwB := node("a", "home1"), node("b", "home2")

	alice, carol := newClient(t, gwA, "alice"), newClient(t, gwB, "carol")
	const w = 10 * time.Second
	for _, c := range []*testcluster.Client{alice, carol} {
		c.UseHost(demoIMHost)
		if r := c.Login(3600); r.Status != 200 {
			t.Fatalf("%s login: %d %s", c.Alias, r.Status, r.Body)
		}
		if r := c.SetState("online", 600, 0); r.Status != 207 {
			t.Fatalf("%s online: %d %s", c.Alias, r.Status, r.Body)
		}
	}
	for _, p := range [][2]*testcluster.Client{{alice, carol}, {carol, alice}} {
		if r := p[0].Watch(p[1].Alias, 3600); r.Status != 207 {
			t.Fatalf("%s watches %s: %d %s", p[0].Alias, p[1].Alias, r.Status, r.Body)
		}
		p[0].WaitNotify(0, w, func(n testcluster.Notify) bool { return n.From() == p[1].URL && n.State() == "online" })
	}
	for _, p := range [][2]*testcluster.Client{{alice, carol}, {carol, alice}} {
		body := p[0].MessageBody(p[1].Alias, "from site to site, from "+p[0].Alias)
		if r := p[0].Send(p[1].Alias, body); r.Status != 200 {
			t.Fatalf("%s → %s: %d %s", p[0].Alias, p[1].Alias, r.Status, r.Body)
		}
		p[1].WaitNotify(0, w, func(n testcluster.Notify) bool { return bytes.Equal(n.Body, body) })
	}

	// rvpctl at site b: the directory service there writes at the hub.
	adm := &directory.Client{Conn: top.Sites["b"].Connect("rvpctl"), Name: demoAdmin, Password: testPassword}
	dave := events.NewUser(demoDomain, "dave")
	must(adm.EnableUser(ctx, directory.UserSpec{User: dave, Home: "home2", DisplayName: "Dave"}))
	must(adm.SetPassword(ctx, dave, rvp.NewVerifiers(dave, demoNTDomain, "", demoDomain, testPassword)))
	if rec, err := hubDir.User(dave); err != nil || rec == nil {
		t.Errorf("dave is not in the hub's directory: %v", err)
	}
	for _, gw := range []string{gwB, gwA} {
		d := newClient(t, gw, "dave")
		d.UseHost(demoIMHost)
		testcluster.Eventually(t, w, func() error {
			if r := d.Login(3600); r.Status != 200 {
				return fmt.Errorf("dave's login at %s: %d %s", gw, r.Status, r.Body)
			}
			return nil
		})
	}
}
