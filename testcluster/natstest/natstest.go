// Package natstest starts a NATS server with JetStream in a test's own
// process and connects clients to it: the embedded server the tests of
// most packages run on. It imports nothing of rvpd's (as
// testcluster/jsfault), so that the tests of every package can use it
// without an import cycle; what a package adds of rvpd's (its streams,
// its buckets) stays in that package's tests, over Start and Connect.
//
// Clusters, leaf nodes, TLS and servers run as processes are
// testcluster's: this is one plain server.
package natstest

import (
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// DefaultReady is how long Start waits for the server to be ready.
const DefaultReady = 10 * time.Second

// Option changes the server Start starts.
type Option func(*settings)

type settings struct {
	opts  server.Options
	ready time.Duration
}

// Listen has the server listen on a random port of 127.0.0.1 (its
// ClientURL), for clients that connect over TCP; without it the server
// does not listen and is reached in-process only.
func Listen() Option {
	return func(s *settings) {
		s.opts.DontListen = false
		s.opts.Host, s.opts.Port = "127.0.0.1", -1
	}
}

// Domain gives the server's JetStream the domain domain ("" for none).
func Domain(domain string) Option {
	return func(s *settings) { s.opts.JetStreamDomain = domain }
}

// StoreDir has JetStream store in dir rather than in a directory of the
// test's own: a server started on what an earlier one stored.
func StoreDir(dir string) Option {
	return func(s *settings) { s.opts.StoreDir = dir }
}

// WithoutJetStream starts a plain NATS server, with no JetStream.
func WithoutJetStream() Option {
	return func(s *settings) { s.opts.JetStream = false }
}

// ReadyWithin has Start wait up to d for the server to be ready rather
// than DefaultReady (a large store takes longer to recover).
func ReadyWithin(d time.Duration) Option {
	return func(s *settings) { s.ready = d }
}

// Start starts a NATS server with JetStream (stored in tb.TempDir()
// unless StoreDir says otherwise), with no signal handlers and no log,
// not listening unless Listen says so, and returns it once it is ready
// for connections. The server is shut down, and waited for, when the test
// ends.
func Start(tb testing.TB, options ...Option) *server.Server {
	tb.Helper()
	s := settings{
		opts:  server.Options{ServerName: "natstest", JetStream: true, DontListen: true, NoSigs: true, NoLog: true},
		ready: DefaultReady,
	}
	for _, o := range options {
		o(&s)
	}
	if s.opts.JetStream && s.opts.StoreDir == "" {
		// Before the server's cleanup, so that it is removed after the
		// server has stopped writing to it.
		s.opts.StoreDir = tb.TempDir()
	}
	ns, err := server.NewServer(&s.opts)
	if err != nil {
		tb.Fatalf("natstest: NATS server not started: %v", err)
	}
	go ns.Start()
	tb.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(s.ready) {
		tb.Fatalf("natstest: NATS server not ready for connections after %s", s.ready)
	}
	return ns
}

// Connect connects a client to ns, with opts: in-process when ns does not
// listen, to its ClientURL when it does. It returns the connection, closed
// when the test ends, and a JetStream client of it.
func Connect(tb testing.TB, ns *server.Server, opts ...nats.Option) (*nats.Conn, jetstream.JetStream) {
	tb.Helper()
	url := ""
	if ns.Addr() == nil {
		opts = append(slices.Clip(opts), nats.InProcessServer(ns))
	} else {
		url = ns.ClientURL()
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		tb.Fatalf("natstest: no connection to the NATS server: %v", err)
	}
	tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatalf("natstest: no JetStream client: %v", err)
	}
	return nc, js
}
