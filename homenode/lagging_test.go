package homenode

import (
	"context"
	"sync"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
)

// laggingDir is a directory projection of the node's own, which a test
// makes fall behind the stream (stop) and catch up again (follow). Its
// configure, given to newHarnessWith, puts it in the node's Config, and
// keeps it there when the harness starts the node again.
type laggingDir struct {
	t         *testing.T
	dir       *projections.Directory
	js        jetstream.JetStream
	cancel    context.CancelFunc
	followers sync.WaitGroup
}

func newLaggingDir(t *testing.T) *laggingDir { return &laggingDir{t: t} }

func (l *laggingDir) configure(cfg *Config) {
	if l.dir != nil {
		cfg.Directory = l.dir
		return
	}
	db, err := projections.Open("", projections.Options{InMemory: true})
	if err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() { db.Close() })
	if l.dir, err = projections.OpenDirectory(db); err != nil {
		l.t.Fatal(err)
	}
	l.js = cfg.JetStream
	l.follow()
	l.t.Cleanup(l.stop)
	if err := l.dir.WaitFor(l.t.Context(), cfg.Directory.Position()); err != nil {
		l.t.Fatal(err)
	}
	cfg.Directory = l.dir
}

// follow has the directory follow the stream again.
func (l *laggingDir) follow() {
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel
	l.followers.Go(func() {
		err := projections.Follow(ctx, l.js, projections.FollowConfig{Stream: events.StreamDirectory, Filter: events.DirectoryFilter}, l.dir)
		if err != nil && ctx.Err() == nil {
			l.t.Errorf("the lagging directory stopped following: %v", err)
		}
	})
}

// stop stops the directory following the stream: it falls behind.
func (l *laggingDir) stop() {
	if l.cancel != nil {
		l.cancel()
	}
	l.followers.Wait()
}
