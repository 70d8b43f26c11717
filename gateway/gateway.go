package gateway

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
	"github.com/rvp-im/rvpd/rvp"
)

// Config configures a Gateway.
type Config struct {
	// ID names the gateway in request events and reply subjects. Required.
	ID string
	// JetStream and Conn reach the cluster. Required.
	JetStream jetstream.JetStream
	Conn      *nats.Conn
	// Directory is the directory projection, kept current by its owner.
	// Required.
	Directory *projections.Directory
	// Auth establishes identities. Default: NoAuth (identities are asserted
	// by RVP-From-Principal; development only).
	Auth Authenticator
	// DevDomain, when set, is the IM domain of every host the directory
	// does not know: in development any Host reaches the demo domain.
	DevDomain string
	// Site is the site the gateway is at, in a deployment of several
	// (docs/sites.md): its lookups go to its own site's routers, and a
	// request for a home server of a site that cannot be reached is
	// answered 503 at once. "" for a deployment of one domain.
	Site string
	// Sites, when set, says which other sites are lost now (the site
	// watch, homenode.SiteWatch): a request for a home server there is
	// answered 503 at once instead of published, and one already
	// published there is answered 504 once the site is counted lost.
	// Without it a site whose leaf connection went silent (packets
	// dropped, nothing closed) held each such request for the whole
	// request timeout, until NATS's pings gave the connection up.
	Sites interface{ Lost(site string) bool }
	// Owners, when set, follows the home servers' ownership leases (Run
	// it): a request for a home server of the gateway's site that no
	// node owns, answered 504, says so in its line and its body, and
	// Metrics export rvpd_home_owned from it.
	Owners *Owners
	// RequestTimeout bounds the wait for a home node's or router's reply,
	// inside librvp's 30 s. Default DefaultRequestTimeout.
	RequestTimeout time.Duration
	// IdleTimeout closes a connection idle between requests. Default 2m.
	IdleTimeout time.Duration
	// ReadTimeout bounds the time from a request's first byte to the
	// end of its body; a client slower than that is answered 408 and its
	// connection closed, so that trickling bytes cannot hold connections
	// (RVP clients send each request whole). Default 30s.
	ReadTimeout time.Duration
	// MaxConns bounds concurrent connections; more are refused with 503.
	// Default 10000.
	MaxConns int
	// MaxConnsPerAddress bounds the concurrent connections of one client
	// address (an IPv6 client's /64), so that no one address holds every
	// connection; more are refused with 503. Many clients may share an
	// address behind a NAT. Default MaxConns/8.
	MaxConnsPerAddress int
	// Limits bound requests. Zero fields take rvp's defaults.
	Limits rvp.Limits
	// Senders are each sender's share (messages and bytes a second). The
	// zero value switches them off; DefaultSenderLimits are rvpd's.
	Senders SenderLimits
	// CallBacks is where clients' Call-Backs may point (see
	// rvp.CallbackPolicy). Default: the client's own address, loopback
	// for clients on loopback; Serve adds the listener to its Own
	// endpoints, and Local is filled with this machine's addresses.
	CallBacks *rvp.CallbackPolicy
	// Own is what, besides the directory, makes a host ours rather than
	// another organisation's (-federation.internal, and the subsidiaries
	// the peer table names): a principal there is refused without
	// credentials, as one under our IM domains' names is
	// (projections.Directory.OurHost). Give it what the routers are given.
	Own projections.OwnNames
	// Metrics, when set, count requests, their latency and what is
	// refused (NewMetrics).
	Metrics *Metrics
	Logger  *slog.Logger
	Now     func() time.Time
}

// DefaultRequestTimeout is how long a gateway waits for a home node's or
// router's reply unless told otherwise: inside librvp's 30 s, with room for
// a message's delivery (homenode's DeliveryTimeout, 10 s by default).
const DefaultRequestTimeout = 20 * time.Second

// Gateway is the HTTP edge: it parses RVP requests, authenticates them,
// turns them into request events and renders the replies.
type Gateway struct {
	cfg  Config
	log  *slog.Logger
	auth Authenticator
	now  func() time.Time

	sub     *nats.Subscription
	waitMu  sync.Mutex
	waiting map[string]waiter
	// back hears the NATS connection come back (StatusChanged, CONNECTED):
	// askBack, the gateway's own goroutine, then asks the home nodes for
	// the answers of every request waiting (askWaiting), those published
	// while the gateway was away being lost; backDone is closed when it
	// has ended (Shutdown removes back).
	back     chan nats.Status
	backDone chan struct{}
	// answersAgain counts the answers home nodes gave again when asked,
	// as the connection came back (reconnected) or after askAfter (waited).
	answersAgain struct{ reconnected, waited atomic.Uint64 }

	limiter  *limiter
	counters counters

	cbMu      sync.RWMutex
	callBacks rvp.CallbackPolicy

	mu      sync.Mutex
	ln      net.Listener
	conns   map[*conn]struct{}
	perAddr map[netip.Addr]int // connections by client network (conn.addr)
	// crowdedLog (by address) and fullLog space out the lines of
	// connections refused at accept (refusedLogEvery); Serve looks at
	// them every refusedLook (default refusedLogLook) for a burst that
	// ended with refusals not logged.
	crowdedLog  addrLog
	fullLog     sparseLog
	refusedLook time.Duration
	closing     atomic.Bool
	wg          sync.WaitGroup
	inflight    atomic.Int64
	// idle is the workers waiting for a connection, each behind its own
	// channel, the one that waited least last; quit, closed by Shutdown,
	// ends them. workerIdle is how long one waits (default workerIdle).
	idleMu     sync.Mutex
	idle       []chan *conn
	quit       chan struct{}
	workerIdle time.Duration
	// stopping is the context requests are handled in; Shutdown cancels
	// it when its own time runs out, so that a request waiting for an
	// answer that is not coming does not hold the stop until its
	// RequestTimeout.
	stopping context.Context
	stop     context.CancelFunc
}

// New returns a gateway; it starts listening for replies at once.
func New(cfg Config) (*Gateway, error) {
	var errs []error
	if cfg.ID == "" {
		errs = append(errs, errors.New("gateway: ID is required"))
	}
	if cfg.JetStream == nil || cfg.Conn == nil {
		errs = append(errs, errors.New("gateway: JetStream and Conn are required"))
	}
	if cfg.Directory == nil {
		errs = append(errs, errors.New("gateway: Directory is required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.Auth == nil {
		cfg.Auth = NoAuth{}
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 2 * time.Minute
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = 30 * time.Second
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = 10000
	}
	if cfg.MaxConnsPerAddress <= 0 {
		cfg.MaxConnsPerAddress = max(1, cfg.MaxConns/8)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	g := &Gateway{
		cfg: cfg, log: log.With("gateway", cfg.ID), auth: cfg.Auth, limiter: newLimiter(cfg.Senders),
		now:        func() time.Time { return cfg.Now().UTC() },
		waiting:    make(map[string]waiter),
		conns:      make(map[*conn]struct{}),
		quit:       make(chan struct{}),
		workerIdle: workerIdle, refusedLook: refusedLogLook,
	}
	g.stopping, g.stop = context.WithCancel(context.Background())
	if cfg.CallBacks != nil {
		g.callBacks = *cfg.CallBacks
		g.callBacks.Own = slices.Clone(g.callBacks.Own)
	}
	if g.callBacks.Local == nil {
		g.callBacks.Local = rvp.LocalAddrs()
	}
	sub, err := cfg.Conn.Subscribe(events.ReplyFilter(cfg.ID), g.onReply)
	if err != nil {
		return nil, fmt.Errorf("gateway %s: subscribe to replies: %w", cfg.ID, err)
	}
	g.sub = sub
	// The process's connection has its own reconnect handler (it logs);
	// a status listener hears the reconnection without taking it over.
	g.back, g.backDone = cfg.Conn.StatusChanged(nats.CONNECTED), make(chan struct{})
	go func() {
		defer close(g.backDone)
		g.askBack(g.back)
	}()
	cfg.Metrics.attach(g)
	return g, nil
}

// waiter is a request waiting for its reply: where the reply goes, and
// the home server whose node is asked for it when it is lost ("" for a
// lookup, which no one records).
type waiter struct {
	ch   chan *events.Reply // buffered, one reply per request
	home string
}

func (g *Gateway) onReply(m *nats.Msg) {
	ev, err := events.Decode(m.Header.Get(events.HeaderType), m.Data)
	if err != nil {
		g.log.Error("undecodable reply dropped", "subject", m.Subject, "err", err)
		return
	}
	r, ok := ev.(*events.Reply)
	if !ok {
		g.log.Error("non-reply on the reply subject dropped", "subject", m.Subject, "type", ev.Type())
		return
	}
	g.deliver(r)
}

// takeWaiting takes request id out of the requests waiting, and reports
// whether it was there: not when its reply was delivered (deliver), which
// then is on its channel, or about to be.
func (g *Gateway) takeWaiting(id string) bool {
	g.waitMu.Lock()
	defer g.waitMu.Unlock()
	_, ok := g.waiting[id]
	delete(g.waiting, id)
	return ok
}

// deliver hands r to the request waiting for it, and reports whether one
// was (a request answered already, or whose wait ended, is not).
func (g *Gateway) deliver(r *events.Reply) bool {
	g.waitMu.Lock()
	w, ok := g.waiting[r.ID]
	delete(g.waiting, r.ID)
	g.waitMu.Unlock()
	if ok {
		w.ch <- r // buffered, and taken out of waiting: sent once
	}
	return ok
}

// Listen listens for RVP clients on addr (host:port) over TCP, as Serve
// wants its listener: without TCP keep-alive on the connections it
// accepts. Setting it is four system calls for every connection, and most
// connections carry one request; a connection idle for IdleTimeout is
// closed anyway, which is what bounds one whose client went away.
func Listen(addr string) (net.Listener, error) {
	lc := net.ListenConfig{KeepAlive: -1}
	return lc.Listen(context.Background(), "tcp", addr)
}

// Serve accepts connections on ln until Shutdown; it returns nil then.
func (g *Gateway) Serve(ln net.Listener) error {
	g.mu.Lock()
	if g.closing.Load() {
		g.mu.Unlock()
		return nil
	}
	g.ln = ln
	g.mu.Unlock()
	// The listener is the server's own: no Call-Back may point at it.
	g.cbMu.Lock()
	g.callBacks.Own = append(g.callBacks.Own, rvp.ListenerEndpoints(ln.Addr().String())...)
	g.cbMu.Unlock()
	g.log.Info("gateway serving", "addr", ln.Addr().String())
	// The refusals a burst's last line did not tell are told once it
	// ended, by this goroutine, Serve's own: it ends, and tells what is
	// left, before Serve returns.
	stopLook, looked := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(looked)
		g.lookRefused(stopLook)
	}()
	defer func() { close(stopLook); <-looked }()
	var tempDelay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if g.closing.Load() {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				tempDelay = min(max(2*tempDelay, 5*time.Millisecond), time.Second)
				time.Sleep(tempDelay) // back off a failing accept, as net/http does
				continue
			}
			return fmt.Errorf("gateway accept: %w", err)
		}
		tempDelay = 0
		c := &conn{nc: nc, g: g, state: &ConnState{}}
		g.mu.Lock()
		if g.closing.Load() {
			g.mu.Unlock()
			nc.Close()
			return nil
		}
		addr := remoteNetwork(nc)
		full := len(g.conns) >= g.cfg.MaxConns
		// A connection with no address (a pipe's) is counted in all only.
		crowded := !full && addr.IsValid() && g.perAddr[addr] >= g.cfg.MaxConnsPerAddress
		if !full && !crowded {
			g.conns[c] = struct{}{}
			if addr.IsValid() {
				if g.perAddr == nil {
					g.perAddr = map[netip.Addr]int{}
				}
				g.perAddr[addr]++
				c.addr = addr
			}
			g.give(c)
		}
		g.mu.Unlock()
		if full || crowded {
			g.counters.connectionsRefused.Add(1)
			msg := "too many connections; retry later"
			if crowded {
				msg = "too many connections from " + events.NetworkString(addr) + "; close some, or retry later"
				if ok, more := g.crowdedLog.allow(addr, g.now()); ok {
					g.log.Warn("connection refused: too many connections from one address", "max", g.cfg.MaxConnsPerAddress, "client", nc.RemoteAddr().String(),
						"refused_unlogged", more, "logged_every", refusedLogEvery)
				}
			} else if ok, more := g.fullLog.allow(g.now()); ok {
				g.log.Warn("connection refused: too many connections", "max", g.cfg.MaxConns, "client", nc.RemoteAddr().String(),
					"refused_unlogged", more, "logged_every", refusedLogEvery)
			}
			nc.SetWriteDeadline(g.now().Add(time.Second))
			respond(nil, nil, &refusal{status: rvp.StatusUnavailable, msg: msg, close: true}).WriteTo(bufio.NewWriter(nc))
			nc.Close()
			continue
		}
	}
}

// refusedLogEvery is how often at most a connection refused at accept
// is logged, of each kind (too many from one address, too many in all):
// a client stuck reconnecting, or someone holding the connections, has
// thousands refused a second, each counted in rvpd_gateway_refused_total
// {reason="too_many_connections"}; a line for each drowned the log.
const refusedLogEvery = 10 * time.Second

// refusedLogLook is how often Serve looks for a burst of refused
// connections that ended with refusals its last line did not tell: an
// operator reading the log, paged in the night, learns how many there
// were and that they stopped, rather than only that one was refused.
const refusedLogLook = time.Second

// lookRefused logs, every g.refusedLook until stop is closed, the bursts
// of refused connections that ended (crowdedLog, fullLog: nothing
// refused for refusedLogEvery after their last line) with refusals not
// logged; when stop is closed, those of every burst, which the gateway's
// stop ends.
func (g *Gateway) lookRefused(stop <-chan struct{}) {
	t := time.NewTicker(g.refusedLook)
	defer t.Stop()
	for {
		stopped := false
		select {
		case <-stop:
			stopped = true
		case <-t.C:
		}
		now := g.now()
		if stopped {
			now = now.Add(refusedLogEvery) // every burst ends here
		}
		for _, e := range g.crowdedLog.ended(now) {
			client := "the addresses past the " + strconv.Itoa(maxLoggedAddrs) + " logged apart"
			if e.addr.IsValid() {
				client = events.NetworkString(e.addr)
			}
			g.log.Warn("connections refused: too many connections from one address; the burst ended", "max", g.cfg.MaxConnsPerAddress, "client", client,
				"refused_unlogged", e.missed, "logged_every", refusedLogEvery)
		}
		if missed := g.fullLog.ended(now); missed > 0 {
			g.log.Warn("connections refused: too many connections; the burst ended", "max", g.cfg.MaxConns,
				"refused_unlogged", missed, "logged_every", refusedLogEvery)
		}
		if stopped {
			return
		}
	}
}

// sparseLog says when a repeated line may be logged again: once every
// refusedLogEvery, with how many were not since; and, once the burst
// ended, how many its last line did not tell (ended).
type sparseLog struct {
	mu sync.Mutex
	sparseState
}

// allow reports whether the line may be logged at now, and how many
// were not logged since the last one that was.
func (s *sparseLog) allow(now time.Time) (ok bool, missed int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sparseState.allow(now)
}

// ended returns, when nothing was refused for refusedLogEvery at now and
// refusals came after the last line that it did not tell (the burst
// ended), how many, and counts them told; else 0.
func (s *sparseLog) ended(now time.Time) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sparseState.ended(now)
}

// addrLog is a sparseLog for each client address: the address an
// operator looks for (a NAT that needs a larger
// -gateway.max-conns-per-address) is logged however hard another one
// floods. It keeps maxLoggedAddrs addresses at most; past them, those
// logged longest ago are forgotten, and while all were logged within
// refusedLogEvery the others share one line.
type addrLog struct {
	mu sync.Mutex
	by map[netip.Addr]*sparseState
}

// sparseState is sparseLog's state, kept by addrLog under its own lock.
type sparseState struct {
	last   time.Time // of the last line
	seen   time.Time // of the last refusal, logged or not
	missed int
}

// allow is sparseLog.allow, its caller holding the lock.
func (s *sparseState) allow(now time.Time) (ok bool, missed int) {
	s.seen = now
	if !s.last.IsZero() && now.Sub(s.last) < refusedLogEvery {
		s.missed++
		return false, 0
	}
	s.last, missed, s.missed = now, s.missed, 0
	return true, missed
}

// ended is sparseLog.ended, its caller holding the lock.
func (s *sparseState) ended(now time.Time) int {
	// Quiet for refusedLogEvery since the last refusal (so since the last
	// line too): a flood that goes on has its next line at its next
	// refusal, not a line saying it ended.
	if s.missed == 0 || now.Sub(s.seen) < refusedLogEvery {
		return 0
	}
	missed := s.missed
	s.missed = 0
	return missed
}

// maxLoggedAddrs bounds the addresses addrLog keeps.
const maxLoggedAddrs = 1024

// allow reports whether a refusal of addr may be logged at now, and how
// many of its refusals were not logged since the last that was.
func (l *addrLog) allow(addr netip.Addr, now time.Time) (ok bool, missed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.by[addr]
	if s == nil {
		if l.by == nil {
			l.by = map[netip.Addr]*sparseState{}
		}
		if len(l.by) >= maxLoggedAddrs {
			for a, old := range l.by {
				if now.Sub(old.last) >= refusedLogEvery {
					delete(l.by, a)
				}
			}
		}
		if len(l.by) >= maxLoggedAddrs {
			addr = netip.Addr{} // one line for the addresses past the bound
			s = l.by[addr]
		}
		if s == nil {
			s = &sparseState{}
			l.by[addr] = s
		}
	}
	return s.allow(now)
}

// addrMissed is a client address's refusals not logged.
type addrMissed struct {
	addr   netip.Addr
	missed int
}

// ended is sparseLog.ended for each address, in no order; the
// addresses whose last line is refusedLogEvery old are forgotten once
// told (the next refusal of one is logged at once, as it would be).
func (l *addrLog) ended(now time.Time) []addrMissed {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []addrMissed
	for a, s := range l.by {
		if missed := s.ended(now); missed > 0 {
			out = append(out, addrMissed{a, missed})
		}
		if s.missed == 0 && now.Sub(s.last) >= refusedLogEvery {
			delete(l.by, a)
		}
	}
	return out
}

// remoteNetwork returns the network a connection comes from
// (clientNetwork), read without a string; the zero Addr when it has none,
// as a pipe's.
func remoteNetwork(nc net.Conn) netip.Addr {
	if ta, ok := nc.RemoteAddr().(*net.TCPAddr); ok {
		return events.ClientNetwork(ta.AddrPort().Addr())
	}
	return netip.Addr{}
}

// workerIdle is how long a worker that has served its connection waits
// for the next one before it ends.
const workerIdle = 5 * time.Second

// worker serves c, then the connections it is given while it waits for
// them, until it has waited workerIdle or the gateway shuts down. librvp
// opens a connection for every request: a goroutine for each grew its
// stack again through the request's decoding (2-4% of a busy server's
// CPU) and made 16 KiB of buffers again (a fifth of the bytes it
// allocated); a worker keeps both. The worker that went idle last is
// given the next connection, so that after a burst the workers it
// started and no longer needs wait out their time and end, however
// steady the load that remains.
func (g *Gateway) worker(c *conn) {
	defer g.wg.Done()
	br, bw := bufio.NewReaderSize(nil, 8<<10), bufio.NewWriterSize(nil, 8<<10)
	next := make(chan *conn, 1)
	idle := time.NewTimer(g.workerIdle)
	defer idle.Stop()
	for {
		br.Reset(c.nc)
		bw.Reset(c.nc)
		c.serve(br, bw)
		// Nothing read or written keeps a slice of the buffers: ReadRequest
		// copies what it returns, and an answer is flushed.
		br.Reset(nil)
		bw.Reset(nil)
		g.mu.Lock()
		delete(g.conns, c)
		if c.addr.IsValid() {
			if g.perAddr[c.addr]--; g.perAddr[c.addr] <= 0 {
				delete(g.perAddr, c.addr)
			}
		}
		g.mu.Unlock()
		g.idleMu.Lock()
		g.idle = append(g.idle, next)
		g.idleMu.Unlock()
		idle.Reset(g.workerIdle)
		select {
		case c = <-next:
			continue
		case <-idle.C:
		case <-g.quit:
		}
		if !g.leaveIdle(next) {
			// The accept loop took this worker meanwhile: its connection
			// is coming (a Shutdown's is closed at once by serve).
			c = <-next
			continue
		}
		return
	}
}

// give hands c to the worker that went idle last, or to a new one. g.mu
// is held, and Shutdown has not begun.
func (g *Gateway) give(c *conn) {
	if ch := g.takeIdle(); ch != nil {
		ch <- c
		return
	}
	g.wg.Add(1)
	go g.worker(c)
}

// takeIdle returns the channel of the worker that went idle last, taking
// it out of the idle ones; nil: none waits.
func (g *Gateway) takeIdle() chan *conn {
	g.idleMu.Lock()
	defer g.idleMu.Unlock()
	n := len(g.idle)
	if n == 0 {
		return nil
	}
	ch := g.idle[n-1]
	g.idle[n-1] = nil
	g.idle = g.idle[:n-1]
	return ch
}

// leaveIdle takes the worker behind ch out of the idle ones; false: the
// accept loop took it first.
func (g *Gateway) leaveIdle(ch chan *conn) bool {
	g.idleMu.Lock()
	defer g.idleMu.Unlock()
	i := slices.Index(g.idle, ch)
	if i < 0 {
		return false
	}
	g.idle = slices.Delete(g.idle, i, i+1)
	return true
}

// Accepting reports whether the gateway is serving its listener: Serve
// has begun and Shutdown has not.
func (g *Gateway) Accepting() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.ln != nil && !g.closing.Load()
}

// Shutdown stops accepting, closes idle connections, lets requests in
// flight finish until ctx ends, then closes what is left.
func (g *Gateway) Shutdown(ctx context.Context) error {
	g.mu.Lock()
	if !g.closing.Swap(true) {
		close(g.quit)
	}
	if g.ln != nil {
		g.ln.Close()
	}
	for c := range g.conns {
		c.closeIfIdle()
	}
	g.mu.Unlock()
	done := make(chan struct{})
	go func() { g.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		g.stop() // the requests still waiting end now
		g.mu.Lock()
		for c := range g.conns {
			c.nc.Close()
		}
		g.mu.Unlock()
		<-done
	}
	g.stop()
	if g.sub != nil {
		g.sub.Unsubscribe()
	}
	// Every request has ended: askBack's sweep, if one runs, asks for
	// none more, and its asks in flight ended with g.stopping.
	if g.back != nil {
		g.cfg.Conn.RemoveStatusListener(g.back)
		<-g.backDone
	}
	return nil
}

// newID returns a random request id, 24 lower-case hex digits.
func newID() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// askAfter is how long a gateway waits for a home node's answer before it
// asks the node for it (again every askAfter): an answer can be lost on
// its way, when the NATS server the gateway was connected to is lost
// while it travels.
const askAfter = 3 * time.Second

// dispatch appends a request event (or a lookup, with home "") for
// subject and waits for its reply until deadline; from askAfter on it
// also asks home's node for the answer it recorded. A request for a home
// server of another site (site, "" for our own) is appended in one
// attempt: no stream answers while that site cannot be reached, and that
// is said at once; and the wait ends (504) as soon as the site watch
// counts that site lost, rather than at the deadline.
func (g *Gateway) dispatch(ctx context.Context, subject, home, id string, deadline time.Time, ev events.Event, site string) (*events.Reply, error) {
	data, err := events.Encode(ev)
	if err != nil {
		return nil, err
	}
	ch := make(chan *events.Reply, 1)
	g.waitMu.Lock()
	g.waiting[id] = waiter{ch: ch, home: home}
	g.waitMu.Unlock()
	defer func() {
		g.waitMu.Lock()
		delete(g.waiting, id)
		g.waitMu.Unlock()
	}()
	msg := &nats.Msg{Subject: subject, Header: nats.Header(events.Header(events.HeaderType, ev.Type(), events.HeaderReply, events.ReplySubject(g.cfg.ID, id)))}
	msg.Data = data
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	if site != "" && g.cfg.Sites != nil {
		var stop func()
		ctx, stop = whileReachable(ctx, g.cfg.Sites, site)
		defer stop()
	}
	// lost is the site lost while the request travelled, if it was.
	lost := func() string {
		if errors.Is(context.Cause(ctx), errSiteLost) {
			return site
		}
		return ""
	}
	if err := g.append(ctx, msg, id, site != ""); err != nil {
		err = fmt.Errorf("append %s: %w", ev.Type(), err)
		if projections.NotStored(err) {
			return nil, err
		}
		// An attempt not answered may have been stored.
		if cause := context.Cause(ctx); cause != nil && !errors.Is(err, cause) {
			err = fmt.Errorf("%w (%w)", err, cause)
		}
		return nil, &unanswered{err: err, site: lost()}
	}
	var ask <-chan time.Time
	if home != "" {
		t := time.NewTicker(askAfter)
		defer t.Stop()
		ask = t.C
	}
	for {
		select {
		case r := <-ch:
			return r, nil
		case <-ask:
			if r, _ := g.askAnswer(ctx, home, id); r != nil {
				// Taken out of waiting here, unless a reply or a sweep
				// (askWaiting) delivered it meanwhile: then it is theirs,
				// counted once.
				if !g.takeWaiting(id) {
					return <-ch, nil
				}
				g.answersAgain.waited.Add(1)
				g.log.Info("answer lost on its way; the home node gave it again", "req", id, "home", home)
				return r, nil
			}
		case <-ctx.Done():
			select {
			case r := <-ch: // came as the wait ended
				return r, nil
			default:
			}
			un := &unanswered{err: fmt.Errorf("no reply to %s: %w", ev.Type(), context.Cause(ctx)), site: lost()}
			if home != "" && site == "" {
				// Its lease is in the bucket this gateway follows.
				if why := g.cfg.Owners.unowned(home, time.Now()); why != "" {
					un.err = fmt.Errorf("%w; %s", un.err, why)
					un.unowned = home
				}
			}
			return nil, un
		}
	}
}

// siteLook is how often a request waiting on another site looks whether
// the site watch counts that site lost.
const siteLook = 100 * time.Millisecond

// errSiteLost ends the wait of a request for another site's home server
// once the site watch counts that site lost: it travelled into a link
// that went silent, or to a site stopped, and no answer is coming.
var errSiteLost = errors.New("the site was lost while the request travelled")

// whileReachable returns a context that ends with errSiteLost once sites
// counts site lost (looked at every siteLook), and a stop that ends the
// looking; the goroutine it starts is done when stop returns.
func whileReachable(ctx context.Context, sites interface{ Lost(string) bool }, site string) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(siteLook)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if sites.Lost(site) {
					cancel(fmt.Errorf("site %s: %w", site, errSiteLost))
					return
				}
			}
		}
	}()
	return ctx, func() { cancel(nil); <-done }
}

// askAnswer asks home's node for the answer it recorded for request id
// (waiting askTimeout at most); nil when it has none (yet), with an error
// when the node did not answer (none serves home, or it is too slow).
func (g *Gateway) askAnswer(ctx context.Context, home, id string) (*events.Reply, error) {
	ctx, cancel := context.WithTimeout(ctx, askTimeout)
	defer cancel()
	m, err := g.cfg.Conn.RequestWithContext(ctx, events.AnswerSubject(home), []byte(id))
	if err != nil {
		return nil, err
	}
	if len(m.Data) == 0 {
		return nil, nil
	}
	ev, err := events.Decode(m.Header.Get(events.HeaderType), m.Data)
	if err != nil {
		return nil, nil
	}
	r, ok := ev.(*events.Reply)
	if !ok || r.ID != id {
		return nil, nil
	}
	return r, nil
}

// askTimeout bounds the wait for a home node's answer to an ask.
const askTimeout = time.Second

// askBackWorkers bounds the asks of askWaiting in flight at once: after a
// reconnection thousands of requests may wait, and their asks, each a
// core NATS request, reach a few home nodes.
const askBackWorkers = 16

// askBack asks, each time the NATS connection comes back (a status on
// back, until it is closed), for the answers of the requests waiting: one
// published while the gateway was away is lost, and its request would
// wait for its next askAfter tick. Reconnections heard while it asks are
// one more sweep.
func (g *Gateway) askBack(back <-chan nats.Status) {
	for range back {
		for more := true; more; {
			select {
			case _, ok := <-back:
				if !ok {
					return
				}
			default:
				more = false
			}
		}
		g.askWaiting(g.stopping)
	}
}

// askWaiting asks the home nodes for the answers of the requests waiting
// now, askBackWorkers at a time, and hands those given to their requests;
// once a node has not answered an ask (none serves its home server, or it
// is too slow), the other requests of its home server are left to their
// askAfter ticks. It logs one line.
func (g *Gateway) askWaiting(ctx context.Context) {
	type ask struct{ id, home string }
	var asks []ask
	g.waitMu.Lock()
	for id, w := range g.waiting {
		if w.home != "" {
			asks = append(asks, ask{id, w.home})
		}
	}
	g.waitMu.Unlock()
	if len(asks) == 0 {
		return
	}
	start := time.Now()
	var (
		mu                            sync.Mutex
		silent                        = map[string]error{} // homes whose node did not answer
		given, undecided, left, ended int
		wg                            sync.WaitGroup
	)
	next := make(chan ask)
	for range min(askBackWorkers, len(asks)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for a := range next {
				mu.Lock()
				_, skip := silent[a.home]
				mu.Unlock()
				g.waitMu.Lock()
				_, waiting := g.waiting[a.id]
				g.waitMu.Unlock()
				if skip || !waiting {
					mu.Lock()
					if skip {
						left++
					} else {
						ended++
					}
					mu.Unlock()
					continue
				}
				r, err := g.askAnswer(ctx, a.home, a.id)
				delivered := r != nil && g.deliver(r)
				mu.Lock()
				switch {
				case err != nil:
					if _, ok := silent[a.home]; !ok {
						silent[a.home] = err
					}
					left++
				case delivered:
					given++
				case r != nil:
					ended++ // answered meanwhile
				default:
					undecided++
				}
				mu.Unlock()
			}
		}()
	}
	for _, a := range asks {
		next <- a
	}
	close(next)
	wg.Wait()
	g.answersAgain.reconnected.Add(uint64(given))
	attrs := []any{"waiting", len(asks), "given_again", given, "not_decided_yet", undecided,
		"answered_meanwhile", ended, "left_to_their_ticks", left, "took", time.Since(start).Round(time.Millisecond)}
	if len(silent) > 0 {
		var homes []string
		for _, home := range slices.Sorted(maps.Keys(silent)) {
			homes = append(homes, fmt.Sprintf("%s (%v)", home, silent[home]))
		}
		attrs = append(attrs, "homes_not_answering", strings.Join(homes, ", "))
	}
	g.log.Info("NATS connection back: asked the home nodes for the answers of the requests waiting", attrs...)
}

// append appends a request event to its stream, once (projections.Append:
// retried with the same message id until it is stored or ctx ends; for
// another site's stream, in one attempt); the request is then answered
// 503 (projections.NotStored) or 504, never later than its deadline.
func (g *Gateway) append(ctx context.Context, msg *nats.Msg, id string, remote bool) error {
	if remote {
		return projections.AppendOnce(ctx, g.cfg.JetStream, msg, id)
	}
	attempts, err := projections.Append(ctx, g.cfg.JetStream, msg, id)
	if attempts > 1 {
		g.log.Warn("request appended after retries, or not at all", "req", id, "attempts", attempts, "err", err)
	}
	return err
}

// unanswered is a request whose deadline passed after it was given to its
// stream, or while it was: it may have been stored, decided and carried
// out all the same (a message delivered, its answer lost on a link that
// went silent, or late). It is answered 504, never 503: a 503 says the
// request was not taken, and a client may send it again as if nothing
// had happened. site is another site the site watch counted lost while
// the request travelled to it ("" when the deadline passed).
type unanswered struct {
	err  error
	site string
	// unowned is the home server of the gateway's site the request was
	// for when, as it was answered, no node owned it ("" otherwise).
	unowned string
}

func (e *unanswered) Error() string { return e.err.Error() }
func (e *unanswered) Unwrap() error { return e.err }

// explain is what the client of req is told.
func (e *unanswered) explain(req *rvp.Request) string {
	what := "no answer in time; the request may have been carried out all the same"
	if e.site != "" {
		what = fmt.Sprintf("site %s was lost while the request travelled to it; it may have been carried out there all the same", e.site)
	}
	if e.unowned != "" {
		what = fmt.Sprintf("no answer in time: no node serves home server %s now; the request may have been carried out all the same", e.unowned)
	}
	if req != nil && req.Method == "NOTIFY" {
		what += " (the message delivered)"
	}
	return what + ": check before sending it again"
}
