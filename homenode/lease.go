package homenode

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
)

// Lease is a node's ownership of one home server: a key in the KV bucket
// events.BucketOwners, whose TTL is the lease. Exactly one node decides a
// home server's requests at a time; the others wait as standbys and take
// over when the owner lets go (a clean stop marks the key released) or
// dies (its key ages out unrenewed). Should two ever overlap (a partitioned owner
// that has not noticed yet), the expected-last-sequence fence of each
// fact append keeps the facts consistent.
type Lease struct {
	KV     jetstream.KeyValue
	Home   string
	Holder string // the node's name, unique in the cluster
	Logger *slog.Logger
	// Every is how often the owner renews, and a standby tries. Default a
	// third of the bucket's TTL (of projections.DefaultLeaseTTL when the
	// bucket's status cannot be read).
	Every time.Duration
}

// released is the prefix of the value of a lease let go cleanly, before
// the name of the node that held it.
const released = "released:"

// errHeld is a lease another node holds.
type errHeld struct{ by string }

func (e errHeld) Error() string { return "owned by node " + e.by }

// Hold runs serve while this node owns the home server, and waits as a
// standby while another does. It returns nil when ctx ends (after serve
// has returned and the lease is let go), or serve's error. A lease lost
// while serving stops serve and makes the node a standby again. serve is
// told whether the home server may have notifications undelivered: true
// unless this node itself let it go cleanly last.
func (l *Lease) Hold(ctx context.Context, serve func(ctx context.Context, takeover bool) error) error {
	log := l.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("home", l.Home, "holder", l.Holder)
	key := events.OwnerKey(l.Home)
	every, ttl := l.Every, time.Duration(0)
	if st, err := l.KV.Status(ctx); err == nil {
		ttl = st.TTL()
	}
	if every <= 0 {
		every = ttl / 3
		if every <= 0 {
			every = projections.DefaultLeaseTTL / 3 // the bucket's TTL unread: its default's
		}
	}
	var standby string
	for {
		rev, takeover, err := l.acquire(ctx, key)
		if ctx.Err() != nil {
			return nil
		}
		var held errHeld
		switch {
		case errors.As(err, &held):
			if standby != held.by {
				standby = held.by
				log.Info("standby: home server owned by another node", "owner", held.by)
			}
		case err != nil:
			log.Warn("home server lease not taken; will retry", "err", err)
		}
		if err != nil {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(every):
			}
			continue
		}
		standby = ""
		log.Info("home server owned", "renew", every, "takeover", takeover)
		lost, err := l.serve(ctx, key, rev, every, ttl, func(ctx context.Context) error { return serve(ctx, takeover) }, log)
		if err != nil || !lost {
			return err
		}
	}
}

// acquire takes the lease if it is free (never held, lapsed, or let go),
// or if this node held it before a restart. takeover is false only when
// this node itself let it go last.
func (l *Lease) acquire(ctx context.Context, key string) (rev uint64, takeover bool, err error) {
	rev, err = l.KV.Create(ctx, key, []byte(l.Holder))
	if err == nil || !errors.Is(err, jetstream.ErrKeyExists) {
		return rev, true, err
	}
	e, err := l.KV.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		rev, err = l.KV.Create(ctx, key, []byte(l.Holder)) // it lapsed meanwhile
		return rev, true, err
	}
	if err != nil {
		return 0, false, err
	}
	v := string(e.Value())
	before, free := strings.CutPrefix(v, released)
	if !free && v != l.Holder {
		return 0, false, errHeld{by: v}
	}
	rev, err = l.KV.Update(ctx, key, []byte(l.Holder), e.Revision())
	return rev, !(free && before == l.Holder), err
}

// serve runs serve and renews the lease until serve returns or the lease
// is lost; lost reports the latter. A renewal that fails for another
// reason (NATS unreachable) is retried until the lease would have lapsed.
func (l *Lease) serve(ctx context.Context, key string, rev uint64, every, ttl time.Duration,
	serve func(context.Context) error, log *slog.Logger) (lost bool, err error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- serve(sctx) }()
	tick := time.NewTicker(every)
	defer tick.Stop()
	renewed := time.Now()
	for {
		select {
		case err := <-done:
			l.release(key, rev, log)
			if ctx.Err() != nil {
				return false, nil
			}
			if err == nil {
				err = fmt.Errorf("home server %s stopped serving", l.Home)
			}
			return false, err
		case <-tick.C:
			// Not cut short by ctx: a renewal cancelled in flight would
			// leave the revision unknown.
			rctx, rcancel := context.WithTimeout(context.Background(), every)
			next, err := l.KV.Update(rctx, key, []byte(l.Holder), rev)
			rcancel()
			switch {
			case err == nil:
				rev, renewed = next, time.Now()
				continue
			case ctx.Err() != nil:
				continue // stopping: done comes next
			case errors.Is(err, jetstream.ErrKeyRevisionMismatch), errors.Is(err, jetstream.ErrKeyNotFound),
				ttl > 0 && time.Since(renewed) >= ttl:
				log.Error("home server lease lost; stopping this home node, another may own it now", "err", err)
			default:
				log.Warn("home server lease not renewed; will retry", "err", err, "since", time.Since(renewed))
				continue
			}
			cancel()
			<-done
			return true, nil
		}
	}
}

// release lets the lease go, so that a standby takes over at once.
func (l *Lease) release(key string, rev uint64, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	value := []byte(released + l.Holder)
	_, err := l.KV.Update(ctx, key, value, rev)
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		// A renewal we did not hear the answer of: still ours?
		if e, gerr := l.KV.Get(ctx, key); gerr == nil && string(e.Value()) == l.Holder {
			_, err = l.KV.Update(ctx, key, value, e.Revision())
		}
	}
	if err != nil {
		log.Warn("home server lease not let go; a standby takes over when it lapses", "err", err)
		return
	}
	log.Info("home server let go")
}
