package main

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rvp-im/rvpd/homenode"
)

// What a scrape reads of JetStream is read within storageTimeout, and
// read again only once it is storageFresh old: the console asks every
// process for its metrics on each of its pages (ops.text), and those
// read the figures a scrape read. A stream's figures (or the account's)
// that could not be read again are those last read, while they are
// less than storageKeep old: a series that vanished for a scrape would
// restart the "for:" of the alerts on it (RvpdRequestsAboutToBeDropped)
// exactly while NATS is too loaded to answer in time.
const (
	storageTimeout = 2 * time.Second
	storageFresh   = 5 * time.Second
	storageKeep    = time.Minute
)

var (
	streamBytesDesc = prometheus.NewDesc("rvpd_stream_bytes",
		"Bytes a JetStream stream this process's roles use holds, as its NATS server says at the scrape.",
		[]string{"stream"}, nil)
	streamMaxBytesDesc = prometheus.NewDesc("rvpd_stream_max_bytes",
		"The stream's size bound (MaxBytes; 0: none). A requests or lookups stream drops its oldest messages past it.",
		[]string{"stream"}, nil)
	streamMessagesDesc = prometheus.NewDesc("rvpd_stream_messages",
		"Messages the stream holds.",
		[]string{"stream"}, nil)
	streamWaitingDesc = prometheus.NewDesc("rvpd_stream_waiting_bytes",
		"Bytes of the requests stream from the oldest request the home server's node has not acknowledged to the stream's end (0 while none waits): "+
			"when they reach the stream's MaxBytes, that request is dropped untaken. "+
			"The requests stream also keeps requests already answered (up to -requests.max-age), so its rvpd_stream_bytes near its bound is no danger by itself.",
		[]string{"stream", "home"}, nil)
	jsStoreDesc = prometheus.NewDesc("rvpd_jetstream_storage_bytes",
		"File storage the NATS account of this process uses in its JetStream domain (domain: a site's; none in a deployment of one), all its streams' replicas.",
		[]string{"domain"}, nil)
	jsStoreLimitDesc = prometheus.NewDesc("rvpd_jetstream_storage_limit_bytes",
		"The account's JetStream file storage limit (0: the account has none; the NATS servers' max_file_store still bounds it, which an account does not see).",
		[]string{"domain"}, nil)
	jsReservedDesc = prometheus.NewDesc("rvpd_jetstream_storage_reserved_bytes",
		"File storage the account's streams reserve with their MaxBytes: a stream is created only while the reservations fit in the limit.",
		[]string{"domain"}, nil)
)

// storageCollector reports, at each scrape, how full the streams this
// process's roles use are and how much of its JetStream storage the
// account uses: what runs out before requests are dropped or every
// append fails. A scrape reads nothing while the NATS connection is down
// (rvpd_nats_connected says so), and never waits more than
// storageTimeout for NATS; what it could not read is reported as last
// read for up to keep (storageKeep), then left out.
type storageCollector struct {
	nc   *nats.Conn
	log  *slog.Logger
	keep time.Duration

	// mu is held by a scrape while it reads: another waits for its
	// figures.
	mu       sync.Mutex
	js       jetstream.JetStream
	streams  []string
	requests []requestsWatch
	figures  []prometheus.Metric
	readAt   time.Time
	// The figures last read of each stream, home server's requests
	// consumer and the account, with when.
	lastStreams   map[string]lastRead[jetstream.StreamInfo]
	lastConsumers map[requestsWatch]lastRead[jetstream.ConsumerInfo]
	lastAccount   lastRead[jetstream.AccountInfo]
}

// lastRead is what was last read of something, and when (nil: never, or
// too long ago).
type lastRead[T any] struct {
	v  *T
	at time.Time
}

// update returns what to report of it now: v when read (not nil), else
// what was last read, while it is less than keep old.
func (l *lastRead[T]) update(v *T, now time.Time, keep time.Duration) *T {
	switch {
	case v != nil:
		*l = lastRead[T]{v, now}
	case l.v != nil && now.Sub(l.at) >= keep:
		*l = lastRead[T]{}
	}
	return l.v
}

// requestsWatch is a home server whose requests in stream are watched.
type requestsWatch struct{ stream, home string }

func newStorageCollector(nc *nats.Conn, log *slog.Logger) *storageCollector {
	return &storageCollector{nc: nc, log: log, keep: storageKeep,
		lastStreams: map[string]lastRead[jetstream.StreamInfo]{}, lastConsumers: map[requestsWatch]lastRead[jetstream.ConsumerInfo]{}}
}

// watch has the scrapes report streams, read through js.
func (c *storageCollector) watch(js jetstream.JetStream, streams ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.js = js
	for _, s := range streams {
		if !slices.Contains(c.streams, s) {
			c.streams = append(c.streams, s)
		}
	}
	c.readAt = time.Time{}
}

// watchRequests has the scrapes report stream and the requests waiting in
// it for home's node (rvpd_stream_waiting_bytes).
func (c *storageCollector) watchRequests(js jetstream.JetStream, stream, home string) {
	c.watch(js, stream)
	c.mu.Lock()
	defer c.mu.Unlock()
	if w := (requestsWatch{stream, home}); !slices.Contains(c.requests, w) {
		c.requests = append(c.requests, w)
	}
}

func (c *storageCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{streamBytesDesc, streamMaxBytesDesc, streamMessagesDesc, streamWaitingDesc, jsStoreDesc, jsStoreLimitDesc, jsReservedDesc} {
		ch <- d
	}
}

func (c *storageCollector) Collect(ch chan<- prometheus.Metric) {
	for _, m := range c.read() {
		ch <- m
	}
}

// read returns the figures, read again when they are older than
// storageFresh. What could not be read (a stream not created yet, or
// deleted; NATS not connected or not answering in time) is reported as
// last read while that is less than c.keep old, else left out.
func (c *storageCollector) read() []prometheus.Metric {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.js == nil || c.nc == nil {
		return nil
	}
	if !c.nc.IsConnected() {
		// Nothing read: read again as soon as it is back.
		return c.metrics(make([]*jetstream.StreamInfo, len(c.streams)), make([]*jetstream.ConsumerInfo, len(c.requests)), nil)
	}
	if time.Since(c.readAt) < storageFresh {
		return c.figures
	}
	ctx, cancel := context.WithTimeout(context.Background(), storageTimeout)
	defer cancel()

	// Every question at once, each answered or not within the timeout.
	var wg sync.WaitGroup
	infos := make([]*jetstream.StreamInfo, len(c.streams))
	for i, name := range c.streams {
		wg.Go(func() {
			st, err := c.js.Stream(ctx, name)
			if err != nil {
				if !errors.Is(err, jetstream.ErrStreamNotFound) {
					c.log.Debug("stream not read for the metrics", "stream", name, "err", err)
				}
				return
			}
			infos[i] = st.CachedInfo()
		})
	}
	consumers := make([]*jetstream.ConsumerInfo, len(c.requests))
	for i, w := range c.requests {
		wg.Go(func() {
			cons, err := c.js.Consumer(ctx, w.stream, homenode.ConsumerName(w.home))
			if err != nil {
				if !errors.Is(err, jetstream.ErrConsumerNotFound) && !errors.Is(err, jetstream.ErrStreamNotFound) {
					c.log.Debug("home server's requests consumer not read for the metrics", "stream", w.stream, "home", w.home, "err", err)
				}
				return
			}
			consumers[i] = cons.CachedInfo()
		})
	}
	var account *jetstream.AccountInfo
	wg.Go(func() {
		var err error
		if account, err = c.js.AccountInfo(ctx); err != nil {
			c.log.Debug("JetStream account not read for the metrics", "err", err)
		}
	})
	wg.Wait()

	c.figures, c.readAt = c.metrics(infos, consumers, account), time.Now()
	return c.figures
}

// metrics returns the figures of what was read (nil: not read), and of
// what was not, those last read while they are less than c.keep old.
func (c *storageCollector) metrics(infos []*jetstream.StreamInfo, consumers []*jetstream.ConsumerInfo, account *jetstream.AccountInfo) []prometheus.Metric {
	now := time.Now()
	for i, name := range c.streams {
		l := c.lastStreams[name]
		infos[i] = l.update(infos[i], now, c.keep)
		c.lastStreams[name] = l
	}
	for i, w := range c.requests {
		l := c.lastConsumers[w]
		consumers[i] = l.update(consumers[i], now, c.keep)
		c.lastConsumers[w] = l
	}
	account = c.lastAccount.update(account, now, c.keep)

	var out []prometheus.Metric
	byName := map[string]*jetstream.StreamInfo{}
	for i, info := range infos {
		if info == nil {
			continue
		}
		name := c.streams[i]
		byName[name] = info
		out = append(out,
			prometheus.MustNewConstMetric(streamBytesDesc, prometheus.GaugeValue, float64(info.State.Bytes), name),
			prometheus.MustNewConstMetric(streamMaxBytesDesc, prometheus.GaugeValue, float64(max(info.Config.MaxBytes, 0)), name),
			prometheus.MustNewConstMetric(streamMessagesDesc, prometheus.GaugeValue, float64(info.State.Msgs), name))
	}
	for i, ci := range consumers {
		if st := byName[c.requests[i].stream]; ci != nil && st != nil {
			out = append(out, prometheus.MustNewConstMetric(streamWaitingDesc, prometheus.GaugeValue, waitingBytes(st.State, ci), c.requests[i].stream, c.requests[i].home))
		}
	}
	if account != nil {
		used, limit, reserved := accountStorage(account)
		out = append(out,
			prometheus.MustNewConstMetric(jsStoreDesc, prometheus.GaugeValue, float64(used), account.Domain),
			prometheus.MustNewConstMetric(jsStoreLimitDesc, prometheus.GaugeValue, float64(limit), account.Domain),
			prometheus.MustNewConstMetric(jsReservedDesc, prometheus.GaugeValue, float64(reserved), account.Domain))
	}
	return out
}

// waitingBytes estimates the bytes of stream st from the oldest message
// consumer ci has not acknowledged to the end: the stream's bytes in
// proportion of the sequences that span. The messages between are other
// home servers' too (a shared requests stream), and all go before that
// one does when the stream is full. 0 while the consumer has none
// waiting; the whole stream once its oldest waiting one was dropped.
func waitingBytes(st jetstream.StreamState, ci *jetstream.ConsumerInfo) float64 {
	if ci.NumPending == 0 && ci.NumAckPending == 0 || st.Msgs == 0 || st.LastSeq < st.FirstSeq {
		return 0
	}
	from := max(ci.AckFloor.Stream+1, st.FirstSeq)
	if from > st.LastSeq {
		return 0
	}
	return float64(st.Bytes) * float64(st.LastSeq-from+1) / float64(st.LastSeq-st.FirstSeq+1)
}

// accountStorage is the account's file storage used, its limit (0 for
// none) and what its streams reserve. An account with limits by
// replication tier (R1, R3) has no limit of its own: the tier nearest
// its limit is reported.
func accountStorage(a *jetstream.AccountInfo) (used uint64, limit int64, reserved uint64) {
	used, limit, reserved = a.Store, max(a.Limits.MaxStore, 0), a.ReservedStore
	if limit > 0 {
		return used, limit, reserved
	}
	worst := -1.0
	for _, t := range a.Tiers {
		if t.Limits.MaxStore <= 0 {
			continue
		}
		if f := float64(t.Store) / float64(t.Limits.MaxStore); f > worst {
			worst, used, limit, reserved = f, t.Store, t.Limits.MaxStore, t.ReservedStore
		}
	}
	return used, limit, reserved
}
