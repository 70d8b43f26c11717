package projections

import (
	"fmt"
	"testing"
	"time"

	"github.com/rvp-im/rvpd/events"
)

// BenchmarkFirstLook reads, for one user after another, what a home node
// reads deciding a sign-in (the ACL, logins, views, watchers and mobile
// state) from a Home whose cache has not seen the user: a restart's wave
// of sign-ins. The store, on disk, holds 20,000 users who each have a
// login, a view, an ACL and two watchers, as users whose subscriptions
// outlived a restart have; it is closed and opened again before the
// reads, so that Pebble's block cache starts cold as well.
func BenchmarkFirstLook(b *testing.B) {
	const users = 20000
	dir := b.TempDir()
	db, err := Open(dir, Options{})
	if err != nil {
		b.Fatal(err)
	}
	h, err := OpenHome(db, "home1")
	if err != nil {
		b.Fatal(err)
	}
	user := func(i int) events.User { return events.NewUser("example.test", fmt.Sprintf("user%d", i)) }
	t0 := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	var facts []SeqFact
	seq := uint64(0)
	id := int32(0)
	add := func(f events.Fact) {
		seq++
		facts = append(facts, SeqFact{Seq: seq, Fact: f})
	}
	for i := range users {
		u, meta := user(i), events.Meta{At: t0, Actor: "bench"}
		exp := t0.Add(4 * time.Hour)
		id++
		add(&events.SubscriptionCreated{Meta: meta, Node: u, ID: id, Kind: events.NotifyPragma, CallBack: "http://10.0.0.7:5757", Lifetime: 14400, Expires: exp})
		id++
		add(&events.ViewSet{Meta: meta, Node: u, ID: id, Value: events.StateOnline, Default: events.StateOffline, Timeout: 1200, Expires: exp, Source: "10.0.0.7"})
		add(&events.ACLSet{Meta: meta, Node: u, ACEs: events.DefaultACL(u, "http://im.example.test/instmsg/aliases/"+u.Alias)})
		for j := 1; j <= 2; j++ {
			w := user((i + j) % users)
			id++
			add(&events.SubscriptionCreated{Meta: meta, Node: u, ID: id, Kind: events.NotifyPropChange, CallBack: "http://im.example.test/instmsg/aliases/" + w.Alias,
				Watcher: w, Lifetime: 14400, Expires: exp})
		}
		if len(facts) >= 4096 {
			if err := h.ApplyFacts(facts); err != nil {
				b.Fatal(err)
			}
			facts = facts[:0]
		}
	}
	if err := h.ApplyFacts(facts); err != nil {
		b.Fatal(err)
	}
	if err := db.Close(); err != nil {
		b.Fatal(err)
	}
	if db, err = Open(dir, Options{}); err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	next := users
	b.ResetTimer()
	for b.Loop() {
		if next == users {
			b.StopTimer()
			if h, err = OpenHome(db, "home1"); err != nil {
				b.Fatal(err)
			}
			next = 0
			b.StartTimer()
		}
		u := user(next)
		next++
		if _, _, err := h.ACL(u); err != nil {
			b.Fatal(err)
		}
		if l, err := h.Logins(u); err != nil || len(l) != 1 {
			b.Fatalf("logins of %s: %v %v", u, l, err)
		}
		if v, err := h.Views(u); err != nil || len(v) != 1 {
			b.Fatalf("views of %s: %v %v", u, v, err)
		}
		if n, err := h.CountWatchers(u, nil); err != nil || n != 2 {
			b.Fatalf("watchers of %s: %d %v", u, n, err)
		}
		if _, err := h.Property(u, events.PropMobileState); err != nil {
			b.Fatal(err)
		}
	}
}
