package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/directory"
	"github.com/rvp-im/rvpd/testcluster"
)

// production is a cluster set up as the README's "A production cluster"
// says: three NATS servers, rvpd init, a node with the directory service
// and a gateway, rvpctl (the binary) creating the IM domain acme.test,
// home server home1 and users, and a node owning home1.
type production struct {
	nats    *testcluster.NATSCluster
	keyFile string
	addr    string // the gateway
	js      jetstream.JetStream
	ctl     func(stdin string, args ...string) string
	init    string // what rvpd init printed
}

const productionAdminPW = "first-admin-pw-1"

func startProduction(t *testing.T, users ...string) *production {
	t.Helper()
	rvpctl := buildCommand(t, "../rvpctl", "rvpctl")
	p := &production{nats: testcluster.StartNATSCluster(t, testcluster.NATSClusterOptions{})}
	urls := p.nats.URLs()
	p.keyFile = filepath.Join(t.TempDir(), "cluster.key")
	ctx := context.Background()

	var stdout, stderr bytes.Buffer
	err := execIn(ctx, []string{"init", "-nats", urls, "-cluster-key-file", p.keyFile, "-home.lease-ttl", "3s"},
		noEnv, strings.NewReader(productionAdminPW+"\n"), &stdout, &stderr)
	if err != nil {
		t.Fatalf("rvpd init: %v\n%s", err, stderr.String())
	}
	p.init = stdout.String()
	nc := p.nats.Connect("check")
	t.Cleanup(nc.Close)
	p.js, _ = jetstream.New(nc)

	p.addr, _ = startNode(t, "-name", "node1", "-nats", urls, "-cluster-key-file", p.keyFile, "-data", t.TempDir(),
		"-admin", "-gateway", "127.0.0.1:0")
	p.ctl = func(stdin string, args ...string) string {
		t.Helper()
		cmd := osexec.Command(rvpctl, args...)
		cmd.Env = append(os.Environ(), "RVPCTL_NATS="+urls, "RVPCTL_ADMIN=admin", "RVPCTL_ADMIN_PASSWORD="+productionAdminPW)
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("rvpctl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	// Its clients find the gateway as 127.0.0.1 (librvp names its server
	// in its URLs as its SRV record gave it): a host name of the domain.
	p.ctl("", "domain", "create", "acme.test", "-hosts", "127.0.0.1")
	p.ctl("", "home", "create", "home1", "-host", "imhome1.acme.test")
	for _, u := range users {
		p.ctl("", "user", "enable", u+"@acme.test", "-home", "home1", "-name", u)
		p.ctl(u+"-pw-12345\n", "password", "set", u+"@acme.test")
	}
	startNode(t, "-name", "node2", "-nats", urls, "-cluster-key-file", p.keyFile, "-data", t.TempDir(), "-home", "home1")
	return p
}

// TestInitProductionCluster follows the README's "A production cluster"
// on three empty NATS servers (startProduction), and an RVP client signs
// in. A second init is refused, and a node with another cluster key does
// not start; every stream, those the nodes created included, has three
// replicas.
func TestInitProductionCluster(t *testing.T) {
	p := startProduction(t, "dave")
	ctx := context.Background()
	if !strings.Contains(p.init, "initialised") || !strings.Contains(p.init, "generated and written to "+p.keyFile) {
		t.Errorf("rvpd init printed:\n%s", p.init)
	}
	if st, err := os.Stat(p.keyFile); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("key file: %v; want mode 0600", err)
	}

	// Again: refused, with what to do instead.
	var stdout, stderr bytes.Buffer
	err := execIn(ctx, []string{"init", "-nats", p.nats.URLs(), "-cluster-key-file", p.keyFile}, noEnv, strings.NewReader(productionAdminPW+"\n"), &stdout, &stderr)
	if !errors.Is(err, directory.ErrInitialized) || !strings.Contains(err.Error(), "admin") || !strings.Contains(err.Error(), "rvpctl") {
		t.Errorf("a second rvpd init: %v", err)
	}
	if out := p.ctl("", "user", "show", "dave@acme.test"); !strings.Contains(out, "home1") {
		t.Errorf("rvpctl user show:\n%s", out)
	}
	if out := p.ctl("", "status"); !strings.Contains(out, "3 (leader n") {
		t.Errorf("rvpctl status does not show R3 streams and their leaders:\n%s", out)
	}

	// A node with another key refuses to start.
	otherKey := filepath.Join(t.TempDir(), "other.key")
	if _, err := directory.LoadOrCreateKey(otherKey); err != nil {
		t.Fatal(err)
	}
	err = exec(ctx, []string{"node", "-name", "wrong", "-nats", p.nats.URLs(), "-cluster-key-file", otherKey, "-data", t.TempDir(), "-home", "home1"},
		noEnv, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "not the one this cluster was initialised with") {
		t.Errorf("a node with another cluster key: %v", err)
	}

	// dave signs in at the first node's gateway; the second node decides.
	dave := testcluster.NewClient(t, p.addr, "dave")
	dave.UseHost("im.acme.test")
	dave.Creds = &testcluster.Credentials{Scheme: testcluster.SchemeNTLMv1, User: "dave", Domain: "ACME", Password: "dave-pw-12345"}
	if r := dave.Login(3600); r.Status != 200 {
		t.Fatalf("dave signs in: %d %s", r.Status, r.Body)
	}
	if r := dave.SetState("online", 600, 0); r.Status != 207 {
		t.Fatalf("dave online: %d %s", r.Status, r.Body)
	}
	names := p.js.StreamNames(ctx)
	n := 0
	for name := range names.Name() {
		n++
		st, err := p.js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if r := st.CachedInfo().Config.Replicas; r != 3 {
			t.Errorf("stream %s: %d replicas, want 3", name, r)
		}
	}
	if err := names.Err(); err != nil || n < 5 {
		t.Errorf("%d streams: %v", n, err)
	}
}

// TestInteropProductionCluster: on the cluster of the README's "A
// production cluster", two users of Pidgin's librvp (the real client)
// sign in, see each other and exchange a message.
func TestInteropProductionCluster(t *testing.T) {
	testcluster.Driver(t) // skips before anything starts when the client is missing
	p := startProduction(t, "alice", "bob")
	start := func(alias string) *testcluster.Pidgin {
		return testcluster.StartPidgin(t, testcluster.PidginOptions{
			User: alias + "@acme.test", Password: alias + "-pw-12345", Server: p.addr, Domain: "ACME", Debug: os.Getenv("RVP_PIDGIN_DEBUG") == "1",
		})
	}
	alice, bob := start("alice"), start("bob")
	testcluster.Befriend(pidginWait, alice, bob)
	alice.Do("send bob@acme.test hello from a production cluster")
	bob.Wait(pidginWait, `^IM alice@acme\.test hello from a production cluster$`)
}
