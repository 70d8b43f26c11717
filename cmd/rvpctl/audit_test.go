package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/testcluster/natstest"
)

// TestAuditTableEscapes: text a client controls (a mobile description,
// an alias, a Call-Back) cannot forge a line of rvpctl audit's table,
// recolour the terminal or reorder what follows it: control characters,
// ANSI escapes and bidi marks are shown escaped, one event a line, its
// columns aligned.
func TestAuditTableEscapes(t *testing.T) {
	at := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	mallory := events.NewUser("example.test", "mallory")
	forged := "x\n2026-12-06T12:00:01Z  99  user.password.v1  rvp.dir.user.example=2Etest.bob  admin  10.0.0.1  bob@example.test (verifiers sealed)"
	evs := []events.Event{
		&events.PropertySet{Meta: events.Meta{At: at, Actor: "mallory@example.test", Client: "10.0.0.9"}, Node: mallory,
			Value: events.PropValue{Prop: events.PropMobileDescription, Value: forged}},
		&events.PropertySet{Meta: events.Meta{At: at, Actor: "mallory@example.test", Client: "10.0.0.9"}, Node: mallory,
			Value: events.PropValue{Prop: events.PropMobileDescription, Value: "\x1b[2J\x1b[31mred\r\u0085\u202eevil\u2028"}},
		&events.SubscriptionCreated{Meta: events.Meta{At: at, Actor: "mallory\u200f@example.test"}, Node: events.NewUser("example.test", "m\u202eallory"),
			ID: 1, Kind: events.NotifyPragma, CallBack: "http://10.0.0.9:1/\t\v\x00"},
	}
	rows := [][]string{auditHeader}
	for i, ev := range evs {
		rows = append(rows, auditRow(auditEntry{Seq: uint64(i + 1), Time: at, Stream: events.FactStream("home1"), Type: ev.Type(), Subject: "rvp.evt.home1.x.y"}, ev))
	}
	var out bytes.Buffer
	table(&out, rows)
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != len(rows) {
		t.Errorf("%d rows printed as %d lines:\n%s", len(rows), len(lines), out.String())
	}
	for _, bad := range []string{"\x1b", "\r", "\u0085", "\u202e", "\u200f", "\u2028", "\t", "\v", "\x00"} {
		if strings.Contains(out.String(), bad) {
			t.Errorf("the table holds %q as it is:\n%s", bad, out.String())
		}
	}
	// Every column starts where its header does.
	for _, col := range []string{"STREAM", "SEQ", "TYPE", "NODE/SUBJECT", "ACTOR"} {
		at := strings.Index(lines[0], col)
		for _, l := range lines[1:] {
			if r := []rune(l); len(r) <= at || r[at-1] != ' ' || r[at] == ' ' {
				t.Errorf("column %s misaligned in %q", col, l)
			}
		}
	}
	if !strings.Contains(out.String(), `x\n2026-12-06T12:00:01Z`) {
		t.Errorf("the forged text is not shown escaped:\n%s", out.String())
	}
}

// startJetStream runs a NATS server with JetStream in this process, with
// a fact stream of home1 and the directory stream, and returns its URL
// and a JetStream client.
func startJetStream(t *testing.T) (string, jetstream.JetStream) {
	t.Helper()
	url, js := startNATS(t, "")
	ctx := context.Background()
	for name, subj := range map[string]string{events.FactStream("home1"): events.FactFilter("home1"), events.StreamDirectory: events.DirectoryFilter} {
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{subj}}); err != nil {
			t.Fatal(err)
		}
	}
	return url, js
}

// startNATS runs a NATS server with JetStream in this process, of
// JetStream domain domain ("" for none), with no stream, and returns its
// URL and a JetStream client.
func startNATS(t *testing.T, domain string) (string, jetstream.JetStream) {
	t.Helper()
	srv := natstest.Start(t, natstest.Listen(), natstest.Domain(domain))
	_, js := natstest.Connect(t, srv)
	return srv.ClientURL(), js
}

// publishEvent stores ev (or body, when ev is nil, as type typ) on subj.
func publishEvent(t *testing.T, js jetstream.JetStream, subj, typ string, ev events.Event, body []byte) {
	t.Helper()
	if ev != nil {
		var err error
		if body, err = events.Encode(ev); err != nil {
			t.Fatal(err)
		}
		typ = ev.Type()
	}
	m := nats.NewMsg(subj)
	m.Header.Set(events.HeaderType, typ)
	m.Data = body
	if _, err := js.PublishMsg(context.Background(), m); err != nil {
		t.Fatal(err)
	}
}

// TestAuditUndecodable: an event the audit cannot read is shown where it
// is, and the audit fails, saying how many it could not read: an
// auditor's replay that skipped events must not end as a success.
func TestAuditUndecodable(t *testing.T) {
	url, js := startJetStream(t)
	at := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	bob := events.NewUser("example.test", "bob")
	meta := events.Meta{At: at, Actor: "bob@example.test", Client: "10.0.0.9"}
	publishEvent(t, js, events.FactSubject("home1", bob), "", &events.ViewSet{Meta: meta, Node: bob, ID: 1, Value: "online"}, nil)
	publishEvent(t, js, events.FactSubject("home1", bob), events.TypeViewEnded, nil, []byte(`{"at":`))
	publishEvent(t, js, events.FactSubject("home1", bob), "acl.set.v9", nil, []byte(`{}`))
	publishEvent(t, js, events.FactSubject("home1", bob), "", &events.ViewEnded{Meta: meta, Node: bob, ID: 1, Reason: events.EndOffline}, nil)
	for _, mode := range [][]string{nil, {"-json"}} {
		var out, errOut bytes.Buffer
		lookup := func(k string) (string, bool) { return url, k == "RVPCTL_NATS" }
		err := exec(context.Background(), append(mode, "audit"), lookup, strings.NewReader(""), &out, &errOut)
		if err == nil || !strings.Contains(err.Error(), "2 events") {
			t.Errorf("audit %v over 2 undecodable events: %v, want an error counting them\n%s%s", mode, err, out.String(), errOut.String())
		}
		for _, want := range []string{"view.set.v1", "view.ended.v1", "acl.set.v9"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("audit %v lacks %s:\n%s", mode, want, out.String())
			}
		}
		want := "UNDECODABLE: "
		if mode != nil {
			want = `"undecodable":`
		}
		if n := strings.Count(out.String(), want); n != 2 {
			t.Errorf("audit %v shows %d events as undecodable, want 2:\n%s", mode, n, out.String())
		}
	}
}

// TestAuditNoBodies: -no-bodies leaves the bodies out, not their size:
// the table does not say a message of 11 bytes had none.
func TestAuditNoBodies(t *testing.T) {
	url, js := startJetStream(t)
	at := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	bob := events.NewUser("example.test", "bob")
	meta := events.Meta{At: at, Actor: "alice@example.test", Client: "10.0.0.9"}
	publishEvent(t, js, events.FactSubject("home1", bob), "", &events.MessageAccepted{Meta: meta, Node: bob, Endpoints: 1, Body: []byte("hello world")}, nil)
	var out, errOut bytes.Buffer
	lookup := func(k string) (string, bool) { return url, k == "RVPCTL_NATS" }
	if err := exec(context.Background(), []string{"audit", "-no-bodies"}, lookup, strings.NewReader(""), &out, &errOut); err != nil {
		t.Fatalf("audit -no-bodies: %v\n%s", err, errOut.String())
	}
	if !strings.Contains(out.String(), "11 bytes") {
		t.Errorf("audit -no-bodies does not say the body's size:\n%s", out.String())
	}
	out.Reset()
	if err := exec(context.Background(), []string{"-json", "audit", "-no-bodies"}, lookup, strings.NewReader(""), &out, &errOut); err != nil {
		t.Fatalf("audit -json -no-bodies: %v\n%s", err, errOut.String())
	}
	if strings.Contains(out.String(), `"body":`) {
		t.Errorf("audit -json -no-bodies shows a body:\n%s", out.String())
	}
}

// TestAuditFence: a takeover's fence (a window's worth of facts) shows
// in the table as its first and last facts, and in -json as every one.
func TestAuditFence(t *testing.T) {
	url, js := startJetStream(t)
	at := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	const parts = 6
	for i := 1; i <= parts; i++ {
		f := &events.HomeFenced{Meta: events.Meta{At: at, Actor: "system", Home: "home1"}, Holder: "node-b", Term: 812, Part: i, Parts: parts}
		publishEvent(t, js, events.FactSubject("home1", events.User{}), "", f, nil)
	}
	lookup := func(k string) (string, bool) { return url, k == "RVPCTL_NATS" }
	for _, c := range []struct {
		args []string
		want int
	}{{[]string{"audit"}, 2}, {[]string{"-json", "audit"}, parts}} {
		var out, errOut bytes.Buffer
		if err := exec(context.Background(), c.args, lookup, strings.NewReader(""), &out, &errOut); err != nil {
			t.Fatalf("%v: %v\n%s", c.args, err, errOut.String())
		}
		if n := strings.Count(out.String(), events.TypeHomeFenced); n != c.want {
			t.Errorf("%v shows %d fence facts, want %d:\n%s", c.args, n, c.want, out.String())
		}
		if c.want == 2 && (!strings.Contains(out.String(), "owned by node node-b from here (lease revision 812)") || !strings.Contains(out.String(), "fence 6 of 6")) {
			t.Errorf("the table does not show the fence's first and last facts:\n%s", out.String())
		}
	}
}

// TestAuditRedactsVerifiers: the audit never prints password verifiers,
// sealed though they are (DESIGN §4.6): a password.set or admin.set in
// -json says its verifiers were redacted, and holds none of their bytes.
func TestAuditRedactsVerifiers(t *testing.T) {
	url, js := startJetStream(t)
	at := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	bob := events.NewUser("example.test", "bob")
	sealed := []byte("sealed-verifiers-of-bob-0123456789")
	meta := events.Meta{At: at, Actor: "admin:admin"}
	ps := &events.PasswordSet{Meta: meta, User: bob, Verifiers: sealed}
	publishEvent(t, js, ps.DirSubject(), "", ps, nil)
	as := &events.AdminSet{Meta: meta, Name: "ops", Role: events.RoleOrganization, Verifiers: sealed}
	publishEvent(t, js, as.DirSubject(), "", as, nil)
	var out, errOut bytes.Buffer
	lookup := func(k string) (string, bool) { return url, k == "RVPCTL_NATS" }
	if err := exec(context.Background(), []string{"-json", "audit"}, lookup, strings.NewReader(""), &out, &errOut); err != nil {
		t.Fatalf("audit: %v\n%s", err, errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("audit -json: %d lines, want 2:\n%s", len(lines), out.String())
	}
	for _, l := range lines {
		var e struct {
			Type     string          `json:"type"`
			Event    json.RawMessage `json:"event"`
			Redacted []string        `json:"redacted"`
		}
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(l, base64.StdEncoding.EncodeToString(sealed)) {
			t.Errorf("%s: the audit prints the sealed verifiers: %s", e.Type, l)
		}
		if !slices.Equal(e.Redacted, []string{"verifiers"}) {
			t.Errorf("%s: redacted %q, want [verifiers]: %s", e.Type, e.Redacted, l)
		}
	}

	// A type this rvpctl does not know: shown, its verifiers not.
	publishEvent(t, js, ps.DirSubject(), "user.password.v9", nil, []byte(`{"user":{"domain":"example.test","alias":"bob"},"verifiers":"`+base64.StdEncoding.EncodeToString(sealed)+`"}`))
	out.Reset()
	if err := exec(context.Background(), []string{"-json", "audit"}, lookup, strings.NewReader(""), &out, &errOut); err == nil {
		t.Error("audit over an undecodable event: no error")
	}
	if !strings.Contains(out.String(), "user.password.v9") || strings.Contains(out.String(), base64.StdEncoding.EncodeToString(sealed)) {
		t.Errorf("audit of an unknown password event:\n%s", out.String())
	}
}

// TestStatusSites: rvpctl status works on a site of a deployment of
// several sites, which has no shared requests stream but one per home
// server (docs/sites.md), and lists those.
func TestStatusSites(t *testing.T) {
	url, js := startJetStream(t)
	ctx := context.Background()
	for name, subj := range map[string]string{events.RequestStream("home1"): events.RequestFilter("home1"), events.StreamLookups: events.LookupSubject("site1")} {
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{subj}}); err != nil {
			t.Fatal(err)
		}
	}
	var out, errOut bytes.Buffer
	lookup := func(k string) (string, bool) { return url, k == "RVPCTL_NATS" }
	if err := exec(ctx, []string{"status"}, lookup, strings.NewReader(""), &out, &errOut); err != nil {
		t.Fatalf("status of a site: %v\n%s", err, errOut.String())
	}
	for _, want := range []string{events.RequestStream("home1"), events.FactStream("home1"), events.StreamDirectory, events.StreamLookups} {
		if !strings.Contains(out.String(), want+" ") {
			t.Errorf("status lacks stream %s:\n%s", want, out.String())
		}
	}

	// One JetStream domain: the shared requests stream.
	url, js = startJetStream(t)
	for name, subj := range map[string]string{events.StreamRequests: events.RequestRoot + ".>", events.StreamLookups: events.LookupRoot + ".>"} {
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{subj}}); err != nil {
			t.Fatal(err)
		}
	}
	out.Reset()
	if err := exec(ctx, []string{"status"}, func(k string) (string, bool) { return url, k == "RVPCTL_NATS" }, strings.NewReader(""), &out, &errOut); err != nil {
		t.Fatalf("status: %v\n%s", err, errOut.String())
	}
	if !strings.Contains(out.String(), events.StreamRequests+" ") {
		t.Errorf("status lacks stream %s:\n%s", events.StreamRequests, out.String())
	}
}

// TestAuditLegacyTime: a fact copied from the single fact stream of older
// versions (projections.MigrateFacts) is shown at the time it was stored
// there, with its sequence there, not at the time it was copied; and
// -since selects it by that time.
func TestAuditLegacyTime(t *testing.T) {
	url, js := startJetStream(t)
	stored := publishLegacyFact(t, js, "home1")
	lookup := func(k string) (string, bool) { return url, k == "RVPCTL_NATS" }
	run := func(args ...string) string {
		t.Helper()
		var out, errOut bytes.Buffer
		if err := exec(context.Background(), args, lookup, strings.NewReader(""), &out, &errOut); err != nil {
			t.Fatalf("rvpctl %v: %v\n%s", args, err, errOut.String())
		}
		return out.String()
	}
	var e struct {
		Time      time.Time `json:"time"`
		LegacySeq uint64    `json:"legacy_seq"`
	}
	if err := json.Unmarshal([]byte(run("-json", "audit")), &e); err != nil || !e.Time.Equal(stored) || e.LegacySeq != 7 {
		t.Errorf("audit -json of a copied fact: %+v %v, want time %s, legacy_seq 7", e, err, stored)
	}
	if table := run("audit"); !strings.Contains(table, stored.Format(time.RFC3339)) {
		t.Errorf("audit's table does not show the copied fact at %s:\n%s", stored.Format(time.RFC3339), table)
	}
	if out := run("-json", "audit", "-since", "1h"); strings.TrimSpace(out) != "" {
		t.Errorf("audit -since 1h shows a fact stored in January:\n%s", out)
	}
}

// publishLegacyFact publishes into home's fact stream a fact of bob's as
// projections.MigrateFacts copies one from the single fact stream of
// older versions: stored there as sequence 7 on 2 January, which it
// returns.
func publishLegacyFact(t *testing.T, js jetstream.JetStream, home string) time.Time {
	t.Helper()
	bob := events.NewUser("example.test", "bob")
	stored := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	body, err := events.Encode(&events.ViewSet{Meta: events.Meta{At: stored, Actor: "bob@example.test"}, Node: bob, ID: 1, Value: "busy"})
	if err != nil {
		t.Fatal(err)
	}
	m := nats.NewMsg(events.FactSubject(home, bob))
	m.Header.Set(events.HeaderType, events.TypeViewSet)
	m.Header.Set(events.HeaderLegacySeq, "7")
	m.Header.Set(events.HeaderLegacyTime, stored.Format(time.RFC3339Nano))
	m.Data = body
	if _, err := js.PublishMsg(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	return stored
}

// deleteOnWrite deletes a stream at the first write to it, then writes.
type deleteOnWrite struct {
	bytes.Buffer
	js      jetstream.JetStream
	stream  string
	deleted error
	once    sync.Once
}

func (w *deleteOnWrite) Write(p []byte) (int, error) {
	w.once.Do(func() { w.deleted = w.js.DeleteStream(context.Background(), w.stream) })
	return w.Buffer.Write(p)
}

// TestAuditStreamFailsMidway: a stream that fails once the audit has
// shown some of its events (deleted here while its first batch is being
// shown) is said to be read up to the last sequence taken, with how
// many, not as if none of its events were shown; and the audit fails
// naming from where on it is incomplete. Before, the audit did not end:
// the reader's ordered consumer, created anew at each fetch, was
// created again forever (the test's timeout ends it).
func TestAuditStreamFailsMidway(t *testing.T) {
	url, js := startJetStream(t)
	ctx := context.Background()
	const n = 1000 // more than one batch (512)
	bob := events.NewUser("example.test", "bob")
	for i := range n {
		publishEvent(t, js, events.FactSubject("home1", bob), "", &events.ViewSet{Meta: events.Meta{At: time.Now()}, Node: bob, ID: int32(i + 1), Value: "online"}, nil)
	}
	out := &deleteOnWrite{js: js, stream: events.FactStream("home1")}
	var errOut bytes.Buffer
	lookup := func(k string) (string, bool) { return url, k == "RVPCTL_NATS" }
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	err := exec(cctx, []string{"-json", "audit"}, lookup, strings.NewReader(""), out, &errOut)
	if out.deleted != nil {
		t.Fatalf("delete the stream: %v", out.deleted)
	}
	shown := auditLines(t, out.String())
	if len(shown) == 0 || len(shown) >= n {
		t.Fatalf("%d events shown of %d, want those of the batches read before the stream was deleted\n%s", len(shown), n, errOut.String())
	}
	last := shown[len(shown)-1]
	wantErr := fmt.Sprintf("rvpctl: %s could not be read past sequence %d: ", last.Stream, last.Seq)
	wantRead := fmt.Sprintf("the audit read its %s events up to it (those it selects are shown), and shows none after it", thousands(uint64(len(shown))))
	if !strings.Contains(errOut.String(), wantErr) || !strings.Contains(errOut.String(), wantRead) || strings.Contains(errOut.String(), "its events are not shown") {
		t.Errorf("stderr:\n%s\nwant %q ... %q", errOut.String(), wantErr, wantRead)
	}
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("1 stream could not be read (%s after sequence %d): the audit is incomplete", last.Stream, last.Seq)) {
		t.Errorf("audit: %v, want it to fail naming from where the stream is missing", err)
	}
}
