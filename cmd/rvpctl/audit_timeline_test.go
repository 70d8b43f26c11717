package main

import (
	"bytes"
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
)

// auditRun runs rvpctl against url and returns its output, what it
// wrote on stderr and its error.
func auditRun(url string, args ...string) (string, string, error) {
	var out, errOut bytes.Buffer
	lookup := func(k string) (string, bool) { return url, k == "RVPCTL_NATS" }
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := exec(ctx, args, lookup, strings.NewReader(""), &out, &errOut)
	return out.String(), errOut.String(), err
}

// auditLines decodes audit -json's lines.
func auditLines(t *testing.T, out string) []auditEntry {
	t.Helper()
	var es []auditEntry
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l == "" {
			continue
		}
		var e auditEntry
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("audit -json line %q: %v", l, err)
		}
		es = append(es, e)
	}
	return es
}

// TestAuditUserTimeline: the audit of a user is one timeline, in the
// order things happened, of her facts on every home server she was on and
// of the directory's events about her (enabled, password set, moved,
// disabled: who did it): the auditor asking what happened to alice, moved
// from home1 to home2 and back, sees it in order, and sees the
// administrator who moved her. Before, -user read the fact streams alone
// (no directory event: a user changed only by administrators showed an
// empty table) and each stream after the other (home1's facts after the
// move back shown before home2's).
func TestAuditUserTimeline(t *testing.T) {
	url, js := startJetStream(t)
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: events.FactStream("home2"), Subjects: []string{events.FactFilter("home2")}}); err != nil {
		t.Fatal(err)
	}
	alice, bob := events.NewUser("example.test", "alice"), events.NewUser("example.test", "bob")
	admin := events.Meta{At: time.Now(), Actor: "admin:ops"}
	client := events.Meta{At: time.Now(), Actor: "alice@example.test", Auth: "ntlm:alice@example.test", Client: "10.0.0.9"}
	steps := []struct {
		subj string
		ev   events.Event
	}{
		{events.UserSubject(alice), &events.UserEnabled{Meta: admin, User: alice, Home: "home1"}},
		{events.UserSubject(bob), &events.UserEnabled{Meta: admin, User: bob, Home: "home1"}},
		{events.FactSubject("home1", alice), &events.ViewSet{Meta: client, Node: alice, ID: 1, Value: "online"}},
		{events.UserSubject(alice), &events.UserMoved{Meta: admin, User: alice, Home: "home2"}},
		{events.FactSubject("home2", alice), &events.ViewSet{Meta: client, Node: alice, ID: 1, Value: "busy"}},
		{events.UserSubject(alice), &events.UserMoved{Meta: admin, User: alice, Home: "home1"}},
		{events.FactSubject("home1", alice), &events.ViewSet{Meta: client, Node: alice, ID: 1, Value: "away"}},
		{events.FactSubject("home1", bob), &events.ViewSet{Meta: client, Node: bob, ID: 1, Value: "online"}},
		{events.UserSubject(alice), &events.UserDisabled{Meta: admin, User: alice}},
	}
	for _, s := range steps {
		publishEvent(t, js, s.subj, "", s.ev, nil)
	}
	want := []string{"user.enabled.v1", "view.set.v1 online", "user.moved.v1", "view.set.v1 busy", "user.moved.v1", "view.set.v1 away", "user.disabled.v1"}
	out, errOut, err := auditRun(url, "-json", "audit", "-user", "alice@example.test")
	if err != nil {
		t.Fatalf("audit -user: %v\n%s", err, errOut)
	}
	var got []string
	var last time.Time
	for _, e := range auditLines(t, out) {
		if e.Time.Before(last) {
			t.Errorf("audit -user: %s at %s after one at %s: not in time order", e.Type, e.Time, last)
		}
		last = e.Time
		g := e.Type
		var v struct {
			Value string `json:"value"`
			Actor string `json:"actor"`
		}
		json.Unmarshal(e.Event, &v)
		if v.Value != "" {
			g += " " + v.Value
		}
		if strings.HasPrefix(e.Type, "user.") && v.Actor != "admin:ops" {
			t.Errorf("%s: actor %q, want the administrator admin:ops", e.Type, v.Actor)
		}
		got = append(got, g)
	}
	if strings.Join(got, ", ") != strings.Join(want, ", ") {
		t.Errorf("audit -user alice:\n got %s\nwant %s", strings.Join(got, ", "), strings.Join(want, ", "))
	}
	// The table, too: the administrator who moved her; each event's
	// stream, by which its sequence names it.
	out, errOut, err = auditRun(url, "audit", "-user", "alice@example.test")
	if err != nil {
		t.Fatalf("audit -user: %v\n%s", err, errOut)
	}
	for _, want := range []string{`(?m) RVP_FACTS_home1 +1 +view\.set\.v1 `, `(?m) RVP_FACTS_home2 +1 +view\.set\.v1 `, `(?m) RVP_DIR +1 +user\.enabled\.v1 `} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("audit -user's table lacks %s:\n%s", want, out)
		}
	}
	out, errOut, err = auditRun(url, "audit", "-user", "alice@example.test", "-type", "user.moved")
	if err != nil || strings.Count(out, "admin:ops") != 2 || strings.Contains(out, "bob") {
		t.Errorf("audit -user -type user.moved: %v\n%s%s", err, out, errOut)
	}

	// The whole audit is one timeline as well.
	out, errOut, err = auditRun(url, "-json", "audit")
	if err != nil {
		t.Fatalf("audit: %v\n%s", err, errOut)
	}
	es := auditLines(t, out)
	if len(es) != len(steps) {
		t.Fatalf("audit: %d events, want %d:\n%s", len(es), len(steps), out)
	}
	for i, e := range es {
		if e.Type != steps[i].ev.Type() || e.Subject != steps[i].subj {
			t.Errorf("audit event %d: %s on %s, want %s on %s (the order they were stored in)", i, e.Type, e.Subject, steps[i].ev.Type(), steps[i].subj)
		}
	}
}

// TestAuditTimeRange: -since and -until take a moment (RFC 3339) or a
// duration ago, and select the events stored between them; a negative
// duration or an -until before -since is refused rather than taken for
// "everything". Before, -since took a duration only, -until did not
// exist, and -since -1h showed every event.
func TestAuditTimeRange(t *testing.T) {
	url, js := startJetStream(t)
	bob := events.NewUser("example.test", "bob")
	meta := events.Meta{At: time.Now(), Actor: "bob@example.test"}
	publishEvent(t, js, events.FactSubject("home1", bob), "", &events.ViewSet{Meta: meta, Node: bob, ID: 1, Value: "online"}, nil)
	if out, _, err := auditRun(url, "-json", "audit", "-until", "1h"); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("audit -until 1h (an hour ago): %v\n%s", err, out)
	}
	if out, _, err := auditRun(url, "-json", "audit", "-since", "1h", "-until", time.Now().Add(time.Hour).UTC().Format(time.RFC3339)); err != nil || len(auditLines(t, out)) != 1 {
		t.Errorf("audit -since 1h -until in an hour: %v\n%s", err, out)
	}
	if out, _, err := auditRun(url, "-json", "audit", "-since", time.Now().Add(time.Hour).UTC().Format(time.RFC3339)); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("audit -since in an hour: %v\n%s", err, out)
	}
	// A fact copied from the single fact stream of older versions a moment
	// ago (into home2's stream, which begins with those copied), stored
	// there in January: before -until a day ago.
	if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: events.FactStream("home2"), Subjects: []string{events.FactFilter("home2")}}); err != nil {
		t.Fatal(err)
	}
	publishLegacyFact(t, js, "home2")
	if out, _, err := auditRun(url, "-json", "audit", "-until", "24h"); err != nil || len(auditLines(t, out)) != 1 || auditLines(t, out)[0].LegacySeq != 7 {
		t.Errorf("audit -until 24h over a fact stored in January, copied now: %v\n%q", err, out)
	}
	for _, args := range [][]string{{"-since", "-1h"}, {"-since", "yesterday"}, {"-since", "1h", "-until", "2h"}} {
		if out, _, err := auditRun(url, append([]string{"audit"}, args...)...); err == nil {
			t.Errorf("audit %v: no error\n%s", args, out)
		} else if !strings.Contains(err.Error(), "RFC 3339") && !strings.Contains(err.Error(), "must be after") {
			t.Errorf("audit %v: %v, want it to say what is wanted", args, err)
		}
	}
}

// TestAuditSaysWhatRetentionRemoved: an audit of a stream whose
// retention removed its first events says so, naming the stream and how
// many, rather than showing less as if that were all; so does one whose
// first fact was copied from the single fact stream of older versions
// after that one's retention had removed facts (Rvp-Legacy-Cut). An
// audit from a moment after what was removed says nothing.
func TestAuditSaysWhatRetentionRemoved(t *testing.T) {
	url, js := startNATS(t, "")
	ctx := context.Background()
	for _, h := range []string{"home1", "home2"} {
		cfg := jetstream.StreamConfig{Name: events.FactStream(h), Subjects: []string{events.FactFilter(h)}}
		if h == "home1" {
			cfg.MaxMsgs = 2 // a retention that removes the first
		}
		if _, err := js.CreateStream(ctx, cfg); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: events.StreamDirectory, Subjects: []string{events.DirectoryFilter}}); err != nil {
		t.Fatal(err)
	}
	bob := events.NewUser("example.test", "bob")
	meta := events.Meta{At: time.Now(), Actor: "bob@example.test"}
	for _, v := range []string{"online", "busy", "away"} {
		publishEvent(t, js, events.FactSubject("home1", bob), "", &events.ViewSet{Meta: meta, Node: bob, ID: 1, Value: v}, nil)
	}
	body, err := events.Encode(&events.ViewSet{Meta: meta, Node: bob, ID: 1, Value: "online"})
	if err != nil {
		t.Fatal(err)
	}
	m := nats.NewMsg(events.FactSubject("home2", bob))
	m.Header.Set(events.HeaderType, events.TypeViewSet)
	m.Header.Set(events.HeaderLegacyCut, "41")
	m.Data = body
	if _, err := js.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	for _, mode := range [][]string{{"audit"}, {"-json", "audit"}, {"audit", "-user", "bob@example.test"}} {
		out, errOut, err := auditRun(url, mode...)
		if err != nil {
			t.Fatalf("rvpctl %v: %v\n%s", mode, err, errOut)
		}
		for _, want := range []string{events.FactStream("home1") + ": its first event left is sequence 2: 1 event before it was removed by the stream's retention",
			events.FactStream("home2") + ": its first fact was copied from RVP_FACTS after that stream's retention had removed its facts before sequence 41"} {
			if !strings.Contains(errOut, want) {
				t.Errorf("rvpctl %v does not say %q:\n%s\nstderr:\n%s", mode, want, out, errOut)
			}
		}
	}
	// From a moment after the removed events: nothing is missing.
	info, err := js.Stream(ctx, events.FactStream("home1"))
	if err != nil {
		t.Fatal(err)
	}
	first, err := info.GetMsg(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	_, errOut, err := auditRun(url, "audit", "-since", first.Time.Add(time.Nanosecond).UTC().Format(time.RFC3339Nano))
	if err != nil || strings.Contains(errOut, events.FactStream("home1")) {
		t.Errorf("audit -since after the removed events: %v, says %q", err, errOut)
	}
}

// TestAuditBy: -by shows what someone did, on any user's node: the
// messages alice sent to bob and carol (facts of their nodes, which
// -user alice does not read), or an administrator's changes of the
// directory; with -user, what was done to her as well, in one timeline.
// A request of another organisation's principal, which sends no
// credentials, is said to be unauthenticated in the table, not shown
// with a blank where the scheme goes.
func TestAuditBy(t *testing.T) {
	url, js := startJetStream(t)
	alice, bob, carol := events.NewUser("example.test", "alice"), events.NewUser("example.test", "bob"), events.NewUser("example.test", "carol")
	byAlice := events.Meta{At: time.Now(), Request: "r1", Actor: "http://im.example.test/instmsg/aliases/alice", Auth: "ntlm:alice@example.test", Client: "10.0.0.9"}
	byBob := events.Meta{At: time.Now(), Request: "r2", Actor: "http://im.example.test/instmsg/aliases/bob", Auth: "digest:bob@example.test", Client: "10.0.0.7"}
	byPeer := events.Meta{At: time.Now(), Request: "r3", Actor: "http://im.other.test/instmsg/aliases/zed", Client: "192.0.2.1"}
	ops := events.Meta{At: time.Now(), Actor: "admin:ops"}
	steps := []struct {
		subj string
		ev   events.Event
	}{
		{events.UserSubject(alice), &events.UserEnabled{Meta: ops, User: alice, Home: "home1"}},
		{events.FactSubject("home1", bob), &events.MessageAccepted{Meta: byAlice, Node: bob, Body: []byte("hi bob")}},
		{events.FactSubject("home1", carol), &events.MessageAccepted{Meta: byBob, Node: carol, Body: []byte("hi carol")}},
		{events.FactSubject("home1", carol), &events.MessageAccepted{Meta: byAlice, Node: carol, Body: []byte("hi carol")}},
		{events.FactSubject("home1", alice), &events.MessageAccepted{Meta: byBob, Node: alice, Body: []byte("hi alice")}},
		{events.FactSubject("home1", alice), &events.MessageAccepted{Meta: byPeer, Node: alice, Body: []byte("hello from afar")}},
		{events.UserSubject(bob), &events.UserDisabled{Meta: ops, User: bob}},
		{events.FactSubject("home1", alice), &events.ViewEnded{Meta: events.Meta{At: time.Now(), Request: "handoff-1", Actor: "system", Home: "home1"}, Node: alice, ID: 1, Reason: events.EndMoved}},
	}
	for _, s := range steps {
		publishEvent(t, js, s.subj, "", s.ev, nil)
	}
	seqs := func(args ...string) string {
		t.Helper()
		out, errOut, err := auditRun(url, append([]string{"-json", "audit"}, args...)...)
		if err != nil {
			t.Fatalf("audit %v: %v\n%s", args, err, errOut)
		}
		var got []string
		for _, e := range auditLines(t, out) {
			got = append(got, e.Subject+"#"+e.Type)
		}
		return strings.Join(got, " ")
	}
	want := func(idx ...int) string {
		var w []string
		for _, i := range idx {
			w = append(w, steps[i].subj+"#"+steps[i].ev.Type())
		}
		return strings.Join(w, " ")
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-by", "alice@example.test"}, want(1, 3)},
		{[]string{"-by", "Alice@Example.test"}, want(1, 3)},
		{[]string{"-by", "admin:ops"}, want(0, 6)},
		{[]string{"-by", "http://im.other.test/instmsg/aliases/zed"}, want(5)},
		{[]string{"-by", "alice@example.test", "-user", "alice@example.test"}, want(0, 1, 3, 4, 5, 7)},
		{[]string{"-user", "alice@example.test"}, want(0, 4, 5, 7)},
	} {
		if got := seqs(c.args...); got != c.want {
			t.Errorf("audit %v:\n got %s\nwant %s", c.args, got, c.want)
		}
	}
	out, errOut, err := auditRun(url, "audit", "-user", "alice@example.test")
	if err != nil {
		t.Fatalf("audit: %v\n%s", err, errOut)
	}
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "zed") && !strings.Contains(l, "zed (unauthenticated") {
			t.Errorf("a request of another organisation's principal is not said unauthenticated: %q", l)
		}
		if strings.Contains(l, "system") && strings.Contains(l, "unauthenticated") {
			t.Errorf("a home node's own fact (a handoff's) is said unauthenticated: %q", l)
		}
	}
}

// TestAuditDomain: -domain shows what concerns an IM domain (DESIGN §7:
// the audit replays by domain): the facts of its users' nodes on every
// home server, its users' directory events and the domain's own; not
// another domain's. Before, there was no -domain.
func TestAuditDomain(t *testing.T) {
	url, js := startJetStream(t)
	ops := events.Meta{At: time.Now(), Actor: "admin:ops"}
	dave, erin := events.NewUser("acme.test", "dave"), events.NewUser("example.test", "erin")
	steps := []struct {
		subj string
		ev   events.Event
	}{
		{events.DomainSubject("acme.test"), &events.DomainCreated{Meta: ops, Domain: "acme.test", IMHost: "im.acme.test"}},
		{events.UserSubject(dave), &events.UserEnabled{Meta: ops, User: dave, Home: "home1"}},
		{events.UserSubject(erin), &events.UserEnabled{Meta: ops, User: erin, Home: "home1"}},
		{events.FactSubject("home1", dave), &events.ViewSet{Meta: ops, Node: dave, ID: 1, Value: "online"}},
		{events.FactSubject("home1", erin), &events.ViewSet{Meta: ops, Node: erin, ID: 1, Value: "online"}},
	}
	for _, s := range steps {
		publishEvent(t, js, s.subj, "", s.ev, nil)
	}
	out, errOut, err := auditRun(url, "-json", "audit", "-domain", "ACME.test")
	if err != nil {
		t.Fatalf("audit -domain: %v\n%s", err, errOut)
	}
	var got []string
	for _, e := range auditLines(t, out) {
		got = append(got, e.Subject)
	}
	if want := []string{steps[0].subj, steps[1].subj, steps[3].subj}; strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("audit -domain acme.test:\n got %s\nwant %s", got, want)
	}
	if _, _, err := auditRun(url, "audit", "-domain", "acme.test", "-user", "dave@acme.test"); err == nil {
		t.Error("audit -domain and -user together: no error")
	}
}

// TestAuditDomainBy: -domain with -by shows what the actor did within
// the domain: both must hold. Before, it showed either (every event of
// the domain, whoever did it, and what the actor did in other domains),
// nearly -domain alone, while -by said "only what this actor did".
func TestAuditDomainBy(t *testing.T) {
	url, js := startJetStream(t)
	ops := events.Meta{At: time.Now(), Actor: "admin:ops"}
	dave, erin := events.NewUser("acme.test", "dave"), events.NewUser("example.test", "erin")
	byErin := events.Meta{At: time.Now(), Request: "r1", Actor: "http://im.example.test/instmsg/aliases/erin", Auth: "ntlm:erin@example.test"}
	steps := []struct {
		subj string
		ev   events.Event
	}{
		{events.DomainSubject("acme.test"), &events.DomainCreated{Meta: ops, Domain: "acme.test", IMHost: "im.acme.test"}},
		{events.UserSubject(dave), &events.UserEnabled{Meta: ops, User: dave, Home: "home1"}},
		{events.UserSubject(erin), &events.UserEnabled{Meta: ops, User: erin, Home: "home1"}},
		{events.FactSubject("home1", dave), &events.MessageAccepted{Meta: byErin, Node: dave, Body: []byte("hi dave")}},
		{events.FactSubject("home1", erin), &events.ViewSet{Meta: byErin, Node: erin, ID: 1, Value: "online"}},
	}
	for _, s := range steps {
		publishEvent(t, js, s.subj, "", s.ev, nil)
	}
	for _, c := range []struct {
		by   string
		want []int
	}{
		{"admin:ops", []int{0, 1}},
		{"erin@example.test", []int{3}},
		{"admin:nobody", nil},
	} {
		out, errOut, err := auditRun(url, "-json", "audit", "-domain", "acme.test", "-by", c.by)
		if err != nil {
			t.Fatalf("audit -domain acme.test -by %s: %v\n%s", c.by, err, errOut)
		}
		var got, want []string
		for _, e := range auditLines(t, out) {
			got = append(got, e.Subject+"#"+e.Type)
		}
		for _, i := range c.want {
			want = append(want, steps[i].subj+"#"+steps[i].ev.Type())
		}
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("audit -domain acme.test -by %s:\n got %s\nwant %s", c.by, got, want)
		}
	}
	var help bytes.Buffer
	exec(context.Background(), []string{"audit", "-h"}, func(string) (string, bool) { return "", false }, strings.NewReader(""), &help, &help)
	if !strings.Contains(help.String(), "with -domain, only what the actor did within the domain (both must hold)") {
		t.Errorf("audit -h does not say what -by does with -domain:\n%s", help.String())
	}
}
