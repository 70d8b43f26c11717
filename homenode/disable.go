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
// of this home server (not enabled again meanwhile, nor homed elsewhere).
func (c *core) decideDisabled(u events.User, now time.Time) (*decision, error) {
	d := &decision{msgID: "disabled/" + events.Token(u.String()) + "/" + nanos(now)}
	rec, err := c.Dir.User(u)
	if err != nil || rec == nil || rec.Enabled || rec.Home != c.Home {
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
		d.facts = append(d.facts, &events.SubscriptionEnded{Meta: meta, Node: u, ID: s.ID, Reason: events.EndDisabled})
	}
	for _, v := range views {
		d.facts = append(d.facts, &events.ViewEnded{Meta: meta, Node: u, ID: v.ID, Reason: events.EndDisabled})
	}
	return d, nil
}

// endDisabled decides dis once the directory projection has its
// user.disabled (it is what the decision reads). A directory behind the
// stream the disable was heard from is waited for off the deciding loop,
// until the node stops: dis then comes back through ready. (Waited for in
// the loop, up to 5 s, every request of the home server's users waited as
// long, once for each user disabled, and the user's logins and presence
// were left to the next start.)
func (n *Node) endDisabled(ctx, life context.Context, dis disable, ready chan<- disable, wg *sync.WaitGroup) error {
	// Every home node hears of every user disabled: those holding none of
	// its logins and views have nothing to wait for.
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
	if n.cfg.Directory.Position() >= dis.seq {
		return n.input(ctx, &pending{in: disabled(dis.user)})
	}
	n.log.Info("disabled user's logins and presence end once the directory has the disable",
		"user", dis.user.String(), "want", dis.seq, "have", n.cfg.Directory.Position())
	wg.Go(func() {
		if err := n.cfg.Directory.WaitFor(life, dis.seq); err != nil {
			return // stopped: the next start ends them (disabledHere)
		}
		select {
		case ready <- dis:
		case <-life.Done():
		}
	})
	return nil
}

// disabledHere returns the users this node holds logins or views of
// whose directory record is disabled on this home server: disabled while
// the node was down.
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
		if rec == nil || rec.Enabled || rec.Home != n.cfg.Home {
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
		if len(logins)+len(views) > 0 {
			out = append(out, u)
		}
	}
	return out, nil
}
