package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/run"

	"github.com/rvp-im/rvpd/projections"
)

// setupTimeout bounds what a mode does before its roles run: the streams
// ensured, the directory read (and, in dev, the demo bootstrapped).
const setupTimeout = 30 * time.Second

// process is what both modes set up before their roles run and take down
// after: a NATS connection (to the embedded server in dev, to the cluster
// in node), the streams, and the Pebble store with the directory
// projection. The modes differ in how they reach NATS, which streams'
// settings they impose, what they do with the directory before the roles
// start, and which roles they run.
type process struct {
	log *slog.Logger
	nc  *nats.Conn
	js  jetstream.JetStream
	db  *projections.DB
	dir *projections.Directory
	// streams are the settings of the streams this process ensured, and
	// creates later (a home server's facts).
	streams projections.StreamOptions
	// fatal reports the loss of NATS: the connection closed for good, or
	// the embedded server failed.
	fatal <-chan error
	// closers are run in reverse by close.
	closers []func()
}

// natsLink is how a mode reaches NATS: the connection, its fatal errors,
// and how to let it go (the connection, then an embedded server).
type natsLink func() (nc *nats.Conn, fatal <-chan error, release func(), err error)

// openProcess reaches NATS through link, ensures the streams with so
// within ctx, and opens the projections' store in data with store's
// settings. prepare, when
// set, looks at the cluster before the streams are ensured, and may
// refuse it or change so. With migrate, it first copies the facts of an
// older version's single fact stream into one stream per home server
// (however long that takes). On an error it closes what it opened.
func openProcess(ctx context.Context, log *slog.Logger, link natsLink, so projections.StreamOptions,
	prepare func(context.Context, jetstream.JetStream, *projections.StreamOptions) error, data string, store projections.Options, migrate bool) (p *process, err error) {
	p = &process{log: log}
	defer func() {
		if err != nil {
			p.close()
			p = nil
		}
	}()
	nc, fatal, release, err := link()
	if err != nil {
		return p, err
	}
	p.nc, p.fatal = nc, fatal
	p.closers = append(p.closers, release)
	if p.js, err = jetstream.New(nc); err != nil {
		return p, err
	}
	if err := projections.WaitJetStream(ctx, p.js); err != nil {
		return p, err
	}
	if prepare != nil {
		if err := prepare(ctx, p.js, &so); err != nil {
			return p, err
		}
	}
	if migrate {
		if _, err := projections.MigrateFacts(context.WithoutCancel(ctx), p.js, so, log); err != nil {
			return p, fmt.Errorf("migrate the facts: %w", err)
		}
	}
	if err := projections.EnsureStreams(ctx, p.js, so); err != nil {
		return p, err
	}
	p.streams = so
	if err := os.MkdirAll(data, 0o750); err != nil {
		return p, fmt.Errorf("create data directory: %w (choose another with -data)", err)
	}
	store.Logger = log
	if p.db, err = projections.Open(filepath.Join(data, "pebble"), store); err != nil {
		return p, err
	}
	p.closers = append(p.closers, func() { p.db.Close() })
	p.dir, err = projections.OpenDirectory(p.db)
	return p, err
}

// close releases what openProcess opened, in reverse.
func (p *process) close() {
	for i := len(p.closers) - 1; i >= 0; i-- {
		p.closers[i]()
	}
	p.closers = nil
}

// run runs rs until a signal (SIGINT, SIGTERM), the end of ctx, a role's
// failure or the loss of NATS; then every role is stopped and waited for.
// It returns nil when the process was asked to stop, else what stopped
// it. banner is printed once the roles are about to run.
func (p *process) run(ctx context.Context, rs roleSet, banner func()) error {
	var g run.Group
	if ctx.Done() != nil {
		g.Add(run.ContextHandler(ctx))
	}
	g.Add(run.SignalHandler(context.Background(), os.Interrupt, syscall.SIGTERM))
	roles, stopRoles := context.WithCancel(context.Background())
	defer stopRoles()
	if err := rs.add(&g, roles, stopRoles); err != nil {
		for _, ln := range []net.Listener{rs.listener, rs.ops} {
			if ln != nil {
				ln.Close()
			}
		}
		return err
	}
	release, stopRelease := context.WithCancel(context.Background())
	g.Add(func() error { return newIdleRelease(p.log).run(release) }, func(error) { stopRelease() })
	g.Add(func() error {
		select {
		case err := <-p.fatal:
			return fmt.Errorf("NATS: %w", err)
		case <-roles.Done():
			return nil
		}
	}, func(error) { stopRoles() })
	banner()
	err := g.Run()
	if errors.Is(err, run.ErrSignal) || errors.Is(err, context.Canceled) {
		p.log.Info("shut down", "reason", err.Error())
		return nil
	}
	return err
}

// warnNoAuth says loudly that authentication is off, when it is.
func warnNoAuth(log *slog.Logger, auth string) {
	if auth == "none" {
		log.Warn("AUTHENTICATION IS OFF (-auth none): anyone can act as any user by naming them in RVP-From-Principal. Never expose this server.")
	}
}
