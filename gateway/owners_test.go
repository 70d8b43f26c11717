package gateway

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/homenode"
	"github.com/rvp-im/rvpd/projections"
)

// leaseTTL is the lease bucket's TTL in these tests: short, for a lease
// to lapse within one.
const leaseTTL = 2 * time.Second

// followLeases gives e's gateway an Owners following the lease bucket,
// made with a TTL of leaseTTL, and metrics on a registry of its own,
// which it returns; the watch stops when the test ends.
func followLeases(t *testing.T, e *edge) *prometheus.Registry {
	t.Helper()
	if err := projections.EnsureStreams(t.Context(), e.js, projections.StreamOptions{LeaseTTL: leaseTTL}); err != nil {
		t.Fatal(err)
	}
	e.g.cfg.Owners = &Owners{JetStream: e.js, Logger: e.g.log}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.g.cfg.Owners.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Owners.Run: %v", err)
		}
	})
	reg := prometheus.NewRegistry()
	NewMetrics(reg).attach(e.g)
	return reg
}

// homeOwned returns rvpd_home_owned of each home server reg exports.
func homeOwned(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "rvpd_home_owned" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "home" {
					out[l.GetValue()] = m.GetGauge().GetValue()
				}
			}
		}
	}
	return out
}

// waitOwned waits until reg exports want (rvpd_home_owned by home server,
// exactly).
func waitOwned(t *testing.T, reg *prometheus.Registry, what string, want map[string]float64) {
	t.Helper()
	var got map[string]float64
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) { // polling the scrape, with a deadline
		if got = homeOwned(t, reg); fmt.Sprint(got) == fmt.Sprint(want) {
			return
		}
	}
	t.Fatalf("%s: rvpd_home_owned %v, want %v", what, got, want)
}

// addHomes adds to e's directory home servers home2 (at site far, a user
// on it) and home3 (hosting no users, none on it).
func addHomes(t *testing.T, e *edge) {
	t.Helper()
	var msgs []projections.Msg
	for i, ev := range []events.Event{
		&events.HomeServerCreated{Name: "home2", Host: "home2.example.test", Site: "far", HostsUsers: true},
		&events.UserEnabled{User: events.NewUser("example.test", "carol"), Home: "home2"},
		&events.HomeServerCreated{Name: "home3", Host: "home3.example.test", HostsUsers: false},
	} {
		data, err := events.Encode(ev)
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, projections.Msg{Seq: e.g.cfg.Directory.Position() + uint64(i) + 1, Type: ev.Type(), Data: data})
	}
	if err := e.g.cfg.Directory.ApplyBatch(msgs); err != nil {
		t.Fatal(err)
	}
}

// TestHomeOwnedFollowsLease: a gateway exports rvpd_home_owned{home} from
// its watch of the lease bucket: 0 for a home server whose node never
// started, 1 once a node takes its lease, 0 once the node lets it go, 1
// for a lease taken by a node that dies at once, and 0 once that lease
// lapses, with no write to the bucket. Only home servers of its own site
// that host users are exported. Before, rvpd_home_lease_owned came only
// from the processes running a node of the home server: with none left,
// nothing said that no node owned it, and nothing paged.
func TestHomeOwnedFollowsLease(t *testing.T) {
	e := newEdge(t, NoAuth{})
	e.g.cfg.Site = "here"
	addHomes(t, e)
	reg := followLeases(t, e)
	waitOwned(t, reg, "no node started", map[string]float64{"home1": 0})

	kv, err := e.js.KeyValue(t.Context(), events.BucketOwners)
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	lease := &homenode.Lease{KV: kv, Home: "home1", Holder: "n1"}
	held := make(chan error, 1)
	go func() {
		held <- lease.Hold(ctx, func(ctx context.Context, _ bool) error { <-ctx.Done(); return nil })
	}()
	// Renewed every third of the TTL, it stays owned past its TTL.
	waitOwned(t, reg, "lease taken", map[string]float64{"home1": 1})
	until := time.Now().Add(2 * leaseTTL)
	for time.Now().Before(until) {
		if got := homeOwned(t, reg); got["home1"] != 1 {
			t.Fatalf("a lease renewed: rvpd_home_owned %v", got)
		}
		time.Sleep(50 * time.Millisecond) // scraping through two TTLs
	}
	stop()
	if err := <-held; err != nil {
		t.Fatal(err)
	}
	waitOwned(t, reg, "lease let go", map[string]float64{"home1": 0})
	if why := e.g.cfg.Owners.unowned("home1", time.Now()); !strings.Contains(why, "node n1 let it go") {
		t.Errorf("let go: %q", why)
	}

	// A node that takes the lease and dies: its lease lapses a TTL later.
	rev, err := kv.Get(t.Context(), events.OwnerKey("home1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Update(t.Context(), events.OwnerKey("home1"), []byte("n2"), rev.Revision()); err != nil {
		t.Fatal(err)
	}
	taken := time.Now()
	waitOwned(t, reg, "lease taken by a node that died", map[string]float64{"home1": 1})
	waitOwned(t, reg, "lease lapsed", map[string]float64{"home1": 0})
	if took := time.Since(taken); took < leaseTTL-100*time.Millisecond {
		t.Errorf("lapsed %v after it was taken, before the TTL %v", took, leaseTTL)
	}
	if why := e.g.cfg.Owners.unowned("home1", time.Now()); !strings.Contains(why, "last renewed by node n2, lapsed at") {
		t.Errorf("lapsed: %q", why)
	}
}

// TestTimeoutNamesUnownedHomeServer: a request for a user whose home
// server no node owns is answered 504, and its one line (Error) says that
// no node owns the home server, why, and what to do; its body says so
// too. Before, the line said only "no reply to request.propfind.v1:
// context deadline exceeded", as for a node that is merely slow. With a
// live lease, the 504 does not say so.
func TestTimeoutNamesUnownedHomeServer(t *testing.T) {
	e := newEdge(t, NoAuth{})
	reg := followLeases(t, e)
	waitOwned(t, reg, "no node started", map[string]float64{"home1": 0})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- e.g.Serve(ln) }()
	t.Cleanup(func() { e.g.Shutdown(context.Background()); <-served })
	ask := func() (status int, body string, lines []string) {
		t.Helper()
		e.log.take()
		nc, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		req, _ := http.NewRequest("PROPFIND", "http://im.example.test/instmsg/aliases/alice", nil)
		req.Header.Set("RVP-From-Principal", "http://im.example.test/instmsg/aliases/alice")
		req.Header.Set("Depth", "0")
		if err := req.Write(nc); err != nil {
			t.Fatal(err)
		}
		nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(nc), req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		// The request line is logged after the response is written.
		for deadline := time.Now().Add(5 * time.Second); len(lines) == 0 && time.Now().Before(deadline); time.Sleep(time.Millisecond) { // polling the log, with a deadline
			for _, rec := range e.log.take() {
				if rec.Message == "gateway serving" {
					continue // Serve's first line, racing the first request
				}
				s := rec.Level.String() + " " + rec.Message
				rec.Attrs(func(a slog.Attr) bool { s += " " + a.Key + "=" + a.Value.String(); return true })
				lines = append(lines, s)
			}
		}
		return resp.StatusCode, string(b), lines
	}

	status, body, lines := ask()
	if status != 504 || !strings.Contains(body, "no node serves home server home1") {
		t.Errorf("no node: %d %q, want 504 saying no node serves home1", status, body)
	}
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "ERROR request") ||
		!strings.Contains(lines[0], "no node owns home server home1 (it has had no lease since") ||
		!strings.Contains(lines[0], "start its node; rvpctl status shows the owners") {
		t.Errorf("no node: logged %q, want one Error line saying no node owns home1 and what to do", lines)
	}

	// A node that holds the lease but does not answer: a plain 504.
	kv, err := e.js.KeyValue(t.Context(), events.BucketOwners)
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	held := make(chan error, 1)
	go func() {
		held <- (&homenode.Lease{KV: kv, Home: "home1", Holder: "n1"}).Hold(ctx, func(ctx context.Context, _ bool) error { <-ctx.Done(); return nil })
	}()
	defer func() { stop(); <-held }()
	waitOwned(t, reg, "lease taken", map[string]float64{"home1": 1})
	status, body, lines = ask()
	if status != 504 || strings.Contains(body, "no node") {
		t.Errorf("owned: %d %q, want a plain 504", status, body)
	}
	if len(lines) != 1 || strings.Contains(lines[0], "no node owns") {
		t.Errorf("owned: logged %q, want one line not saying no node owns home1", lines)
	}
}

// TestHomeOwnedFollowsTTLChange: the lease bucket's TTL changed while a
// gateway follows it (rvpd init -home.lease-ttl on a cluster whose nodes
// made the bucket first) is the one a lease is judged by. Before, the
// gateway kept the TTL it read as its watch began: with the TTL raised
// from 2 s to 60 s, a lease written 5 s ago (a node renewing every 20 s)
// read as lapsed, rvpd_home_owned 0 and the 504s saying no node owns the
// home server, while the node held it.
func TestHomeOwnedFollowsTTLChange(t *testing.T) {
	e := newEdge(t, NoAuth{})
	reg := followLeases(t, e)
	waitOwned(t, reg, "no node started", map[string]float64{"home1": 0})
	if err := projections.EnsureStreams(t.Context(), e.js, projections.StreamOptions{LeaseTTL: time.Minute}); err != nil {
		t.Fatal(err)
	}
	kv, err := e.js.KeyValue(t.Context(), events.BucketOwners)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Create(t.Context(), events.OwnerKey("home1"), []byte("n1")); err != nil {
		t.Fatal(err)
	}
	waitOwned(t, reg, "lease taken", map[string]float64{"home1": 1})
	var why string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) { // polling, with a deadline
		if why = e.g.cfg.Owners.unowned("home1", time.Now().Add(5*time.Second)); why == "" {
			return
		}
	}
	t.Errorf("a lease written 5 s ago, the bucket's TTL 1 min: %q, want owned", why)
}
