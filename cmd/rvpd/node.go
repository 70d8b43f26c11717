package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/cmd/rvpd/natsclient"
	"github.com/rvp-im/rvpd/directory"
	"github.com/rvp-im/rvpd/gateway"
	"github.com/rvp-im/rvpd/homenode"
	"github.com/rvp-im/rvpd/projections"
)

type nodeFlags struct {
	roleFlags
	siteFlags
	natsClient       natsclient.Flags
	name, data, nats string
	gateway          string
	homes            string
	router           string
	admin            bool
	replicas         int
	migrateFacts     bool
}

// validate reports every problem of a node's flags at once: the roles'
// (roleFlags.validate) and the node's own.
func (f nodeFlags) validate(lookupEnv func(string) (string, bool)) error {
	errs := []error{f.roleFlags.validate(), f.siteFlags.validate(), f.natsClient.Validate()}
	if f.gateway == "" && len(splitList(f.homes)) == 0 && f.router == "" && !f.admin {
		errs = append(errs, errors.New("no role given: -gateway ADDR, -home H, -router NAME or -admin (one or more)"))
	}
	seen := map[string]bool{}
	for _, h := range splitList(f.homes) {
		if seen[h] {
			errs = append(errs, fmt.Errorf("-home %s: %s is given twice; name each home server once (a node serves it once)", f.homes, h))
		}
		seen[h] = true
	}
	if f.name == "" {
		errs = append(errs, errors.New("-name is empty and the host has no name; give one"))
	}
	if _, ok := lookupEnv(envClusterKey); !ok && f.keyFile == "" {
		msg := "a node needs the cluster key its cluster was set up with: -cluster-key-file FILE or " + envClusterKey + " (rvpd init wrote it to a file; rvpd dev keeps its own in <data>/cluster.key)"
		if _, old := lookupEnv("RVP_CLUSTER_KEY"); old {
			msg += "; RVP_CLUSTER_KEY is no longer read, rename it " + envClusterKey
		}
		errs = append(errs, errors.New(msg))
	}
	if f.replicas < 1 || f.replicas > 5 {
		errs = append(errs, fmt.Errorf("-streams.replicas %d: want 1 to 5 (3 for a site)", f.replicas))
	}
	return errors.Join(errs...)
}

// runNode runs the roles it is given against an existing NATS cluster:
// the production shape, one or more per site, each role in as many
// processes as its load and failover need (a home server in one at a
// time).
func runNode(ctx context.Context, args []string, lookupEnv func(string) (string, bool), stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("rvpd node", flag.ContinueOnError)
	fs.SetOutput(stderr)
	setUsage(fs, "rvpd node -name NAME -nats URLS -cluster-key-file FILE (-gateway ADDR | -home H,... | -router NAME | -admin)... [flags]")
	var f nodeFlags
	host, _ := os.Hostname()
	fs.StringVar(&f.name, "name", host, "this node's name, unique in the cluster (its gateway's reply subjects, its NATS connection)")
	fs.StringVar(&f.data, "data", "./node-data", "directory of this node's Pebble projections")
	fs.StringVar(&f.nats, "nats", nats.DefaultURL, "NATS servers of the cluster, comma-separated URLs")
	f.natsClient.Register(fs, envName, nil)
	fs.StringVar(&f.keyFile, "cluster-key-file", "", "file holding the cluster key (64 hex digits); default: the environment's "+envClusterKey+". Every node of a cluster has the same")
	fs.StringVar(&f.gateway, "gateway", "", `serve RVP clients on this address, e.g. ":80" ("" for no gateway)`)
	fs.StringVar(&f.homes, "home", "", "own these home servers, comma-separated (each in one node at a time)")
	fs.StringVar(&f.router, "router", "", "answer lookups as a router node of this name (any number share them)")
	fs.BoolVar(&f.admin, "admin", false, "serve the directory service rvpctl talks to")
	fs.IntVar(&f.replicas, "streams.replicas", 1, "replicas of the streams this node creates if the cluster has none yet and was not set up by rvpd init, whose replicas it takes (3 for a site)")
	fs.BoolVar(&f.migrateFacts, "migrate-facts", false, "copy the facts of an older version's single fact stream into one stream per home server (once, with every other rvpd of the cluster stopped)")
	f.roleFlags.register(fs)
	f.siteFlags.register(fs)
	if err := parseFlags(fs, args, lookupEnv); err != nil {
		return err
	}
	if err := f.validate(lookupEnv); err != nil {
		return err
	}
	log, err := newLogger(stderr, f.logLevel, f.logFormat)
	if err != nil {
		return err
	}
	log = log.With("node", f.name)
	homes := splitList(f.homes)
	keyring, err := clusterKey(f.data, f.keyFile, lookupEnv)
	if err != nil {
		return err
	}
	if f.gateway != "" {
		warnNoAuth(log, f.auth)
	}

	setup, cancelSetup := context.WithTimeout(ctx, setupTimeout)
	defer cancelSetup()
	// The streams of a new cluster, with -streams.replicas; those there
	// are left as their administrator set them.
	so := f.streamOptions()
	so.Replicas, so.CreateOnly = f.replicas, true
	// A cluster set up by rvpd init says which key it was set up with, and
	// the replicas of its streams: those this node creates (a home
	// server's facts) have them too, whatever -streams.replicas says.
	prepare := func(ctx context.Context, js jetstream.JetStream, so *projections.StreamOptions) error {
		c, err := directory.ReadCluster(ctx, js)
		if err != nil {
			return err
		}
		if c.Created == nil {
			return nil
		}
		if c.Created.KeyCheck != keyring.KeyCheck() {
			return directory.CheckKey(ctx, js, keyring)
		}
		so.Replicas = c.Created.Replicas
		return nil
	}
	f.siteFlags.apply(&so)
	p, err := openProcess(setup, log, clusterLink("rvpd-node-"+f.name, f.nats, f.natsClient, log), so, prepare, f.data, f.storeOptions(), f.migrateFacts)
	if err != nil {
		return err
	}
	defer p.close()
	// The site watch, for the home nodes (a lost site's users offline)
	// and the gateway (requests for them refused at once).
	site, err := setupSite(setup, f.siteFlags, p.nc, p.js, p.dir, len(homes) > 0 || f.gateway != "", log)
	if err != nil {
		return err
	}
	if err := catchUpDirectory(setup, p.js, p.dir, log); err != nil {
		return fmt.Errorf("read the directory: %w", err)
	}
	for _, h := range homes {
		if hs, err := p.dir.HomeServer(h); err != nil {
			return err
		} else if hs == nil {
			return fmt.Errorf("home server %s is not in the directory; create it first (rvpctl home create %s -host <host name>)", h, h)
		}
		// Refused here, not by its home node: the lease retries a home
		// node that fails, and this would fail every time.
		if f.site != "" {
			if err := homenode.CheckSite(p.dir, h, f.site); err != nil {
				return err
			}
		}
	}

	rs := roleSet{nc: p.nc, js: p.js, db: p.db, dir: p.dir, keyring: keyring, log: log, flags: f.roleFlags,
		gatewayID: f.name, homes: homes, streams: p.streams, holder: f.name, router: f.router, site: site}
	if f.admin {
		writes := p.js
		if site != nil {
			writes = site.writes // the hub's
		}
		rs.admin = &directory.Admin{JetStream: writes, Directory: p.dir, Keyring: keyring, Actor: "rvpd-node-" + f.name}
	}
	if f.gateway != "" {
		if rs.listener, err = gateway.Listen(f.gateway); err != nil {
			return fmt.Errorf("listen for RVP on %s: %w (choose another address with -gateway)", f.gateway, err)
		}
	}
	if rs.ops, err = listenOps(f.ops); err != nil {
		if rs.listener != nil {
			rs.listener.Close()
		}
		return err
	}
	return p.run(ctx, rs, func() {
		printNodeBanner(stdout, f, rs, p.nc)
		printOps(stdout, rs.ops)
	})
}

func printNodeBanner(w io.Writer, f nodeFlags, rs roleSet, nc *nats.Conn) {
	fmt.Fprintf(w, "rvpd node %s:\n", f.name)
	if rs.listener != nil {
		fmt.Fprintf(w, "  gateway listening on http://%s\n", rs.listener.Addr())
	}
	if len(rs.homes) > 0 {
		fmt.Fprintf(w, "  home servers: %s\n", strings.Join(rs.homes, ", "))
	}
	if rs.router != "" {
		fmt.Fprintf(w, "  router node: %s\n", rs.router)
	}
	if rs.admin != nil {
		fmt.Fprintf(w, "  directory service for rvpctl\n")
	}
	fmt.Fprintf(w, "  NATS: %s   data: %s\n", natsclient.RedactURLs(nc.ConnectedUrl()), f.data)
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// clusterLink reaches a NATS cluster at urls (comma-separated) as a
// client named name, with the credentials and TLS of client: it
// reconnects for ever, to whichever server answers, and reports the
// connection's loss only when it is closed for good. It logs why a
// reconnection fails, with what to do (a renewed client certificate the
// servers refuse), once for each reason until the connection is back.
func clusterLink(name, urls string, client natsclient.Flags, log *slog.Logger) natsLink {
	return func() (*nats.Conn, <-chan error, func(), error) {
		lost := make(chan error, 1)
		// refused holds the reasons of failed reconnections logged since
		// the connection was lost. nats.go calls the handlers from one
		// goroutine of its own; the mutex makes that no assumption.
		var mu sync.Mutex
		refused := map[string]bool{}
		reconnectFailed := func(err error) {
			hint := client.Hint(err, urls, "")
			reason := hint
			if reason == "" {
				reason = reconnectReason(err)
			}
			mu.Lock()
			seen := refused[reason]
			refused[reason] = true
			mu.Unlock()
			if seen {
				return
			}
			attrs := []any{"err", err}
			if hint != "" {
				attrs = append(attrs, "hint", hint)
			}
			log.Warn("NATS reconnection failed; retrying (logged once for each reason until the connection is back)", attrs...)
		}
		opts := []nats.Option{nats.Name(name), nats.MaxReconnects(-1), nats.ReconnectWait(time.Second),
			nats.DisconnectErrHandler(func(c *nats.Conn, err error) {
				if c.IsClosed() {
					return // closed by this process, not lost
				}
				log.Warn("NATS connection lost; reconnecting", "err", err)
			}),
			nats.ReconnectHandler(func(c *nats.Conn) {
				mu.Lock()
				clear(refused)
				mu.Unlock()
				log.Info("NATS connection back", "server", natsclient.RedactURLs(c.ConnectedUrl()))
			}),
			// A server that could not be reached.
			nats.ReconnectErrHandler(func(_ *nats.Conn, err error) { reconnectFailed(err) }),
			// A server that refused the connection (TLS, credentials)
			// while reconnecting, and the connection's other
			// asynchronous errors (a slow consumer, a permission
			// denied), which nats.go would write to standard error.
			nats.ErrorHandler(func(c *nats.Conn, sub *nats.Subscription, err error) {
				if !c.IsConnected() {
					reconnectFailed(err)
					return
				}
				attrs := []any{"err", err}
				if sub != nil {
					attrs = append(attrs, "subject", sub.Subject)
				}
				log.Warn("NATS error", attrs...)
			}),
			nats.ClosedHandler(func(*nats.Conn) {
				select {
				case lost <- errors.New("connection closed"):
				default:
				}
			})}
		opts = append(opts, natsclient.Liveness()...)
		nc, err := nats.Connect(urls, append(opts, client.Options()...)...)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("connect to NATS at %s: %w (%s)", natsclient.RedactURLs(urls), err, client.Hint(err, urls, "is the cluster up? give its servers with -nats"))
		}
		// A server cut off from the rest of the cluster answers pings:
		// the connection moves off it when JetStream answers elsewhere.
		reach := natsclient.ReachWatch{Conn: nc, Logger: log, Dial: func(url string) (*nats.Conn, error) {
			return nats.Connect(url, append([]nats.Option{nats.Name(name + "-reach"), nats.NoReconnect(), nats.Timeout(natsclient.PingInterval)}, client.Options()...)...)
		}}
		stop := make(chan struct{})
		var watchers sync.WaitGroup
		watchers.Go(func() { watchRefusals(nc, time.Second, stop, reconnectFailed) })
		watchers.Go(func() { reach.Run(stop) })
		return nc, lost, func() {
			close(stop)
			watchers.Wait()
			nc.Close()
		}, nil
	}
}

// watchRefusals gives failed every err that nc's reconnections end with
// in their handshake, read every interval while nc is not connected,
// until stop is closed. nats.go reports those (a server's certificate
// not signed by -nats.tls-ca, a key that is not its certificate's) to no
// handler: it keeps the last in nc.LastError, which a handler-less
// reconnection loop would leave unlogged, however long it goes on.
func watchRefusals(nc *nats.Conn, interval time.Duration, stop <-chan struct{}, failed func(error)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		if nc.IsConnected() {
			continue
		}
		if err := nc.LastError(); err != nil {
			failed(err)
		}
	}
}

// reconnectReason is what a failed reconnection's err says, but for the
// local address of its connection: a connection reset after the client's
// CONNECT (servers that refuse a client certificate after a TLS 1.3
// handshake) names the ephemeral port of each attempt ("read tcp
// 127.0.0.1:47002->...: connection reset by peer"), and each attempt is
// the same reason.
func reconnectReason(err error) string {
	msg := err.Error()
	var op *net.OpError
	if errors.As(err, &op) && op.Source != nil {
		msg = strings.ReplaceAll(msg, op.Source.String()+"->", "")
	}
	return msg
}
