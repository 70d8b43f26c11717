package homenode

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
)

// A request routed with a newer directory than the node's (a move, a new
// user: the gateway read it a moment earlier), or for a user handed off
// from here under a move the node's directory has not applied, waits for
// the directory to get there, for dirWaitFor at most. It waits beside the
// deciding loop, not in it: waited for in the loop, each delivery of such
// a request held every other input for a second while the directory was
// stuck behind, and a move heard meanwhile was handed off seconds late
// (TestForwardedHandoffAfterMovesBackAndForth failed about 1 run in 100 on
// it). The requests of a user that come after one that waits wait behind
// it, so that each user's requests are decided in the order they came.

// dirWaitFor bounds a request's wait for the directory.
const dirWaitFor = time.Second

// dirWait is a request waiting for the directory to reach pos (0: for
// nothing but the requests of its user before it).
type dirWait struct {
	m     jetstream.Msg
	user  events.User
	pos   uint64
	until time.Time
}

// holdForDirectory makes m, a request of u's, wait until the directory
// has pos, or dirWaitFor passes.
func (n *Node) holdForDirectory(m jetstream.Msg, u events.User, pos uint64) {
	n.dirWaits = append(n.dirWaits, dirWait{m: m, user: u, pos: pos, until: time.Now().Add(dirWaitFor)})
}

// waitsForDirectory reports whether a request of u's waits for the
// directory.
func (n *Node) waitsForDirectory(u events.User) bool {
	for _, w := range n.dirWaits {
		if w.user == u {
			return true
		}
	}
	return false
}

// dirWaitDue returns when the first wait ends (zero: none waits).
func (n *Node) dirWaitDue() time.Time {
	var due time.Time
	for _, w := range n.dirWaits {
		if due.IsZero() || w.until.Before(due) {
			due = w.until
		}
	}
	return due
}

// releaseDirWaits takes, in order, the requests whose wait is over: the
// directory has their position, or they waited long enough; and no
// request of their user before them still waits.
func (n *Node) releaseDirWaits(ctx, life context.Context) error {
	pos, now := n.cfg.Directory.Position(), time.Now()
	var ready []jetstream.Msg
	blocked := map[events.User]bool{}
	kept := n.dirWaits[:0]
	for _, w := range n.dirWaits {
		if !blocked[w.user] && (w.pos <= pos || !now.Before(w.until)) {
			ready = append(ready, w.m)
			continue
		}
		blocked[w.user] = true
		kept = append(kept, w)
	}
	clear(n.dirWaits[len(kept):])
	n.dirWaits = kept
	for _, m := range ready {
		if err := n.take(ctx, life, m, true); err != nil {
			return err
		}
	}
	return nil
}
