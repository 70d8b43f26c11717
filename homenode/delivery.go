package homenode

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/rvp"
)

// job is one NOTIFY to send.
type job struct {
	out      rvp.Outbound
	deadline time.Time
	done     func(status int, err error) // nil for fire-and-forget
}

// pool sends NOTIFYs with a fixed number of workers reading a bounded
// queue.
type pool struct {
	client  *rvp.Client
	workers int
	jobs    chan job
	log     *slog.Logger
	dropped *atomic.Uint64
}

func newPool(c *rvp.Client, workers, queue int, log *slog.Logger, dropped *atomic.Uint64) *pool {
	return &pool{client: c, workers: workers, jobs: make(chan job, queue), log: log, dropped: dropped}
}

func (p *pool) start(ctx context.Context, wg *sync.WaitGroup) {
	for range p.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case j := <-p.jobs:
					p.run(ctx, j)
				}
			}
		}()
	}
}

func (p *pool) run(ctx context.Context, j job) {
	ctx, cancel := context.WithDeadline(ctx, j.deadline)
	defer cancel()
	status, err := 0, ctx.Err()
	if err == nil {
		var ans *rvp.Answer
		if ans, err = p.client.Do(ctx, j.out); err == nil {
			status = ans.Status
		}
	}
	if err != nil {
		p.log.Debug("notify failed", "url", j.out.URL.String(), "err", err)
	} else if status/100 != 2 {
		p.log.Debug("notify refused", "url", j.out.URL.String(), "status", status)
	}
	if j.done != nil {
		j.done(status, err)
	}
}

// submitWait queues j, waiting for room until ctx ends.
func (p *pool) submitWait(ctx context.Context) func(job) bool {
	return func(j job) bool {
		select {
		case p.jobs <- j:
			return true
		case <-ctx.Done():
			return false
		}
	}
}

// submit queues j without blocking; false means the queue is full.
func (p *pool) submit(j job) bool {
	select {
	case p.jobs <- j:
		return true
	default:
		p.dropped.Add(1)
		return false
	}
}

// sending is a message being delivered, with the request it came in and
// where its sender waits.
type sending struct {
	d       *delivery
	msg     jetstream.Msg // the request, acknowledged when the outcome is recorded
	replyTo string
}

// startDelivery sends a message to every target in parallel; the outcome
// comes back to the deciding goroutine through n.outcomes.
func (n *Node) startDelivery(ctx context.Context, d *delivery) {
	t := newTally(d)
	deadline := n.now().Add(n.policy.DeliveryTimeout)
	for _, tg := range d.targets {
		reach := n.reachability(tg.ref)
		done := func(status int, err error) {
			reach(status, err)
			if o, ok := t.record(status, err); ok {
				o.d = d
				select {
				case n.outcomes <- o:
				case <-ctx.Done():
				}
			}
		}
		if n.pool.submit(job{out: d.outbound(tg), deadline: deadline, done: done}) {
			continue
		}
		n.log.Warn("delivery queue full; message not sent to one client", "req", d.req.ID, "url", tg.url.String())
		// This goroutine is the one that reads n.outcomes: hand the
		// outcome over without waiting.
		if o, ok := t.record(rvp.StatusUnavailable, nil); ok {
			o.d = d
			go func() {
				select {
				case n.outcomes <- o:
				case <-ctx.Done():
				}
			}()
		}
	}
}

// sendNotes queues a decision's NOTIFYs and hands its relays to the
// watchers' home servers.
func (n *Node) sendNotes(d *decision, submit func(job) bool) {
	for _, nt := range d.notes {
		if !submit(job{out: nt.out, deadline: nt.deadline, done: n.reachability(nt.ref)}) {
			n.log.Warn("delivery queue full; notification dropped", "url", nt.out.URL.String())
		}
	}
	for _, r := range d.relays {
		n.relay(r)
	}
}

// relay appends a notification for another home server's clients to its
// requests; nothing waits for an answer.
func (n *Node) relay(r relayOut) {
	data, err := events.Encode(r.ev)
	if err != nil {
		return
	}
	msg := nats.NewMsg(events.RequestSubject(r.home, r.ev.Node))
	msg.Header.Set(events.HeaderType, r.ev.Type())
	msg.Data = data
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := n.cfg.JetStream.PublishMsg(ctx, msg, jetstream.WithMsgID(r.ev.ID)); err != nil {
		n.log.Warn("relay to another home server failed", "home", r.home, "watcher", r.ev.Node.String(), "err", err)
	}
}

// reach is whether a subscription's callback answered a NOTIFY.
type reach struct {
	ref subRef
	err error
}

// reachability returns the completion that reports whether ref's
// callback answered.
func (n *Node) reachability(ref subRef) func(int, error) {
	return func(_ int, err error) {
		select {
		case n.reaches <- reach{ref: ref, err: err}:
		default: // a heuristic: dropping a report under load is harmless
		}
	}
}

// resendPresence tells every watcher of every user here the state it is
// allowed to see, as a new owner of the home server does: notifications
// the previous owner decided may not have gone out before it died.
// Clients take a state they already have without harm. It waits for room
// in the delivery queue rather than drop, and stops when ctx ends.
func (n *Node) resendPresence(ctx context.Context) {
	users, err := n.proj.Users()
	if err != nil {
		n.log.Error("presence not re-sent after taking over", "err", err)
		return
	}
	submit := n.pool.submitWait(ctx)
	count := 0
	for _, u := range users {
		if ctx.Err() != nil {
			return
		}
		d, err := decide(n.view(), n.policy, resend(u), n.now())
		if err != nil {
			n.log.Error("presence not re-sent", "user", u.String(), "err", err)
			continue
		}
		count += len(d.notes) + len(d.relays)
		n.sendNotes(d, submit)
	}
	n.log.Info("presence re-sent to watchers after taking over the home server", "notifications", count)
}
