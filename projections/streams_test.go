package projections

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/rvp"
)

// TestRequestDuplicatesWindow: the requests and lookups streams
// deduplicate over DefaultRequestDuplicates, the directory's and the
// facts' over DefaultDuplicates; a request sent again with its id within
// the window is stored once. Streams of an older version (a 2-minute
// window) are brought to the new window where the streams' settings are
// imposed, and left as they are by a node that only creates what is
// missing (CreateOnly).
func TestRequestDuplicatesWindow(t *testing.T) {
	// A gateway sends a request again until its deadline, under
	// librvp's patience (rvpd refuses a -request.timeout as long); the
	// window covers that and a margin for the clocks of gateway, NATS
	// server and home node.
	if DefaultRequestDuplicates < rvp.ClientPatience+15*time.Second {
		t.Errorf("DefaultRequestDuplicates %s: want at least librvp's patience, %s, and 15 s", DefaultRequestDuplicates, rvp.ClientPatience)
	}
	ctx := t.Context()
	js := startJetStream(t) // EnsureStreams with the defaults
	if err := EnsureFactStream(ctx, js, "home1", StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	want := map[string]time.Duration{events.StreamRequests: DefaultRequestDuplicates, events.StreamLookups: DefaultRequestDuplicates,
		events.StreamDirectory: DefaultDuplicates, events.FactStream("home1"): DefaultDuplicates}
	window := func(name string) time.Duration {
		t.Helper()
		st, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		return st.CachedInfo().Config.Duplicates
	}
	for name, w := range want {
		if got := window(name); got != w {
			t.Errorf("stream %s: deduplication window %s, want %s", name, got, w)
		}
	}

	msg := nats.NewMsg(events.RequestRoot + ".home1.x")
	msg.Data = []byte("{}")
	for i := range 2 {
		ack, err := js.PublishMsg(ctx, msg, jetstream.WithMsgID("req-1"))
		if err != nil {
			t.Fatal(err)
		}
		if ack.Duplicate != (i == 1) || ack.Sequence != 1 {
			t.Errorf("publish %d of the same id: %+v, want sequence 1, duplicate %v", i+1, ack, i == 1)
		}
	}

	// An older version's streams.
	for _, name := range []string{events.StreamRequests, events.StreamLookups} {
		st, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		c := st.CachedInfo().Config
		c.Duplicates = 2 * time.Minute
		if _, err := js.UpdateStream(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	if err := EnsureStreams(ctx, js, StreamOptions{CreateOnly: true}); err != nil {
		t.Fatal(err)
	}
	if got := window(events.StreamRequests); got != 2*time.Minute {
		t.Errorf("after EnsureStreams with CreateOnly: window %s, want the 2m it had", got)
	}
	if err := EnsureStreams(ctx, js, StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{events.StreamRequests, events.StreamLookups} {
		if got := window(name); got != DefaultRequestDuplicates {
			t.Errorf("stream %s after EnsureStreams: window %s, want %s", name, got, DefaultRequestDuplicates)
		}
	}
	// The ids stored under the older window are still known.
	if ack, err := js.PublishMsg(ctx, msg, jetstream.WithMsgID("req-1")); err != nil || !ack.Duplicate {
		t.Errorf("the same id after the update: %+v, %v; want a duplicate", ack, err)
	}
}
