package homenode

import (
	"context"
	"testing"
	"time"

	"github.com/rvp-im/rvpd/events"
)

// TestAppendFactsRetried: a decision's facts over two users are stored
// once however often the append is retried (its answers lost).
func TestAppendFactsRetried(t *testing.T) {
	h := newHarness(t, "ann", "ben")
	n := h.node
	ctx := context.Background()
	ann, ben := events.NewUser("example.test", "ann"), events.NewUser("example.test", "ben")
	now := time.Now().UTC()
	views := func(id int32, u events.User) *events.ViewSet {
		return &events.ViewSet{Meta: events.Meta{At: now, Actor: "system", Home: h.home}, Node: u, ID: id, Value: "busy", Default: "offline", Timeout: 600, Expires: now.Add(time.Hour)}
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

	d := &decision{msgID: "decision-1", facts: []events.Fact{views(901, ann), views(902, ann), views(903, ben)}}
	if err := n.appendFacts(ctx, d); err != nil {
		t.Fatal(err)
	}
	after := lastSeq()
	for _, u := range []events.User{ann, ben} {
		if vs, _ := n.proj.Views(u); len(vs) == 0 {
			t.Errorf("%s: the decision's views are not in the projection", u)
		}
	}
	// The same decision again, as after a lost answer: stored once.
	if err := n.appendFacts(ctx, d); err != nil {
		t.Fatalf("retried decision: %v", err)
	}
	if got := lastSeq(); got != after {
		t.Errorf("a retried decision was stored again: last sequence %d, want %d", got, after)
	}

}
