package main

import (
	"bytes"
	"context"
	"encoding/json"
	"maps"
	"regexp"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
)

// TestStatusHomeWithoutOwner: rvpctl status names every home server with
// a fact stream, and says so of one that no node owns: its lease lapsed
// (no key) or was let go ("released:NODE"), not as if NODE owned it, nor
// left out of the table while the others are listed.
func TestStatusHomeWithoutOwner(t *testing.T) {
	url, js := startJetStream(t) // home1's fact stream
	ctx := context.Background()
	streams := map[string]string{events.StreamRequests: events.RequestRoot + ".>", events.StreamLookups: events.LookupRoot + ".>"}
	for _, h := range []string{"home2", "home3"} {
		streams[events.FactStream(h)] = events.FactFilter(h)
	}
	for name, subj := range streams {
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{subj}}); err != nil {
			t.Fatal(err)
		}
	}
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: events.BucketOwners, History: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, events.OwnerKey("home1"), []byte("n1")); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, events.OwnerKey("home2"), []byte("released:n2")); err != nil {
		t.Fatal(err)
	}
	// home3: no key, its owner's lease lapsed.
	lookup := func(k string) (string, bool) { return url, k == "RVPCTL_NATS" }
	var out, errOut bytes.Buffer
	if err := exec(ctx, []string{"status"}, lookup, strings.NewReader(""), &out, &errOut); err != nil {
		t.Fatalf("status: %v\n%s", err, errOut.String())
	}
	lines := map[string]string{}
	for _, l := range strings.Split(out.String(), "\n") {
		if f := strings.Fields(l); len(f) > 0 && strings.HasPrefix(f[0], "home") {
			lines[f[0]] = l
		}
	}
	if l := lines["home1"]; !strings.Contains(l, " n1 ") {
		t.Errorf("home1, owned by n1: %q\n%s", l, out.String())
	}
	for _, h := range []string{"home2", "home3"} {
		if l := lines[h]; !strings.Contains(l, "NOT OWNED") {
			t.Errorf("%s, owned by no node: %q, want it said NOT OWNED\n%s", h, l, out.String())
		}
	}

	out.Reset()
	if err := exec(ctx, []string{"-json", "status"}, lookup, strings.NewReader(""), &out, &errOut); err != nil {
		t.Fatalf("status -json: %v\n%s", err, errOut.String())
	}
	owned := map[string]bool{}
	for _, l := range strings.Split(out.String(), "\n") {
		var o struct {
			Home  *string `json:"home"`
			Node  string  `json:"node"`
			Owned bool    `json:"owned"`
		}
		if json.Unmarshal([]byte(l), &o) != nil || o.Home == nil {
			continue
		}
		owned[*o.Home] = o.Owned
		if !o.Owned && o.Node != "" {
			t.Errorf("-json: %s not owned, but node %q", *o.Home, o.Node)
		}
	}
	if len(owned) != 3 || !owned["home1"] || owned["home2"] || owned["home3"] {
		t.Errorf("-json owned: %v, want home1 true, home2 and home3 false\n%s", owned, out.String())
	}
}

// TestStatusDeletedHomeServer: a home server deleted from the directory
// keeps its fact stream (the audit's), and no node will ever own it
// again: rvpctl status must not list it as NOT OWNED, telling the
// operator its users' requests wait and to start a node for it.
func TestStatusDeletedHomeServer(t *testing.T) {
	url, js := startJetStream(t) // home1's fact stream, the directory
	ctx := context.Background()
	streams := map[string]string{events.StreamRequests: events.RequestRoot + ".>", events.StreamLookups: events.LookupRoot + ".>",
		events.FactStream("home2"): events.FactFilter("home2")}
	for name, subj := range streams {
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{subj}}); err != nil {
			t.Fatal(err)
		}
	}
	for _, h := range []string{"home1", "home2"} {
		publishEvent(t, js, events.HomeServerSubject(h), "", &events.HomeServerCreated{Name: h, Host: h + ".example.test", HostsUsers: true}, nil)
	}
	publishEvent(t, js, events.HomeServerSubject("home2"), "", &events.HomeServerDeleted{Name: "home2"}, nil)
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: events.BucketOwners, History: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, events.OwnerKey("home1"), []byte("n1")); err != nil {
		t.Fatal(err)
	}
	lookup := func(k string) (string, bool) { return url, k == "RVPCTL_NATS" }
	var out, errOut bytes.Buffer
	if err := exec(ctx, []string{"status"}, lookup, strings.NewReader(""), &out, &errOut); err != nil {
		t.Fatalf("status: %v\n%s", err, errOut.String())
	}
	for _, l := range strings.Split(out.String(), "\n") {
		if f := strings.Fields(l); len(f) > 0 && f[0] == "home2" && strings.Contains(l, "NOT OWNED") {
			t.Errorf("home2, deleted, listed as waiting for a node: %q\n%s", l, out.String())
		}
	}
	if !strings.Contains(out.String(), " n1 ") {
		t.Errorf("home1, owned by n1, not listed so:\n%s", out.String())
	}
}

// TestStatusHomeNeverStarted: a home server created in the directory
// (rvpctl home create) whose node never started has neither fact stream
// nor lease, yet its users' requests wait for a node as those of one
// whose lease lapsed: rvpctl status lists it NOT OWNED, as the console
// does, rather than leave it out. At a site (a JetStream domain) only
// the site's own home servers are listed: those of other sites have
// their leases there. In a deployment of one domain every node may own
// any home server, whatever site the directory names.
func TestStatusHomeNeverStarted(t *testing.T) {
	ctx := context.Background()
	// {"x", ""}: nodes of no site on NATS servers of a JetStream domain
	// (rvpd does not look at it): a home server of no site is theirs.
	for _, c := range []struct{ domain, site string }{{"", ""}, {"a", "a"}, {"x", ""}} {
		url, js := startSite(t, c.domain, c.site)
		streams := map[string]string{events.FactStream("home1"): events.FactFilter("home1")}
		if c.site != "" {
			streams[events.RequestStream("home1")] = events.RequestFilter("home1")
		}
		for name, subj := range streams {
			if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{subj}}); err != nil {
				t.Fatal(err)
			}
		}
		kv, err := js.KeyValue(ctx, events.BucketOwners)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kv.Put(ctx, events.OwnerKey("home1"), []byte("n1")); err != nil {
			t.Fatal(err)
		}
		// The directory: home1 (owned, its fact stream made), home2 never
		// started, home3 deleted, home4 at another site, home5 created,
		// its hosting of users changed since.
		homes := map[string]string{"home1": c.site, "home2": c.site, "home3": c.site, "home4": "b", "home5": c.site}
		// At a site, its copy of the hub's directory, stored under the
		// hub's subjects.
		subject := func(h string) string {
			if c.site != "" {
				return events.DirectoryCopySubject(c.site, events.HomeServerSubject(h))
			}
			return events.HomeServerSubject(h)
		}
		for _, h := range []string{"home1", "home2", "home3", "home4", "home5"} {
			publishEvent(t, js, subject(h), "", &events.HomeServerCreated{Name: h, Host: h + ".example.test", Site: homes[h], HostsUsers: true}, nil)
		}
		publishEvent(t, js, subject("home3"), "", &events.HomeServerDeleted{Name: "home3"}, nil)
		publishEvent(t, js, subject("home5"), "", &events.HomeServerChanged{Name: "home5", HostsUsers: false}, nil)

		lookup := func(k string) (string, bool) { return url, k == "RVPCTL_NATS" }
		var out, errOut bytes.Buffer
		if err := exec(ctx, []string{"-json", "status"}, lookup, strings.NewReader(""), &out, &errOut); err != nil {
			t.Fatalf("status: %v\n%s", err, errOut.String())
		}
		owned := map[string]bool{}
		for _, l := range strings.Split(out.String(), "\n") {
			var o struct {
				Home  *string `json:"home"`
				Owned bool    `json:"owned"`
			}
			if json.Unmarshal([]byte(l), &o) == nil && o.Home != nil {
				owned[*o.Home] = o.Owned
			}
		}
		want := map[string]bool{"home1": true, "home2": false, "home5": false}
		if c.domain == "" {
			want["home4"] = false // one domain: any node may own it, its site a label
		}
		if !maps.Equal(owned, want) {
			t.Errorf("domain %q: status lists %v, want %v (home2 and home5 never started, home3 deleted, home4 at site b)\n%s", c.domain, owned, want, out.String())
		}
		out.Reset()
		if err := exec(ctx, []string{"status"}, lookup, strings.NewReader(""), &out, &errOut); err != nil {
			t.Fatalf("status: %v\n%s", err, errOut.String())
		}
		if !regexp.MustCompile(`(?m)^home2 +NOT OWNED`).MatchString(out.String()) {
			t.Errorf("domain %q: home2, never started, not said NOT OWNED:\n%s", c.domain, out.String())
		}
	}
}

// startSite runs a NATS server with JetStream in this process, of
// JetStream domain domain ("" for none), with the streams of site (""
// for a deployment of one domain), and returns its URL and a JetStream
// client.
func startSite(t *testing.T, domain, site string) (string, jetstream.JetStream) {
	t.Helper()
	url, js := startNATS(t, domain)
	if err := projections.EnsureStreams(t.Context(), js, projections.StreamOptions{Site: site}); err != nil {
		t.Fatal(err)
	}
	return url, js
}

// TestPresenceOfAnotherSite: rvpctl reads the streams of the site -nats
// reaches. Asked the presence of a user homed at another site, it said
// "offline to others ... watched by nobody", folded from no fact; it now
// says where the user is homed and where to ask. Its audit shows this
// site's facts and says they are not all.
func TestPresenceOfAnotherSite(t *testing.T) {
	ctx := t.Context()
	url, js := startSite(t, "a", "a")
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: events.FactStream("home1"), Subjects: []string{events.FactFilter("home1")}}); err != nil {
		t.Fatal(err)
	}
	copySubject := func(subj string) string { return events.DirectoryCopySubject("a", subj) }
	for h, site := range map[string]string{"home1": "a", "home2": "b"} {
		publishEvent(t, js, copySubject(events.HomeServerSubject(h)), "", &events.HomeServerCreated{Name: h, Host: h + ".example.test", Site: site, HostsUsers: true}, nil)
	}
	alice, bob := events.NewUser("example.test", "alice"), events.NewUser("example.test", "bob")
	publishEvent(t, js, copySubject(events.UserSubject(alice)), "", &events.UserEnabled{User: alice, Home: "home1"}, nil)
	publishEvent(t, js, copySubject(events.UserSubject(bob)), "", &events.UserEnabled{User: bob, Home: "home1"}, nil)
	publishEvent(t, js, copySubject(events.UserSubject(bob)), "", &events.UserMoved{User: bob, From: "home1", Home: "home2"}, nil)

	lookup := func(k string) (string, bool) { return url, k == "RVPCTL_NATS" }
	run := func(args ...string) (string, string, error) {
		var out, errOut bytes.Buffer
		err := exec(ctx, args, lookup, strings.NewReader(""), &out, &errOut)
		return out.String(), errOut.String(), err
	}
	if out, _, err := run("presence", "alice@example.test"); err != nil || !strings.Contains(out, "offline to others") {
		t.Errorf("presence of alice, homed at this site: %v\n%s", err, out)
	}
	out, _, err := run("presence", "bob@example.test")
	if err == nil || !strings.Contains(err.Error(), "home2, at site b") {
		t.Errorf("presence of bob, homed at site b, read at site a: %v; want it said where he is homed\n%s", err, out)
	}
	_, errOut, err := run("audit", "-user", "bob@example.test")
	if err != nil || !strings.Contains(errOut, "only the facts this site holds") || !strings.Contains(errOut, "site b") {
		t.Errorf("audit of bob at site a: %v; want his facts here said not to be all\n%s", err, errOut)
	}
	if _, errOut, err := run("audit", "-user", "alice@example.test"); err != nil || errOut != "" {
		t.Errorf("audit of alice at her site: %v %q", err, errOut)
	}
}

// TestPresenceHomeOfNoSite: a home server of no site is at no other
// site. rvpd runs without -site on NATS servers of a JetStream domain
// (set for other reasons: rvpd does not look at it); rvpctl presence
// then refused every user, "homed at home server home1, at site , not
// at site x", and audit -user said on stderr that the facts shown were
// not all.
func TestPresenceHomeOfNoSite(t *testing.T) {
	ctx := t.Context()
	url, js := startSite(t, "x", "")
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: events.FactStream("home1"), Subjects: []string{events.FactFilter("home1")}}); err != nil {
		t.Fatal(err)
	}
	publishEvent(t, js, events.HomeServerSubject("home1"), "", &events.HomeServerCreated{Name: "home1", Host: "home1.example.test", HostsUsers: true}, nil)
	alice := events.NewUser("example.test", "alice")
	publishEvent(t, js, events.UserSubject(alice), "", &events.UserEnabled{User: alice, Home: "home1"}, nil)
	lookup := func(k string) (string, bool) { return url, k == "RVPCTL_NATS" }
	run := func(args ...string) (string, string, error) {
		var out, errOut bytes.Buffer
		err := exec(ctx, args, lookup, strings.NewReader(""), &out, &errOut)
		return out.String(), errOut.String(), err
	}
	if out, _, err := run("presence", "alice@example.test"); err != nil || !strings.Contains(out, "offline to others") {
		t.Errorf("presence of alice, homed on home1 (no site): %v\n%s", err, out)
	}
	if _, errOut, err := run("audit", "-user", "alice@example.test"); err != nil || errOut != "" {
		t.Errorf("audit of alice, homed on home1 (no site): %v %q", err, errOut)
	}
}

// TestStatusStreamNotFound: a stream rvpctl status looks for that does
// not exist (the lookups stream, at NATS servers no rvpd process started
// against) is said not to exist, and what creates it; not UNREADABLE
// with "start them" (the NATS servers, which run).
func TestStatusStreamNotFound(t *testing.T) {
	url, _ := startJetStream(t) // home1's fact stream and the directory, no lookups stream
	lookup := func(k string) (string, bool) { return url, k == "RVPCTL_NATS" }
	var out, errOut bytes.Buffer
	err := exec(context.Background(), []string{"status"}, lookup, strings.NewReader(""), &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "stream "+events.StreamLookups+" does not exist") ||
		!strings.Contains(err.Error(), "every rvpd process creates the streams it needs at its start") || strings.Contains(err.Error(), "start them") {
		t.Errorf("status without the lookups stream: %v, want it said not to exist and what creates it", err)
	}
	if !regexp.MustCompile(`(?m)^` + events.StreamLookups + ` +DOES NOT EXIST`).MatchString(out.String()) {
		t.Errorf("status without the lookups stream, its row:\n%s", out.String())
	}
	if !regexp.MustCompile(`(?m)^` + events.FactStream("home1") + ` +1 +0 `).MatchString(out.String()) {
		t.Errorf("status without the lookups stream does not show the others:\n%s", out.String())
	}
}

// TestStatusEphemeralConsumers: the consumers an operator reads in rvpctl
// status are the durable ones (home_<home>, whose PENDING is a home
// server's backlog; the routers'). The ordered consumers that nodes'
// projections and every rvpctl audit, presence and verify make are
// counted in one row per stream, not listed: in a drill on a 3-server
// cluster, a few minutes of rvpctl presence and audit left 50 of them on
// one fact stream (they linger until their inactivity threshold), and
// home_home2's row was lost among them. -json lists every one.
func TestStatusEphemeralConsumers(t *testing.T) {
	url, js := startJetStream(t) // home1's fact stream, the directory
	ctx := context.Background()
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: events.StreamRequests, Subjects: []string{events.RequestRoot + ".>"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: events.StreamLookups, Subjects: []string{events.LookupRoot + ".>"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: "home_home1", AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{}); err != nil {
			t.Fatal(err)
		}
	}
	facts, err := js.Stream(ctx, events.FactStream("home1"))
	if err != nil {
		t.Fatal(err)
	}
	var readers []string
	for range 5 {
		c, err := facts.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
		if err != nil {
			t.Fatal(err)
		}
		readers = append(readers, c.CachedInfo().Name)
	}
	lookup := func(k string) (string, bool) { return url, k == "RVPCTL_NATS" }
	var out, errOut bytes.Buffer
	if err := exec(ctx, []string{"status"}, lookup, strings.NewReader(""), &out, &errOut); err != nil {
		t.Fatalf("status: %v\n%s", err, errOut.String())
	}
	if !regexp.MustCompile(`(?m)^` + events.StreamRequests + ` .* home_home1 +0 +0 +0$`).MatchString(out.String()) {
		t.Errorf("status does not show home_home1 on the requests stream's row:\n%s", out.String())
	}
	if !regexp.MustCompile(`(?m)^ +\(2 ephemeral readers\)`).MatchString(out.String()) {
		t.Errorf("status does not count the requests stream's 2 ephemeral readers in a row:\n%s", out.String())
	}
	if !regexp.MustCompile(`(?m)^` + events.FactStream("home1") + ` .* \(5 ephemeral readers\)`).MatchString(out.String()) {
		t.Errorf("status does not count home1's fact stream's 5 ephemeral readers in its row:\n%s", out.String())
	}
	for _, r := range readers {
		if strings.Contains(out.String(), r) {
			t.Errorf("status lists the ephemeral reader %s:\n%s", r, out.String())
		}
	}

	out.Reset()
	if err := exec(ctx, []string{"-json", "status"}, lookup, strings.NewReader(""), &out, &errOut); err != nil {
		t.Fatalf("status -json: %v\n%s", err, errOut.String())
	}
	for _, r := range append(readers, "home_home1") {
		if !strings.Contains(out.String(), `"name":"`+r+`"`) {
			t.Errorf("status -json does not list consumer %s:\n%s", r, out.String())
		}
	}
}
