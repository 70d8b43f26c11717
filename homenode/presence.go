package homenode

import (
	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
)

// Presence is a principal's state as two audiences see it: its own clients
// (which see invisible) and everyone else (who see offline instead).
type Presence struct {
	Self   string
	Others string
}

// For returns the state s's watcher sees of u: its own clients (a
// self-subscription) see invisible, everyone else offline instead.
func (p Presence) For(u events.User, s *projections.Subscription) string {
	if s.Watcher == u {
		return p.Self
	}
	return p.Others
}

// effective computes a principal's presence from its live views, as the
// digest recommends (§3.5.4): the most recently set view whose value is
// neither offline, idle nor invisible wins; else idle if any view is idle;
// else invisible if any; else offline.
func effective(views []projections.View) Presence {
	var best *projections.View
	idle, invisible := false, false
	for i := range views {
		v := &views[i]
		switch v.Value {
		case events.StateOffline:
		case events.StateIdle:
			idle = true
		case events.StateInvisible:
			invisible = true
		default:
			if best == nil || v.Set.After(best.Set) || v.Set.Equal(best.Set) && v.ID > best.ID {
				best = v
			}
		}
	}
	state := events.StateOffline
	switch {
	case best != nil:
		state = best.Value
	case idle:
		state = events.StateIdle
	case invisible:
		state = events.StateInvisible
	}
	p := Presence{Self: state, Others: state}
	if state == events.StateInvisible {
		p.Others = events.StateOffline
	}
	return p
}
