package gateway

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TestRequestMetricsByLabel: each request is counted under its method and
// status, the first of each pair as the ones after it (kept, not looked
// up again), and a method or status a client made up under "other".
func TestRequestMetricsByLabel(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	for _, r := range []struct {
		method string
		status int
	}{{"SUBSCRIBE", 200}, {"SUBSCRIBE", 200}, {"SUBSCRIBE", 207}, {"BREW", 999}, {"NOTIFY", 200}, {"SUBSCRIBE", 200}, {"BREW", 418}} {
		m.request(r.method, r.status, time.Millisecond)
	}
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range fams {
		for _, mt := range f.GetMetric() {
			var labels []string
			for _, l := range mt.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			key := f.GetName() + "{" + strings.Join(labels, ",") + "}"
			switch {
			case mt.GetCounter() != nil:
				got[key] = mt.GetCounter().GetValue()
			case mt.GetHistogram() != nil:
				got[key] = float64(mt.GetHistogram().GetSampleCount())
			}
		}
	}
	want := map[string]float64{
		"rvpd_gateway_requests_total{method=SUBSCRIBE,status=200}": 3,
		"rvpd_gateway_requests_total{method=SUBSCRIBE,status=207}": 1,
		"rvpd_gateway_requests_total{method=NOTIFY,status=200}":    1,
		"rvpd_gateway_requests_total{method=other,status=other}":   1,
		"rvpd_gateway_requests_total{method=other,status=418}":     1,
		"rvpd_gateway_request_duration_seconds{method=SUBSCRIBE}":  4,
		"rvpd_gateway_request_duration_seconds{method=NOTIFY}":     1,
		"rvpd_gateway_request_duration_seconds{method=other}":      2,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok && (strings.HasPrefix(k, "rvpd_gateway_requests_total") || strings.HasPrefix(k, "rvpd_gateway_request_duration")) {
			t.Errorf("unexpected series %s = %v", k, got[k])
		}
	}
}
