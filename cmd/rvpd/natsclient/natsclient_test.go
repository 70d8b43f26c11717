package natsclient

import (
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/nats-io/nats.go"
)

// TestHintClosedAfterHandshake: with TLS 1.3 a server that verifies its
// clients checks the client's certificate after the client has finished
// its handshake; whether the client then reads the server's alert
// (remote error: tls: certificate required) or finds the connection
// closed under its CONNECT (nats.go: tls error: connection closed by
// remote after TLS handshake: broken pipe, connection reset, EOF) is a
// race. Both say the same: the client certificate was missing or
// refused. (Seen against three nats-server processes: 5 of 12 rvpctl
// runs without -nats.tls-cert got the second, then hinted "is rvpd
// running?".) The errors are built as nats.go v1.55.0 builds them
// (tlsHandshakeEOF).
func TestHintClosedAfterHandshake(t *testing.T) {
	closed := func(cause error) error {
		return fmt.Errorf("%w: connection closed by remote after TLS handshake: %w", nats.ErrTLS, cause)
	}
	for _, cause := range []error{
		&net.OpError{Op: "write", Net: "tcp", Err: os.NewSyscallError("write", syscall.EPIPE)},
		&net.OpError{Op: "write", Net: "tcp", Err: os.NewSyscallError("write", syscall.ECONNRESET)},
		io.EOF,
	} {
		err := closed(cause)
		if got := (Flags{TLSCA: "ca.pem"}).Hint(err, "nats://127.0.0.1:4222", "is the cluster up?"); !strings.Contains(got, "give a client certificate with -nats.tls-cert and -nats.tls-key") {
			t.Errorf("without a client certificate, %v: hint %q, want it to say to give one", err, got)
		}
		if got := (Flags{TLSCA: "ca.pem", TLSCert: "c.pem", TLSKey: "k.pem"}).Hint(err, "nats://127.0.0.1:4222", "is the cluster up?"); !strings.Contains(got, "refused the client certificate of -nats.tls-cert c.pem") {
			t.Errorf("with a client certificate, %v: hint %q, want it to say the client certificate of -nats.tls-cert c.pem was refused", err, got)
		}
	}
	// Closed before any TLS: no hint of certificates.
	if got := (Flags{}).Hint(io.EOF, "nats://127.0.0.1:4222", "is the cluster up?"); got != "is the cluster up?" {
		t.Errorf("EOF without TLS: hint %q", got)
	}
}

// TestHintWrongPassword: a cluster that refused the user and password of
// the -nats URLs was said to require credentials, as if none were given
// (helper-78's drill).
func TestHintWrongPassword(t *testing.T) {
	for urls, want := range map[string]string{
		"nats://rvpd:wrong@127.0.0.1:4222": "refused the user and password (or token) in the -nats URLs",
		"nats://127.0.0.1:4222":            "requires credentials: give its credentials file with -nats.creds",
	} {
		if got := (Flags{}).Hint(nats.ErrAuthorization, urls, "is the cluster up?"); !strings.Contains(got, want) {
			t.Errorf("authorization refused, -nats %s: hint %q, want it to say %q", RedactURLs(urls), got, want)
		}
	}
}
