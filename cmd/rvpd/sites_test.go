package main

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rvp-im/rvpd/directory"
	"github.com/rvp-im/rvpd/events"
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
	noEnv := func(string) (string, bool) { return "", false }
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}

	// rvpd init runs at the hub only, and a home server it makes needs
	// its site.
	for _, args := range [][]string{
		{"-site", "a"},
		{"-site", "hub", "-home.name", "home1", "-home.host", "imhome1.example.test"},
		{"-home.name", "home1", "-home.host", "imhome1.example.test", "-home.site", "a"},
	} {
		var stdout, stderr bytes.Buffer
		err := execIn(ctx, append([]string{"init", "-nats", top.Hub.URL(), "-cluster-key-file", keyFile}, args...), noEnv, strings.NewReader(testPassword+"\n"), &stdout, &stderr)
		if err == nil || !strings.Contains(err.Error(), "site") {
			t.Errorf("rvpd init %s: %v; want it refused", strings.Join(args, " "), err)
		}
	}
	// The hub set up by rvpd init -site hub, with home1 at site a.
	var stdout, stderr bytes.Buffer
	err := execIn(ctx, []string{"init", "-site", "hub", "-nats", top.Hub.URL(), "-cluster-key-file", keyFile, "-streams.replicas", "1",
		"-admin.name", demoAdmin, "-domain", demoDomain, "-domain.im-host", demoIMHost, "-domain.nt-domain", demoNTDomain,
		"-home.name", "home1", "-home.host", "imhome1.example.test", "-home.site", "a"}, noEnv, strings.NewReader(testPassword+"\n"), &stdout, &stderr)
	if err != nil {
		t.Fatalf("rvpd init -site hub: %v\n%s", err, stderr.String())
	}
	if !strings.Contains(stdout.String(), "JetStream domain hub") || !strings.Contains(stdout.String(), "-site SITE -hub hub") {
		t.Errorf("rvpd init -site hub printed:\n%s", stdout.String())
	}
	hubJS := top.Hub.JetStream("init")
	if _, err := hubJS.Stream(ctx, events.StreamRequests); err == nil {
		t.Errorf("the hub has the shared requests stream %s: a site's layout has none", events.StreamRequests)
	}
	if st, err := hubJS.Stream(ctx, events.StreamDirectory); err != nil {
		t.Fatal(err)
	} else if st.CachedInfo().Config.RePublish == nil {
		t.Errorf("the hub's directory stream does not announce its events to the sites' copies: %+v", st.CachedInfo().Config)
	}

	// The rest as rvpctl leaves it.
	key, err := directory.LoadOrCreateKey(keyFile)
	must(err)
	keyring, err := directory.NewKeyring(key)
	must(err)
	hubDir := testcluster.FollowDirectory(t, hubJS, "hub")
	admin := &directory.Admin{JetStream: hubJS, Directory: hubDir, Keyring: keyring, Actor: "test"}
	testcluster.Eventually(t, 10*time.Second, func() error {
		if hs, err := hubDir.HomeServer("home1"); err != nil || hs == nil || hs.Site != "a" {
			return fmt.Errorf("home1 after rvpd init: %+v, %v; want it at site a", hs, err)
		}
		return nil
	})
	must(admin.CreateHomeServer(ctx, "home2", "imhome2.example.test", "b", true))
	must(admin.CreateRouter(ctx, "router1", demoDomain, demoIMHost, "proxy"))
	for alias, home := range map[string]string{"alice": "home1", "carol": "home2"} {
		u := events.NewUser(demoDomain, alias)
		must(admin.EnableUser(ctx, directory.UserSpec{User: u, Home: home, DisplayName: alias}))
		must(admin.SetPassword(ctx, u, rvp.NewVerifiers(u, demoNTDomain, "", demoDomain, testPassword)))
	}

	// A node of site b cannot own home1, of site a.
	stderr.Reset()
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

// TestSitesScript runs deploy/sites/run.sh, the two-site recipe of the
// README, as CI's bounded smoke test: the binaries built once (SITES_BIN),
// the script starts a hub and sites a and b (a NATS server each, rvpd init
// at the hub, the directory service, a node per site) and sets them up
// with rvpctl; alice signs in at site a and bob at site b, they watch each
// other and exchange messages. Then the script cuts site b (its NATS
// server stopped): alice sees bob offline and a message to him is answered
// 503; it mends b: each sees the other online again without a restart.
// Last, the script's stop leaves nothing running, and a start on the data
// it kept serves again.
func TestSitesScript(t *testing.T) {
	if testing.Short() {
		t.Skip("builds rvpd, rvpctl and nats-server and runs deploy/sites/run.sh")
	}
	bin := t.TempDir()
	for _, b := range []struct{ pkg, name string }{{".", "rvpd"}, {"../rvpctl", "rvpctl"}, {"github.com/nats-io/nats-server/v2", "nats-server"}} {
		if out, err := osexec.Command("go", "build", "-o", filepath.Join(bin, b.name), b.pkg).CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", b.name, err, out)
		}
	}
	dir := t.TempDir()
	base := freePortRange(t, 9)
	const password = "sites-pw-12345"
	script, err := filepath.Abs("../../deploy/sites/run.sh")
	if err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		cmd := osexec.CommandContext(ctx, script, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "SITES_DIR="+dir, "SITES_BIN="+bin, "SITES_PORT="+strconv.Itoa(base), "SITES_PASSWORD="+password)
		cmd.WaitDelay = 5 * time.Second
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("run.sh %s: %v\n%s\n%s", strings.Join(args, " "), err, out, scriptLogs(dir))
		}
		return string(out)
	}
	start := time.Now()
	t.Cleanup(func() { run("stop") })
	out := run("start")
	t.Logf("run.sh start: %.1f s", time.Since(start).Seconds())
	gwA, gwB := "127.0.0.1:"+strconv.Itoa(base+4), "127.0.0.1:"+strconv.Itoa(base+5)
	for _, want := range []string{"gateway http://" + gwA, "gateway http://" + gwB, "password of alice, bob and admin: " + password} {
		if !strings.Contains(out, want) {
			t.Errorf("run.sh start does not say %q:\n%s", want, out)
		}
	}

	client := func(gw, alias string) *testcluster.Client {
		c := testcluster.NewClient(t, gw, alias)
		c.Creds = &testcluster.Credentials{Scheme: testcluster.SchemeNTLMv1, User: alias, Domain: "EXAMPLE", Password: password}
		c.UseHost("im.example.test")
		if r := c.Login(3600); r.Status != 200 {
			t.Fatalf("%s signs in at %s: %d %s\n%s", alias, gw, r.Status, r.Body, scriptLogs(dir))
		}
		if r := c.SetState("online", 600, 0); r.Status != 207 {
			t.Fatalf("%s online: %d %s", alias, r.Status, r.Body)
		}
		return c
	}
	alice, bob := client(gwA, "alice"), client(gwB, "bob")
	const w = 10 * time.Second
	sees := func(c, of *testcluster.Client, state string) {
		t.Helper()
		c.WaitNotify(0, w, func(n testcluster.Notify) bool { return n.From() == of.URL && n.State() == state })
	}
	for _, p := range [][2]*testcluster.Client{{alice, bob}, {bob, alice}} {
		if r := p[0].Watch(p[1].Alias, 3600); r.Status != 207 {
			t.Fatalf("%s watches %s: %d %s", p[0].Alias, p[1].Alias, r.Status, r.Body)
		}
		sees(p[0], p[1], "online")
	}
	for _, p := range [][2]*testcluster.Client{{alice, bob}, {bob, alice}} {
		body := p[0].MessageBody(p[1].Alias, "from site to site, from "+p[0].Alias)
		if r := p[0].Send(p[1].Alias, body); r.Status != 200 {
			t.Fatalf("%s → %s: %d %s", p[0].Alias, p[1].Alias, r.Status, r.Body)
		}
		p[1].WaitNotify(0, w, func(n testcluster.Notify) bool { return bytes.Equal(n.Body, body) })
	}

	// Site b cut: bob offline for alice, a message to him 503 at once.
	skip := len(alice.Notifies())
	cut := time.Now()
	run("cut", "b")
	alice.WaitNotify(skip, w, func(n testcluster.Notify) bool { return n.From() == bob.URL && n.State() == "offline" })
	t.Logf("site b cut: alice saw bob offline %.1f s after run.sh cut b", time.Since(cut).Seconds())
	sent := time.Now()
	if r := alice.Send("bob", alice.MessageBody("bob", "to a lost site")); r.Status != 503 {
		t.Errorf("alice → bob, site b cut: %d %s; want 503", r.Status, r.Body)
	}
	t.Logf("site b cut: alice's message to bob answered in %v", time.Since(sent).Round(time.Millisecond))

	// Mended: both see the other online again, no restart.
	skipA, skipB := len(alice.Notifies()), len(bob.Notifies())
	mended := time.Now()
	run("mend", "b")
	alice.WaitNotify(skipA, w, func(n testcluster.Notify) bool { return n.From() == bob.URL && n.State() == "online" })
	bob.WaitNotify(skipB, w, func(n testcluster.Notify) bool { return n.From() == alice.URL && n.State() == "online" })
	t.Logf("site b mended: each saw the other online %.1f s after run.sh mend b", time.Since(mended).Seconds())

	stopping := time.Now()
	run("stop")
	t.Logf("run.sh stop: %.1f s", time.Since(stopping).Seconds())
	if st := run("status"); strings.Contains(st, "running") {
		t.Errorf("after run.sh stop:\n%s", st)
	}
	// Started again on the data it kept: bob signs in at once.
	run("start")
	client(gwB, "bob")
	run("stop")
	t.Logf("run.sh start to stop: %.1f s", time.Since(start).Seconds())
}

// freePortRange returns the first of n consecutive loopback ports free
// now.
func freePortRange(t *testing.T, n int) int {
	t.Helper()
	for base := 24300 + rand.IntN(200)*n; base < 60000; base += n {
		free := true
		for p := base; p < base+n && free; p++ {
			ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
			if err != nil {
				free = false
				continue
			}
			ln.Close()
		}
		if free {
			return base
		}
	}
	t.Fatal("no free ports")
	return 0
}

// scriptLogs is the end of each log run.sh kept in dir.
func scriptLogs(dir string) string {
	var b strings.Builder
	logs, _ := filepath.Glob(filepath.Join(dir, "log", "*.log"))
	for _, f := range logs {
		data, _ := os.ReadFile(f)
		fmt.Fprintf(&b, "== %s\n%s\n", filepath.Base(f), tail(string(data), 15))
	}
	return b.String()
}
