package testcluster

import (
	"context"
	"fmt"
	"math/rand/v2"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rvp-im/rvpd/events"
)

// Load keeps a deployment busy with what its users do all day: each user
// signed in, watching the others, changing its state and sending
// messages. Every request carries a mark of its own (a message's text, a
// state change's mobile-description property), which its facts keep, so
// that what was acknowledged can be counted against what the streams
// hold (CheckFacts).
type Load struct {
	t       testing.TB
	target  LoadTarget
	clients []*Client
	stop    chan struct{}
	wg      sync.WaitGroup
	started time.Time

	mu       sync.Mutex
	results  []Result
	inFlight map[int]Result // by user: each has one request in flight at most
}

// Result is what one request of a Load got.
type Result struct {
	Kind   string // "message" or "presence"
	User   string // who sent it
	Home   string // the home server deciding it
	Mark   string
	Status int    // 0 when the gateway could not be reached or did not answer
	Err    string // why there is no status
	Start  time.Time
	Took   time.Duration
}

// OK reports a success answer.
func (r Result) OK() bool { return r.Status >= 200 && r.Status < 300 }

// LoadTarget is the deployment a Load works on: its gateways and users.
type LoadTarget struct {
	Gateways []string // host:port
	IMHost   string   // the Host requests name
	NTDomain string
	Password string            // every user's
	Users    map[string]string // alias → home server
}

// LoadTarget returns the deployment as a Load sees it.
func (c *Cluster) LoadTarget() LoadTarget {
	lt := LoadTarget{IMHost: c.IMHost, NTDomain: c.NTDomain, Password: c.Password, Users: c.opts.Users}
	for _, g := range c.Gateways {
		lt.Gateways = append(lt.Gateways, g.Addr)
	}
	return lt
}

// LoadOptions configure StartLoad.
type LoadOptions struct {
	// Users are the aliases that take part (each signs in at gateway i
	// modulo the number of gateways); each sends requests one after
	// another. Default every user of the target.
	Users []string
	// Pause between two requests of a user. Default 20ms.
	Pause time.Duration
	// Every, when set, instead paces each user at a fixed rate: a
	// request begins every Every (one that takes longer than that
	// delays the next). The load then offers the same rate whatever the
	// machine's other work, and a deployment that keeps up serves it
	// all: what a rate kept is measured against.
	Every time.Duration
}

// StartLoad signs the users in, makes each watch the others, and starts
// them working until Stop.
func StartLoad(t testing.TB, target LoadTarget, o LoadOptions) *Load {
	t.Helper()
	if len(o.Users) == 0 {
		for a := range target.Users {
			o.Users = append(o.Users, a)
		}
		sort.Strings(o.Users)
	}
	if o.Pause <= 0 {
		o.Pause = 20 * time.Millisecond
	}
	l := &Load{t: t, target: target, stop: make(chan struct{}), started: time.Now(), inFlight: map[int]Result{}}
	for i, a := range o.Users {
		cl := NewClient(t, target.Gateways[i%len(target.Gateways)], a)
		cl.UseHost(target.IMHost)
		cl.Creds = &Credentials{Scheme: SchemeNTLMv1, User: a, Domain: target.NTDomain, Password: target.Password}
		cl.CutOK = true // the loads of fault tests outlive killed senders
		if r := cl.Login(3600); r.Status != 200 {
			t.Fatalf("%s signs in: %d %s", a, r.Status, r.Body)
		}
		if r := cl.SetState("online", 3600, 0); r.Status != 207 {
			t.Fatalf("%s online: %d %s", a, r.Status, r.Body)
		}
		l.clients = append(l.clients, cl)
	}
	for _, cl := range l.clients {
		for _, other := range o.Users {
			if other != cl.Alias {
				if r := cl.Watch(other, 3600); r.Status != 207 {
					t.Fatalf("%s watches %s: %d %s", cl.Alias, other, r.Status, r.Body)
				}
			}
		}
	}
	for w, cl := range l.clients {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			l.work(w, cl, o)
		}()
	}
	return l
}

var states = []string{"online", "busy", "away", "on-phone", "at-lunch", "back-soon"}

func (l *Load) work(w int, cl *Client, o LoadOptions) {
	rnd := rand.New(rand.NewPCG(uint64(w), 14))
	next := time.Now()
	for i := 0; ; i++ {
		wait := o.Pause
		if o.Every > 0 {
			next = next.Add(o.Every)
			wait = max(0, time.Until(next))
			if wait == 0 {
				next = time.Now() // behind: the next begins now, and the pace from there
			}
		}
		select {
		case <-l.stop:
			return
		case <-time.After(wait):
		}
		res := Result{User: cl.Alias, Home: l.target.Users[cl.Alias], Mark: fmt.Sprintf("mark-%s-%d", cl.Alias, i), Start: time.Now()}
		var raw []byte
		if i%2 == 0 {
			res.Kind = "message"
			to := l.clients[rnd.IntN(len(l.clients))]
			if to == cl {
				to = l.clients[(w+1)%len(l.clients)]
			}
			res.Home = l.target.Users[to.Alias] // a message is decided at its recipient's
			raw = cl.messageRequest(to.Alias, res.Mark)
		} else {
			res.Kind = "presence"
			raw = cl.request("", "PROPPATCH", "/instmsg/aliases/"+cl.Alias, presenceBody(states[rnd.IntN(len(states))], res.Mark),
				"Content-Type: text/xml", cl.From())
		}
		l.mu.Lock()
		l.inFlight[w] = res
		l.mu.Unlock()
		res.end(cl.TryRaw(raw))
		l.mu.Lock()
		delete(l.inFlight, w)
		l.results = append(l.results, res)
		l.mu.Unlock()
	}
}

// messageRequest is a NOTIFY carrying a message of text to alias.
func (c *Client) messageRequest(alias, text string) []byte {
	return c.request("", "NOTIFY", "/instmsg/aliases/"+alias, c.MessageBody(alias, text),
		c.From(), "Content-Type: text/xml", "RVP-Hop-Count: 1", "RVP-Ack-Type: DeepOr")
}

// end records what the request begun at r.Start got.
func (r *Result) end(resp *Response, err error) {
	r.Took = time.Since(r.Start)
	if err != nil {
		r.Err = err.Error()
	} else {
		r.Status = resp.Status
	}
}

// presenceBody sets a leased state and the mobile-description property
// (the mark) in one PROPPATCH.
func presenceBody(state, mark string) []byte {
	return []byte(`<?xml version="1.0"?><d:propertyupdate xmlns:d="DAV:" xmlns:r="http://schemas.microsoft.com/rvp/"><d:set><d:prop>` +
		`<r:state><r:leased-value><r:value><r:` + state + `/></r:value><r:default-value><r:offline/></r:default-value><d:timeout>3600</d:timeout></r:leased-value></r:state>` +
		`<r:mobile-description>` + mark + `</r:mobile-description></d:prop></d:set></d:propertyupdate>`)
}

// Stop stops the users and waits for their requests in flight.
func (l *Load) Stop() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
}

// Results returns what every request got so far, in the order they
// ended.
func (l *Load) Results() []Result {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Result(nil), l.results...)
}

// Succeeded counts the requests answered with success so far.
func (l *Load) Succeeded() int {
	n := 0
	for _, r := range l.Results() {
		if r.OK() {
			n++
		}
	}
	return n
}

// WaitSucceeded waits until n requests sent since then (all of them when
// since is zero) and matching (all when nil) have been answered with
// success, and returns when the n-th ended.
func (l *Load) WaitSucceeded(n int, since time.Time, d time.Duration, match func(Result) bool) time.Time {
	l.t.Helper()
	var at time.Time
	Eventually(l.t, d, func() error {
		var ends []time.Time
		for _, r := range l.Results() {
			if r.OK() && !r.Start.Before(since) && (match == nil || match(r)) {
				ends = append(ends, r.Start.Add(r.Took))
			}
		}
		if len(ends) < n {
			return fmt.Errorf("%d requests sent since %s answered with success, want %d", len(ends), since.Format("15:04:05.000"), n)
		}
		sort.Slice(ends, func(i, j int) bool { return ends[i].Before(ends[j]) })
		at = ends[n-1]
		return nil
	})
	return at
}

// FirstSent returns when the first request sent since then and
// matching (all when nil) was sent, answered or in flight; false when
// none has been. Each user sends its next request once its last is
// answered: while every user waits on a request for one home server,
// none is sent to another, however ready that one is to serve.
func (l *Load) FirstSent(since time.Time, match func(Result) bool) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var first time.Time
	see := func(r Result) {
		if !r.Start.Before(since) && (match == nil || match(r)) && (first.IsZero() || r.Start.Before(first)) {
			first = r.Start
		}
	}
	for _, r := range l.results {
		see(r)
	}
	for _, r := range l.inFlight {
		see(r)
	}
	return first, !first.IsZero()
}

// WaitFailed waits until n requests sent since then have been answered
// 503 or 504 (not taken, or not answered in time).
func (l *Load) WaitFailed(n int, since time.Time, d time.Duration) {
	l.t.Helper()
	Eventually(l.t, d, func() error {
		got := 0
		for _, r := range l.Results() {
			if (r.Status == 503 || r.Status == 504) && !r.Start.Before(since) {
				got++
			}
		}
		if got < n {
			return fmt.Errorf("%d requests sent since %s answered 503 or 504, want %d", got, since.Format("15:04:05.000"), n)
		}
		return nil
	})
}

var markRE = regexp.MustCompile(`mark-[a-z0-9]+-[0-9]+`)

// FactCount is what CheckFacts found.
type FactCount struct {
	Acknowledged int // requests answered with success
	Survived     int // of those, the ones whose fact is in the streams
	Lost         int // answered with success, no fact
	Duplicated   int // marks found in more than one fact of their kind
	Unanswered   int // facts of requests that got no success answer (decided, then 504 or cut)
	Statuses     map[int]int
}

func (f FactCount) String() string {
	return fmt.Sprintf("%d acknowledged, %d survived, %d lost, %d duplicated; %d facts of requests not acknowledged; statuses %v",
		f.Acknowledged, f.Survived, f.Lost, f.Duplicated, f.Unanswered, f.Statuses)
}

// CheckFacts reads every fact stream and counts, for the load's requests:
// every one answered with success must have its fact (a message's
// acceptance, a state change's property) exactly once; none may have it
// twice; none answered 503 (not taken) may have been carried out: a
// state change's fact, a message got by its recipient. It reports each
// loss, duplicate and 503 carried out as a test error.
func (l *Load) CheckFacts(js jetstream.JetStream) FactCount {
	l.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	found := map[string]int{}
	where := map[string][]string{} // each mark's facts: stream, sequence, type, time
	names := js.StreamNames(ctx, jetstream.WithStreamListSubject(events.FactRoot+".>"))
	var streams []string
	for name := range names.Name() {
		streams = append(streams, name)
	}
	if err := names.Err(); err != nil {
		l.t.Fatal(err)
	}
	for _, name := range streams {
		// Read again from the start when a read fails (a busy cluster may
		// leave a fetch unanswered).
		var marks map[string][]string
		Eventually(l.t, time.Minute, func() (err error) {
			marks, err = l.readMarks(ctx, js, name)
			if err != nil {
				l.t.Logf("reading the facts (again): %v", err)
			}
			return err
		})
		for mk, at := range marks {
			found[mk] += len(at)
			where[mk] = append(where[mk], at...)
		}
	}
	fc := FactCount{Statuses: map[int]int{}}
	acked := map[string]bool{}
	for _, r := range l.Results() {
		fc.Statuses[r.Status]++
		if !r.OK() {
			continue
		}
		fc.Acknowledged++
		acked[r.Mark] = true
		switch found[r.Mark] {
		case 0:
			fc.Lost++
			l.t.Errorf("%s %s by %s (decided at %s) was answered %d; sent at %s (%v into the load), answered after %v; its fact is not in the streams",
				r.Kind, r.Mark, r.User, r.Home, r.Status, r.Start.Format("15:04:05.000"), r.Start.Sub(l.started).Round(time.Millisecond), r.Took.Round(time.Millisecond))
		default:
			fc.Survived++
		}
	}
	for mk, n := range found {
		if n > 1 {
			fc.Duplicated++
			l.t.Errorf("%s is in %d facts: decided twice (%s)", mk, n, strings.Join(where[mk], "; "))
		}
		if !acked[mk] {
			fc.Unanswered++
		}
	}
	refused := map[string]Result{}
	for _, r := range l.Results() {
		if r.Status == 503 {
			refused[r.Mark] = r
		}
	}
	done := func(r Result, how string) {
		l.t.Errorf("%s %s was answered 503 (not taken) at %s, and %s", r.Kind, r.Mark, r.Start.Format("15:04:05.000"), how)
	}
	for mk, r := range refused {
		// A home node's 503 (limits, a recipient with too much waiting)
		// records nothing; a message accepted and then not delivered is
		// answered 412, not 503.
		if found[mk] > 0 {
			done(r, "its fact is in the streams")
		}
	}
	for _, cl := range l.clients {
		for _, n := range cl.Notifies() {
			if r, ok := refused[markRE.FindString(string(n.Body))]; ok && r.Kind == "message" {
				done(r, cl.Alias+" got it")
			}
		}
	}
	return fc
}

// FactMark returns the mark of a Load's request that a fact (its type and
// data) keeps: a message's acceptance, a state change's property; "" for
// other facts. A property a handoff carries to the home server a user
// moved to (a fact of the system, of the handoff's request) is a copy of
// the one its request set, not that request decided again: "" too.
func FactMark(typ string, data []byte) (string, error) {
	ev, err := events.Decode(typ, data)
	if err != nil {
		return "", err
	}
	switch f := ev.(type) {
	case *events.MessageAccepted:
		return markRE.FindString(string(f.Body)), nil
	case *events.PropertySet:
		if f.Actor == "system" {
			return "", nil
		}
		return markRE.FindString(f.Value.Value), nil
	}
	return "", nil
}

// readMarks finds the marks in the facts of stream name stored since
// the load started, each with where it is (sequence, time, type, fact
// id); earlier facts cannot hold its marks, and a history of 200,000
// facts is not read.
func (l *Load) readMarks(ctx context.Context, js jetstream.JetStream, name string) (map[string][]string, error) {
	found := map[string][]string{}
	since := l.started.Add(-time.Second)
	err := ReadStream(ctx, js, name, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &since},
		func(m jetstream.Msg) error {
			mk, err := FactMark(m.Headers().Get(events.HeaderType), m.Data())
			if mk != "" {
				md, _ := m.Metadata()
				at := name
				if md != nil {
					at = fmt.Sprintf("%s seq %d at %s", name, md.Sequence.Stream, md.Timestamp.Format("15:04:05.000"))
				}
				found[mk] = append(found[mk], at+" "+m.Headers().Get(events.HeaderType)+" "+m.Headers().Get(events.HeaderFactID))
			}
			return err
		})
	return found, err
}

// Slowest returns the longest time a request of the load took.
func (l *Load) Slowest() time.Duration {
	var d time.Duration
	for _, r := range l.Results() {
		d = max(d, r.Took)
	}
	return d
}

// Failures describes the requests that got neither a success, a 503 nor a
// 504, at most ten.
func (l *Load) Failures() []string {
	var out []string
	for _, r := range l.Results() {
		if r.OK() || r.Status == 503 || r.Status == 504 {
			continue
		}
		if len(out) < 10 {
			out = append(out, fmt.Sprintf("%s %s at %s after %v: %d %s", r.Kind, r.Mark, r.Start.Format("15:04:05.000"), r.Took.Round(time.Millisecond), r.Status, strings.TrimSpace(r.Err)))
		}
	}
	return out
}

// Delivered counts the messages of the load its recipients' clients got:
// how many were got once, and how many more than once (delivered again
// after a home node's crash: the at-least-once window).
func (l *Load) Delivered() (once, twice int) {
	for _, cl := range l.clients {
		got := map[string]int{}
		for _, n := range cl.Notifies() {
			if !strings.Contains(string(n.Body), "r:message") {
				continue
			}
			if mk := markRE.FindString(string(n.Body)); mk != "" {
				got[mk]++
			}
		}
		for _, c := range got {
			if c == 1 {
				once++
			} else {
				twice++
			}
		}
	}
	return once, twice
}
