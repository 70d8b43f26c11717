package homenode

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
)

// TestAppendFactsBatch: a decision's facts are stored as one batch, once
// however often the batch is retried (its answer lost), and not at all
// when one user's fence is stale.
func TestAppendFactsBatch(t *testing.T) {
	h := newHarness(t, "ann", "ben")
	n := h.node
	ctx := context.Background()
	ann, ben := events.NewUser("example.test", "ann"), events.NewUser("example.test", "ben")
	now := time.Now().UTC()
	views := func(id int32, u events.User) *events.ViewSet {
		return &events.ViewSet{Meta: n.systemMeta(now), Node: u, ID: id, Value: "busy", Default: "offline", Timeout: 600, Expires: now.Add(time.Hour)}
	}
	stream, err := h.js.Stream(ctx, events.StreamFacts)
	if err != nil {
		t.Fatal(err)
	}
	lastSeq := func() uint64 {
		info, err := stream.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.LastSeq
	}

	d := &decision{msgID: "batch-1", facts: []events.Fact{views(901, ann), views(902, ann), views(903, ben)}}
	if err := n.appendFacts(ctx, d); err != nil {
		t.Fatal(err)
	}
	after := lastSeq()
	for _, u := range []events.User{ann, ben} {
		if vs, _ := n.proj.Views(u); len(vs) == 0 {
			t.Errorf("%s: the batch's views are not in the projection", u)
		}
	}
	// The same decision again, as after a lost answer: stored once.
	if err := n.appendFacts(ctx, d); err != nil {
		t.Fatalf("retried batch: %v", err)
	}
	if got := lastSeq(); got != after {
		t.Errorf("a retried batch was stored again: last sequence %d, want %d", got, after)
	}

	// A stale fence on ben refuses the whole batch, ann's fact included.
	benStale := mustVersion(t, n, ben)
	other := nats.NewMsg(events.FactSubject(h.home, ben))
	other.Header.Set(events.HeaderType, events.TypeViewSet)
	other.Data = mustEncode(t, views(906, ben))
	if _, err := h.js.PublishMsg(ctx, other, jetstream.WithMsgID("other"), jetstream.WithExpectLastSequencePerSubject(benStale)); err != nil {
		t.Fatal(err)
	}
	batch := func(id int32, u events.User, ver uint64) *nats.Msg {
		m := nats.NewMsg(events.FactSubject(h.home, u))
		m.Header.Set(events.HeaderType, events.TypeViewSet)
		m.Header.Set(jetstream.MsgIDHeader, "batch-2/"+strconv.Itoa(int(id)))
		m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(ver, 10))
		m.Data = mustEncode(t, views(id, u))
		return m
	}
	before := lastSeq()
	_, err = n.publishBatch(ctx, []*nats.Msg{batch(904, ann, mustVersion(t, n, ann)), batch(905, ben, benStale)})
	if !isConflict(err) {
		t.Fatalf("a batch with a stale fence: %v, want a conflict", err)
	}
	if got := lastSeq(); got != before {
		t.Errorf("part of a refused batch was stored: last sequence %d, want %d", got, before)
	}
}

func mustEncode(t *testing.T, e events.Event) []byte {
	t.Helper()
	b, err := events.Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustVersion(t *testing.T, n *Node, u events.User) uint64 {
	t.Helper()
	v, err := n.proj.Version(u)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
