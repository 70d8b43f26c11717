package testcluster

import (
	"context"
	"testing"
	"time"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/homenode"
)

// TestPresenceAt answers an auditor's "what was alice's presence at time
// T and who could see it" for moments before and after her changes: an
// ACL that denies bob presence shows him offline while carol, on the
// other home server, sees her state; her own self-watch sees invisible.
func TestPresenceAt(t *testing.T) {
	c := Start(t, Options{Users: map[string]string{"alice": "home1", "bob": "home1", "carol": "home2"}, Gateways: 2, Routers: 1, Inside: []string{"127.0.0.0/8"}})
	ctx := context.Background()
	au := events.NewUser(c.Domain, "alice")
	alice, bob, carol := c.Client(t, "alice"), c.Client(t, "bob"), c.Client(t, "carol")
	for _, u := range []*Client{alice, bob, carol} {
		u.FollowRedirects = true
		must(t, u.Alias+" login", u.Login(3600), 200)
	}
	before := time.Now()
	acl := `<a:rvpacl xmlns:a="http://schemas.microsoft.com/rvp/acl/"><a:acl><a:inheritance>none</a:inheritance>` +
		`<a:ace><a:principal><a:rvp-principal>` + bob.URL + `</a:rvp-principal><a:credentials><a:ntlm/></a:credentials></a:principal><a:grant/><a:deny><a:presence/></a:deny></a:ace>` +
		`<a:ace><a:principal><a:allprincipals/><a:credentials><a:assertion/><a:digest/><a:ntlm/></a:credentials></a:principal><a:grant><a:list/><a:read/><a:send-to/><a:presence/></a:grant><a:deny/></a:ace></a:acl></a:rvpacl>`
	must(t, "alice's ACL", alice.Do("ACL", "/instmsg/aliases/alice", []byte(acl), alice.From(), "Content-Type: text/xml"), 200)
	must(t, "alice online", alice.SetState("online", 1200, 0), 207)
	must(t, "bob watches alice", bob.Watch("alice", 3600), 207)
	must(t, "carol watches alice", carol.Watch("alice", 3600), 207)
	must(t, "alice watches herself", alice.Watch("alice", 3600), 207)
	carol.WaitNotify(0, wait, fromState(alice, "online"))
	online := time.Now()
	must(t, "alice invisible", alice.SetState("invisible", 1200, 0), 207)
	invisible := time.Now()

	rep, err := homenode.PresenceAt(ctx, c.JS, au, before)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Others != "offline" || len(rep.Watchers) != 0 || rep.Facts != 1 {
		t.Errorf("before: %+v; want offline, unwatched, her login only", rep)
	}
	for _, m := range []struct {
		at           time.Time
		others, self string
	}{{online, "online", "online"}, {invisible, "offline", "invisible"}} {
		rep, err := homenode.PresenceAt(ctx, c.JS, au, m.at)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Others != m.others || rep.Self != m.self {
			t.Errorf("at %v: others %s, self %s; want %s, %s", m.at, rep.Others, rep.Self, m.others, m.self)
		}
		saw := map[string]string{}
		for _, w := range rep.Watchers {
			saw[w.Subscriber] = w.Sees
		}
		want := map[string]string{bob.URL: "offline", carol.URL: m.others, alice.URL: m.self}
		if len(saw) != len(want) {
			t.Errorf("at %v: watchers %v, want %v", m.at, saw, want)
		}
		for who, s := range want {
			if saw[who] != s {
				t.Errorf("at %v: %s saw %q, want %q", m.at, who, saw[who], s)
			}
		}
	}
}

// TestPresenceAtMergedACL: librvp's single-entry ACL writes are merged
// (an acl.set fact holds the resulting list), so an auditor's report shows
// carol, whom alice's writes never named, seeing her state until alice
// blocks her, and bob, her buddy, seeing it throughout.
func TestPresenceAtMergedACL(t *testing.T) {
	c := Start(t, Options{Users: map[string]string{"alice": "home1", "bob": "home1", "carol": "home2"}, Gateways: 2, Routers: 1, Inside: []string{"127.0.0.0/8"}})
	ctx := context.Background()
	alice, bob, carol := c.Client(t, "alice"), c.Client(t, "bob"), c.Client(t, "carol")
	for _, u := range []*Client{alice, bob, carol} {
		u.FollowRedirects = true
		must(t, u.Alias+" login", u.Login(3600), 200)
	}
	ace := func(principal, grant, deny string) []byte {
		return []byte(`<a:rvpacl xmlns:a="http://schemas.microsoft.com/rvp/acl/"><a:acl><a:inheritance>none</a:inheritance><a:ace><a:principal><a:rvp-principal>` +
			principal + `</a:rvp-principal><a:credentials><a:assertion/><a:digest/><a:ntlm/></a:credentials></a:principal><a:grant>` + grant + `</a:grant><a:deny>` + deny + `</a:deny></a:ace></a:acl></a:rvpacl>`)
	}
	for _, w := range [][]byte{
		ace("allprincipals", "<a:send-to/><a:presence/>", ""),
		ace(alice.URL, "<a:all/>", ""),
		ace(bob.URL, "<a:send-to/><a:presence/>", ""),
	} {
		must(t, "alice's ACL write", alice.Do("ACL", "/instmsg/aliases/alice", w, alice.From(), "Content-Type: text/xml"), 200)
	}
	must(t, "alice online", alice.SetState("online", 1200, 0), 207)
	must(t, "bob watches alice", bob.Watch("alice", 3600), 207)
	must(t, "carol watches alice", carol.Watch("alice", 3600), 207)
	carol.WaitNotify(0, wait, fromState(alice, "online"))
	open := time.Now()
	must(t, "alice blocks carol", alice.Do("ACL", "/instmsg/aliases/alice", ace(carol.URL, "", "<a:send-to/><a:presence/>"), alice.From(), "Content-Type: text/xml"), 200)
	blocked := time.Now()
	for _, m := range []struct {
		at          time.Time
		carolSees   string
		description string
	}{{open, "online", "after the single-entry writes"}, {blocked, "offline", "after the block"}} {
		rep, err := homenode.PresenceAt(ctx, c.JS, events.NewUser(c.Domain, "alice"), m.at)
		if err != nil {
			t.Fatal(err)
		}
		saw := map[string]string{}
		for _, w := range rep.Watchers {
			saw[w.Subscriber] = w.Sees
		}
		if saw[bob.URL] != "online" || saw[carol.URL] != m.carolSees || len(saw) != 2 {
			t.Errorf("%s: watchers saw %v; want bob online, carol %s", m.description, saw, m.carolSees)
		}
	}
}
