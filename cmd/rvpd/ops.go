package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/expfmt"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/gateway"
	"github.com/rvp-im/rvpd/homenode"
	"github.com/rvp-im/rvpd/rvp"
)

// ops is what a process shows its operators: its metrics (a Prometheus
// registry of its own, which the roles' metrics are registered on), its
// health and readiness, and, on the operations listener (-ops), the
// operator console. Every process also answers events.MetricsSubject
// with its metrics, so that a console on any node shows the cluster.
type ops struct {
	node  string   // the process's name: its node name, or "dev"
	roles []string // what it runs: gateway, home servers, router, directory
	reg   *prometheus.Registry
	nc    *nats.Conn
	log   *slog.Logger
	// storage reports how full the streams the roles use are (storage.go).
	storage *storageCollector

	mu     sync.Mutex
	checks []readyCheck
}

// readyCheck is one condition of readiness: nil when met, else why not.
type readyCheck struct {
	name  string
	check func() error
}

// newOps returns the process's ops with its registry: the Go runtime's
// and the process's metrics, and its NATS connection's.
func newOps(node string, nc *nats.Conn, log *slog.Logger) *ops {
	o := &ops{node: node, reg: prometheus.NewRegistry(), nc: nc, log: log, storage: newStorageCollector(nc, log)}
	o.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "rvpd_nats_connected",
			Help: "1 while the process's NATS connection is up.",
		}, func() float64 {
			if nc.IsConnected() {
				return 1
			}
			return 0
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "rvpd_nats_reconnects_total",
			Help: "Times the process's NATS connection was re-established.",
		}, func() float64 { return float64(nc.Stats().Reconnects) }),
	)
	o.reg.MustRegister(readyCollector{o}, o.storage)
	o.ready("nats", func() error {
		if !nc.IsConnected() {
			// The last reconnection's failure in its handshake (a
			// certificate or CA renewed on disk that does not do),
			// which nats.go reports to no handler.
			if err := nc.LastError(); err != nil {
				return fmt.Errorf("not connected (%s): %w", strings.ToLower(nc.Status().String()), err)
			}
			return fmt.Errorf("not connected (%s)", strings.ToLower(nc.Status().String()))
		}
		return nil
	})
	return o
}

// ready adds a condition of readiness.
func (o *ops) ready(name string, check func() error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.checks = append(o.checks, readyCheck{name, check})
}

// checkResult is a condition of readiness as /readyz shows it.
type checkResult struct {
	Name string `json:"name"`
	OK   bool   `json:"ok"`
	Why  string `json:"why,omitempty"`
}

// readiness evaluates every condition, all at once: a home server's
// asks JetStream for up to 2 s (homeReadiness), and a scrape (rvpd_ready)
// or /readyz of a process standing by for many must not wait that once
// per home server while NATS does not answer.
func (o *ops) readiness() (ok bool, results []checkResult) {
	o.mu.Lock()
	checks := slices.Clone(o.checks)
	o.mu.Unlock()
	results = make([]checkResult, len(checks))
	var wg sync.WaitGroup
	for i, c := range checks {
		wg.Go(func() {
			r := checkResult{Name: c.name, OK: true}
			if err := c.check(); err != nil {
				r.OK, r.Why = false, err.Error()
			}
			results[i] = r
		})
	}
	wg.Wait()
	ok = true
	for _, r := range results {
		ok = ok && r.OK
	}
	return ok, results
}

// readyDesc is /readyz's conditions as metrics, for alerts: a gateway or
// home node not ready for minutes is one a load balancer has taken out
// of service, or a home server nobody answers for.
var readyDesc = prometheus.NewDesc("rvpd_ready",
	"1 while a condition of readiness (/readyz) is met, 0 while it is not, by condition: nats, gateway, home <name>.",
	[]string{"check"}, nil)

// readyCollector reports the conditions of readiness at each scrape.
type readyCollector struct{ o *ops }

func (c readyCollector) Describe(ch chan<- *prometheus.Desc) { ch <- readyDesc }

func (c readyCollector) Collect(ch chan<- prometheus.Metric) {
	_, results := c.o.readiness()
	for _, r := range results {
		v := 0.0
		if r.OK {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(readyDesc, prometheus.GaugeValue, v, r.Name)
	}
}

// handler serves /metrics, /healthz and /readyz.
func (o *ops) handler(mux *http.ServeMux) {
	mux.Handle("GET /metrics", promhttp.HandlerFor(o.reg, promhttp.HandlerOpts{ErrorLog: slogPrintln{o.log}}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ok, results := o.readiness()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		for _, c := range results {
			if c.OK {
				fmt.Fprintf(w, "ok    %s\n", c.Name)
			} else {
				fmt.Fprintf(w, "FAIL  %s: %s\n", c.Name, c.Why)
			}
		}
		if ok {
			fmt.Fprintln(w, "ready")
		} else {
			fmt.Fprintln(w, "not ready")
		}
	})
}

// slogPrintln lets promhttp log through slog.
type slogPrintln struct{ log *slog.Logger }

func (l slogPrintln) Println(v ...any) { l.log.Warn(fmt.Sprint(v...)) }

// text returns the process's own metrics (rvpd_*) in Prometheus text
// format.
func (o *ops) text() ([]byte, error) {
	mfs, err := o.reg.Gather()
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := expfmt.NewEncoder(&buf, expfmt.FmtText)
	for _, mf := range mfs {
		if strings.HasPrefix(mf.GetName(), "rvpd_") {
			if err := enc.Encode(mf); err != nil {
				return nil, err
			}
		}
	}
	return buf.Bytes(), nil
}

// nodeReport is a process's answer on events.MetricsSubject.
type nodeReport struct {
	Node    string        `json:"node"`
	Roles   []string      `json:"roles"`
	Ready   bool          `json:"ready"`
	Checks  []checkResult `json:"checks"`
	Metrics string        `json:"metrics"` // Prometheus text format, rvpd_* only
}

// answer answers events.MetricsSubject until ctx ends.
func (o *ops) answer(ctx context.Context) error {
	sub, err := o.nc.Subscribe(events.MetricsSubject, func(m *nats.Msg) {
		text, err := o.text()
		if err != nil {
			o.log.Warn("metrics not gathered", "err", err)
			return
		}
		ok, checks := o.readiness()
		data, err := json.Marshal(nodeReport{Node: o.node, Roles: o.roles, Ready: ok, Checks: checks, Metrics: string(text)})
		if err == nil {
			err = m.Respond(data)
		}
		if err != nil {
			o.log.Debug("metrics report not sent", "err", err)
		}
	})
	if err != nil {
		return fmt.Errorf("answer %s: %w", events.MetricsSubject, err)
	}
	<-ctx.Done()
	sub.Unsubscribe()
	return nil
}

// gatherCluster asks every process of the cluster for its report and
// collects the answers that come within wait.
func gatherCluster(ctx context.Context, nc *nats.Conn, wait time.Duration) ([]nodeReport, error) {
	inbox := nats.NewInbox()
	ch := make(chan *nats.Msg, 256)
	sub, err := nc.ChanSubscribe(inbox, ch)
	if err != nil {
		return nil, err
	}
	defer sub.Unsubscribe()
	if err := nc.PublishRequest(events.MetricsSubject, inbox, nil); err != nil {
		return nil, err
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	var out []nodeReport
	for {
		select {
		case m := <-ch:
			var r nodeReport
			if json.Unmarshal(m.Data, &r) == nil {
				out = append(out, r)
			}
		case <-timer.C:
			slices.SortFunc(out, func(a, b nodeReport) int { return strings.Compare(a.Node, b.Node) })
			return out, nil
		case <-ctx.Done():
			return out, ctx.Err()
		}
	}
}

// serveOps serves the operations listener (metrics, health, the
// console) on ln in g.
func serveOps(g *run.Group, ln net.Listener, h http.Handler, log *slog.Logger) {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		MaxHeaderBytes: 64 << 10, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	g.Add(func() error {
		log.Info("operations listener serving", "metrics", "http://"+ln.Addr().String()+"/metrics",
			"console", "http://"+ln.Addr().String()+"/console/")
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("operations listener: %w", err)
		}
		return nil
	}, func(error) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
}

// roleNames names what the process runs, for the console's list of nodes.
func (s roleSet) roleNames() []string {
	var out []string
	if s.listener != nil {
		out = append(out, "gateway "+s.listener.Addr().String())
	}
	for _, h := range s.homes {
		out = append(out, "home "+h)
	}
	if s.router != "" {
		out = append(out, "router "+s.router)
	}
	if s.admin != nil {
		out = append(out, "directory service")
	}
	return out
}

// serveOps adds the readiness of the gateway gw (nil for none) to o and,
// when -ops names an address, serves the operations listener there in g.
func (s roleSet) serveOps(g *run.Group, o *ops, gw *gateway.Gateway) error {
	if gw != nil {
		o.ready("gateway", func() error {
			if !gw.Accepting() {
				return errors.New("not accepting connections")
			}
			return nil
		})
	}
	if s.ops == nil {
		return nil
	}
	con, err := newConsole(s.nc, s.js, s.dir, s.keyring, o.log, o.reg)
	if err != nil {
		return err
	}
	if con.proxies, err = rvp.ParseRanges(s.flags.opsProxies); err != nil {
		return fmt.Errorf("-ops.trusted-proxies: %w", err)
	}
	mux := http.NewServeMux()
	o.handler(mux)
	con.routes(mux)
	serveOps(g, s.ops, mux, o.log)
	return nil
}

// listenOps opens the operations listener -ops names; nil for none.
func listenOps(addr string) (net.Listener, error) {
	if addr == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("-ops %s: %w (choose another address, or -ops \"\" for none)", addr, err)
	}
	return ln, nil
}

// printOps says where the operations listener serves, when there is one.
func printOps(w io.Writer, ln net.Listener) {
	if ln != nil {
		fmt.Fprintf(w, "  ops:        http://%s/   (/metrics, /healthz, /readyz; console at /console/ for the administrators)\n", ln.Addr())
	}
}

// homeOwner is what a process knows of a home server it runs: the node
// serving it while the process holds its lease.
type homeOwner struct {
	mu   sync.Mutex
	node *homenode.Node
	// stopped is why its last node stopped, when it failed (nil once one
	// serves again), and when.
	stopped   error
	stoppedAt time.Time
}

func (h *homeOwner) serving(n *homenode.Node) {
	h.mu.Lock()
	h.node = n
	if n != nil {
		h.stopped = nil
	}
	h.mu.Unlock()
}

// failed records why the node serving the home server stopped, or could
// not start: what /readyz says until one serves again.
func (h *homeOwner) failed(err error, at time.Time) {
	h.mu.Lock()
	h.stopped, h.stoppedAt = err, at
	h.mu.Unlock()
}

// homeReadiness adds the readiness of home server home, run by this
// process as holder: while it owns the home server, its node has caught
// up and takes requests; while it does not, another live node owns it
// (this one is its standby). A home server nobody owns yet is not ready.
func (o *ops) homeReadiness(home string, kv jetstream.KeyValue, holder string) *homeOwner {
	h := &homeOwner{}
	o.ready("home "+home, func() error {
		h.mu.Lock()
		n, stopped, at := h.node, h.stopped, h.stoppedAt
		h.mu.Unlock()
		if n != nil {
			return n.Ready()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		e, err := kv.Get(ctx, events.OwnerKey(home))
		if err != nil {
			return fmt.Errorf("not owned by any node yet (%v)", err)
		}
		if by := string(e.Value()); by != holder && !strings.HasPrefix(by, "released:") {
			return nil // a standby of node by
		}
		if stopped != nil {
			return fmt.Errorf("its home node stopped at %s and is started again when it can be: %w", at.UTC().Format(time.TimeOnly), stopped)
		}
		return errors.New("not served yet: the lease is being taken")
	})
	return h
}
