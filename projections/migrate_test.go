package projections

import (
	"context"
	"errors"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/testcluster/jsfault"
)

// TestMigrateFacts: the single fact stream of an older version is copied
// into one stream per home server, in order, each fact marked with its
// place in the old one; a copy interrupted resumes where it stopped; the
// old stream is kept, out of the way; each home server's projection
// rebuilt from its new stream is what the old stream made of it.
func TestMigrateFacts(t *testing.T) {
	js := startJetStream(t)
	ctx := t.Context()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: events.StreamLegacyFacts, Subjects: []string{events.FactRoot + ".>"},
		DenyDelete: true, DenyPurge: true, AllowDirect: true}); err != nil {
		t.Fatal(err)
	}
	if err := EnsureStreams(ctx, js, StreamOptions{}); !errors.Is(err, ErrLegacyFacts) {
		t.Fatalf("EnsureStreams over an unmigrated stream: %v, want ErrLegacyFacts", err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	facts := randomFacts(rng, 300)
	homes := []string{"home1", "imhome2.example.test"}
	byHome := map[string][]events.Fact{}
	for i, f := range facts {
		home := homes[rng.IntN(2)]
		byHome[home] = append(byHome[home], f)
		data, _ := events.Encode(f)
		msg := nats.NewMsg(events.FactSubject(home, f.Subject()))
		msg.Header.Set(events.HeaderType, f.Type())
		msg.Header.Set(events.HeaderRequest, "req-"+strconv.Itoa(i))
		msg.Data = data
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	// An earlier migration moved the old stream's subjects aside and
	// stopped after copying home1's first ten facts.
	legacy, _ := js.Stream(ctx, events.StreamLegacyFacts)
	cfg := legacy.CachedInfo().Config
	cfg.Subjects = []string{legacyArchive}
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if err := EnsureFactStream(ctx, js, "home1", StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	early := 0
	for seq := uint64(1); early < 10; seq++ {
		m, err := legacy.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		if home, _, _ := events.ParseFactSubject(m.Subject); home != "home1" {
			continue
		}
		msg := nats.NewMsg(m.Subject)
		msg.Header = m.Header
		msg.Header.Set(events.HeaderLegacySeq, strconv.FormatUint(seq, 10))
		msg.Header.Set(events.HeaderLegacyTime, m.Time.Format(time.RFC3339Nano))
		msg.Data = m.Data
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
		early++
	}

	n, err := MigrateFacts(ctx, js, StreamOptions{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n != len(facts)-early {
		t.Errorf("copied %d facts, want %d (the first %d were)", n, len(facts)-early, early)
	}
	if again, err := MigrateFacts(ctx, js, StreamOptions{}, nil); err != nil || again != 0 {
		t.Errorf("second migration copied %d (%v), want nothing", again, err)
	}
	if err := EnsureStreams(ctx, js, StreamOptions{}); err != nil {
		t.Fatalf("EnsureStreams after the migration: %v", err)
	}
	names, err := FactStreams(ctx, js)
	if err != nil || len(names) != 2 {
		t.Fatalf("fact streams %v (%v)", names, err)
	}
	for _, home := range homes {
		st, err := js.Stream(ctx, events.FactStream(home))
		if err != nil {
			t.Fatal(err)
		}
		want := byHome[home]
		if got := st.CachedInfo().State.Msgs; got != uint64(len(want)) {
			t.Fatalf("%s holds %d facts, want %d", home, got, len(want))
		}
		var prevLegacy uint64
		for i := range want {
			m, err := st.GetMsg(ctx, uint64(i+1))
			if err != nil {
				t.Fatal(err)
			}
			ls, _ := strconv.ParseUint(m.Header.Get(events.HeaderLegacySeq), 10, 64)
			if ls <= prevLegacy || m.Header.Get(events.HeaderLegacyTime) == "" || m.Header.Get(events.HeaderRequest) == "" {
				t.Fatalf("%s fact %d: legacy seq %d after %d, headers %v", home, i+1, ls, prevLegacy, m.Header)
			}
			prevLegacy = ls
			wantData, _ := events.Encode(want[i])
			if string(m.Data) != string(wantData) {
				t.Fatalf("%s fact %d differs from the original", home, i+1)
			}
		}
		// A whole old stream leaves no gap to tell (Rvp-Legacy-Cut).
		if gap, err := gapAfter(ctx, js, events.FactStream(home), 0); err != nil || !gap.IsZero() {
			t.Errorf("%s copied from a whole old stream: gap %+v, %v; want none", home, gap, err)
		}
		if err := rebuildable(ctx, js, events.FactStream(home), uint64(len(want))); err != nil {
			t.Errorf("%s copied from a whole old stream: %v", home, err)
		}
		// The projection rebuilt from the new stream reads as the facts.
		db, _ := Open("", Options{InMemory: true})
		h, _ := OpenHome(db, home)
		if err := Replay(ctx, js, events.FactStream(home), events.FactFilter(home), uint64(len(want)), h); err != nil {
			t.Fatal(err)
		}
		mem := NewOverlay(nil)
		for _, f := range want {
			mem.Apply(0, f)
		}
		sameState(t, mem, h, want)
		db.Close()
	}
	if legacy, err := LegacyFacts(ctx, js); err != nil || legacy {
		t.Errorf("old stream still to migrate: %v %v", legacy, err)
	}
	info, err := js.Stream(ctx, events.StreamLegacyFacts)
	if err != nil || info.CachedInfo().State.Msgs != uint64(len(facts)) {
		t.Errorf("the old stream is not kept whole: %v", err)
	}
}

// TestMigrateFactsAllExpired: an old fact stream whose retention has
// removed every fact is migrated (nothing to copy), not refused for
// ever as a copy that stopped short of its last sequence.
func TestMigrateFactsAllExpired(t *testing.T) {
	js := startJetStream(t)
	ctx := t.Context()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: events.StreamLegacyFacts, Subjects: []string{events.FactRoot + ".>"},
		MaxAge: time.Second, Duplicates: time.Second, DenyDelete: true, DenyPurge: true, AllowDirect: true}); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for i := range 3 {
		f := &events.PropertySet{Meta: events.Meta{At: at}, Node: events.NewUser("example.test", "ann"),
			Value: events.PropValue{Prop: events.PropMobileState, Value: strconv.Itoa(i)}}
		data, _ := events.Encode(f)
		msg := nats.NewMsg(events.FactSubject("home1", f.Subject()))
		msg.Header.Set(events.HeaderType, f.Type())
		msg.Data = data
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	legacy, err := js.Stream(ctx, events.StreamLegacyFacts)
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; {
		info, err := legacy.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs == 0 && info.State.LastSeq == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the old stream's facts not expired: %+v", info.State)
		}
		select {
		case <-time.After(50 * time.Millisecond): // polling, with a deadline
		case <-ctx.Done():
		}
	}
	n, err := MigrateFacts(ctx, js, StreamOptions{}, nil)
	if err != nil || n != 0 {
		t.Fatalf("migrating an old stream with no fact left: copied %d, %v", n, err)
	}
	if still, err := LegacyFacts(ctx, js); err != nil || still {
		t.Errorf("old stream still to migrate: %v %v", still, err)
	}
}

// TestMigratedStreamKeepsLegacyGap: an old fact stream whose retention
// removed its first facts before the migration copies what is left into
// a home server's stream that starts at sequence 1, as if it were whole.
// Before, the gap was lost there: the projection rebuilt from the copy
// caught up with no gap reported, and verify compared it as if the
// stream held the whole history, though the state only the removed facts
// made (ann's ACL) is missing from it. The gap is carried over: the
// catch-up reports it, and verify refuses as for a stream cut by its own
// retention.
func TestMigratedStreamKeepsLegacyGap(t *testing.T) {
	js := startJetStream(t)
	ctx := t.Context()
	legacy, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: events.StreamLegacyFacts, Subjects: []string{events.FactRoot + ".>"},
		MaxAge: time.Second, Duplicates: time.Second, DenyDelete: true, DenyPurge: true, AllowDirect: true})
	if err != nil {
		t.Fatal(err)
	}
	const home = "home1"
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	ann, ben := events.NewUser("example.test", "ann"), events.NewUser("example.test", "ben")
	publish := func(f events.Fact) {
		t.Helper()
		data, _ := events.Encode(f)
		msg := nats.NewMsg(events.FactSubject(home, f.Subject()))
		msg.Header.Set(events.HeaderType, f.Type())
		msg.Data = data
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	publish(&events.ACLSet{Meta: events.Meta{At: at}, Node: ann, ACEs: []events.ACE{{Credentials: []string{"any"}, Deny: []string{"presence"}}}})
	for deadline := time.Now().Add(30 * time.Second); ; {
		info, err := legacy.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.State.FirstSeq > 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the old stream's first fact not removed by its retention: %+v", info.State)
		}
		select {
		case <-time.After(50 * time.Millisecond): // polling, with a deadline
		case <-ctx.Done():
		}
	}
	// What follows is kept until the migration.
	cfg := legacy.CachedInfo().Config
	cfg.MaxAge = 0
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	publish(&events.ViewSet{Meta: events.Meta{At: at.Add(time.Hour)}, Node: ben, ID: 1, Value: "online", Default: "offline", Timeout: 600, Expires: at.Add(2 * time.Hour)})

	if n, err := MigrateFacts(ctx, js, StreamOptions{}, nil); err != nil || n != 1 {
		t.Fatalf("migration: copied %d, %v; want 1", n, err)
	}
	h := memoryHome(t, home)
	gap, err := h.CatchUp(ctx, js, 1)
	if err != nil {
		t.Fatal(err)
	}
	if gap.IsZero() || gap.Stream != events.FactStream(home) || gap.From != 0 || gap.LegacyFirst != 2 {
		t.Errorf("catch-up over a copy of a cut old stream: gap %+v, want one from 0, the old stream's facts before 2 removed", gap)
	}
	if v, err := h.View(ben, 1); err != nil || v == nil {
		t.Errorf("ben's view after the catch-up: %v, %v", v, err)
	}
	if gap, err := h.CatchUp(ctx, js, 1); err != nil || !gap.IsZero() {
		t.Errorf("a second catch-up: gap %+v, %v; want none left to tell", gap, err)
	}
	v, err := VerifyHome(ctx, js, h.db, home)
	if err == nil {
		t.Fatalf("verified a projection against the copy of a cut old stream: ok %v, diff:\n%s", v.OK(), v.Diff)
	}
	if !strings.Contains(err.Error(), "retention") || !strings.Contains(err.Error(), events.StreamLegacyFacts) {
		t.Errorf("error %q does not name the old stream's retention", err)
	}
}

// TestMigrateFactsStreamDeletedMidway: the old fact stream deleted (or
// offline) after the migration copied its first batch fails the
// migration within seconds, naming the stream. Before, it never
// returned: each fetch of its ordered consumer creates it anew, retried
// without bound and heeding no context; rvpd, migrating as it starts
// (with a context that cannot end), neither started nor said why.
func TestMigrateFactsStreamDeletedMidway(t *testing.T) {
	js := startJetStream(t)
	ctx := t.Context()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: events.StreamLegacyFacts, Subjects: []string{events.FactRoot + ".>"}}); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	const n = 600 // more than one fetch (512)
	for i := range n {
		f := &events.PropertySet{Meta: events.Meta{At: at}, Node: events.NewUser("example.test", "ann"),
			Value: events.PropValue{Prop: events.PropMobileState, Value: strconv.Itoa(i)}}
		data, _ := events.Encode(f)
		msg := nats.NewMsg(events.FactSubject("home1", f.Subject()))
		msg.Header.Set(events.HeaderType, f.Type())
		msg.Data = data
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	djs := &jsfault.DeletingJetStream{JetStream: js, StreamName: events.StreamLegacyFacts, At: 1}
	type result struct {
		copied int
		err    error
	}
	done := make(chan result, 1)
	start := time.Now()
	go func() {
		copied, err := MigrateFacts(context.WithoutCancel(ctx), djs, StreamOptions{}, nil)
		done <- result{copied, err}
	}()
	select {
	case r := <-done:
		if djs.Deleted() != nil {
			t.Fatalf("delete %s: %v", events.StreamLegacyFacts, djs.Deleted())
		}
		if r.err == nil || !strings.Contains(r.err.Error(), events.StreamLegacyFacts) {
			t.Errorf("migration: copied %d, error %v; want an error naming %s", r.copied, r.err, events.StreamLegacyFacts)
		}
		t.Logf("returned after %v, %d copied: %v", time.Since(start).Round(time.Millisecond), r.copied, r.err)
	case <-time.After(60 * time.Second):
		_, err := js.Stream(ctx, events.StreamLegacyFacts)
		t.Fatalf("the migration did not return in 60 s; %s now: %v", events.StreamLegacyFacts, err)
	}
}
