package homenode

import (
	"context"
	"sync"
	"time"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
)

// A user disabled (rvpctl user disable) signs in no more and nothing
// reaches its clients (the gateway refuses its requests, and a NOTIFY for
// a disabled watcher goes nowhere). Its home server ends its logins and
// presence views at once, as when its last client logs out, and its
// watchers are told it is offline, rather than seeing it as it was until
// its view's lease ran out. Its watchers' subscriptions stay: enabled
// again, it is seen as before. The node hears of it from the directory
// (watchMoves), and at its start of the users disabled while it was down
// (disabledHere).

// disable is a user disabled, at the directory sequence of its
// user.disabled.
type disable struct {
	user events.User
	seq  uint64
}

// decideDisabled ends the logins and views of u, if it is a disabled user
// of this home server (not homed elsewhere); of a user enabled again
// since, those of before its disable (stale): this node was down then.
func (c *core) decideDisabled(u events.User, now time.Time) (*decision, error) {
	d := &decision{msgID: "disabled/" + events.Token(u.String()) + "/" + nanos(now)}
	rec, err := c.Dir.User(u)
	if err != nil || rec == nil || rec.Home != c.Home {
		return d, err
	}
	logins, err := c.State.Logins(u)
	if err != nil {
		return nil, err
	}
	views, err := c.State.Views(u)
	if err != nil {
		return nil, err
	}
	meta := c.systemMeta(now)
	for _, s := range logins {
		if !rec.Enabled || stale(rec, s.Expires, s.Lifetime) {
			d.facts = append(d.facts, &events.SubscriptionEnded{Meta: meta, Node: u, ID: s.ID, Reason: events.EndDisabled})
		}
	}
	for _, v := range views {
		if !rec.Enabled || stale(rec, v.Expires, v.Timeout) {
			d.facts = append(d.facts, &events.ViewEnded{Meta: meta, Node: u, ID: v.ID, Reason: events.EndDisabled})
		}
	}
	return d, nil
}

// stale reports whether a login or presence view of rec's user, expiring
// at expires under a lease of that many seconds (so taken or renewed last
// at expires less lease), is of before the user's last disable: its
// home server was down then and kept it, and the user is enabled again.
// The disable's time is the directory service's clock, the lease's the
// home node's: a login taken within their skew of a disable, and after
// the user's enabling again, may be taken for stale and ended (its
// client signs in again); one of before, for fresh and kept, as it was
// before the disable's time was recorded.
func stale(rec *projections.UserRecord, expires time.Time, lease int) bool {
	return rec != nil && !rec.Disabled.IsZero() && expires.Add(-seconds(lease)).Before(rec.Disabled)
}

// aheadDisables are the disables heard ahead of the directory projection
// (endDisabled), owned by the deciding loop. One goroutine at most waits
// for the directory to have them and says so on ready: every home node
// hears of every user disabled, and a start follows them from its
// directory's position (watchMoves), so a goroutine each would make as
// many as the directory has disables.
type aheadDisables struct {
	pending []disable
	waiting bool
	ready   chan struct{}
}

// endDisabled decides dis once the directory projection has its
// user.disabled (it is what the decision reads). A directory behind the
// stream the disable was heard from is waited for off the deciding loop,
// until the node stops (ahead); whatever the user holds here then is
// ended (aheadReady). (Waited for in the loop, up to 5 s, every request
// of the home server's users waited as long, once for each user
// disabled. Dropped when the user held nothing here when it was heard, a
// sign-in of hers decided meanwhile, with the directory that still had
// her enabled, stayed until its lease ran out.)
func (n *Node) endDisabled(ctx, life context.Context, dis disable, ahead *aheadDisables, wg *sync.WaitGroup) error {
	if n.cfg.Directory.Position() < dis.seq {
		n.log.Debug("disabled user's logins and presence end once the directory has the disable",
			"user", dis.user.String(), "want", dis.seq, "have", n.cfg.Directory.Position())
		ahead.pending = append(ahead.pending, dis)
		n.waitAhead(life, ahead, wg)
		return nil
	}
	// Every home node hears of every user disabled: those holding none of
	// its logins and views have nothing to end.
	v := n.view().State
	logins, err := v.Logins(dis.user)
	var views []projections.View
	if err == nil {
		views, err = v.Views(dis.user)
	}
	if err != nil {
		n.log.Error("disabled user's logins and presence not ended: the home server's state could not be read; they end at the next start, or when they lapse",
			"user", dis.user.String(), "err", err)
		return nil
	}
	if len(logins)+len(views) == 0 {
		return nil
	}
	return n.input(ctx, &pending{in: disabled(dis.user)})
}

// waitAhead starts the goroutine that waits for the directory to have
// every disable in ahead, unless it runs already.
func (n *Node) waitAhead(life context.Context, ahead *aheadDisables, wg *sync.WaitGroup) {
	if ahead.waiting || len(ahead.pending) == 0 {
		return
	}
	var seq uint64
	for _, d := range ahead.pending {
		seq = max(seq, d.seq)
	}
	ahead.waiting = true
	wg.Go(func() {
		if err := n.cfg.Directory.WaitFor(life, seq); err != nil {
			return // stopped: the next start ends them (disabledHere)
		}
		select {
		case ahead.ready <- struct{}{}:
		case <-life.Done():
		}
	})
}

// aheadReady decides the disables of ahead that the directory has now,
// and waits again for the others.
func (n *Node) aheadReady(ctx, life context.Context, ahead *aheadDisables, wg *sync.WaitGroup) error {
	ahead.waiting = false
	pos := n.cfg.Directory.Position()
	var due, rest []disable
	for _, d := range ahead.pending {
		if d.seq <= pos {
			due = append(due, d)
		} else {
			rest = append(rest, d)
		}
	}
	ahead.pending = rest
	for _, d := range due {
		if err := n.endDisabled(ctx, life, d, ahead, wg); err != nil {
			return err
		}
	}
	n.waitAhead(life, ahead, wg)
	return nil
}

// disabledHere returns the users this node holds logins or views of
// whose directory record is disabled on this home server, or enabled
// again with logins or views of before its disable (stale): disabled
// while the node was down.
func (n *Node) disabledHere() ([]events.User, error) {
	users, err := n.proj.Users()
	if err != nil {
		return nil, err
	}
	var out []events.User
	for _, u := range users {
		rec, err := n.cfg.Directory.User(u)
		if err != nil {
			return nil, err
		}
		if rec == nil || rec.Home != n.cfg.Home || (rec.Enabled && rec.Disabled.IsZero()) {
			continue
		}
		logins, err := n.proj.Logins(u)
		if err != nil {
			return nil, err
		}
		views, err := n.proj.Views(u)
		if err != nil {
			return nil, err
		}
		old := !rec.Enabled && len(logins)+len(views) > 0
		for _, s := range logins {
			old = old || stale(rec, s.Expires, s.Lifetime)
		}
		for _, v := range views {
			old = old || stale(rec, v.Expires, v.Timeout)
		}
		if old {
			out = append(out, u)
		}
	}
	return out, nil
}
