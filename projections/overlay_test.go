package projections

import (
	"encoding/binary"
	"fmt"
	"maps"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rvp-im/rvpd/events"
)

// randomFacts returns n facts about a few users, ids and states, such
// that many touch the same subscriptions and views.
func randomFacts(rng *rand.Rand, n int) []events.Fact {
	users := []events.User{events.NewUser("example.test", "ann"), events.NewUser("example.test", "ben"), events.NewUser("x.test", "ann")}
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var out []events.Fact
	for i := range n {
		u := users[rng.IntN(len(users))]
		id := int32(1 + rng.IntN(12))
		meta := events.Meta{At: t0.Add(time.Duration(i) * time.Second), Actor: "t"}
		exp := meta.At.Add(time.Duration(1+rng.IntN(100)) * time.Second)
		switch rng.IntN(10) {
		case 0, 1:
			kind := events.NotifyPragma
			if rng.IntN(2) == 0 {
				kind = events.NotifyPropChange
			}
			sc := &events.SubscriptionCreated{Meta: meta, Node: u, ID: id, Kind: kind, CallBack: "http://10.0.0.1:1", Expires: exp, Lifetime: 60}
			// Its subscriber, of one of the index's keys (watchKeys).
			switch by := watchSubscribers[rng.IntN(len(watchSubscribers))]; {
			case by.user != "":
				sc.SubscriberUser, sc.Watcher, sc.Subscriber = events.NewUser("example.com", by.user), events.NewUser("example.com", by.watcher), "http://im.example.com/instmsg/aliases/"+by.user
				sc.Source = watchSources[rng.IntN(len(watchSources))]
			default:
				sc.Subscriber = by.principal
				sc.Source = watchSources[rng.IntN(len(watchSources))]
			}
			if rng.IntN(4) == 0 {
				sc.Handoff = events.HandoffOf("h0", u, uint64(1+rng.IntN(2)))
			}
			out = append(out, sc)
		case 2:
			out = append(out, &events.SubscriptionRenewed{Meta: meta, Node: u, ID: id, Lifetime: 70, Expires: exp})
		case 3:
			se := &events.SubscriptionEnded{Meta: meta, Node: u, ID: id, Reason: events.EndExpired}
			if rng.IntN(3) == 0 {
				// Asked for while its node's state was awaited.
				by := endedBys[rng.IntN(len(endedBys))]
				se.Reason, se.Move, se.By, se.ByUser = events.EndUnsubscribed, uint64(1+rng.IntN(2)), by.principal, by.user
			}
			out = append(out, se)
		case 4, 5:
			vs := &events.ViewSet{Meta: meta, Node: u, ID: id, Value: "busy", Default: "offline", Timeout: 60, Expires: exp}
			if rng.IntN(4) == 0 {
				// Handed over, renumbered: known by another id, set before.
				vs.Known, vs.Set = id+20, meta.At.Add(-time.Minute)
			}
			out = append(out, vs)
		case 6:
			out = append(out, &events.ViewEnded{Meta: meta, Node: u, ID: id, Reason: events.EndOffline})
		case 7:
			out = append(out, &events.ACLSet{Meta: meta, Node: u, ACEs: []events.ACE{{Credentials: []string{"any"}, Grant: []string{"presence"}}}})
		case 8:
			prop := events.PropMobileState
			if rng.IntN(2) == 0 {
				prop = events.PropMobileDescription
			}
			out = append(out, &events.PropertySet{Meta: meta, Node: u, Value: events.PropValue{Prop: prop, Value: fmt.Sprint(rng.IntN(3))}})
		case 9:
			// A departure: of a newer version, its ACL and properties end.
			out = append(out, &events.UserDeparted{Meta: meta, Node: u, To: "h2", Move: uint64(i + 1), Clears: rng.IntN(3) > 0})
		}
	}
	return out
}

func toMsgs(t *testing.T, facts []events.Fact, first uint64) []Msg {
	t.Helper()
	var out []Msg
	for i, f := range facts {
		data, err := events.Encode(f)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, Msg{Seq: first + uint64(i), Subject: events.FactSubject("h1", f.Subject()), Type: f.Type(), Data: data})
	}
	return out
}

// watchSubscribers are the subscribers of randomFacts' subscriptions:
// users of ours for themselves or another, principals of two other
// organisations, and none.
var watchSubscribers = []struct{ user, watcher, principal string }{
	{user: "a", watcher: "a"}, {user: "a", watcher: "b"}, {user: "b", watcher: "b"},
	{principal: "http://im.acme.test/instmsg/aliases/x"}, {principal: "http://acme.test:8080/instmsg/aliases/y"},
	{principal: "http://im.other.test/instmsg/aliases/x"}, {principal: ""},
}

// endedBys are the requesters of randomFacts' ends of subscriptions not
// there: a user of ours and its principal, a principal only, a user only.
var endedBys = []struct {
	user      events.User
	principal string
}{
	{events.NewUser("example.com", "a"), "http://im.example.com/instmsg/aliases/a"},
	{principal: "http://im.acme.test/instmsg/aliases/x"},
	{user: events.NewUser("example.com", "b")},
}

// watchSources are the client addresses randomFacts' subscriptions come
// from: two IPv4 networks, two addresses of one IPv6 /64, and none.
var watchSources = []string{"192.0.2.1", "198.51.100.7", "2001:db8::1", "2001:db8::ffff:2", ""}

// watchKeys are the index keys watchSubscribers' subscriptions are
// counted under, and one none is.
func watchKeys() []string {
	out := []string{ForeignKey, NetworkKey("192.0.2.1"), NetworkKey("198.51.100.7"), NetworkKey("2001:db8::/64"), NetworkKey("203.0.113.1")}
	for _, by := range watchSubscribers {
		var u, w events.User
		if by.user != "" {
			u, w = events.NewUser("example.com", by.user), events.NewUser("example.com", by.watcher)
		}
		out = append(out, SubscriberKey(u, w, by.principal))
	}
	return out
}

// users0 is a user of randomFacts'.
var users0 = events.NewUser("example.test", "ann")

// sameState compares every read of a and b for the users of facts.
func sameState(t *testing.T, a, b HomeReader, facts []events.Fact) {
	t.Helper()
	users := map[events.User]bool{}
	for _, f := range facts {
		users[f.Subject()] = true
	}
	check := func(what string, x, y any) {
		t.Helper()
		if !reflect.DeepEqual(x, y) {
			t.Fatalf("%s differ:\n%+v\n%+v", what, x, y)
		}
	}
	na, _ := a.NextID()
	nb, _ := b.NextID()
	check("next id", na, nb)
	// A subscriber's watches across the nodes: as many as the records of
	// the users' nodes say (the nodes of randomFacts' facts share ids),
	// and alike, up to a bound.
	for _, k := range watchKeys() {
		want, wantBut3 := 0, 0
		for u := range users {
			subs, err := a.Watchers(u)
			if err != nil {
				t.Fatal(err)
			}
			for i := range subs {
				if strings.HasPrefix(k, userPrefix) && slices.Contains(WatchKeys(&subs[i]), k) {
					want++
					if subs[i].ID != 3 || u != users0 {
						wantBut3++
					}
				}
			}
		}
		but3 := func(u events.User, id int32) bool { return u == users0 && id == 3 }
		for _, r := range []HomeReader{a, b} {
			for _, upTo := range []int{0, 1, 2} {
				n, err1 := r.CountWatching(k, upTo, nil)
				m, err2 := r.CountWatching(k, upTo, but3)
				if err1 != nil || err2 != nil {
					t.Fatal(err1, err2)
				}
				w, w3 := want, wantBut3
				if upTo > 0 {
					n, m, w, w3 = min(n, upTo), min(m, upTo), min(w, upTo), min(w3, upTo)
				}
				check(fmt.Sprintf("watching %s up to %d (%T same as a: %v)", k, upTo, r, r == a), n, w)
				check(fmt.Sprintf("watching %s up to %d but %s's 3", k, upTo, users0), m, w3)
			}
		}
	}
	for u := range users {
		for _, read := range []struct {
			name string
			f    func(HomeReader) (any, error)
		}{
			{"subscriptions", func(r HomeReader) (any, error) { return r.Subscriptions(u) }},
			{"logins", func(r HomeReader) (any, error) { return r.Logins(u) }},
			{"watchers", func(r HomeReader) (any, error) { return r.Watchers(u) }},
			{"watcher count", func(r HomeReader) (any, error) { return r.CountWatchers(u, nil) }},
			{"watcher count but 3", func(r HomeReader) (any, error) { return r.CountWatchers(u, func(id int32) bool { return id == 3 }) }},
			{"views", func(r HomeReader) (any, error) { return r.Views(u) }},
			{"acl", func(r HomeReader) (any, error) { a, ok, err := r.ACL(u); return []any{a, ok}, err }},
			{"property", func(r HomeReader) (any, error) { return r.Property(u, events.PropMobileState) }},
			{"description", func(r HomeReader) (any, error) { return r.Property(u, events.PropMobileDescription) }},
			{"departed", func(r HomeReader) (any, error) { return r.Departed(u) }},
		} {
			x, err1 := read.f(a)
			y, err2 := read.f(b)
			if err1 != nil || err2 != nil {
				t.Fatal(err1, err2)
			}
			check(u.String()+" "+read.name, norm(x), norm(y))
		}
		for _, k := range watchKeys() {
			for _, read := range []struct {
				name string
				f    func(HomeReader) (any, error)
			}{
				{"watchers by", func(r HomeReader) (any, error) { return r.WatchersBy(u, k) }},
				{"watcher count by", func(r HomeReader) (any, error) { return r.CountWatchersBy(u, k, nil) }},
				{"watcher count by but 3", func(r HomeReader) (any, error) {
					return r.CountWatchersBy(u, k, func(id int32) bool { return id == 3 })
				}},
			} {
				x, err1 := read.f(a)
				y, err2 := read.f(b)
				if err1 != nil || err2 != nil {
					t.Fatal(err1, err2)
				}
				check(u.String()+" "+read.name+" "+k, norm(x), norm(y))
			}
		}
		for id := int32(1); id <= 12; id++ {
			for move := uint64(1); move <= 2; move++ {
				for _, by := range endedBys {
					for _, name := range []string{EndedBy(by.user, ""), EndedBy(events.User{}, by.principal)} {
						e1, err1 := a.Ended(u, move, id, name)
						e2, err2 := b.Ended(u, move, id, name)
						if err1 != nil || err2 != nil {
							t.Fatal(err1, err2)
						}
						check(fmt.Sprintf("%s ended %d under %d by %s", u, id, move, name), e1, e2)
					}
				}
			}
			s1, _ := a.Subscription(u, id)
			s2, _ := b.Subscription(u, id)
			check("subscription", s1, s2)
			v1, _ := a.View(u, id)
			v2, _ := b.View(u, id)
			check("view", v1, v2)
		}
		for move := uint64(1); move <= 2; move++ {
			n1, err1 := a.EndedCount(u, move)
			n2, err2 := b.EndedCount(u, move)
			if err1 != nil || err2 != nil {
				t.Fatal(err1, err2)
			}
			check(fmt.Sprintf("%s ends counted under %d", u, move), n1, n2)
		}
	}
}

// norm makes nil and empty slices alike.
func norm(x any) any {
	v := reflect.ValueOf(x)
	if v.Kind() == reflect.Slice && v.Len() == 0 {
		return nil
	}
	return x
}

// TestOverlayMatchesPebble: the same facts applied in memory and in
// Pebble read alike; an overlay over a projection that lags reads as the
// projection will, and forgets what the projection has applied.
func TestOverlayMatchesPebble(t *testing.T) {
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, 7))
		facts := randomFacts(rng, 150)
		db, err := Open("", Options{InMemory: true})
		if err != nil {
			t.Fatal(err)
		}
		h, err := OpenHome(db, "h1")
		if err != nil {
			t.Fatal(err)
		}
		mem := NewOverlay(nil)
		for _, f := range facts {
			if err := mem.Apply(0, f); err != nil {
				t.Fatal(err)
			}
		}
		// Pebble has the first part; the overlay over it holds the rest.
		cut := rng.IntN(len(facts))
		if err := h.ApplyBatch(toMsgs(t, facts[:cut], 1)); err != nil {
			t.Fatal(err)
		}
		over := NewOverlay(h)
		for i, f := range facts[cut:] {
			if err := over.Apply(uint64(cut+1+i), f); err != nil {
				t.Fatal(err)
			}
		}
		sameState(t, mem, over, facts)
		// The projection catches up in two steps; the overlay forgets.
		mid := cut + (len(facts)-cut)/2
		if err := h.ApplyBatch(toMsgs(t, facts[cut:mid], uint64(cut+1))); err != nil {
			t.Fatal(err)
		}
		sameState(t, mem, over, facts) // applied, not yet forgotten
		sameWatching(t, h)
		over.Forget(uint64(mid))
		sameState(t, mem, over, facts)
		if err := h.ApplyBatch(toMsgs(t, facts[mid:], uint64(mid+1))); err != nil {
			t.Fatal(err)
		}
		over.Forget(uint64(len(facts)))
		if over.Len() != 0 {
			t.Fatalf("seed %d: %d changes left after the projection applied them all", seed, over.Len())
		}
		sameState(t, mem, over, facts)
		sameState(t, mem, h, facts)
		sameWatching(t, h)
		db.Close()
	}
}

// TestOverlayCountsNewWatchers: watchers in flight over a projection
// that has others are counted once, whether the projection has applied
// them yet or not (a count that skips the scan when they are new).
func TestOverlayCountsNewWatchers(t *testing.T) {
	h := memoryHome(t, "h1")
	u := events.NewUser("example.test", "ann")
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	watch := func(id int32) events.Fact {
		return &events.SubscriptionCreated{Meta: events.Meta{At: t0}, Node: u, ID: id, Kind: events.NotifyPropChange, CallBack: "http://10.0.0.1:1", Expires: t0.Add(time.Hour)}
	}
	base := []events.Fact{watch(1), watch(2), watch(3)}
	if err := h.ApplyBatch(toMsgs(t, base, 1)); err != nil {
		t.Fatal(err)
	}
	over := NewOverlay(h)
	count := func(want int) {
		t.Helper()
		if n, err := over.CountWatchers(u, nil); err != nil || n != want {
			t.Fatalf("count %d, %v; want %d", n, err, want)
		}
	}
	count(3)
	inFlight := []events.Fact{watch(4), watch(5)}
	for i, f := range inFlight {
		if err := over.Apply(uint64(4+i), f); err != nil {
			t.Fatal(err)
		}
	}
	count(5)
	if err := h.ApplyBatch(toMsgs(t, inFlight, 4)); err != nil {
		t.Fatal(err)
	}
	count(5) // applied, not yet forgotten
	over.Forget(5)
	count(5)
	end := &events.SubscriptionEnded{Meta: events.Meta{At: t0}, Node: u, ID: 2, Reason: events.EndExpired}
	if err := over.Apply(6, end); err != nil {
		t.Fatal(err)
	}
	count(4)
}

// TestHomeCounts: the users online (with a login subscription) and the
// subscriptions, logins and watches, counted from the keys; views and
// other parts of a user's state are not subscriptions.
func TestHomeCounts(t *testing.T) {
	h := memoryHome(t, "h1")
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	sub := func(alias string, id int32, kind string) events.Fact {
		return &events.SubscriptionCreated{Meta: events.Meta{At: t0}, Node: events.NewUser("example.test", alias), ID: id, Kind: kind,
			CallBack: "http://10.0.0.1:1/" + alias, Expires: t0.Add(time.Hour)}
	}
	view := &events.ViewSet{Meta: events.Meta{At: t0}, Node: events.NewUser("example.test", "cy"), ID: 9, Value: "online", Default: "offline", Timeout: 600, Expires: t0.Add(time.Hour)}
	facts := []events.Fact{
		sub("ann", 1, events.NotifyPragma), sub("ann", 2, events.NotifyPragma), // two logins: one user online
		sub("ann", 3, events.NotifyPropChange),
		sub("bob", 4, events.NotifyPropChange), // watched, not online
		sub("a.b", 5, events.NotifyPragma),     // a dot in the alias, escaped in keys
		view,
	}
	if err := h.ApplyBatch(toMsgs(t, facts, 1)); err != nil {
		t.Fatal(err)
	}
	if online, subs, err := h.Counts(); err != nil || online != 2 || subs != 5 {
		t.Errorf("Counts: %d online, %d subscriptions, %v; want 2 and 5", online, subs, err)
	}
}

// memoryHome opens home's projection in a Pebble held in memory, closed
// when the test ends.
func memoryHome(t *testing.T, home string) *Home {
	t.Helper()
	db, err := Open("", Options{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	h, err := OpenHome(db, home)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// users returns the users facts are about, in a fixed order.
func users(facts []events.Fact) []events.User {
	var out []events.User
	seen := map[events.User]bool{}
	for _, f := range facts {
		if u := f.Subject(); !seen[u] {
			seen[u] = true
			out = append(out, u)
		}
	}
	return out
}

// firstRead reads one part of u's state, chosen by rng, from a and b, and
// fails t when they differ.
func firstRead(t *testing.T, rng *rand.Rand, u events.User, a, b HomeReader) {
	t.Helper()
	reads := []func(HomeReader) (any, error){
		func(r HomeReader) (any, error) { return r.Logins(u) },
		func(r HomeReader) (any, error) { return r.Watchers(u) },
		func(r HomeReader) (any, error) { return r.CountWatchers(u, nil) },
		func(r HomeReader) (any, error) { return r.Views(u) },
		func(r HomeReader) (any, error) { a, ok, err := r.ACL(u); return []any{a, ok}, err },
		func(r HomeReader) (any, error) { return r.Property(u, events.PropMobileState) },
		func(r HomeReader) (any, error) { return r.Property(u, events.PropMobileDescription) },
		func(r HomeReader) (any, error) { return r.Departed(u) },
	}
	i := rng.IntN(len(reads))
	x, err1 := reads[i](a)
	y, err2 := reads[i](b)
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	if !reflect.DeepEqual(norm(x), norm(y)) {
		t.Fatalf("%s, read %d first: %+v, cached %+v", u, i, x, y)
	}
}

// TestHomeCacheMatchesPebble: a Home's reads through its cache equal
// Pebble's own as batches of facts are applied, starting from users it
// holds nothing of (whose parts it caches as empty after one look), and
// so do a fresh Home's on the same store.
func TestHomeCacheMatchesPebble(t *testing.T) {
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, 11))
		facts := randomFacts(rng, 150)
		h := memoryHome(t, "h1")
		sameState(t, h.read(), h, facts) // nothing yet: cached as empty
		for next := 0; next < len(facts); {
			n := min(1+rng.IntN(20), len(facts)-next)
			if err := h.ApplyBatch(toMsgs(t, facts[next:next+n], uint64(next+1))); err != nil {
				t.Fatal(err)
			}
			next += n
			sameWatching(t, h) // before the reads: as the batch left it
			sameState(t, h.read(), h, facts)
			// A Home opened afresh on the same store (a restart) has no
			// entries: its first look at each user finds what is there.
			fresh, err := OpenHome(h.db, "h1")
			if err != nil {
				t.Fatal(err)
			}
			// Whichever part is read first, the one look fills the others.
			for _, u := range users(facts) {
				firstRead(t, rng, u, h.read(), fresh)
			}
			sameState(t, h.read(), fresh, facts)
			sameWatching(t, fresh)
		}
		// Reset, and rebuilt from part of the facts: the counts it kept
		// are gone, and it counts the keys there are.
		if err := h.Reset(); err != nil {
			t.Fatal(err)
		}
		cut := rng.IntN(len(facts))
		if err := h.ApplyBatch(toMsgs(t, facts[:cut], 1)); err != nil {
			t.Fatal(err)
		}
		sameWatching(t, h)
		sameState(t, h.read(), h, facts[:cut])
	}
}

// sameWatching checks that each count of a subscriber's watches h's cache
// holds is the keys Pebble has of hers: those of watchKeys' subscribers,
// which it reads (and caches, if it had none), and every other.
func sameWatching(t *testing.T, h *Home) {
	t.Helper()
	h.cache.mu.RLock()
	cached := maps.Clone(h.cache.watching)
	h.cache.mu.RUnlock()
	for _, k := range watchKeys() {
		if !strings.HasPrefix(k, userPrefix) {
			continue
		}
		by := newKeyHash().add(k)
		n, err := h.CountWatching(k, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		if c, ok := cached[by]; ok && c != n {
			t.Fatalf("%s: cached count %d read as %d", k, c, n)
		}
		cached[by] = n
	}
	for by, n := range cached {
		keys, err := h.read().countWatching(by, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		if n != keys {
			t.Fatalf("subscriber %x: cached count of watches %d, %d keys", uint64(by), n, keys)
		}
	}
}

// TestWatchingCacheEnd: a batch moves the subscribers' cached counts of
// watches by what it added and removed once committed; one that failed
// drops those it touched (it may have changed them, or not), and a count
// that reaches 0 is dropped. Those not read are not made.
func TestWatchingCacheEnd(t *testing.T) {
	c := newUserCache()
	const a, b, z, none = keyHash(1), keyHash(2), keyHash(3), keyHash(4)
	c.putWatching(a, c.gen, 3)
	c.putWatching(b, c.gen, 5)
	c.putWatching(z, c.gen, 1)
	c.begin()
	c.putWatching(none, c.gen, 7) // during a batch: not kept
	c.end(nil, nil, map[keyHash]int{a: 2, b: -1, z: -1, none: 1}, true)
	want := map[keyHash]int{a: 5, b: 4}
	if !maps.Equal(c.watching, want) {
		t.Fatalf("committed: %v, want %v", c.watching, want)
	}
	c.begin()
	c.end(nil, nil, map[keyHash]int{a: 1, b: 0}, false)
	if len(c.watching) != 0 {
		t.Fatalf("failed: %v kept", c.watching)
	}
}

// TestCountWatchingCached: a subscriber's count of watches, read once, is
// kept: a later count reads no keys (a stray one written behind the
// projection's back is not seen), nor does an overlay's over it whose
// watches of hers in flight are new (their ids past the projection's
// next id). One that leaves some out, or an overlay that ended one of
// hers the projection has, counts her keys.
func TestCountWatchingCached(t *testing.T) {
	h := memoryHome(t, "h1")
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	ben := events.NewUser("example.com", "ben")
	key := SubscriberKey(ben, ben, "")
	watch := func(node string, id int32) events.Fact {
		return &events.SubscriptionCreated{Meta: events.Meta{At: t0}, Node: events.NewUser("example.test", node), ID: id, Kind: events.NotifyPropChange,
			CallBack: "http://10.0.0.1:1", Expires: t0.Add(time.Hour), SubscriberUser: ben, Watcher: ben}
	}
	if err := h.ApplyBatch(toMsgs(t, []events.Fact{watch("n1", 1), watch("n2", 2)}, 1)); err != nil {
		t.Fatal(err)
	}
	count := func(r HomeReader, except func(events.User, int32) bool, want int) {
		t.Helper()
		if n, err := r.CountWatching(key, 0, except); err != nil || n != want {
			t.Fatalf("%T counts %d (%v), want %d", r, n, err, want)
		}
	}
	count(h, nil, 2)
	// A stray key of ben's, on node n9.
	stray := binary.BigEndian.AppendUint32(h.appendWatchingKey(nil, newKeyHash().add(key), events.NewUser("example.test", "n9")), 9)
	if err := h.db.pdb.Set(stray, nil, nil); err != nil {
		t.Fatal(err)
	}
	count(h, nil, 2)
	none := func(events.User, int32) bool { return false }
	count(h, none, 3) // read from the keys
	over := NewOverlay(h)
	if err := over.Apply(3, watch("n3", 3)); err != nil {
		t.Fatal(err)
	}
	count(over, nil, 3)
	count(over, none, 4)
	end := &events.SubscriptionEnded{Meta: events.Meta{At: t0}, Node: events.NewUser("example.test", "n1"), ID: 1, Reason: events.EndUnsubscribed}
	if err := over.Apply(4, end); err != nil {
		t.Fatal(err)
	}
	count(over, nil, 3) // n2, n3 and the stray
}

// TestOverlayWatchingDuringCommit: a subscriber's count of watches read
// while the batch that applies one of the overlay's is being committed
// counts it once, whether the projection's cache holds her count (from
// before the batch) or not (read from Pebble, with it).
func TestOverlayWatchingDuringCommit(t *testing.T) {
	for _, cached := range []bool{false, true} {
		h := memoryHome(t, "h1")
		t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
		ben := events.NewUser("example.com", "ben")
		key := SubscriberKey(ben, ben, "")
		watch := func(node string, id int32) events.Fact {
			return &events.SubscriptionCreated{Meta: events.Meta{At: t0}, Node: events.NewUser("example.test", node), ID: id, Kind: events.NotifyPropChange,
				CallBack: "http://10.0.0.1:1", Expires: t0.Add(time.Hour), SubscriberUser: ben, Watcher: ben}
		}
		if err := h.ApplyFacts([]SeqFact{{Seq: 1, Fact: watch("n1", 1)}}); err != nil {
			t.Fatal(err)
		}
		if next, err := h.NextID(); err != nil || next != 2 {
			t.Fatalf("next id %d (%v), want 2", next, err)
		}
		if cached {
			if n, err := h.CountWatching(key, 0, nil); err != nil || n != 1 {
				t.Fatalf("count %d (%v), want 1", n, err)
			}
		}
		over := NewOverlay(h)
		if err := over.Apply(2, watch("n2", 2)); err != nil { // in flight
			t.Fatal(err)
		}
		got, err := -1, error(nil)
		h.afterCommit = func() { got, err = over.CountWatching(key, 0, nil) }
		if err := h.ApplyFacts([]SeqFact{{Seq: 2, Fact: watch("n2", 2)}}); err != nil {
			t.Fatal(err)
		}
		h.afterCommit = nil
		if err != nil || got != 2 {
			t.Errorf("cached %v: watches counted while their batch is committed: %d (%v), want 2", cached, got, err)
		}
		if n, err := over.CountWatching(key, 0, nil); err != nil || n != 2 {
			t.Errorf("cached %v: watches counted once committed: %d (%v), want 2", cached, n, err)
		}
		sameWatching(t, h)
	}
}

// TestCacheCompact: compacting the cache copies each entry and its lists
// to memory of their own, and changes nothing a read sees, between
// batches as they are applied; it copies nothing while parts are being
// stored, or when none were since it last did.
func TestCacheCompact(t *testing.T) {
	for seed := range uint64(10) {
		rng := rand.New(rand.NewPCG(seed, 13))
		facts := randomFacts(rng, 150)
		h := memoryHome(t, "h1")
		for next := 0; next < len(facts); {
			n := min(1+rng.IntN(20), len(facts)-next)
			if err := h.ApplyBatch(toMsgs(t, facts[next:next+n], uint64(next+1))); err != nil {
				t.Fatal(err)
			}
			next += n
			sameState(t, h.read(), h, facts) // fills the cache
			before := map[events.User]cachedUser{}
			ptrs := map[events.User]*cachedUser{}
			h.cache.mu.RLock()
			for u, e := range h.cache.users {
				before[u], ptrs[u] = *e, e
			}
			stored := h.cache.stored
			h.cache.mu.RUnlock()
			if stored == 0 { // the batch changed nothing read
				if copied := h.cache.compact(0); copied != 0 {
					t.Fatalf("seed %d: compacted with nothing stored: %d copied", seed, copied)
				}
				continue
			}
			if copied := h.cache.compact(0); copied != 0 {
				t.Fatalf("seed %d: compacted while the parts were being stored: %d copied", seed, copied)
			}
			if copied := h.cache.compact(0); copied != len(before) {
				t.Fatalf("seed %d: compact copied %d entries of %d", seed, copied, len(before))
			}
			h.cache.mu.RLock()
			for u, e := range h.cache.users {
				if e == ptrs[u] {
					t.Errorf("seed %d: %s's entry not copied", seed, u)
				}
				if !reflect.DeepEqual(*e, before[u]) {
					t.Errorf("seed %d: %s's entry %+v, compacted %+v", seed, u, before[u], *e)
				}
				if len(e.logins) > 0 && &e.logins[0] == &before[u].logins[0] ||
					len(e.views) > 0 && &e.views[0] == &before[u].views[0] ||
					len(e.acl) > 0 && &e.acl[0] == &before[u].acl[0] {
					t.Errorf("seed %d: %s's lists not copied", seed, u)
				}
				for i, a := range e.acl {
					was := before[u].acl[i]
					if len(a.Credentials) > 0 && &a.Credentials[0] == &was.Credentials[0] ||
						len(a.Grant) > 0 && &a.Grant[0] == &was.Grant[0] {
						t.Errorf("seed %d: %s's ACL entry %d's lists not copied", seed, u, i)
					}
				}
			}
			h.cache.mu.RUnlock()
			if copied := h.cache.compact(0); copied != 0 {
				t.Fatalf("seed %d: compacted again with nothing stored since: %d copied", seed, copied)
			}
			sameState(t, h.read(), h, facts)
		}
	}
}

// TestCacheCompactWaves: compact copies once a wave of stores is over,
// never during a steady flow of them, however long.
func TestCacheCompactWaves(t *testing.T) {
	c := newUserCache()
	var us []events.User
	for i := range 100 {
		u := events.NewUser("example.test", fmt.Sprint("u", i))
		us = append(us, u)
		c.putAll(u, c.gen, cachedUser{})
	}
	store := func(n int) {
		for i := range n {
			c.put(us[i%len(us)], partLogins, c.gen, func(e *cachedUser) { e.logins = nil })
		}
	}
	if n := c.compact(0); n != 0 {
		t.Fatalf("compacted as the entries were made: %d", n)
	}
	if n := c.compact(0); n != 100 {
		t.Fatalf("the wave of 100 entries is over: %d copied, want 100", n)
	}
	for i := range 50 {
		store(10)
		if n := c.compact(0); n != 0 {
			t.Fatalf("call %d of a steady 10 stores a call: %d copied", i, n)
		}
	}
	store(1000)
	if n := c.compact(0); n != 0 {
		t.Fatalf("compacted in the middle of a wave: %d", n)
	}
	store(200) // the wave ebbs: not yet to a tenth of its peak
	if n := c.compact(0); n != 0 {
		t.Fatalf("compacted as the wave ebbs: %d", n)
	}
	store(5)
	if n := c.compact(0); n != 100 {
		t.Fatalf("the wave is over: %d copied, want 100", n)
	}
}

// TestCacheCopyConcurrent: copying every entry while batches are applied
// and read (-race) changes nothing any read sees.
func TestCacheCopyConcurrent(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 17))
	facts := randomFacts(rng, 200)
	h := memoryHome(t, "h1")
	done := make(chan struct{})
	copied := make(chan int)
	go func() {
		n := 0
		for {
			select {
			case <-done:
				copied <- n
				return
			default:
				n += h.cache.copyAll()
			}
		}
	}()
	for next := 0; next < len(facts); {
		n := min(1+rng.IntN(10), len(facts)-next)
		if err := h.ApplyBatch(toMsgs(t, facts[next:next+n], uint64(next+1))); err != nil {
			t.Fatal(err)
		}
		next += n
		sameState(t, h.read(), h, facts)
	}
	close(done)
	if n := <-copied; n == 0 {
		t.Error("no entry was copied while the batches were applied")
	}
}

// TestOverlayCountDuringCommit: a count of watchers read while the batch
// that applies one of the overlay's is being committed, for a user the
// cache has no entry of (read from Pebble at once), counts it once: a
// next id from before the batch must not come with a count read from
// Pebble after it (Overlay.baseWatchers takes the overlay's ids at or
// past the next id as not in the count).
func TestOverlayCountDuringCommit(t *testing.T) {
	h := memoryHome(t, "h1")
	u := events.NewUser("example.test", "ann")
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	watch := func(id int32) events.Fact {
		return &events.SubscriptionCreated{Meta: events.Meta{At: t0}, Node: u, ID: id, Kind: events.NotifyPropChange, CallBack: "http://10.0.0.1:1", Expires: t0.Add(time.Hour)}
	}
	if err := h.ApplyFacts([]SeqFact{{Seq: 1, Fact: watch(1)}}); err != nil {
		t.Fatal(err)
	}
	if next, err := h.NextID(); err != nil || next != 2 { // known, as a home node's is after its first decision
		t.Fatalf("next id %d (%v), want 2", next, err)
	}
	over := NewOverlay(h)
	if err := over.Apply(2, watch(2)); err != nil { // in flight
		t.Fatal(err)
	}
	got, err := -1, error(nil)
	h.afterCommit = func() { got, err = over.CountWatchers(u, nil) }
	if err := h.ApplyFacts([]SeqFact{{Seq: 2, Fact: watch(2)}}); err != nil {
		t.Fatal(err)
	}
	if err != nil || got != 2 {
		t.Errorf("watchers counted while their batch is committed: %d (%v), want 2", got, err)
	}
	h.afterCommit = nil
	if n, err := over.CountWatchers(u, nil); err != nil || n != 2 {
		t.Errorf("watchers counted once committed: %d (%v), want 2", n, err)
	}
}
