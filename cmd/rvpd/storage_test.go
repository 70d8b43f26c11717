package main

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/testcluster/natstest"
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

// TestScrapeWithoutJetStreamWaitsOnce: a scrape while NATS does not
// answer takes one question's wait (2 s), not one per home server the
// process stands by for. rvpd_ready reports /readyz's conditions at each
// scrape, and each home server's asks its lease of JetStream for up to
// 2 s: asked one after the other, a standby of 4 home servers took 8 s
// to scrape, of 10 past Prometheus's default scrape_timeout (10 s):
// the process counted down (RvpdDown: "a home node died") while
// alive, and each console page and /readyz waited as long.
func TestScrapeWithoutJetStreamWaitsOnce(t *testing.T) {
	ns, nc, js := embeddedJetStream(t)
	kv, err := js.CreateKeyValue(context.Background(), jetstream.KeyValueConfig{Bucket: events.BucketOwners})
	if err != nil {
		t.Fatal(err)
	}
	o := newOps("n1", nc, slog.New(slog.DiscardHandler))
	const homes = 4
	for i := range homes {
		o.homeReadiness(fmt.Sprintf("home%d", i+1), kv, "n1")
	}
	stopNATS(t, ns, nc)

	start := time.Now()
	fams, err := o.reg.Gather()
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if took >= 2*storageTimeout {
		t.Errorf("a scrape of a standby of %d home servers without NATS took %s: its home servers' conditions were asked one after the other", homes, took.Round(time.Millisecond))
	}
	for _, f := range fams {
		if f.GetName() != "rvpd_ready" {
			continue
		}
		if len(f.GetMetric()) != homes+1 {
			t.Errorf("rvpd_ready: %d series, want nats and the %d home servers", len(f.GetMetric()), homes)
		}
		for _, m := range f.GetMetric() {
			if m.GetGauge().GetValue() != 0 {
				t.Errorf("rvpd_ready %v without NATS: %v, want 0", m.GetLabel(), m.GetGauge().GetValue())
			}
		}
	}
}

// TestMetricsStorageKeptWhenUnread: a scrape that cannot read a stream
// again (deleted since; NATS not connected) reports the figures last
// read of it and of the account, for up to the collector's keep, then
// leaves them out. It reported none at once: the series vanished for
// that scrape, and the alerts on them (RvpdRequestsAboutToBeDropped)
// started their "for:" again exactly while NATS was overloaded.
func TestMetricsStorageKeptWhenUnread(t *testing.T) {
	ns, nc, js := embeddedJetStream(t)
	ctx := context.Background()
	for _, name := range []string{"KEPT", "GONE"} {
		st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{name}, MaxBytes: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.Publish(ctx, name, []byte("x")); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Info(ctx); err != nil {
			t.Fatal(err)
		}
	}
	c := newStorageCollector(nc, slog.New(slog.DiscardHandler))
	c.watch(js, "KEPT", "GONE")
	// figures scrapes c, read again (watch forgets when it last read).
	figures := func() map[string]float64 {
		t.Helper()
		c.watch(js)
		reg := prometheus.NewRegistry()
		reg.MustRegister(c)
		fams, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]float64{}
		for _, f := range fams {
			for _, m := range f.GetMetric() {
				key := f.GetName()
				for _, l := range m.GetLabel() {
					key += "," + l.GetName() + "=" + l.GetValue()
				}
				out[key] = m.GetGauge().GetValue()
			}
		}
		return out
	}
	want := figures()
	for _, k := range []string{"rvpd_stream_messages,stream=KEPT", "rvpd_stream_messages,stream=GONE", "rvpd_stream_max_bytes,stream=GONE", "rvpd_jetstream_storage_bytes,domain="} {
		if _, ok := want[k]; !ok {
			t.Fatalf("first scrape without %s: %v", k, want)
		}
	}
	readAt := time.Now()

	if err := js.DeleteStream(ctx, "GONE"); err != nil {
		t.Fatal(err)
	}
	// The account is read again (it holds one stream less), the deleted
	// stream is as last read.
	got := figures()
	streams := func(m map[string]float64) map[string]float64 {
		return maps.Collect(func(yield func(string, float64) bool) {
			for k, v := range m {
				if strings.Contains(k, ",stream=") && !yield(k, v) {
					return
				}
			}
		})
	}
	if !maps.Equal(streams(got), streams(want)) {
		t.Errorf("a stream deleted since the last read:\n got %v\nwant %v (as last read)", got, want)
	}
	if got["rvpd_jetstream_storage_bytes,domain="] >= want["rvpd_jetstream_storage_bytes,domain="] {
		t.Errorf("the account read again after a stream was deleted: %v, was %v", got, want)
	}
	want = got

	stopNATS(t, ns, nc)
	if got := figures(); !maps.Equal(got, want) {
		t.Errorf("NATS not connected:\n got %v\nwant %v (as last read)", got, want)
	}

	// Past keep, nothing: figures that old are no news.
	const keep = 500 * time.Millisecond
	c.mu.Lock()
	c.keep = keep
	c.mu.Unlock()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := figures()
		if len(got) == 0 {
			if since := time.Since(readAt); since < keep {
				t.Errorf("figures dropped %s after they were read, before keep (%s)", since, keep)
			}
			break
		}
		if !maps.Equal(got, want) {
			t.Fatalf("NATS not connected:\n got %v\nwant %v (as last read) or nothing", got, want)
		}
		if time.Now().After(deadline) {
			t.Fatalf("figures read %s ago still reported, keep %s: %v", time.Since(readAt), keep, got)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// embeddedJetStream starts a NATS server with JetStream on loopback and
// connects to it for as long as the test runs (reconnecting for ever,
// as rvpd does).
func embeddedJetStream(t *testing.T) (*server.Server, *nats.Conn, jetstream.JetStream) {
	t.Helper()
	ns := natstest.Start(t, natstest.Listen())
	nc, js := natstest.Connect(t, ns, nats.MaxReconnects(-1))
	return ns, nc, js
}

// stopNATS shuts ns down and waits until nc, its client, says it is no
// longer connected.
func stopNATS(t *testing.T, ns *server.Server, nc *nats.Conn) {
	t.Helper()
	ns.Shutdown()
	ns.WaitForShutdown()
	deadline := time.Now().Add(10 * time.Second)
	for nc.IsConnected() {
		if time.Now().After(deadline) {
			t.Fatal("the client still connected 10 s after its NATS server stopped")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
