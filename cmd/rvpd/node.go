package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/run"

	"github.com/rvp-im/rvpd/projections"
)

type nodeFlags struct {
	roleFlags
	name, data, nats, natsCreds string
	gateway                     string
	homes                       string
	router                      string
	admin                       bool
	replicas                    int
	migrateFacts                bool
}

// runNode runs the roles it is given against an existing NATS cluster:
// the production shape, one or more per site, each role in as many
// processes as its load and failover need (a home server in one at a
// time).
func runNode(ctx context.Context, args []string, lookupEnv func(string) (string, bool), stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("rvpd node", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var f nodeFlags
	host, _ := os.Hostname()
	fs.StringVar(&f.name, "name", host, "this node's name, unique in the cluster (its gateway's reply subjects, its NATS connection)")
	fs.StringVar(&f.data, "data", "./node-data", "directory of this node's Pebble projections")
	fs.StringVar(&f.nats, "nats", nats.DefaultURL, "NATS servers of the cluster, comma-separated URLs")
	fs.StringVar(&f.natsCreds, "nats.creds", "", "NATS credentials file (user JWT and seed), if the cluster requires one")
	fs.StringVar(&f.keyFile, "cluster-key-file", "", "file holding the cluster key (64 hex digits); default: the environment's RVP_CLUSTER_KEY. Every node of a cluster has the same")
	fs.StringVar(&f.gateway, "gateway", "", `serve RVP clients on this address, e.g. ":80" ("" for no gateway)`)
	fs.StringVar(&f.homes, "home", "", "own these home servers, comma-separated (each in one node at a time)")
	fs.StringVar(&f.router, "router", "", "answer lookups as a router node of this name (any number share them)")
	fs.BoolVar(&f.admin, "admin", false, "serve the directory service rvpctl talks to")
	fs.IntVar(&f.replicas, "streams.replicas", 1, "replicas of the streams this node creates if the cluster has none yet (3 for a site)")
	fs.BoolVar(&f.migrateFacts, "migrate-facts", false, "copy the facts of an older version's single fact stream into one stream per home server (once, with every other rvpd of the cluster stopped)")
	f.roleFlags.register(fs)
	if err := parseFlags(fs, args, lookupEnv); err != nil {
		return err
	}
	log, err := newLogger(stderr, f.logLevel, f.logFormat)
	if err != nil {
		return err
	}
	log = log.With("node", f.name)
	homes := splitList(f.homes)
	if f.gateway == "" && len(homes) == 0 && f.router == "" && !f.admin {
		return errors.New("no role given: -gateway ADDR, -home H, -router NAME or -admin (one or more)")
	}
	if f.name == "" {
		return errors.New("-name is empty and the host has no name; give one")
	}
	if _, ok := lookupEnv("RVP_CLUSTER_KEY"); !ok && f.keyFile == "" {
		return errors.New("a node needs the cluster key its cluster was set up with: -cluster-key-file FILE or RVP_CLUSTER_KEY (rvpd dev keeps its own in <data>/cluster.key)")
	}
	keyring, err := clusterKey(f.data, f.keyFile, lookupEnv)
	if err != nil {
		return err
	}
	if f.auth == "none" && f.gateway != "" {
		log.Warn("AUTHENTICATION IS OFF (-auth none): anyone can act as any user by naming them in RVP-From-Principal. Never expose this server.")
	}

	lost := make(chan error, 1)
	opts := []nats.Option{nats.Name("rvpd-node-" + f.name), nats.MaxReconnects(-1), nats.ReconnectWait(time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { log.Warn("NATS connection lost; reconnecting", "err", err) }),
		nats.ReconnectHandler(func(c *nats.Conn) { log.Info("NATS connection back", "server", c.ConnectedUrl()) }),
		nats.ClosedHandler(func(*nats.Conn) {
			select {
			case lost <- errors.New("NATS connection closed"):
			default:
			}
		})}
	if f.natsCreds != "" {
		opts = append(opts, nats.UserCredentials(f.natsCreds))
	}
	nc, err := nats.Connect(f.nats, opts...)
	if err != nil {
		return fmt.Errorf("connect to NATS at %s: %w (is the cluster up? give its servers with -nats)", f.nats, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	setupCtx, cancelSetup := context.WithTimeout(ctx, 30*time.Second)
	defer cancelSetup()
	// The streams of a new cluster, with -streams.replicas; those there
	// are left as their administrator set them.
	so := f.streamOptions()
	so.Replicas, so.CreateOnly = f.replicas, true
	if f.migrateFacts {
		if _, err := projections.MigrateFacts(ctx, js, so, log); err != nil {
			return fmt.Errorf("migrate the facts: %w", err)
		}
	}
	if err := projections.EnsureStreams(setupCtx, js, so); err != nil {
		return err
	}
	if err := os.MkdirAll(f.data, 0o750); err != nil {
		return fmt.Errorf("create data directory: %w (choose another with -data)", err)
	}
	db, err := projections.Open(filepath.Join(f.data, "pebble"), projections.Options{Logger: log})
	if err != nil {
		return err
	}
	defer db.Close()
	dir, err := projections.OpenDirectory(db)
	if err != nil {
		return err
	}
	if err := catchUpDirectory(setupCtx, js, dir, log); err != nil {
		return fmt.Errorf("read the directory: %w", err)
	}
	for _, h := range homes {
		if hs, err := dir.HomeServer(h); err != nil {
			return err
		} else if hs == nil {
			return fmt.Errorf("home server %s is not in the directory; create it first (rvpctl home create %s -host <host name>)", h, h)
		}
	}

	rs := roleSet{nc: nc, js: js, db: db, dir: dir, keyring: keyring, log: log, flags: f.roleFlags,
		gatewayID: f.name, homes: homes, streams: so, holder: f.name, router: f.router}
	if f.admin {
		rs.admin = &projections.Admin{JetStream: js, Directory: dir, Keyring: keyring, Actor: "rvpd-node-" + f.name}
	}
	if f.gateway != "" {
		if rs.listener, err = net.Listen("tcp", f.gateway); err != nil {
			return fmt.Errorf("listen for RVP on %s: %w (choose another address with -gateway)", f.gateway, err)
		}
	}
	var g run.Group
	if ctx.Done() != nil {
		g.Add(run.ContextHandler(ctx))
	}
	g.Add(run.SignalHandler(context.Background(), os.Interrupt, syscall.SIGTERM))
	roles, stopRoles := context.WithCancel(context.Background())
	defer stopRoles()
	if err := rs.add(&g, roles, stopRoles); err != nil {
		if rs.listener != nil {
			rs.listener.Close()
		}
		return err
	}
	g.Add(func() error {
		select {
		case err := <-lost:
			return err
		case <-roles.Done():
			return nil
		}
	}, func(error) { stopRoles() })
	printNodeBanner(stdout, f, rs, nc)
	err = g.Run()
	var sig run.SignalError
	if errors.As(err, &sig) || errors.Is(err, context.Canceled) {
		log.Info("shut down", "reason", err.Error())
		return nil
	}
	return err
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
	fmt.Fprintf(w, "  NATS: %s   data: %s\n", nc.ConnectedUrl(), f.data)
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
