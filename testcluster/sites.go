package testcluster

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/cmd/rvpd/natsclient"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
)

// Topology is the NATS side of a deployment of several sites (DESIGN §5,
// docs/sites.md): a hub and sites, each its own JetStream domain, every
// site's server connected to the hub's by a leaf connection that runs
// through a Link, so that a test can cut a site off (Sever) or stop its
// servers (Stop) and bring it back. Every server listens on loopback TCP
// on a port it keeps across restarts, so that clients reconnect to it as
// in production.
type Topology struct {
	t     testing.TB
	Hub   *SiteNATS
	Sites map[string]*SiteNATS
}

// SiteNATS is the NATS server of one site (or of the hub): a JetStream
// domain of its own.
type SiteNATS struct {
	// Name is the site's name and its JetStream domain.
	Name string
	// Port is the client port; LeafPort, at the hub, where sites connect.
	Port, LeafPort int
	// Link carries the site's leaf connection to the hub (nil at the hub).
	Link *Link
	// Cluster, when set, is the site's three servers (TopologyOptions.
	// ThreeServers), each with its leaf connection through Link; the
	// site's own server (Port) is not used then.
	Cluster *NATSCluster
	t       testing.TB
	conf    string

	mu  sync.Mutex
	srv *server.Server
}

// TopologyOptions configure StartTopology.
type TopologyOptions struct {
	// Hub is the hub's domain. Default projections.DefaultHub.
	Hub string
	// Sites are the sites' names (their domains). Default a and b.
	Sites []string
	// ThreeServers are the sites that run a cluster of three servers
	// (R3 streams, a leaf connection from each), as in production,
	// instead of one: where losing one of a site's servers matters.
	ThreeServers []string
}

// StartTopology starts a hub and its sites and waits until every site is
// connected to the hub; the test's cleanup stops them.
func StartTopology(t testing.TB, o TopologyOptions) *Topology {
	t.Helper()
	if o.Hub == "" {
		o.Hub = projections.DefaultHub
	}
	if len(o.Sites) == 0 {
		o.Sites = []string{"a", "b"}
	}
	ports := freePorts(t, 2+len(o.Sites))
	base := t.TempDir()
	// The hub does not tell the sites its leaf address (no_advertise):
	// they would reconnect to it directly, around their Link.
	hub := &SiteNATS{Name: o.Hub, Port: ports[0], LeafPort: ports[1], t: t}
	hub.conf = fmt.Sprintf(`server_name: %s
listen: 127.0.0.1:%d
max_payload: 1MB
jetstream { store_dir: %q, domain: %s, max_memory_store: 256MB, max_file_store: 4GB }
leafnodes { listen: 127.0.0.1:%d, no_advertise: true }
`, hub.Name, hub.Port, filepath.Join(base, hub.Name), hub.Name, hub.LeafPort)
	top := &Topology{t: t, Hub: hub, Sites: map[string]*SiteNATS{}}
	hub.Start()
	for i, name := range o.Sites {
		s := &SiteNATS{Name: name, Port: ports[2+i], t: t}
		s.Link = NewLink(t, fmt.Sprintf("127.0.0.1:%d", hub.LeafPort))
		if slices.Contains(o.ThreeServers, name) {
			s.Cluster = StartNATSCluster(t, NATSClusterOptions{Name: "site-" + name, Domain: name, Leaf: s.Link.Addr()})
			top.Sites[name] = s
			continue
		}
		s.conf = fmt.Sprintf(`server_name: %s
listen: 127.0.0.1:%d
max_payload: 1MB
jetstream { store_dir: %q, domain: %s, max_memory_store: 256MB, max_file_store: 4GB }
leafnodes { reconnect: "100ms", remotes: [ { url: "nats-leaf://%s" } ] }
`, name, s.Port, filepath.Join(base, name), name, s.Link.Addr())
		s.Start()
		top.Sites[name] = s
	}
	for _, s := range top.Sites {
		s.WaitConnected()
	}
	return top
}

// URL is the server's client URL (every server's, comma-separated, for a
// site of three).
func (s *SiteNATS) URL() string {
	if s.Cluster != nil {
		return s.Cluster.URLs()
	}
	return fmt.Sprintf("nats://127.0.0.1:%d", s.Port)
}

// Replicas is the replicas of the site's streams: one a server.
func (s *SiteNATS) Replicas() int {
	if s.Cluster != nil {
		return len(s.Cluster.Servers)
	}
	return 1
}

// Start starts the server (again: with its ports and store), and waits
// until it takes connections; a site of three, those of its servers that
// are stopped.
func (s *SiteNATS) Start() {
	s.t.Helper()
	if s.Cluster != nil {
		for _, srv := range s.Cluster.Servers {
			if !srv.Running() {
				srv.Start()
			}
		}
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		return
	}
	// Started again, its port may have been taken meanwhile by another
	// process of the machine for a moment: tried again for 10 s.
	deadline := time.Now().Add(10 * time.Second)
	for {
		srv, err := s.start()
		if err == nil {
			s.srv = srv
			break
		}
		if !strings.Contains(err.Error(), "address already in use") || time.Now().After(deadline) {
			s.t.Fatalf("site %s: %v", s.Name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.t.Cleanup(s.Stop)
}

// start starts the server once.
func (s *SiteNATS) start() (*server.Server, error) {
	opts := &server.Options{}
	if err := opts.ProcessConfigString(s.conf); err != nil {
		return nil, err
	}
	opts.NoSigs = true
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, err
	}
	fatal := make(chan error, 1)
	srv.SetLoggerV2(fatalLogger{fatal: fatal}, false, false, false)
	go srv.Start()
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); {
		if srv.ReadyForConnections(100 * time.Millisecond) {
			return srv, nil
		}
		select {
		case err := <-fatal: // it will never be ready
			srv.Shutdown()
			srv.WaitForShutdown()
			return nil, err
		default:
		}
	}
	srv.Shutdown()
	srv.WaitForShutdown()
	return nil, errors.New("not ready for connections after 30s")
}

// Stop shuts the server down; its clients lose it, and the hub its leaf
// connection.
func (s *SiteNATS) Stop() {
	if s.Cluster != nil {
		for _, srv := range s.Cluster.Servers {
			srv.Stop()
		}
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv == nil {
		return
	}
	s.srv.Shutdown()
	s.srv.WaitForShutdown()
	s.srv = nil
}

// Running reports whether the server runs.
func (s *SiteNATS) Running() bool {
	if s.Cluster != nil {
		return slices.ContainsFunc(s.Cluster.Servers, (*NATSServer).Running)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.srv != nil
}

// Sever cuts the site's leaf connection to the hub; Heal restores it.
func (s *SiteNATS) Sever() { s.Link.Sever() }

// Heal lets the site reconnect to the hub.
func (s *SiteNATS) Heal() { s.Link.Heal() }

// WaitConnected waits until the site's server is connected to the hub
// (each running one, at a site of three).
func (s *SiteNATS) WaitConnected() {
	s.t.Helper()
	if s.Cluster != nil {
		Eventually(s.t, 30*time.Second, func() error {
			for _, srv := range s.Cluster.Servers {
				if !srv.Running() {
					continue
				}
				if n, err := srv.leafNodes(); err != nil || n == 0 {
					return fmt.Errorf("site %s's server %s has no leaf connection to the hub (%v)", s.Name, srv.Name, err)
				}
			}
			return nil
		})
		return
	}
	Eventually(s.t, 30*time.Second, func() error {
		s.mu.Lock()
		srv := s.srv
		s.mu.Unlock()
		if srv == nil {
			return fmt.Errorf("site %s is stopped", s.Name)
		}
		if srv.NumLeafNodes() == 0 {
			return fmt.Errorf("site %s has no leaf connection to the hub", s.Name)
		}
		return nil
	})
}

// WaitSevered waits until no running server of the site is connected to
// the hub (after Sever).
func (s *SiteNATS) WaitSevered() {
	s.t.Helper()
	Eventually(s.t, 30*time.Second, func() error {
		if s.Cluster != nil {
			for _, srv := range s.Cluster.Servers {
				if !srv.Running() {
					continue
				}
				if n, err := srv.leafNodes(); err != nil || n != 0 {
					return fmt.Errorf("site %s's server %s still has %d leaf connections to the hub (%v)", s.Name, srv.Name, n, err)
				}
			}
			return nil
		}
		s.mu.Lock()
		srv := s.srv
		s.mu.Unlock()
		if srv != nil && srv.NumLeafNodes() != 0 {
			return fmt.Errorf("site %s still has a leaf connection to the hub", s.Name)
		}
		return nil
	})
}

// Connect connects to the site's server as a role does: over TCP,
// reconnecting for ever, soon.
func (s *SiteNATS) Connect(name string) *nats.Conn {
	s.t.Helper()
	nc, err := nats.Connect(s.URL(), append(natsclient.Liveness(), nats.Name(name), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond),
		nats.ReconnectJitter(50*time.Millisecond, 50*time.Millisecond))...)
	if err != nil {
		s.t.Fatalf("connect to site %s: %v", s.Name, err)
	}
	s.t.Cleanup(nc.Close)
	return nc
}

// JetStream returns a JetStream context of the site's own domain over a
// new connection.
func (s *SiteNATS) JetStream(name string) jetstream.JetStream {
	js, err := jetstream.New(s.Connect(name))
	if err != nil {
		s.t.Fatal(err)
	}
	return js
}

// Reachable reports whether site's JetStream answers from the server of
// from: any answer, an error too, means the leaf connections between
// them are up.
func (top *Topology) Reachable(from *SiteNATS, site string) error {
	nc := from.Connect("reachable")
	defer nc.Close()
	_, err := nc.Request("$JS."+site+".API.INFO", nil, time.Second)
	if errors.Is(err, nats.ErrNoResponders) {
		return fmt.Errorf("site %s cannot reach %s", from.Name, site)
	}
	return err
}

// LastSeq returns the last sequence of stream at the site js reaches.
func LastSeq(t testing.TB, js jetstream.JetStream, stream string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	return info.State.LastSeq
}

// FollowDirectory follows the directory stream js reaches into a new
// projection until the test ends, again whenever following stops.
func FollowDirectory(t testing.TB, js jetstream.JetStream, name string) *projections.Directory {
	t.Helper()
	db, err := projections.Open(filepath.Join(t.TempDir(), name), projections.Options{})
	if err != nil {
		t.Fatal(err)
	}
	dir, err := projections.OpenDirectory(db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	background(t, func(ctx context.Context) {
		for ctx.Err() == nil {
			projections.Follow(ctx, js, projections.FollowConfig{Stream: events.StreamDirectory, Filter: events.DirectoryFilter, Logger: quiet()}, dir)
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	})
	return dir
}

// background runs f until the test ends, and waits for it then.
func background(t testing.TB, f func(ctx context.Context)) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(ctx)
	}()
	t.Cleanup(func() { cancel(); <-done })
}
