package projections

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
)

// appendDirectory appends directory events to js's directory stream.
func appendDirectory(t testing.TB, js jetstream.JetStream, evs ...events.DirectoryEvent) {
	t.Helper()
	for _, ev := range evs {
		data, err := events.Encode(ev)
		if err != nil {
			t.Fatal(err)
		}
		msg := nats.NewMsg(ev.DirSubject())
		msg.Header.Set(events.HeaderType, ev.Type())
		msg.Data = data
		if _, err := js.PublishMsg(context.Background(), msg); err != nil {
			t.Fatal(err)
		}
	}
}

// TestDirectoryAheadOfItsStream: a directory projection whose position
// is past the end of the directory stream it is read up to date from was
// written from another stream (a NATS store restored from an older
// backup, or made afresh, under a data directory kept). Read up to date
// (WhileFollowing, as rvpd does before its roles start), it holds what
// that stream holds, not the other's records with the events under its
// sequences skipped.
func TestDirectoryAheadOfItsStream(t *testing.T) {
	ctx := context.Background()
	db, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	user := func(alias string) *events.UserEnabled {
		return &events.UserEnabled{Meta: events.Meta{At: at}, User: events.NewUser("example.test", alias), Home: "home1"}
	}
	follow := FollowConfig{Stream: events.StreamDirectory, Filter: events.DirectoryFilter}

	old := startJetStream(t)
	appendDirectory(t, old, user("ann"), user("ben"), user("cy"))
	dir, err := OpenDirectory(db)
	if err != nil {
		t.Fatal(err)
	}
	if err := WhileFollowing(ctx, old, follow, dir, func() error { return nil }); err != nil {
		t.Fatal(err)
	}
	if dir.Position() != 3 {
		t.Fatalf("position %d after the first stream, want 3", dir.Position())
	}

	// Another stream, shorter: its events are under sequences the
	// projection has passed.
	fresh := startJetStream(t)
	appendDirectory(t, fresh, user("dot"))
	dir, err = OpenDirectory(db)
	if err != nil {
		t.Fatal(err)
	}
	if err := WhileFollowing(ctx, fresh, follow, dir, func() error { return nil }); err != nil {
		t.Fatal(err)
	}
	for alias, want := range map[string]bool{"ann": false, "ben": false, "cy": false, "dot": true} {
		if rec, _ := dir.User(events.NewUser("example.test", alias)); (rec != nil) != want {
			t.Errorf("user %s known: %v, want %v (position %d)", alias, rec != nil, want, dir.Position())
		}
	}
	if dir.Position() != 1 {
		t.Errorf("position %d, want the stream's last, 1", dir.Position())
	}
}

// TestDirectoryOlderFormatRebuilt: a directory projection an older
// version wrote (no format key, or another) lacks what this version's
// records keep (a user's last disable, its enabling's sequence): read up
// to date, it is rebuilt from the stream, and has them. A current one is
// not rebuilt.
func TestDirectoryOlderFormatRebuilt(t *testing.T) {
	ctx := context.Background()
	db, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	ann := events.NewUser("example.test", "ann")
	follow := FollowConfig{Stream: events.StreamDirectory, Filter: events.DirectoryFilter}
	js := startJetStream(t)
	appendDirectory(t, js,
		&events.UserEnabled{Meta: events.Meta{At: at}, User: ann, Home: "home1"},
		&events.UserDisabled{Meta: events.Meta{At: at.Add(time.Hour)}, User: ann},
		&events.UserEnabled{Meta: events.Meta{At: at.Add(2 * time.Hour)}, User: ann, Home: "home1"})
	read := func() *UserRecord {
		t.Helper()
		dir, err := OpenDirectory(db)
		if err != nil {
			t.Fatal(err)
		}
		if err := WhileFollowing(ctx, js, follow, dir, func() error { return nil }); err != nil {
			t.Fatal(err)
		}
		rec, err := dir.User(ann)
		if err != nil || rec == nil {
			t.Fatalf("ann: %+v, %v", rec, err)
		}
		return rec
	}
	if rec := read(); !rec.Disabled.Equal(at.Add(time.Hour)) || rec.Enabling != 3 {
		t.Fatalf("ann's record: disabled %v, enabling %d; want %v, 3", rec.Disabled, rec.Enabling, at.Add(time.Hour))
	}

	// As an older version left it: ann's record without the fields, and
	// no format key.
	dir, err := OpenDirectory(db)
	if err != nil {
		t.Fatal(err)
	}
	b := db.pdb.NewBatch()
	b.Set(dir.userKey(ann, "user"), []byte(`{"user":{"domain":"example.test","alias":"ann"},"home":"home1","enabled":true}`), nil)
	b.Delete(dir.key("format"), nil)
	if err := b.Commit(nil); err != nil {
		t.Fatal(err)
	}
	if rec := read(); !rec.Disabled.Equal(at.Add(time.Hour)) || rec.Enabling != 3 {
		t.Errorf("ann's record from an older version's projection: disabled %v, enabling %d; want it rebuilt (%v, 3)", rec.Disabled, rec.Enabling, at.Add(time.Hour))
	}

	// A current projection is kept as it is: a record changed under it
	// stays changed.
	b = db.pdb.NewBatch()
	b.Set(dir.userKey(ann, "user"), []byte(`{"user":{"domain":"example.test","alias":"ann"},"home":"home9","enabled":true}`), nil)
	if err := b.Commit(nil); err != nil {
		t.Fatal(err)
	}
	if rec := read(); rec.Home != "home9" {
		t.Errorf("a current projection was rebuilt: ann's home %q, want home9 as written", rec.Home)
	}
}

// TestDirectoryDomainHostsSet: an IM domain's new host names reach it,
// those it no longer has reach nothing, and its name and IM host (kept,
// though dropped from the e-mail domains) still reach it; in memory as
// applied, and as reopened from Pebble.
func TestDirectoryDomainHostsSet(t *testing.T) {
	ctx := context.Background()
	db, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	follow := FollowConfig{Stream: events.StreamDirectory, Filter: events.DirectoryFilter}
	js := startJetStream(t)
	appendDirectory(t, js,
		&events.DomainCreated{Meta: events.Meta{At: at}, Domain: "example.test", IMHost: "im.example.test",
			EmailDomains: []string{"example.test", "mail.example.test"}, Hosts: []string{"old.example.test"}},
		&events.DomainHostsSet{Meta: events.Meta{At: at}, Domain: "example.test",
			EmailDomains: []string{"corp.example.test"}, Hosts: []string{"gw7.example.test", "im2.example.test"}})
	check := func(dir *Directory, when string) {
		t.Helper()
		for host, want := range map[string]bool{
			"example.test": true, "im.example.test": true, "corp.example.test": true, "gw7.example.test": true, "im2.example.test:80": true,
			"mail.example.test": false, "old.example.test": false,
		} {
			dom, err := dir.DomainByHost(host)
			if err != nil {
				t.Fatal(err)
			}
			if (dom != nil) != want {
				t.Errorf("%s: host %s reaches a domain: %v, want %v", when, host, dom != nil, want)
			}
		}
		dom, _ := dir.Domain("example.test")
		if dom == nil || !slices.Equal(dom.Hosts, []string{"gw7.example.test", "im2.example.test"}) || !slices.Equal(dom.EmailDomains, []string{"corp.example.test"}) ||
			dom.IMHost != "im.example.test" {
			t.Errorf("%s: domain record %+v", when, dom)
		}
	}
	dir, err := OpenDirectory(db)
	if err != nil {
		t.Fatal(err)
	}
	if err := WhileFollowing(ctx, js, follow, dir, func() error { return nil }); err != nil {
		t.Fatal(err)
	}
	check(dir, "applied")
	dir, err = OpenDirectory(db)
	if err != nil {
		t.Fatal(err)
	}
	check(dir, "reopened")
}

// TestDirectoryDomainHostsMoved: host names leave one IM domain and join
// another in quick succession (applied in one batch, and in batches of
// their own), and a domain's name listed as a host and as an e-mail
// domain too is dropped from both lists: each host reaches the domain
// that has it last, and only that, in memory as applied, as reopened
// from Pebble, and in a rebuild from the stream (VerifyDirectory).
func TestDirectoryDomainHostsMoved(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	m := events.Meta{At: at}
	follow := FollowConfig{Stream: events.StreamDirectory, Filter: events.DirectoryFilter}
	js := startJetStream(t)
	dir, err := OpenDirectory(db)
	if err != nil {
		t.Fatal(err)
	}
	check := func(when string, want map[string]string) {
		t.Helper()
		for _, d := range andReopened(t, db, dir) {
			for host, w := range want {
				dom, err := d.dir.DomainByHost(host)
				if err != nil {
					t.Fatal(err)
				}
				got := ""
				if dom != nil {
					got = dom.Domain
				}
				if got != w {
					t.Errorf("%s, %s: host %s reaches %q, want %q", when, d.name, host, got, w)
				}
			}
		}
		v, err := VerifyDirectory(ctx, js, db)
		if err != nil {
			t.Fatal(err)
		}
		if !v.OK() {
			t.Errorf("%s: the projection differs from its rebuild:\n%s", when, v.Diff)
		}
	}
	appendDirectory(t, js,
		&events.DomainCreated{Meta: m, Domain: "a.test", IMHost: "im.a.test", EmailDomains: []string{"a.test", "shared.test"}, Hosts: []string{"gw.test"}},
		&events.DomainCreated{Meta: m, Domain: "b.test", IMHost: "im.b.test", EmailDomains: []string{"b.test"}},
		// gw.test and shared.test move from a.test to b.test; a.test's
		// name is listed as a host too.
		&events.DomainHostsSet{Meta: m, Domain: "a.test", EmailDomains: []string{"a.test"}, Hosts: []string{"a.test"}},
		&events.DomainHostsSet{Meta: m, Domain: "b.test", EmailDomains: []string{"b.test", "shared.test"}, Hosts: []string{"gw.test"}},
		// and is dropped from both lists: its name still reaches it.
		&events.DomainHostsSet{Meta: m, Domain: "a.test", Hosts: nil, EmailDomains: nil})
	if err := WhileFollowing(ctx, js, follow, dir, func() error { return nil }); err != nil {
		t.Fatal(err)
	}
	check("moved in one batch", map[string]string{"a.test": "a.test", "im.a.test": "a.test", "gw.test": "b.test", "shared.test": "b.test",
		"b.test": "b.test", "im.b.test": "b.test"})

	// Back again, each change followed on its own.
	for _, ev := range []events.DirectoryEvent{
		&events.DomainHostsSet{Meta: m, Domain: "b.test", EmailDomains: []string{"b.test"}},
		&events.DomainHostsSet{Meta: m, Domain: "a.test", EmailDomains: []string{"shared.test"}, Hosts: []string{"gw.test"}},
		&events.DomainDeleted{Meta: m, Domain: "b.test"},
	} {
		appendDirectory(t, js, ev)
		if err := WhileFollowing(ctx, js, follow, dir, func() error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
	check("moved back one by one", map[string]string{"a.test": "a.test", "im.a.test": "a.test", "gw.test": "a.test", "shared.test": "a.test",
		"b.test": "", "im.b.test": ""})
}

// namedDirectory is a directory projection and how the test came by it.
type namedDirectory struct {
	name string
	dir  *Directory
}

// andReopened returns dir ("in memory") and the projection of db opened
// again ("reopened"), for reads that must agree across a restart.
func andReopened(t *testing.T, db *DB, dir *Directory) []namedDirectory {
	t.Helper()
	reopened, err := OpenDirectory(db)
	if err != nil {
		t.Fatal(err)
	}
	return []namedDirectory{{"in memory", dir}, {"reopened", reopened}}
}

// BenchmarkDirectoryLookups: what every request asks of the directory
// (its user, the domain and the home server of a host). Each lookup
// allocates the record's copy and nothing else.
func BenchmarkDirectoryLookups(b *testing.B) {
	db, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	js := startJetStream(b)
	ann := events.NewUser("example.test", "ann.smith")
	appendDirectory(b, js,
		&events.DomainCreated{Meta: events.Meta{At: at}, Domain: "example.test", IMHost: "im.example.test"},
		&events.HomeServerCreated{Meta: events.Meta{At: at}, Name: "home1", Host: "home1.example.test", HostsUsers: true},
		&events.UserEnabled{Meta: events.Meta{At: at}, User: ann, Home: "home1"})
	dir, err := OpenDirectory(db)
	if err != nil {
		b.Fatal(err)
	}
	if err := WhileFollowing(b.Context(), js, FollowConfig{Stream: events.StreamDirectory, Filter: events.DirectoryFilter}, dir, func() error { return nil }); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		u, _ := dir.User(ann)
		d, _ := dir.DomainByHost("im.example.test:80")
		h, _ := dir.HomeServerByHost("home1.example.test")
		if u == nil || d == nil || h == nil {
			b.Fatalf("user %v, domain %v, home server %v: want all three", u, d, h)
		}
	}
}
