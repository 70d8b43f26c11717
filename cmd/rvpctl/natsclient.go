package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/nats-io/nats.go"
)

// natsClientFlags are how rvpctl proves who it is to the NATS cluster
// and knows its servers: a credentials file, and TLS with the cluster's
// CA and a client certificate. rvpd node and rvpd init have the same
// flags (cmd/rvpd/natsclient.go): the two mains share no package that
// could hold them.
type natsClientFlags struct {
	creds, tlsCA, tlsCert, tlsKey string
}

func (f *natsClientFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.creds, "nats.creds", "", "NATS credentials `file` (user JWT and seed), if the cluster requires one (default: RVPCTL_NATS_CREDS)")
	fs.StringVar(&f.tlsCA, "nats.tls-ca", "", "PEM `file` of the CA that signed the NATS servers' certificates (an internal CA); turns TLS on, as tls:// URLs do (default: RVPCTL_NATS_TLS_CA)")
	fs.StringVar(&f.tlsCert, "nats.tls-cert", "", "PEM client certificate `file` for NATS servers that verify their clients (verify: true); with -nats.tls-key (default: RVPCTL_NATS_TLS_CERT)")
	fs.StringVar(&f.tlsKey, "nats.tls-key", "", "PEM private key `file` of -nats.tls-cert (default: RVPCTL_NATS_TLS_KEY)")
}

// validate reads every file the flags name, so that one unreadable is
// reported at once, by its flag, rather than at the connection.
func (f natsClientFlags) validate() error {
	var errs []error
	if f.creds != "" {
		if _, err := os.ReadFile(f.creds); err != nil {
			errs = append(errs, fmt.Errorf("-nats.creds: %w", err))
		}
	}
	if f.tlsCA != "" {
		if pem, err := os.ReadFile(f.tlsCA); err != nil {
			errs = append(errs, fmt.Errorf("-nats.tls-ca: %w", err))
		} else if !x509.NewCertPool().AppendCertsFromPEM(pem) {
			errs = append(errs, fmt.Errorf("-nats.tls-ca %s: no PEM certificate in it; give the CA's certificate (BEGIN CERTIFICATE)", f.tlsCA))
		}
	}
	switch {
	case (f.tlsCert == "") != (f.tlsKey == ""):
		errs = append(errs, errors.New("-nats.tls-cert and -nats.tls-key come together: the client certificate and its private key"))
	case f.tlsCert != "":
		_, certErr := os.ReadFile(f.tlsCert)
		if certErr != nil {
			errs = append(errs, fmt.Errorf("-nats.tls-cert: %w", certErr))
		}
		_, keyErr := os.ReadFile(f.tlsKey)
		if keyErr != nil {
			errs = append(errs, fmt.Errorf("-nats.tls-key: %w", keyErr))
		}
		if certErr == nil && keyErr == nil {
			if _, err := tls.LoadX509KeyPair(f.tlsCert, f.tlsKey); err != nil {
				errs = append(errs, fmt.Errorf("-nats.tls-cert %s, -nats.tls-key %s: %w", f.tlsCert, f.tlsKey, err))
			}
		}
	}
	return errors.Join(errs...)
}

// options are the NATS options of the flags.
func (f natsClientFlags) options() []nats.Option {
	var opts []nats.Option
	if f.creds != "" {
		opts = append(opts, nats.UserCredentials(f.creds))
	}
	if f.tlsCA != "" {
		opts = append(opts, nats.RootCAs(f.tlsCA))
	}
	if f.tlsCert != "" {
		opts = append(opts, nats.ClientCert(f.tlsCert, f.tlsKey))
	}
	return opts
}

// hint says what to do about err, the error of a connection to NATS
// made with the flags.
func (f natsClientFlags) hint(err error) string {
	var unknownCA x509.UnknownAuthorityError
	var hostname x509.HostnameError
	msg := err.Error()
	switch {
	case errors.As(err, &unknownCA):
		if f.tlsCA != "" {
			return "the NATS server's certificate is not signed by the CA of -nats.tls-ca " + f.tlsCA + ": give the cluster's CA"
		}
		return "give the cluster's CA with -nats.tls-ca"
	case errors.As(err, &hostname):
		return "connect to the NATS servers by a name their certificates hold (-nats), or have their certificates issued for the names used"
	case strings.Contains(msg, "certificate required"), strings.Contains(msg, "bad certificate"), strings.Contains(msg, "unknown certificate authority"):
		if f.tlsCert == "" {
			return "the NATS servers verify their clients: give a client certificate with -nats.tls-cert and -nats.tls-key"
		}
		return "the NATS servers refused the client certificate of -nats.tls-cert " + f.tlsCert + ": give one signed by the CA they trust"
	case errors.Is(err, nats.ErrAuthorization), errors.Is(err, nats.ErrAuthExpired), errors.Is(err, nats.ErrAuthRevoked):
		if f.creds == "" {
			return "the NATS cluster requires credentials: give its credentials file with -nats.creds (or a user and password in the -nats URLs, in RVPCTL_NATS rather than on the command line)"
		}
		return "the NATS cluster refused the credentials of -nats.creds " + f.creds + ": give a valid user's"
	case errors.Is(err, nats.ErrSecureConnWanted):
		return "the NATS servers offer no TLS: turn it on in their configuration (tls { ... }), or drop -nats.tls-* and use nats:// URLs"
	case strings.Contains(msg, "first record does not look like a TLS handshake"):
		return "the NATS servers speak no TLS at these addresses: use nats:// URLs without -nats.tls-ca, or turn TLS on in the servers"
	}
	return "is rvpd running? set -nats or RVPCTL_NATS"
}

// redactURLs returns the comma-separated NATS URLs urls with the password
// of each (nats://user:password@host), or its token (nats://token@host),
// replaced by xxxxx, to be shown.
func redactURLs(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		if !strings.Contains(p, "@") {
			continue
		}
		p = strings.TrimSpace(p)
		if !strings.Contains(p, "://") {
			p = "nats://" + p // as nats.Connect takes it
		}
		if u, err := url.Parse(p); err == nil {
			if _, ok := u.User.Password(); !ok {
				u.User = url.User("xxxxx") // a token
			}
			parts[i] = u.Redacted()
		} else {
			parts[i] = "(a URL with credentials that does not parse)"
		}
	}
	return strings.Join(parts, ",")
}
