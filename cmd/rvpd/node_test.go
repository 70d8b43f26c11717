package main

import (
	"bytes"
	"context"
	osexec "os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rvp-im/rvpd/directory"
	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/rvp"
	"github.com/rvp-im/rvpd/testcluster"
)

var nodeListenRE = regexp.MustCompile(`gateway listening on http://(\S+)`)

// startNode runs `rvpd node` with args inside the test process and waits
// until it serves; its RVP address is returned when it has a gateway.
func startNode(t *testing.T, args ...string) (addr string, p *devProc) {
	t.Helper()
	p, _ = startExec(t, append([]string{"node"}, args...), regexp.MustCompile(`  NATS: `))
	if m := nodeListenRE.FindStringSubmatch(p.stdout.String()); m != nil {
		addr = m[1]
	}
	return addr, p
}

// addHome2 adds home server home2 and dave, homed there, through rvpd
// dev's directory service, as rvpctl does.
func addHome2(t *testing.T, dev *devProc) {
	t.Helper()
	nc, err := nats.Connect(dev.natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	adm := &directory.Client{Conn: nc, Name: demoAdmin, Password: testPassword}
	ctx := context.Background()
	if err := adm.CreateHomeServer(ctx, directory.HomeServerSpec{Name: "home2", Host: "home2.example.test", HostsUsers: true}); err != nil {
		t.Fatal(err)
	}
	dave := events.NewUser(demoDomain, "dave")
	if err := adm.EnableUser(ctx, directory.UserSpec{User: dave, Home: "home2", DisplayName: "Dave"}); err != nil {
		t.Fatal(err)
	}
	v := rvp.NewVerifiers(dave, demoNTDomain, "", demoDomain, testPassword)
	if err := adm.SetPassword(ctx, dave, v); err != nil {
		t.Fatal(err)
	}
}

// TestNodeJoinsCluster runs a second process, `rvpd node`, against the
// NATS server of `rvpd dev`: it owns home server home2 and serves a
// gateway of its own. dave, homed on home2 and signed in at the node's
// gateway, and alice, on home1 at the dev process's, see each other's
// presence and exchange messages: requests, relays and replies cross the
// two processes over NATS only.
func TestNodeJoinsCluster(t *testing.T) {
	data := t.TempDir()
	dev := startDev(t, data)
	if dev.natsURL == "" {
		t.Fatal("rvpd dev printed no NATS address")
	}

	addHome2(t, dev)
	ctx := context.Background()

	// A node without the cluster key is refused with what to do.
	noEnv := func(string) (string, bool) { return "", false }
	err := exec(ctx, []string{"node", "-nats", dev.natsURL, "-home", "home2"}, noEnv, &bytes.Buffer{}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "cluster key") {
		t.Errorf("a node without the cluster key: %v", err)
	}
	err = exec(ctx, []string{"node", "-nats", dev.natsURL, "-home", "home9", "-cluster-key-file", filepath.Join(data, "cluster.key"),
		"-data", t.TempDir()}, noEnv, &bytes.Buffer{}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "home server home9 is not in the directory") {
		t.Errorf("a node for an unknown home server: %v", err)
	}

	addr, node := startNode(t, "-name", "node2", "-nats", dev.natsURL, "-data", t.TempDir(),
		"-cluster-key-file", filepath.Join(data, "cluster.key"), "-gateway", "127.0.0.1:0", "-home", "home2",
		"-lease.min", "1s", "-sub.min-lifetime", "1s", "-log.level", "debug")
	if addr == "" {
		t.Fatalf("the node printed no gateway address:\n%s", node.stdout.String())
	}

	alice := newClient(t, dev.addr, "alice")
	d := newClient(t, addr, "dave")
	d.UseHost(demoIMHost) // the node's gateway places hosts by the directory only
	for _, c := range []*testcluster.Client{alice, d} {
		if r := c.Login(3600); r.Status != 200 {
			t.Fatalf("%s login: %d %s", c.Alias, r.Status, r.Body)
		}
		if r := c.SetState("online", 600, 0); r.Status != 207 {
			t.Fatalf("%s online: %d %s", c.Alias, r.Status, r.Body)
		}
	}
	const w = 10 * time.Second
	if r := alice.Watch("dave", 3600); r.Status != 207 {
		t.Fatalf("alice watches dave: %d %s", r.Status, r.Body)
	}
	if r := d.Watch("alice", 3600); r.Status != 207 {
		t.Fatalf("dave watches alice: %d %s", r.Status, r.Body)
	}
	alice.WaitNotify(0, w, func(n testcluster.Notify) bool { return strings.HasSuffix(n.From(), "/dave") && n.State() == "online" })
	d.WaitNotify(0, w, func(n testcluster.Notify) bool { return strings.HasSuffix(n.From(), "/alice") && n.State() == "online" })
	if r := d.SetState("busy", 600, 0); r.Status != 207 {
		t.Fatalf("dave busy: %d", r.Status)
	}
	alice.WaitNotify(0, w, func(n testcluster.Notify) bool { return strings.HasSuffix(n.From(), "/dave") && n.State() == "busy" })
	for _, p := range [][2]*testcluster.Client{{alice, d}, {d, alice}} {
		body := p[0].MessageBody(p[1].Alias, "between two processes, from "+p[0].Alias)
		if r := p[0].Send(p[1].Alias, body); r.Status != 200 {
			t.Fatalf("%s → %s: %d %s", p[0].Alias, p[1].Alias, r.Status, r.Body)
		}
		p[1].WaitNotify(0, w, func(n testcluster.Notify) bool { return bytes.Equal(n.Body, body) })
	}
	// dave's facts were decided by the node: they are on home2's subjects.
	if !strings.Contains(node.stderr.String(), "home node serving") || !strings.Contains(node.stderr.String(), "home=home2") {
		t.Errorf("the node's log does not show home2 serving:\n%s", tail(node.stderr.String(), 20))
	}
	node.stop(t)
	// Stopped cleanly, it lets home2 go for a standby to take at once.
	if !strings.Contains(node.stderr.String(), `msg="home server let go"`) {
		t.Errorf("the node did not let home2 go when it stopped:\n%s", tail(node.stderr.String(), 20))
	}
}

// TestNodeFailover runs home2 on two nodes: the first (a process of the
// built binary) owns it, the second waits as a standby. The owner is
// killed with SIGKILL, letting nothing go; the standby takes home2 when
// the lease lapses, and dave's login renewal, sent meanwhile, is answered
// by it with his subscription, which survived in the facts; alice keeps
// seeing his changes.
func TestNodeFailover(t *testing.T) {
	bin := buildRvpd(t)
	data := t.TempDir()
	dev := startDev(t, data, "-home.lease-ttl", "2s")
	addHome2(t, dev)
	key := filepath.Join(data, "cluster.key")

	owner := osexec.Command(bin, "node", "-name", "node-a", "-nats", dev.natsURL, "-data", t.TempDir(),
		"-cluster-key-file", key, "-home", "home2", "-lease.min", "1s", "-sub.min-lifetime", "1s")
	ownerLog := newSyncBuffer()
	owner.Stdout, owner.Stderr = ownerLog, ownerLog
	if err := owner.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { owner.Process.Kill(); owner.Wait() })
	if _, err := ownerLog.waitMatch(regexp.MustCompile(`msg="home server owned"`), 30*time.Second, nil); err != nil {
		t.Fatalf("node-a: %v\n%s", err, ownerLog.String())
	}
	_, standby := startNode(t, "-name", "node-b", "-nats", dev.natsURL, "-data", t.TempDir(),
		"-cluster-key-file", key, "-home", "home2", "-lease.min", "1s", "-sub.min-lifetime", "1s")
	if _, err := standby.stderr.waitMatch(regexp.MustCompile(`standby: home server owned by another node.*owner=node-a`), 10*time.Second, nil); err != nil {
		t.Fatalf("node-b: %v\n%s", err, standby.stderr.String())
	}

	alice, dave := newClient(t, dev.addr, "alice"), newClient(t, dev.addr, "dave")
	for _, c := range []*testcluster.Client{alice, dave} {
		if r := c.Login(3600); r.Status != 200 {
			t.Fatalf("%s login: %d %s", c.Alias, r.Status, r.Body)
		}
		if r := c.SetState("online", 600, 0); r.Status != 207 {
			t.Fatalf("%s online: %d %s", c.Alias, r.Status, r.Body)
		}
	}
	if r := alice.Watch("dave", 3600); r.Status != 207 {
		t.Fatalf("alice watches dave: %d %s", r.Status, r.Body)
	}
	const w = 15 * time.Second
	alice.WaitNotify(0, w, func(n testcluster.Notify) bool { return strings.HasSuffix(n.From(), "/dave") && n.State() == "online" })

	atKill := len(alice.Notifies())
	owner.Process.Signal(syscall.SIGKILL)
	owner.Wait()
	killed := time.Now()
	r := dave.Do("SUBSCRIBE", "/instmsg/aliases/dave", nil, dave.From(),
		"Subscription-Id: "+strconv.Itoa(dave.LoginID), "Subscription-Lifetime: 3600")
	if r.Status != 200 || r.Header.Get("Subscription-Id") != strconv.Itoa(dave.LoginID) {
		t.Fatalf("dave's renewal after the owner died: %d (Subscription-Id %q, want %d) %s", r.Status, r.Header.Get("Subscription-Id"), dave.LoginID, r.Body)
	}
	t.Logf("renewal answered %v after the owner was killed (lease TTL 2s)", time.Since(killed).Round(10*time.Millisecond))
	if !strings.Contains(standby.stderr.String(), `msg="home server owned"`) {
		t.Errorf("node-b does not say it owns home2:\n%s", tail(standby.stderr.String(), 20))
	}
	// The new owner re-sends dave's state to his watchers: what node-a had
	// decided but not yet delivered when it died is not lost.
	alice.WaitNotify(atKill, w, func(n testcluster.Notify) bool { return strings.HasSuffix(n.From(), "/dave") && n.State() == "online" })
	seen := len(alice.Notifies())
	if r := dave.SetState("busy", 600, 0); r.Status != 207 {
		t.Fatalf("dave busy: %d %s", r.Status, r.Body)
	}
	alice.WaitNotify(seen, w, func(n testcluster.Notify) bool { return strings.HasSuffix(n.From(), "/dave") && n.State() == "busy" })
}
