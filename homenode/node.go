package homenode

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
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
	// Workers is the number of concurrent deliveries. Default 32.
	Workers int
	// QueueLen bounds the deliveries waiting for a worker. Default 4096.
	QueueLen int
	// SweepEvery is how often expiries are looked for. Default 500ms.
	SweepEvery time.Duration
	// ResendPresence makes the node tell every watcher the current state
	// when it starts: set when it takes the home server over from a node
	// that may have died with notifications undelivered.
	ResendPresence bool
	// HandoffWait is how long requests for a user moved here are held
	// back while the handoff from its former home server has not come;
	// then they are decided without it (it merges when it comes). Default
	// 3s: past a gateway's patience it would only turn them into 503s.
	HandoffWait time.Duration
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
	return errors.Join(errs...)
}

// Node owns one home server. Run does the work.
type Node struct {
	cfg    Config
	policy Policy
	log    *slog.Logger
	now    func() time.Time
	proj   *projections.Home
	pool   *pool

	outcomes chan outcome
	seen     *recent
	reaches  chan reach
	failures map[subRef]int // consecutive unanswered NOTIFYs; owned by Run's goroutine
	// delivering holds the messages being delivered, by request id; owned
	// by Run's goroutine.
	delivering map[string]*delivery
	// parked holds the requests for users whose handoff is awaited; owned
	// by Run's goroutine.
	parked map[events.User][]jetstream.Msg

	// Counters, read by Stats; relays numbers relay requests.
	decided, expired, dropped, relays, held atomic.Uint64
}

// New returns a node for cfg.Home; Run starts it.
func New(cfg Config) (*Node, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Client == nil {
		cfg.Client = &rvp.Client{}
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 32
	}
	if cfg.QueueLen <= 0 {
		cfg.QueueLen = 4096
	}
	if cfg.SweepEvery <= 0 {
		cfg.SweepEvery = 500 * time.Millisecond
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.HandoffWait <= 0 {
		cfg.HandoffWait = 3 * time.Second
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
		outcomes:   make(chan outcome, 256),
		seen:       newRecent(8192),
		reaches:    make(chan reach, 1024),
		failures:   map[subRef]int{},
		delivering: map[string]*delivery{},
		parked:     map[events.User][]jetstream.Msg{},
	}
	n.pool = newPool(cfg.Client, cfg.Workers, cfg.QueueLen, log, &n.dropped)
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
	var wg sync.WaitGroup
	defer wg.Wait()
	// The projection outlives the deciding loop: a decision under way when
	// the node is stopped is finished (its facts applied, its reply sent)
	// before the loop returns, and that needs the projection.
	following, stopFollowing := context.WithCancel(context.Background())
	defer stopFollowing()
	defer cancel() // runs first: every goroutine but the follower ends on ctx.

	failed := make(chan error, 3)
	wg.Add(1)
	go func() {
		defer wg.Done()
		err := projections.Follow(following, n.cfg.JetStream, projections.FollowConfig{
			Stream: events.StreamFacts, Filter: events.FactFilter(n.cfg.Home), Logger: n.log,
		}, n.proj)
		if err != nil {
			failed <- err
		}
	}()

	if err := n.catchUp(ctx); err != nil {
		return err
	}
	n.pool.start(ctx, &wg)
	if n.cfg.ResendPresence {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n.resendPresence(ctx)
		}()
	}
	moves := make(chan move, 64)
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := n.watchMoves(ctx, moves); err != nil {
			failed <- err
		}
	}()
	strays, err := n.strays()
	if err != nil {
		return err
	}
	for _, mv := range strays {
		if err := n.handoff(context.WithoutCancel(ctx), mv); err != nil {
			n.log.Warn("user moved away not handed off yet; it will be when a request for it comes",
				"user", mv.user.String(), "home", mv.to, "err", err)
		}
	}
	admin, err := n.cfg.Conn.Subscribe(events.HomeAdminSubject(n.cfg.Home, "verify"), n.onVerify)
	if err != nil {
		return fmt.Errorf("home %s: admin subscription: %w", n.cfg.Home, err)
	}
	defer admin.Unsubscribe()

	cons, err := n.cfg.JetStream.CreateOrUpdateConsumer(ctx, events.StreamRequests, jetstream.ConsumerConfig{
		Durable:       ConsumerName(n.cfg.Home),
		Description:   "requests for home server " + n.cfg.Home,
		FilterSubject: events.RequestFilter(n.cfg.Home),
		AckPolicy:     jetstream.AckExplicitPolicy,
		// A request takes milliseconds to decide (deliveries go on
		// without it), so a node that died holding one lets another have
		// it after AckWait, well inside the gateway's wait.
		AckWait:       5 * time.Second,
		MaxAckPending: 1024,
		MaxDeliver:    5,
	})
	if err != nil {
		return fmt.Errorf("home %s: request consumer: %w", n.cfg.Home, err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(16))
	if err != nil {
		return fmt.Errorf("home %s: consume requests: %w", n.cfg.Home, err)
	}
	reqs := make(chan jetstream.Msg, 64)
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(reqs)
		for {
			m, err := it.Next()
			if err != nil {
				if !errors.Is(err, jetstream.ErrMsgIteratorClosed) {
					failed <- fmt.Errorf("home %s: read requests: %w", n.cfg.Home, err)
				}
				return
			}
			select {
			case reqs <- m:
			case <-ctx.Done():
				return
			}
		}
	}()
	defer func() {
		// Hand back what was fetched but not decided, for the next owner
		// now rather than after AckWait.
		it.Stop()
		for u, held := range n.parked {
			for _, m := range held {
				m.Nak()
			}
			delete(n.parked, u)
		}
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

	n.log.Info("home node serving", "position", n.proj.Position())
	tick := time.NewTicker(n.cfg.SweepEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-failed:
			return err
		// A decision, once begun, is finished even if the node is stopped
		// meanwhile: appends and waits are bounded by their own timeouts.
		case m, ok := <-reqs:
			if !ok {
				return nil
			}
			if err := n.handleRequest(context.WithoutCancel(ctx), ctx, m); err != nil {
				return err
			}
		case o := <-n.outcomes:
			if err := n.handleOutcome(context.WithoutCancel(ctx), o); err != nil {
				return err
			}
		case mv := <-moves:
			if err := n.handoff(context.WithoutCancel(ctx), mv); err != nil {
				n.log.Warn("user moved away not handed off; it will be when a request for it comes, or at the next start",
					"user", mv.user.String(), "home", mv.to, "err", err)
			}
		case rc := <-n.reaches:
			if err := n.handleReach(context.WithoutCancel(ctx), rc); err != nil {
				return err
			}
		case <-tick.C:
			if err := n.sweep(context.WithoutCancel(ctx)); err != nil {
				return err
			}
			if err := n.unparkLate(context.WithoutCancel(ctx), ctx, n.now()); err != nil {
				return err
			}
		}
	}
}

// catchUp waits until the projection has applied every fact of the home
// server already in the stream, and remembers the requests those facts
// were decided for, so that a request redelivered after a crash is not
// decided twice.
func (n *Node) catchUp(ctx context.Context) error {
	stream, err := n.cfg.JetStream.Stream(ctx, events.StreamFacts)
	if err != nil {
		return fmt.Errorf("home %s: facts stream: %w", n.cfg.Home, err)
	}
	last, err := stream.GetLastMsgForSubject(ctx, events.FactFilter(n.cfg.Home))
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return nil
	case err != nil:
		return fmt.Errorf("home %s: last fact: %w", n.cfg.Home, err)
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	start := n.now()
	if err := n.proj.WaitFor(wctx, last.Sequence); err != nil {
		return fmt.Errorf("home %s: catch up with the fact stream: %w", n.cfg.Home, err)
	}
	n.log.Info("projection caught up", "seq", last.Sequence, "took", n.now().Sub(start))
	return n.rememberRecent(ctx)
}

// rememberRecent reads the request ids of the facts of the last few
// minutes, headers only.
func (n *Node) rememberRecent(ctx context.Context) error {
	since := n.now().Add(-5 * time.Minute)
	cons, err := n.cfg.JetStream.OrderedConsumer(ctx, events.StreamFacts, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.FactFilter(n.cfg.Home)},
		DeliverPolicy:  jetstream.DeliverByStartTimePolicy,
		OptStartTime:   &since,
		HeadersOnly:    true,
	})
	if err != nil {
		return fmt.Errorf("home %s: read recent facts: %w", n.cfg.Home, err)
	}
	for {
		batch, err := cons.FetchNoWait(512)
		if err != nil {
			return fmt.Errorf("home %s: read recent facts: %w", n.cfg.Home, err)
		}
		count := 0
		for m := range batch.Messages() {
			count++
			if id := m.Headers().Get(events.HeaderRequest); id != "" {
				n.seen.add(id, m.Headers().Get(events.HeaderType) == events.TypeMessageAccepted)
			}
		}
		if err := batch.Error(); err != nil {
			return fmt.Errorf("home %s: read recent facts: %w", n.cfg.Home, err)
		}
		if count == 0 {
			return nil
		}
	}
}

// handleRequest decides one request event. It returns an error only when
// the node cannot go on. ctx bounds the decision (not cancelled when the
// node stops); life is the node's own context, which deliveries started
// here end with.
func (n *Node) handleRequest(ctx, life context.Context, m jetstream.Msg) error {
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
	log := n.log.With("req", r.ID, "type", typ, "node", r.Node.String())
	// A handoff has no gateway waiting: it is state, however late.
	if now.After(r.Deadline) && typ != events.TypeHandoff {
		log.Warn("request expired before it was decided; the gateway has answered 503", "late", now.Sub(r.Deadline))
		return m.Ack()
	}
	replyTo := m.Headers().Get(events.HeaderReply)
	if delivering, seen := n.seen.get(r.ID); seen {
		switch dl := n.delivering[r.ID]; {
		case !delivering:
			log.Info("request already decided; redelivery ignored")
			return m.Ack()
		case dl != nil:
			dl.msg = m // still delivering: its outcome acknowledges it
			return nil
		}
		if e, ok := req.(*events.Notify); ok {
			// Accepted before a restart, its delivery never finished.
			log.Info("resuming an interrupted delivery")
			return n.deliverMessage(ctx, life, e, m, replyTo, now, true)
		}
		return m.Ack()
	}
	if r.DirPos > n.cfg.Directory.Position() {
		// Routed with a newer directory than ours (a move, a new user):
		// read it there, as the gateway did. It is milliseconds behind.
		wctx, cancel := context.WithTimeout(ctx, time.Second)
		err := n.cfg.Directory.WaitFor(wctx, r.DirPos)
		cancel()
		if err != nil {
			log.Warn("directory behind the gateway's; deciding with ours", "have", n.cfg.Directory.Position(), "want", r.DirPos)
		}
	}
	if rec := n.movedAway(r.Node); rec != nil {
		return n.forward(ctx, log, m, r, rec)
	}
	if typ != events.TypeHandoff {
		if _, waiting := n.awaitsHandoff(r.Node, now); waiting || len(n.parked[r.Node]) > 0 {
			log.Info("request held until the user's state arrives from its former home server")
			n.park(r.Node, m)
			return nil
		}
	}
	if e, ok := req.(*events.Notify); ok {
		return n.deliverMessage(ctx, life, e, m, replyTo, now, false)
	}

	d, err := n.commit(ctx, log, func() (*decision, error) { return n.decide(req, now) })
	if err != nil {
		// The facts could not be appended: the request is not decided.
		// Let JetStream redeliver it while the gateway still waits.
		log.Warn("request not decided; will retry", "err", err)
		return m.NakWithDelay(250 * time.Millisecond)
	}
	n.seen.add(r.ID, false)
	n.decided.Add(1)
	if d.reply != nil {
		n.reply(replyTo, d.reply)
	}
	n.afterCommit(d)
	ackErr := m.Ack()
	if typ == events.TypeHandoff {
		if err := n.unpark(ctx, life, r.Node); err != nil {
			return err
		}
	}
	return ackErr
}

// deliverMessage decides a NOTIFY and starts its delivery. The request is
// acknowledged to JetStream only once the outcome is recorded, so a node
// that stops while delivering leaves it to be redelivered, and the next
// owner resumes the delivery (resume: its message.accepted fact exists).
func (n *Node) deliverMessage(ctx, life context.Context, e *events.Notify, m jetstream.Msg, replyTo string, now time.Time, resume bool) error {
	r := &e.Req
	log := n.log.With("req", r.ID, "node", r.Node.String())
	d, err := n.commit(ctx, log, func() (*decision, error) {
		d, err := n.decide(e, now)
		if err == nil && resume && len(d.facts) > 0 {
			if _, ok := d.facts[0].(*events.MessageAccepted); ok {
				d.facts = d.facts[1:]
				d.msgID += "/resumed"
			}
		}
		return d, err
	})
	if err != nil {
		log.Warn("message not decided; will retry", "err", err)
		return m.NakWithDelay(250 * time.Millisecond)
	}
	n.decided.Add(1)
	if d.reply != nil {
		n.reply(replyTo, d.reply)
	}
	if d.deliver == nil {
		n.seen.add(r.ID, false)
		return m.Ack()
	}
	n.seen.add(r.ID, true)
	d.deliver.replyTo, d.deliver.msg = replyTo, m
	n.delivering[r.ID] = d.deliver
	return n.startDelivery(life, d.deliver)
}

// reply publishes a reply to the gateway waiting on subject to.
func (n *Node) reply(to string, r *events.Reply) {
	if to == "" {
		return
	}
	data, err := events.Encode(r)
	if err != nil {
		n.log.Error("encode reply", "err", err)
		return
	}
	msg := nats.NewMsg(to)
	msg.Header.Set(events.HeaderType, r.Type())
	msg.Data = data
	if err := n.cfg.Conn.PublishMsg(msg); err != nil {
		n.log.Warn("publish reply", "req", r.ID, "err", err)
	}
}

// commit runs decide, appends its facts and waits until the projection has
// applied them. A conflict (another writer appended to a user's subject)
// makes it wait for the projection to catch up and decide again.
func (n *Node) commit(ctx context.Context, log *slog.Logger, decide func() (*decision, error)) (*decision, error) {
	for attempt := 1; ; attempt++ {
		d, err := decide()
		if err != nil {
			return nil, err
		}
		if !d.quiet {
			d.before = n.presenceOf(d.facts)
		}
		err = n.appendFacts(ctx, d)
		if err == nil {
			return d, nil
		}
		if !isConflict(err) || attempt == 3 {
			return nil, err
		}
		log.Warn("fact append conflicted; deciding again", "attempt", attempt, "err", err)
		if err := n.catchUp(ctx); err != nil {
			return nil, err
		}
	}
}

// appendFacts appends d's facts, each fenced by the expected last
// sequence of its user's subject and deduplicated by a message id derived
// from the request, then waits for the projection to apply them.
func (n *Node) appendFacts(ctx context.Context, d *decision) error {
	if len(d.facts) == 0 {
		return nil
	}
	versions := map[events.User]uint64{}
	var last uint64
	for i, f := range d.facts {
		u := f.Subject()
		ver, ok := versions[u]
		if !ok {
			v, err := n.proj.Version(u)
			if err != nil {
				return err
			}
			ver = v
		}
		data, err := events.Encode(f)
		if err != nil {
			return err
		}
		msg := nats.NewMsg(events.FactSubject(n.cfg.Home, u))
		msg.Header.Set(events.HeaderType, f.Type())
		if meta := f.Metadata(); meta.Request != "" {
			msg.Header.Set(events.HeaderRequest, meta.Request)
		}
		msg.Data = data
		msgID := d.msgID + "/" + strconv.Itoa(i)
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		ack, err := n.cfg.JetStream.PublishMsg(pctx, msg,
			jetstream.WithMsgID(msgID), jetstream.WithExpectLastSequencePerSubject(ver))
		cancel()
		if err != nil {
			if isConflict(err) {
				if seq, ok := n.alreadyAppended(ctx, msg.Subject, msgID); ok {
					versions[u], last = seq, seq
					continue
				}
			}
			return fmt.Errorf("append %s for %s after its fact %d: %w", f.Type(), u, ver, err)
		}
		versions[u], last = ack.Sequence, ack.Sequence
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return n.proj.WaitFor(wctx, last)
}

// alreadyAppended tells whether the last message of subject carries
// msgID: a retried append whose first attempt succeeded (on a single node,
// JetStream checks the expected sequence before the message id).
func (n *Node) alreadyAppended(ctx context.Context, subject, msgID string) (uint64, bool) {
	stream, err := n.cfg.JetStream.Stream(ctx, events.StreamFacts)
	if err != nil {
		return 0, false
	}
	m, err := stream.GetLastMsgForSubject(ctx, subject)
	if err != nil || m.Header.Get(events.HeaderMsgID) != msgID {
		return 0, false
	}
	return m.Sequence, true
}

// isConflict reports a failed optimistic-concurrency check; JetStream
// answers 10071 on a single node and often 10164 on a replicated stream.
func isConflict(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) &&
		(apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
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

// Stats are a node's counters.
type Stats struct {
	Decided, Expired, Dropped uint64
	Position                  uint64
	// Held counts the requests held back until a moved user's state
	// arrived.
	Held uint64
}

// Stats returns the node's counters.
func (n *Node) Stats() Stats {
	return Stats{Decided: n.decided.Load(), Expired: n.expired.Load(), Dropped: n.dropped.Load(), Position: n.proj.Position(), Held: n.held.Load()}
}

// recent remembers the last n request ids decided, and whether each is a
// message still being delivered.
type recent struct {
	mu   sync.Mutex
	ids  map[string]bool // id → delivering
	ring []string
	next int
}

func newRecent(n int) *recent { return &recent{ids: make(map[string]bool, n), ring: make([]string, n)} }

// add records id; a delivery once finished stays finished.
func (r *recent) add(id string, delivering bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if was, ok := r.ids[id]; ok {
		r.ids[id] = was && delivering
		return
	}
	if old := r.ring[r.next]; old != "" {
		delete(r.ids, old)
	}
	r.ring[r.next] = id
	r.ids[id] = delivering
	r.next = (r.next + 1) % len(r.ring)
}

// get reports whether id was decided, and whether it is a message still
// being delivered.
func (r *recent) get(id string) (delivering, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delivering, ok = r.ids[id]
	return delivering, ok
}
