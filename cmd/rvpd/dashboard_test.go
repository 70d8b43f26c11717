package main

import (
	"encoding/json"
	"log/slog"
	"os"
	"regexp"
	"slices"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rvp-im/rvpd/gateway"
	"github.com/rvp-im/rvpd/homenode"
	"github.com/rvp-im/rvpd/routernode"
)

// recorder is a Registerer that keeps what is registered, to read every
// metric's description (a metric with labels shows on /metrics only once
// it has a value).
type recorder struct {
	prometheus.Registerer
	collectors []prometheus.Collector
}

func (r *recorder) Register(c prometheus.Collector) error {
	r.collectors = append(r.collectors, c)
	return r.Registerer.Register(c)
}

func (r *recorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

var fqName = regexp.MustCompile(`fqName: "([a-z_:]+)"`)

// exported names every metric a process can export, the roles' and its
// own.
func exported(t *testing.T) map[string]bool {
	t.Helper()
	nc := &nats.Conn{} // never connected: only described
	o := newOps("test", nc, discardLogger())
	rec := &recorder{Registerer: o.reg}
	gateway.NewMetrics(rec)
	routernode.NewMetrics(rec)
	homenode.NewMetrics(rec)
	if _, err := newConsole(nil, nil, nil, nil, discardLogger(), rec); err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	ch := make(chan *prometheus.Desc, 1024)
	for _, c := range rec.collectors {
		c.Describe(ch)
	}
	// And those of the process's own, described only until a scrape
	// reads them (the streams' sizes: storageCollector).
	o.reg.Describe(ch)
	mfs, err := o.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	close(ch)
	for d := range ch {
		if m := fqName.FindStringSubmatch(d.String()); m != nil {
			names[m[1]] = true
		}
	}
	return names
}

// TestDashboardMetrics: every metric the Grafana dashboard queries is one
// rvpd exports (a histogram by its _bucket series).
func TestDashboardMetrics(t *testing.T) {
	data, err := os.ReadFile("../../docs/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("docs/grafana-dashboard.json: %v", err)
	}
	have := exported(t)
	metric := regexp.MustCompile(`\b((?:rvpd|go|process)_[a-z_]+)\b`)
	used := 0
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			for _, m := range metric.FindAllStringSubmatch(tg.Expr, -1) {
				name := m[1]
				base := regexp.MustCompile(`_(bucket|sum|count)$`).ReplaceAllString(name, "")
				if !have[name] && !have[base] {
					names := slices.Sorted(func(yield func(string) bool) {
						for k := range have {
							if !yield(k) {
								return
							}
						}
					})
					t.Errorf("panel %q queries %s, which rvpd does not export; it exports %v", p.Title, name, names)
				}
				used++
			}
		}
	}
	if used < 20 {
		t.Errorf("the dashboard queries %d metrics", used)
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
