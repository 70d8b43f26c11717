package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"regexp"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/homenode"
	"github.com/rvp-im/rvpd/projections"
)

// siteFlags place a process at a site of a deployment of several
// (docs/sites.md): each site a JetStream domain of its own, joined to the
// hub by leaf connections.
type siteFlags struct {
	site, hub string
}

func (f *siteFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.site, "site", "", `the site this node is at: the JetStream domain of its NATS servers (jetstream { domain: NAME }), in a deployment of several sites joined by leaf connections ("" for one site without domains)`)
	fs.StringVar(&f.hub, "hub", projections.DefaultHub, "with -site: the JetStream domain of the hub, where the directory is written (every site keeps a copy)")
}

// domainName is what a JetStream domain may be called.
var domainName = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

func (f siteFlags) validate() error {
	if f.site == "" {
		return nil
	}
	var errs []error
	for _, v := range []struct{ flag, name string }{{"-site", f.site}, {"-hub", f.hub}} {
		if !domainName.MatchString(v.name) {
			errs = append(errs, fmt.Errorf("%s %q: a JetStream domain is letters, digits, '-' and '_'", v.flag, v.name))
		}
	}
	return errors.Join(errs...)
}

// apply lays the streams out for the site.
func (f siteFlags) apply(so *projections.StreamOptions) {
	so.Site, so.Hub = f.site, f.hub
	if f.site == "" {
		so.Hub = ""
	}
}

// atSite is what a process at a site adds to its roles: the JetStream
// context directory writes go through (the hub's), and the actors that
// keep the site's copy of the directory and watch the other sites.
type atSite struct {
	writes jetstream.JetStream
	watch  *homenode.SiteWatch
	actors []func(context.Context) error
}

// setupSite brings the site's copy of the directory up to the hub's (or,
// cut off from the hub, goes on with the copy it has, saying so) before
// the roles read it, and returns what the roles need at a site. Away from
// a site it returns nothing.
func setupSite(ctx context.Context, f siteFlags, nc *nats.Conn, js jetstream.JetStream, dir *projections.Directory, watch bool, log *slog.Logger) (*atSite, error) {
	if f.site == "" {
		return nil, nil
	}
	s := &atSite{writes: js}
	if f.site != f.hub {
		hub, err := jetstream.NewWithDomain(nc, f.hub)
		if err != nil {
			return nil, err
		}
		s.writes = hub
		cfg := projections.CopyConfig{Site: f.site, Local: js, Hub: hub, Logger: log.With("component", "directory copy")}
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		copied, err := projections.CopyDirectoryNow(cctx, cfg)
		cancel()
		switch {
		case err == nil:
			log.Info("directory copied from the hub", "site", f.site, "hub", f.hub, "events", copied)
		default:
			last, lerr := projections.LastSeq(ctx, js, events.StreamDirectory)
			if lerr != nil || last == 0 {
				return nil, fmt.Errorf("site %s has no copy of the directory yet and the hub (JetStream domain %s) cannot be reached: %w; are the site's NATS servers joined to the hub by leaf connections (leafnodes { remotes }), and was the hub set up with rvpd init -site %s?", f.site, f.hub, err, f.hub)
			}
			log.Warn("the hub cannot be reached: the site serves from its copy of the directory, and copies the rest when the hub is back", "site", f.site, "hub", f.hub, "copy", last, "err", err)
		}
		s.actors = append(s.actors, func(ctx context.Context) error { return projections.CopyDirectory(ctx, cfg) })
	}
	if watch {
		s.watch = &homenode.SiteWatch{Conn: nc, Site: f.site, Directory: dir, Logger: log.With("component", "site watch")}
		s.actors = append(s.actors, s.watch.Run)
	}
	return s, nil
}

// siteWatch returns the site watch home nodes take their changes from;
// nil away from a site.
func (s *atSite) siteWatch() *homenode.SiteWatch {
	if s == nil {
		return nil
	}
	return s.watch
}

// lostSites is the site watch as the gateway asks it; nil (no interface
// holding a nil watch) away from a site.
func (s *atSite) lostSites() interface{ Lost(string) bool } {
	if w := s.siteWatch(); w != nil {
		return w
	}
	return nil
}
