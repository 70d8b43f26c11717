package testcluster

import (
	"bytes"
	"crypto/tls"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
)

// TestDeploySystemdUnits checks the unit files of deploy/systemd with
// systemd-analyze verify, when the machine has it: every key known, every
// value parsed, the programs they start executable (the test binary
// stands in for rvpd and nats-server). Any complaint fails it.
func TestDeploySystemdUnits(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	units := map[string]string{"nats-server.service": "nats-server.service", "rvpd@.service": "rvpd@gw1.service"}
	var paths []string
	for src, dst := range units {
		b, err := os.ReadFile(filepath.Join("..", "deploy", "systemd", src))
		if err != nil {
			t.Fatal(err)
		}
		for _, prog := range []string{"/usr/local/bin/rvpd", "/usr/local/bin/nats-server"} {
			b = bytes.ReplaceAll(b, []byte(prog+" "), []byte(self+" "))
		}
		if err := os.WriteFile(filepath.Join(dir, dst), b, 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, filepath.Join(dir, dst))
	}
	out, err := exec.Command(analyze, append([]string{"verify"}, paths...)...).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestDeployNATSConfigs parses deploy/nats's configurations as the
// nats-server of the module's version does: a site is a JetStream domain
// of its own with three routes and a leaf connection to the hub's three
// servers; the hub listens for the sites. Clients, routes and leaf
// connections speak TLS and show certificates (docs/operations.md,
// "Securing NATS"): the files' certificates under /etc/nats/tls are
// replaced by ones generated here, as nats-server reads them.
func TestDeployNATSConfigs(t *testing.T) {
	f := WriteTLSFiles(t)
	dir := t.TempDir()
	for _, c := range []struct {
		file, domain, server string
		hub                  bool
	}{{"site.conf", "a", "nats-a1", false}, {"hub.conf", "hub", "nats-hub1", true}} {
		conf, err := os.ReadFile(filepath.Join("..", "deploy", "nats", c.file))
		if err != nil {
			t.Fatal(err)
		}
		conf = bytes.ReplaceAll(conf, []byte("/etc/nats/tls/ca.pem"), []byte(f.CA))
		conf = bytes.ReplaceAll(conf, []byte("/etc/nats/tls/"+c.server+".pem"), []byte(f.ServerCert))
		conf = bytes.ReplaceAll(conf, []byte("/etc/nats/tls/"+c.server+"-key.pem"), []byte(f.ServerKey))
		if bytes.Contains(conf, []byte("/etc/nats/tls/")) {
			t.Errorf("%s names files of /etc/nats/tls other than ca.pem, %s.pem and %s-key.pem", c.file, c.server, c.server)
		}
		path := filepath.Join(dir, c.file)
		if err := os.WriteFile(path, conf, 0o600); err != nil {
			t.Fatal(err)
		}
		o, err := server.ProcessConfigFile(path)
		if err != nil {
			t.Errorf("%s: %v", c.file, err)
			continue
		}
		if !o.JetStream || o.JetStreamDomain != c.domain {
			t.Errorf("%s: JetStream %v, domain %q; want domain %q", c.file, o.JetStream, o.JetStreamDomain, c.domain)
		}
		if len(o.Routes) != 3 || o.Cluster.Name == "" {
			t.Errorf("%s: cluster %q with %d routes, want 3", c.file, o.Cluster.Name, len(o.Routes))
		}
		switch {
		case c.hub && o.LeafNode.Port == 0:
			t.Errorf("%s: the hub does not listen for leaf connections", c.file)
		case !c.hub && (len(o.LeafNode.Remotes) != 1 || len(o.LeafNode.Remotes[0].URLs) != 3):
			t.Errorf("%s: leaf remotes %+v, want one with the hub's three servers", c.file, o.LeafNode.Remotes)
		}
		if o.PingInterval == 0 || o.ServerName != c.server {
			t.Errorf("%s: ping interval %v, server name %q, want %q", c.file, o.PingInterval, o.ServerName, c.server)
		}
		verifies := func(tc *tls.Config) bool { return tc != nil && tc.ClientAuth == tls.RequireAndVerifyClientCert }
		if !verifies(o.TLSConfig) {
			t.Errorf("%s: clients without TLS, or their certificates unverified", c.file)
		}
		if !verifies(o.Cluster.TLSConfig) {
			t.Errorf("%s: routes without TLS, or their certificates unverified", c.file)
		}
		switch {
		case c.hub && !verifies(o.LeafNode.TLSConfig):
			t.Errorf("%s: the sites' leaf connections without TLS, or their certificates unverified", c.file)
		case !c.hub && len(o.LeafNode.Remotes) == 1 && (o.LeafNode.Remotes[0].TLSConfig == nil || len(o.LeafNode.Remotes[0].TLSConfig.Certificates) != 1):
			t.Errorf("%s: the leaf connection to the hub without TLS or without a certificate to show", c.file)
		}
	}
}
