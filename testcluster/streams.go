package testcluster

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
)

// StreamStates returns the state of every stream of the service (requests,
// each home server's facts, directory, lookups), by name: tests compare them around a request
// to show it stored nothing.
func StreamStates(t testing.TB, js jetstream.JetStream) map[string]jetstream.StreamState {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out := map[string]jetstream.StreamState{}
	facts, err := projections.FactStreams(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range slices.Concat([]string{events.StreamRequests, events.StreamDirectory, events.StreamLookups}, facts) {
		st, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		out[name] = info.State
	}
	return out
}

// LastSeqs returns the last sequence of every stream of the service.
func LastSeqs(t testing.TB, js jetstream.JetStream) map[string]uint64 {
	t.Helper()
	out := map[string]uint64{}
	for name, st := range StreamStates(t, js) {
		out[name] = st.LastSeq
	}
	return out
}
