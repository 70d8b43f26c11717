package routernode

import (
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are a router's Prometheus metrics. NewMetrics registers them
// on the process's registry and Config.Metrics hands them to the router;
// a nil *Metrics counts nothing. Labels never name a user or an address.
type Metrics struct {
	lookups    *prometheus.CounterVec
	redirects  *prometheus.CounterVec
	federation *prometheus.CounterVec
	fedTime    *prometheus.HistogramVec

	mu    sync.Mutex
	peers map[string]bool // the peer label values given out, at most maxPeers
}

// maxPeers bounds the peer label's values: another organisation is
// named by the IM host its users' addresses give, which anyone can make
// up; past the bound they count as "other".
const maxPeers = 100

// NewMetrics registers a router's metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rvpd_router_lookups_total",
			Help: "Lookups answered, by result: redirected (302 to a home server), forwarded (to another organisation), not_found, forbidden (intranet-only), loop (hop count), expired (past its deadline), unavailable.",
		}, []string{"result"}),
		redirects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rvpd_router_redirects_total",
			Help: "Clients redirected to their home server, by the directory's router they addressed.",
		}, []string{"router"}),
		federation: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rvpd_router_federation_requests_total",
			Help: "Requests forwarded to other organisations, by peer (their IM host, or proxy) and the status they answered (unanswered when none).",
		}, []string{"peer", "status"}),
		fedTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "rvpd_router_federation_duration_seconds",
			Help:    "Time another organisation took to answer a forwarded request.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 20},
		}, []string{"peer"}),
		peers: map[string]bool{},
	}
	reg.MustRegister(m.lookups, m.redirects, m.federation, m.fedTime)
	return m
}

// Lookup results.
const (
	resultRedirected  = "redirected"
	resultForwarded   = "forwarded"
	resultNotFound    = "not_found"
	resultForbidden   = "forbidden"
	resultLoop        = "loop"
	resultExpired     = "expired"
	resultUnavailable = "unavailable"
)

func (m *Metrics) lookup(result string) {
	if m == nil {
		return
	}
	m.lookups.WithLabelValues(result).Inc()
}

func (m *Metrics) redirect(router string) {
	if m == nil {
		return
	}
	m.redirects.WithLabelValues(router).Inc()
}

// forwarded counts a request forwarded to peer, answered with status (0:
// unanswered) after took.
func (m *Metrics) forwarded(peer string, status int, took time.Duration) {
	if m == nil {
		return
	}
	m.mu.Lock()
	if !m.peers[peer] {
		if len(m.peers) >= maxPeers {
			peer = "other"
		} else {
			m.peers[peer] = true
		}
	}
	m.mu.Unlock()
	code := "unanswered"
	switch {
	case status >= 100 && status <= 599:
		code = strconv.Itoa(status)
	case status != 0:
		code = "other"
	}
	m.federation.WithLabelValues(peer, code).Inc()
	if status != 0 {
		m.fedTime.WithLabelValues(peer).Observe(took.Seconds())
	}
}
