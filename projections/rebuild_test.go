package projections

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/testcluster/natstest"
)

// startJetStream starts an embedded JetStream server with rvpd's streams
// on disk, and returns a client of it.
func startJetStream(tb testing.TB) jetstream.JetStream {
	tb.Helper()
	_, js := natstest.Connect(tb, natstest.Start(tb))
	if err := EnsureStreams(context.Background(), js, StreamOptions{}); err != nil {
		tb.Fatal(err)
	}
	return js
}

// loadFacts appends facts of users signing in as the load benchmark's do
// (a login, a state, a subscription to each of 20 buddies, messages with
// their outcomes, a renewal, then a state change, a logout's ends),
// about 40 facts a user, to home's facts, and returns the last sequence.
func loadFacts(tb testing.TB, js jetstream.JetStream, home string, users int) (uint64, int) {
	tb.Helper()
	at := time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)
	user := func(i int) events.User { return events.NewUser("example.test", "user"+strconv.Itoa(i%users+1)) }
	if err := EnsureFactStream(context.Background(), js, home, StreamOptions{}); err != nil {
		tb.Fatal(err)
	}
	var futures []jetstream.PubAckFuture
	id := int32(0)
	n := 0
	add := func(f events.Fact) {
		data, err := events.Encode(f)
		if err != nil {
			tb.Fatal(err)
		}
		msg := nats.NewMsg(events.FactSubject(home, f.Subject()))
		msg.Header.Set(events.HeaderType, f.Type())
		msg.Data = data
		fut, err := js.PublishMsgAsync(msg, jetstream.WithStallWait(30*time.Second)) // room waited for on a loaded machine
		if err != nil {
			tb.Fatal(err)
		}
		futures = append(futures, fut)
		n++
	}
	for i := range users {
		u := user(i)
		meta := func() events.Meta {
			at = at.Add(time.Millisecond)
			return events.Meta{At: at, Request: fmt.Sprintf("%024x", n), Actor: "http://im.example.test/instmsg/aliases/" + u.Alias,
				Auth: "ntlm:" + u.String(), Client: "10.0.0.7", Gateway: "gw1", Home: home}
		}
		id++
		login := id
		add(&events.SubscriptionCreated{Meta: meta(), Node: u, ID: login, Kind: events.NotifyPragma, CallBack: "http://10.0.0.7:5757",
			Subscriber: "http://im.example.test/instmsg/aliases/" + u.Alias, SubscriberUser: u, NodeURL: "http://im.example.test/instmsg/aliases/" + u.Alias,
			Lifetime: 14000, Expires: at.Add(14000 * time.Second), Source: "10.0.0.7", Credential: "ntlm"})
		id++
		view := id
		add(&events.ViewSet{Meta: meta(), Node: u, ID: view, Value: "online", Default: "offline", Timeout: 1200, Expires: at.Add(20 * time.Minute), Source: "10.0.0.7"})
		var watches []int32
		for j := 1; j <= 20; j++ {
			id++
			b := user(i + j*7)
			watches = append(watches, id)
			add(&events.SubscriptionCreated{Meta: meta(), Node: b, ID: id, Kind: events.NotifyPropChange, CallBack: "http://im.example.test/instmsg/aliases/" + u.Alias,
				Watcher: u, Subscriber: "http://im.example.test/instmsg/aliases/" + u.Alias, SubscriberUser: u, NodeURL: "http://im.example.test/instmsg/aliases/" + b.Alias,
				Lifetime: 14000, Expires: at.Add(14000 * time.Second), Source: "10.0.0.7", Credential: "ntlm"})
		}
		for range 5 {
			to := user(i + 1)
			add(&events.MessageAccepted{Meta: meta(), Node: to, AckType: "DeepOr", HopCount: 1, Endpoints: 1,
				Body: []byte(`<?xml version="1.0"?><r:notification xmlns:d="DAV:" xmlns:r="http://schemas.microsoft.com/rvp/"><r:message><r:msgbody><r:mime-data><![CDATA[MIME-Version: 1.0
Content-Type: text/plain; charset=UTF-8

hello there]]></r:mime-data></r:msgbody></r:message></r:notification>`)})
			add(&events.MessageDelivered{Meta: meta(), Node: to, Status: 200, Delivered: 1})
		}
		add(&events.SubscriptionRenewed{Meta: meta(), Node: u, ID: login, Lifetime: 14000, Expires: at.Add(14000 * time.Second)})
		add(&events.ViewSet{Meta: meta(), Node: u, ID: view, Value: "busy", Default: "offline", Timeout: 1200, Expires: at.Add(20 * time.Minute), Source: "10.0.0.7"})
		if i%2 == 0 {
			// Half of them sign out: their login, view and one watch end.
			add(&events.SubscriptionEnded{Meta: meta(), Node: u, ID: login, Reason: events.EndUnsubscribed})
			add(&events.ViewEnded{Meta: meta(), Node: u, ID: view, Reason: events.EndLoggedOut})
			add(&events.SubscriptionEnded{Meta: meta(), Node: user(i + 7), ID: watches[0], Reason: events.EndExpired})
		}
		if i%4 == 0 {
			// A watch handed over, and an UNSUBSCRIBE of one not here yet,
			// its node's state awaited (a late handoff).
			id++
			add(&events.SubscriptionCreated{Meta: meta(), Node: u, ID: id, Kind: events.NotifyPropChange, CallBack: "http://10.0.0.8:5757",
				Subscriber: "http://im.example.test/instmsg/aliases/x", NodeURL: "http://im.example.test/instmsg/aliases/" + u.Alias,
				Lifetime: 14000, Expires: at.Add(14000 * time.Second), Handoff: events.HandoffOf("home0", u, 7)})
			add(&events.SubscriptionEnded{Meta: meta(), Node: u, ID: 1 << 20, Reason: events.EndUnsubscribed, Move: 7,
				By: "http://im.example.test/instmsg/aliases/" + u.Alias, ByUser: u})
		}
	}
	var last uint64
	for _, f := range futures {
		select {
		case ack := <-f.Ok():
			last = max(last, ack.Sequence)
		case err := <-f.Err():
			tb.Fatal(err)
		}
	}
	return last, n
}

// BenchmarkRebuild rebuilds a home projection from 89,000-odd facts:
// through Replay into an in-memory store (the follow loop, as verify did
// before) and through rebuild (what rvpctl verify does now), and verifies
// a live projection (rebuild and compare). It reports the facts applied
// per second.
func BenchmarkRebuild(b *testing.B) {
	js := startJetStream(b)
	last, n := loadFacts(b, js, "home1", 2500)
	ctx := context.Background()
	scratch := func(b *testing.B) (*DB, *Home) {
		db, err := Open("", Options{InMemory: true, Scratch: true})
		if err != nil {
			b.Fatal(err)
		}
		h, err := OpenHome(db, "home1")
		if err != nil {
			b.Fatal(err)
		}
		return db, h
	}
	b.Run("replay", func(b *testing.B) {
		// What verify did before rebuild: Replay into an in-memory store.
		for b.Loop() {
			db, err := Open("", Options{InMemory: true})
			if err != nil {
				b.Fatal(err)
			}
			h, err := OpenHome(db, "home1")
			if err != nil {
				b.Fatal(err)
			}
			if err := Replay(ctx, js, events.FactStream("home1"), events.FactFilter("home1"), last, h); err != nil {
				b.Fatal(err)
			}
			db.Close()
		}
		b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "facts/s")
	})
	b.Run("rebuild", func(b *testing.B) {
		for b.Loop() {
			db, h := scratch(b)
			if err := rebuild(ctx, js, events.FactStream("home1"), events.FactFilter("home1"), last, homeTarget(h), nil, time.Second); err != nil {
				b.Fatal(err)
			}
			db.Close()
		}
		b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "facts/s")
	})
	b.Run("verify", func(b *testing.B) {
		live, h := scratch(b)
		defer live.Close()
		if err := Replay(ctx, js, events.FactStream("home1"), events.FactFilter("home1"), last, h); err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			v, err := VerifyHome(ctx, js, live, "home1")
			if err != nil || !v.OK() {
				b.Fatalf("verify: %v %+v", err, v)
			}
		}
		b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "facts/s")
	})
}

// TestHistoryOnlyFacts: the facts the rebuild applies without decoding
// them change nothing in a home projection, as Home.ApplyFacts does; and
// the rebuild's result is Replay's.
func TestHistoryOnlyFacts(t *testing.T) {
	h := memoryHome(t, "home1")
	db := h.db
	for typ := range historyOnly {
		ev, err := events.Decode(typ, []byte(`{"node":{"domain":"example.test","alias":"alice"},"body":"aGk=","status":200}`))
		if err != nil {
			t.Fatal(err)
		}
		b := db.pdb.NewIndexedBatch()
		st := &pebbleHome{h: h, r: b, b: b, changed: map[events.User]uint8{}}
		if err := applyFact(st, ev.(events.Fact)); err != nil {
			t.Fatal(err)
		}
		// The next id is written when the batch is committed (Home.commit).
		if !b.Empty() || st.nextSet {
			t.Errorf("applying %s writes %d entries (next id moved: %v): it is not history only; take it out of historyOnly", typ, b.Count(), st.nextSet)
		}
		b.Close()
	}

	js := startJetStream(t)
	last, _ := loadFacts(t, js, "home1", 40)
	ctx := t.Context()
	replayed, err := OpenHome(db, "home1")
	if err != nil {
		t.Fatal(err)
	}
	if err := Replay(ctx, js, events.FactStream("home1"), events.FactFilter("home1"), last, replayed); err != nil {
		t.Fatal(err)
	}
	var got []Progress
	v, err := Verifier{Progress: func(p Progress) { got = append(got, p) }, Interval: time.Nanosecond}.Home(ctx, js, db, "home1")
	if err != nil || !v.OK() || v.Position != last || v.Keys == 0 {
		t.Fatalf("verify after Replay: %+v, %v", v, err)
	}
	if len(got) == 0 || !got[len(got)-1].Done || got[len(got)-1].Seq != last || got[len(got)-1].Applied != last {
		t.Errorf("progress: %+v, want it to end done at %d with %d applied", got, last, last)
	}
}

// TestDiff: the comparison names every key only one side has and every
// value that differs, and counts the live keys.
func TestDiff(t *testing.T) {
	live, err := Open("", Options{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	rebuilt, err := Open("", Options{InMemory: true, Scratch: true})
	if err != nil {
		t.Fatal(err)
	}
	defer rebuilt.Close()
	p := prefixOf("h", "home1")
	k := func(s string) []byte { return append(append([]byte(nil), p...), s...) }
	for _, kv := range [][2]string{{"a", "1"}, {"b", "2"}, {"d", "4"}, {"e", "5"}} {
		if err := live.pdb.Set(k(kv[0]), []byte(kv[1]), pebble.NoSync); err != nil {
			t.Fatal(err)
		}
	}
	for _, kv := range [][2]string{{"a", "1"}, {"c", "3"}, {"d", "x"}, {"e", "5"}} {
		if err := rebuilt.pdb.Set(k(kv[0]), []byte(kv[1]), pebble.NoSync); err != nil {
			t.Fatal(err)
		}
	}
	live.pdb.Set([]byte("h\x00home2\x00z"), []byte("elsewhere"), pebble.NoSync) // another prefix
	got, n, err := diff(live.pdb, rebuilt.pdb, p, 20)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("differs at %q: live \"4\", rebuilt \"x\"\nonly in live: %q = \"2\"\nonly in rebuilt: %q = \"3\"", k("d"), k("b"), k("c"))
	if got != want || n != 4 {
		t.Errorf("diff:\n%s\n(%d live keys)\nwant:\n%s\n(4)", got, n, want)
	}
	if got, _, _ := diff(live.pdb, rebuilt.pdb, p, 1); !strings.HasSuffix(got, "… and 2 more") {
		t.Errorf("diff cut at 1: %q", got)
	}
	if got, n, _ := diff(live.pdb, live.pdb, p, 20); got != "" || n != 4 {
		t.Errorf("a store with itself: %q, %d keys", got, n)
	}
}

// TestRebuildStopsOnBadFact: a rebuild that meets a fact it cannot
// apply returns its error at once, and its reader and decoders end,
// however much of the stream is left to read (enough to fill the
// channels between them and the applier).
func TestRebuildStopsOnBadFact(t *testing.T) {
	js := startJetStream(t)
	const home = "home1"
	if err := EnsureFactStream(t.Context(), js, home, StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	bad := nats.NewMsg(events.FactSubject(home, events.NewUser("example.test", "ann")))
	bad.Header.Set(events.HeaderType, "fact.no-such-thing.v1")
	bad.Data = []byte(`{}`)
	if _, err := js.PublishMsg(t.Context(), bad); err != nil {
		t.Fatal(err)
	}
	last, _ := loadFacts(t, js, home, 600) // about 24,000 facts after it
	h := memoryHome(t, home)
	// Not the test's context: a rebuild that hangs is not ended by it.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { _, err := h.CatchUp(ctx, js, last); done <- err }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "seq 1") {
			t.Errorf("catch up over a bad fact at 1: %v", err)
		}
	case <-time.After(30 * time.Second):
		cancel()
		<-done
		t.Fatal("the rebuild did not return within 30 s of a fact it could not apply; it returned once its context was cancelled")
	}
	if h.Position() != 0 {
		t.Errorf("position %d after a rebuild that failed at its first fact", h.Position())
	}
}
