package homenode

import (
	"errors"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
)

// TestFenceRefusesOldOwnersFacts: the old owner of home1 stopped with
// facts on their way (published, not yet stored), each expecting the
// stream to end where its chain left it: at most a window past its last
// stored fact. The next owner fences the stream before it decides
// anything; after the fence, every such fact is refused. Without the
// fence, the one expecting the stream to end at the new owner's first
// fact was stored after it, decided against a state without it.
func TestFenceRefusesOldOwnersFacts(t *testing.T) {
	h := newHarness(t, "ann", "ben")
	h.annDescribed("ann-first")
	if err := h.stopNode(); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	st, err := h.js.Stream(ctx, events.FactStream(h.home))
	if err != nil {
		t.Fatal(err)
	}
	last := st.CachedInfo().State.LastSeq

	// The old owner's next decision, its facts not stored yet.
	d := h.decideAsOldOwner(annDescription("ann-old"))
	old, err := factMessage(h.home, d.facts[0], d.msgID+"/0", nil)
	if err != nil {
		t.Fatal(err)
	}

	h.tweak = func(c *Config) { c.Holder, c.Term = "node-b", 7 }
	h.startNode()
	until(t, 10*time.Second, "the next owner's fence not stored", func() bool {
		info, err := st.Info(ctx)
		return err == nil && info.State.LastSeq >= last+fenceSize
	})
	// Every expectation the old owner's facts on their way can carry,
	// whatever its window.
	for e := last; e < last+fenceSize; e++ {
		_, err := h.js.PublishMsg(ctx, old, jetstream.WithExpectLastSequence(e))
		if !isConflict(err) {
			t.Errorf("the old owner's fact expecting the stream to end at %d (the fence is %d to %d): %v; want it refused", e, last+1, last+fenceSize, err)
		}
	}
	var fences []*events.HomeFenced
	var seqs []uint64
	h.eachFact(h.home, func(m jetstream.Msg) {
		if m.Headers().Get(events.HeaderType) == events.TypeHomeFenced {
			md, _ := m.Metadata()
			seqs = append(seqs, md.Sequence.Stream)
		}
	})
	for _, seq := range seqs {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		ev, err := events.Decode(events.TypeHomeFenced, m.Data)
		if err != nil {
			t.Fatal(err)
		}
		f := ev.(*events.HomeFenced)
		if seq != last+uint64(f.Part) || f.Holder != "node-b" || f.Term != 7 || f.Parts != fenceSize || m.Header.Get(events.HeaderOwner) != "7 node-b" {
			t.Errorf("fence fact at %d: %+v, owner %q", seq, f, m.Header.Get(events.HeaderOwner))
		}
		fences = append(fences, f)
	}
	if len(fences) != fenceSize {
		t.Fatalf("%d fence facts, want %d", len(fences), fenceSize)
	}
	if got := events.Describe(fences[0]); !strings.Contains(got, "owned by node node-b from here (lease revision 7)") {
		t.Errorf("the fence described as %q", got)
	}

	// The new owner decides on after its fence.
	next := annDescription("ann-next")
	h.sendTo("home1", next)
	if r := h.reply(next.ID); r.Status != 207 {
		t.Fatalf("ann's request after the fence: %d %s", r.Status, r.Error)
	}
	if got := h.decidedIn(h.home, "ann-old"); len(got) != 0 {
		t.Errorf("the old owner's facts stored: %v", got)
	}
}

// TestFencedOwnerStops: a node still serving home1 when another has
// fenced it (paused past its lease, or cut off) finds, at its next
// publish, its fact refused and the fence in the stream: it stops with
// ErrFenced, and stores nothing more.
func TestFencedOwnerStops(t *testing.T) {
	h := newHarness(t, "ann", "ben")
	h.annDescribed("ann-first")
	ctx := t.Context()

	// Another node takes the home server over and fences it.
	other, _ := h.nextOwner()
	end, err := other.appendFence(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if end != other.last+fenceSize {
		t.Fatalf("fence ends at %d, want %d", end, other.last+fenceSize)
	}

	late := annDescription("ann-late")
	h.sendTo("home1", late)
	select {
	case err := <-h.done:
		h.stopped = true
		if !errors.Is(err, ErrFenced) || !strings.Contains(err.Error(), "node node-b, lease revision 9") {
			t.Fatalf("the fenced node stopped with %v; want ErrFenced naming node-b's lease revision 9", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the fenced node did not stop")
	}
	if got := h.decidedIn(h.home, late.ID); len(got) != 0 {
		t.Errorf("the fenced node stored facts of a request: %v", got)
	}
}

// TestFenceAgainAfterOldOwnersFact: the old owner's fact lands while the
// next owner fences (it expected the stream to end where the next owner
// caught up to): the fence, one atomic batch, is refused whole, and
// appended again after that fact.
func TestFenceAgainAfterOldOwnersFact(t *testing.T) {
	h := newHarness(t, "ann", "ben")
	h.annDescribed("ann-first")
	if err := h.stopNode(); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	n, st := h.nextOwner()
	last := n.last
	// The old owner's fact lands first.
	d := h.decideAsOldOwner(annDescription("ann-old"))
	h.appendAsOtherWriter(d, last)
	if _, err := n.appendFence(ctx, 1); !isConflict(err) {
		t.Fatalf("fence after the old owner's fact: %v; want it refused", err)
	}
	if info, err := st.Info(ctx); err != nil || info.State.LastSeq != last+uint64(len(d.facts)) {
		t.Fatalf("stream after the refused fence: %+v, %v; want the old owner's facts only (%d)", info.State, err, last+uint64(len(d.facts)))
	}
	if err := n.fence(ctx); err != nil {
		t.Fatal(err)
	}
	if n.last != last+uint64(len(d.facts))+fenceSize || n.acked != n.last || n.proj.Position() != n.last {
		t.Errorf("after the fence: last %d acked %d projection %d; want all %d", n.last, n.acked, n.proj.Position(), last+uint64(len(d.facts))+fenceSize)
	}
}

// recordingPub stands in for the node's publisher: it records the
// sequences of the facts published.
type recordingPub struct {
	jetstream.JetStream
	seqs []uint64
}

func (p *recordingPub) PublishMsgAsync(m *nats.Msg, _ ...jetstream.PublishOpt) (jetstream.PubAckFuture, error) {
	p.seqs = append(p.seqs, seqOf(m))
	return nil, nil
}

// TestFactsOnTheirWayWithinWindow: a decision with more facts than the
// window has room for publishes them as the acknowledgements come, so
// that no fact on its way expects the stream to end more than a window
// past the last one acknowledged (what the fence relies on).
func TestFactsOnTheirWayWithinWindow(t *testing.T) {
	pub := &recordingPub{}
	n := &Node{cfg: Config{Window: 3}, pub: pub, done: map[uint64]bool{}, log: slog.New(slog.DiscardHandler)}
	for seq := uint64(1); seq <= 7; seq++ {
		m := nats.NewMsg("x")
		m.Header.Set(jetstream.ExpectedLastSeqHeader, strconv.FormatUint(seq-1, 10))
		n.last = seq
		n.send(m, seq)
	}
	check := func(when string, want ...uint64) {
		t.Helper()
		if !slices.Equal(pub.seqs, want) {
			t.Fatalf("%s: published %v, want %v", when, pub.seqs, want)
		}
		for _, s := range pub.seqs {
			if s > n.acked+uint64(n.cfg.Window) {
				t.Fatalf("%s: fact %d on its way with %d acknowledged, window %d", when, s, n.acked, n.cfg.Window)
			}
		}
	}
	check("none acknowledged", 1, 2, 3)
	n.handleResult(pubResult{seq: 2, ack: &jetstream.PubAck{Sequence: 2}})
	check("2 acknowledged before 1", 1, 2, 3)
	n.handleResult(pubResult{seq: 1, ack: &jetstream.PubAck{Sequence: 1}})
	check("1 and 2 acknowledged", 1, 2, 3, 4, 5)
	for s := uint64(3); s <= 5; s++ {
		n.handleResult(pubResult{seq: s, ack: &jetstream.PubAck{Sequence: s}})
	}
	check("5 acknowledged", 1, 2, 3, 4, 5, 6, 7)
	if len(n.waiting) != 0 {
		t.Errorf("%d facts still waiting", len(n.waiting))
	}
}

// annDescribed sends ann's PROPPATCH id to home1 and waits for its 207.
func (h *harness) annDescribed(id string) {
	h.t.Helper()
	req := annDescription(id)
	h.sendTo("home1", req)
	if r := h.reply(req.ID); r.Status != 207 {
		h.t.Fatalf("ann's request %s: %d %s", id, r.Status, r.Error)
	}
}

// decideAsOldOwner decides req as an owner of the home server whose
// projection is the harness's now would (the node stopped, or paused).
func (h *harness) decideAsOldOwner(req events.Request) *decision {
	h.t.Helper()
	proj, err := projections.OpenHome(h.db, h.home)
	if err != nil {
		h.t.Fatal(err)
	}
	d, err := decide(View{Home: h.home, State: projections.NewOverlay(proj), Dir: h.dir}, Policy{MinLifetime: time.Second}.withDefaults(), req, time.Now())
	if err != nil {
		h.t.Fatal(err)
	}
	return d
}

// nextOwner returns a node that takes home1 over as node-b under lease
// revision 9, not running, caught up to the end of
// the fact stream (returned too).
func (h *harness) nextOwner() (*Node, jetstream.Stream) {
	h.t.Helper()
	n, err := New(Config{Home: h.home, JetStream: h.js, Conn: h.nc, DB: h.db, Directory: h.dir, Holder: "node-b", Term: 9,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		h.t.Fatal(err)
	}
	st, err := h.js.Stream(h.t.Context(), events.FactStream(h.home))
	if err != nil {
		h.t.Fatal(err)
	}
	n.last = st.CachedInfo().State.LastSeq
	n.acked = n.last
	return n, st
}
