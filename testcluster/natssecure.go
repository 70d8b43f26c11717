package testcluster

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
)

// TLSFiles are PEM files, written to a test's temporary directory, of a
// private CA, a server certificate it signed for 127.0.0.1 and localhost,
// a client certificate it signed, and another CA and a client
// certificate of that other CA, which the server trusts not.
type TLSFiles struct {
	CA, ServerCert, ServerKey, ClientCert, ClientKey string
	OtherCA, OtherClientCert, OtherClientKey         string
}

// WriteTLSFiles generates the certificates of TLSFiles.
func WriteTLSFiles(t testing.TB) TLSFiles {
	t.Helper()
	dir := t.TempDir()
	write := func(name, typ string, der []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	serial := int64(0)
	// issue makes a key and a certificate of tmpl signed by parent's key
	// (itself when parent is nil) and writes both.
	issue := func(name string, tmpl *x509.Certificate, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey, string, string) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		serial++
		tmpl.SerialNumber = big.NewInt(serial)
		tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour)
		if parent == nil {
			parent, parentKey = tmpl, key
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
		if err != nil {
			t.Fatal(err)
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		return cert, key, write(name+".pem", "CERTIFICATE", der), write(name+"-key.pem", "PRIVATE KEY", keyDER)
	}
	ca := func(name string) *x509.Certificate {
		return &x509.Certificate{Subject: pkix.Name{CommonName: name}, IsCA: true, BasicConstraintsValid: true,
			KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	}
	leaf := func(name string, usage x509.ExtKeyUsage) *x509.Certificate {
		c := &x509.Certificate{Subject: pkix.Name{CommonName: name}, KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}}
		if usage == x509.ExtKeyUsageServerAuth {
			c.DNSNames, c.IPAddresses = []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
		}
		return c
	}
	var f TLSFiles
	caCert, caKey, caFile, _ := issue("ca", ca("rvpd test CA"), nil, nil)
	otherCert, otherKey, otherFile, _ := issue("other-ca", ca("another CA"), nil, nil)
	f.CA, f.OtherCA = caFile, otherFile
	_, _, f.ServerCert, f.ServerKey = issue("server", leaf("nats", x509.ExtKeyUsageServerAuth), caCert, caKey)
	_, _, f.ClientCert, f.ClientKey = issue("client", leaf("rvpd", x509.ExtKeyUsageClientAuth), caCert, caKey)
	_, _, f.OtherClientCert, f.OtherClientKey = issue("other-client", leaf("rvpd", x509.ExtKeyUsageClientAuth), otherCert, otherKey)
	return f
}

// StartTLSNATS runs a NATS server with JetStream in this process that
// speaks TLS only, with the server certificate of f, and verifies its
// clients (verify: true): each needs a certificate f's CA signed. It
// returns the server's tls:// URL.
func StartTLSNATS(t testing.TB, f TLSFiles) string {
	t.Helper()
	tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: f.ServerCert, KeyFile: f.ServerKey, CaFile: f.CA, Verify: true})
	if err != nil {
		t.Fatal(err)
	}
	srv := startEmbedded(t, &server.Options{Host: "127.0.0.1", Port: -1, TLS: true, TLSVerify: true, TLSConfig: tc, TLSTimeout: 5})
	return "tls://127.0.0.1:" + strconv.Itoa(srv.Addr().(*net.TCPAddr).Port)
}

// StartCredsNATS runs a NATS server with JetStream in this process in
// operator mode (JWT authentication, as with accounts and nsc): only
// users of an account its operator signed may connect. It returns the
// server's URL, a credentials file of a user of that account, and one of
// a user of another operator's account, which the server refuses.
func StartCredsNATS(t testing.TB) (url, creds, otherCreds string) {
	t.Helper()
	dir := t.TempDir()
	resolver := &server.MemAccResolver{}
	// account makes an account of operator op, signed by it, stores it
	// in the resolver and writes a credentials file of one of its users.
	account := func(name string, op nkeys.KeyPair, jetStream bool) (pub string) {
		acc, err := nkeys.CreateAccount()
		if err != nil {
			t.Fatal(err)
		}
		pub, _ = acc.PublicKey()
		ac := jwt.NewAccountClaims(pub)
		ac.Name = name
		if jetStream {
			ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
		}
		accJWT, err := ac.Encode(op)
		if err != nil {
			t.Fatal(err)
		}
		if err := resolver.Store(pub, accJWT); err != nil {
			t.Fatal(err)
		}
		user, err := nkeys.CreateUser()
		if err != nil {
			t.Fatal(err)
		}
		userPub, _ := user.PublicKey()
		uc := jwt.NewUserClaims(userPub)
		uc.Name = name + "-user"
		userJWT, err := uc.Encode(acc)
		if err != nil {
			t.Fatal(err)
		}
		seed, _ := user.Seed()
		data, err := jwt.FormatUserConfig(userJWT, seed)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, name+".creds")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return pub
	}
	operator := func() (nkeys.KeyPair, *jwt.OperatorClaims) {
		op, err := nkeys.CreateOperator()
		if err != nil {
			t.Fatal(err)
		}
		pub, _ := op.PublicKey()
		oc := jwt.NewOperatorClaims(pub)
		oc.Name = "rvpd-test"
		if _, err := oc.Encode(op); err != nil { // signs it
			t.Fatal(err)
		}
		return op, oc
	}
	op, oc := operator()
	sys := account("SYS", op, false)
	account("RVP", op, true)
	other, _ := operator()
	account("OTHER", other, true)
	srv := startEmbedded(t, &server.Options{Host: "127.0.0.1", Port: -1, TrustedOperators: []*jwt.OperatorClaims{oc},
		AccountResolver: resolver, SystemAccount: sys})
	return srv.ClientURL(), filepath.Join(dir, "RVP.creds"), filepath.Join(dir, "OTHER.creds")
}

// startEmbedded starts a NATS server of opts with JetStream, quiet, and
// stops it when the test ends.
func startEmbedded(t testing.TB, opts *server.Options) *server.Server {
	t.Helper()
	opts.JetStream, opts.StoreDir, opts.NoSigs, opts.NoLog = true, t.TempDir(), true, true
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS server not ready after 10s")
	}
	return srv
}
