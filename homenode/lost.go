package homenode

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Requests lost on their way to the node. The consumer of the home
// server's requests hands each to the node through the NATS server the
// node is connected to; when that server dies, or the connection breaks,
// those on their way are lost, and the consumer, which counts them
// delivered, would hand them out again only after AckWait (5 s) while
// their senders wait. Every delivery of a consumer has the next consumer
// sequence, and one connection keeps their order: a delivery taken whose
// sequence skips some says those were lost (a gap); once the connection
// is back, a consumer that has delivered past the last one taken while
// nothing more comes says the last ones were (the tail). Those are
// handed back at once: each stream sequence after the last one taken
// (every delivery taken before the loss has a lower one, the consumer
// handing new requests out in stream order) is given a negative
// acknowledgement, which makes the consumer deliver it again now if it
// is still pending, and is ignored if it is not (acknowledged, or of
// another home server's subject).
//
// A negative acknowledgement is what AckWait's expiry does, brought
// forward: the delivery count goes on (a redelivery has NumDelivered >
// 1, so a next owner starting holds it until its recent facts are read),
// nothing acknowledged is handed out again, and the consumer's ack floor
// and pending state are untouched. Resetting the consumer to its ack
// floor ($JS.API.CONSUMER.RESET) would hand out again every request
// acknowledged above the floor too, as delivered for the first time: one
// decided that no node remembers any more (the node dies before they are
// all redelivered, and a next owner takes them as new), or that fell out
// of the node's recent ids, would be decided again.
//
// The acknowledgement is sent to the subject of the lost delivery's, made
// from the ack subject of a delivery taken (ADR-15's form, which
// jetstream.Msg.Metadata reads): the server finds the message by its
// stream sequence and checks the consumer sequence only against its
// range.

// lostMost bounds the stream sequences handed back in one go: beyond it
// (a requests stream shared with busy home servers, whose sequences the
// range spans too) what was lost is left to AckWait.
const lostMost = 4096

// deliveries is what the node has taken from its consumer of requests:
// the reader goroutine records each delivery it takes, the goroutine
// watching for losses (watchLost) reads it.
type deliveries struct {
	waiting atomic.Bool // the reader waits for the next delivery
	found   chan struct{}

	mu       sync.Mutex
	last     uint64 // the highest consumer sequence taken
	top      uint64 // the highest stream sequence taken
	handed   uint64 // consumer sequences up to here were handed back
	template string // the ack subject of a delivery taken
	lost     lostRange
}

// lostRange is what was found lost and not handed back yet: count
// deliveries, of stream sequences after from and before to (0: up to the
// consumer's last delivered), found so (foundGap, foundTail).
type lostRange struct {
	from, to, count uint64
	found           string
}

const (
	foundGap  = "a gap in the deliveries"
	foundTail = "the consumer delivered more before the reconnection"
)

func (r *lostRange) add(o lostRange) {
	if r.count == 0 {
		*r = o
		return
	}
	r.from = min(r.from, o.from)
	if r.to == 0 || o.to == 0 {
		r.to = 0
	} else {
		r.to = max(r.to, o.to)
	}
	r.count += o.count
	if r.found != o.found {
		r.found = foundGap + ", " + foundTail
	}
}

func newDeliveries() *deliveries { return &deliveries{found: make(chan struct{}, 1)} }

// took records a delivery taken: a gap in the consumer sequences is a loss.
func (d *deliveries) took(m jetstream.Msg) {
	md, err := m.Metadata()
	if err != nil {
		return
	}
	dseq, sseq := md.Sequence.Consumer, md.Sequence.Stream
	d.mu.Lock()
	defer d.mu.Unlock()
	if seen := max(d.last, d.handed); d.last != 0 && dseq > seen+1 {
		r := lostRange{from: d.top, to: sseq, count: dseq - seen - 1, found: foundGap}
		if sseq <= d.top {
			r.to = 0 // a redelivery: the lost ones were before it
		}
		d.addLost(r)
	}
	d.last, d.top = max(d.last, dseq), max(d.top, sseq)
	d.template = m.Reply()
}

// addLost records a loss and wakes the watcher. d.mu is held.
func (d *deliveries) addLost(r lostRange) {
	d.lost.add(r)
	select {
	case d.found <- struct{}{}:
	default:
	}
}

// take returns what was found lost and not handed back yet.
func (d *deliveries) take() (lostRange, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	r := d.lost
	d.lost = lostRange{}
	return r, r.count > 0
}

// watchLost hands back the deliveries lost on their way to the node, as
// soon as their loss is seen: at a gap, or at the tail once the
// connection is back (back hears it). queued tells how many deliveries
// taken wait for the deciding loop. It returns when ctx ends or back is
// closed.
func (n *Node) watchLost(ctx context.Context, cons jetstream.Consumer, d *deliveries, back <-chan nats.Status, queued func() int) {
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-back:
			if !ok {
				return
			}
			n.lostTail(ctx, cons, d, queued)
		case <-d.found:
		}
		if r, ok := d.take(); ok {
			n.handBack(ctx, cons, d, r)
		}
	}
}

// lostTail finds, once the connection is back, whether the last
// deliveries before it broke were lost: the consumer has delivered past
// the last one taken, and the reader waits, nothing queued, for a while.
// (When something comes meanwhile, a gap tells.) It asks for no longer
// than half AckWait.
func (n *Node) lostTail(ctx context.Context, cons jetstream.Consumer, d *deliveries, queued func() int) {
	deadline := time.Now().Add(n.cfg.AckWait / 2)
	var info *jetstream.ConsumerInfo
	for info == nil {
		ictx, cancel := context.WithTimeout(ctx, time.Second)
		i, err := cons.Info(ictx)
		cancel()
		switch {
		case err == nil:
			info = i
		case time.Now().After(deadline):
			n.log.Debug("requests consumer not read after the reconnection; deliveries lost, if any, are left to AckWait", "err", err)
			return
		case !pause(ctx, 100*time.Millisecond):
			return
		}
	}
	delivered := info.Delivered.Consumer
	for still, before := 0, uint64(0); ; {
		d.mu.Lock()
		last, top := max(d.last, d.handed), d.top
		empty := d.last == 0
		d.mu.Unlock()
		if empty || last >= delivered {
			return // nothing taken to compare with, or all taken (or lost before one taken: a gap)
		}
		if d.waiting.Load() && queued() == 0 && last == before {
			still++
		} else {
			still = 0
		}
		before = last
		if still == 3 {
			d.mu.Lock()
			d.addLost(lostRange{from: top, count: delivered - last, found: foundTail})
			d.mu.Unlock()
			return
		}
		if time.Now().After(deadline) || !pause(ctx, 50*time.Millisecond) {
			return
		}
	}
}

// handBack gives the stream sequences of r a negative acknowledgement,
// so that the consumer delivers again now those it has pending. It logs
// one line.
func (n *Node) handBack(ctx context.Context, cons jetstream.Consumer, d *deliveries, r lostRange) {
	ictx, cancel := context.WithTimeout(ctx, 2*time.Second)
	info, err := cons.Info(ictx)
	cancel()
	if err != nil {
		n.log.Warn("requests the consumer delivered did not reach this node (lost with its NATS server or connection) and are not handed back: the consumer could not be read; they are delivered again after AckWait",
			"lost", r.count, "found", r.found, "ack_wait", n.cfg.AckWait, "err", err)
		return
	}
	to := info.Delivered.Stream + 1
	if r.to != 0 {
		to = min(to, r.to)
	}
	d.mu.Lock()
	template := d.template
	d.handed = max(d.handed, info.Delivered.Consumer)
	d.mu.Unlock()
	span := uint64(0)
	if to > r.from+1 {
		span = to - r.from - 1
	}
	switch {
	case span == 0:
		// Redeliveries (of what a node, this one or one before, held
		// past AckWait), or deliveries to a former owner still pulling.
		n.log.Info("requests the consumer delivered did not reach this node, none of them new (redeliveries, or taken by a former owner still pulling): left to AckWait",
			"lost", r.count, "found", r.found, "after_seq", r.from, "ack_wait", n.cfg.AckWait)
		return
	case span > lostMost:
		n.log.Warn("requests the consumer delivered did not reach this node (lost with its NATS server or connection) and are not handed back: the stream sequences they may have are too many; they are delivered again after AckWait",
			"lost", r.count, "found", r.found, "after_seq", r.from, "sequences", span, "most", lostMost, "ack_wait", n.cfg.AckWait)
		return
	}
	dseq := info.Delivered.Consumer
	for seq := r.from + 1; seq < to; seq++ {
		subj, ok := nakSubject(template, seq, dseq)
		if !ok {
			n.log.Warn("requests the consumer delivered did not reach this node (lost with its NATS server or connection) and are not handed back: an ack subject of an unknown form; they are delivered again after AckWait",
				"lost", r.count, "subject", template, "ack_wait", n.cfg.AckWait)
			return
		}
		if err := n.cfg.Conn.Publish(subj, []byte("-NAK")); err != nil {
			n.log.Warn("requests the consumer delivered did not reach this node (lost with its NATS server or connection) and are not all handed back: the rest are delivered again after AckWait",
				"lost", r.count, "seq", seq, "ack_wait", n.cfg.AckWait, "err", err)
			return
		}
	}
	if err := n.cfg.Conn.FlushTimeout(2 * time.Second); err != nil {
		n.log.Warn("requests the consumer delivered did not reach this node (lost with its NATS server or connection): their hand-back is not flushed; those it misses are delivered again after AckWait",
			"lost", r.count, "ack_wait", n.cfg.AckWait, "err", err)
	}
	n.lost.Add(r.count)
	n.log.Info("requests the consumer delivered did not reach this node (lost with its NATS server or connection): handed back, to be delivered again now rather than after AckWait",
		"lost", r.count, "found", r.found, "from_seq", r.from+1, "to_seq", to-1, "unacknowledged", info.NumAckPending)
}

// nakSubject is the ack subject of the delivery of stream sequence seq
// made from template, the ack subject of another delivery of the same
// consumer ($JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<tm>.<pending>,
// or with <domain>.<account hash> after ACK and a token at the end), with
// consumer sequence dseq: a delivery the consumer made, above its ack
// floor, which the server requires of a negative acknowledgement.
func nakSubject(template string, seq, dseq uint64) (string, bool) {
	tokens := strings.Split(template, ".")
	if len(tokens) < 9 || tokens[0] != "$JS" || tokens[1] != "ACK" || len(tokens) > 9 && len(tokens) < 11 {
		return "", false
	}
	at := 4 // <delivered>
	if len(tokens) >= 11 {
		at = 6
	}
	tokens[at] = "1"
	tokens[at+1] = strconv.FormatUint(seq, 10)
	tokens[at+2] = strconv.FormatUint(dseq, 10)
	return strings.Join(tokens, "."), true
}

// pause waits d, and reports false when ctx ends first.
func pause(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Answers lost on their way from the node. The node publishes each reply
// to the NATS server it is connected to, and nothing tells whether it got
// there: those written to a server that hangs, or dies, before reading
// them are lost with it, as are the acknowledgements of their requests;
// the gateway waiting would ask for its answer only after its askAfter
// (3 s; the request redelivered after AckWait is answered again too).
// Once the connection is back, the node sends again the answers it sent
// from replyLookback before the connection broke: a gateway takes the
// first answer of a request it waits for and drops the others. (The facts
// in flight need no such thing: nats.go fails the publishes awaiting an
// answer as the connection breaks, and the window is recovered at once.)

// replyLookback is how long before its connection broke the node sends
// its answers again; replyKeep bounds how many it keeps (at 1,000
// requests a second, the last 4 s).
const (
	replyLookback = 3 * time.Second
	replyKeep     = 4096
)

// sentReply is an answer sent: when, to whom, what.
type sentReply struct {
	at   time.Time
	to   string
	data []byte
}

// sentReplies are the last replyKeep answers sent, in a ring, and when
// the connection broke (zero: it has not since it was last back); owned
// by Run's goroutine.
type sentReplies struct {
	ring    []sentReply
	next    int // the oldest, once the ring is full
	brokeAt time.Time
}

func (s *sentReplies) add(r sentReply) {
	if len(s.ring) < replyKeep {
		s.ring = append(s.ring, r)
		return
	}
	s.ring[s.next] = r
	s.next = (s.next + 1) % len(s.ring)
}

// forget drops the answers sent before t, unless the connection is
// broken now (they may be sent again once it is back): kept past their
// lookback, a server at rest would hold its last replyKeep answers for
// nothing.
func (s *sentReplies) forget(t time.Time) {
	if !s.brokeAt.IsZero() {
		return
	}
	for i := range s.ring {
		if r := &s.ring[i]; r.data != nil && r.at.Before(t) {
			*r = sentReply{}
		}
	}
}

// since returns the answers sent at t or later, oldest first.
func (s *sentReplies) since(t time.Time) []sentReply {
	var out []sentReply
	for i := range s.ring {
		if r := s.ring[(s.next+i)%len(s.ring)]; r.data != nil && !r.at.Before(t) {
			out = append(out, r)
		}
	}
	return out
}

// connChanged takes a change of the node's connection: when it breaks,
// the time; when it is back, the answers sent from replyLookback before
// it broke are sent again. It logs one line.
func (n *Node) connChanged(s nats.Status) {
	now := time.Now()
	if s != nats.CONNECTED {
		if n.sent.brokeAt.IsZero() {
			n.sent.brokeAt = now
		}
		return
	}
	broke := n.sent.brokeAt
	if broke.IsZero() {
		broke = now // its break not heard: as if just now
	}
	n.sent.brokeAt = time.Time{}
	again := n.sent.since(broke.Add(-replyLookback))
	for _, r := range again {
		n.publishReply(r.to, r.data)
	}
	if len(again) > 0 {
		n.log.Info("NATS connection back: the answers sent just before it broke are sent again, in case they were lost with the server (a gateway takes one answer of a request)",
			"answers", len(again), "lookback", replyLookback, "broken_for", now.Sub(broke).Round(time.Millisecond))
	}
}
