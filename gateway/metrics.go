package gateway

import (
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are a gateway's Prometheus metrics. NewMetrics registers them
// on the process's registry and Config.Metrics hands them to the gateway;
// a nil *Metrics counts nothing. Labels never name a user or an address:
// methods, statuses, reasons and the directory's router and home server
// names, each a small set.
type Metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	lookups  *prometheus.CounterVec
	proxied  *prometheus.CounterVec

	mu       sync.Mutex
	gateways []*Gateway // whose Stats, connections and requests in flight are read at each scrape

	// byRequest keeps the counter and histogram of each method and
	// status seen: looking them up in the vectors hashed the label values
	// and allocated them for every request (1% of the objects rvpd made
	// signing users in with buddy lists). At most 13 methods (methodLabel)
	// times 501 statuses.
	byRequestMu sync.RWMutex
	byRequest   map[requestKey]requestMetrics
}

type requestKey struct {
	method string
	status int
}

type requestMetrics struct {
	count    prometheus.Counter
	duration prometheus.Observer
}

// NewMetrics registers a gateway's metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rvpd_gateway_requests_total",
			Help: "RVP requests answered by the gateway, by method and response status.",
		}, []string{"method", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "rvpd_gateway_request_duration_seconds",
			Help: "Time from a request read to its response ready to write, by method.",
			// From a refusal in microseconds to a message waiting for its
			// recipients' clients (up to -notify.timeout, 10 s).
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 20},
		}, []string{"method"}),
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rvpd_gateway_lookups_total",
			Help: "Requests sent to the routers: to be redirected to a home server (redirect), or forwarded to another organisation (federation).",
		}, []string{"purpose"}),
		proxied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rvpd_gateway_proxied_total",
			Help: "Requests for logical URLs that a router's policy (proxy, or auto for a client outside the firewall) lets the gateway serve straight from the home server, by the directory's name of that router.",
		}, []string{"router"}),
		byRequest: map[requestKey]requestMetrics{},
	}
	reg.MustRegister(m.requests, m.duration, m.lookups, m.proxied, m)
	return m
}

// The descriptions of what is read from the gateways at each scrape.
var (
	refusedDesc = prometheus.NewDesc("rvpd_gateway_refused_total",
		"Requests the gateway refused at its trust boundaries, by reason: unauthenticated (401 without credentials), sign_in_failed (wrong or unknown credentials), sign_in_throttled (403 after repeated failures), forged (speaking or sending for someone else), callback_refused, rate_limited (429), too_many_connections (503 at accept), replayed (credentials accepted once, presented again: 401).",
		[]string{"reason"}, nil)
	foreignDesc = prometheus.NewDesc("rvpd_gateway_foreign_requests_total",
		"Requests of other organisations taken without credentials (federation).", nil, nil)
	connsDesc = prometheus.NewDesc("rvpd_gateway_connections",
		"Client connections open.", nil, nil)
	inflightDesc = prometheus.NewDesc("rvpd_gateway_requests_in_flight",
		"Requests being answered.", nil, nil)
	acceptingDesc = prometheus.NewDesc("rvpd_gateway_accepting",
		"1 while the gateway accepts connections.", nil, nil)
	homeOwnedDesc = prometheus.NewDesc("rvpd_home_owned",
		"1 while some node holds a live lease of the home server, 0 while none does (lapsed, let go, never taken): its users' requests get no answer (504). As the gateway's watch of its site's lease bucket sees it, for the site's home servers that host users or have users enabled on them; not exported while the gateway's NATS connection is down.",
		[]string{"home"}, nil)
	answersAgainDesc = prometheus.NewDesc("rvpd_gateway_answers_given_again_total",
		"Home nodes' answers lost on their way to the gateway (published while its NATS connection was down, say) that the gateway asked the home node for and got, by when it asked: reconnected (at once, as its NATS connection came back), waited (after 3 s of waiting, and every 3 s on).",
		[]string{"asked"}, nil)
)

// Describe implements prometheus.Collector for what is read at each scrape.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- refusedDesc
	ch <- foreignDesc
	ch <- connsDesc
	ch <- inflightDesc
	ch <- acceptingDesc
	ch <- homeOwnedDesc
	ch <- answersAgainDesc
}

// Collect implements prometheus.Collector: the gateways' Stats (what
// they count at their trust boundaries) and their connections, summed.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	gws := append([]*Gateway(nil), m.gateways...)
	m.mu.Unlock()
	var s Stats
	var conns, inflight, accepting, againReconnected, againWaited float64
	for _, g := range gws {
		gs := g.Stats()
		s.Unauthenticated += gs.Unauthenticated
		s.SignInsFailed += gs.SignInsFailed
		s.SignInsThrottled += gs.SignInsThrottled
		s.Forged += gs.Forged
		s.CallBacksRefused += gs.CallBacksRefused
		s.RateLimited += gs.RateLimited
		s.Foreign += gs.Foreign
		s.ConnectionsRefused += gs.ConnectionsRefused
		s.Replayed += gs.Replayed
		g.mu.Lock()
		conns += float64(len(g.conns))
		g.mu.Unlock()
		inflight += float64(g.inflight.Load())
		againReconnected += float64(g.answersAgain.reconnected.Load())
		againWaited += float64(g.answersAgain.waited.Load())
		if g.Accepting() {
			accepting++
		}
	}
	for reason, n := range map[string]uint64{
		"unauthenticated": s.Unauthenticated, "sign_in_failed": s.SignInsFailed, "sign_in_throttled": s.SignInsThrottled,
		"forged": s.Forged, "callback_refused": s.CallBacksRefused, "rate_limited": s.RateLimited,
		"too_many_connections": s.ConnectionsRefused, "replayed": s.Replayed,
	} {
		ch <- prometheus.MustNewConstMetric(refusedDesc, prometheus.CounterValue, float64(n), reason)
	}
	ch <- prometheus.MustNewConstMetric(foreignDesc, prometheus.CounterValue, float64(s.Foreign))
	ch <- prometheus.MustNewConstMetric(connsDesc, prometheus.GaugeValue, conns)
	ch <- prometheus.MustNewConstMetric(inflightDesc, prometheus.GaugeValue, inflight)
	ch <- prometheus.MustNewConstMetric(acceptingDesc, prometheus.GaugeValue, accepting)
	ch <- prometheus.MustNewConstMetric(answersAgainDesc, prometheus.CounterValue, againReconnected, "reconnected")
	ch <- prometheus.MustNewConstMetric(answersAgainDesc, prometheus.CounterValue, againWaited, "waited")
	now := time.Now()
	owned := map[string]float64{} // the most any gateway says
	for _, g := range gws {
		if g.cfg.Owners == nil {
			continue
		}
		for _, home := range watched(g.cfg.Directory, g.cfg.Site) {
			is, known, _ := g.cfg.Owners.owned(home, now)
			if !known {
				continue
			}
			v := 0.0
			if is {
				v = 1
			}
			owned[home] = max(owned[home], v)
		}
	}
	for home, v := range owned {
		ch <- prometheus.MustNewConstMetric(homeOwnedDesc, prometheus.GaugeValue, v, home)
	}
}

func (m *Metrics) attach(g *Gateway) {
	if m == nil {
		return
	}
	m.mu.Lock()
	m.gateways = append(m.gateways, g)
	m.mu.Unlock()
}

// methods are the methods counted by name; any other is "other", so that
// a client cannot make up label values.
var methods = map[string]bool{
	"SUBSCRIBE": true, "UNSUBSCRIBE": true, "SUBSCRIPTIONS": true, "PROPFIND": true, "PROPPATCH": true,
	"NOTIFY": true, "ACL": true, "GET": true, "HEAD": true, "OPTIONS": true, "POST": true, "PUT": true,
}

func methodLabel(m string) string {
	if methods[m] {
		return m
	}
	return "other"
}

// request counts a request answered with status after took.
func (m *Metrics) request(method string, status int, took time.Duration) {
	if m == nil {
		return
	}
	if status < 100 || status > 599 {
		status = 0 // a status another organisation's server made up
	}
	k := requestKey{methodLabel(method), status}
	m.byRequestMu.RLock()
	rm, ok := m.byRequest[k]
	m.byRequestMu.RUnlock()
	if !ok {
		code := "other"
		if status != 0 {
			code = strconv.Itoa(status)
		}
		rm = requestMetrics{m.requests.WithLabelValues(k.method, code), m.duration.WithLabelValues(k.method)}
		m.byRequestMu.Lock()
		m.byRequest[k] = rm
		m.byRequestMu.Unlock()
	}
	rm.count.Inc()
	rm.duration.Observe(took.Seconds())
}

// Lookup purposes.
const (
	lookupRedirect   = "redirect"
	lookupFederation = "federation"
)

func (m *Metrics) lookup(purpose string) {
	if m == nil {
		return
	}
	m.lookups.WithLabelValues(purpose).Inc()
}

func (m *Metrics) proxy(router string) {
	if m == nil {
		return
	}
	m.proxied.WithLabelValues(router).Inc()
}
