package main

import (
	"context"
	"log/slog"
	"os"
	osexec "os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rvp-im/rvpd/gateway"
	"github.com/rvp-im/rvpd/homenode"
	"github.com/rvp-im/rvpd/projections"
	"github.com/rvp-im/rvpd/routernode"
)

// describedMetrics records the name and label names of every metric
// described to it: a prometheus.Registerer for the constructors rvpd
// registers its metrics with, vectors without a child included (a
// scrape shows those only once they have one).
type describedMetrics map[string][]string

var (
	descName   = regexp.MustCompile(`fqName: "([^"]+)"`)
	descLabels = regexp.MustCompile(`variableLabels: \[(.*)\]\}$`)
	labelName  = regexp.MustCompile(`\{(\w+) `)
)

func (d describedMetrics) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc)
	go func() { c.Describe(ch); close(ch) }()
	for desc := range ch {
		s := desc.String()
		name := descName.FindStringSubmatch(s)
		if name == nil {
			continue // a Desc the Go and process collectors make on the fly
		}
		var labels []string
		if l := descLabels.FindStringSubmatch(s); l != nil {
			for _, m := range labelName.FindAllStringSubmatch(l[1], -1) {
				labels = append(labels, m[1])
			}
		}
		d[name[1]] = labels
	}
	return nil
}

func (d describedMetrics) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		d.Register(c)
	}
}

func (d describedMetrics) Unregister(prometheus.Collector) bool { return true }

// rvpdMetrics returns every metric an rvpd process may export, as the
// roles register them.
func rvpdMetrics(t *testing.T) describedMetrics {
	t.Helper()
	d := describedMetrics{}
	o := newOps("test", nil, slog.New(slog.DiscardHandler))
	d.Register(o.reg)
	gateway.NewMetrics(d)
	homenode.NewMetrics(d)
	routernode.NewMetrics(d)
	if _, err := newConsole(nil, nil, nil, nil, slog.New(slog.DiscardHandler), d); err != nil {
		t.Fatal(err)
	}
	// The site watch registers its gauge when it runs, and returns at
	// once with a context already done.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	w := &homenode.SiteWatch{Conn: &nats.Conn{}, Site: "a", Directory: &projections.Directory{}, Metrics: d}
	if err := w.Run(ctx); err != nil {
		t.Fatal(err)
	}
	return d
}

// TestAlertRules: docs/alerts.yml names only metrics rvpd exports, and of
// each only labels it has; each alert's runbook is a section of
// docs/operations.md; and Prometheus's own checker, promtool, accepts
// the rules and the cases of docs/alerts_test.yml (it fires each alert on
// the series that should, and not before or after).
func TestAlertRules(t *testing.T) {
	rules, err := os.ReadFile("../../docs/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	exported := rvpdMetrics(t)
	for _, want := range []string{"rvpd_ready", "rvpd_site_reachable", "rvpd_console_sign_ins_total", "rvpd_gateway_refused_total"} {
		if _, ok := exported[want]; !ok {
			t.Fatalf("%s not described: the test's view of rvpd's metrics is incomplete (%d found)", want, len(exported))
		}
	}
	uses := regexp.MustCompile(`\b(rvpd_[a-z_]+)(\{([^}]*)\})?`).FindAllStringSubmatch(string(rules), -1)
	if len(uses) < 10 {
		t.Fatalf("%d metrics named in alerts.yml", len(uses))
	}
	matcher := regexp.MustCompile(`(\w+)\s*(=~|!~|!=|=)`)
	for _, u := range uses {
		name := u[1]
		labels, ok := exported[name]
		if !ok {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if labels, ok = exported[strings.TrimSuffix(name, suffix)]; ok && name != strings.TrimSuffix(name, suffix) {
					if suffix == "_bucket" {
						labels = append(labels, "le")
					}
					break
				}
				ok = false
			}
		}
		if !ok {
			t.Errorf("alerts.yml names %s, which rvpd does not export", name)
			continue
		}
		for _, m := range matcher.FindAllStringSubmatch(u[3], -1) {
			if l := m[1]; l != "instance" && l != "job" && !strings.Contains(" "+strings.Join(labels, " ")+" ", " "+l+" ") {
				t.Errorf("alerts.yml matches %s on label %s; it has %v", name, l, labels)
			}
		}
	}

	ops, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	sections := map[string]bool{}
	for _, l := range strings.Split(string(ops), "\n") {
		if h, ok := strings.CutPrefix(l, "## "); ok {
			sections[slug(h)] = true
		} else if h, ok := strings.CutPrefix(l, "### "); ok {
			sections[slug(h)] = true
		}
	}
	alerts := strings.Count(string(rules), "- alert: ")
	runbooks := regexp.MustCompile(`runbook_url: "docs/operations\.md#([^"]+)"`).FindAllStringSubmatch(string(rules), -1)
	if len(runbooks) != alerts {
		t.Errorf("%d alerts, %d runbooks in operations.md", alerts, len(runbooks))
	}
	for _, r := range runbooks {
		if !sections[r[1]] {
			t.Errorf("runbook #%s: no such section in operations.md", r[1])
		}
	}

	promtool, err := osexec.LookPath("promtool")
	if err != nil {
		if os.Getenv("RVP_INTEROP") != "" {
			t.Fatal("promtool not found: CI installs Debian's prometheus package for it (.ci/run)")
		}
		t.Skip("promtool not installed (Debian: apt-get install prometheus); the rules were checked against rvpd's metrics only")
	}
	for _, args := range [][]string{{"check", "rules", "alerts.yml"}, {"test", "rules", "alerts_test.yml"}} {
		cmd := osexec.Command(promtool, args...)
		cmd.Dir = "../../docs"
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// slug is the anchor GitHub gives a Markdown heading.
func slug(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || 'a' <= r && r <= 'z' || '0' <= r && r <= '9':
			b.WriteRune(r)
		}
	}
	return b.String()
}
