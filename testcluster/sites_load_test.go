package testcluster

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// TestSitesLossUnderLoad is issue 11's must-show: site b lost under a
// load at site a, three times (its leaf connection severed, its NATS
// server stopped, its leaf connection silent: packets dropped, nothing
// closed), and back each time without a restart.
//
// Site a's load: six users of home1 and home3 (two home servers of site
// a) sign in, watch each other and send messages and state changes one
// after another; carol and heidi, of site b, watch every one of them, so
// that each state change is relayed to site b too. Measured and checked:
//   - site a's rate (requests answered with success a second, of 60 a
//     second offered) in the 10 s before each loss and the 10 s after
//     it, the loss's first seconds included: at least 90% of the rate
//     before; and the latencies of both;
//   - every request of the load answered with success, and each kept
//     (its fact in site a's streams, once: CheckFacts); site a's
//     projections equal their rebuilds (Verify);
//   - judy (site a) sends carol a message every 100 ms throughout: while
//     b is lost each is answered 412 or 503 (at once, the site watch
//     telling the gateway, once b has missed two probes) but for at most
//     one a loss, sent before the watch noticed, answered 504 once it
//     did; none waits past the gateways' request timeout, and
//     none refused (412, 503) reaches carol later (those sent into the
//     silent link reach b after their deadline, and are dropped there).
//     A 504 says the outcome is unknown: a message stored at b just
//     before the loss is delivered there, its answer lost on the way;
//   - alice (site a) and carol (site b) watch each other; each sees the
//     other offline while b is lost, and within 10 s of b's return the
//     state the other set meanwhile.
func TestSitesLossUnderLoad(t *testing.T) {
	LongTest(t)
	const timeout = 5 * time.Second
	load := []string{"bob", "dave", "erin", "frank", "grace", "ivan"}
	siteA := map[string]string{"alice": "home1", "judy": "home1", "bob": "home1", "dave": "home1", "erin": "home1",
		"frank": "home3", "grace": "home3", "ivan": "home3"}
	ss := StartSites(t, SitesOptions{Options: Options{Inside: []string{"10.0.0.0/8"}, RequestTimeout: timeout},
		Sites: map[string]map[string]string{"a": siteA, "b": {"carol": "home2", "heidi": "home2"}}, Gateways: 2})
	a, b := ss.Site("a"), ss.Site("b")

	alice, judy, carol, heidi := a.Client(t, "alice"), a.Client(t, "judy"), b.Client(t, "carol"), b.Client(t, "heidi")
	signIn(t, judy, heidi)
	watchEachOther(t, alice, carol)
	for _, w := range []*Client{carol, heidi} {
		for _, u := range load {
			must(t, w.Alias+" watches "+u, w.Watch(u, 3600), 207)
		}
	}

	lt := a.LoadTarget()
	// A fixed rate offered (each user a request every 100 ms: 60 a
	// second), not as fast as the machine allows: the machine is shared,
	// and a closed loop's rate measures its other work as much as site
	// a's. Site a keeps its rate when it serves what it is offered.
	l := StartLoad(t, lt, LoadOptions{Users: load, Every: 100 * time.Millisecond})
	defer l.Stop()
	pr := startProbe(judy, "carol")
	defer pr.stop()
	l.WaitSucceeded(300, time.Time{}, time.Minute, nil)

	const window = 10 * time.Second
	losses := []struct {
		name       string
		lose, back func()
		carolSets  string // carol's state set while b is lost (her site works unless stopped)
		aliceSets  string
		failed     int // judy's messages to carol to see refused
	}{
		{"severed", b.Site().Sever, b.Site().Heal, "away", "busy", 10},
		{"stopped", b.Site().Stop, b.Site().Start, "", "at-lunch", 10},
		// No responder is missing while the leaf connection looks up: the
		// site watch tells the gateways.
		{"silent", b.Site().Link.Silence, b.Site().Heal, "on-phone", "back-soon", 10},
	}
	carolState := "online"
	for _, loss := range losses {
		before := measure(window) // the load as it is
		aliceSeen, carolSeen := len(alice.Notifies()), len(carol.Notifies())
		lost := time.Now()
		loss.lose()
		// A message sent before the loss took effect (b's server still
		// shutting down) may be delivered and answered 200: only those
		// sent after it must be refused.
		inEffect := time.Now()
		_, off := alice.WaitNotify(aliceSeen, wait, fromState(carol, "offline"))
		t.Logf("%s: alice saw carol offline %v after b was lost", loss.name, time.Since(lost).Round(time.Millisecond))
		if loss.carolSets != "" {
			must(t, "carol "+loss.carolSets+", b lost", carol.SetState(loss.carolSets, 3600, 0), 207)
			carolState = loss.carolSets
		}
		must(t, "alice "+loss.aliceSets+", b lost", alice.SetState(loss.aliceSets, 3600, 0), 207)
		pr.waitStatuses(t, lost, loss.failed, 503, 412)
		time.Sleep(time.Until(lost.Add(window))) // the measurement window, not a synchronisation
		during := lost

		back := time.Now()
		loss.back()
		alice.WaitNotify(off+1, wait, fromState(carol, carolState)) // told after the offline
		aliceSaw := time.Since(back)
		carol.WaitNotify(carolSeen, wait, fromState(alice, loss.aliceSets))
		carolSaw := time.Since(back)
		t.Logf("%s: b back: alice saw carol %s %v after, carol saw alice %s %v after", loss.name, carolState,
			aliceSaw.Round(time.Millisecond), loss.aliceSets, carolSaw.Round(time.Millisecond))
		pr.waitStatuses(t, back, 5, 200)

		rb, rd := l.rate(before.from, before.to), l.rate(during, during.Add(window))
		t.Logf("%s: site a's rate %.1f requests/s in the %v before b was lost (latency %s), %.1f/s in the %v after (%.0f%%; latency %s)",
			loss.name, rb, window, l.latency(before.from, before.to), rd, window, 100*rd/rb, l.latency(during, during.Add(window)))
		if rd < 0.9*rb {
			t.Errorf("%s: site a's rate fell to %.0f%% of what it was (%.1f/s from %.1f/s); want at least 90%%", loss.name, 100*rd/rb, rd, rb)
		}
		s := pr.summary(inEffect, back)
		t.Logf("%s: judy → carol while b was lost: %v, slowest %v", loss.name, s.statuses, s.slowest.Round(time.Millisecond))
		// Each answered once the watch counted b lost at the latest (a
		// second here), well before the request timeout.
		if s.slowest > 3*time.Second || s.other > 0 || s.statuses[504] > 1 {
			t.Errorf("%s: judy → carol while b was lost: %v, slowest %v; want each 412 or 503 within 3 s (the request timeout is %v), but for at most one 504 (in flight as the watch noticed)", loss.name, s.statuses, s.slowest, timeout)
		}
	}
	l.Stop()
	pr.stop()

	fc := l.CheckFacts(a.JS)
	t.Logf("site a's load: %s; slowest request %v", fc, l.Slowest().Round(time.Millisecond))
	for _, r := range l.Results() {
		if !r.OK() {
			t.Errorf("site a's load: %s %s at %s after %v: %d %s", r.Kind, r.Mark, r.Start.Format("15:04:05.000"), r.Took.Round(time.Millisecond), r.Status, r.Err)
		}
	}
	// None of judy's messages, those sent as b was lost included, waited
	// past the request timeout; nothing she was told had been refused
	// reaches carol. Those answered 504 (no answer in time) may have.
	refused, unknown := map[string]bool{}, map[string]bool{}
	var slowest Result
	for _, r := range pr.results() {
		switch r.Status {
		case 412, 503:
			refused[r.Mark] = true
		case 504:
			unknown[r.Mark] = true
		}
		if r.Took > slowest.Took {
			slowest = r
		}
		if r.Took > timeout+time.Second || (r.Status != 200 && !refused[r.Mark] && !unknown[r.Mark]) {
			t.Errorf("judy → carol at %s: %d %s after %v; want 200, 412, 503 or 504 within %v", r.Start.Format("15:04:05.000"), r.Status, r.Err, r.Took, timeout)
		}
	}
	reached := 0
	for _, n := range carol.Notifies() {
		mk := markRE.FindString(string(n.Body))
		if mk != "" && refused[mk] {
			t.Errorf("carol got %s, which judy was told had been refused", mk)
		}
		if mk != "" && unknown[mk] {
			reached++
		}
	}
	t.Logf("judy → carol: %d messages, %d refused, %d answered 504 (of which %d reached carol); the slowest answered %d after %v",
		len(pr.results()), len(refused), len(unknown), reached, slowest.Status, slowest.Took.Round(time.Millisecond))
	a.Verify()
	b.Verify()
}

// span is a stretch of time.
type span struct{ from, to time.Time }

// measure lets d pass and returns it: a measurement window of the load
// as it runs, not a synchronisation.
func measure(d time.Duration) span {
	from := time.Now()
	time.Sleep(d)
	return span{from, from.Add(d)}
}

// rate is the load's requests sent in [from, to) and answered with
// success, a second.
func (l *Load) rate(from, to time.Time) float64 {
	n := 0
	for _, r := range l.Results() {
		if r.OK() && !r.Start.Before(from) && r.Start.Before(to) {
			n++
		}
	}
	return float64(n) / to.Sub(from).Seconds()
}

// latency is the median, 99th percentile and slowest time of the load's
// requests sent in [from, to).
func (l *Load) latency(from, to time.Time) string {
	var d []time.Duration
	for _, r := range l.Results() {
		if !r.Start.Before(from) && r.Start.Before(to) {
			d = append(d, r.Took)
		}
	}
	if len(d) == 0 {
		return "none"
	}
	slices.Sort(d)
	q := func(p float64) time.Duration { return d[int(p*float64(len(d)-1))].Round(100 * time.Microsecond) }
	return fmt.Sprintf("p50 %v, p99 %v, max %v", q(0.5), q(0.99), q(1))
}

// probe sends messages from one client to another one after another,
// 100 ms apart, and records what each got (Result.Kind "probe").
type probe struct {
	cl   *Client
	to   string
	done chan struct{}
	wg   sync.WaitGroup
	once sync.Once

	mu  sync.Mutex
	got []Result
}

func startProbe(cl *Client, to string) *probe {
	p := &probe{cl: cl, to: to, done: make(chan struct{})}
	p.wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-p.done:
				return
			case <-time.After(100 * time.Millisecond):
			}
			r := Result{Kind: "probe", User: cl.Alias, Mark: fmt.Sprintf("mark-%s-%d", cl.Alias, i), Start: time.Now()}
			r.end(cl.TryRaw(cl.messageRequest(to, r.Mark)))
			p.mu.Lock()
			p.got = append(p.got, r)
			p.mu.Unlock()
		}
	})
	return p
}

func (p *probe) stop() {
	p.once.Do(func() { close(p.done) })
	p.wg.Wait()
}

func (p *probe) results() []Result {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.got)
}

// waitStatuses waits until n probes sent since then were answered with
// one of statuses.
func (p *probe) waitStatuses(t *testing.T, since time.Time, n int, statuses ...int) {
	t.Helper()
	Eventually(t, 30*time.Second, func() error {
		got := 0
		for _, r := range p.results() {
			if !r.Start.Before(since) && slices.Contains(statuses, r.Status) {
				got++
			}
		}
		if got < n {
			return fmt.Errorf("%d messages %s → %s sent since %s answered %v, want %d", got, p.cl.Alias, p.to, since.Format("15:04:05.000"), statuses, n)
		}
		return nil
	})
}

type probeSummary struct {
	statuses map[int]int
	other    int // neither 412, 503 nor 504
	slowest  time.Duration
}

// summary is what the probes sent in [from, to) got.
func (p *probe) summary(from, to time.Time) probeSummary {
	s := probeSummary{statuses: map[int]int{}}
	for _, r := range p.results() {
		if r.Start.Before(from) || !r.Start.Before(to) {
			continue
		}
		s.statuses[r.Status]++
		if r.Status != 412 && r.Status != 503 && r.Status != 504 {
			s.other++
		}
		s.slowest = max(s.slowest, r.Took)
	}
	return s
}
