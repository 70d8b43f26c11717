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
