package homenode

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
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

// Policy bounds what clients may ask for.
type Policy struct {
	// MinLifetime and MaxLifetime clamp Subscription-Lifetime; a request
	// without one gets DefaultLifetime. Defaults 60s, 4h, 4h.
	MinLifetime, MaxLifetime, DefaultLifetime time.Duration
	// MinLease and MaxLease clamp the timeout of a presence lease; a state
	// set without one gets DefaultLease. Defaults 30s, 4h, 20m (Exchange's
	// lease). MaxLease must stay at least 4h: Net::RVP leases its state for
	// its whole renewal interval.
	MinLease, MaxLease, DefaultLease time.Duration
	// MaxHops is the highest RVP-Hop-Count forwarded. Default 8.
	MaxHops int
	// DeliveryTimeout bounds the delivery of one message to all of a
	// recipient's clients, well inside librvp's 30 s. Default 10s.
	DeliveryTimeout time.Duration
	// MaxCallbackFailures is how many NOTIFYs in a row a callback may leave
	// unanswered (no connection, no status) before its subscription ends,
	// and with a user's last login its presence. Default 3; negative never.
	MaxCallbackFailures int
	// MaxLogins bounds the login subscriptions (callback endpoints) on a
	// node, so that a message fans out to at most this many; more are
	// refused with 503 and a Retry-After. Default 64.
	MaxLogins int
	// MaxWatchers bounds the property subscriptions on a node; more are
	// refused with 503 and a Retry-After. Default 4096.
	MaxWatchers int
	// MaxWatchesPerSubscriber bounds the property subscriptions one
	// subscriber (a watcher of ours, or another organisation's principal)
	// holds on one node, so that no one takes a node's MaxWatchers alone:
	// a new one beyond it ends the subscriber's one that lapses first
	// (librvp subscribes afresh at each sign-in and leaves the old ones to
	// lapse, so a new subscription is never refused for it). Default 32.
	MaxWatchesPerSubscriber int
	// MaxWatchesPerNetwork bounds the property subscriptions other
	// organisations' principals hold on one node from one client network
	// (an IPv4 address, an IPv6 /64: events.SenderNetwork), all of them
	// together: a server may speak for any alias, under any domain name,
	// but not from a network it does not have. More are refused with 503
	// and a Retry-After, unless the subscriber replaces one of its own
	// (MaxWatchesPerSubscriber). Default 1024, a quarter of MaxWatchers.
	MaxWatchesPerNetwork int
	// MaxWatchesForeign bounds the property subscriptions other
	// organisations' principals hold on one node together, from however
	// many networks, so that our users always have the rest of
	// MaxWatchers. More are refused with 503 and a Retry-After, as for
	// MaxWatchesPerNetwork. Default 2048, half of MaxWatchers.
	MaxWatchesForeign int
	// MaxWatchesPerUser bounds the property subscriptions one subscriber
	// of ours (a user, for one watcher: as MaxWatchesPerSubscriber keys
	// it) holds on the home server, across its nodes: each is a record
	// and a fact, and each change of any of them a NOTIFY to its
	// Call-Back. At the bound a new watch of a node the subscriber
	// watches already ends its own there that lapses first (librvp
	// subscribes afresh at each sign-in); one of another node is refused
	// with 503 and a Retry-After. Default 2048: a buddy list of Exchange
	// 2000's was tens to a few hundred, and librvp's sign-ins leave their
	// watches to lapse (4 h), so a real user holds a few of each; 2048
	// is several times the largest list, and bounds one subscriber to
	// half a node's MaxWatchers' worth on the server.
	MaxWatchesPerUser int
	// MaxViews bounds the presence views on a node (one a client, as
	// MaxLogins): a state set through a new view beyond it ends the view
	// that lapses first. Default 64.
	MaxViews int
	// MaxFanout bounds the NOTIFYs one decision sends (a change of presence
	// told to watchers' clients); beyond it they are dropped and counted.
	// Default 8192.
	MaxFanout int
	// OmitBodies keeps message bodies out of the facts, which then record
	// each body's size and SHA-256 (Exchange kept nothing; auditors want
	// the text; privacy rules may forbid it).
	OmitBodies bool
}

// DefaultPolicy returns the policy's defaults: the one place they are
// written. A zero field of a Policy takes its value from here, and rvpd's
// flags take their defaults from here.
func DefaultPolicy() Policy {
	return Policy{
		MinLifetime: time.Minute, MaxLifetime: 4 * time.Hour, DefaultLifetime: 4 * time.Hour,
		MinLease: 30 * time.Second, MaxLease: MinMaxLease, DefaultLease: 20 * time.Minute,
		MaxHops:             8,
		DeliveryTimeout:     10 * time.Second,
		MaxCallbackFailures: 3,
		MaxLogins:           64,
		MaxWatchers:         4096,
		MaxFanout:           8192,

		MaxWatchesPerSubscriber: 32,
		MaxWatchesPerNetwork:    1024,
		MaxWatchesForeign:       2048,
		MaxWatchesPerUser:       2048,
		MaxViews:                64,
	}
}

// MinMaxLease is the least MaxLease may be: Net::RVP leases its state for
// its whole renewal interval of 14400 s, so a shorter maximum would make
// it flap offline between renewals.
const MinMaxLease = 4 * time.Hour

func (p Policy) withDefaults() Policy {
	d := DefaultPolicy()
	def := func(v *time.Duration, dv time.Duration) {
		if *v <= 0 {
			*v = dv
		}
	}
	def(&p.MinLifetime, d.MinLifetime)
	def(&p.MaxLifetime, d.MaxLifetime)
	def(&p.DefaultLifetime, d.DefaultLifetime)
	def(&p.MinLease, d.MinLease)
	def(&p.MaxLease, d.MaxLease)
	def(&p.DefaultLease, d.DefaultLease)
	def(&p.DeliveryTimeout, d.DeliveryTimeout)
	if p.MaxHops <= 0 {
		p.MaxHops = d.MaxHops
	}
	if p.MaxCallbackFailures == 0 {
		p.MaxCallbackFailures = d.MaxCallbackFailures
	}
	for _, v := range []struct {
		p *int
		d int
	}{{&p.MaxLogins, d.MaxLogins}, {&p.MaxWatchers, d.MaxWatchers}, {&p.MaxFanout, d.MaxFanout},
		{&p.MaxWatchesPerSubscriber, d.MaxWatchesPerSubscriber}, {&p.MaxWatchesPerNetwork, d.MaxWatchesPerNetwork}, {&p.MaxWatchesForeign, d.MaxWatchesForeign},
		{&p.MaxWatchesPerUser, d.MaxWatchesPerUser}, {&p.MaxViews, d.MaxViews}} {
		if *v.p <= 0 {
			*v.p = v.d
		}
	}
	return p
}

// Validate reports every inconsistency of p at once, its zero fields taken
// as their defaults (in the manner of pebble's Options.Validate): a
// minimum above its maximum, a maximum lease below MinMaxLease, a
// delivery timeout librvp would not wait for. Defaults outside their
// bounds are not errors: they are clamped like the values clients ask
// for.
func (p Policy) Validate() error {
	p = p.withDefaults()
	var errs []error
	if p.MinLifetime > p.MaxLifetime {
		errs = append(errs, fmt.Errorf("subscription lifetimes: the minimum %s is above the maximum %s", p.MinLifetime, p.MaxLifetime))
	}
	if p.MinLease > p.MaxLease {
		errs = append(errs, fmt.Errorf("presence leases: the minimum %s is above the maximum %s", p.MinLease, p.MaxLease))
	}
	if p.MaxLease < MinMaxLease {
		errs = append(errs, fmt.Errorf("presence leases: the maximum %s is below %s: Net::RVP leases its state for its whole renewal interval (14400 s) and would flap offline", p.MaxLease, MinMaxLease))
	}
	if p.DeliveryTimeout >= rvp.ClientPatience {
		errs = append(errs, fmt.Errorf("delivery timeout %s: it must stay below librvp's %s, after which the sender gives up", p.DeliveryTimeout, rvp.ClientPatience))
	}
	return errors.Join(errs...)
}

// Config configures a Node.
type Config struct {
	// Home is the name of the home server this node owns. Required.
	Home string
	// JetStream and Conn reach the cluster. Required.
	JetStream jetstream.JetStream
	Conn      *nats.Conn
	// DB holds the home projection. Required.
	DB *projections.DB
	// Directory is the directory projection, kept current by its owner.
	// Required.
	Directory *projections.Directory
	// Client delivers NOTIFYs. Default: an rvp.Client with its defaults.
	Client *rvp.Client
	Policy Policy
	// Workers bounds the NOTIFYs in progress at once, each on a
	// connection of its own. Default 256: a thousand connections made at
	// once cost more each than a few hundred (a fan-out to 1,000 watchers
	// measured 12% more CPU a NOTIFY, and its p99 1.50× the relay's
	// against 1.34×, with 1,024), and 64 users whose Call-Backs never
	// answer (4 workers each, PerKey, for the 2 s connect timeout) hold
	// up every NOTIFY of the home server meanwhile.
	Workers int
	// PerKey bounds the NOTIFYs in progress at once to one user's clients
	// (or one callback host that is no user's login), so that a user
	// whose callbacks hang cannot hold up anyone else's. Default 4.
	PerKey int
	// KeyQueue bounds the NOTIFYs waiting for one user (or host); more
	// are refused (a message: 503; a notification: dropped). Default 256.
	KeyQueue int
	// QueueLen bounds the NOTIFYs waiting in all. Default 16384.
	QueueLen int
	// SweepEvery is how often expiries are looked for. Default 500ms.
	SweepEvery time.Duration
	// ResendPresence makes the node tell watchers the current state when
	// it starts: set when it takes the home server over from a node that
	// may have died with notifications undelivered. Every notification
	// is over (sent, failed, or dropped unsent) DeliveryTimeout after it
	// was decided, and the node that decided the stream's last fact was
	// alive then: so only the watchers of the users whose facts were
	// stored in the DeliveryTimeout (and ClockSkew) before the last one
	// are told; after a quiet spell, none.
	ResendPresence bool
	// PreviousOwnerSeen, when set, is when the previous owner was last
	// known alive (Lease.PreviousHolderSeen: its last renewal): when later
	// than the stream's last fact, ResendPresence's window ends there, as
	// what it decided before was over by then too.
	PreviousOwnerSeen time.Time
	// ClockSkew is how far the clocks of the home nodes and of the NATS
	// servers that store their facts may differ (ResendPresence's window
	// is widened by it). Default 30s.
	ClockSkew time.Duration
	// HandoffWait is how long requests for a user moved here are held
	// back while the handoff from its former home server has not come;
	// then they are decided without it (it merges when it comes). Default
	// 3s: past a gateway's patience it would only turn them into 504s.
	HandoffWait time.Duration
	// FactStream configures the home server's fact stream, created by the
	// node if it is missing (and, unless CreateOnly, updated). With Site
	// set (a deployment of several sites), the home server's requests
	// stream too, and the node owns only a home server of its site.
	FactStream projections.StreamOptions
	// Sites, at a site of a deployment of several, tells which other
	// sites are lost; nil for a deployment of one domain.
	Sites *SiteWatch
	// Owned reports whether this node's lease on the home server is
	// still good now (Lease.Owned); nil: always. Nothing is decided or
	// appended while it is not: a node paused past its lease (a stopped
	// process, a machine that froze) finds so the moment it runs again,
	// before it decides anything, and waits for its renewal to fail (the
	// lease lost, the node stopped) or, if it was slow only, to succeed.
	Owned func() bool
	// Window bounds the facts published and not yet acknowledged; a full
	// window holds new requests back. Default 512; at most 1000, the
	// facts of a takeover's fence (fence.go).
	Window int
	// Holder and Term name this node's ownership of the home server: the
	// node's name and the revision of its lease when it took the home
	// server (Lease.Term). With Term set, the node fences the fact stream
	// (fence.go) before it decides anything, so that no fact of a
	// previous owner still on its way is stored after its own: set them
	// when the node takes the home server over.
	Holder string
	Term   uint64
	// AckWait is how long a request handed to this node may stay
	// unacknowledged before JetStream hands it out again: when this node
	// dies, the requests it held go to the next owner that much after it
	// took them. At most the ownership lease, so that they are there when
	// the next owner takes over. Default 5s.
	AckWait time.Duration
	// MaxDeliver is how often a request is handed to this node before it
	// is given up (every stop hands back what was fetched and not
	// decided, and a redelivery counts): by then its deadline has long
	// passed. A handoff, state no gateway waits for, is never given up:
	// one taken again later for the MaxDeliver/2-th time is appended
	// anew (retryLater). Default 20.
	MaxDeliver int
	// AckTimeout is how long a fact's publish waits for its answer before
	// it counts as lost (the stream then tells whether it was stored).
	// JetStream answers in milliseconds; a publish sent while the
	// stream's leader is being elected is not answered at all, and the
	// node resumes this long after the new leader is there at most.
	// Default 2s.
	AckTimeout time.Duration
	// Metrics, when set, count the node's decisions, facts, window, lag,
	// NOTIFYs and users (NewMetrics).
	Metrics *Metrics
	// Logger defaults to discarding.
	Logger *slog.Logger
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

func (c Config) validate() error {
	var errs []error
	if c.Home == "" {
		errs = append(errs, errors.New("homenode: Home is required"))
	}
	if c.JetStream == nil || c.Conn == nil {
		errs = append(errs, errors.New("homenode: JetStream and Conn are required"))
	}
	if c.DB == nil || c.Directory == nil {
		errs = append(errs, errors.New("homenode: DB and Directory are required"))
	}
	if err := c.Policy.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("homenode: policy: %w", err))
	}
	if c.Window > fenceSize {
		errs = append(errs, fmt.Errorf("homenode: Window %d: at most %d (a takeover's fence, one atomic batch, must be as long as any node's window)", c.Window, fenceSize))
	}
	return errors.Join(errs...)
}

// Node owns one home server. Run does the work.
type Node struct {
	cfg    Config
	policy Policy
	log    *slog.Logger
	now    func() time.Time
	proj   *projections.Home
	over   *projections.Overlay // the facts in flight, over proj
	pool   *pool
	stream string // the home server's fact stream

	pub     jetstream.JetStream // publishes the facts, asynchronously
	results chan pubResult

	// ttlRefused says a requests stream refused a handoff's mark to be
	// kept past its max age (publishKept), logged once.
	ttlRefused atomic.Bool

	// The pipeline, owned by Run's goroutine: the sequence of the last fact
	// published, the one up to which all are acknowledged, those
	// acknowledged past it, how many answers are awaited, the decisions not
	// released yet (and those of requests, by id), and whether a publish
	// failed (nothing more is published until the window is recovered).
	last, acked uint64
	done        map[uint64]bool
	unapplied   []projections.SeqFact // published, not yet acknowledged, in order
	applier     *applier
	inflight    int
	window      []*pending
	inWindow    map[string]*pending
	waiting     []waitingFact // facts waiting for room in the window (send)
	broken      bool
	rounds      int // recoveries from another writer in a row
	// unstored is the first fact the stream refused for good (too large),
	// with why; zero: none.
	unstored    uint64
	unstoredErr error

	life     context.Context // Run's: deliveries end with it
	outcomes chan outcome
	// refused are the outcomes of deliveries the pool had no room for,
	// decided by Run's goroutine (which owns it) as it takes inputs.
	refused []outcome
	seen    *recent
	// forwards are the requests forwarded from here lately (forward),
	// never decided here; owned by Run's goroutine.
	forwards forwards
	// dirWaits are the requests waiting for the directory (dirwait.go),
	// in the order they came; owned by Run's goroutine.
	dirWaits []dirWait
	// recentRead is set once the facts of the last recentWindow have been
	// read into seen (readRecent); until then early holds the requests
	// delivered before (to a former owner, maybe), which those facts may
	// say were decided. Both owned by Run's goroutine.
	recentRead bool
	early      []jetstream.Msg
	relays     chan relayOut // to runRelays
	reaches    chan reach
	reach      reachability // owned by Run's goroutine
	// delivering holds the messages being delivered, by request id; owned
	// by Run's goroutine.
	delivering map[string]*sending
	// parked holds the requests for users whose handoff is awaited; owned
	// by Run's goroutine.
	parked map[events.User][]jetstream.Msg
	// remote remembers what users here were told of nodes homed at other
	// home servers (sites.go); owned by Run's goroutine.
	remote remotes
	// relayAsync publishes relays to other sites, asynchronously;
	// resending counts the re-sendings of presence to a site that is back.
	relayAsync jetstream.JetStream
	resending  sync.WaitGroup
	relayLog   relayLog
	// dropLog and relayDropLog space out the lines of notifications
	// dropped at a full queue, and of relays at a full relay queue.
	dropLog, relayDropLog dropLog
	// limitLog spaces out the lines of watches refused for their
	// subscriber's bound (Policy.MaxWatchesPerUser).
	limitLog dropLog

	// Counters, read by Stats.
	decided, expired, dropped, held, published, conflicts, recovered atomic.Uint64
	// lost counts the deliveries of requests lost on their way to the
	// node and handed back (watchLost).
	lost atomic.Uint64
	// unreadable counts the recoveries in a row that could not read the
	// fact stream; owned by Run.
	unreadable int
	// resends counts the recoveries in a row that published facts of the
	// window again without a fact acknowledged since, the last at
	// resentAt; resendRefused says that one of those was refused for the
	// stream's last sequence (recover then waits longer before each).
	// Owned by Run.
	resends       int
	resentAt      time.Time
	resendRefused bool
	// sent are the last answers sent, sent again when the connection is
	// back (lost.go); owned by Run.
	sent sentReplies

	metrics *homeMetrics
	// catching is the sequence the projection catches up to at start;
	// serving is set once the node takes requests (Ready).
	catching atomic.Uint64
	serving  atomic.Bool
}

// New returns a node for cfg.Home; Run starts it.
func New(cfg Config) (*Node, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	// A callback that does not take a connection at once is not waited
	// for long: it would hold a delivery slot of its user.
	client := rvp.Client{}
	if cfg.Client != nil {
		client = *cfg.Client
	}
	if client.DialTimeout <= 0 {
		client.DialTimeout = 2 * time.Second
	}
	if client.Buffers == nil {
		client.Buffers = new(rvp.Buffers) // a NOTIFY's 8 KiB, lent
	}
	cfg.Client = &client
	if cfg.Workers <= 0 {
		cfg.Workers = 256
	}
	if cfg.PerKey <= 0 {
		cfg.PerKey = 4
	}
	if cfg.KeyQueue <= 0 {
		cfg.KeyQueue = 256
	}
	if cfg.QueueLen <= 0 {
		cfg.QueueLen = 16384
	}
	if cfg.SweepEvery <= 0 {
		cfg.SweepEvery = 500 * time.Millisecond
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ClockSkew <= 0 {
		cfg.ClockSkew = 30 * time.Second
	}
	if cfg.HandoffWait <= 0 {
		cfg.HandoffWait = 3 * time.Second
	}
	if cfg.Window <= 0 {
		cfg.Window = 512
	}
	if cfg.AckWait <= 0 {
		cfg.AckWait = 5 * time.Second
	}
	if cfg.MaxDeliver <= 0 {
		cfg.MaxDeliver = 20
	}
	if cfg.AckTimeout <= 0 {
		cfg.AckTimeout = 2 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("home", cfg.Home)
	proj, err := projections.OpenHome(cfg.DB, cfg.Home)
	if err != nil {
		return nil, err
	}
	n := &Node{
		cfg:        cfg,
		policy:     cfg.Policy.withDefaults(),
		log:        log,
		now:        func() time.Time { return cfg.Now().UTC() },
		proj:       proj,
		over:       projections.NewOverlay(proj),
		stream:     events.FactStream(cfg.Home),
		results:    make(chan pubResult, 2*cfg.Window+16),
		done:       map[uint64]bool{},
		inWindow:   map[string]*pending{},
		outcomes:   make(chan outcome, 256),
		seen:       newRecent(8192),
		reaches:    make(chan reach, 1024),
		relays:     make(chan relayOut, 4096),
		reach:      reachability{limit: cfg.Policy.withDefaults().MaxCallbackFailures},
		delivering: map[string]*sending{},
		parked:     map[events.User][]jetstream.Msg{},
	}
	if n.pub, err = newPublisher(cfg.Conn, cfg.Window, cfg.AckTimeout, n.results); err != nil {
		return nil, err
	}
	if n.relayAsync, err = n.relayPublisher(); err != nil {
		return nil, err
	}
	n.metrics = cfg.Metrics.of(cfg.Home)
	n.pool = newPool(cfg.Client, cfg.Workers, cfg.PerKey, cfg.KeyQueue, cfg.QueueLen, log, &n.dropped, n.metrics)
	return n, nil
}

// Projection returns the node's home projection.
func (n *Node) Projection() *projections.Home { return n.proj }

// ConsumerName is the durable consumer of home's request events.
func ConsumerName(home string) string { return "home_" + events.Token(home) }

// Run serves the home server until ctx ends; it returns nil then, or the
// error that stopped it.
func (n *Node) Run(parent context.Context) (err error) {
	defer func() {
		if parent.Err() != nil {
			err = nil // stopped, whatever was under way
		}
	}()
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	n.life = ctx
	var wg sync.WaitGroup
	// Once every worker has ended: the NOTIFYs a stopped node leaves
	// queued are not sent by it, and a standby's gauges read none (nor
	// users online, subscriptions, facts in flight or requests waiting:
	// the next owner reports those).
	defer n.metrics.stopped()
	// Last, the notifications dropped that no line told yet.
	defer func() { n.dropsEnded(n.now(), true) }()
	defer wg.Wait()
	defer n.resending.Wait()
	// The projection outlives the deciding loop: what is in flight when
	// the node is stopped is finished (its facts acknowledged, its reply
	// sent) before the loop returns, and applied to Pebble before Run
	// returns.
	n.applier = newApplier(n.proj)
	defer n.applier.stop()
	defer cancel() // runs first: every goroutine but the applier ends on ctx.

	if err := projections.EnsureFactStream(ctx, n.cfg.JetStream, n.cfg.Home, n.cfg.FactStream); err != nil {
		return fmt.Errorf("home %s: %w", n.cfg.Home, err)
	}
	if err := n.ensureSite(ctx); err != nil {
		return err
	}
	state, err := n.streamState(ctx)
	if err != nil {
		return err
	}
	last := state.LastSeq
	if outdated, err := n.proj.Outdated(); err != nil {
		return fmt.Errorf("home %s: %w", n.cfg.Home, err)
	} else if outdated || n.proj.Position() > last {
		n.log.Info("home projection written by an older version or from another stream; rebuilding it from the facts",
			"position", n.proj.Position(), "stream last", last)
		if err := n.proj.Reset(); err != nil {
			return err
		}
		n.over = projections.NewOverlay(n.proj)
	}
	n.catching.Store(last)
	if err := n.catchUp(ctx, last); err != nil {
		return err
	}
	if n.cfg.Term != 0 {
		if err := n.fence(ctx); err != nil {
			return err
		}
	}
	recent := make(chan recentFacts, 1)
	failed := make(chan error, 3)
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := n.applier.run(); err != nil {
			failed <- err
		}
	}()
	n.pool.start(ctx, &wg)
	wg.Go(func() { n.runRelays(ctx) })
	if n.cfg.ResendPresence {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// The stream's last fact as this node found it, before it
			// appended any of its own.
			n.resendAfterTakeover(ctx, state)
		}()
	}
	moves := make(chan move, 64)
	disables := make(chan disable, 64)
	// disables heard ahead of the directory (endDisabled).
	ahead := &aheadDisables{ready: make(chan struct{})}
	dirFrom := n.cfg.Directory.Position() // before strays and disabledHere read it
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := n.watchMoves(ctx, dirFrom, moves, disables); err != nil {
			failed <- err
		}
	}()
	strays, err := n.strays(ctx)
	if err != nil {
		return err
	}
	for _, mv := range strays {
		if err := n.handoff(context.WithoutCancel(ctx), mv); err != nil {
			n.log.Warn("user moved away not handed off yet; it will be when a request for it comes",
				"user", mv.user.String(), "to", mv.to, "err", err)
		}
	}
	gone, err := n.disabledHere()
	if err != nil {
		return err
	}
	for _, u := range gone {
		if err := n.input(context.WithoutCancel(ctx), &pending{in: disabled(u)}); err != nil {
			return err
		}
	}
	admin, err := n.cfg.Conn.Subscribe(events.HomeAdminSubject(n.cfg.Home, "verify"), n.onVerify)
	if err != nil {
		return fmt.Errorf("home %s: admin subscription: %w", n.cfg.Home, err)
	}
	defer admin.Unsubscribe()
	answers, err := n.cfg.Conn.Subscribe(events.AnswerSubject(n.cfg.Home), n.onAnswerAsked)
	if err != nil {
		return fmt.Errorf("home %s: answers subscription: %w", n.cfg.Home, err)
	}
	defer answers.Unsubscribe()
	userState, err := n.cfg.Conn.Subscribe(events.HomeAdminSubject(n.cfg.Home, "user"), n.onUser)
	if err != nil {
		return fmt.Errorf("home %s: admin subscription: %w", n.cfg.Home, err)
	}
	defer userState.Unsubscribe()

	cons, err := n.cfg.JetStream.CreateOrUpdateConsumer(ctx, n.cfg.FactStream.RequestStreamOf(n.cfg.Home), jetstream.ConsumerConfig{
		Durable:       ConsumerName(n.cfg.Home),
		Description:   "requests for home server " + n.cfg.Home,
		FilterSubject: events.RequestFilter(n.cfg.Home),
		AckPolicy:     jetstream.AckExplicitPolicy,
		// A request takes milliseconds to decide (deliveries go on
		// without it), so a node that died holding one lets another have
		// it after AckWait, well inside the gateway's wait, and by the
		// time the next owner takes over (Config.AckWait).
		AckWait:       n.cfg.AckWait,
		MaxAckPending: 4096,
		MaxDeliver:    n.cfg.MaxDeliver,
	})
	if err != nil {
		return fmt.Errorf("home %s: request consumer: %w", n.cfg.Home, err)
	}
	// Requests handed out before and not acknowledged (to an owner that
	// died, perhaps after deciding them) are known from the facts decided
	// since the oldest of them was made.
	if since, ok := n.unacknowledgedSince(ctx, cons.CachedInfo(), last); ok {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n.keepReadingRecent(ctx, since, last, recent)
		}()
	} else {
		n.recentRead = true
	}
	// Pull requests expire soon and heartbeats come often: on a cluster a
	// pull request can be lost without an error, and nats.go notices only
	// when two heartbeats are missing (see projections.Follow).
	it, err := cons.Messages(jetstream.PullMaxMessages(128), jetstream.PullExpiry(5*time.Second), jetstream.PullHeartbeat(time.Second),
		// A missing heartbeat (the server gone, the connection moving) is
		// nats.go's to mend with a new pull request, not an error.
		jetstream.WithMessagesErrOnMissingHeartbeat(false))
	if err != nil {
		return fmt.Errorf("home %s: consume requests: %w", n.cfg.Home, err)
	}
	reqs := make(chan jetstream.Msg, 128)
	// Deliveries lost with the NATS server the node is connected to are
	// handed back as soon as it is seen (lost.go), not left to AckWait.
	taken := newDeliveries()
	back := n.cfg.Conn.StatusChanged(nats.CONNECTED)
	defer n.cfg.Conn.RemoveStatusListener(back)
	// Answers sent just before the connection broke are sent again once
	// it is back (connChanged): one channel, so that a break comes before
	// the reconnection that ends it.
	conn := n.cfg.Conn.StatusChanged(nats.RECONNECTING, nats.CONNECTED)
	defer n.cfg.Conn.RemoveStatusListener(conn)
	wg.Go(func() { n.watchLost(ctx, cons, taken, back, func() int { return len(reqs) }) })
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(reqs)
		for {
			taken.waiting.Store(true)
			m, err := it.Next()
			taken.waiting.Store(false)
			if err != nil {
				if !errors.Is(err, jetstream.ErrMsgIteratorClosed) {
					failed <- fmt.Errorf("home %s: read requests: %w", n.cfg.Home, err)
				}
				return
			}
			taken.took(m)
			select {
			case reqs <- m:
			case <-ctx.Done():
				return
			}
		}
	}()
	defer func() {
		// What is in flight is finished (for a while); what was fetched
		// but not decided, or not made durable, goes back to JetStream for
		// the next owner now rather than after AckWait.
		it.Stop()
		fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := n.flush(fctx); err != nil {
			n.log.Warn("stopped with decisions not durable; their requests go to the next owner", "decisions", len(n.window), "err", err)
		}
		cancel()
		for _, p := range n.window {
			if p.msg != nil {
				p.msg.Nak()
			}
		}
		for u, held := range n.parked {
			for _, m := range held {
				m.Nak()
			}
			delete(n.parked, u)
		}
		for _, m := range n.early {
			m.Nak()
		}
		n.early = nil
		for _, w := range n.dirWaits {
			w.m.Nak()
		}
		n.dirWaits = nil
		for {
			select {
			case m, ok := <-reqs:
				if !ok {
					return
				}
				m.Nak()
			default:
				return
			}
		}
	}()

	var sites <-chan SiteChange
	if n.cfg.Sites != nil {
		var stop func()
		// The sites that answered already are back for this node, which
		// re-sends them its users' presence (they may have been told its
		// users were offline while it was away).
		sites, stop = n.cfg.Sites.Changes(true)
		defer stop()
	}
	n.log.Info("home node serving", "position", n.proj.Position(), "stream", n.stream)
	n.serving.Store(true)
	defer n.serving.Store(false)
	if n.metrics != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n.countUsers(ctx)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		n.compactCache(ctx)
	}()
	tick := time.NewTicker(n.cfg.SweepEvery)
	defer tick.Stop()
	applied := n.proj.Changed()
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	dirDue := time.NewTimer(time.Hour)
	dirDue.Stop()
	defer dirDue.Stop()
	// A decision, once begun, is finished even if the node is stopped
	// meanwhile: its own context is not the node's.
	work := context.WithoutCancel(ctx)
	quick := 0 // inputs taken in a row without the select over every channel
	for {
		if n.broken && n.inflight == 0 {
			if err := n.recover(work); err != nil {
				return err
			}
			if n.broken {
				retry.Reset(recoverPause)
			}
		}
		// The inputs that come by the thousand a second (facts
		// acknowledged and applied, requests, deliveries' outcomes) are
		// taken first when they are there, up to quickTakes in a row: the
		// select below locks every one of its seventeen channels each
		// time, 15% of the node's goroutine's CPU in a profile of the
		// messages load. It is still reached whenever none waits, and at
		// least every quickTakes inputs, so that nothing else waits on
		// them.
		if quick < quickTakes {
			quick++
			select {
			case r := <-n.results:
				n.handleResult(r)
				continue
			case <-applied:
				// As below: the overlay lets go of what Pebble has.
				n.over.Forget(n.proj.Position())
				applied = n.proj.Changed()
				continue
			default:
			}
			if n.room() && len(n.refused) == 0 {
				select {
				case m, ok := <-reqs:
					if !ok {
						return nil
					}
					if err := n.handleRequest(work, ctx, m); err != nil {
						return err
					}
					continue
				case o := <-n.outcomes:
					if err := n.input(work, &pending{in: o}); err != nil {
						return err
					}
					continue
				default:
				}
			}
		}
		quick = 0
		// Inputs are taken while the window has room; answers always.
		var reqCh <-chan jetstream.Msg
		var outCh <-chan outcome
		var reachCh <-chan reach
		var moveCh <-chan move
		var disCh <-chan disable
		var disReadyCh <-chan struct{}
		var tickCh <-chan time.Time
		if n.room() {
			if len(n.refused) > 0 {
				o := n.refused[0]
				n.refused = n.refused[1:]
				if err := n.input(work, &pending{in: o}); err != nil {
					return err
				}
				continue
			}
			reqCh, outCh, reachCh, moveCh, disCh, disReadyCh, tickCh = reqs, n.outcomes, n.reaches, moves, disables, ahead.ready, tick.C
		}
		// Requests waiting for the directory are taken once it has moved
		// far enough, or their wait ends (dirwait.go); looked at again when
		// it moves, or when the first wait ends.
		var dirCh <-chan struct{}
		if len(n.dirWaits) > 0 && n.room() {
			dirCh = n.cfg.Directory.Changed() // before looking: a move after it is heard
			if err := n.releaseDirWaits(work, ctx); err != nil {
				return err
			}
			if len(n.dirWaits) > 0 {
				dirDue.Reset(time.Until(n.dirWaitDue()))
			} else {
				dirCh = nil
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-dirCh:
		case <-dirDue.C:
		case err := <-failed:
			return err
		case r := <-n.results:
			n.handleResult(r)
		case s := <-conn:
			n.connChanged(s)
		case rf := <-recent:
			if err := n.tookRecent(work, ctx, rf); err != nil {
				return err
			}
		case <-applied:
			n.over.Forget(n.proj.Position())
			applied = n.proj.Changed()
		case m, ok := <-reqCh:
			if !ok {
				return nil
			}
			if err := n.handleRequest(work, ctx, m); err != nil {
				return err
			}
		case o := <-outCh:
			if err := n.input(work, &pending{in: o}); err != nil {
				return err
			}
		case mv := <-moveCh:
			if err := n.handoff(work, mv); err != nil {
				n.log.Warn("user moved away not handed off; it will be when a request for it comes, or at the next start",
					"user", mv.user.String(), "to", mv.to, "err", err)
			}
		case dis := <-disCh:
			if err := n.endDisabled(work, ctx, dis, ahead, &wg); err != nil {
				return err
			}
		case <-disReadyCh:
			if err := n.aheadReady(work, ctx, ahead, &wg); err != nil {
				return err
			}
		case rc := <-reachCh:
			if err := n.handleReach(work, rc); err != nil {
				return err
			}
		case ch := <-sites:
			if err := n.onSite(work, ch); err != nil {
				return err
			}
		case <-tickCh:
			if err := n.sweep(work); err != nil {
				return err
			}
			n.sent.forget(time.Now().Add(-replyLookback))
			n.dropsEnded(n.now(), false)
			if err := n.unparkLate(work, ctx, n.now()); err != nil {
				return err
			}
		case <-retry.C:
		}
	}
}

// quickTakes is how many inputs Node.Run takes in a row from its busiest
// channels before it looks at all of them.
const quickTakes = 16

// streamState returns the state of the home server's fact stream.
func (n *Node) streamState(ctx context.Context) (jetstream.StreamState, error) {
	st, err := n.cfg.JetStream.Stream(ctx, n.stream)
	if err != nil {
		return jetstream.StreamState{}, fmt.Errorf("home %s: facts stream: %w", n.cfg.Home, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return jetstream.StreamState{}, fmt.Errorf("home %s: facts stream: %w", n.cfg.Home, err)
	}
	return info.State, nil
}

// catchUp applies to the projection every fact of the home server from
// its position up to last, read from its stream: on a node that followed
// the stream as a standby (WarmStandby), what the owner decided since.
// The chain of facts goes on from last; from now on the node applies the
// facts it publishes itself, once acknowledged. The requests decided
// before are learnt beside (readRecent), so that a request redelivered
// after a crash is answered with its outcome rather than decided twice.
func (n *Node) catchUp(ctx context.Context, last uint64) error {
	n.last, n.acked = last, last
	if last == 0 {
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	start := n.now()
	gap, err := n.proj.CatchUp(wctx, n.cfg.JetStream, last)
	if err != nil {
		return fmt.Errorf("home %s: catch up with the fact stream: %w", n.cfg.Home, err)
	}
	n.logGap(gap)
	n.log.Info("projection caught up", "seq", last, "took", n.now().Sub(start))
	return nil
}

// logGap says, at Error, that the projection caught up over facts the
// stream's retention removed before it applied them: the state only they
// made (an ACL, a property, a subscription) is missing from it, and stays
// missing. Nothing brings it back; a longer retention prevents it.
func (n *Node) logGap(g projections.Gap) { logGap(n.log, g) }

// logGap is Node.logGap for log (a warm standby's too).
func logGap(log *slog.Logger, g projections.Gap) {
	if g.IsZero() {
		return
	}
	if g.LegacyFirst > 0 {
		log.Error("the fact stream begins with facts copied from the single fact stream of an older version after its retention had removed facts before them: "+
			"the state only those made (ACLs, properties, subscriptions) is missing from this projection",
			"stream", g.Stream, "old_stream", events.StreamLegacyFacts, "removed_before_seq", g.LegacyFirst,
			"what_to_do", "check the users' ACLs and properties (rvpctl audit, the console)")
		return
	}
	log.Error("facts removed by the stream's retention before this projection applied them: the state only they made (ACLs, properties, subscriptions) is missing from it",
		"stream", g.Stream, "projection_seq", g.From, "first_fact", g.First, "retention", g.MaxAge,
		"what_to_do", "check the users' ACLs and properties (rvpctl audit, the console); keep -audit.retention longer than a node may stay down or an upgrade's rebuild may need")
}

// onAnswerAsked gives again the answer recorded for the request whose id
// is the body, or an empty body when there is none (not decided yet,
// nobody waited, or decided too long ago to be remembered).
func (n *Node) onAnswerAsked(m *nats.Msg) {
	dec, ok := n.seen.get(string(m.Data))
	if !ok || dec.delivering || dec.answer == nil {
		m.Respond(nil)
		return
	}
	resp := nats.NewMsg(m.Reply)
	resp.Header.Set(events.HeaderType, events.TypeReply)
	resp.Data = dec.answer
	m.RespondMsg(resp)
}

// recentWindow bounds the facts a node reads when it starts to know the
// requests decided before (readRecent): a request is worth deciding or
// answering only within its sender's patience (a request past its
// deadline is dropped), so facts older than that, and a margin for
// clocks, belong to no request still waiting.
const recentWindow = rvp.ClientPatience + 10*time.Second

// unacknowledgedSince tells whether requests were handed out and not
// acknowledged (to an owner that died, or let them go unfinished), and
// from when the facts that may have decided them are: when the oldest
// such request was made (the one after the consumer's acknowledgement
// floor, or older), less a margin for clocks, and never more than
// recentWindow ago. What a node reads when it starts is thus bounded by
// what was under way when its predecessor stopped, not by the home
// server's history.
func (n *Node) unacknowledgedSince(ctx context.Context, ci *jetstream.ConsumerInfo, last uint64) (time.Time, bool) {
	if last == 0 || ci == nil || (ci.NumAckPending == 0 && ci.NumRedelivered == 0) {
		return time.Time{}, false
	}
	since := n.now().Add(-recentWindow)
	// The stream the consumer is on: a site's home server has its own
	// (RVP_REQ_<home>); RVP_REQ is not there, and the whole window was
	// read at every takeover at a site.
	st, err := n.cfg.JetStream.Stream(ctx, n.cfg.FactStream.RequestStreamOf(n.cfg.Home))
	if err != nil {
		return since, true
	}
	m, err := st.GetMsg(ctx, ci.AckFloor.Stream+1)
	if err == nil && m.Time.Add(-2*time.Second).After(since) {
		since = m.Time.Add(-2 * time.Second)
	}
	return since, true
}

// recentFacts is what the facts since a time say of the requests they
// were decided for.
type recentFacts struct {
	decided map[string]decided
	// forwarded are the requests forwarded (forward), by id.
	forwarded map[string]forwardRecord
	// broken counts the facts read of decisions not whole (whole).
	broken int
	// fencedBy and fencedTerm name the owner whose fence was read last
	// (fence.go); "" for none.
	fencedBy   string
	fencedTerm uint64
	// The fact read last: its sequence and id, and whether its decision
	// was whole up to it.
	prevSeq   uint64
	prevID    string
	prevWhole bool
	facts     int
	since     time.Time
	took      time.Duration
	err       error
}

// readRecent reads the headers of the facts from since up to last: the
// requests they were decided for, whether a message's delivery ended,
// and the answer each got. It runs beside the node, which decides the
// requests never handed out before meanwhile.
func (n *Node) readRecent(ctx context.Context, since time.Time, last uint64) recentFacts {
	rf := n.readDecided(ctx, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &since}, last)
	rf.since = since
	return rf
}

// factReadResetAttempts is how many times the ordered consumer of a
// one-shot read of the home server's facts (readDecided,
// usersChangedLately) is created for a fetch before the read fails, 1 s
// then 2 s apart: long enough for the stream to have a new leader.
// Unbounded (the client's default, nats.go v1.55), a read of a stream
// deleted or offline since it began never returned, nor heeded its
// context: a takeover never learnt it should read again, a recovery held
// the deciding loop, and Run, waiting for them, never returned.
const factReadResetAttempts = 3

// readDecided reads the headers of the facts from where occ starts up to
// last: the requests they were decided for, whether a message's delivery
// ended, and the answer each got.
func (n *Node) readDecided(ctx context.Context, occ jetstream.OrderedConsumerConfig, last uint64) recentFacts {
	start := n.now()
	out := recentFacts{decided: map[string]decided{}, forwarded: map[string]forwardRecord{}}
	occ.HeadersOnly = true
	occ.MaxResetAttempts = factReadResetAttempts
	cons, err := n.cfg.JetStream.OrderedConsumer(ctx, n.stream, occ)
	if err != nil {
		out.err = fmt.Errorf("home %s: read recent facts of %s: %w", n.cfg.Home, n.stream, err)
		return out
	}
	// Up to last, whatever the batches: an empty one says nothing of the
	// end (a consumer just made may not be reachable yet).
	for seq, empty := uint64(0), 0; seq < last; {
		batch, err := cons.FetchNoWait(512)
		if err != nil && !errors.Is(err, nats.ErrNoResponders) {
			out.err = fmt.Errorf("home %s: read recent facts of %s after seq %d of %d: %w", n.cfg.Home, n.stream, seq, last, err)
			return out
		}
		count := 0
		if err == nil {
			for m := range batch.Messages() {
				count++
				if md, err := m.Metadata(); err == nil {
					seq = md.Sequence.Stream
				}
				out.add(m.Headers(), seq)
			}
		}
		out.facts += count
		if count > 0 {
			empty = 0
			continue
		}
		// Nothing pending is the end only from a replica that has the
		// stream up to last: a consumer made on one behind (catching up
		// after a partition or a restart) has nothing pending either, and
		// a takeover that read none of the last facts so decided the
		// requests they decided again (chaos seed 21). Such a read fails
		// below, and is made again.
		if info, err := cons.Info(ctx); err == nil && info.NumPending == 0 && info.Delivered.Stream >= last {
			break // nothing since, or nothing more
		}
		if empty++; empty > 10 {
			out.err = fmt.Errorf("home %s: read recent facts of %s: nothing after seq %d of %d", n.cfg.Home, n.stream, seq, last)
			return out
		}
		select {
		case <-ctx.Done():
			out.err = ctx.Err()
			return out
		case <-time.After(50 * time.Millisecond):
		}
	}
	out.took = n.now().Sub(start)
	return out
}

// add takes what the headers of one fact say.
func (rf *recentFacts) add(h nats.Header, seq uint64) {
	whole := rf.whole(seq, h.Get(events.HeaderFactID))
	typ := h.Get(events.HeaderType)
	if typ == events.TypeHomeFenced {
		if term, holder, ok := events.ParseOwnerHeader(h.Get(events.HeaderOwner)); ok {
			rf.fencedBy, rf.fencedTerm = holder, term
		} else {
			rf.fencedBy = "(unnamed)"
		}
	}
	id := h.Get(events.HeaderRequest)
	if id == "" {
		return
	}
	if !whole {
		// Neither decided nor answered by this decision: decided again.
		rf.broken++
		return
	}
	if typ == events.TypeRequestForwarded {
		// Passed on, not decided: a copy forwarded back here later is.
		if to, move, ok := events.ParseForwardHeader(h.Get(events.HeaderForward)); ok {
			rf.forwarded[id] = forwardRecord{to: to, move: move}
		}
		return
	}
	d, seen := rf.decided[id]
	accepted := typ == events.TypeMessageAccepted
	d.delivering = accepted && (!seen || d.delivering)
	if a := h.Get(events.HeaderAnswer); a != "" {
		var r events.Reply
		if err := json.Unmarshal([]byte(a), &r); err == nil {
			d.answer = []byte(a)
		}
	}
	rf.decided[id] = d
}

// whole reports whether the fact of id factID at seq follows the facts
// of its decision before it. A decision's facts are appended one after
// another in the chain, so fact i of one is whole when the fact before it
// in the stream is fact i-1 of the same decision, itself whole. Another
// writer's fact can take the place of one (two owners for a moment: the
// old one's facts in flight land after the new one has caught up), and
// the chain of expected sequences, which names a sequence and not whose
// fact is there, lets the next ones on: a decision with a fact missing,
// whose answer, on its last fact, said it was carried out. Chaos seed
// 26: erin's PROPPATCH was answered 207 from such a last fact, and her
// description, on the fact whose place the other writer took, was never
// stored. The first fact read, and one after a gap, are taken as whole:
// what comes before them is not known here.
func (rf *recentFacts) whole(seq uint64, factID string) bool {
	w := true
	if base, idx, ok := splitFactID(factID); ok && idx > 0 && rf.prevSeq != 0 && seq == rf.prevSeq+1 {
		w = rf.prevWhole && rf.prevID == base+"/"+strconv.Itoa(idx-1)
	}
	rf.prevSeq, rf.prevID, rf.prevWhole = seq, factID, w
	return w
}

// splitFactID splits a fact's id (events.HeaderFactID) into its
// decision's and its place in it.
func splitFactID(id string) (base string, idx int, ok bool) {
	i := strings.LastIndexByte(id, '/')
	if i < 0 {
		return "", 0, false
	}
	idx, err := strconv.Atoi(id[i+1:])
	return id[:i], idx, err == nil
}

// keepReadingRecent reads the recent facts (readRecent) until it has
// them, and hands them to Run.
func (n *Node) keepReadingRecent(ctx context.Context, since time.Time, last uint64, got chan<- recentFacts) {
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 2*time.Second) {
		rf := n.readRecent(ctx, since, last)
		if rf.err == nil {
			select {
			case got <- rf:
			case <-ctx.Done():
			}
			return
		}
		n.log.Warn("recent facts not read; trying again (requests handed out before wait for them)", "err", rf.err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// tookRecent merges what the recent facts say into seen, and takes the
// requests held for them.
func (n *Node) tookRecent(ctx, life context.Context, rf recentFacts) error {
	for id, d := range rf.decided {
		n.seen.add(id, d.delivering)
		n.seen.answered(id, d.answer)
	}
	for id, fw := range rf.forwarded {
		n.forwards.add(id, fw.to, fw.move)
	}
	n.recentRead = true
	n.log.Info("recent facts read", "since", rf.since, "facts", rf.facts, "requests", len(rf.decided), "held", len(n.early), "took", rf.took)
	if rf.broken > 0 {
		n.log.Warn("facts of decisions not whole read (another writer's facts took the places of some): their requests are decided again", "facts", rf.broken)
	}
	held := n.early
	n.early = nil
	for _, m := range held {
		if err := n.handleRequest(ctx, life, m); err != nil {
			return err
		}
	}
	return nil
}

// view is what the node decides against: the projection with the facts
// in flight over it, and the directory.
func (n *Node) view() View {
	return View{Home: n.cfg.Home, State: n.over, Dir: n.cfg.Directory, Busy: n.busy}
}

// busy reports whether the NOTIFYs waiting for u's clients fill their
// queue.
func (n *Node) busy(u events.User) bool { return n.pool.full(u.String()) }

// handleRequest takes one request event. It returns an error only when
// the node cannot go on. ctx bounds the decision (not cancelled when the
// node stops); life is the node's own context, which deliveries started
// here end with.
func (n *Node) handleRequest(ctx, life context.Context, m jetstream.Msg) error {
	return n.take(ctx, life, m, false)
}

// take is handleRequest; waited says that m has waited for the directory
// already (dirwait.go), and is decided with the directory as it is.
func (n *Node) take(ctx, life context.Context, m jetstream.Msg, waited bool) error {
	typ := m.Headers().Get(events.HeaderType)
	ev, err := events.Decode(typ, m.Data())
	if err != nil {
		n.log.Error("undecodable request event dropped", "subject", m.Subject(), "err", err)
		return m.Term()
	}
	req, ok := ev.(events.Request)
	if !ok {
		n.log.Error("non-request event on the request stream dropped", "subject", m.Subject(), "type", typ)
		return m.Term()
	}
	r := req.Request()
	now := n.now()
	taken := time.Now()
	if md, err := m.Metadata(); err == nil {
		n.metrics.lag(md.NumPending)
	}
	// The request's logger, made only for the rare outcome that is logged
	// (With costs allocations every request would pay).
	log := func() *slog.Logger { return n.log.With("req", r.ID, "type", typ, "user", r.Node.String()) }
	replyTo := m.Headers().Get(events.HeaderReply)
	if p := n.inWindow[r.ID]; p != nil {
		p.msg = m // redelivered while its facts are in flight: acknowledged with them
		return nil
	}
	if !n.recentRead {
		if md, err := m.Metadata(); err == nil && md.NumDelivered > 1 {
			// Delivered before, perhaps to the owner before this node,
			// which may have decided it: held until the recent facts say.
			n.early = append(n.early, m)
			return nil
		}
	}
	if dec, seen := n.seen.get(r.ID); seen {
		switch s := n.delivering[r.ID]; {
		case !dec.delivering && dec.answer != nil:
			// Decided, and its answer lost (with the node that decided it,
			// or on its way): the same answer again.
			var r events.Reply
			json.Unmarshal(dec.answer, &r)
			log().Info("request already decided; answered again with its recorded outcome", "status", r.Status)
			n.reply(replyTo, dec.answer)
			return n.doneWith(m)
		case !dec.delivering:
			log().Info("request already decided, with no answer recorded; acknowledged")
			return n.doneWith(m)
		case s != nil:
			s.msg = m // still delivering: its outcome acknowledges it
			return nil
		}
		if e, ok := req.(*events.Notify); ok {
			// Accepted before a restart, its delivery never finished. A
			// SingleHop sender was told 200 when it was accepted, however
			// late it now is; another was answered 504 at its deadline,
			// after which the message would come unlooked for: its end is
			// recorded instead.
			if !now.After(r.Deadline) || strings.EqualFold(e.AckType, "SingleHop") {
				log().Info("resuming an interrupted delivery")
				return n.input(ctx, &pending{in: resumed{e}, msg: m, replyTo: replyTo})
			}
			log().Info("an interrupted delivery past its sender's deadline; recorded as not delivered", "deadline", r.Deadline)
			return n.input(ctx, &pending{in: lapsed{e}, msg: m})
		}
		return n.doneWith(m)
	}
	if fw, ok := n.forwards.get(r.ID); ok && r.DirPos <= fw.move {
		// Forwarded from here, and delivered again: its acknowledgement
		// lost, or a copy forwarded here before that one. Passed on again
		// as it was (a duplicate there), never decided here: the user may
		// have come back since, and the home server it went to decided it.
		// (A copy forwarded back here since, under a later move, is
		// decided or forwarded as any request.)
		return n.sendForward(ctx, log(), m, forwarded{req: req, to: fw.to, move: fw.move})
	}
	if !waited && n.waitsForDirectory(r.Node) {
		// Behind a request of the same user's that waits.
		n.holdForDirectory(m, r.Node, 0)
		return nil
	}
	if r.DirPos > n.cfg.Directory.Position() {
		// Routed with a newer directory than ours (a move, a new user):
		// read it there, as the gateway did. It is milliseconds behind.
		if !waited {
			n.holdForDirectory(m, r.Node, r.DirPos)
			return nil
		}
		if typ == events.TypeHandoff {
			// A handoff routed with an older directory would be sent back
			// to the home server the user left: taken again later.
			return n.retryLater(ctx, log(), m, "directory behind the move of a handoff; taken again later", "have", n.cfg.Directory.Position(), "want", r.DirPos)
		}
		log().Warn("directory behind the gateway's; deciding with ours", "have", n.cfg.Directory.Position(), "want", r.DirPos)
	}
	// Handed off from here under a move the directory projection has not
	// applied yet (the node hears of moves from the stream, ahead of it):
	// read there, it has the user here still, and what a request decided
	// here makes (a handoff's state, a new subscription or view) stayed
	// where she no longer lives, her departure done: nothing hands it over
	// again. (Requests of other kinds too: a gateway behind the move
	// routes them here.)
	done, err := n.view().State.Departed(r.Node)
	if err != nil {
		return err
	}
	if done > n.cfg.Directory.Position() {
		// Waited for a while first, as for a request routed with a newer
		// directory: at 250 ms a delivery, the deliveries before a
		// handoff is appended anew (retryLater) came in a burst.
		if !waited {
			n.holdForDirectory(m, r.Node, done)
			return nil
		}
		return n.retryLater(ctx, log(), m, "directory behind the move the user was handed off from here under; the request is taken again later", "have", n.cfg.Directory.Position(), "want", done)
	}
	c := &core{View: n.view(), policy: n.policy}
	route, rec, err := c.route(req, now, n.cfg.HandoffWait, len(n.parked[r.Node]) > 0)
	if err != nil {
		return err
	}
	switch route {
	case routeLate:
		log().Warn("request expired before it was decided; the gateway has answered 504", "late", now.Sub(r.Deadline))
		return m.Ack()
	case routeForward:
		return n.forward(ctx, log(), m, req, rec)
	case routeHold:
		log().Info("request held until the user's state arrives from its former home server")
		n.park(r.Node, m)
		return nil
	}
	if err := n.input(ctx, &pending{in: req, msg: m, replyTo: replyTo, taken: taken}); err != nil {
		return err
	}
	if typ == events.TypeHandoff {
		// The state is in the overlay: the requests held for it are
		// decided against it now.
		return n.unpark(ctx, life, r.Node)
	}
	return nil
}

// input decides p's input and puts the decision in the window. A state
// that cannot be read leaves a request to be redelivered.
func (n *Node) input(ctx context.Context, p *pending) error {
	if err := n.commit(ctx, p); err != nil {
		if errors.Is(err, ErrLeaseLapsed) {
			// Not this node's to decide any more: the next owner's.
			if p.msg != nil {
				p.msg.Nak()
			}
			return err
		}
		if p.msg != nil {
			return n.retryLater(ctx, n.log, p.msg, "not decided: the home server's state could not be read; taken again later", "input", fmt.Sprintf("%T", p.in), "err", err)
		}
		n.log.Error("not decided: the home server's state could not be read", "input", fmt.Sprintf("%T", p.in), "err", err)
		return nil
	}
	switch in := p.in.(type) {
	case events.Request:
		n.seen.add(in.Request().ID, p.d.deliver != nil)
	case resumed:
		n.seen.add(in.e.ID, p.d.deliver != nil)
	case lapsed:
		n.seen.add(in.e.ID, false)
	}
	n.decided.Add(1)
	n.metrics.decided()
	return nil
}

// encodedReply is d's reply encoded (decision.encodedReply), or nil,
// logged, in the one way it could fail (a Reply always encodes).
func (n *Node) encodedReply(d *decision) []byte {
	data, err := d.encodedReply()
	if err != nil {
		n.log.Error("reply not encoded; its sender gets no answer", "err", err)
	}
	return data
}

// release carries out a decision whose facts are durable: its reply, its
// NOTIFYs and relays, its delivery, the acknowledgement of its request.
func (n *Node) release(p *pending) {
	n.rounds = 0
	d := p.d
	if fw, ok := p.in.(forwarded); ok {
		// Recorded: passed on now (a delivery again sends it again).
		r := fw.req.Request()
		if p.msg != nil {
			log := n.log.With("req", r.ID, "type", fw.req.Type(), "user", r.Node.String())
			if err := n.sendForward(n.life, log, p.msg, fw); err != nil {
				log.Warn("request forwarded but not acknowledged here; delivered again, it is sent on again", "err", err)
			}
		}
		return
	}
	if o, ok := p.in.(outcome); ok {
		// The outcome of a delivery: the sender waits where the message
		// came from.
		r := &o.d.req.Req
		s := n.delivering[r.ID]
		delete(n.delivering, r.ID)
		answer := n.encodedReply(d)
		n.seen.add(r.ID, false)
		n.seen.answered(r.ID, answer)
		if s != nil {
			n.reply(s.replyTo, answer)
			if s.msg != nil {
				s.msg.Ack()
			}
		}
		return
	}
	if x, ok := p.in.(expiry); ok && len(d.facts) > 0 {
		_ = x
		n.expired.Add(1)
	}
	if u, ok := p.in.(unreachable); ok && len(d.facts) > 0 {
		n.log.Info("subscription ended: its callback stopped answering", "user", u.node.String(), "sub", u.id, "failures", n.policy.MaxCallbackFailures)
	}
	if l := d.limited; l != nil {
		if ok, since := n.limitLog.add(1, n.now()); ok {
			n.log.Warn("presence subscription refused: its subscriber holds the most one may on this home server",
				"subscriber", l.subscriber, "node", l.node.String(), "held", l.held, "limit", n.policy.MaxWatchesPerUser, "refused", since)
		}
	}
	if d.handoff != nil {
		n.log.Info("user handed off to its new home server", "user", d.handoff.Node.String(), "to", d.handTo, "move", d.handoff.Move,
			"subscriptions", len(d.handoff.Subs), "views", len(d.handoff.Views))
	}
	for _, f := range d.facts {
		if e, ok := f.(*events.SubscriptionEnded); ok {
			n.reach.forget(subRef{e.Node, e.ID})
		}
	}
	answer := n.encodedReply(d)
	if r, ok := p.in.(events.Request); ok {
		n.seen.answered(r.Request().ID, answer)
	}
	if rl, ok := p.in.(*events.Relay); ok {
		n.remote.remember(rl)
	}
	n.reply(p.replyTo, answer)
	n.metrics.released(p.taken)
	n.sendNotes(d, n.pool.submit)
	if d.deliver != nil {
		n.delivering[d.deliver.req.ID] = &sending{d: d.deliver, msg: p.msg, replyTo: p.replyTo}
		n.startDelivery(n.life, d.deliver)
		return
	}
	if p.msg != nil {
		n.doneWith(p.msg)
	}
}

// sweep decides the end of the subscriptions and presence leases whose
// time has come, as far as the window has room.
func (n *Node) sweep(ctx context.Context) error {
	now := n.now()
	due, err := n.proj.DueBy(now, 256)
	if err != nil {
		return err
	}
	for _, x := range due {
		if !n.room() {
			return nil
		}
		if err := n.input(ctx, &pending{in: expiry(x)}); err != nil {
			return err
		}
	}
	return nil
}

// handleReach counts consecutive failures of a callback; at the limit the
// subscription ends (and with the last login, the user's presence).
func (n *Node) handleReach(ctx context.Context, rc reach) error {
	if !n.reach.record(rc.ref, rc.err) {
		if rc.err != nil {
			// A failure reported after its subscription ended (its end
			// decided while the NOTIFY was under way) is not kept.
			if s, err := n.over.Subscription(rc.ref.node, rc.ref.id); err == nil && s == nil {
				n.reach.forget(rc.ref)
			}
		}
		return nil
	}
	return n.input(ctx, &pending{in: unreachable(rc.ref)})
}

// reply publishes a reply (an events.Reply encoded) to the gateway
// waiting on subject to.
func (n *Node) reply(to string, data []byte) {
	if to == "" || data == nil {
		return
	}
	// Kept, to be sent again should the connection break (connChanged).
	n.sent.add(sentReply{at: time.Now(), to: to, data: data})
	n.publishReply(to, data)
}

// publishReply publishes an answer to to.
func (n *Node) publishReply(to string, data []byte) {
	msg := nats.NewMsg(to)
	msg.Header.Set(events.HeaderType, events.TypeReply)
	msg.Data = data
	if err := n.cfg.Conn.PublishMsg(msg); err != nil {
		n.log.Warn("publish reply", "to", to, "err", err)
	}
}

// onVerify answers rvpctl verify: it compares the home and directory
// projections with rebuilds from their streams, on a snapshot, while the
// node keeps serving.
func (n *Node) onVerify(m *nats.Msg) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out []projections.Verification
	var errs []error
	vr := projections.Verifier{Progress: projections.ProgressTo(n.cfg.Conn, m.Header.Get(projections.HeaderProgress))}
	if v, err := vr.Home(ctx, n.cfg.JetStream, n.cfg.DB, n.cfg.Home); err != nil {
		errs = append(errs, err)
	} else {
		out = append(out, v)
	}
	if v, err := vr.Directory(ctx, n.cfg.JetStream, n.cfg.DB); err != nil {
		errs = append(errs, err)
	} else {
		out = append(out, v)
	}
	for _, v := range out {
		if !v.OK() {
			n.log.Error("projection differs from its rebuild", "projection", v.Projection, "position", v.Position, "diff", v.Diff)
		}
	}
	resp := struct {
		Results []projections.Verification `json:"results"`
		Error   string                     `json:"error,omitempty"`
	}{Results: out}
	if err := errors.Join(errs...); err != nil {
		resp.Error = err.Error()
	}
	data, _ := json.Marshal(resp)
	m.Respond(data)
}

// UserState is a user's node as its home node has it now: the
// subscriptions on it (its clients' logins, and property subscriptions
// of whoever watches it) and its presence views. The operator console
// asks for it on HomeAdminSubject(home, "user").
type UserState struct {
	Logins        []projections.Subscription `json:"logins"`
	Subscriptions []projections.Subscription `json:"subscriptions"`
	Views         []projections.View         `json:"views"`
	Position      uint64                     `json:"position"`
	Error         string                     `json:"error,omitempty"`
}

// onUser answers a user's state (the request names the user, as JSON)
// from the projection.
func (n *Node) onUser(m *nats.Msg) {
	var u events.User
	var st UserState
	err := json.Unmarshal(m.Data, &u)
	if err == nil {
		st.Position = n.proj.Position()
		if st.Logins, err = n.proj.Logins(u); err == nil {
			if st.Subscriptions, err = n.proj.Subscriptions(u); err == nil {
				st.Views, err = n.proj.Views(u)
			}
		}
	}
	if err != nil {
		st.Error = err.Error()
	}
	data, _ := json.Marshal(st)
	m.Respond(data)
}

// Ready says whether the node serves its home server: nil once it has
// caught its projection up with the facts and takes requests, else what
// it is doing.
func (n *Node) Ready() error {
	if n.serving.Load() {
		return nil
	}
	if last := n.catching.Load(); last > 0 {
		return fmt.Errorf("catching up with its facts: %d of %d applied", n.proj.Position(), last)
	}
	return errors.New("starting")
}

// countEvery is how often the online users and subscriptions are
// counted for the metrics, at most; countShare is the share of a CPU the
// counts may take: a count that took d is taken again no sooner than
// d/countShare later.
const (
	countEvery = 2 * time.Second
	countShare = 0.01
)

// countUsers counts the online users and live subscriptions for the
// metrics until ctx ends.
// A count reads every user's keys (450,000 with 10,000 users signed in
// with 20 buddies each, some 75 ms): it is taken again only once the
// projection has moved, not every countEvery of a quiet server, and
// under load no more often than countShare allows.
func (n *Node) countUsers(ctx context.Context) {
	t := time.NewTimer(countEvery)
	defer t.Stop()
	counted, at := false, uint64(0)
	for {
		wait := countEvery
		if pos := n.proj.Position(); !counted || pos != at {
			start := time.Now()
			if online, subs, err := n.proj.Counts(); err == nil {
				n.metrics.counts(online, subs)
				counted, at = true, pos
			} else {
				n.log.Warn("users not counted", "err", err)
			}
			wait = max(wait, time.Duration(float64(time.Since(start))/countShare))
		}
		t.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// compactEvery is how often the projection's cache of users' state is
// offered to be compacted (projections.Home.CompactCache).
const compactEvery = 10 * time.Second

// compactCache has the projection compact its cache every compactEvery,
// until ctx ends: a wave of sign-ins leaves the cache's entries spread
// over memory its garbage filled.
func (n *Node) compactCache(ctx context.Context) {
	t := time.NewTicker(compactEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		start := time.Now()
		if copied := n.proj.CompactCache(); copied > 0 {
			n.log.Debug("cache compacted", "entries", copied, "took", time.Since(start))
		}
	}
}

// Stats are a node's counters.
type Stats struct {
	Decided, Expired, Dropped uint64
	Position                  uint64
	// Held counts the requests held back until a moved user's state
	// arrived.
	Held uint64
	// Published counts the facts published; Conflicts the times another
	// writer's facts made the node decide its window again; Recovered the
	// times answers were lost and the stream told what it held.
	Published, Conflicts, Recovered uint64
	// RelaysSkipped counts relays not sent to a site that was lost;
	// RelaysLost those whose publish failed.
	RelaysSkipped, RelaysLost uint64
	// Lost counts the deliveries of requests lost on their way to the
	// node (with its NATS server, or its connection) and handed back to
	// be delivered again at once.
	Lost uint64
}

// Stats returns the node's counters.
func (n *Node) Stats() Stats {
	return Stats{Decided: n.decided.Load(), Expired: n.expired.Load(), Dropped: n.dropped.Load(), Position: n.proj.Position(),
		Held: n.held.Load(), Published: n.published.Load(), Conflicts: n.conflicts.Load(), Recovered: n.recovered.Load(),
		RelaysSkipped: n.relayLog.skipped.Load(), RelaysLost: n.relayLog.lost.Load(), Lost: n.lost.Load()}
}

// recent remembers the last n request ids decided, and whether each is a
// message still being delivered. Answers are kept encoded, as they were
// sent: they are asked for again rarely (a redelivery, an answer lost on
// its way), and an events.Reply is about 250 bytes before what it points
// to, where its JSON is 60-150 (8,192 of them held 2.6 MB of the heap
// after the load benchmark's buddy lists, with their properties).
//
// Ids and answers live in arrays made once, not as objects of their own:
// made one by one under load, 8,192 ids and answers were small objects
// scattered among the load's garbage (JetStream's ids of the same
// requests among it), each keeping its span of the heap from being
// reused for other sizes or given back once the load was over.
type recent struct {
	mu    sync.Mutex
	index map[recentKey]int32 // the slot of an id
	slots []recentSlot
	next  int
	// answers holds the slots' answers end to end, written round and
	// round once it has grown to ringMax; written counts the bytes ever
	// written to it. An answer overwritten before its slot is reused is
	// forgotten (not known).
	answers []byte
	ringMax int
	written uint64
}

// recentKey is a request id: its bytes when it has up to 24 (a gateway's
// ids have 24 hex digits), else (n 255) the first 24 bytes of its SHA-256.
type recentKey struct {
	n  uint8
	id [24]byte
}

func keyOf(id string) recentKey {
	var k recentKey
	if len(id) <= len(k.id) {
		k.n = uint8(copy(k.id[:], id))
		return k
	}
	sum := sha256.Sum256([]byte(id))
	k.n = 255
	copy(k.id[:], sum[:])
	return k
}

type recentSlot struct {
	key        recentKey
	used       bool
	delivering bool
	size       uint32 // of its answer in answers; 0: none there
	at         uint64 // where its answer starts, counted as written is
	big        []byte // an answer too large for answers
}

// decided is what a node knows of a request it, or the owner before it,
// decided.
type decided struct {
	delivering bool // a message accepted whose delivery has not ended
	// answer is what its sender was answered, an events.Reply encoded;
	// nil: nobody waited, or not known.
	answer []byte
}

// newRecent keeps n ids, and up to 256 bytes of answers for each (at
// least 4 KiB): most answers are 45-200 bytes, a 207 with a lease or
// properties up to 320. The ring of answers grows to that as it fills.
func newRecent(n int) *recent {
	return &recent{index: make(map[recentKey]int32, n), slots: make([]recentSlot, n), ringMax: max(n*256, 4096)}
}

// add records id; a delivery once finished stays finished.
func (r *recent) add(id string, delivering bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := keyOf(id)
	if i, ok := r.index[k]; ok {
		r.slots[i].delivering = r.slots[i].delivering && delivering
		return
	}
	r.insert(k).delivering = delivering
}

// answered records the answer id was given.
func (r *recent) answered(id string, answer []byte) {
	if answer == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	sl := r.insert(keyOf(id))
	sl.big, sl.size = nil, 0
	if len(answer) == 0 || len(answer) > r.ringMax/8 {
		sl.big = bytes.Clone(answer)
		return
	}
	// Grown, doubling, before the first time round: the answers in it
	// keep their places.
	for need := r.written + uint64(len(answer)); need > uint64(len(r.answers)) && len(r.answers) < r.ringMax; {
		grown := make([]byte, min(max(2*len(r.answers), 4096), r.ringMax))
		copy(grown, r.answers[:r.written])
		r.answers = grown
	}
	ring := uint64(len(r.answers))
	if off := r.written % ring; off+uint64(len(answer)) > ring {
		r.written += ring - off // it goes at the start, whole
	}
	copy(r.answers[r.written%ring:], answer)
	sl.at, sl.size = r.written, uint32(len(answer))
	r.written += uint64(len(answer))
}

// insert returns the slot of id k, taking the oldest slot for it when k
// has none.
func (r *recent) insert(k recentKey) *recentSlot {
	if i, ok := r.index[k]; ok {
		return &r.slots[i]
	}
	sl := &r.slots[r.next]
	if sl.used {
		delete(r.index, sl.key)
	}
	*sl = recentSlot{key: k, used: true}
	r.index[k] = int32(r.next)
	r.next = (r.next + 1) % len(r.slots)
	return sl
}

// get reports whether id was decided, and what is known of it.
func (r *recent) get(id string) (decided, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	i, ok := r.index[keyOf(id)]
	if !ok {
		return decided{}, false
	}
	sl := &r.slots[i]
	d := decided{delivering: sl.delivering, answer: bytes.Clone(sl.big)}
	if sl.size > 0 && r.written-sl.at <= uint64(len(r.answers)) {
		off := sl.at % uint64(len(r.answers))
		d.answer = bytes.Clone(r.answers[off : off+uint64(sl.size)])
	}
	return d, true
}
