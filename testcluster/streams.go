package testcluster

import (
	"context"
	"fmt"
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

// ReadStream hands fn each message of stream from where cfg starts up to
// the stream's last message when it is called, through an ordered
// consumer's continuous pull (a Fetch on an ordered consumer makes its
// consumer again each time: a read of 200,000 facts took more than a
// minute so, and a consumer made just after one was deleted was once
// answered "no responders"). A silence of 10 s fails the read.
func ReadStream(ctx context.Context, js jetstream.JetStream, stream string, cfg jetstream.OrderedConsumerConfig, fn func(jetstream.Msg) error) error {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return err
	}
	state := st.CachedInfo().State
	last := state.LastSeq
	if last == 0 || cfg.OptStartSeq > last || (cfg.OptStartTime != nil && state.LastTime.Before(*cfg.OptStartTime)) {
		return nil // nothing from where cfg starts
	}
	cons, err := js.OrderedConsumer(ctx, stream, cfg)
	if err != nil {
		return fmt.Errorf("read %s: %w", stream, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("read %s: %w", stream, err)
	}
	defer it.Stop()
	for seq := uint64(0); seq < last; {
		mctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		m, err := it.Next(jetstream.NextContext(mctx))
		cancel()
		if err != nil {
			return fmt.Errorf("read %s up to %d: at %d: %w", stream, last, seq, err)
		}
		md, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("read %s: %w", stream, err)
		}
		seq = md.Sequence.Stream
		if err := fn(m); err != nil {
			return fmt.Errorf("%s seq %d: %w", stream, seq, err)
		}
	}
	return nil
}
