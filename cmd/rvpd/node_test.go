package main

import (
	"bytes"
	"context"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
	"github.com/rvp-im/rvpd/testcluster"
)

var nodeListenRE = regexp.MustCompile(`gateway listening on http://(\S+)`)

// startNode runs `rvpd node` with args inside the test process and waits
// until it serves; its RVP address is returned when it has a gateway.
func startNode(t *testing.T, args ...string) (addr string, p *devProc) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p = &devProc{stdout: newSyncBuffer(), stderr: newSyncBuffer(), cancel: cancel, done: make(chan error, 1)}
	noEnv := func(string) (string, bool) { return "", false }
	go func() { p.done <- exec(ctx, append([]string{"node"}, args...), noEnv, p.stdout, p.stderr) }()
	failed := make(chan error, 1)
	go func() {
		select {
		case err := <-p.done:
			p.done <- err
			failed <- err
		case <-ctx.Done():
		}
	}()
	if _, err := p.stdout.waitMatch(regexp.MustCompile(`  NATS: `), 60*time.Second, failed); err != nil {
		cancel()
		t.Fatalf("%v\nstderr:\n%s", err, p.stderr.String())
	}
	if m := nodeListenRE.FindStringSubmatch(p.stdout.String()); m != nil {
		addr = m[1]
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("rvpd node log:\n%s", tail(p.stderr.String(), 200))
		}
		p.stop(t)
	})
	return addr, p
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

	// The administrator adds home2 and dave through rvpd dev's directory
	// service, as rvpctl does.
	nc, err := nats.Connect(dev.natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	adm := &projections.AdminClient{Conn: nc, Name: demoAdmin, Password: testPassword}
	ctx := context.Background()
	if err := adm.Do(ctx, "home.create", map[string]any{"name": "home2", "host": "home2.example.test", "hosts_users": true}, nil); err != nil {
		t.Fatal(err)
	}
	dave := events.NewUser(demoDomain, "dave")
	if err := adm.Do(ctx, "user.enable", projections.UserSpec{User: dave, Home: "home2", DisplayName: "Dave"}, nil); err != nil {
		t.Fatal(err)
	}
	v := projections.NewVerifiers(dave, demoNTDomain, "", demoDomain, testPassword)
	if err := adm.Do(ctx, "password.set", map[string]any{"user": dave, "verifiers": v}, nil); err != nil {
		t.Fatal(err)
	}

	// A node without the cluster key is refused with what to do.
	noEnv := func(string) (string, bool) { return "", false }
	err = exec(ctx, []string{"node", "-nats", dev.natsURL, "-home", "home2"}, noEnv, &bytes.Buffer{}, &bytes.Buffer{})
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
}
