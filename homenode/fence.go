package homenode

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
)

// The fence. A node that takes a home server over may have a predecessor
// still running: paused past its lease, or cut off, with facts on their
// way to the stream. The chain of expected last sequences stores each of
// them only where its writer expects the stream to end, but it names a
// sequence, not whose fact is there: once the new owner has appended, a
// fact of the old one that expects the stream to end at one of the new
// owner's facts is stored after it, decided against a state without it
// (an orphan: a subscription id both gave, a view over a subscription
// that is not there).
//
// So a node that takes a home server over appends, before it decides
// anything, a fence: fenceSize facts that change nothing (events.HomeFenced),
// in one atomic batch expecting the stream to end where the node caught up
// to. Either the whole fence is stored there, right after the old owner's
// last fact, or none of it (the old owner appended meanwhile: the node
// catches up and fences again). A node never has a fact on its way whose
// sequence is more than its window past its last acknowledged one (send),
// no window is larger than a fence (Config.Window), and
// each of its acknowledged facts is in the stream before the fence; so
// every fact the old owner still has on its way expects the stream to end
// before the fence's last fact, and none can ever be stored after it. The
// old owner, its facts refused, reads the stream, finds the fence and
// stops (recover, ErrFenced).

// ErrFenced stops a node whose home server another node has taken over.
var ErrFenced = errors.New("another node has taken this home server over (its fence is in the fact stream): this node appends nothing more")

// fenceSize is the number of facts of a fence: the most JetStream takes
// in one atomic batch (nats-server's default limit), and so the largest
// window a node may have (Config.Window), whatever the previous owner's
// was.
const fenceSize = 1000

// fenceRounds bounds how often a takeover fences again after the old
// owner's facts landed first.
const fenceRounds = 10

// fence appends this ownership's fence after the stream's last fact (the
// projection caught up to n.last), and catches the projection up over it.
func (n *Node) fence(ctx context.Context) error {
	start := time.Now()
	for round := 1; ; round++ {
		end, err := n.appendFence(ctx, round)
		if err == nil {
			n.published.Add(fenceSize)
			n.metrics.appendedN(fenceSize)
			if err := n.catchUp(ctx, end); err != nil {
				return err
			}
			n.log.Info("home server fenced: no fact of a previous owner can be stored after this",
				"term", n.cfg.Term, "facts", fenceSize, "seq", end, "rounds", round, "took", time.Since(start))
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("home %s: fence the fact stream: %w", n.cfg.Home, err)
		}
		if round == fenceRounds {
			return fmt.Errorf("home %s: fence the fact stream: %w (another writer keeps appending to stream %s: is another node serving this home server?)", n.cfg.Home, err, n.stream)
		}
		n.log.Warn("fence not appended; catching up and fencing again", "round", round, "err", err)
		if st, serr := n.probeStream(ctx); serr != nil {
			n.log.Warn("fact stream unreadable; fencing again", "err", serr)
		} else if err := n.catchUp(ctx, st.CachedInfo().State.LastSeq); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("home %s: fence the fact stream: %w", n.cfg.Home, ctx.Err())
		case <-time.After(min(50*time.Millisecond<<min(round-1, 4), time.Second)):
		}
	}
}

// probeStream asks for the fact stream, with its state as its leader has
// it (CachedInfo), waiting recoverProbe at most: during a leader's
// election a request goes unanswered, and is better asked again soon.
func (n *Node) probeStream(ctx context.Context) (jetstream.Stream, error) {
	pctx, cancel := context.WithTimeout(ctx, recoverProbe)
	defer cancel()
	return n.cfg.JetStream.Stream(pctx, n.stream)
}

// appendFence appends the fence, expecting the stream to end at n.last,
// and returns the sequence of its last fact. When the batch's answer is
// lost, the stream's end tells whether it was stored.
func (n *Node) appendFence(ctx context.Context, round int) (uint64, error) {
	after := n.last
	batch := "fence-" + strconv.FormatUint(n.cfg.Term, 10) + "-" + strconv.Itoa(round) + "-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	now := n.now()
	var last *nats.Msg
	for i := 1; i <= fenceSize; i++ {
		f := &events.HomeFenced{Meta: events.Meta{At: now, Actor: "system", Home: n.cfg.Home}, Holder: n.cfg.Holder, Term: n.cfg.Term, Part: i, Parts: fenceSize}
		msg, err := factMessage(n.cfg.Home, f, batch+"/"+strconv.Itoa(i-1), nil)
		if err != nil {
			return 0, err
		}
		msg.Header.Set(events.HeaderOwner, events.OwnerHeader(n.cfg.Term, n.cfg.Holder))
		msg.Header.Set("Nats-Batch-Id", batch)
		msg.Header.Set("Nats-Batch-Sequence", strconv.Itoa(i))
		if i == 1 {
			msg.Header.Set(jetstream.ExpectedLastSeqHeader, strconv.FormatUint(after, 10))
		}
		if i == fenceSize {
			msg.Header.Set("Nats-Batch-Commit", "1")
			last = msg
			break
		}
		if err := n.cfg.Conn.PublishMsg(msg); err != nil {
			return 0, err
		}
	}
	rctx, cancel := context.WithTimeout(ctx, max(n.cfg.AckTimeout, 5*time.Second))
	resp, err := n.cfg.Conn.RequestMsgWithContext(rctx, last)
	cancel()
	if err == nil {
		var ack struct {
			Error *jetstream.APIError `json:"error"`
			Seq   uint64              `json:"seq"`
			Count int                 `json:"count"`
		}
		if err := json.Unmarshal(resp.Data, &ack); err != nil {
			return 0, fmt.Errorf("fence's answer %q: %w", resp.Data, err)
		}
		if ack.Error != nil {
			return 0, ack.Error
		}
		if ack.Seq != after+fenceSize || ack.Count != fenceSize {
			return 0, fmt.Errorf("fence stored %d facts ending at %d, expected %d ending at %d", ack.Count, ack.Seq, fenceSize, after+fenceSize)
		}
		return ack.Seq, nil
	}
	// The answer lost: stored whole or not at all, and if stored, its last
	// fact is the stream's last (nothing else can follow it yet).
	st, serr := n.probeStream(ctx)
	if serr != nil {
		return 0, fmt.Errorf("%w (and the stream is unreadable: %v)", err, serr)
	}
	end := after + fenceSize
	if st.CachedInfo().State.LastSeq == end {
		gctx, cancel := context.WithTimeout(ctx, recoverProbe)
		defer cancel()
		m, gerr := projections.FromLeader(st).GetMsg(gctx, end)
		if gerr == nil && m.Header.Get(events.HeaderFactID) == batch+"/"+strconv.Itoa(fenceSize-1) {
			return end, nil
		}
	}
	return 0, err
}
