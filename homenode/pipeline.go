package homenode

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
	"github.com/rvp-im/rvpd/rvp"
)

// The pipeline (DESIGN §8). The deciding goroutine decides each input at
// once against the projection with the facts in flight over it (the
// overlay), applies the decision's facts to the overlay, and publishes
// them asynchronously to the home server's own fact stream, each with
// the sequence the one before it got as its expected last sequence: the
// node is the stream's only writer, so its next fact lands at last+1,
// and a second writer breaks the chain. A decision is released — its
// reply, its NOTIFYs, the acknowledgement of its request — once every
// fact published up to its own is acknowledged, so releases keep the
// order of decisions (and so each user's order), and nothing is visible
// before it is durable.
//
// When a publish fails, nothing more is published until every fact in
// flight has its answer. Then the stream tells what was stored: facts
// whose answer was lost but which the stream holds under their message
// id count as acknowledged; if the rest of the stream is empty, the
// facts not stored are published again as they were (the overlay still
// holds exactly them); if another writer's facts follow, the overlay is
// dropped, the projection catches up with the stream, and every decision
// not yet durable is decided again against it.

// pending is a decision in the window: published, not yet released.
type pending struct {
	in      any // what was decided, to decide it again
	d       *decision
	msgs    []*nats.Msg // its facts as published
	seqs    []uint64    // and their sequences
	after   uint64      // released once every fact up to here is acknowledged
	msg     jetstream.Msg
	replyTo string
	attempt int
	// taken is when its request was taken from the stream (zero for
	// inputs of the node's own), for the decision latency.
	taken time.Time
}

// pubResult is the answer to one fact's publish.
type pubResult struct {
	seq uint64
	ack *jetstream.PubAck
	err error
}

// seqOf returns the sequence a fact message was published for: one past
// the expectation it carries.
func seqOf(m *nats.Msg) uint64 {
	v, _ := strconv.ParseUint(m.Header.Get(jetstream.ExpectedLastSeqHeader), 10, 64)
	return v + 1
}

// newPublisher returns the JetStream context the node publishes its
// facts with: asynchronously, with a bounded number in flight, each
// answer (or its absence after a timeout) sent to results.
func newPublisher(nc *nats.Conn, window int, timeout time.Duration, results chan<- pubResult) (jetstream.JetStream, error) {
	return jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(window),
		jetstream.WithPublishAsyncTimeout(timeout),
		jetstream.WithPublishAsyncAckHandler(func(_ jetstream.JetStream, m *nats.Msg, ack *jetstream.PubAck) {
			results <- pubResult{seq: seqOf(m), ack: ack}
		}),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, m *nats.Msg, err error) {
			results <- pubResult{seq: seqOf(m), err: err}
		}))
}

// room reports whether the window has room for another decision.
func (n *Node) room() bool { return !n.broken && int(n.last-n.acked) < n.cfg.Window }

// commit decides p's input against the view and puts the decision in the
// window: its facts into the overlay and on their way to the stream. It
// returns an error only when the state cannot be read.
func (n *Node) commit(ctx context.Context, p *pending) error {
	if err := n.owned(ctx); err != nil {
		return err
	}
	d, err := decide(n.view(), n.policy, p.in, n.now())
	if err != nil {
		return err
	}
	p.d = d
	if d.handoff != nil {
		// The state goes to the new home server before anything of it
		// ends here: durably, and only after what is in flight.
		if err := n.flush(ctx); err != nil {
			return err
		}
		if err := n.sendHandoff(ctx, d); err != nil {
			return err
		}
	}
	if err := n.publish(p); err != nil {
		return err
	}
	n.window = append(n.window, p)
	if id := requestID(p.in); id != "" {
		n.inWindow[id] = p
	}
	n.releaseReady()
	return nil
}

// requestID returns the id of the request an input decides (a request, or
// a message taken up again after a restart); "" for the node's own inputs.
// A redelivery of that request while its facts are in flight is
// acknowledged with them.
func requestID(in any) string {
	switch in := in.(type) {
	case events.Request:
		return in.Request().ID
	case resumed:
		return in.e.ID
	case lapsed:
		return in.e.ID
	case forwarded:
		return in.req.Request().ID
	}
	return ""
}

// ErrLeaseLapsed stops a node whose lease lapsed and was lost.
var ErrLeaseLapsed = errors.New("the home server's lease has lapsed (this node was paused, or cut off from NATS, for longer than its TTL) and is lost; another node may own it: nothing more is appended")

// owned waits while the node's lease is not good (Config.Owned): until a
// renewal makes it good again (one slow to be answered), or Run's context
// ends (the lease lost: Lease.Hold stops the node) or ctx does, and then
// fails. Nothing is decided or appended meanwhile. (Decisions run under
// a context Run's end does not cancel: Run's is watched here.)
func (n *Node) owned(ctx context.Context) error {
	for n.cfg.Owned != nil && !n.cfg.Owned() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("home %s: %w", n.cfg.Home, ErrLeaseLapsed)
		case <-n.life.Done():
			return fmt.Errorf("home %s: %w", n.cfg.Home, ErrLeaseLapsed)
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}

// publish applies p's facts to the overlay and publishes them, chained.
func (n *Node) publish(p *pending) error {
	p.msgs, p.seqs = p.msgs[:0], p.seqs[:0]
	base := p.d.msgID
	if p.attempt > 0 {
		base += "/a" + strconv.Itoa(p.attempt)
	}
	for i, f := range p.d.facts {
		var answer []byte
		if i == len(p.d.facts)-1 {
			// The answer, recorded with the facts it depends on: should it
			// be lost with this node, the next owner gives it again.
			var err error
			if answer, err = p.d.recordedReply(); err != nil {
				return err
			}
		}
		msg, err := factMessage(n.cfg.Home, f, base+"/"+strconv.Itoa(i), answer)
		if err != nil {
			return err
		}
		seq := n.last + 1
		if err := n.over.Apply(seq, f); err != nil {
			return fmt.Errorf("home %s: apply %s to the overlay: %w", n.cfg.Home, f.Type(), err)
		}
		n.last = seq
		n.unapplied = append(n.unapplied, projections.SeqFact{Seq: seq, Fact: f})
		p.msgs, p.seqs = append(p.msgs, msg), append(p.seqs, seq)
		n.send(msg, seq)
	}
	p.after = n.last
	n.published.Add(uint64(len(p.d.facts)))
	n.metrics.window(n.last - n.acked)
	return nil
}

// factMessage is the message of fact f of home server home: its type, the
// request it was decided for, its id (its decision's and its place in
// it), and on a decision's last fact the answer the decision gave
// (encoded; nil for none).
func factMessage(home string, f events.Fact, id string, answer []byte) (*nats.Msg, error) {
	data, err := events.Encode(f)
	if err != nil {
		return nil, err
	}
	var kv [10]string
	h := append(kv[:0], events.HeaderType, f.Type(), events.HeaderFactID, id)
	if meta := f.Metadata(); meta.Request != "" {
		h = append(h, events.HeaderRequest, meta.Request)
	}
	if answer != nil {
		h = append(h, events.HeaderAnswer, string(answer))
	}
	if fw, ok := f.(*events.RequestForwarded); ok {
		h = append(h, events.HeaderForward, events.ForwardHeader(fw.To, fw.Move))
	}
	return &nats.Msg{Subject: events.FactSubject(home, f.Subject()), Header: nats.Header(events.Header(h...)), Data: data}, nil
}

// send publishes one fact expecting the stream's last sequence to be the
// one before it. Once a publish has failed nothing more goes out: the
// recovery publishes it. A fact more than a window past the last
// acknowledged one waits (n.waiting) until the acknowledgements catch up: a
// decision can have more facts than the window has room for, and a fact
// on its way never expects the stream to end more than a window past
// what this node knows is stored, which is what a takeover's fence
// relies on (fence.go).
func (n *Node) send(msg *nats.Msg, seq uint64) {
	if n.broken {
		return
	}
	if len(n.waiting) > 0 || seq > n.acked+uint64(n.cfg.Window) {
		n.waiting = append(n.waiting, waitingFact{msg: msg, seq: seq})
		return
	}
	n.publishFact(msg, seq)
}

// waitingFact is a fact waiting for room in the window (send).
type waitingFact struct {
	msg *nats.Msg
	seq uint64
}

// sendWaiting publishes the facts waiting that the window has room for now.
func (n *Node) sendWaiting() {
	i := 0
	for ; i < len(n.waiting) && !n.broken && n.waiting[i].seq <= n.acked+uint64(n.cfg.Window); i++ {
		n.publishFact(n.waiting[i].msg, n.waiting[i].seq)
	}
	if i > 0 {
		rest := copy(n.waiting, n.waiting[i:])
		clear(n.waiting[rest:])
		n.waiting = n.waiting[:rest]
	}
}

// publishFact publishes one fact, chained.
func (n *Node) publishFact(msg *nats.Msg, seq uint64) {
	_, err := n.pub.PublishMsgAsync(msg, jetstream.WithExpectLastSequence(seq-1))
	if err != nil {
		n.fail(seq, err)
		return
	}
	n.inflight++
}

func (n *Node) fail(seq uint64, err error) {
	if !n.broken {
		level := slog.LevelWarn
		if n.resends > 0 {
			level = slog.LevelDebug // said when the recovery began
		}
		n.log.Log(context.Background(), level, "fact not appended; the window is recovered once every answer is in", "seq", seq, "err", err)
	}
	n.broken = true
	n.resendRefused = n.resendRefused || isConflict(err)
	if unstorable(err) && (n.unstored == 0 || seq < n.unstored) {
		n.unstored, n.unstoredErr = seq, err
	}
}

// jsErrCodeHeaderExceedsMaximum is JetStream's refusal of a message whose
// headers are too large (nats.go names no constant for it).
const jsErrCodeHeaderExceedsMaximum jetstream.ErrorCode = 10097

// unstorable reports a publish refused for the message itself (larger
// than NATS or the stream takes), which no retry can store.
func unstorable(err error) bool {
	var apiErr *jetstream.APIError
	return errors.Is(err, nats.ErrMaxPayload) || errors.As(err, &apiErr) &&
		(apiErr.ErrorCode == jetstream.JSErrCodeStreamMessageExceedsMaximum || apiErr.ErrorCode == jsErrCodeHeaderExceedsMaximum)
}

// handleResult takes one publish's answer.
func (n *Node) handleResult(r pubResult) {
	n.inflight--
	switch {
	case r.err != nil:
		n.fail(r.seq, r.err)
		return
	case r.ack.Sequence != r.seq || r.ack.Duplicate:
		n.fail(r.seq, fmt.Errorf("stored at %d (duplicate %v), expected at %d", r.ack.Sequence, r.ack.Duplicate, r.seq))
		return
	}
	n.done[r.seq] = true
	n.resends = 0
	n.metrics.appended()
	n.advance()
	n.metrics.window(n.last - n.acked)
}

// advance moves the acknowledged mark over every answered fact that
// follows it, and releases what is durable.
func (n *Node) advance() {
	for n.done[n.acked+1] {
		delete(n.done, n.acked+1)
		n.acked++
	}
	if len(n.waiting) > 0 {
		n.sendWaiting()
	}
	n.releaseReady()
}

// releaseReady releases, in order, the decisions whose facts and every
// fact before them are acknowledged, and hands those facts to the
// applier.
func (n *Node) releaseReady() {
	i := 0
	for i < len(n.unapplied) && n.unapplied[i].Seq <= n.acked {
		i++
	}
	if i > 0 {
		n.applier.add(n.unapplied[:i])
		n.unapplied = append(n.unapplied[:0:0], n.unapplied[i:]...)
	}
	for len(n.window) > 0 && n.window[0].after <= n.acked {
		p := n.window[0]
		n.window[0] = nil
		n.window = n.window[1:]
		if id := requestID(p.in); id != "" {
			delete(n.inWindow, id)
		}
		n.release(p)
	}
}

// flush waits until every decision in the window is released.
func (n *Node) flush(ctx context.Context) error {
	for len(n.window) > 0 || n.inflight > 0 {
		if n.broken && n.inflight == 0 {
			if err := n.recover(ctx); err != nil {
				return err
			}
			if n.broken {
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(recoverPause):
				}
			}
			continue
		}
		select {
		case r := <-n.results:
			n.handleResult(r)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// A recovery asks the fact stream for its state for recoverProbe at most,
// and again recoverPause after a failure.
const (
	recoverProbe = 500 * time.Millisecond
	recoverPause = 100 * time.Millisecond
)

// recover finds out, once every fact in flight has its answer, what the
// stream holds of the window, and carries on from there. It returns an
// error only when the node cannot go on; while the stream cannot be read
// it leaves the window broken, to be tried again.
func (n *Node) recover(ctx context.Context) error {
	// Reading what the stream holds is short, and tried again soon (the
	// deciding loop waits meanwhile): during a stream leader's election a
	// request can go unanswered until its deadline. The stream is asked
	// for its state with a short wait, so that it is asked again soon
	// after it has a leader: a request sent while it had none is never
	// answered, and with a 2 s wait home1 served again 1.5 s after its
	// fact stream's new leader (TestClusterNATSServerLoss).
	if err := n.owned(ctx); err != nil {
		return err
	}
	// Published again and refused again: the stream's leader has taken a
	// fact of the window that it has not stored yet (its quorum not
	// there: a partition), and says the stream's last is that fact's,
	// while the stream's state, which counts only what is stored, says
	// it is the one before. Published again at once, each was refused in
	// a millisecond, for as long as the partition lasted (4,400 times in
	// 9 s, two log lines each, in a chaos run). It is waited for, longer
	// each time, up to a second.
	if n.resends > 0 && n.resendRefused && time.Since(n.resentAt) < min(recoverPause<<min(n.resends-1, 4), time.Second) {
		return nil
	}
	long := ctx
	st, err := n.probeStream(ctx)
	if err != nil {
		n.unreadable++
		if n.unreadable == 1 {
			n.log.Warn("fact stream unreadable; recovery will be tried again", "err", err)
		}
		return nil
	}
	if n.unreadable > 0 {
		n.log.Info("fact stream readable again", "attempts", n.unreadable+1)
		n.unreadable = 0
	}
	st = projections.FromLeader(st)
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	last := st.CachedInfo().State.LastSeq
	ours := map[uint64]*nats.Msg{}
	for _, p := range n.window {
		for i, seq := range p.seqs {
			ours[seq] = p.msgs[i]
		}
	}
	// The stored prefix of the chain: acknowledged, or found as it was
	// published (its answer was lost). The fact id alone does not tell:
	// another writer that decided the same request (a previous owner,
	// paused with its facts on their way) stores facts under the same
	// ids, decided at another time.
	stored, foreign := n.acked, false
	for stored < n.last {
		seq := stored + 1
		if !n.done[seq] {
			if seq > last {
				break
			}
			m, err := st.GetMsg(ctx, seq)
			if err != nil {
				n.log.Warn("fact stream unreadable; recovery will be tried again", "seq", seq, "err", err)
				return nil
			}
			if mine := ours[seq]; mine == nil || m.Header.Get(events.HeaderFactID) != mine.Header.Get(events.HeaderFactID) ||
				!bytes.Equal(m.Data, mine.Data) {
				foreign = true
				break
			}
		}
		stored = seq
	}
	foreign = foreign || last > stored
	// The other writer may have decided requests of the window too (an
	// owner whose lease lapsed while the lease bucket had no leader, and
	// the next one): those are answered as it decided them, not decided a
	// second time. Its facts are read before anything here changes: read
	// they cannot be (the stream offline, or deleted, once the reader's
	// resets are spent), the window stays broken, to be tried again, as
	// when the stream cannot be read above. (Going on without them, the
	// requests it decided were decided again.)
	var other recentFacts
	if foreign {
		rctx, rcancel := context.WithTimeout(long, time.Minute)
		other = n.readDecided(rctx, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: stored + 1}, last)
		rcancel()
		if other.err != nil {
			n.log.Warn("another writer's facts not read; recovery will be tried again", "stored", stored, "stream last", last, "err", other.err)
			return nil
		}
		if other.fencedBy != "" {
			// Taken over: what this node has not stored is the next
			// owner's to decide (the requests come back to it).
			return fmt.Errorf("home %s: %w (node %s, lease revision %d; this node's is %d)", n.cfg.Home, ErrFenced, other.fencedBy, other.fencedTerm, n.cfg.Term)
		}
		if other.broken > 0 {
			n.log.Warn("facts of decisions not whole after another writer's (it took the places of some): their requests are decided again", "facts", other.broken)
		}
	}
	clear(n.done)
	n.acked = stored
	n.broken = false
	// What was waiting is published again below, or decided again.
	clear(n.waiting)
	n.waiting = n.waiting[:0]
	n.releaseReady()
	// A fact the stream will never take, first of what is not stored:
	// published again it would be refused for ever, and the node would
	// decide nothing more. Its decision is answered as not done, and the
	// decisions after it, decided over its facts, are decided again.
	unstored := !foreign && n.unstored == stored+1
	if !unstored {
		n.unstored, n.unstoredErr = 0, nil
	}
	if !foreign && !unstored {
		// Lost answers only: what is not stored goes out again as it was.
		n.recovered.Add(1)
		level := slog.LevelInfo
		if n.resends > 0 {
			level = slog.LevelDebug
		}
		if stored < n.last {
			n.resends++
		}
		n.resentAt, n.resendRefused = time.Now(), false
		n.log.Log(context.Background(), level, "fact answers lost; publishing again what the stream has not", "stored", stored, "last", n.last, "attempt", n.resends)
		for _, p := range n.window {
			for i, seq := range p.seqs {
				if seq > stored {
					n.send(p.msgs[i], seq)
				}
			}
		}
		return nil
	}
	n.resends = 0
	if unstored {
		n.dropUnstorable(stored + 1)
	} else {
		// Another writer appended to the home server's stream: what was
		// decided on the state before is decided again on the stream's.
		n.conflicts.Add(1)
		n.rounds++
		if n.rounds > 5 {
			return fmt.Errorf("home %s: another writer keeps appending to stream %s (is another node serving this home server?)", n.cfg.Home, n.stream)
		}
		n.log.Warn("another writer appended to the home server's facts; catching up and deciding the window again",
			"stored", stored, "stream last", last, "decisions", len(n.window))
	}
	n.over.Drop()
	n.unapplied = nil
	// What was ours is applied; the rest comes from the stream.
	ctx, cancel = context.WithTimeout(long, 5*time.Minute)
	defer cancel()
	if err := n.proj.WaitFor(ctx, stored); err != nil {
		return fmt.Errorf("home %s: apply the facts stored: %w", n.cfg.Home, err)
	}
	gap, err := n.proj.CatchUp(ctx, n.cfg.JetStream, last)
	if err != nil {
		return fmt.Errorf("home %s: catch up with the fact stream: %w", n.cfg.Home, err)
	}
	n.logGap(gap)
	n.last, n.acked = last, last
	// The requests the other writer decided outside the window too: one
	// still to come here (held until the recent facts are read, or
	// redelivered later) is answered as the other writer decided it, as
	// those the recent facts tell of are.
	for id, dec := range other.decided {
		n.seen.add(id, dec.delivering)
		n.seen.answered(id, dec.answer)
	}
	for id, fw := range other.forwarded {
		n.forwards.add(id, fw.to, fw.move)
	}
	redo := n.window
	n.window = nil
	clear(n.inWindow)
	for _, p := range redo {
		r, ok := p.in.(events.Request)
		if fw, fok := p.in.(forwarded); fok {
			r, ok = fw.req, true // forwarded here: decided or forwarded there, maybe
		}
		if ok {
			if fw, theirs := other.forwarded[r.Request().ID]; theirs {
				// Forwarded by the other writer: passed on as it did.
				if p.msg != nil {
					if err := n.sendForward(ctx, n.log.With("req", r.Request().ID), p.msg, forwarded{req: r, to: fw.to, move: fw.move}); err != nil {
						return err
					}
				}
				continue
			}
			if dec, theirs := other.decided[r.Request().ID]; theirs {
				switch {
				case dec.delivering:
					// Being delivered by the other writer: back to JetStream
					// (AckWait) for whoever owns the home server then.
				case dec.answer != nil:
					n.reply(p.replyTo, dec.answer)
					fallthrough
				default:
					if p.msg != nil {
						p.msg.Ack()
					}
				}
				n.log.Info("request decided by the other writer; answered with its outcome, not decided again", "req", r.Request().ID)
				continue
			}
		}
		p.attempt++
		if err := n.commit(ctx, p); err != nil {
			return err
		}
	}
	return nil
}

// dropUnstorable takes the decision holding fact seq, which the stream
// refuses for good, out of the window and releases it as not done: a
// request is answered 507 and taken off the stream, not decided again.
// Facts of the decision before seq that the stream took stay, as the
// stream is the record; recover then decides the rest of the window
// again without it.
func (n *Node) dropUnstorable(seq uint64) {
	err := n.unstoredErr
	n.unstored, n.unstoredErr = 0, nil
	for i, p := range n.window {
		if !slices.Contains(p.seqs, seq) {
			continue
		}
		n.window = slices.Delete(n.window, i, i+1)
		if id := requestID(p.in); id != "" {
			delete(n.inWindow, id)
		}
		f := p.d.facts[slices.Index(p.seqs, seq)]
		n.log.Error("fact refused by the fact stream for good (too large); its decision is not carried out, the decisions after it are decided again",
			"seq", seq, "fact", f.Type(), "user", f.Subject().String(), "req", requestID(p.in), "err", err)
		d := &decision{msgID: p.d.msgID}
		var r *events.Req
		switch in := p.in.(type) {
		case events.Request:
			r = in.Request()
		case outcome:
			r = &in.d.req.Req
		}
		if r != nil {
			d.fail(r, rvp.StatusInsufficientStorage, "the server could not record this request (a %s record larger than its store takes: %v); it was not carried out", f.Type(), err)
		}
		p.d = d
		n.release(p)
		return
	}
}

// isConflict reports a failed optimistic-concurrency check; JetStream
// answers 10071 on a single node and often 10164 on a replicated stream.
func isConflict(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) &&
		(apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// applier applies the facts the node published, once acknowledged, to
// its projection: in large batches, behind the deciding goroutine, which
// never waits for it.
type applier struct {
	proj    *projections.Home
	mu      sync.Mutex
	queue   []projections.SeqFact
	stopped bool
	wake    chan struct{}
}

func newApplier(proj *projections.Home) *applier {
	return &applier{proj: proj, wake: make(chan struct{}, 1)}
}

// add queues facts, in order.
func (a *applier) add(facts []projections.SeqFact) {
	a.mu.Lock()
	a.queue = append(a.queue, facts...)
	a.mu.Unlock()
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// stop makes run return once what is queued is applied.
func (a *applier) stop() {
	a.mu.Lock()
	a.stopped = true
	a.mu.Unlock()
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// run applies what is queued until stopped.
func (a *applier) run() error {
	for {
		<-a.wake
		a.mu.Lock()
		batch, stopped := a.queue, a.stopped
		a.queue = nil
		a.mu.Unlock()
		if len(batch) > 0 {
			if err := a.proj.ApplyFacts(batch); err != nil {
				return fmt.Errorf("apply to the projection: %w", err)
			}
		}
		if stopped {
			return nil
		}
	}
}
