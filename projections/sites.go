package projections

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
)

// DefaultHub is the JetStream domain of the hub of a deployment of
// several sites unless told otherwise: where the directory is written.
const DefaultHub = "hub"

// siteLayout turns the streams of a deployment of one JetStream domain
// into those of site o.Site (docs/sites.md): no shared requests stream
// (each home server has its own, EnsureRequestStream), lookups of this
// site's gateways only, and, away from the hub, the directory stream a
// copy of the hub's (CopyDirectory) that listens on subjects of its own
// and stores the events under the hub's subjects and sequences. No stream
// of a site may listen on a subject another site's streams listen on:
// plain subjects cross leaf connections, and both would store a message.
func (o StreamOptions) siteLayout(cfgs []jetstream.StreamConfig) []jetstream.StreamConfig {
	if o.Site == "" {
		return cfgs
	}
	out := cfgs[:0:0]
	for _, c := range cfgs {
		switch c.Name {
		case events.StreamRequests:
			continue
		case events.StreamLookups:
			c.Subjects = []string{events.LookupSubject(o.Site)}
			c.Description = "RVP lookup events of site " + o.Site + "'s gateways for its routers (work queue)"
		case events.StreamDirectory:
			if o.Site == o.hub() {
				c.Description = "RVP directory events written by administrators (the hub's: every site keeps a copy)"
				// Each event stored is announced, for the sites' copies.
				c.RePublish = &jetstream.RePublish{Source: events.DirectoryFilter, Destination: events.DirectoryStoredRoot + ".>", HeadersOnly: true}
				break
			}
			c.Subjects = []string{events.DirectoryCopyFilter(o.Site)}
			c.SubjectTransform = &jetstream.SubjectTransformConfig{Source: events.DirectoryCopyFilter(o.Site), Destination: events.DirectoryRoot + ".>"}
			c.Description = "site " + o.Site + "'s copy of the directory stream of hub " + o.hub() + ", with its sequences (written by the site's nodes)"
		}
		out = append(out, c)
	}
	return out
}

func (o StreamOptions) hub() string {
	if o.Hub == "" {
		return DefaultHub
	}
	return o.Hub
}

// EnsureRequestStream creates home's own requests stream
// (events.RequestStream) in the site js reaches, or (unless
// o.CreateOnly) updates its configuration to the one given. A deployment
// of several sites has one per home server instead of the shared one of a
// deployment of one domain, so that a home server's requests are stored
// in its own site only, whichever site's gateway appends them.
func EnsureRequestStream(ctx context.Context, js jetstream.JetStream, home string, o StreamOptions) error {
	o = o.withDefaults()
	return o.ensure(ctx, js, jetstream.StreamConfig{
		Name:        events.RequestStream(home),
		Description: "RVP request events from gateways to home server " + home + " (work, short retention)",
		Subjects:    []string{events.RequestFilter(home)},
		MaxAge:      o.RequestMaxAge,
		MaxBytes:    o.RequestMaxBytes,
		Discard:     jetstream.DiscardOld,
		Duplicates:  o.RequestDuplicates,
		AllowMsgTTL: true, // handoffs kept past MaxAge (EnsureStreams)
	})
}

// RequestStreamOf returns the name of the stream home's requests are in:
// its own at a site (o.Site set), the shared one otherwise.
func (o StreamOptions) RequestStreamOf(home string) string {
	if o.Site != "" {
		return events.RequestStream(home)
	}
	return events.StreamRequests
}

// CopyConfig configures CopyDirectory.
type CopyConfig struct {
	// Site is the site whose directory stream is kept a copy of the
	// hub's. Required.
	Site string
	// Local reaches the site's JetStream, Hub the hub's
	// (jetstream.NewWithDomain), over the same connection. Required.
	Local, Hub jetstream.JetStream
	// Poll is how often the copy is compared with the hub's stream when
	// no directory write was seen. Default 1s.
	Poll   time.Duration
	Logger *slog.Logger
}

// CopyDirectory keeps site's directory stream a copy of the hub's until
// ctx ends; it returns nil then. It appends each event of the hub's
// stream after the copy's last one, expecting the sequence before it, so
// the copy holds the hub's events under the hub's sequences: directory
// projections' positions, and the directory positions requests carry,
// mean the same at every site. Every node of a site may run it: when two
// append the same event, the second finds it there and goes on.
//
// It copies whenever the hub announces an event stored
// (DirectoryStoredRoot: a republish, whose plain subjects cross leaf
// connections) and every Poll besides, in rounds that each read the hub's stream from the
// copy's end to the hub's, so an event lost on the way is read again in
// the next round. (An ordered consumer kept open across the leaf
// connection would not do: a message it was sent while the connection
// was down is lost without a trace until the next one arrives. And a
// NATS mirror whose source was unreachable for a while retries on a
// growing backoff: measured, 35 s after a 15 s outage, and nats-server
// 2.15.2 backs off up to 2 minutes.) While the hub is unreachable the
// copy stands still and the site reads what it has.
func CopyDirectory(ctx context.Context, cfg CopyConfig) error {
	if cfg.Site == "" || cfg.Local == nil || cfg.Hub == nil {
		return errors.New("copy directory: Site, Local and Hub are required")
	}
	if cfg.Poll <= 0 {
		cfg.Poll = time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	wake := make(chan struct{}, 1)
	sub, err := cfg.Local.Conn().Subscribe(events.DirectoryStoredRoot+".>", func(*nats.Msg) {
		select {
		case wake <- struct{}{}:
		default:
		}
	})
	if err != nil {
		return fmt.Errorf("copy directory: watch directory writes: %w", err)
	}
	defer sub.Unsubscribe()
	c := &directoryCopy{local: cfg.Local, hub: cfg.Hub, site: cfg.Site, log: log}
	tick := time.NewTicker(cfg.Poll)
	defer tick.Stop()
	failing := false
	for {
		err := c.round(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil && !failing:
			log.Warn("copying the hub's directory failed; the site reads its copy until the hub is back", "site", cfg.Site,
				"position", c.pos, "err", err)
			failing = true
		case err == nil && failing:
			log.Info("copying the hub's directory again", "site", cfg.Site, "position", c.pos)
			failing = false
		}
		select {
		case <-ctx.Done():
			return nil
		case <-wake:
		case <-tick.C:
		}
	}
}

// hubAPITimeout bounds each request a copier makes to the hub, and each
// append to the site's copy.
const hubAPITimeout = 2 * time.Second

// CopyDirectoryNow copies into site's directory stream what the hub's
// holds past its end now, once: a node at a site does so before its roles
// start, so that they start knowing what the hub knows. It fails when the
// hub cannot be reached.
func CopyDirectoryNow(ctx context.Context, cfg CopyConfig) (copied uint64, err error) {
	if cfg.Site == "" || cfg.Local == nil || cfg.Hub == nil {
		return 0, errors.New("copy directory: Site, Local and Hub are required")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &directoryCopy{local: cfg.Local, hub: cfg.Hub, site: cfg.Site, log: log}
	if err := c.load(ctx); err != nil {
		return 0, err
	}
	from := c.pos
	err = c.round(ctx)
	return c.pos - from, err
}

// directoryCopy copies the hub's directory events into a site's stream.
type directoryCopy struct {
	local, hub jetstream.JetStream
	site       string
	pos        uint64 // the copy's last sequence, as last seen
	log        *slog.Logger
}

// round copies what the hub's stream holds past the copy's end.
func (c *directoryCopy) round(ctx context.Context) error {
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	lctx, cancel := context.WithTimeout(rctx, hubAPITimeout)
	err := c.load(lctx)
	cancel()
	if err != nil {
		return err
	}
	// Every request to the hub has a short deadline of its own: one lost
	// on the way (the leaf connection coming back as it was sent) would
	// otherwise hold the copy back for the round's whole deadline.
	actx, cancel := context.WithTimeout(rctx, hubAPITimeout)
	hub, err := LastSeq(actx, c.hub, events.StreamDirectory)
	cancel()
	if err != nil {
		return fmt.Errorf("the hub's directory stream: %w", err)
	}
	if hub < c.pos {
		return fmt.Errorf("site %s's copy of the directory holds %d %s, the hub's stream %d: the site's servers are joined to another deployment's hub, or the hub's stream was made again; the copy is left as it is", c.site, c.pos, plural(c.pos, "event"), hub)
	}
	if hub == c.pos {
		return nil
	}
	// A plain consumer of the round's own: an ordered consumer makes
	// itself again on every fetch, retrying without end when the hub
	// cannot be reached, whatever the context says.
	actx, cancel = context.WithTimeout(rctx, hubAPITimeout)
	defer cancel()
	cons, err := c.hub.CreateConsumer(actx, events.StreamDirectory, jetstream.ConsumerConfig{
		FilterSubject:     events.DirectoryFilter,
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       c.pos + 1,
		AckPolicy:         jetstream.AckNonePolicy,
		MemoryStorage:     true,
		InactiveThreshold: 10 * time.Second, // should its deletion be lost
	})
	if err != nil {
		return fmt.Errorf("read the hub's directory stream: %w", err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		c.hub.DeleteConsumer(dctx, events.StreamDirectory, cons.CachedInfo().Name)
		cancel()
	}()
	for c.pos < hub {
		batch, err := cons.Fetch(int(min(hub-c.pos, 256)), jetstream.FetchMaxWait(hubAPITimeout))
		if err != nil {
			return fmt.Errorf("read the hub's directory stream: %w", err)
		}
		n := 0
		for m := range batch.Messages() {
			md, err := m.Metadata()
			if err != nil {
				return err
			}
			if err := c.copy(rctx, md.Sequence.Stream, m); err != nil {
				return err
			}
			n++
		}
		if err := batch.Error(); err != nil {
			return fmt.Errorf("read the hub's directory stream: %w", err)
		}
		if n == 0 {
			return fmt.Errorf("read the hub's directory stream: nothing after %d, the hub's last is %d", c.pos, hub)
		}
	}
	return nil
}

// load reads the copy's last sequence.
func (c *directoryCopy) load(ctx context.Context) error {
	seq, err := LastSeq(ctx, c.local, events.StreamDirectory)
	if err != nil {
		return fmt.Errorf("site %s's directory stream: %w", c.site, err)
	}
	c.pos = seq
	return nil
}

// LastSeq returns the sequence of the last message of stream.
func LastSeq(ctx context.Context, js jetstream.JetStream, stream string) (uint64, error) {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return 0, err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.State.LastSeq, nil
}

// copy appends the hub's event seq after the copy's last one, under the
// same sequence.
func (c *directoryCopy) copy(ctx context.Context, seq uint64, m jetstream.Msg) error {
	if seq <= c.pos {
		return nil
	}
	msg := nats.NewMsg(events.DirectoryCopySubject(c.site, m.Subject()))
	msg.Header.Set(events.HeaderType, m.Headers().Get(events.HeaderType))
	msg.Data = m.Data()
	// Short, as a request to the hub: a publish sent while the site's
	// server recovers its streams after a restart can go unanswered.
	pctx, cancel := context.WithTimeout(ctx, hubAPITimeout)
	_, err := c.local.PublishMsg(pctx, msg, jetstream.WithExpectLastSequence(seq-1),
		jetstream.WithMsgID("dir-"+strconv.FormatUint(seq, 10)))
	cancel()
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
		// Another node of the site copied it (or more) first.
		lctx, cancel := context.WithTimeout(ctx, hubAPITimeout)
		err := c.load(lctx)
		cancel()
		if err != nil {
			return err
		}
		if c.pos >= seq {
			return nil
		}
		return fmt.Errorf("site %s's directory copy ends at %d, the hub's next event is %d: %w", c.site, c.pos, seq, err)
	}
	if err != nil {
		return fmt.Errorf("copy directory event %d into site %s: %w", seq, c.site, err)
	}
	c.log.Debug("directory event copied", "site", c.site, "seq", seq)
	c.pos = seq
	return nil
}
