package projections

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
)

// appendFact appends f to home's fact stream and returns its sequence.
func appendFact(t *testing.T, js jetstream.JetStream, home string, f events.Fact) uint64 {
	t.Helper()
	data, err := events.Encode(f)
	if err != nil {
		t.Fatal(err)
	}
	msg := nats.NewMsg(events.FactSubject(home, f.Subject()))
	msg.Header.Set(events.HeaderType, f.Type())
	msg.Data = data
	ack, err := js.PublishMsg(context.Background(), msg)
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

// TestVerifyStreamWithoutItsFirstFacts: a fact stream whose first facts
// its retention (-audit.retention) removed cannot be rebuilt into the
// projection they made; verify says so, rather than reporting the live
// projection, which is right, as differing from what the stream holds
// (operations.md: "delete its -data", which would lose the state only
// the live projection still has).
func TestVerifyStreamWithoutItsFirstFacts(t *testing.T) {
	ctx := context.Background()
	js := startJetStream(t)
	const home = "home1"
	live := memoryHome(t, home)
	cutStream(t, js, home, func(seq uint64, f events.Fact) {
		if err := live.ApplyFacts([]SeqFact{{Seq: seq, Fact: f}}); err != nil {
			t.Fatal(err)
		}
	})

	v, err := VerifyHome(ctx, js, live.db, home)
	if err == nil {
		t.Fatalf("verified a projection against a stream missing its first fact: ok %v, diff:\n%s", v.OK(), v.Diff)
	}
	if !strings.Contains(err.Error(), "retention") {
		t.Errorf("error %q does not name the stream's retention", err)
	}
}

// TestVerifyProjectionPastItsStream: a projection past the end of its
// stream (written from another one) is reported as such at once, not
// after the verification's deadline, waiting for facts that never come.
func TestVerifyProjectionPastItsStream(t *testing.T) {
	js := startJetStream(t)
	const home = "home1"
	if err := EnsureFactStream(context.Background(), js, home, StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	ann := events.NewUser("example.test", "ann")
	prop := func(v string) events.Fact {
		return &events.PropertySet{Meta: events.Meta{At: at}, Node: ann, Value: events.PropValue{Prop: events.PropMobileState, Value: v}}
	}
	appendFact(t, js, home, prop("1"))
	live := memoryHome(t, home)
	if err := live.ApplyFacts([]SeqFact{{Seq: 1, Fact: prop("1")}, {Seq: 7, Fact: prop("2")}}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	v, err := VerifyHome(ctx, js, live.db, home)
	if err == nil {
		t.Fatalf("verified a projection at 7 against a stream ending at 1: %+v", v)
	}
	if ctx.Err() != nil || !strings.Contains(err.Error(), "past") {
		t.Errorf("after %s: %v; want an error naming the projection past the stream's end, at once", time.Since(start).Round(time.Millisecond), err)
	}
}

// waitRemoved waits until the retention of home's fact stream has removed
// the fact at seq.
func waitRemoved(t *testing.T, js jetstream.JetStream, home string, seq uint64) {
	t.Helper()
	ctx := t.Context()
	st, err := js.Stream(ctx, events.FactStream(home))
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; {
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.State.FirstSeq > seq {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("fact %d still in the stream: %+v", seq, info.State)
		}
		select {
		case <-time.After(50 * time.Millisecond): // polling, with a deadline
		case <-ctx.Done():
		}
	}
}

// TestCatchUpOverRetentionGap: a projection that catches up over facts
// the retention removed before it applied them says so (the gap) rather
// than nothing, and applies what is left.
func TestCatchUpOverRetentionGap(t *testing.T) {
	ctx := context.Background()
	js := startJetStream(t)
	const home = "home1"
	last := cutStream(t, js, home, nil)
	ben := events.NewUser("example.test", "ben")

	h := memoryHome(t, home)
	gap, err := h.CatchUp(ctx, js, last)
	if err != nil {
		t.Fatal(err)
	}
	if gap.IsZero() || gap.From != 0 || gap.First != last || gap.Stream != events.FactStream(home) || gap.MaxAge != time.Second {
		t.Errorf("gap %+v, want facts 1..%d of %s removed under a projection at 0", gap, last-1, events.FactStream(home))
	}
	if v, err := h.View(ben, 1); err != nil || v == nil {
		t.Errorf("ben's view after the catch-up: %v, %v", v, err)
	}
	// Caught up, there is no gap left to tell.
	if gap, err := h.CatchUp(ctx, js, last); err != nil || !gap.IsZero() {
		t.Errorf("a second catch-up: gap %+v, %v", gap, err)
	}
}

// cutStream makes home's fact stream one whose retention (1 s) removed
// its first fact, ann's ACL, before its second, ben's view, was
// appended; applied, when set, is given each fact as it is appended. It
// returns the second's sequence.
func cutStream(t *testing.T, js jetstream.JetStream, home string, applied func(seq uint64, f events.Fact)) uint64 {
	t.Helper()
	if err := EnsureFactStream(t.Context(), js, home, StreamOptions{FactMaxAge: time.Second, Duplicates: time.Second}); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	ann, ben := events.NewUser("example.test", "ann"), events.NewUser("example.test", "ben")
	var seq uint64
	for i, f := range []events.Fact{
		&events.ACLSet{Meta: events.Meta{At: at}, Node: ann, ACEs: []events.ACE{{Credentials: []string{"any"}, Deny: []string{"presence"}}}},
		&events.ViewSet{Meta: events.Meta{At: at.Add(time.Hour)}, Node: ben, ID: 1, Value: "online", Default: "offline", Timeout: 600, Expires: at.Add(2 * time.Hour)},
	} {
		seq = appendFact(t, js, home, f)
		if applied != nil {
			applied(seq, f)
		}
		if i == 0 {
			waitRemoved(t, js, home, seq) // by the retention
		}
	}
	return seq
}
