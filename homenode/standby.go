package homenode

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
)

// WarmStandby returns the work of a standby of cfg.Home (Lease.Standby):
// while another node owns the home server, it keeps the home server's
// projection in cfg.DB current from its fact stream, so that taking it
// over reads only what the owner decided since (catchUp), not the home
// server's whole history. It returns when ctx ends; before the node
// serves, that is (the projection then has a single user again).
func WarmStandby(cfg Config) func(ctx context.Context) {
	return func(ctx context.Context) {
		log := cfg.Logger
		if log == nil {
			log = slog.New(slog.DiscardHandler)
		}
		log = log.With("home", cfg.Home, "standby", true)
		proj, err := projections.OpenHome(cfg.DB, cfg.Home)
		if err != nil {
			log.Warn("standby: projection not opened; it is caught up when this node serves", "err", err)
			return
		}
		stream := events.FactStream(cfg.Home)
		// The stream is its owner's to create: wait for it, quietly.
		var last uint64
		for wait := 100 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
			if st, err := cfg.JetStream.Stream(ctx, stream); err == nil {
				last = st.CachedInfo().State.LastSeq
				break
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
		if outdated, err := proj.Outdated(); err != nil || outdated || proj.Position() > last {
			// Written by an older version, or from another stream: rebuilt
			// now rather than when this node takes over.
			if err := proj.Reset(); err != nil {
				log.Warn("standby: projection not reset; it is rebuilt when this node serves", "err", err)
				return
			}
		}
		start := time.Now()
		from := proj.Position()
		// Caught up as a home node does, first: over facts the retention
		// removed before the projection applied them (a standby down
		// longer than -audit.retention, or rebuilding after an upgrade),
		// which its node, taking over from this position, would not see.
		gap, err := proj.CatchUp(ctx, cfg.JetStream, last)
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("standby: projection not caught up; it is caught up when this node serves", "err", err)
			}
			return
		}
		logGap(log, gap)
		wctx, stopWaiting := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Go(func() {
			if proj.WaitFor(wctx, last) == nil {
				log.Info("standby: projection caught up", "from", from, "seq", last, "took", time.Since(start))
			}
		})
		err = projections.Follow(ctx, cfg.JetStream, projections.FollowConfig{
			Stream: stream, Filter: events.FactFilter(cfg.Home), MaxBatch: 1024, Logger: log,
		}, proj)
		stopWaiting()
		wg.Wait()
		if err != nil {
			log.Warn("standby: projection no longer followed; it is caught up when this node serves", "err", err)
		}
	}
}
