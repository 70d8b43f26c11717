package homenode

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rvp-im/rvpd/events"
	"github.com/rvp-im/rvpd/projections"
)

// world is a home server's state and directory in maps, for table tests
// of the decision core: given facts, a decision is made and its facts
// are applied in turn, as a node would.
type world struct {
	t      *testing.T
	st     *projections.Overlay
	dir    *mapDir
	now    time.Time
	policy Policy
	facts  []events.Fact // every fact applied, in order (a rebuild's)
}

// mapDir is a map-backed Directory.
type mapDir struct {
	users    map[events.User]*projections.UserRecord
	domains  map[string]*projections.Domain
	settings projections.Settings
}

func (d *mapDir) User(u events.User) (*projections.UserRecord, error) { return d.users[u], nil }
func (d *mapDir) Domain(name string) (*projections.Domain, error)     { return d.domains[name], nil }
func (d *mapDir) DomainByHost(host string) (*projections.Domain, error) {
	for _, dom := range d.domains {
		if strings.EqualFold(dom.IMHost, host) || slices.Contains(dom.Hosts, host) {
			return dom, nil
		}
	}
	return nil, nil
}
func (d *mapDir) Settings() (projections.Settings, error) { return d.settings, nil }

const testHome = "home1"

var t0 = time.Date(2026, 5, 1, 9, 0, 0, 0, time.UTC)

// newWorld has users ann, ben, cat (home1) and dan (home2) of
// example.test, whose IM host is im.example.test.
func newWorld(t *testing.T) *world {
	t.Helper()
	w := &world{t: t, st: projections.NewOverlay(nil), now: t0, dir: &mapDir{
		users:   map[events.User]*projections.UserRecord{},
		domains: map[string]*projections.Domain{"example.test": {Domain: "example.test", IMHost: "im.example.test"}},
	}, policy: Policy{}.withDefaults()}
	for _, a := range []string{"ann", "ben", "cat", "dan"} {
		u := user(a)
		home := testHome
		if a == "dan" {
			home = "home2"
		}
		w.dir.users[u] = &projections.UserRecord{User: u, Home: home, DisplayName: strings.ToUpper(a[:1]) + a[1:], Enabled: true}
	}
	return w
}

func user(alias string) events.User { return events.NewUser("example.test", alias) }

func nodeURL(alias string) string { return "http://im.example.test/instmsg/aliases/" + alias }

func (w *world) view() View { return View{Home: testHome, State: w.st, Dir: w.dir} }

// req is a request of from's client (address client) about node's node.
func (w *world) req(id, from, node, client string) events.Req {
	r := events.Req{ID: id, At: w.now, Deadline: w.now.Add(20 * time.Second), Gateway: "gw", Client: client,
		Node: user(node), NodeURL: nodeURL(node)}
	if from != "" {
		r.From, r.FromUser = nodeURL(from), user(from)
		r.Auth = events.Identity{Scheme: "ntlm", User: user(from)}
	}
	return r
}

// decide decides in at the world's time.
func (w *world) decide(in any) *decision {
	w.t.Helper()
	d, err := decide(w.view(), w.policy, in, w.now)
	if err != nil {
		w.t.Fatalf("decide %T: %v", in, err)
	}
	return d
}

// do decides in and applies its facts.
func (w *world) do(in any) *decision {
	w.t.Helper()
	d := w.decide(in)
	w.given(d.facts...)
	return d
}

func (w *world) given(facts ...events.Fact) {
	w.t.Helper()
	for _, f := range facts {
		if err := w.st.Apply(0, f); err != nil {
			w.t.Fatal(err)
		}
		w.facts = append(w.facts, f)
	}
}

// login signs alias in from client with callback cb; it returns the
// login's id.
func (w *world) login(alias, client, cb string) int32 {
	w.t.Helper()
	d := w.do(&events.Subscribe{Req: w.req("login-"+alias+client, alias, alias, client), NotificationType: events.NotifyPragma, CallBack: cb, Lifetime: 14400})
	if d.reply.Status != 200 {
		w.t.Fatalf("login %s: %d %s", alias, d.reply.Status, d.reply.Error)
	}
	return d.reply.SubscriptionID
}

// watch subscribes watcher to node's presence (logical Call-Back, as
// librvp does); it returns the subscription's id.
func (w *world) watch(watcher, node string) int32 {
	w.t.Helper()
	d := w.do(&events.Subscribe{Req: w.req("watch-"+watcher+"-"+node, watcher, node, "10.0.0.1"), NotificationType: events.NotifyPropChange,
		CallBack: nodeURL(watcher), CallBackUser: user(watcher), Lifetime: 14400})
	if d.reply.Status != 207 {
		w.t.Fatalf("%s watch %s: %d %s", watcher, node, d.reply.Status, d.reply.Error)
	}
	return d.reply.SubscriptionID
}

// setState PROPPATCHes alias's state from client.
func (w *world) setState(alias, client, state string, timeout int) *decision {
	w.t.Helper()
	return w.do(&events.PropPatch{Req: w.req(fmt.Sprintf("state-%s-%s-%d", alias, state, w.now.UnixNano()), alias, alias, client),
		State: &events.StateUpdate{Value: state, Default: events.StateOffline, Timeout: timeout}})
}

func (w *world) presence(alias string) Presence {
	w.t.Helper()
	views, err := w.st.Views(user(alias))
	if err != nil {
		w.t.Fatal(err)
	}
	return effective(views)
}

var stateRE = regexp.MustCompile(`<r:state><r:([a-z-]+)/></r:state>`)

// sent summarises a decision's NOTIFYs as "url state" (or "url message"),
// and its relays as "relay home watcher state", sorted.
func sent(d *decision) []string {
	var out []string
	for _, n := range d.notes {
		what := "message"
		if m := stateRE.FindSubmatch(n.out.Body); m != nil {
			what = string(m[1])
		}
		out = append(out, n.out.URL.String()+" "+what)
	}
	for _, r := range d.relays {
		what := "?"
		if m := stateRE.FindSubmatch(r.ev.Body); m != nil {
			what = string(m[1])
		}
		out = append(out, "relay "+r.home+" "+r.ev.Node.String()+" "+what)
	}
	slices.Sort(out)
	return out
}

// types lists the type names of a decision's facts.
func types(d *decision) []string {
	var out []string
	for _, f := range d.facts {
		out = append(out, f.Type())
	}
	return out
}

func wantStrings(t *testing.T, what string, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("%s:\n got %q\nwant %q", what, got, want)
	}
}

func wantStatus(t *testing.T, d *decision, status int) {
	t.Helper()
	if d.reply == nil {
		t.Fatalf("no reply, want %d", status)
	}
	if d.reply.Status != status {
		t.Fatalf("status %d (%s), want %d", d.reply.Status, d.reply.Error, status)
	}
}
