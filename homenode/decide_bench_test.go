package homenode

import (
	"fmt"
	"testing"
	"time"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
)

// benchWorld is a home server of n users in Pebble, each signed in, each
// watching the first (the star).
func benchWorld(b *testing.B, n int) (*world, *projections.DB) {
	b.Helper()
	db, err := projections.Open("", projections.Options{InMemory: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	h, err := projections.OpenHome(db, testHome)
	if err != nil {
		b.Fatal(err)
	}
	w := newWorld(&testing.T{})
	w.t = nil
	var msgs []projections.Msg
	seq := uint64(0)
	add := func(f events.Fact) {
		seq++
		data, _ := events.Encode(f)
		msgs = append(msgs, projections.Msg{Seq: seq, Type: f.Type(), Data: data})
	}
	meta := events.Meta{At: t0, Actor: "bench"}
	id := int32(0)
	star := user("u0000")
	for i := range n {
		a := fmt.Sprintf("u%04d", i)
		u := user(a)
		w.dir.users[u] = &projections.UserRecord{User: u, Home: testHome, DisplayName: a, Enabled: true}
		id++
		add(&events.SubscriptionCreated{Meta: meta, Node: u, ID: id, Kind: events.NotifyPragma, CallBack: fmt.Sprintf("http://10.0.%d.%d:5000", i/250, i%250),
			Subscriber: nodeURL(a), SubscriberUser: u, NodeURL: nodeURL(a), Lifetime: 14400, Expires: t0.Add(4 * time.Hour), Source: "10.0.0.1", Credential: "ntlm"})
		id++
		add(&events.SubscriptionCreated{Meta: meta, Node: star, ID: id, Kind: events.NotifyPropChange, CallBack: nodeURL(a), Watcher: u,
			Subscriber: nodeURL(a), SubscriberUser: u, NodeURL: nodeURL("u0000"), Lifetime: 14400, Expires: t0.Add(4 * time.Hour), Source: "10.0.0.1", Credential: "ntlm"})
	}
	if err := h.ApplyBatch(msgs); err != nil {
		b.Fatal(err)
	}
	w.st = projections.NewOverlay(h)
	return w, db
}

// BenchmarkDecideFanout: the decision of a change of presence of a user
// with 1,000 watchers, each signed in once, against Pebble (the NOTIFYs
// it builds included).
func BenchmarkDecideFanout(b *testing.B) {
	w, _ := benchWorld(b, 1000)
	// Each change names the view the one before made, as a client names
	// the view id of its lease: one view, from busy to online and back.
	states := []string{"busy", "online"}
	i, view := 0, int32(0)
	for b.Loop() {
		d, err := decide(w.view(), w.policy, &events.PropPatch{Req: w.req(fmt.Sprint("p", i), "u0000", "u0000", "10.0.0.1"),
			State: &events.StateUpdate{Value: states[i%2], Default: "offline", Timeout: 600, ViewID: view}}, w.now)
		if err != nil || len(d.notes) != 1000 {
			b.Fatalf("change %d: %v, %d notes", i, err, len(d.notes))
		}
		w.st.Apply(0, d.facts[0])
		view = d.reply.Lease.ViewID
		i++
	}
}

// BenchmarkDecideWatch: the decision of a new watch of a signed-in user
// (as at sign-in, twenty a user), against Pebble.
func BenchmarkDecideWatch(b *testing.B) {
	benchWatch(b, func(i int) string { return fmt.Sprintf("u%04d", 1+(i+1)%999) })
}

// BenchmarkDecideWatchStar: the decision of a new watch of a user 1,000
// others watch already (as when they sign in again after a restart),
// against Pebble: the bound per subscriber reads that subscriber's
// watches of the star, not the star's every watcher.
func BenchmarkDecideWatchStar(b *testing.B) {
	benchWatch(b, func(int) string { return "u0000" })
}

// benchWatch decides new watches, the i-th of node(i) by one of 999
// users in turn, in benchWorld's home server of 1,000.
func benchWatch(b *testing.B, node func(i int) string) {
	w, _ := benchWorld(b, 1000)
	i := 0
	for b.Loop() {
		i++
		a := fmt.Sprintf("u%04d", 1+i%999)
		d, err := decide(w.view(), w.policy, &events.Subscribe{Req: w.req(fmt.Sprint("s", i), a, node(i), "10.0.0.1"),
			NotificationType: events.NotifyPropChange, CallBack: nodeURL(a), CallBackUser: user(a), Lifetime: 14400}, w.now)
		if err != nil || d.reply.Status != 207 {
			b.Fatalf("%v %+v", err, d.reply)
		}
	}
}
