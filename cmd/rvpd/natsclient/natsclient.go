// Package natsclient is how rvpd's processes (rvpd node, rvpd init) and
// rvpctl reach a NATS cluster as its clients: the flags by which they
// prove who they are and know its servers (a credentials file, TLS with
// the cluster's CA and a client certificate), what to do when a
// connection fails, and the cluster's URLs fit to be shown.
package natsclient

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
)

// Flags are a NATS client's credentials and TLS settings.
type Flags struct {
	Creds, TLSCA, TLSCert, TLSKey string
	// env names the environment variable a flag also comes from
	// (RVPD_NATS for -nats), for the hints.
	env func(flag string) string
}

// Register defines the flags -nats.creds, -nats.tls-ca, -nats.tls-cert
// and -nats.tls-key in fs. env names the environment variable each also
// comes from; note, when set, adds to each flag's help what it returns
// for the flag's name (rvpctl says its variables there).
func (f *Flags) Register(fs *flag.FlagSet, env, note func(flag string) string) {
	f.env = env
	if note == nil {
		note = func(string) string { return "" }
	}
	fs.StringVar(&f.Creds, "nats.creds", "", "NATS credentials `file` (user JWT and seed), if the cluster requires one"+note("nats.creds"))
	fs.StringVar(&f.TLSCA, "nats.tls-ca", "", "PEM `file` of the CA that signed the NATS servers' certificates (an internal CA); turns TLS on, as tls:// URLs do"+note("nats.tls-ca"))
	fs.StringVar(&f.TLSCert, "nats.tls-cert", "", "PEM client certificate `file` for NATS servers that verify their clients (verify: true); with -nats.tls-key"+note("nats.tls-cert"))
	fs.StringVar(&f.TLSKey, "nats.tls-key", "", "PEM private key `file` of -nats.tls-cert"+note("nats.tls-key"))
}

// Validate reads every file the flags name, so that one unreadable is
// reported at once, by its flag, rather than at the first connection.
func (f Flags) Validate() error {
	var errs []error
	if f.Creds != "" {
		if _, err := os.ReadFile(f.Creds); err != nil {
			errs = append(errs, fmt.Errorf("-nats.creds: %w", err))
		}
	}
	if f.TLSCA != "" {
		if pem, err := os.ReadFile(f.TLSCA); err != nil {
			errs = append(errs, fmt.Errorf("-nats.tls-ca: %w", err))
		} else if !x509.NewCertPool().AppendCertsFromPEM(pem) {
			errs = append(errs, fmt.Errorf("-nats.tls-ca %s: no PEM certificate in it; give the CA's certificate (BEGIN CERTIFICATE)", f.TLSCA))
		}
	}
	switch {
	case (f.TLSCert == "") != (f.TLSKey == ""):
		errs = append(errs, errors.New("-nats.tls-cert and -nats.tls-key come together: the client certificate and its private key"))
	case f.TLSCert != "":
		_, certErr := os.ReadFile(f.TLSCert)
		if certErr != nil {
			errs = append(errs, fmt.Errorf("-nats.tls-cert: %w", certErr))
		}
		_, keyErr := os.ReadFile(f.TLSKey)
		if keyErr != nil {
			errs = append(errs, fmt.Errorf("-nats.tls-key: %w", keyErr))
		}
		if certErr == nil && keyErr == nil {
			if _, err := tls.LoadX509KeyPair(f.TLSCert, f.TLSKey); err != nil {
				errs = append(errs, fmt.Errorf("-nats.tls-cert %s, -nats.tls-key %s: %w", f.TLSCert, f.TLSKey, err))
			}
		}
	}
	return errors.Join(errs...)
}

// Options are the NATS options of the flags. The files are read again at
// each connection, so that a renewed certificate is taken at the next.
func (f Flags) Options() []nats.Option {
	var opts []nats.Option
	if f.Creds != "" {
		opts = append(opts, nats.UserCredentials(f.Creds))
	}
	if f.TLSCA != "" {
		opts = append(opts, nats.RootCAs(f.TLSCA))
	}
	if f.TLSCert != "" {
		opts = append(opts, nats.ClientCert(f.TLSCert, f.TLSKey))
	}
	return opts
}

// PingInterval and MaxPingsOutstanding are how a long-lived client
// notices a server gone silent with its connection open (stopped with
// SIGSTOP, a frozen virtual machine, a lost route that leaves no reset):
// a ping every PingInterval, and the connection taken for lost, and
// another server tried, when more than MaxPingsOutstanding go
// unanswered; 4 to 6 s. nats.go's defaults (2 minutes, 2) left a node
// on a frozen server minutes with every request it took waiting on it.
// A server answers a ping at once, however busy the connection.
const (
	PingInterval        = 2 * time.Second
	MaxPingsOutstanding = 2
)

// Liveness returns the options of PingInterval and MaxPingsOutstanding.
func Liveness() []nats.Option {
	return []nats.Option{nats.PingInterval(PingInterval), nats.MaxPingsOutstanding(MaxPingsOutstanding)}
}

// Hint says what to do about err, the error of a connection to NATS made
// with the flags to urls (the -nats URLs); otherwise, when err says
// nothing of TLS or credentials, it returns otherwise.
func (f Flags) Hint(err error, urls, otherwise string) string {
	var unknownCA x509.UnknownAuthorityError
	var hostname x509.HostnameError
	msg := err.Error()
	switch {
	case errors.As(err, &unknownCA):
		if f.TLSCA != "" {
			return "the NATS server's certificate is not signed by the CA of -nats.tls-ca " + f.TLSCA + ": give the cluster's CA"
		}
		return "give the cluster's CA with -nats.tls-ca"
	case errors.As(err, &hostname):
		return "connect to the NATS servers by a name their certificates hold (-nats), or have their certificates issued for the names used"
	case closedAfterHandshake(err):
		// TLS 1.3: the server checks the client's certificate after the
		// client's handshake is done, and its alert may be lost to a
		// write on the connection it has closed.
		if f.TLSCert == "" {
			return "the NATS servers closed the connection after the TLS handshake, as servers that verify their clients do: give a client certificate with -nats.tls-cert and -nats.tls-key"
		}
		return "the NATS servers closed the connection after the TLS handshake, as when they refused the client certificate of -nats.tls-cert " + f.TLSCert + ": give one signed by the CA they trust"
	case strings.Contains(msg, "certificate required"), strings.Contains(msg, "bad certificate"), strings.Contains(msg, "unknown certificate authority"):
		if f.TLSCert == "" {
			return "the NATS servers verify their clients: give a client certificate with -nats.tls-cert and -nats.tls-key"
		}
		return "the NATS servers refused the client certificate of -nats.tls-cert " + f.TLSCert + ": give one signed by the CA they trust"
	case errors.Is(err, nats.ErrAuthorization), errors.Is(err, nats.ErrAuthExpired), errors.Is(err, nats.ErrAuthRevoked):
		if f.Creds == "" && strings.Contains(urls, "@") {
			return "the NATS cluster refused the user and password (or token) in the -nats URLs: check them, or give a credentials file with -nats.creds"
		}
		if f.Creds == "" {
			where := "the environment"
			if f.env != nil {
				where = f.env("nats")
			}
			return "the NATS cluster requires credentials: give its credentials file with -nats.creds (or a user and password in the -nats URLs, in " + where + " rather than on the command line)"
		}
		return "the NATS cluster refused the credentials of -nats.creds " + f.Creds + ": give a valid user's"
	case errors.Is(err, nats.ErrSecureConnWanted):
		return "the NATS servers offer no TLS: turn it on in their configuration (tls { ... }), or drop -nats.tls-* and use nats:// URLs"
	case strings.Contains(msg, "first record does not look like a TLS handshake"):
		return "the NATS servers speak no TLS at these addresses: use nats:// URLs without -nats.tls-ca, or turn TLS on in the servers"
	}
	return otherwise
}

// closedAfterHandshake says whether err is nats.go's for a connection
// its server closed right after a TLS handshake: what a server that
// refuses the client's certificate does, seen from the client.
func closedAfterHandshake(err error) bool {
	return errors.Is(err, nats.ErrTLS) &&
		(errors.Is(err, io.EOF) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET))
}

// RedactURLs returns the comma-separated NATS URLs urls with the password
// of each (nats://user:password@host), or its token (nats://token@host),
// replaced by xxxxx, to be shown or logged.
func RedactURLs(urls string) string {
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
