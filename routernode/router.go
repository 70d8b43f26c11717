package routernode

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
	"github.com/rvp-im/rvpd/rvp"
)

// Config configures a Router.
type Config struct {
	// ID names the router in logs. Required.
	ID string
	// JetStream and Conn reach the cluster. Required.
	JetStream jetstream.JetStream
	Conn      *nats.Conn
	// Directory is the directory projection. Required.
	Directory *projections.Directory
	Logger    *slog.Logger
	Now       func() time.Time
}

// Router answers lookups.
type Router struct {
	cfg Config
	log *slog.Logger
}

// New returns a router; Run starts it.
func New(cfg Config) (*Router, error) {
	if cfg.ID == "" || cfg.JetStream == nil || cfg.Conn == nil || cfg.Directory == nil {
		return nil, errors.New("routernode: ID, JetStream, Conn and Directory are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Router{cfg: cfg, log: log.With("router", cfg.ID)}, nil
}

// ConsumerName is the durable consumer routers share.
const ConsumerName = "routers"

// Run answers lookups until ctx ends; it returns nil then.
func (r *Router) Run(ctx context.Context) (err error) {
	defer func() {
		if ctx.Err() != nil {
			err = nil // stopped, whatever was under way
		}
	}()
	cons, err := r.cfg.JetStream.CreateOrUpdateConsumer(ctx, events.StreamLookups, jetstream.ConsumerConfig{
		Durable:       ConsumerName,
		Description:   "lookups shared by every router",
		FilterSubject: events.LookupFilter(""),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       10 * time.Second,
		MaxDeliver:    5,
	})
	if err != nil {
		return fmt.Errorf("router %s: lookup consumer: %w", r.cfg.ID, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("router %s: consume lookups: %w", r.cfg.ID, err)
	}
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	r.log.Info("router serving")
	for {
		m, err := it.Next()
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return nil
			}
			return fmt.Errorf("router %s: read lookups: %w", r.cfg.ID, err)
		}
		r.handle(m)
	}
}

func (r *Router) handle(m jetstream.Msg) {
	ev, err := events.Decode(m.Headers().Get(events.HeaderType), m.Data())
	lk, ok := ev.(*events.Lookup)
	if err != nil || !ok {
		r.log.Error("undecodable lookup dropped", "subject", m.Subject(), "err", err)
		m.Term()
		return
	}
	if r.cfg.Now().After(lk.Deadline) {
		r.log.Warn("lookup expired before it was answered", "req", lk.ID)
		m.Ack()
		return
	}
	reply := r.decide(lk)
	data, err := events.Encode(reply)
	if err == nil {
		msg := nats.NewMsg(m.Headers().Get(events.HeaderReply))
		msg.Header.Set(events.HeaderType, reply.Type())
		msg.Data = data
		if msg.Subject != "" {
			err = r.cfg.Conn.PublishMsg(msg)
		}
	}
	if err != nil {
		r.log.Warn("lookup reply not sent", "req", lk.ID, "err", err)
	}
	m.Ack()
}

func (r *Router) decide(lk *events.Lookup) *events.Reply {
	fail := func(status int, format string, args ...any) *events.Reply {
		return &events.Reply{ID: lk.ID, Status: status, Error: fmt.Sprintf(format, args...)}
	}
	dom, err := r.cfg.Directory.DomainByHost(lk.Host)
	if err != nil {
		r.log.Error("directory", "err", err)
		return fail(503, "the directory is unavailable; retry in a moment")
	}
	if dom == nil {
		return fail(404, "no IM domain here answers to host %s", lk.Host)
	}
	u := events.NewUser(dom.Domain, lk.Alias)
	rec, err := r.cfg.Directory.User(u)
	if err != nil {
		return fail(503, "the directory is unavailable; retry in a moment")
	}
	if rec == nil || !rec.Enabled {
		return fail(404, "%s is not a user of IM domain %s", lk.Alias, dom.Domain)
	}
	home, err := r.cfg.Directory.HomeServer(rec.Home)
	if err != nil || home == nil {
		return fail(503, "home server %s of %s is not in the directory", rec.Home, u)
	}
	return &events.Reply{ID: lk.ID, Status: 302, Location: rvp.PhysicalURL(home.Host, dom.IMHost, u.Alias)}
}
