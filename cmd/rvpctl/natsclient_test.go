package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/testcluster"
)

// rvpctlEnv runs rvpctl with args and the environment env.
func rvpctlEnv(env map[string]string, args ...string) (out, errOut string, err error) {
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	var o, e bytes.Buffer
	err = exec(context.Background(), args, lookup, strings.NewReader(""), &o, &e)
	return o.String(), e.String(), err
}

// directoryStream creates the directory stream, which rvpctl users
// reads, over a connection of opts.
func directoryStream(t *testing.T, url string, opts ...nats.Option) {
	t.Helper()
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: events.StreamDirectory, Subjects: []string{events.DirectoryFilter}}); err != nil {
		t.Fatal(err)
	}
}

// TestNATSTLS: rvpctl reaches NATS servers that speak TLS with a
// certificate of a private CA and verify their clients' certificates
// (verify: true) when given the CA and a client certificate, as flags or
// as RVPCTL_NATS_TLS_*; without them, or with others, it says which to
// give.
func TestNATSTLS(t *testing.T) {
	f := testcluster.WriteTLSFiles(t)
	url := testcluster.StartTLSNATS(t, f)
	directoryStream(t, url, nats.RootCAs(f.CA), nats.ClientCert(f.ClientCert, f.ClientKey))
	env := map[string]string{"RVPCTL_NATS": url}

	if out, errOut, err := rvpctlEnv(env, "-nats.tls-ca", f.CA, "-nats.tls-cert", f.ClientCert, "-nats.tls-key", f.ClientKey, "users"); err != nil {
		t.Fatalf("rvpctl users with the CA and a client certificate: %v\n%s", err, errOut)
	} else if !strings.HasPrefix(out, "USER") {
		t.Errorf("rvpctl users printed %q, want the table's head", out)
	}
	withEnv := map[string]string{"RVPCTL_NATS": url, "RVPCTL_NATS_TLS_CA": f.CA, "RVPCTL_NATS_TLS_CERT": f.ClientCert, "RVPCTL_NATS_TLS_KEY": f.ClientKey}
	if _, errOut, err := rvpctlEnv(withEnv, "users"); err != nil {
		t.Fatalf("rvpctl users with RVPCTL_NATS_TLS_*: %v\n%s", err, errOut)
	}

	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"-nats.tls-cert", f.ClientCert, "-nats.tls-key", f.ClientKey}, []string{"x509: certificate signed by unknown authority", "give the cluster's CA with -nats.tls-ca"}},
		{[]string{"-nats.tls-ca", f.OtherCA, "-nats.tls-cert", f.ClientCert, "-nats.tls-key", f.ClientKey}, []string{"x509: certificate signed by unknown authority", "not signed by the CA of -nats.tls-ca " + f.OtherCA}},
		{[]string{"-nats.tls-ca", f.CA}, []string{"give a client certificate with -nats.tls-cert and -nats.tls-key"}},
		{[]string{"-nats.tls-ca", f.CA, "-nats.tls-cert", f.OtherClientCert, "-nats.tls-key", f.OtherClientKey}, []string{"refused the client certificate of -nats.tls-cert " + f.OtherClientCert}},
	} {
		_, _, err := rvpctlEnv(env, append(c.args, "users")...)
		if err == nil {
			t.Errorf("rvpctl %s users: connected", strings.Join(c.args, " "))
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("rvpctl %s users: the error lacks %q:\n%v", strings.Join(c.args, " "), w, err)
			}
		}
	}
}

// TestNATSCreds: rvpctl reaches NATS servers that take only users of
// their accounts (operator mode, JWTs) with -nats.creds or
// RVPCTL_NATS_CREDS; without it, or with a user of another operator, it
// says what to give, and never shows the seed.
func TestNATSCreds(t *testing.T) {
	url, creds, other := testcluster.StartCredsNATS(t)
	directoryStream(t, url, nats.UserCredentials(creds))
	env := map[string]string{"RVPCTL_NATS": url}
	if _, errOut, err := rvpctlEnv(env, "-nats.creds", creds, "users"); err != nil {
		t.Fatalf("rvpctl -nats.creds users: %v\n%s", err, errOut)
	}
	if _, errOut, err := rvpctlEnv(map[string]string{"RVPCTL_NATS": url, "RVPCTL_NATS_CREDS": creds}, "users"); err != nil {
		t.Fatalf("rvpctl users with RVPCTL_NATS_CREDS: %v\n%s", err, errOut)
	}
	if _, _, err := rvpctlEnv(env, "users"); err == nil || !strings.Contains(err.Error(), "give its credentials file with -nats.creds") {
		t.Errorf("rvpctl users without credentials: %v, want it said to give -nats.creds", err)
	}
	_, _, err := rvpctlEnv(env, "-nats.creds", other, "users")
	if err == nil || !strings.Contains(err.Error(), "refused the credentials of -nats.creds "+other) {
		t.Errorf("rvpctl users with another operator's user: %v, want it said the credentials were refused", err)
	}
	data, rerr := os.ReadFile(other)
	if rerr != nil {
		t.Fatal(rerr)
	}
	seed := strings.TrimSpace(strings.Split(strings.SplitAfter(string(data), "-----BEGIN USER NKEY SEED-----")[1], "------END")[0])
	if err != nil && strings.Contains(err.Error(), seed) {
		t.Errorf("the error shows the seed: %v", err)
	}
}

// TestNATSFlagsReported: rvpctl reports each -nats.* file it cannot read
// at once, by its flag, from the command line or the environment, and a
// certificate without its key, before connecting; and a password in a
// -nats URL is not shown when the connection fails.
func TestNATSFlagsReported(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.pem")
	_, _, err := rvpctlEnv(map[string]string{"RVPCTL_NATS_TLS_CA": missing, "RVPCTL_NATS": "nats://127.0.0.1:1"}, "-nats.creds", missing, "-nats.tls-key", missing, "users")
	if err == nil {
		t.Fatal("rvpctl ran with unreadable -nats.* files")
	}
	for _, want := range []string{"-nats.creds: open " + missing, "-nats.tls-ca: open " + missing, "-nats.tls-cert and -nats.tls-key come together"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error lacks %q:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), "connect to") {
		t.Errorf("rvpctl tried to connect with unreadable -nats.* files: %v", err)
	}

	const secret = "s3cret-nats-pw"
	_, _, err = rvpctlEnv(map[string]string{"RVPCTL_NATS": "nats://rvpd:" + secret + "@127.0.0.1:1"}, "users")
	if err == nil {
		t.Fatal("rvpctl connected to nothing")
	}
	if strings.Contains(err.Error(), secret) {
		t.Errorf("the error shows the NATS password: %v", err)
	}
}
