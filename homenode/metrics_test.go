package homenode

import (
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/rvp"
)

// TestStoppedNodeGaugesZero: a node that stops serving its home server
// (the lease lost or let go: the process waits on as a standby) leaves
// its gauges at zero, as it does the NOTIFYs'. Left at its last values,
// a former owner still reported the users online, the subscriptions, the
// facts in flight and the requests waiting of a home server another node
// now serves: the dashboard's sums by home server counted them twice,
// and a lag that would never move again.
func TestStoppedNodeGaugesZero(t *testing.T) {
	m := NewMetrics(prometheus.NewRegistry())
	h := newHarnessWith(t, func(c *Config) { c.Metrics = m }, "ann")
	now := time.Now().UTC()
	ann := events.NewUser("example.test", "ann")
	url := "http://im.example.test/instmsg/aliases/ann"
	h.send(&events.Subscribe{Req: events.Req{ID: "login", At: now, Deadline: now.Add(30 * time.Second), Gateway: "gw", Client: "127.0.0.1",
		Node: ann, NodeURL: url, From: url, FromUser: ann, Auth: events.Identity{Scheme: "ntlm", User: ann}},
		NotificationType: events.NotifyPragma, CallBack: "http://" + h.sink.Addr().String(), Lifetime: 600}, false)
	gm := m.of(h.home)
	value := func(g prometheus.Gauge) float64 {
		var d dto.Metric
		if err := g.Write(&d); err != nil {
			t.Fatal(err)
		}
		return d.GetGauge().GetValue()
	}
	for limit := time.Now().Add(15 * time.Second); value(gm.online) != 1 || value(gm.subs) != 1; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(limit) {
			t.Fatalf("ann logged in: online %v, subscriptions %v; want 1 and 1", value(gm.online), value(gm.subs))
		}
	}
	gm.lag(3) // as a node under load last saw its consumer
	gm.window(2)
	if err := h.stopNode(); err != nil {
		t.Fatal(err)
	}
	for name, g := range map[string]prometheus.Gauge{"rvpd_home_online_users": gm.online, "rvpd_home_subscriptions": gm.subs,
		"rvpd_home_requests_pending": gm.pending, "rvpd_home_facts_in_flight": gm.inFlight} {
		if v := value(g); v != 0 {
			t.Errorf("%s{home=%s} %v once its node stopped, want 0", name, h.home, v)
		}
	}
}

// TestDroppedNotificationsLoggedSparingly: NOTIFYs dropped at a full
// queue (a callback that does not answer holds its user's queue; a
// popular user's change is told to a thousand watchers) are counted in
// rvpd_home_notify_deliveries_total{result="dropped"} and logged once in
// a while with how many: before, one Warn line each, a thousand for one
// change of state.
func TestDroppedNotificationsLoggedSparingly(t *testing.T) {
	h := newHarness(t)
	lines := func() int {
		h.logs.mu.Lock()
		defer h.logs.mu.Unlock()
		n := 0
		for _, l := range h.logs.lines {
			if strings.Contains(l, "notification dropped") || strings.Contains(l, "notifications dropped") {
				n++
			}
		}
		return n
	}
	before := lines()
	for range 5 { // five changes of state, each told to 200 watchers
		d := &decision{}
		for i := range 200 {
			d.notes = append(d.notes, note{key: "w" + strconv.Itoa(i) + "@example.test", out: rvp.Outbound{Method: "NOTIFY", URL: rvp.URL{Host: "192.0.2.1:1", Path: "/"}}, deadline: time.Now().Add(time.Second)})
		}
		h.node.sendNotes(d, func(job) bool { return false })
	}
	if n := lines() - before; n < 1 || n > 2 {
		t.Errorf("1,000 notifications dropped logged %d lines, want one (saying how many)", n)
	}
}

// TestDroppedNotificationsEndLogged: the notifications dropped after a
// burst's first line are told once the drops end. Before, they were
// carried into the next line, which came only with the next drop: an
// operator paged in the night read 200 dropped, whether 800 followed or
// none, and not that they stopped; those before the node stopped were
// never logged. The line comes once nothing was dropped for
// dropLogEvery (the deciding loop looks at each sweep), and at the stop.
func TestDroppedNotificationsEndLogged(t *testing.T) {
	var skew atomic.Int64 // the node's clock, moved on by the test
	h := newHarnessWith(t, func(c *Config) {
		c.Now = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	})
	drop := func(changes int) {
		for range changes { // each told to 200 watchers
			d := &decision{}
			for i := range 200 {
				d.notes = append(d.notes, note{key: "w" + strconv.Itoa(i) + "@example.test", out: rvp.Outbound{Method: "NOTIFY", URL: rvp.URL{Host: "192.0.2.1:1", Path: "/"}}, deadline: time.Now().Add(time.Second)})
			}
			h.node.sendNotes(d, func(job) bool { return false })
		}
	}
	// ended returns the dropped= of the closing lines logged, waiting up
	// to within for one.
	ended := func(within time.Duration) []string {
		t.Helper()
		for deadline := time.Now().Add(within); ; time.Sleep(5 * time.Millisecond) {
			h.logs.mu.Lock()
			var got []string
			for _, l := range h.logs.lines {
				if strings.Contains(l, "notifications dropped after the last line, none since") {
					_, v, _ := strings.Cut(l, " dropped=")
					v, _, _ = strings.Cut(v, " ")
					got = append(got, v)
				}
			}
			h.logs.mu.Unlock()
			if len(got) > 0 || time.Now().After(deadline) {
				return got
			}
		}
	}
	drop(5) // 200 logged at once, 800 not
	if got := ended(200 * time.Millisecond); len(got) > 0 {
		t.Fatalf("drops not yet over told ended: dropped=%v", got)
	}
	skew.Store(int64(dropLogEvery)) // nothing dropped for dropLogEvery
	if got := ended(5 * time.Second); !slices.Equal(got, []string{"800"}) {
		t.Fatalf("the drops' end: closing lines with dropped=%v, want one with 800", got)
	}
	drop(2) // 200 logged at once, 200 not, until the node stops
	if err := h.stopNode(); err != nil {
		t.Fatal(err)
	}
	if got := ended(0); !slices.Equal(got, []string{"800", "200"}) {
		t.Errorf("after the stop: closing lines with dropped=%v, want 800 then 200", got)
	}
}

// TestDropsGoingOnNotEnded: drops that go on past a line's dropLogEvery
// are not told ended between them, only once nothing was dropped for
// dropLogEvery (TestRefusedFloodNotEnded's rule, for the gateway).
func TestDropsGoingOnNotEnded(t *testing.T) {
	t0 := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
	var l dropLog
	if ok, _ := l.add(1, t0); !ok {
		t.Fatal("the first drop not logged")
	}
	at := t0
	for range 99 {
		at = at.Add(100 * time.Millisecond)
		if ok, _ := l.add(2, at); ok {
			t.Fatalf("a drop at %s logged, within %s of the first line", at.Sub(t0), dropLogEvery)
		}
	}
	if n := l.ended(t0.Add(dropLogEvery)); n != 0 {
		t.Errorf("drops told ended with %d, the last 0.1 s before", n)
	}
	if n := l.ended(at.Add(dropLogEvery)); n != 198 {
		t.Errorf("after %s without a drop, %d told ended, want 198", dropLogEvery, n)
	}
}
