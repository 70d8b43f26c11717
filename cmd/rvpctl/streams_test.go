package main

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
)

// TestStreamsUpgrade: a requests stream of a cluster set up before
// handoffs were kept past its max age (no per-message TTLs) is named by
// status with what to run; "streams upgrade -dry-run" changes nothing;
// "streams upgrade" allows them, after which a handoff marked to be kept
// (Nats-TTL: never) is taken by the stream, and status says nothing more.
func TestStreamsUpgrade(t *testing.T) {
	url, js := startJetStream(t)
	ctx := context.Background()
	for name, subj := range map[string]string{events.StreamRequests: events.RequestRoot + ".>", events.StreamLookups: events.LookupRoot + ".>"} {
		// As an older version made them: a 2-minute deduplication window,
		// no per-message TTLs.
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{subj}, Duplicates: 2 * time.Minute}); err != nil {
			t.Fatal(err)
		}
	}
	lookup := func(k string) (string, bool) { return url, k == "RVPCTL_NATS" }
	run := func(args ...string) (string, string) {
		t.Helper()
		var out, errOut bytes.Buffer
		if err := exec(ctx, args, lookup, strings.NewReader(""), &out, &errOut); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, errOut.String())
		}
		return out.String(), errOut.String()
	}
	kept := func() error {
		m := nats.NewMsg(events.RequestRoot + ".home1.x")
		m.Header.Set("Nats-TTL", "never")
		_, err := js.PublishMsg(ctx, m)
		return err
	}
	if err := kept(); err == nil {
		t.Fatal("a message marked Nats-TTL: never was taken by a stream without per-message TTLs; the test proves nothing")
	}

	_, warned := run("status")
	if !strings.Contains(warned, "requests stream "+events.StreamRequests+" does not allow per-message TTLs") || !strings.Contains(warned, "rvpctl streams upgrade") {
		t.Errorf("status's warnings: %q, want RVP_REQ named and the command to run", warned)
	}

	out, _ := run("streams", "upgrade", "-dry-run")
	if !strings.Contains(out, "WOULD BE") || !strings.Contains(out, "\n"+events.StreamRequests+"     allow_msg_ttl     false  true\n") ||
		!strings.Contains(out, "duplicate_window  2m0s   45s\n") {
		t.Errorf("dry run: %q", out)
	}
	if err := kept(); err == nil {
		t.Fatal("after a dry run, the stream takes per-message TTLs")
	}

	out, _ = run("-json", "streams", "upgrade")
	var got []streamChange
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var c streamChange
		if err := json.Unmarshal([]byte(l), &c); err != nil {
			t.Fatalf("streams upgrade -json: %q: %v", out, err)
		}
		got = append(got, c)
	}
	want := []streamChange{
		{Stream: events.StreamRequests, Setting: "allow_msg_ttl", Was: "false", Now: "true", Changed: true},
		{Stream: events.StreamRequests, Setting: "duplicate_window", Was: "2m0s", Now: "45s", Changed: true},
		{Stream: events.StreamLookups, Setting: "duplicate_window", Was: "2m0s", Now: "45s", Changed: true},
	}
	if !slices.Equal(got, want) {
		t.Errorf("streams upgrade: %+v\nwant %+v", got, want)
	}
	for _, name := range []string{events.StreamRequests, events.StreamLookups} {
		st, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if d := st.CachedInfo().Config.Duplicates; d != projections.DefaultRequestDuplicates {
			t.Errorf("%s's duplicate window after the upgrade: %v", name, d)
		}
	}
	if err := kept(); err != nil {
		t.Errorf("a kept handoff after the upgrade: %v", err)
	}
	if _, warned := run("status"); strings.Contains(warned, "per-message TTLs") {
		t.Errorf("status still warns after the upgrade: %q", warned)
	}
	out, _ = run("streams", "upgrade")
	if out != "nothing to change: RVP_REQ, RVP_LOOKUP as this version creates them\n" {
		t.Errorf("streams upgrade again: %q, want nothing changed", out)
	}
}

// TestStreamsUpgradeKeepsTheRest: at a site of a deployment of several,
// "streams upgrade" changes on each home server's requests stream only
// per-message TTLs and the deduplication window: what its administrator
// set otherwise (a description, a max age, a size bound, metadata, a
// placement tag) is as it was. Run against the hub, whose gateways have
// a lookups stream but which has no home server (no requests stream),
// it upgrades the lookups stream; before, it refused ("no requests
// stream ... is this a site's NATS?") and left the hub's lookups their
// 2-minute window.
func TestStreamsUpgradeKeepsTheRest(t *testing.T) {
	ctx := t.Context()
	url, js := startNATS(t, "a")
	lookup := func(k string) (string, bool) { return url, k == "RVPCTL_NATS" }
	var was []jetstream.StreamConfig
	for i, home := range []string{"home1", "home2"} {
		c := jetstream.StreamConfig{Name: events.RequestStream(home), Subjects: []string{events.RequestFilter(home)},
			Description: "requests of " + home + ", kept 3 h by ops", MaxAge: 3 * time.Hour, MaxBytes: int64(64+i) << 20,
			Discard: jetstream.DiscardOld, Duplicates: 2 * time.Minute, Metadata: map[string]string{"owner": "ops"}}
		if _, err := js.CreateStream(ctx, c); err != nil {
			t.Fatal(err)
		}
		st, err := js.Stream(ctx, c.Name)
		if err != nil {
			t.Fatal(err)
		}
		was = append(was, st.CachedInfo().Config)
	}
	var out, errOut bytes.Buffer
	if err := exec(ctx, []string{"streams", "upgrade"}, lookup, strings.NewReader(""), &out, &errOut); err != nil {
		t.Fatalf("streams upgrade: %v\n%s", err, errOut.String())
	}
	for _, w := range was {
		st, err := js.Stream(ctx, w.Name)
		if err != nil {
			t.Fatal(err)
		}
		now := st.CachedInfo().Config
		if !now.AllowMsgTTL || now.Duplicates != projections.DefaultRequestDuplicates {
			t.Errorf("%s after the upgrade: allow_msg_ttl %v, duplicate window %s", w.Name, now.AllowMsgTTL, now.Duplicates)
		}
		if now.Metadata["owner"] != "ops" {
			t.Errorf("%s's metadata after the upgrade: %v", w.Name, now.Metadata)
		}
		// Everything else as the administrator left it.
		w.AllowMsgTTL, w.Duplicates, w.Metadata = now.AllowMsgTTL, now.Duplicates, now.Metadata
		wj, _ := json.Marshal(w)
		nj, _ := json.Marshal(now)
		if !bytes.Equal(wj, nj) {
			t.Errorf("%s's configuration changed beyond the two settings:\nwas %s\nnow %s", w.Name, wj, nj)
		}
	}

	// The hub: a lookups stream, no requests stream.
	hubURL, hub := startNATS(t, "hub")
	if _, err := hub.CreateStream(ctx, jetstream.StreamConfig{Name: events.StreamLookups, Subjects: []string{events.LookupSubject("hub")},
		Retention: jetstream.WorkQueuePolicy, Duplicates: 2 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	errOut.Reset()
	hubLookup := func(k string) (string, bool) { return hubURL, k == "RVPCTL_NATS" }
	if err := exec(ctx, []string{"streams", "upgrade"}, hubLookup, strings.NewReader(""), &out, &errOut); err != nil {
		t.Fatalf("streams upgrade at the hub: %v\n%s", err, errOut.String())
	}
	st, err := hub.Stream(ctx, events.StreamLookups)
	if err != nil {
		t.Fatal(err)
	}
	if d := st.CachedInfo().Config.Duplicates; d != projections.DefaultRequestDuplicates {
		t.Errorf("the hub's lookups stream's duplicate window after the upgrade: %s\n%s", d, out.String())
	}

	// Where there is neither, what to do is said.
	emptyURL, _ := startNATS(t, "")
	err = exec(ctx, []string{"streams", "upgrade"}, func(k string) (string, bool) { return emptyURL, k == "RVPCTL_NATS" }, strings.NewReader(""), &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "no requests or lookups stream") {
		t.Errorf("streams upgrade where there is no stream: %v", err)
	}
}

// TestStreamsUpgradeFailsHalfway: when one stream cannot be upgraded
// (here a lookups stream whose max age, 30 s, an administrator set below
// the 45 s window: JetStream refuses a window longer than the max age,
// "duplicates window can not be larger then max age"), what was changed
// before is shown, and the error says which were and what to do.
func TestStreamsUpgradeFailsHalfway(t *testing.T) {
	ctx := t.Context()
	url, js := startNATS(t, "")
	for _, c := range []jetstream.StreamConfig{
		{Name: events.StreamRequests, Subjects: []string{events.RequestRoot + ".>"}, Duplicates: 2 * time.Minute},
		{Name: events.StreamLookups, Subjects: []string{events.LookupRoot + ".>"}, MaxAge: 30 * time.Second, Duplicates: 30 * time.Second},
	} {
		if _, err := js.CreateStream(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	var out, errOut bytes.Buffer
	err := exec(ctx, []string{"streams", "upgrade"}, func(k string) (string, bool) { return url, k == "RVPCTL_NATS" }, strings.NewReader(""), &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), events.StreamLookups+": its max age 30s is shorter than the 45s deduplication window") || !strings.Contains(err.Error(), "run the command again") {
		t.Errorf("streams upgrade with a lookups stream it cannot upgrade: %v", err)
	}
	if !strings.Contains(out.String(), events.StreamRequests+"  allow_msg_ttl") {
		t.Errorf("what was upgraded before the failure is not shown: %q", out.String())
	}
}
