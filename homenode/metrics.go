package homenode

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the home nodes' Prometheus metrics, labelled by home
// server (a name the administrator chose, never a user). NewMetrics
// registers them on the process's registry; Config.Metrics hands them to
// each node, and cmd/rvpd reports the leases through Owned and TakenOver.
// A nil *Metrics counts nothing.
type Metrics struct {
	decisions  *prometheus.CounterVec
	facts      *prometheus.CounterVec
	latency    *prometheus.HistogramVec
	inFlight   *prometheus.GaugeVec
	pending    *prometheus.GaugeVec
	online     *prometheus.GaugeVec
	subs       *prometheus.GaugeVec
	notifies   *prometheus.CounterVec
	notifyTime *prometheus.HistogramVec
	underWay   *prometheus.GaugeVec
	waiting    *prometheus.GaugeVec
	owned      *prometheus.GaugeVec
	takeovers  *prometheus.CounterVec

	mu    sync.Mutex
	homes map[string]*homeMetrics
}

// homeMetrics are one home server's.
type homeMetrics struct {
	decisions, facts                prometheus.Counter
	latency, notifyTime             prometheus.Observer
	inFlight, pending, online, subs prometheus.Gauge
	underWay, waiting               prometheus.Gauge
	delivered, failed, dropped      prometheus.Counter
}

// NewMetrics registers the home nodes' metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	home := []string{"home"}
	m := &Metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rvpd_home_decisions_total",
			Help: "Inputs a home server decided: requests, expiries, delivery outcomes, handoffs."}, home),
		facts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rvpd_home_facts_appended_total",
			Help: "Facts appended to a home server's stream and acknowledged."}, home),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "rvpd_home_decision_duration_seconds",
			Help:    "Time from a request taken from its stream to its reply released, its facts acknowledged.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}}, home),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "rvpd_home_facts_in_flight",
			Help: "Facts published and not yet acknowledged (the pipeline's window)."}, home),
		pending: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "rvpd_home_requests_pending",
			Help: "Requests waiting in the stream for the home server's node (consumer lag), as of the last one taken."}, home),
		online: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "rvpd_home_online_users",
			Help: "Users of the home server with a live login subscription."}, home),
		subs: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "rvpd_home_subscriptions",
			Help: "Live subscriptions on the home server's nodes, logins and watchers."}, home),
		notifies: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rvpd_home_notify_deliveries_total",
			Help: "NOTIFYs to clients' callbacks by result: delivered (2xx), failed (no answer, or another status), dropped (a full queue, or past the fan-out limit)."}, []string{"home", "result"}),
		notifyTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "rvpd_home_notify_duration_seconds",
			Help:    "Time a NOTIFY took to its callback's answer, or to its failure.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}}, home),
		underWay: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "rvpd_home_notifies_under_way",
			Help: "NOTIFYs being sent: their connections to callbacks being made or open, at most the home node's 256 workers. Near that bound, NOTIFYs wait (rvpd_home_notifies_waiting): callbacks slow to answer, or not answering, hold the workers."}, home),
		waiting: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "rvpd_home_notifies_waiting",
			Help: "NOTIFYs queued for a worker: none is free, or their destination already has one under way (each callback is told in order, one at a time)."}, home),
		owned: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "rvpd_home_lease_owned",
			Help: "1 while this process owns the home server (holds its lease), 0 while it waits as a standby."}, home),
		takeovers: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rvpd_home_lease_takeovers_total",
			Help: "Times this process took a home server over from another node (or from its own unclean stop); a home server's first owner, with no fact yet, is not counted (nor a takeover from an owner that died before its first fact)."}, home),
		homes: map[string]*homeMetrics{},
	}
	reg.MustRegister(m.decisions, m.facts, m.latency, m.inFlight, m.pending, m.online, m.subs, m.notifies, m.notifyTime, m.underWay, m.waiting, m.owned, m.takeovers)
	return m
}

// of returns home's metrics; nil for a nil m.
func (m *Metrics) of(home string) *homeMetrics {
	if m == nil {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	h := m.homes[home]
	if h == nil {
		h = &homeMetrics{
			decisions: m.decisions.WithLabelValues(home), facts: m.facts.WithLabelValues(home),
			latency: m.latency.WithLabelValues(home), notifyTime: m.notifyTime.WithLabelValues(home),
			inFlight: m.inFlight.WithLabelValues(home), pending: m.pending.WithLabelValues(home),
			online: m.online.WithLabelValues(home), subs: m.subs.WithLabelValues(home),
			underWay: m.underWay.WithLabelValues(home), waiting: m.waiting.WithLabelValues(home),
			delivered: m.notifies.WithLabelValues(home, "delivered"), failed: m.notifies.WithLabelValues(home, "failed"),
			dropped: m.notifies.WithLabelValues(home, "dropped"),
		}
		m.homes[home] = h
	}
	return h
}

// Owned records whether this process owns home.
func (m *Metrics) Owned(home string, owned bool) {
	if m == nil {
		return
	}
	v := 0.0
	if owned {
		v = 1
	}
	m.owned.WithLabelValues(home).Set(v)
}

// TakenOver counts a takeover of home.
func (m *Metrics) TakenOver(home string) {
	if m != nil {
		m.takeovers.WithLabelValues(home).Inc()
	}
}

// The methods below count for one home server; a nil *homeMetrics (no
// Metrics configured) counts nothing.

func (h *homeMetrics) decided() {
	if h != nil {
		h.decisions.Inc()
	}
}

func (h *homeMetrics) appended() { h.appendedN(1) }

// appendedN counts n facts appended at once (a fence).
func (h *homeMetrics) appendedN(n int) {
	if h != nil {
		h.facts.Add(float64(n))
	}
}

// released observes a request's time from taken to its reply released.
func (h *homeMetrics) released(taken time.Time) {
	if h != nil && !taken.IsZero() {
		h.latency.Observe(time.Since(taken).Seconds())
	}
}

// window sets the facts in flight.
func (h *homeMetrics) window(n uint64) {
	if h != nil {
		h.inFlight.Set(float64(n))
	}
}

// lag sets the requests waiting in the stream.
func (h *homeMetrics) lag(n uint64) {
	if h != nil {
		h.pending.Set(float64(n))
	}
}

// notified counts a NOTIFY answered with status (or failed with err)
// after took.
func (h *homeMetrics) notified(status int, err error, took time.Duration) {
	if h == nil {
		return
	}
	if err == nil && status/100 == 2 {
		h.delivered.Inc()
	} else {
		h.failed.Inc()
	}
	h.notifyTime.Observe(took.Seconds())
}

// notifies sets the NOTIFYs under way and waiting.
func (h *homeMetrics) notifies(underWay, waiting int) {
	if h != nil {
		h.underWay.Set(float64(underWay))
		h.waiting.Set(float64(waiting))
	}
}

// stopped sets every gauge of a node that no longer serves its home
// server to zero: a standby reports none of what its owner does.
func (h *homeMetrics) stopped() {
	if h != nil {
		h.notifies(0, 0)
		h.counts(0, 0)
		h.window(0)
		h.lag(0)
	}
}

// drop counts NOTIFYs not sent.
func (h *homeMetrics) drop(n int) {
	if h != nil {
		h.dropped.Add(float64(n))
	}
}

// counts sets the online users and live subscriptions.
func (h *homeMetrics) counts(online, subs int) {
	if h != nil {
		h.online.Set(float64(online))
		h.subs.Set(float64(subs))
	}
}
