package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/rvp-im/rvpd/directory"
	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
	"github.com/rvp-im/rvpd/testcluster"
)

// scrape reads /metrics and parses it with Prometheus's own text parser.
func scrape(t *testing.T, ops string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(ops + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("GET /metrics: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var p expfmt.TextParser
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("/metrics is not Prometheus text format: %v", err)
	}
	return fams
}

// metric returns the value of a counter, gauge or histogram count
// labelled with labels ("name=value" each), 0 when there is none.
func metric(fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	f := fams[name]
	if f == nil {
		return 0
	}
	total := 0.0
next:
	for _, m := range f.GetMetric() {
		for _, l := range labels {
			k, v, _ := strings.Cut(l, "=")
			found := false
			for _, lp := range m.GetLabel() {
				found = found || (lp.GetName() == k && lp.GetValue() == v)
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			total += m.GetCounter().GetValue()
		case m.Gauge != nil:
			total += m.GetGauge().GetValue()
		case m.Histogram != nil:
			total += float64(m.GetHistogram().GetSampleCount())
		}
	}
	return total
}

// ownedScrape scrapes /metrics once the process owns the demo home
// server (the banner comes before the lease is taken).
func ownedScrape(t *testing.T, ops string) map[string]*dto.MetricFamily {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		fams := scrape(t, ops)
		if metric(fams, "rvpd_home_lease_owned", "home="+demoHome) == 1 {
			return fams
		}
		if time.Now().After(deadline) {
			t.Fatalf("the process did not own %s within 20 s", demoHome)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestMetricsAfterSession scripts a session against rvpd dev and checks
// that /metrics, as Prometheus parses it, counts what was done: each
// request by method and status and in the latency histogram, each
// refusal by its reason, lookups redirected by a router and requests a
// proxying router's gateway served, and no label naming a user or an
// address.
func TestMetricsAfterSession(t *testing.T) {
	p, ops := startDevOps(t, "-auth.basic")
	ctx := context.Background()
	before := scrape(t, ops)
	for _, name := range []string{"rvpd_gateway_requests_total", "rvpd_gateway_refused_total", "rvpd_nats_connected", "go_goroutines", "process_resident_memory_bytes"} {
		if before[name] == nil && name != "rvpd_gateway_requests_total" {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	if v := metric(before, "rvpd_nats_connected"); v != 1 {
		t.Errorf("rvpd_nats_connected %v, want 1", v)
	}
	// A fresh home server's first owner took it from nobody.
	if v := metric(ownedScrape(t, ops), "rvpd_home_lease_takeovers_total"); v != 0 {
		t.Errorf("rvpd_home_lease_takeovers_total %v at the first start, want 0", v)
	}

	preemptive := func(alias string) *testcluster.Client {
		c := newClient(t, p.addr, alias)
		c.Creds.Preemptive = true // an NTLM negotiate first: one 401 challenge, then the answer
		return c
	}
	factsBefore := streamStates(t, p.natsURL)[events.FactStream(demoHome)].LastSeq
	alice, bob := preemptive("alice"), preemptive("bob")
	mustStatus(t, "alice login", alice.Login(14400), 200)
	mustStatus(t, "alice online", alice.SetState("online", 1200, 0), 207)
	mustStatus(t, "bob login", bob.Login(14400), 200)
	mustStatus(t, "bob watches alice", bob.Watch("alice", 14400), 207)
	mustStatus(t, "bob → alice", bob.Send("alice", bob.MessageBody("alice", "hello")), 200)

	// Refusals, one request each.
	anon := testcluster.NewClient(t, p.addr, "alice")
	basic := func(user, password string) string {
		return "Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte(demoNTDomain+`\`+user+":"+password))
	}
	mustStatus(t, "no credentials", anon.Do("SUBSCRIBE", "/instmsg/aliases/alice", nil, anon.From(),
		"Notification-Type: pragma/notify", "Call-Back: http://127.0.0.1:9"), 401)
	mustStatus(t, "wrong password", anon.Do("PROPFIND", "/instmsg/aliases/alice", nil, anon.From(), basic("alice", "wrong password")), 401)
	mustStatus(t, "alice speaking as bob", anon.Do("PROPPATCH", "/instmsg/aliases/bob", testcluster.StateBody("online", 600, 0),
		"RVP-From-Principal: "+alice.URLOf("bob"), basic("alice", testPassword), "Content-Type: text/xml"), 403)
	mustStatus(t, "GET", anon.Do("GET", "/", nil), 501)

	// Two routers of the demo domain, made after the session (a client
	// addressing no router's host gets the first router's policy): one
	// redirects every client, one proxies every client (served here from
	// the home server).
	nc, err := nats.Connect(p.natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	adm := &directory.Client{Conn: nc, Name: demoAdmin, Password: testPassword}
	for _, r := range []directory.RouterSpec{
		{Name: "rtr-redirect", Domain: demoDomain, Host: "im.example.test", Mode: "redirect"},
		{Name: "rtr-proxy", Domain: demoDomain, Host: "proxy.example.test", Mode: "proxy"},
	} {
		if err := adm.CreateRouter(ctx, r); err != nil {
			t.Fatal(err)
		}
	}

	// Routers: a logical URL at the redirecting router's host is sent to
	// the routers and answered 302; at the proxying router's host it is
	// served here. Each with Basic credentials: one request.
	viaRouter := func(host string) *testcluster.Response {
		return anon.DoHost(host, "PROPFIND", "/instmsg/aliases/bob", nil, "RVP-From-Principal: http://"+host+"/instmsg/aliases/alice",
			basic("alice", testPassword), "Depth: 0")
	}
	mustStatus(t, "at the redirecting router", viaRouter("im.example.test"), 302)
	mustStatus(t, "at the proxying router", viaRouter("proxy.example.test"), 207)

	after := scrape(t, ops)
	delta := func(name string, labels ...string) float64 {
		return metric(after, name, labels...) - metric(before, name, labels...)
	}
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		// Two logins and a watch: a 401 challenge each, and the answer;
		// one without credentials.
		{"rvpd_gateway_requests_total", []string{"method=SUBSCRIBE", "status=401"}, 4},
		{"rvpd_gateway_requests_total", []string{"method=SUBSCRIBE", "status=200"}, 2},
		{"rvpd_gateway_requests_total", []string{"method=SUBSCRIBE", "status=207"}, 1},
		{"rvpd_gateway_requests_total", []string{"method=PROPPATCH", "status=401"}, 1},
		{"rvpd_gateway_requests_total", []string{"method=PROPPATCH", "status=207"}, 1},
		{"rvpd_gateway_requests_total", []string{"method=PROPPATCH", "status=403"}, 1},
		{"rvpd_gateway_requests_total", []string{"method=NOTIFY", "status=401"}, 1},
		{"rvpd_gateway_requests_total", []string{"method=NOTIFY", "status=200"}, 1},
		{"rvpd_gateway_requests_total", []string{"method=PROPFIND", "status=401"}, 1},
		{"rvpd_gateway_requests_total", []string{"method=PROPFIND", "status=302"}, 1},
		{"rvpd_gateway_requests_total", []string{"method=PROPFIND", "status=207"}, 1},
		{"rvpd_gateway_requests_total", []string{"method=GET", "status=501"}, 1},
		{"rvpd_gateway_requests_total", nil, 16},
		{"rvpd_gateway_request_duration_seconds", nil, 16},
		{"rvpd_gateway_request_duration_seconds", []string{"method=NOTIFY"}, 2},
		{"rvpd_gateway_refused_total", []string{"reason=unauthenticated"}, 1},
		{"rvpd_gateway_refused_total", []string{"reason=sign_in_failed"}, 1},
		{"rvpd_gateway_refused_total", []string{"reason=forged"}, 1},
		{"rvpd_gateway_refused_total", []string{"reason=sign_in_throttled"}, 0},
		{"rvpd_gateway_refused_total", []string{"reason=rate_limited"}, 0},
		{"rvpd_gateway_lookups_total", []string{"purpose=redirect"}, 1},
		{"rvpd_router_lookups_total", []string{"result=redirected"}, 1},
		{"rvpd_router_redirects_total", []string{"router=rtr-redirect"}, 1},
		{"rvpd_gateway_proxied_total", []string{"router=rtr-proxy"}, 1},
	} {
		if got := delta(c.name, c.labels...); got != c.want {
			t.Errorf("%s%v went up by %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	// The home server: its facts appended, counted as the stream holds
	// them; decisions; the users and subscriptions, counted every few
	// seconds; the NOTIFYs (bob's watch's first, bob's message to alice),
	// sent after the replies; the lease.
	if got, want := delta("rvpd_home_facts_appended_total", "home=home1"), float64(streamStates(t, p.natsURL)[events.FactStream(demoHome)].LastSeq-factsBefore); got != want || want < 5 {
		t.Errorf("rvpd_home_facts_appended_total went up by %v; the stream by %v", got, want)
	}
	if got := delta("rvpd_home_decisions_total", "home=home1"); got < 5 {
		t.Errorf("rvpd_home_decisions_total went up by %v, want at least the 5 requests decided", got)
	}
	if got := delta("rvpd_home_decision_duration_seconds", "home=home1"); got < 5 {
		t.Errorf("rvpd_home_decision_duration_seconds observed %v requests, want at least 5", got)
	}
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"rvpd_home_online_users", []string{"home=home1"}, 2},
		{"rvpd_home_subscriptions", []string{"home=home1"}, 3}, // two logins, bob's watch
		{"rvpd_home_notify_deliveries_total", []string{"home=home1", "result=delivered"}, 2},
		{"rvpd_home_lease_owned", []string{"home=home1"}, 1},
		{"rvpd_home_owned", []string{"home=home1"}, 1}, // the gateway's watch of the leases
		{"rvpd_home_facts_in_flight", []string{"home=home1"}, 0},
	} {
		deadline := time.Now().Add(10 * time.Second)
		got := metric(after, c.name, c.labels...)
		for got != c.want && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
			got = metric(scrape(t, ops), c.name, c.labels...)
		}
		if got != c.want {
			t.Errorf("%s%v is %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if v := metric(after, "rvpd_home_notify_deliveries_total", "result=failed"); v != 0 {
		t.Errorf("%v NOTIFYs failed", v)
	}
	if v := metric(after, "rvpd_gateway_requests_in_flight"); v != 0 {
		t.Errorf("rvpd_gateway_requests_in_flight %v after the session, want 0", v)
	}
	if v := metric(after, "rvpd_gateway_accepting"); v != 1 {
		t.Errorf("rvpd_gateway_accepting %v, want 1", v)
	}
	// No label value names a user or an address.
	forbidden := regexp.MustCompile(`alice|bob|@|127\.0\.0\.1|instmsg`)
	for name, f := range after {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if forbidden.MatchString(l.GetValue()) {
					t.Errorf("%s has label %s=%q: no user or address may be a label", name, l.GetName(), l.GetValue())
				}
			}
		}
		if !strings.HasPrefix(name, "rvpd_") {
			continue
		}
		if f.GetType() == dto.MetricType_COUNTER && !strings.HasSuffix(name, "_total") {
			t.Errorf("counter %s does not end in _total", name)
		}
		if f.GetType() == dto.MetricType_HISTOGRAM && !strings.HasSuffix(name, "_seconds") {
			t.Errorf("histogram %s is not in seconds", name)
		}
	}
}

// readyz returns the status and body of GET /readyz.
func readyz(t *testing.T, ops string) (int, string) {
	t.Helper()
	resp, body := get(t, http.DefaultClient, ops+"/readyz")
	return resp.StatusCode, body
}

// waitReady polls /readyz until its status is want.
func waitReady(t *testing.T, ops string, want int, what string) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	status, body := 0, ""
	for time.Now().Before(deadline) {
		if status, body = readyz(t, ops); status == want {
			return body
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: /readyz %d, want %d:\n%s", what, status, want, body)
	return ""
}

// TestReadyzWithoutNATS: a node whose NATS server goes away stays alive
// (/healthz) but is not ready (/readyz 503, saying why) until the server
// is back.
func TestReadyzWithoutNATS(t *testing.T) {
	data := t.TempDir()
	natsAddr := stablePort(t)
	dev := startDev(t, data, "-nats", natsAddr)
	node, m := startExec(t, []string{"node", "-name", "n2", "-nats", dev.natsURL, "-cluster-key-file", filepath.Join(data, "cluster.key"),
		"-data", t.TempDir(), "-gateway", "127.0.0.1:0", "-ops", "127.0.0.1:0", "-log.level", "debug"}, opsRE)
	_ = node
	ops := "http://" + m[1]
	body := waitReady(t, ops, http.StatusOK, "node with NATS up")
	for _, want := range []string{"ok    nats", "ok    gateway", "ready"} {
		if !strings.Contains(body, want) {
			t.Errorf("/readyz says %q, lacking %q", body, want)
		}
	}

	// Its JetStream account's storage, which a gateway's appends need.
	deadline := time.Now().Add(20 * time.Second)
	for metric(scrape(t, ops), "rvpd_jetstream_storage_bytes") == 0 {
		if time.Now().After(deadline) {
			t.Fatal("rvpd_jetstream_storage_bytes not reported with NATS up")
		}
		time.Sleep(100 * time.Millisecond)
	}

	dev.stop(t) // the NATS server goes with it
	body = waitReady(t, ops, http.StatusServiceUnavailable, "node with NATS gone")
	// A scrape does not wait for NATS, and reports the storage figures
	// last read (for up to storageKeep: an alert's "for" is not reset by
	// a minute of NATS away; TestMetricsStorageKeptWhenUnread).
	start := time.Now()
	if v := metric(scrape(t, ops), "rvpd_jetstream_storage_bytes"); v == 0 {
		t.Errorf("rvpd_jetstream_storage_bytes without NATS: none, want the figure last read")
	}
	if took := time.Since(start); took > storageTimeout {
		t.Errorf("a scrape without NATS took %s", took)
	}
	if !strings.Contains(body, "FAIL  nats: not connected") || !strings.Contains(body, "not ready") {
		t.Errorf("/readyz without NATS says %q", body)
	}
	if resp, b := get(t, http.DefaultClient, ops+"/healthz"); resp.StatusCode != 200 || b != "ok\n" {
		t.Errorf("/healthz without NATS: %d %q, want 200 ok: the process is alive", resp.StatusCode, b)
	}
	fams := scrape(t, ops)
	if v := metric(fams, "rvpd_nats_connected"); v != 0 {
		t.Errorf("rvpd_nats_connected %v without NATS, want 0", v)
	}
	// What /readyz says, for alerts (docs/alerts.yml, RvpdNotReady).
	if f := fams["rvpd_ready"]; f == nil || len(f.GetMetric()) != 2 {
		t.Errorf("rvpd_ready without NATS: %v, want the conditions nats and gateway", f)
	} else if nats, gw := metric(fams, "rvpd_ready", "check=nats"), metric(fams, "rvpd_ready", "check=gateway"); nats != 0 || gw != 1 {
		t.Errorf("rvpd_ready without NATS: nats %v, gateway %v; want 0 and 1", nats, gw)
	}

	startDev(t, data, "-nats", natsAddr)
	waitReady(t, ops, http.StatusOK, fmt.Sprintf("node with NATS back at %s", natsAddr))
	if v := metric(scrape(t, ops), "rvpd_ready", "check=nats"); v != 1 {
		t.Errorf("rvpd_ready{check=nats} %v with NATS back, want 1", v)
	}
}

// TestReadyzUntilCaughtUp: a node that takes a home server over is not
// ready until its projection has caught up with the home server's facts
// (here 20,000 of them, with an empty data directory), and ready once it
// has.
func TestReadyzUntilCaughtUp(t *testing.T) {
	data := t.TempDir()
	dev := startDev(t, data)
	nc, err := nats.Connect(dev.natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx := context.Background()
	addHome2(t, dev) // home2, and dave on it
	js, _ := jetstream.New(nc)
	if err := projections.EnsureFactStream(ctx, js, "home2", projections.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	const facts = 20000
	dave := events.NewUser(demoDomain, "dave")
	for i := range facts {
		f := &events.PropertySet{Meta: events.Meta{At: time.Now().UTC(), Actor: "test"}, Node: dave,
			Value: events.PropValue{Prop: events.Prop{Space: events.NSRVP, Local: "mobile-state"}, Value: fmt.Sprint(i)}}
		data, err := events.Encode(f)
		if err != nil {
			t.Fatal(err)
		}
		msg := nats.NewMsg(events.FactSubject("home2", dave))
		msg.Header.Set(events.HeaderType, f.Type())
		msg.Data = data
		// Waiting for room, up to 30 s, when 4,000 are unanswered: on a
		// loaded machine the default 200 ms failed the test ("stalled
		// with too many outstanding async published messages").
		if _, err := js.PublishMsgAsync(msg, jetstream.WithStallWait(30*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		t.Fatal("facts not published within a minute")
	}

	_, m := startExec(t, []string{"node", "-name", "n2", "-nats", dev.natsURL, "-cluster-key-file", filepath.Join(data, "cluster.key"),
		"-data", t.TempDir(), "-home", "home2", "-ops", "127.0.0.1:0", "-log.level", "debug"}, opsRE)
	ops := "http://" + m[1]
	notReady := 0
	deadline := time.Now().Add(2 * time.Minute)
	for {
		status, body := readyz(t, ops)
		if status == http.StatusOK {
			break
		}
		if !strings.Contains(body, "FAIL  home home2: ") {
			t.Fatalf("/readyz %d without saying the home server is what is not ready:\n%s", status, body)
		}
		notReady++
		if time.Now().After(deadline) {
			t.Fatalf("not ready after 2 minutes:\n%s", body)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if notReady == 0 {
		t.Errorf("ready at the first look, with %d facts to catch up", facts)
	}
	// Ready means caught up: the node serves from the last fact on.
	if v := metric(scrape(t, ops), "rvpd_home_lease_owned", "home=home2"); v != 1 {
		t.Errorf("rvpd_home_lease_owned{home2} %v once ready", v)
	}
	msg, err := nc.Request(events.HomeAdminSubject("home2", "verify"), nil, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	var resp struct {
		Results []projections.Verification `json:"results"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil || len(resp.Results) == 0 {
		t.Fatalf("verify's answer %s: %v", msg.Data, err)
	}
	if v := resp.Results[0]; !v.OK() || v.Position < facts {
		t.Errorf("home2's projection once ready: %+v, want at position %d and equal to a rebuild", v, facts)
	}
	t.Logf("/readyz said 503 %d times while %d facts were caught up with", notReady, facts)
}
