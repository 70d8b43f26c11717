package testcluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	osexec "os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/cmd/rvpd/natsclient"
)

// NATSCluster is a JetStream cluster of NATS servers on loopback, as a
// site runs it (DESIGN §6: three servers, R3 streams): in this process,
// or as processes of a nats-server binary built from the module cache,
// which a test can kill with SIGKILL. Its servers listen for clients on
// TCP, so that a client that loses its server reconnects to another, as in
// production.
//
// It follows nats-server's own cluster tests (jetstream_helpers_test.go):
// ports outside the ephemeral range, every server given every route, and
// readiness polled (a meta leader with every peer, every server healthy
// and current), never slept for.
type NATSCluster struct {
	t       testing.TB
	Name    string
	Servers []*NATSServer
	// routes holds, with Partitionable, the link each server's routes to
	// another go through, by the two servers' names.
	routes map[[2]string]*Link
}

// NATSServer is one server of a NATSCluster.
type NATSServer struct {
	Name        string
	ClientPort  int
	ClusterPort int
	MonitorPort int
	dir         string // its store directory (and, for a process, its config and log)
	conf        string // its configuration, the same at every start
	process     bool
	bin         string

	mu      sync.Mutex
	srv     *server.Server // in this process
	cmd     *osexec.Cmd    // a process
	exited  chan struct{}  // closed when cmd has been waited for
	running bool
	paused  bool // a process stopped with SIGSTOP (Pause)
	t       testing.TB
}

// NATSClusterOptions configure StartNATSCluster.
type NATSClusterOptions struct {
	// Servers in the cluster. Default 3.
	Servers int
	// Processes runs each server as a process of the nats-server binary
	// (built once per test from the module cache), so that Kill is a
	// SIGKILL; otherwise they run in this process and Kill is an
	// in-process Shutdown, which hands its raft leaderships over first.
	Processes bool
	// Sync is JetStream's fsync setting: "always", or an interval. Default
	// the server's.
	Sync string
	// Name is the cluster's name. Default "tc".
	Name string
	// Domain, when set, is the cluster's JetStream domain: a site of a
	// Topology.
	Domain string
	// Leaf, when set, is the host:port of a hub's leaf listener that
	// every server connects to (a site of a Topology, through its Link).
	Leaf string
	// Partitionable routes each server's connections to each other server
	// through a Link of their own, so that Isolate can cut a server off
	// from the others, its clients' connections left up.
	Partitionable bool
}

// StartNATSCluster starts a JetStream cluster and waits until it is
// ready: a meta leader that sees every server, every server current and
// healthy. The test's cleanup stops it.
func StartNATSCluster(t testing.TB, o NATSClusterOptions) *NATSCluster {
	t.Helper()
	if o.Servers <= 0 {
		o.Servers = 3
	}
	bin := ""
	if o.Processes {
		bin = BuildNATSServer(t)
	}
	base := t.TempDir()
	for attempt := 1; ; attempt++ {
		c, err := startNATSCluster(t, o, base, attempt, bin)
		if err == nil {
			return c
		}
		// A port taken between its check and the server's bind (another
		// test on the machine chose it too): try others, a few times.
		if attempt == 3 || !strings.Contains(err.Error(), "address already in use") {
			t.Fatalf("start NATS cluster: %v", err)
		}
		t.Logf("start NATS cluster: %v; again with other ports", err)
	}
}

func startNATSCluster(t testing.TB, o NATSClusterOptions, base string, attempt int, bin string) (*NATSCluster, error) {
	c := &NATSCluster{t: t, Name: o.Name}
	if c.Name == "" {
		c.Name = "tc"
	}
	leaf := ""
	if o.Leaf != "" {
		leaf = fmt.Sprintf(`leafnodes { reconnect: "100ms", remotes: [ { url: "nats-leaf://%s" } ] }`, o.Leaf)
	}
	ports := freePorts(t, 3*o.Servers)
	var routes []string
	for i := range o.Servers {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", ports[3*i+1]))
	}
	// With Partitionable, server i routes to server j through a link of
	// their own, and advertises a route address nothing listens on
	// (port 1, refused): else a server told of another by gossip before
	// its own route to it is up would connect to it directly, past the
	// links, and keep that route.
	routesOf := func(i int) []string { return routes }
	advertise := ""
	if o.Partitionable {
		c.routes = map[[2]string]*Link{}
		for i := range o.Servers {
			for j := range o.Servers {
				if i != j {
					c.routes[[2]string{fmt.Sprintf("n%d", i+1), fmt.Sprintf("n%d", j+1)}] = NewLink(t, fmt.Sprintf("127.0.0.1:%d", ports[3*j+1]))
				}
			}
		}
		routesOf = func(i int) []string {
			var out []string
			for j := range o.Servers {
				if i != j {
					out = append(out, "nats-route://"+c.routes[[2]string{fmt.Sprintf("n%d", i+1), fmt.Sprintf("n%d", j+1)}].Addr())
				}
			}
			return out
		}
		advertise = "advertise: \"127.0.0.1:1\""
	}
	sync := ""
	switch o.Sync {
	case "":
	case "always":
		sync = "sync_interval: always"
	default:
		sync = "sync_interval: " + o.Sync
	}
	if o.Domain != "" {
		sync += "\n  domain: " + o.Domain // beside it, in the jetstream block
	}
	for i := range o.Servers {
		s := &NATSServer{Name: fmt.Sprintf("n%d", i+1), ClientPort: ports[3*i], ClusterPort: ports[3*i+1], MonitorPort: ports[3*i+2],
			dir: filepath.Join(base, fmt.Sprintf("try%d-n%d", attempt, i+1)), process: o.Processes, bin: bin, t: t}
		s.conf = fmt.Sprintf(`server_name: %s
listen: 127.0.0.1:%d
http: 127.0.0.1:%d
max_payload: 1MB
jetstream {
  store_dir: %q
  max_memory_store: 256MB
  max_file_store: 4GB
  %s
}
cluster {
  name: %s
  listen: 127.0.0.1:%d
  routes: [%s]
  %s
}
%s
`, s.Name, s.ClientPort, s.MonitorPort, filepath.Join(s.dir, "store"), sync, c.Name, s.ClusterPort, strings.Join(routesOf(i), ", "), advertise, leaf)
		if err := os.MkdirAll(s.dir, 0o755); err != nil {
			return nil, err
		}
		c.Servers = append(c.Servers, s)
	}
	for _, s := range c.Servers {
		if err := s.start(); err != nil {
			c.stopAll()
			return nil, fmt.Errorf("%s: %w", s.Name, err)
		}
	}
	t.Cleanup(c.stopAll)
	if err := c.waitReady(60 * time.Second); err != nil {
		c.stopAll()
		return nil, err
	}
	return c, nil
}

// freePorts returns n distinct ports that are free now, chosen at random
// below the ephemeral range (32768-60999 on Linux), where the system
// never hands them to an outgoing connection (nats-server's tests choose
// their cluster ports so, for that reason).
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var out []int
	seen := map[int]bool{}
	for tries := 0; len(out) < n; tries++ {
		if tries > 1000 {
			t.Fatal("no free ports between 10000 and 32767")
		}
		p := 10000 + rand.IntN(22768)
		if seen[p] {
			continue
		}
		seen[p] = true
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		l.Close()
		out = append(out, p)
	}
	return out
}

var buildNATSServer struct {
	sync.Mutex
	bin string
}

// BuildNATSServer builds the nats-server binary of the module's
// dependency (the version embedded everywhere else) and returns its path.
// The binary is kept in the user's cache directory under the module's
// version and checksum, so that every test binary of every run shares one
// build instead of leaving a copy in the temporary directory each; it is
// built into a file of its own and renamed into place, so test binaries
// building it at once do not see each other's half-written file.
func BuildNATSServer(t testing.TB) string {
	t.Helper()
	buildNATSServer.Lock()
	defer buildNATSServer.Unlock()
	if buildNATSServer.bin != "" {
		if _, err := os.Stat(buildNATSServer.bin); err == nil {
			return buildNATSServer.bin
		}
	}
	dir, err := os.UserCacheDir()
	if err != nil {
		dir = os.TempDir()
	}
	dir = filepath.Join(dir, "rvpd-test")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("the nats-server binary's directory: %v", err)
	}
	key, versioned, err := natsServerBuildKey()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "nats-server-"+key)
	if _, err := os.Stat(bin); err == nil && versioned {
		buildNATSServer.bin = bin
		return bin
	}
	f, err := os.CreateTemp(dir, "nats-server-building-")
	if err != nil {
		t.Fatalf("the nats-server binary's directory: %v", err)
	}
	f.Close()
	tmp := f.Name()
	defer os.Remove(tmp)
	out, err := osexec.Command("go", "build", "-o", tmp, "github.com/nats-io/nats-server/v2").CombinedOutput()
	if err != nil {
		t.Fatalf("go build nats-server: %v\n%s", err, out)
	}
	if err := os.Rename(tmp, bin); err != nil {
		t.Fatalf("put the nats-server binary in place: %v", err)
	}
	buildNATSServer.bin = bin
	return bin
}

// natsServerBuildKey names the nats-server module the tests are built
// with, as go list reports it (its version and checksum), and the Go
// toolchain that builds it (the test binary's own). versioned is false
// when the module is replaced by a local directory, whose edits no name
// follows: the binary is then built again by every test binary.
func natsServerBuildKey() (key string, versioned bool, err error) {
	out, err := osexec.Command("go", "list", "-m", "-json", "github.com/nats-io/nats-server/v2").Output()
	if err != nil {
		return "", false, fmt.Errorf("go list the nats-server module: %w", err)
	}
	var m struct {
		Version, Sum string
		Replace      *struct{ Version, Sum string }
	}
	if err := json.Unmarshal(out, &m); err != nil {
		return "", false, fmt.Errorf("go list the nats-server module: %w", err)
	}
	if m.Replace != nil {
		m.Version, m.Sum = m.Replace.Version, m.Replace.Sum
	}
	key, versioned = m.Version+"-"+m.Sum, m.Version != ""
	if !versioned {
		key = "local"
	}
	key += "-" + runtime.Version()
	key = strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '-':
			return r
		}
		return '_'
	}, key)
	return key + "-" + runtime.GOOS + "-" + runtime.GOARCH, versioned, nil
}

// Isolate cuts s off from the other servers of a Partitionable cluster,
// as a network partition would: its routes' links stop forwarding,
// their connections left open (each side's pings then give up on them),
// while its clients keep their connections to it. Heal ends it.
func (c *NATSCluster) Isolate(s *NATSServer) {
	c.t.Helper()
	if c.routes == nil {
		c.t.Fatal("Isolate needs a cluster started with NATSClusterOptions.Partitionable")
	}
	for pair, l := range c.routes {
		if pair[0] == s.Name || pair[1] == s.Name {
			l.Silence()
		}
	}
}

// Heal ends every partition: the routes' links forward again.
func (c *NATSCluster) Heal() {
	for _, l := range c.routes {
		l.Heal()
	}
}

// URLs returns the client URLs of every server, comma-separated, as a
// client of the whole cluster is given them.
func (c *NATSCluster) URLs() string {
	var urls []string
	for _, s := range c.Servers {
		urls = append(urls, s.URL())
	}
	return strings.Join(urls, ",")
}

// String is the server's name ("none" for nil), for messages.
func (s *NATSServer) String() string {
	if s == nil {
		return "none"
	}
	return s.Name
}

// URL returns the server's client URL.
func (s *NATSServer) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", s.ClientPort) }

// Connect connects to the cluster as a role does: every server's URL,
// reconnecting for ever, soon, and moving off a server cut off from the
// others (natsclient.ReachWatch) until the test ends.
func (c *NATSCluster) Connect(name string) *nats.Conn {
	c.t.Helper()
	nc, err := nats.Connect(c.URLs(), append(natsclient.Liveness(), nats.Name(name), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond),
		nats.ReconnectJitter(50*time.Millisecond, 50*time.Millisecond))...)
	if err != nil {
		c.t.Fatalf("connect to the NATS cluster: %v", err)
	}
	w := natsclient.ReachWatch{Conn: nc, Logger: quiet().With("conn", name), Dial: func(url string) (*nats.Conn, error) {
		return nats.Connect(url, nats.Name(name+"-reach"), nats.NoReconnect(), nats.Timeout(natsclient.PingInterval))
	}}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() { defer close(done); w.Run(stop) }()
	c.t.Cleanup(func() { close(stop); <-done })
	return nc
}

// JetStream connects to the cluster as Connect does and returns a
// JetStream client on the connection, which is closed when the test ends.
func (c *NATSCluster) JetStream(name string) jetstream.JetStream {
	c.t.Helper()
	nc := c.Connect(name)
	c.t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		c.t.Fatalf("JetStream on the NATS cluster: %v", err)
	}
	return js
}

// Server returns the server named name, or nil.
func (c *NATSCluster) Server(name string) *NATSServer {
	for _, s := range c.Servers {
		if s.Name == name {
			return s
		}
	}
	return nil
}

func (s *NATSServer) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running {
		return nil
	}
	if s.process {
		conf := filepath.Join(s.dir, "nats.conf")
		if err := os.WriteFile(conf, []byte(s.conf), 0o644); err != nil {
			return err
		}
		logf, err := os.OpenFile(filepath.Join(s.dir, "nats.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return err
		}
		cmd := osexec.Command(s.bin, "-c", conf)
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			logf.Close()
			return err
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); logf.Close(); close(exited) }()
		s.cmd, s.exited, s.running = cmd, exited, true
		// Ready when it answers on its monitoring port.
		deadline := time.Now().Add(30 * time.Second)
		for {
			if _, err := s.healthz(); err == nil {
				return nil
			}
			select {
			case <-exited:
				s.running = false
				return fmt.Errorf("nats-server exited at start:\n%s", s.logTail())
			default:
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("nats-server not answering after 30s:\n%s", s.logTail())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	opts := &server.Options{}
	if err := opts.ProcessConfigString(s.conf); err != nil {
		return err
	}
	opts.NoSigs = true
	srv, err := server.NewServer(opts)
	if err != nil {
		return err
	}
	fatal := make(chan error, 1)
	srv.SetLoggerV2(fatalLogger{fatal: fatal}, false, false, false)
	go srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		srv.Shutdown()
		srv.WaitForShutdown()
		select {
		case err := <-fatal:
			return err
		default:
			return errors.New("not ready for connections after 30s")
		}
	}
	s.srv, s.running = srv, true
	return nil
}

// fatalLogger keeps an embedded server quiet and reports its fatal error
// (the stock logger would exit the process).
type fatalLogger struct{ fatal chan error }

func (fatalLogger) Noticef(string, ...any) {}
func (fatalLogger) Warnf(string, ...any)   {}
func (fatalLogger) Errorf(string, ...any)  {}
func (fatalLogger) Debugf(string, ...any)  {}
func (fatalLogger) Tracef(string, ...any)  {}
func (l fatalLogger) Fatalf(format string, v ...any) {
	select {
	case l.fatal <- fmt.Errorf(format, v...):
	default:
	}
}

func (s *NATSServer) logTail() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "nats.log"))
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-30):], "\n")
}

// Running reports whether the server runs.
func (s *NATSServer) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.running
}

// Kill stops the server abruptly: a process is killed with SIGKILL (its
// peers find out when their heartbeats go unanswered, and elect new
// leaders after raft's election timeout, 4-9 s with nats-server's
// defaults); a server in this process is shut down, which hands its
// leaderships over first (an election of a few milliseconds) but drops
// its clients without warning.
func (s *NATSServer) Kill() { s.halt(syscall.SIGKILL) }

// Stop stops the server cleanly: SIGTERM for a process (it hands its
// leaderships over), Shutdown in this process.
func (s *NATSServer) Stop() { s.halt(syscall.SIGTERM) }

// Freeze stops a server's process with SIGSTOP, as a machine that hangs
// before it dies: its connections stay open and take what is written to
// them, and nothing reaches its clients (a Kill then loses it). Only for
// a process (NATSClusterOptions.Processes).
func (s *NATSServer) Freeze() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		s.t.Fatalf("freeze %s: not a running process", s.Name)
	}
	if err := s.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		s.t.Fatalf("freeze %s: %v", s.Name, err)
	}
}

func (s *NATSServer) halt(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.running {
		return
	}
	s.running = false
	if s.cmd == nil {
		s.srv.Shutdown()
		s.srv.WaitForShutdown()
		s.srv = nil
		return
	}
	s.cmd.Process.Signal(sig)
	if s.paused {
		s.cmd.Process.Signal(syscall.SIGCONT) // to act on sig
		s.paused = false
	}
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		s.cmd.Process.Signal(syscall.SIGKILL)
		<-s.exited
	}
	s.cmd = nil
}

// Pause stops the server's process with SIGSTOP, as a machine that
// freezes it (a hypervisor's pause, a long swap) would: its connections
// stay open and say nothing, its peers miss its heartbeats, and its
// clients notice only when their pings go unanswered. Resume lets it go
// on. Only a server run as a process (NATSClusterOptions.Processes) can be
// paused.
func (s *NATSServer) Pause() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil || !s.running {
		s.t.Fatalf("pause %s: not a running process", s.Name)
	}
	if err := s.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		s.t.Fatalf("pause %s: %v", s.Name, err)
	}
	s.paused = true
}

// Resume lets a paused server go on (SIGCONT).
func (s *NATSServer) Resume() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.paused {
		return
	}
	if err := s.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		s.t.Fatalf("resume %s: %v", s.Name, err)
	}
	s.paused = false
}

// Start starts a stopped or killed server again, with its name, ports and
// store: it rejoins the cluster and catches its replicas up.
func (s *NATSServer) Start() {
	s.t.Helper()
	if err := s.start(); err != nil {
		s.t.Fatalf("restart %s: %v", s.Name, err)
	}
}

func (c *NATSCluster) stopAll() {
	for _, s := range c.Servers {
		s.Stop()
	}
}

// healthz returns the server's health: "ok" once JetStream's meta group
// and every stream and consumer it holds are current.
func (s *NATSServer) healthz() (*server.HealthStatus, error) {
	if s.srv != nil {
		return s.srv.Healthz(&server.HealthzOptions{}), nil
	}
	var h server.HealthStatus
	return &h, s.monitor("/healthz", &h)
}

// leafNodes returns how many leaf connections the server has.
func (s *NATSServer) leafNodes() (int, error) {
	s.mu.Lock()
	srv := s.srv
	s.mu.Unlock()
	if srv != nil {
		return srv.NumLeafNodes(), nil
	}
	var v struct {
		Leafnodes int `json:"leafnodes"`
	}
	return v.Leafnodes, s.monitor("/varz", &v)
}

// jsz returns the server's JetStream report, the meta group included.
func (s *NATSServer) jsz() (*server.JSInfo, error) {
	if s.srv != nil {
		return s.srv.Jsz(&server.JSzOptions{})
	}
	var j server.JSInfo
	return &j, s.monitor("/jsz", &j)
}

func (s *NATSServer) monitor(path string, v any) error {
	cl := http.Client{Timeout: 2 * time.Second}
	resp, err := cl.Get(fmt.Sprintf("http://127.0.0.1:%d%s", s.MonitorPort, path))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}

// waitReady polls until the running servers form a cluster: one meta
// leader that counts every server as a peer, and every running server
// healthy (its meta group and its replicas current).
func (c *NATSCluster) waitReady(d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		err := c.ready()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("NATS cluster not ready after %v: %w", d, err)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func (c *NATSCluster) ready() error {
	leaders := map[string]bool{}
	for _, s := range c.Servers {
		if !s.Running() {
			continue
		}
		j, err := s.jsz()
		if err != nil {
			return fmt.Errorf("%s: %w", s.Name, err)
		}
		if j.Meta == nil || j.Meta.Leader == "" {
			return fmt.Errorf("%s sees no meta leader", s.Name)
		}
		leaders[j.Meta.Leader] = true
		if j.Meta.Size != len(c.Servers) {
			return fmt.Errorf("%s sees a meta group of %d servers", s.Name, j.Meta.Size)
		}
		h, err := s.healthz()
		if err != nil {
			return fmt.Errorf("%s: %w", s.Name, err)
		}
		if h.Status != "ok" {
			return fmt.Errorf("%s: health %s %s", s.Name, h.Status, h.Error)
		}
	}
	if len(leaders) != 1 {
		return fmt.Errorf("the servers disagree on the meta leader: %v", leaders)
	}
	return nil
}

// WaitReady waits until the running servers form a healthy cluster
// again, and each stream named has a leader and every running replica
// current.
func (c *NATSCluster) WaitReady(js jetstream.JetStream, streams ...string) {
	c.t.Helper()
	if err := c.waitReady(60 * time.Second); err != nil {
		c.t.Fatal(err)
	}
	for _, st := range streams {
		c.WaitStreamLeader(js, st, 60*time.Second)
	}
}

// StreamLeader returns the server leading stream now; nil when it has
// none (an election under way) or cannot be asked.
func (c *NATSCluster) StreamLeader(js jetstream.JetStream, stream string) *NATSServer {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return nil
	}
	info := st.CachedInfo()
	if info.Cluster == nil || info.Cluster.Leader == "" {
		return nil
	}
	return c.Server(info.Cluster.Leader)
}

// WaitStreamLeader waits until stream has a leader among the running
// servers and every running replica is current, and returns the leader.
func (c *NATSCluster) WaitStreamLeader(js jetstream.JetStream, stream string, d time.Duration) *NATSServer {
	c.t.Helper()
	var leader *NATSServer
	Eventually(c.t, d, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		st, err := js.Stream(ctx, stream)
		if err != nil {
			return fmt.Errorf("stream %s: %w", stream, err)
		}
		info := st.CachedInfo()
		if info.Cluster == nil || info.Cluster.Leader == "" {
			return fmt.Errorf("stream %s has no leader", stream)
		}
		leader = c.Server(info.Cluster.Leader)
		if leader == nil || !leader.Running() {
			return fmt.Errorf("stream %s: leader %s is not running", stream, info.Cluster.Leader)
		}
		for _, r := range info.Cluster.Replicas {
			if s := c.Server(r.Name); s != nil && s.Running() && !r.Current {
				return fmt.Errorf("stream %s: replica %s not current", stream, r.Name)
			}
		}
		return nil
	})
	return leader
}

// NonLeader returns a running server that holds a replica of stream but
// does not lead it.
func (c *NATSCluster) NonLeader(js jetstream.JetStream, stream string) *NATSServer {
	c.t.Helper()
	leader := c.WaitStreamLeader(js, stream, 60*time.Second)
	for _, s := range c.Servers {
		if s != leader && s.Running() {
			return s
		}
	}
	c.t.Fatalf("stream %s: no running server but its leader", stream)
	return nil
}

// Leaders returns the server leading each stream now ("" for a stream
// without one, or whose leader does not run).
func (c *NATSCluster) Leaders(js jetstream.JetStream) map[string]string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out := map[string]string{}
	names := js.StreamNames(ctx)
	for name := range names.Name() {
		out[name] = ""
		if s := c.StreamLeader(js, name); s != nil && s.Running() {
			out[name] = s.Name
		}
	}
	return out
}

// WaitLeaders waits until every stream has a running leader, and returns
// the leaders.
func (c *NATSCluster) WaitLeaders(js jetstream.JetStream, d time.Duration) map[string]string {
	c.t.Helper()
	var led map[string]string
	Eventually(c.t, d, func() error {
		led = c.Leaders(js)
		for name, l := range led {
			if l == "" {
				return fmt.Errorf("stream %s has no leader", name)
			}
		}
		if len(led) == 0 {
			return errors.New("no streams")
		}
		return nil
	})
	return led
}

// GroupLeaders returns the leader of each raft group of the cluster as
// the running server via sees it: "meta", each stream by name and each
// consumer as "stream > consumer" ("" while a group has no leader). A
// follower goes on naming a leader that died until its election timer
// fires; Elections counts a group led by a server that does not run as
// not led.
func (c *NATSCluster) GroupLeaders(via *NATSServer) (map[string]string, error) {
	var j server.JSInfo
	if via.srv != nil {
		p, err := via.srv.Jsz(&server.JSzOptions{Accounts: true, Streams: true, Consumer: true})
		if err != nil {
			return nil, err
		}
		j = *p
	} else if err := via.monitor("/jsz?accounts=true&streams=true&consumers=true", &j); err != nil {
		return nil, err
	}
	out := map[string]string{}
	if j.Meta != nil {
		out["meta"] = j.Meta.Leader
	}
	for _, a := range j.AccountDetails {
		for _, st := range a.Streams {
			out[st.Name] = ""
			if st.Cluster != nil {
				out[st.Name] = st.Cluster.Leader
			}
			for _, ci := range st.Consumer {
				k := st.Name + " > " + ci.Name
				out[k] = ""
				if ci.Cluster != nil {
					out[k] = ci.Cluster.Leader
				}
			}
		}
	}
	return out, nil
}

// Election is what an ElectionWatch saw of the raft groups a server led
// when it was killed: when each had a running leader again.
type Election struct {
	Killed time.Time
	Led    []string             // the groups the server led, sorted
	Since  map[string]time.Time // when each had a running leader again
}

// Done returns when the last of the groups named (all it led when none
// are) had a running leader again, and false while one has none.
func (e *Election) Done(groups ...string) (time.Time, bool) {
	if len(groups) == 0 {
		groups = e.Led
	}
	var last time.Time
	for _, g := range groups {
		at, ok := e.Since[g]
		if !ok {
			if slices.Contains(e.Led, g) {
				return time.Time{}, false
			}
			continue // not led by the server killed: never without a leader
		}
		if at.After(last) {
			last = at
		}
	}
	if last.IsZero() {
		last = e.Killed
	}
	return last, true
}

// KillWatching kills s with SIGKILL (Kill) and polls every 20 ms, through
// another running server's monitoring, until every raft group s led has
// a running leader again or d passes, and returns when each had.
func (c *NATSCluster) KillWatching(s *NATSServer, d time.Duration) *Election {
	c.t.Helper()
	var via *NATSServer
	for _, o := range c.Servers {
		if o != s && o.Running() {
			via = o
			break
		}
	}
	if via == nil {
		c.t.Fatalf("kill %s: no other server runs", s.Name)
	}
	before, err := c.GroupLeaders(via)
	if err != nil {
		c.t.Fatalf("kill %s: the groups' leaders: %v", s.Name, err)
	}
	e := &Election{Since: map[string]time.Time{}}
	for g, l := range before {
		if l == s.Name {
			e.Led = append(e.Led, g)
		}
	}
	sort.Strings(e.Led)
	s.Kill()
	e.Killed = time.Now()
	deadline := e.Killed.Add(d)
	for {
		now, err := c.GroupLeaders(via)
		if err == nil {
			for _, g := range e.Led {
				if _, ok := e.Since[g]; ok {
					continue
				}
				if l := c.Server(now[g]); l != nil && l.Running() {
					e.Since[g] = time.Now()
				}
			}
		}
		if len(e.Since) == len(e.Led) {
			return e
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%v after %s was killed, groups it led still have no leader: led %v, re-led %v (last error %v)", d, s.Name, e.Led, e.Since, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// PlaceLeaders moves the leaders of raft groups (as GroupLeaders names
// them) by stepdowns, each preferring the server wanted: on comes to lead
// each group of lead and none of leadNone (the meta group is not moved:
// MoveMetaLeader). It returns once every group named has a running
// leader where it is wanted and the cluster is ready.
func (c *NATSCluster) PlaceLeaders(js jetstream.JetStream, on *NATSServer, lead, leadNone []string) {
	c.t.Helper()
	Eventually(c.t, 60*time.Second, func() error {
		if err := c.ready(); err != nil {
			return err
		}
		led, err := c.GroupLeaders(on)
		if err != nil {
			return err
		}
		var other *NATSServer
		for _, s := range c.Servers {
			if s != on && s.Running() {
				other = s
				break
			}
		}
		var moved []string
		for _, g := range append(slices.Clone(lead), leadNone...) {
			l := c.Server(led[g])
			if l == nil || !l.Running() {
				return fmt.Errorf("group %s has no running leader (%q)", g, led[g])
			}
			want := slices.Contains(lead, g)
			if (l == on) == want {
				continue
			}
			to := on
			if !want {
				to = other
			}
			if err := stepDown(js, g, to.Name); err != nil {
				return fmt.Errorf("step %s down from %s to %s: %w", g, l.Name, to.Name, err)
			}
			moved = append(moved, g)
		}
		if len(moved) > 0 {
			return fmt.Errorf("stepped %v down", moved)
		}
		return nil
	})
}

// stepDown asks the leader of group (a stream, or "stream > consumer")
// to hand its leadership to the server named prefer.
func stepDown(js jetstream.JetStream, group, prefer string) error {
	subject := "$JS.API.STREAM.LEADER.STEPDOWN." + group
	if st, cons, ok := strings.Cut(group, " > "); ok {
		subject = "$JS.API.CONSUMER.LEADER.STEPDOWN." + st + "." + cons
	}
	body, _ := json.Marshal(server.JSApiLeaderStepdownRequest{Placement: &server.Placement{Preferred: prefer}})
	m, err := js.Conn().Request(subject, body, 5*time.Second)
	if err != nil {
		return err
	}
	var resp server.JSApiStreamLeaderStepDownResponse
	if err := json.Unmarshal(m.Data, &resp); err != nil {
		return err
	}
	if resp.Error != nil {
		return resp.Error
	}
	return nil
}

// ServerOf returns the running server the client connection named name
// (nats.Name) is connected to; nil when none has it.
func (c *NATSCluster) ServerOf(name string) *NATSServer {
	for _, s := range c.Servers {
		if !s.Running() {
			continue
		}
		var cz server.Connz
		if err := s.monitor("/connz?limit=4096", &cz); err != nil {
			continue
		}
		for _, ci := range cz.Conns {
			if ci.Name == name {
				return s
			}
		}
	}
	return nil
}

// MoveMetaLeader makes to JetStream's meta leader: while another server
// leads the meta group, that server is stopped cleanly (it hands its
// leaderships over to another) and started again. Clients of the
// servers stopped reconnect to others; to's keep their connections.
func (c *NATSCluster) MoveMetaLeader(to *NATSServer) {
	c.t.Helper()
	for attempt := 1; ; attempt++ {
		if err := c.waitReady(60 * time.Second); err != nil {
			c.t.Fatal(err)
		}
		led, err := c.GroupLeaders(to)
		if err != nil {
			c.t.Fatalf("move the meta leader to %s: %v", to.Name, err)
		}
		if led["meta"] == to.Name {
			return
		}
		if attempt == 20 {
			c.t.Fatalf("move the meta leader to %s: still %s after %d restarts", to.Name, led["meta"], attempt-1)
		}
		m := c.Server(led["meta"])
		if m == nil {
			c.t.Fatalf("move the meta leader to %s: no server %q", to.Name, led["meta"])
		}
		m.Stop()
		Eventually(c.t, 60*time.Second, func() error {
			led, err := c.GroupLeaders(to)
			if err != nil {
				return err
			}
			if l := c.Server(led["meta"]); l == nil || !l.Running() {
				return fmt.Errorf("no running meta leader (%q)", led["meta"])
			}
			return nil
		})
		m.Start()
	}
}

// ReplicaStates returns, for each running server, the state of its
// replica of each stream whose name has prefix: messages, first and last
// sequence, deleted, and the leader it names. Replicas that disagree
// (after the cluster settled) hold different messages.
func (c *NATSCluster) ReplicaStates(prefix string) []string {
	var out []string
	for _, s := range c.Servers {
		if !s.Running() {
			continue
		}
		var j server.JSInfo
		if err := s.monitor("/jsz?accounts=true&streams=true", &j); err != nil {
			out = append(out, fmt.Sprintf("%s: %v", s.Name, err))
			continue
		}
		for _, a := range j.AccountDetails {
			for _, st := range a.Streams {
				if !strings.HasPrefix(st.Name, prefix) {
					continue
				}
				leader := ""
				if st.Cluster != nil {
					leader = st.Cluster.Leader
				}
				out = append(out, fmt.Sprintf("%s on %s: %d messages, %d..%d, %d deleted, leader %s", st.Name, s.Name,
					st.State.Msgs, st.State.FirstSeq, st.State.LastSeq, st.State.NumDeleted, leader))
			}
		}
	}
	slices.Sort(out)
	return out
}
