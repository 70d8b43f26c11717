package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/cmd/rvpd/natsclient"
	"github.com/rvp-im/rvpd/directory"
	"github.com/rvp-im/rvpd/testcluster"
)

// linkFails connects with client and wants an error that holds every
// one of want.
func linkFails(t *testing.T, url string, client natsclient.Flags, want ...string) {
	t.Helper()
	_, _, release, err := clusterLink("rvpd-node-test", url, client, slog.New(slog.NewTextHandler(io.Discard, nil)))()
	if err == nil {
		release()
		t.Errorf("connected with %+v, want an error saying %q", client, want)
		return
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("with %+v the error lacks %q:\n%v", client, w, err)
		}
	}
}

// linkWorks connects with client and uses JetStream over the connection.
func linkWorks(t *testing.T, url string, client natsclient.Flags) {
	t.Helper()
	nc, _, release, err := clusterLink("rvpd-node-test", url, client, slog.New(slog.NewTextHandler(io.Discard, nil)))()
	if err != nil {
		t.Fatalf("with %+v: %v", client, err)
	}
	defer release()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.AccountInfo(context.Background()); err != nil {
		t.Fatalf("with %+v, JetStream: %v", client, err)
	}
}

// TestNATSClientTLS: a node reaches NATS servers that speak TLS with a
// certificate of a private CA and verify their clients' certificates
// (verify: true) when given the CA (-nats.tls-ca) and a client
// certificate (-nats.tls-cert, -nats.tls-key); without them, or with
// others, the error says which to give.
func TestNATSClientTLS(t *testing.T) {
	f := testcluster.WriteTLSFiles(t)
	url := testcluster.StartTLSNATS(t, f)
	linkWorks(t, url, natsclient.Flags{TLSCA: f.CA, TLSCert: f.ClientCert, TLSKey: f.ClientKey})
	// A nats:// URL with the CA speaks TLS too.
	linkWorks(t, strings.Replace(url, "tls://", "nats://", 1), natsclient.Flags{TLSCA: f.CA, TLSCert: f.ClientCert, TLSKey: f.ClientKey})

	linkFails(t, url, natsclient.Flags{TLSCert: f.ClientCert, TLSKey: f.ClientKey},
		"x509: certificate signed by unknown authority", "give the cluster's CA with -nats.tls-ca")
	linkFails(t, url, natsclient.Flags{TLSCA: f.OtherCA, TLSCert: f.ClientCert, TLSKey: f.ClientKey},
		"x509: certificate signed by unknown authority", "not signed by the CA of -nats.tls-ca "+f.OtherCA)
	linkFails(t, url, natsclient.Flags{TLSCA: f.CA},
		"give a client certificate with -nats.tls-cert and -nats.tls-key")
	linkFails(t, url, natsclient.Flags{TLSCA: f.CA, TLSCert: f.OtherClientCert, TLSKey: f.OtherClientKey},
		"refused the client certificate of -nats.tls-cert "+f.OtherClientCert)
}

// TestNATSClientCreds: a node reaches NATS servers that take only users
// of their accounts (operator mode, JWTs) with -nats.creds; without it,
// or with a user of another operator, the error says what to give, and
// never shows the seed.
func TestNATSClientCreds(t *testing.T) {
	url, creds, other := testcluster.StartCredsNATS(t)
	linkWorks(t, url, natsclient.Flags{Creds: creds})
	linkFails(t, url, natsclient.Flags{}, "nats: Authorization Violation", "give its credentials file with -nats.creds")
	linkFails(t, url, natsclient.Flags{Creds: other}, "refused the credentials of -nats.creds "+other)
	for _, file := range []string{creds, other} {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		seed := strings.TrimSpace(strings.Split(strings.SplitAfter(string(data), "-----BEGIN USER NKEY SEED-----")[1], "------END")[0])
		// Released when it connects: left open, it reconnected every second
		// to this test's server once stopped, for as long as the test
		// process ran, and a later test's listener given that port got
		// its CONNECT (TestConformance's callback, in CI).
		_, _, release, err := clusterLink("rvpd-node-test", url, natsclient.Flags{Creds: file}, slog.New(slog.NewTextHandler(io.Discard, nil)))()
		if err == nil {
			release()
		}
		if err != nil && strings.Contains(err.Error(), seed) {
			t.Errorf("the error shows the seed: %v", err)
		}
	}
}

// TestNATSClientFlagsReported: rvpd node and rvpd init report each
// -nats.* file they cannot read at once, by its flag, from the command
// line or the environment (RVPD_NATS_TLS_CA...), and a certificate
// without its key.
func TestNATSClientFlagsReported(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.pem")
	for _, mode := range []string{"node", "init"} {
		var stdout, stderr bytes.Buffer
		err := exec(context.Background(), []string{mode, "-nats.creds", missing, "-nats.tls-cert", missing}, func(k string) (string, bool) {
			return missing, k == "RVPD_NATS_TLS_CA"
		}, &stdout, &stderr)
		if err == nil {
			t.Fatalf("rvpd %s started with unreadable -nats.* files", mode)
		}
		for _, want := range []string{"-nats.creds: open " + missing, "-nats.tls-ca: open " + missing, "-nats.tls-cert and -nats.tls-key come together"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("rvpd %s: the error lacks %q:\n%v", mode, want, err)
			}
		}
	}
}

// TestInitAndNodeOverTLS: rvpd init sets up a cluster whose NATS servers
// speak TLS and verify their clients, given the CA and a client
// certificate in the environment (RVPD_NATS_TLS_*), and says what to give
// without them; then rvpd node runs on it, given them as flags.
func TestInitAndNodeOverTLS(t *testing.T) {
	f := testcluster.WriteTLSFiles(t)
	url := testcluster.StartTLSNATS(t, f)
	dir := t.TempDir()
	args := []string{"init", "-nats", url, "-streams.replicas", "1", "-cluster-key-file", filepath.Join(dir, "cluster.key"), "-log.level", "error"}
	var stdout, stderr bytes.Buffer
	err := execIn(context.Background(), args, noEnv, strings.NewReader("init-password-1\n"), &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "give the cluster's CA with -nats.tls-ca") {
		t.Fatalf("rvpd init without the CA: %v, want it said to give -nats.tls-ca", err)
	}
	env := map[string]string{"RVPD_NATS_TLS_CA": f.CA, "RVPD_NATS_TLS_CERT": f.ClientCert, "RVPD_NATS_TLS_KEY": f.ClientKey}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	stdout.Reset()
	if err := execIn(context.Background(), args, lookup, strings.NewReader("init-password-1\n"), &stdout, &stderr); err != nil {
		t.Fatalf("rvpd init over TLS: %v\n%s", err, stderr.String())
	}
	// Its next steps start the nodes and rvpctl over TLS too.
	for _, want := range []string{"-nats.tls-ca " + f.CA + " -nats.tls-cert CERT -nats.tls-key KEY", "RVPCTL_NATS_TLS_CA=" + f.CA + " RVPCTL_NATS_TLS_CERT=CERT RVPCTL_NATS_TLS_KEY=KEY"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("rvpd init's next steps lack %q:\n%s", want, stdout.String())
		}
	}
	nc, _, release, err := clusterLink("check", url, natsclient.Flags{TLSCA: f.CA, TLSCert: f.ClientCert, TLSKey: f.ClientKey}, slog.New(slog.NewTextHandler(io.Discard, nil)))()
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	c, err := directory.ReadCluster(context.Background(), js)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Initialized() {
		t.Errorf("rvpd init succeeded but the cluster is not initialised: %+v", c)
	}
	_, p := startNode(t, "-name", "n1", "-nats", url, "-nats.tls-ca", f.CA, "-nats.tls-cert", f.ClientCert, "-nats.tls-key", f.ClientKey,
		"-cluster-key-file", filepath.Join(dir, "cluster.key"), "-data", t.TempDir(), "-admin")
	if !strings.Contains(p.stdout.String(), "NATS: "+url) {
		t.Errorf("the node's banner does not show it connected to %s:\n%s", url, p.stdout.String())
	}
}

// TestNATSClientCertRenewed: a node reads its client certificate again
// at each reconnection (docs/operations.md, "Securing NATS"). A renewed
// certificate the servers refuse is reported in the node's log, with
// what to do, at each failed reconnection that says why (before, nats.go
// wrote "remote error: tls: certificate required on connection [5]" to
// stderr, outside the log); once a good one is on disk, the node is
// back.
func TestNATSClientCertRenewed(t *testing.T) {
	f := testcluster.WriteTLSFiles(t)
	url := testcluster.StartTLSNATS(t, f)
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "client.pem"), filepath.Join(dir, "client-key.pem")
	install := func(fromCert, fromKey string) {
		t.Helper()
		for from, to := range map[string]string{fromCert: cert, fromKey: key} {
			data, err := os.ReadFile(from)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(to+".new", data, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(to+".new", to); err != nil {
				t.Fatal(err)
			}
		}
	}
	install(f.ClientCert, f.ClientKey)
	logs := newSyncBuffer()
	nc, _, release, err := clusterLink("rvpd-node-test", url, natsclient.Flags{TLSCA: f.CA, TLSCert: cert, TLSKey: key}, slog.New(slog.NewTextHandler(logs, nil)))()
	if err != nil {
		t.Fatal(err)
	}
	defer release()

	install(f.OtherClientCert, f.OtherClientKey) // "renewed" by the wrong CA
	if err := nc.ForceReconnect(); err != nil {
		t.Fatal(err)
	}
	testcluster.Eventually(t, 10*time.Second, func() error {
		if !strings.Contains(logs.String(), "refused the client certificate of -nats.tls-cert "+cert) {
			return fmt.Errorf("the log does not say the client certificate was refused:\n%s", logs.String())
		}
		return nil
	})
	if nc.IsConnected() {
		t.Fatal("connected with a certificate of another CA")
	}

	install(f.ClientCert, f.ClientKey)
	testcluster.Eventually(t, 10*time.Second, func() error {
		if !nc.IsConnected() || !strings.Contains(logs.String(), "NATS connection back") {
			return fmt.Errorf("not back with the good certificate on disk (connected %v):\n%s", nc.IsConnected(), logs.String())
		}
		return nil
	})
}

// clientFiles copies f's CA, client certificate and key to files of
// their own, which install replaces with another's (from, to).
func clientFiles(t *testing.T, f testcluster.TLSFiles) (ca, cert, key string, install func(from, to string)) {
	dir := t.TempDir()
	ca, cert, key = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "client.pem"), filepath.Join(dir, "client-key.pem")
	install = func(from, to string) {
		t.Helper()
		data, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(to, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	install(f.CA, ca)
	install(f.ClientCert, cert)
	install(f.ClientKey, key)
	return ca, cert, key, install
}

// TestNATSRefusalOfThisSideLogged: a reconnection that fails in the TLS
// handshake for a reason of this side (the servers' certificate not
// signed by the CA file on disk now; a renewed certificate whose key is
// not the one beside it), which nats.go reports to no handler, is logged
// once, with what to do where there is a hint, and again after the
// connection has been back.
func TestNATSRefusalOfThisSideLogged(t *testing.T) {
	f := testcluster.WriteTLSFiles(t)
	url := testcluster.StartTLSNATS(t, f)
	ca, cert, key, install := clientFiles(t, f)
	logs := newSyncBuffer()
	nc, _, release, err := clusterLink("rvpd-node-test", url, natsclient.Flags{TLSCA: ca, TLSCert: cert, TLSKey: key}, slog.New(slog.NewTextHandler(logs, nil)))()
	if err != nil {
		t.Fatal(err)
	}
	defer release()

	for _, c := range []struct {
		what, from, to, want string
	}{
		{"another CA", f.OtherCA, ca, "not signed by the CA of -nats.tls-ca " + ca},
		{"a key not the certificate's", f.OtherClientKey, key, "private key does not match public key"},
		{"another CA again, after the connection was back", f.OtherCA, ca, "not signed by the CA of -nats.tls-ca " + ca},
	} {
		install(f.CA, ca)
		install(f.ClientKey, key)
		testcluster.Eventually(t, 10*time.Second, func() error {
			if !nc.IsConnected() {
				return errors.New("not connected with the good files")
			}
			return nil
		})
		before := strings.Count(logs.String(), c.want)
		install(c.from, c.to)
		if err := nc.ForceReconnect(); err != nil {
			t.Fatal(err)
		}
		testcluster.Eventually(t, 10*time.Second, func() error {
			if n := strings.Count(logs.String(), c.want) - before; n != 1 {
				return fmt.Errorf("with %s, the log says %q %d times since, want once:\n%s", c.what, c.want, n, logs.String())
			}
			return nil
		})
		// It goes on failing, read every second: still logged once.
		failedAt := strings.Count(logs.String(), "NATS reconnection failed")
		for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
			if strings.Count(logs.String(), "NATS reconnection failed") > failedAt {
				t.Fatalf("with %s, logged more than once:\n%s", c.what, logs.String())
			}
		}
	}
}

// TestReadyzSaysWhyNATSRefused: a reconnection that fails in the TLS
// handshake for a reason of this side (a renewed certificate on disk
// whose key is not the one beside it; a CA file that no longer holds
// the servers' CA) is reported by nats.go to no handler: /readyz says
// it, with the reconnection's state.
func TestReadyzSaysWhyNATSRefused(t *testing.T) {
	f := testcluster.WriteTLSFiles(t)
	url := testcluster.StartTLSNATS(t, f)
	ca, cert, key, install := clientFiles(t, f)
	log := slog.New(slog.DiscardHandler)
	nc, _, release, err := clusterLink("rvpd-node-test", url, natsclient.Flags{TLSCA: ca, TLSCert: cert, TLSKey: key}, log)()
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	o := newOps("n1", nc, log)
	natsReadiness := func() checkResult {
		_, results := o.readiness()
		for _, r := range results {
			if r.Name == "nats" {
				return r
			}
		}
		t.Fatalf("no nats condition in %+v", results)
		return checkResult{}
	}
	if r := natsReadiness(); !r.OK {
		t.Fatalf("connected, yet /readyz says %+v", r)
	}

	for _, c := range []struct {
		what, from, to, want string
	}{
		{"a key not the certificate's", f.OtherClientKey, key, "private key does not match public key"},
		{"another CA", f.OtherCA, ca, "certificate signed by unknown authority"},
	} {
		install(f.CA, ca)
		install(f.ClientKey, key)
		testcluster.Eventually(t, 10*time.Second, func() error {
			if !nc.IsConnected() {
				return errors.New("not connected with the good files")
			}
			return nil
		})
		install(c.from, c.to)
		if err := nc.ForceReconnect(); err != nil {
			t.Fatal(err)
		}
		testcluster.Eventually(t, 10*time.Second, func() error {
			if r := natsReadiness(); r.OK || !strings.Contains(r.Why, "not connected (reconnecting)") || !strings.Contains(r.Why, c.want) {
				return fmt.Errorf("with %s, /readyz says %+v; want it not connected, saying %q", c.what, r, c.want)
			}
			return nil
		})
	}
}
