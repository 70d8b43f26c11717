package main

import (
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	dto "github.com/prometheus/client_model/go"

	"github.com/rvp-im/rvpd/events"
)

// TestMetricsStorage: rvpd dev reports, at each scrape, the streams its
// roles use as JetStream holds them (bytes, messages, the size bound
// -requests.max-bytes gave the requests and lookups streams, none for
// the facts and the directory), no request of its home server waiting,
// and its account's storage used, without a limit (the embedded server's
// account has none).
func TestMetricsStorage(t *testing.T) {
	const maxBytes = 8 << 20
	p, ops := startDevOps(t, "-requests.max-bytes", fmt.Sprint(maxBytes))
	alice := newClient(t, p.addr, "alice")
	mustStatus(t, "alice login", alice.Login(14400), 200)
	mustStatus(t, "alice online", alice.SetState("online", 1200, 0), 207)
	bob := newClient(t, p.addr, "bob")
	mustStatus(t, "bob login", bob.Login(14400), 200)
	mustStatus(t, "bob → alice", bob.Send("alice", bob.MessageBody("alice", "hello")), 200)

	facts := events.FactStream(demoHome)
	streams := []string{events.StreamRequests, events.StreamLookups, events.StreamDirectory, facts}
	// The figures a scrape shows are up to storageFresh old: polled until
	// they are the streams' own, which nothing changes now.
	var fams map[string]*dto.MetricFamily
	var states map[string]jetstream.StreamState
	deadline := time.Now().Add(20 * time.Second)
	for {
		states = streamStates(t, p.natsURL)
		fams = scrape(t, ops)
		same := true
		for _, s := range streams {
			same = same && metric(fams, "rvpd_stream_bytes", "stream="+s) == float64(states[s].Bytes) &&
				metric(fams, "rvpd_stream_messages", "stream="+s) == float64(states[s].Msgs)
		}
		if same {
			break
		}
		if time.Now().After(deadline) {
			for _, s := range streams {
				t.Errorf("%s: rvpd_stream_bytes %v, rvpd_stream_messages %v; the stream holds %d bytes in %d messages", s,
					metric(fams, "rvpd_stream_bytes", "stream="+s), metric(fams, "rvpd_stream_messages", "stream="+s), states[s].Bytes, states[s].Msgs)
			}
			t.FailNow()
		}
		time.Sleep(100 * time.Millisecond)
	}
	if states[facts].Msgs < 4 || states[events.StreamRequests].Msgs < 4 || states[events.StreamDirectory].Msgs == 0 {
		t.Errorf("the session left %+v", states)
	}
	for _, c := range []struct {
		stream string
		want   float64
	}{{events.StreamRequests, maxBytes}, {events.StreamLookups, maxBytes}, {events.StreamDirectory, 0}, {facts, 0}} {
		if got := metric(fams, "rvpd_stream_max_bytes", "stream="+c.stream); got != c.want {
			t.Errorf("rvpd_stream_max_bytes{stream=%q} %v, want %v", c.stream, got, c.want)
		}
	}
	if f := fams["rvpd_stream_waiting_bytes"]; f == nil || len(f.GetMetric()) != 1 {
		t.Errorf("rvpd_stream_waiting_bytes: %v, want one series, the demo home server's", f)
	} else if got := metric(fams, "rvpd_stream_waiting_bytes", "stream="+events.StreamRequests, "home="+demoHome); got != 0 {
		t.Errorf("rvpd_stream_waiting_bytes{%s} %v with every request answered, want 0", demoHome, got)
	}
	var total uint64
	for _, s := range streams {
		total += states[s].Bytes
	}
	if got := metric(fams, "rvpd_jetstream_storage_bytes"); got < float64(total) {
		t.Errorf("rvpd_jetstream_storage_bytes %v, less than the %d bytes of the streams", got, total)
	}
	if fams["rvpd_jetstream_storage_limit_bytes"] == nil || metric(fams, "rvpd_jetstream_storage_limit_bytes") != 0 {
		t.Errorf("rvpd_jetstream_storage_limit_bytes %v, want 0: the embedded server's account has no limit", fams["rvpd_jetstream_storage_limit_bytes"])
	}
	if got := metric(fams, "rvpd_jetstream_storage_reserved_bytes"); got < 2*maxBytes {
		t.Errorf("rvpd_jetstream_storage_reserved_bytes %v, want at least the requests and lookups streams' %d each", got, maxBytes)
	}
}

// TestWaitingBytes: the bytes from a home server's oldest request not
// acknowledged to the stream's end.
func TestWaitingBytes(t *testing.T) {
	st := jetstream.StreamState{Msgs: 100, Bytes: 100_000, FirstSeq: 101, LastSeq: 200}
	for _, c := range []struct {
		name string
		ci   jetstream.ConsumerInfo
		want float64
	}{
		{"none waiting", jetstream.ConsumerInfo{AckFloor: jetstream.SequenceInfo{Stream: 150}}, 0},
		{"the last 10", jetstream.ConsumerInfo{NumPending: 10, AckFloor: jetstream.SequenceInfo{Stream: 190}}, 10_000},
		{"one taken, not acknowledged", jetstream.ConsumerInfo{NumAckPending: 1, AckFloor: jetstream.SequenceInfo{Stream: 199}}, 1_000},
		{"the oldest already dropped", jetstream.ConsumerInfo{NumPending: 500, AckFloor: jetstream.SequenceInfo{Stream: 20}}, 100_000},
	} {
		if got := waitingBytes(st, &c.ci); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
	if got := waitingBytes(jetstream.StreamState{}, &jetstream.ConsumerInfo{NumPending: 3}); got != 0 {
		t.Errorf("empty stream: %v", got)
	}
}
